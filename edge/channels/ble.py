"""Channels (edge/channels/base.py) of the devices that only exist on BLE, sans I/O. The BLE shell hands
each one whole payloads: a GATT indication, or the BTHome service data of one advertisement.

- ThermometerChannel: Temperature Measurement (0x2A1C) → ``body_temp``, one reading per measurement.
- BTHomeAirChannel: BTHome v2 adverts → one ``air`` reading per second when new values came, and
  the battery level for the device status.

A nap mat or posture clip on BLE needs no channel of its own: its notifications carry the serial
sentence bytes, so the shell feeds them to the kind's usual channel (edge/channels/registry.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ValidationError

from edge.channels.base import SEQ_MODULO
from edge.decoders.bthome import BTHomeDecoder, BTHomePacket, parse_bindkey
from edge.decoders.health_thermometer import decode_temperature_measurement
from edge.decoders.rejection import Rejection
from nurserywatch.contract import AirReading, BodyTempReading, Stream
from nurserywatch.kit import BleTransport, Device

#: Measurements kept while waiting for the next tick; a thermometer sends one every few seconds,
#: a burst of stored ones after a reconnect. Beyond this the oldest are dropped (and counted).
MAX_PENDING = 120

#: BTHome object name → AirReading field. The first object of a name in a packet wins.
AIR_FIELDS = {
    "co2_ppm": "co2_ppm",
    "pm25_ugm3": "pm25_ugm3",
    "pm10_ugm3": "pm10_ugm3",
    "temperature_c": "temp_c",
    "humidity_pct": "rh_pct",
}


def _ble_address(device: Device) -> str:
    if not isinstance(device.transport, BleTransport):
        raise ValueError(f"{device.id}: a {device.kind.value} is a BLE device; its transport must be type: ble")
    return device.transport.address


class _Counted:
    """Counting by reason, shared by the channels below."""

    def __init__(self) -> None:
        self._problems: Counter[str] = Counter()
        self._last_problem: str | None = None

    def _count(self, reason: str, detail: str) -> None:
        self._problems[reason] += 1
        self._last_problem = f"{reason}: {detail}"

    # The Channel protocol's fixed answers for BLE devices.
    poll_interval_s: float | None = None

    def request(self) -> bytes | None:
        return None

    def port_opened(self) -> None:
        """Each payload is whole: there is no partial frame to forget."""

    def last_problem(self) -> str | None:
        return self._last_problem


class ThermometerChannel(_Counted):
    """Reject reasons: those of edge/decoders/health_thermometer.py, ``out_of_range`` (outside the contract's
    20–45 °C: not on a body yet, or broken), ``queue_full`` (more than MAX_PENDING waiting)."""

    def __init__(self, device_id: str) -> None:
        super().__init__()
        self.device_id = device_id
        self.accepted = 0
        self._pending: list[tuple[int, float]] = []
        self._seq = 0

    @classmethod
    def for_device(cls, device: Device) -> ThermometerChannel:
        _ble_address(device)
        return cls(device.id)

    def on_bytes(self, data: bytes, now_ms: int) -> None:
        result = decode_temperature_measurement(bytes(data))
        if isinstance(result, Rejection):
            self._count(result.reason, result.detail)
            return
        try:
            BodyTempReading(ts=now_ms, seq=0, celsius=result.celsius)
        except ValidationError:
            self._count("out_of_range", f"{result.celsius} °C is outside 20–45 °C: {bytes(data).hex(' ')}")
            return
        if len(self._pending) >= MAX_PENDING:
            self._pending.pop(0)
            self._count("queue_full", f"more than {MAX_PENDING} measurements waiting; oldest dropped")
        self.accepted += 1
        self._pending.append((now_ms, result.celsius))

    def readings(self, now_ms: int) -> list[tuple[Stream, BaseModel]]:
        out: list[tuple[Stream, BaseModel]] = []
        for ts, celsius in self._pending:
            out.append((Stream.BODY_TEMP, BodyTempReading(ts=ts, seq=self._seq, celsius=celsius)))
            self._seq = (self._seq + 1) % SEQ_MODULO
        self._pending.clear()
        return out

    def problems(self) -> Counter[str]:
        return self._problems.copy()

    def battery_pct(self) -> float | None:
        return None  # Battery Service (0x180F) is not read yet


class BTHomeAirChannel(_Counted):
    """Reject reasons: those of edge/decoders/bthome.py (``duplicate`` adverts are counted apart, in
    ``duplicates``: a scanner reports each advert many times), ``out_of_range`` for a value the
    contract does not allow (that field is left out; the others are used)."""

    def __init__(self, device_id: str, address: str, bindkey: bytes | None = None) -> None:
        super().__init__()
        self.device_id = device_id
        self.decoder = BTHomeDecoder(address, bindkey)
        self._fields: dict[str, float] = {}
        self._fields_ts = 0
        self._battery: float | None = None
        self._seq = 0

    @classmethod
    def for_device(cls, device: Device) -> BTHomeAirChannel:
        address = _ble_address(device)
        bindkey = device.transport.bindkey if isinstance(device.transport, BleTransport) else None
        return cls(device.id, address, parse_bindkey(bindkey) if bindkey else None)

    @property
    def duplicates(self) -> int:
        return self.decoder.duplicates

    def on_bytes(self, data: bytes, now_ms: int) -> None:
        before = self.decoder.last_rejection
        result = self.decoder.decode(data, now_ms)
        if self.decoder.last_rejection is not before:  # counted by the decoder (duplicates apart)
            self._last_problem = str(self.decoder.last_rejection)
        if isinstance(result, BTHomePacket):
            self._take(result, now_ms)

    def _take(self, packet: BTHomePacket, now_ms: int) -> None:
        fields: dict[str, Any] = {}
        for name, field in AIR_FIELDS.items():
            value = packet.first(name)
            if isinstance(value, int | float) and field not in fields:
                fields[field] = value
        for field, value in fields.items():
            try:
                AirReading(ts=now_ms, seq=0, **{field: value})
            except ValidationError:
                self._count("out_of_range", f"{field} {value} is outside the contract's range")
                continue
            self._fields[field] = float(value)
            self._fields_ts = now_ms
        battery = packet.first("battery_pct")
        if isinstance(battery, int):
            if battery <= 100:
                self._battery = float(battery)
            else:
                self._count("out_of_range", f"battery {battery} % is over 100")

    def readings(self, now_ms: int) -> list[tuple[Stream, BaseModel]]:
        """The values that arrived since the last tick (the latest of each), as one reading."""
        if not self._fields:
            return []
        reading = AirReading(ts=self._fields_ts, seq=self._seq, **self._fields)
        self._seq = (self._seq + 1) % SEQ_MODULO
        self._fields = {}
        return [(Stream.AIR, reading)]

    def problems(self) -> Counter[str]:
        return self.decoder.rejected + self._problems

    def last_problem(self) -> str | None:
        return self._last_problem

    def battery_pct(self) -> float | None:
        return self._battery
