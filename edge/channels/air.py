"""Channels (edge/channels/base.py) for the serial air sensors: PMS5003 (PM), MH-Z19B and Senseair S8
(CO2). Sans I/O: bytes in, at most one ``air`` reading per second out.

- A reading is produced only when a new value arrived since the last one, so a silent sensor
  stays visible as silence; if several arrive within a second the latest wins.
- ``ts`` is when the value arrived (the clock time the shell passed with the bytes).
- ``seq`` counts this channel's readings and wraps at 65536. These sensors have no sequence
  number of their own; the counter restarts at 0 when the edge restarts (``ts`` still tells the
  readings apart for deduplication on (device, seq, ts)).
- The CO2 sensors answer only when asked: the shell writes ``request()`` every
  ``poll_interval_s``. A request that got no valid answer by the next poll counts as ``no_reply``.
- A value that the contract does not accept (e.g. PM above 10000 µg/m³) is not published and
  counts as ``out_of_range``; an S8 exception reply counts as ``modbus_exception``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ValidationError

from edge.channels.base import SEQ_MODULO
from edge.decoders.byte_framing import ByteFramer
from edge.decoders.mhz19b import Mhz19bDecoder, Mhz19bReading
from edge.decoders.mhz19b import read_request as mhz19b_request
from edge.decoders.pms5003 import Pms5003Decoder, PmsFrame
from edge.decoders.rejection import Rejection
from edge.decoders.senseair_s8 import ModbusException, S8Reading, S8Reply, SenseairS8Decoder
from edge.decoders.senseair_s8 import read_request as s8_request
from nurserywatch.contract import AirReading, Stream, validation_reason

#: CO2 changes over minutes; both sensors refresh their value every few seconds.
CO2_POLL_INTERVAL_S = 5.0


class _AirChannel:
    """What the three have in common: the latest value, its arrival time and the reading counter."""

    poll_interval_s: float | None = None

    def __init__(self, device_id: str, framer: ByteFramer[Any]) -> None:
        self.device_id = device_id
        self.framer = framer
        self._counts: Counter[str] = Counter()  # problems found by the channel, not the framer
        self._last_problem: str | None = None
        self._seen_rejection: Rejection | None = None
        self._fields: dict[str, float] | None = None  # the latest value not yet published
        self._ts = 0
        self._seq = 0

    def request(self) -> bytes | None:
        return None

    def battery_pct(self) -> float | None:
        return None  # mains-powered

    def port_opened(self) -> None:
        self.framer.reset()
        self._note_framer()

    def on_bytes(self, data: bytes, now_ms: int) -> None:
        for frame in self.framer.feed(data):
            self._on_frame(frame, now_ms)
        self._note_framer()

    def _on_frame(self, frame: Any, now_ms: int) -> None:
        raise NotImplementedError

    def readings(self, now_ms: int) -> list[tuple[Stream, BaseModel]]:
        if self._fields is None:
            return []
        fields, self._fields = self._fields, None
        try:
            reading = AirReading(ts=self._ts, seq=self._seq, **fields)
        except ValidationError as exc:
            self._problem("out_of_range", f"{fields} is outside the contract ({validation_reason(exc)})")
            return []
        self._seq = (self._seq + 1) % SEQ_MODULO
        return [(Stream.AIR, reading)]

    def problems(self) -> Counter[str]:
        return self.framer.rejected + self._counts

    def last_problem(self) -> str | None:
        return self._last_problem

    def _value(self, now_ms: int, **fields: float) -> None:
        self._fields, self._ts = fields, now_ms

    def _problem(self, reason: str, detail: str) -> None:
        self._counts[reason] += 1
        self._last_problem = f"{reason}: {detail}"

    def _note_framer(self) -> None:
        last = self.framer.last_rejection
        if last is not None and last is not self._seen_rejection:
            self._seen_rejection = last
            self._last_problem = str(last)


class Pms5003Channel(_AirChannel):
    """Plantower PMS5003 in active mode: a frame about every second on its own."""

    def __init__(self, device_id: str) -> None:
        super().__init__(device_id, Pms5003Decoder())

    def _on_frame(self, frame: PmsFrame, now_ms: int) -> None:
        self._value(now_ms, pm25_ugm3=frame.pm25_ugm3, pm10_ugm3=frame.pm10_ugm3)


class _PolledCo2Channel(_AirChannel):
    poll_interval_s: float | None = CO2_POLL_INTERVAL_S

    def __init__(self, device_id: str, framer: ByteFramer[Any], request: bytes) -> None:
        super().__init__(device_id, framer)
        self._request = request
        self._awaiting = False

    def request(self) -> bytes:
        if self._awaiting:
            self._problem("no_reply", f"no valid answer within {self.poll_interval_s:g} s to {self._request.hex(' ')}")
        self._awaiting = True
        return self._request

    def port_opened(self) -> None:
        super().port_opened()
        self._awaiting = False  # a request sent to the vanished port is nobody's fault

    def _answered(self) -> None:
        self._awaiting = False


class Mhz19bChannel(_PolledCo2Channel):
    """Winsen MH-Z19B: asked with the read command every poll_interval_s."""

    def __init__(self, device_id: str) -> None:
        super().__init__(device_id, Mhz19bDecoder(), mhz19b_request())

    def _on_frame(self, frame: Mhz19bReading, now_ms: int) -> None:
        self._answered()
        self._value(now_ms, co2_ppm=frame.co2_ppm)


class SenseairS8Channel(_PolledCo2Channel):
    """Senseair S8: input register 3 read over Modbus RTU every poll_interval_s."""

    def __init__(self, device_id: str) -> None:
        super().__init__(device_id, SenseairS8Decoder(), s8_request())

    def _on_frame(self, frame: S8Reply, now_ms: int) -> None:
        self._answered()
        if isinstance(frame, ModbusException):
            self._problem("modbus_exception", f"function {frame.function:02X} refused: {frame.code} ({frame.name})")
        elif isinstance(frame, S8Reading):
            self._value(now_ms, co2_ppm=frame.co2_ppm)
