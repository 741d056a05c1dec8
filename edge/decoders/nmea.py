"""Incremental decoder for the NWIMU / NWMAT sentences (docs/devices.md). Pure.

    decoder = NmeaDecoder()
    frames = decoder.feed(chunk)          # any chunking; lines may be split across reads
    decoder.rejected                      # Counter of reject reasons
    decoder.last_rejection                # Rejection(reason, detail) for the log

A sentence runs from ``$`` to a line end (``\\r``, ``\\n`` or both). A ``$`` inside a sentence cuts
it off: the cut part is judged as it stands (usually ``truncated``) and a new sentence starts.
Bytes outside a sentence are one ``garbage`` rejection per run. A line that grows past
MAX_LINE_BYTES is rejected as ``too_long`` and skipped up to the next line end or ``$``, so the
buffer stays bounded whatever arrives.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from edge.decoders.rejection import Rejection

MAX_LINE_BYTES = 1024
SEQ_MODULO = 65536
#: Widest int16 reading; a clip never legitimately reports more than 32 g.
ACCEL_LIMIT_MG = 32767
#: Mat ADC samples are signed and at most 32 bit.
MAT_SAMPLE_LIMIT = 2**31 - 1
MAT_FS_LIMIT_HZ = 10000

_SPECIAL = re.compile(rb"[$\r\n]")
_INT = re.compile(rb"-?[0-9]{1,10}")
#: Every field of a comma-separated run an ``_INT``: one match for a mat frame's samples instead of one
#: per sample (the edge decodes ~500 a second per 20 mats); a run it refuses is checked field by field
#: for the refusal's reason.
_INTS = re.compile(rb"-?[0-9]{1,10}(?:,-?[0-9]{1,10})*")
_HEX2 = re.compile(rb"[0-9A-Fa-f]{2}")
_IDLE_WHITESPACE = b" \t"


class RejectReason(StrEnum):
    BAD_CHECKSUM = "bad_checksum"
    TRUNCATED = "truncated"
    WRONG_FIELD_COUNT = "wrong_field_count"
    BAD_VALUE = "bad_value"
    GARBAGE = "garbage"
    TOO_LONG = "too_long"
    UNKNOWN_SENTENCE = "unknown_sentence"


@dataclass(frozen=True, slots=True)
class ImuSample:
    seq: int
    ax_mg: int
    ay_mg: int
    az_mg: int


@dataclass(frozen=True, slots=True)
class MatFrame:
    seq: int
    fs_hz: int
    samples: tuple[int, ...]


Frame = ImuSample | MatFrame


class _Reject(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.rejection = Rejection(reason, detail)


class NmeaDecoder:
    def __init__(self) -> None:
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.last_rejection: Rejection | None = None
        self._line = bytearray()  # the sentence being received, from its '$'
        self._in_sentence = False
        self._skipping = False  # after too_long: discard up to the next line end or '$'
        self._garbage = bytearray()  # the start of a garbage run (for the log), bounded
        self._garbage_len = 0

    def feed(self, data: bytes) -> list[Frame]:
        """Decode a chunk; returns complete frames, counts rejections."""
        return [item for item in self.decode(data) if not isinstance(item, Rejection)]

    def decode(self, data: bytes) -> list[Frame | Rejection]:
        """Like feed, but also returns the rejections in order (tests, diagnostics)."""
        out: list[Frame | Rejection] = []
        pos = 0
        for match in _SPECIAL.finditer(data):
            self._take(data[pos : match.start()], out)
            self._special(data[match.start() : match.start() + 1], out)
            pos = match.end()
        self._take(data[pos:], out)
        return out

    def reset(self) -> None:
        """Forget a partial line (e.g. after the port was reopened); counters are kept."""
        self._line.clear()
        self._in_sentence = self._skipping = False
        self._garbage.clear()
        self._garbage_len = 0

    # -- state machine

    def _take(self, chunk: bytes, out: list[Frame | Rejection]) -> None:
        if not chunk or self._skipping:
            return
        if self._in_sentence:
            if len(self._line) + len(chunk) > MAX_LINE_BYTES:
                self._reject(
                    out, RejectReason.TOO_LONG, f"line longer than {MAX_LINE_BYTES} bytes: {_show(self._line)}"
                )
                self._line.clear()
                self._in_sentence = False
                self._skipping = True
            else:
                self._line += chunk
        elif chunk.strip(_IDLE_WHITESPACE):
            self._garbage += chunk[: 32 - len(self._garbage)]
            self._garbage_len += len(chunk)

    def _special(self, char: bytes, out: list[Frame | Rejection]) -> None:
        self._skipping = False
        if self._in_sentence:
            self._end_sentence(out)
        elif self._garbage_len:
            self._reject(
                out, RejectReason.GARBAGE, f"{self._garbage_len} bytes outside a sentence: {_show(self._garbage)}"
            )
            self._garbage.clear()
            self._garbage_len = 0
        if char == b"$":
            self._in_sentence = True
            self._line += char

    def _end_sentence(self, out: list[Frame | Rejection]) -> None:
        line = bytes(self._line)
        self._line.clear()
        self._in_sentence = False
        try:
            frame = _parse(line)
        except _Reject as exc:
            self._reject(out, exc.rejection.reason, exc.rejection.detail)
            return
        self.accepted += 1
        out.append(frame)

    def _reject(self, out: list[Frame | Rejection], reason: str, detail: str) -> None:
        rejection = Rejection(reason, detail)
        self.rejected[reason] += 1
        self.last_rejection = rejection
        out.append(rejection)


# -- one complete line, '$' included, line end excluded


def _parse(line: bytes) -> Frame:
    star = line.find(b"*")
    if star < 0:
        raise _Reject(RejectReason.TRUNCATED, f"no *HH checksum: {_show(line)}")
    body, given = line[1:star], line[star + 1 :].rstrip(_IDLE_WHITESPACE)
    if len(given) < 2:
        raise _Reject(RejectReason.TRUNCATED, f"checksum cut off: {_show(line)}")
    if not _HEX2.fullmatch(given):
        raise _Reject(RejectReason.BAD_CHECKSUM, f"checksum field {given!r} is not two hex digits: {_show(line)}")
    computed = 0
    for byte in body:
        computed ^= byte
    if computed != int(given, 16):
        raise _Reject(
            RejectReason.BAD_CHECKSUM, f"computed {computed:02X}, sentence says {given.decode()}: {_show(line)}"
        )
    if not body.isascii() or not body.decode("ascii").isprintable():
        # Line noise that happens to match its checksum (1 in 256).
        raise _Reject(RejectReason.GARBAGE, f"non-printable bytes in a sentence: {_show(line)}")
    fields = body.split(b",")
    talker = fields[0]
    if talker == b"NWIMU":
        if len(fields) != 5:
            raise _Reject(RejectReason.WRONG_FIELD_COUNT, f"NWIMU has 4 fields, got {len(fields) - 1}: {_show(line)}")
        seq = _int(fields[1], "seq", 0, SEQ_MODULO - 1, line)
        ax, ay, az = (
            _int(f, f"a{axis}_mg", -ACCEL_LIMIT_MG, ACCEL_LIMIT_MG, line)
            for f, axis in zip(fields[2:], "xyz", strict=True)
        )
        return ImuSample(seq, ax, ay, az)
    if talker == b"NWMAT":
        if len(fields) < 4:
            raise _Reject(
                RejectReason.WRONG_FIELD_COUNT,
                f"NWMAT needs seq, fs_hz and ≥1 sample, got {len(fields) - 1} fields: {_show(line)}",
            )
        seq = _int(fields[1], "seq", 0, SEQ_MODULO - 1, line)
        fs_hz = _int(fields[2], "fs_hz", 1, MAT_FS_LIMIT_HZ, line)
        first = len(fields[0]) + len(fields[1]) + len(fields[2]) + 3  # where the samples begin in body
        return MatFrame(seq, fs_hz, _samples(body, first, fields[3:], line))
    raise _Reject(RejectReason.UNKNOWN_SENTENCE, f"unknown sentence {talker.decode()!r}: {_show(line)}")


def _samples(body: bytes, first: int, fields: list[bytes], line: bytes) -> tuple[int, ...]:
    """A mat frame's samples (``fields``, which are ``body[first:]`` split), as ``_int`` would take
    each, with one match and one range check."""
    if _INTS.fullmatch(body, first):
        samples = tuple(map(int, fields))
        if -MAT_SAMPLE_LIMIT <= min(samples) and max(samples) <= MAT_SAMPLE_LIMIT:
            return samples
    return tuple(_int(f, "sample", -MAT_SAMPLE_LIMIT, MAT_SAMPLE_LIMIT, line) for f in fields)


def _int(field: bytes, name: str, low: int, high: int, line: bytes) -> int:
    if not _INT.fullmatch(field):
        raise _Reject(RejectReason.BAD_VALUE, f"{name} {field.decode()!r} is not an integer: {_show(line)}")
    value = int(field)
    if not low <= value <= high:
        raise _Reject(RejectReason.BAD_VALUE, f"{name} {value} is outside {low}..{high}: {_show(line)}")
    return value


def _show(data: bytes | bytearray, limit: int = 80) -> str:
    return repr(bytes(data[:limit])) + ("…" if len(data) > limit else "")
