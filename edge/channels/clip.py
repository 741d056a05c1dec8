"""One posture clip's data path (a Channel, edge/channels/base.py), sans I/O: bytes in, at most one
PostureReading per tick out.

The shell (agent.py) feeds every chunk read from the port with the clock time it arrived, and asks
for a reading once per second; a reading is produced only if a new sample arrived since the last
one, so a silent clip produces nothing (the gateway's "sensor lost" rule sees the silence).
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel

from edge.channels.base import SEQ_MODULO
from edge.decoders.nmea import ImuSample, NmeaDecoder
from edge.decoders.rejection import Rejection
from edge.dsp.posture import PostureTracker
from nurserywatch.contract import Position, PostureReading, Stream


class ClipChannel:
    poll_interval_s: float | None = None  # the clip streams on its own

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.decoder = NmeaDecoder()
        #: Well-formed sentences of another kind (a mat on a clip's port: wiring mistake).
        self.unexpected_frames = 0
        #: Sentences missing according to seq gaps (including time the port was away).
        self.lost = 0
        self._latest: ImuSample | None = None
        self._latest_ts = 0
        self._tracker = PostureTracker()
        self._position = Position.UNKNOWN
        self._fresh = False
        self._last_problem: str | None = None

    def request(self) -> bytes | None:
        return None

    def battery_pct(self) -> float | None:
        return None

    def last_problem(self) -> str | None:
        return self._last_problem

    def readings(self, now_ms: int) -> list[tuple[Stream, BaseModel]]:
        reading = self.reading()
        return [(Stream.POSTURE, reading)] if reading is not None else []

    def port_opened(self) -> None:
        self.decoder.reset()

    def on_bytes(self, data: bytes, now_ms: int) -> None:
        for frame in self.decoder.decode(data):
            if isinstance(frame, Rejection):
                self._last_problem = str(frame)
                continue
            if not isinstance(frame, ImuSample):
                # Counted under unexpected_frame; the log line must name it too (a mat on a clip's port).
                self.unexpected_frames += 1
                self._last_problem = f"unexpected_frame: {type(frame).__name__} seq {frame.seq} on a clip port"
                continue
            if self._latest is not None:
                self.lost += (frame.seq - self._latest.seq - 1) % SEQ_MODULO
            self._position = self._tracker.update(frame.ax_mg, frame.ay_mg, frame.az_mg, now_ms)
            self._latest, self._latest_ts, self._fresh = frame, now_ms, True

    def problems(self) -> Counter[str]:
        """Everything rejected so far, by reason (decoder reasons + ``unexpected_frame``)."""
        counts = self.decoder.rejected.copy()
        if self.unexpected_frames:
            counts["unexpected_frame"] = self.unexpected_frames
        return counts

    def reading(self) -> PostureReading | None:
        """The latest sample as a reading, once; None if nothing new arrived."""
        if not self._fresh or self._latest is None:
            return None
        self._fresh = False
        s = self._latest
        return PostureReading(
            ts=self._latest_ts,
            seq=s.seq,
            position=self._position,
            accel_mg=(s.ax_mg, s.ay_mg, s.az_mg),
        )
