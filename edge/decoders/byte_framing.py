"""Finding binary frames in a serial byte stream, with resynchronisation (pure).

The binary serial formats (PMS5003, MH-Z19B, Senseair S8) share one problem: bytes arrive in
arbitrary chunks, may start mid-frame, may carry line noise, a corrupted byte or a frame cut off by
the next one. ByteFramer handles that once; each format only says where a frame may begin and how
to judge the bytes from there (a FrameFormat).

    framer = ByteFramer(SomeFormat())
    frames = framer.feed(chunk)        # any chunking
    framer.rejected                    # Counter of reasons
    framer.last_rejection              # the latest Rejection, for the log

Rules, the same for every format:
- A *candidate* starts wherever the format's ``start`` pattern matches. Bytes before it are
  skipped: one ``garbage`` rejection per run of skipped bytes, counted when the run begins (so a
  port that only ever delivers noise — wrong baud rate — is counted at once, not never).
- A candidate the format rejects counts once under the format's reason, or as ``truncated`` if a
  *strong* start (one specific enough to be a real frame) begins inside it: the frame was cut off
  by the next one. The search then resumes one byte after the rejected candidate's start, so a
  real frame hidden inside a false candidate is never lost; the bytes the rejected candidate
  covered (at least the format's longest frame, as a bad length field cannot say where the frame
  ends) belong to that rejection and are not counted again as garbage — but bytes beyond them that
  are skipped are a new ``garbage`` run (a polled sensor sending noise after one bad reply).
  The verdict waits for the bytes that show whether a strong start begins inside, so it does not
  depend on how the stream was chunked.
- Memory is bounded: after each feed at most one undecided candidate (shorter than the format's
  longest frame plus a strong start) is kept, or the last ``start_len - 1`` bytes while no start
  has been seen.
- ``reset()`` (port reopened) forgets the partial frame and counts it as ``truncated``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from edge.decoders.rejection import Rejection

F = TypeVar("F")
F_co = TypeVar("F_co", covariant=True)


class FramingReason(StrEnum):
    GARBAGE = "garbage"
    TRUNCATED = "truncated"


@dataclass(frozen=True, slots=True)
class Reject:
    """A format's verdict on a candidate: ``covers`` bytes from its start are not a frame."""

    reason: str
    detail: str
    covers: int


class NotAFrame:
    """A format's verdict that the start was a coincidence in noise: its first byte is garbage."""


NOT_A_FRAME = NotAFrame()


class FrameFormat(Protocol[F_co]):
    #: Where a frame may begin.
    start: re.Pattern[bytes]
    #: The longest match of ``start``; that many bytes minus one are kept while waiting for more.
    start_len: int
    #: A start specific enough that one inside a rejected candidate means it was cut off; all its
    #: matches are ``strong_len`` bytes long and begin with the byte ``strong_first``.
    strong_start: re.Pattern[bytes]
    strong_len: int
    strong_first: int
    #: The longest frame (bounds the buffer).
    max_frame: int

    def examine(self, data: bytes) -> tuple[F_co, int] | Reject | NotAFrame | None:
        """``data`` begins at a start: the frame and its length, a Reject, NOT_A_FRAME, or None
        to wait for more bytes."""
        ...


class ByteFramer(Generic[F]):
    def __init__(self, fmt: FrameFormat[F]) -> None:
        self.format = fmt
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.last_rejection: Rejection | None = None
        #: Every byte that was not part of an accepted frame.
        self.skipped_bytes = 0
        self._buf = b""
        self._in_garbage = False  # inside a run of skipped bytes already counted
        #: Stream offsets (bytes fed so far): where ``_buf`` begins, and where the bytes of the last
        #: rejected candidate end — skipped bytes before that are part of the rejection.
        self._buf_at = 0
        self._rejected_until = 0

    def feed(self, data: bytes) -> list[F]:
        """Decode a chunk; returns complete frames, counts rejections."""
        return [item for item in self.decode(data) if not isinstance(item, Rejection)]

    def decode(self, data: bytes) -> list[F | Rejection]:
        """Like feed, but also returns the rejections in order (tests, diagnostics)."""
        out: list[F | Rejection] = []
        buf = self._buf + data
        fmt = self.format
        pos = 0
        while True:
            match = fmt.start.search(buf, pos)
            if match is None:
                keep = max(pos, len(buf) - (fmt.start_len - 1))
                self._skip(buf, pos, keep, out)
                pos = keep
                break
            i = match.start()
            self._skip(buf, pos, i, out)
            pos = i
            verdict = fmt.examine(buf[i : i + fmt.max_frame])
            if verdict is None:
                if len(buf) - i < fmt.max_frame:
                    break
                # A format that still wants more than its longest frame is a bug; never buffer for it.
                verdict = Reject(FramingReason.TRUNCATED, f"no frame within {fmt.max_frame} bytes", fmt.max_frame)
            if isinstance(verdict, NotAFrame):
                self._skip(buf, i, i + 1, out)
                pos = i + 1
                continue
            if isinstance(verdict, Reject):
                end = i + verdict.covers
                if fmt.strong_first in buf[max(i + 1, len(buf) - fmt.strong_len + 1) : end]:
                    break  # a new frame may begin there: wait until it can be recognised
                # A strong start beginning inside the candidate cut it off.
                cut = fmt.strong_start.search(buf, i + 1, end + fmt.strong_len - 1)
                if cut is not None and cut.start() < end:
                    self._reject(out, FramingReason.TRUNCATED, f"cut off by a new frame: {show(buf[i : cut.start()])}")
                else:
                    self._reject(out, verdict.reason, verdict.detail)
                self.skipped_bytes += 1
                # A candidate whose length could not be trusted (a bad length field) may still run to
                # the longest frame: those bytes are its own, beyond them skipped bytes are garbage.
                covered = max(verdict.covers, fmt.max_frame)
                self._rejected_until = max(self._rejected_until, self._buf_at + i + covered)
                pos = i + 1
                continue
            frame, length = verdict
            self.accepted += 1
            out.append(frame)
            self._in_garbage = False
            pos = i + length
        self._buf = buf[pos:]
        self._buf_at += pos
        return out

    def reset(self) -> None:
        """Forget a partial frame (the port was reopened); counters are kept. A partial frame
        counts as ``truncated``: its bytes are lost."""
        if self._buf and self.format.start.match(self._buf):
            self._reject([], FramingReason.TRUNCATED, f"port reopened in the middle of {show(self._buf)}")
        self.skipped_bytes += len(self._buf)
        self._buf_at += len(self._buf)
        self._buf = b""
        self._in_garbage = False
        self._rejected_until = self._buf_at

    def _skip(self, buf: bytes, start: int, end: int, out: list[F | Rejection]) -> None:
        if end <= start:
            return
        self.skipped_bytes += end - start
        beyond = max(start, self._rejected_until - self._buf_at)  # before it: the rejection's own bytes
        if beyond < end:
            if not self._in_garbage:
                self._reject(out, FramingReason.GARBAGE, f"bytes outside a frame: {show(buf[beyond:end])}")
            self._in_garbage = True

    def _reject(self, out: list[F | Rejection], reason: str, detail: str) -> None:
        rejection = Rejection(str(reason), detail)
        self.rejected[rejection.reason] += 1
        self.last_rejection = rejection
        out.append(rejection)
        self._in_garbage = False  # skipping after a rejection is part of it


def show(data: bytes, limit: int = 40) -> str:
    """Bytes as spaced hex for log lines, cut at ``limit`` bytes."""
    text = data[:limit].hex(" ")
    return text + (" …" if len(data) > limit else "")
