"""One nap mat's data path (a Channel, edge/channels/base.py), sans I/O: NWMAT bytes in, at most one
BreathingReading per tick out.

Sample times come from the data, not from when the bytes happened to arrive: the first sentence
after the port opens anchors the clock (its last sample at its arrival time), and every later
sample is placed by its position in the stream — ``seq`` counts sentences, ``fs_hz`` spaces the
samples. A ``seq`` gap is lost data: counted in ``lost`` (sentences) and handed to the analyser as
a gap. Bursty delivery (USB, BLE) therefore does not smear the breathing signal.

Re-anchoring (counted in ``resyncs``): when the reconstructed time of a sentence's last sample is
more than 1.5 s away from its arrival — the device's crystal drifted, or it rebooted and ``seq``
restarted — the clock is anchored again on that sentence; a ``seq`` jump that would mean more time
than actually passed is a restart, not lost data.

Rejections (``problems()``): the decoder's reasons (docs/devices.md) plus ``unexpected_frame``, a
well-formed sentence of another kind (an NWIMU clip on the mat's port: a wiring mistake).

Readings: once per second, if samples arrived since the last one, ``breathing`` with the features
of edge/dsp/breathing.py; ``ts`` is the time of the newest sample, ``seq`` the seq of the newest
sentence. A silent mat produces nothing (the gateway sees the silence).
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel

from edge.channels.base import SEQ_MODULO
from edge.decoders.nmea import MatFrame, NmeaDecoder
from edge.decoders.rejection import Rejection
from edge.dsp.breathing import BreathingAnalyzer, BreathingConfig
from nurserywatch.contract import BreathingReading, Stream

#: Re-anchor the sample clock when it is this far from the arrival times.
RESYNC_MS = 1500.0


class MatChannel:
    poll_interval_s: float | None = None  # the mat streams on its own

    def __init__(self, device_id: str, config: BreathingConfig | None = None) -> None:
        self.device_id = device_id
        self.config = config
        self.decoder = NmeaDecoder()
        self.analyzer: BreathingAnalyzer | None = None
        #: Well-formed sentences of another kind (a clip on a mat's port: wiring mistake).
        self.unexpected_frames = 0
        #: Sentences missing according to seq gaps.
        self.lost = 0
        #: Times the sample clock was re-anchored on arrival time (drift, device restart).
        self.resyncs = 0
        self.samples = 0
        self._last_problem: str | None = None
        self._fs: int | None = None
        self._anchor_ms = 0.0  # time of stream sample 0
        self._index = 0  # stream position of the next expected sample
        self._last: MatFrame | None = None
        self._last_arrival_ms = 0
        self._fresh = False

    # -- Channel

    def request(self) -> bytes | None:
        return None

    def battery_pct(self) -> float | None:
        return None

    def port_opened(self) -> None:
        self.decoder.reset()
        self._last = None  # seq continuity is unknown: anchor again on the next sentence

    def on_bytes(self, data: bytes, now_ms: int) -> None:
        for item in self.decoder.decode(data):
            if isinstance(item, Rejection):
                self._last_problem = str(item)
            elif isinstance(item, MatFrame):
                self._on_frame(item, now_ms)
            else:
                self.unexpected_frames += 1
                self._last_problem = f"unexpected_frame: {type(item).__name__} seq {item.seq} on a mat port"

    def readings(self, now_ms: int) -> list[tuple[Stream, BaseModel]]:
        if not self._fresh or self.analyzer is None or self._last is None:
            return []
        self._fresh = False
        f = self.analyzer.features()
        if f is None:
            return []
        reading = BreathingReading(
            ts=f.t_ms,
            seq=self._last.seq,
            rate_bpm=f.rate_bpm,
            amplitude=f.amplitude,
            motion=f.motion,
            present=f.present,
            quality=f.quality,
            last_breath_ts=f.last_breath_ms,
        )
        return [(Stream.BREATHING, reading)]

    def problems(self) -> Counter[str]:
        """Everything rejected so far, by reason (decoder reasons + ``unexpected_frame``)."""
        counts = self.decoder.rejected.copy()
        if self.unexpected_frames:
            counts["unexpected_frame"] = self.unexpected_frames
        return counts

    def last_problem(self) -> str | None:
        return self._last_problem

    # -- sample times

    def _on_frame(self, frame: MatFrame, now_ms: int) -> None:
        n = len(frame.samples)
        if self.analyzer is None or frame.fs_hz != self._fs:
            # First sentence, or the device changed its sample rate: start a fresh analysis.
            self.analyzer = BreathingAnalyzer(frame.fs_hz, self.config)
            self._fs = frame.fs_hz
            self._last = None
        step_ms = 1000.0 / frame.fs_hz
        if self._last is None:
            self._anchor(now_ms, n, step_ms)
        else:
            gap = (frame.seq - self._last.seq - 1) % SEQ_MODULO
            gap_ms = gap * len(self._last.samples) * step_ms
            if gap_ms > now_ms - self._last_arrival_ms + RESYNC_MS:
                self._resync(now_ms, n, step_ms)  # more missing than time passed: the device restarted
            else:
                self.lost += gap
                self._index += gap * len(self._last.samples)
                t_last = self._anchor_ms + (self._index + n - 1) * step_ms
                if abs(now_ms - t_last) > RESYNC_MS:
                    self._resync(now_ms, n, step_ms)
        self.analyzer.add(self._anchor_ms + self._index * step_ms, frame.samples)
        self._index += n
        self.samples += n
        self._last, self._last_arrival_ms, self._fresh = frame, now_ms, True

    def _anchor(self, now_ms: int, n: int, step_ms: float) -> None:
        """Place the sentence arriving now so that its last sample is at its arrival time."""
        self._index = 0
        self._anchor_ms = now_ms - (n - 1) * step_ms

    def _resync(self, now_ms: int, n: int, step_ms: float) -> None:
        self.resyncs += 1
        self._anchor(now_ms, n, step_ms)
