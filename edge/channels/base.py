"""What the edge's shells need from one device's data path (sans I/O).

A Channel turns the bytes a device sends — a chunk of a serial byte stream, or one whole BLE
advertisement/notification payload — into contract readings, once per second. It never does I/O:
the serial shell (edge/io/serial_port.py) and the BLE shell feed it, the agent asks it for readings.
Device kinds map to channel classes in edge/channels/registry.py.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from pydantic import BaseModel

from edge.decoders.nmea import SEQ_MODULO
from nurserywatch.contract import Stream

__all__ = ["SEQ_MODULO", "Channel"]


class Channel(Protocol):
    device_id: str
    #: None: the device sends on its own. Otherwise the shell writes request() every this many s.
    poll_interval_s: float | None

    def request(self) -> bytes | None:
        """The bytes that ask a request/response device for a value (None for streaming devices)."""
        ...

    def on_bytes(self, data: bytes, now_ms: int) -> None:
        """Bytes from the device, with the (injected) clock time they arrived."""
        ...

    def port_opened(self) -> None:
        """The port (re)opened or the BLE link reconnected: forget partial frames."""
        ...

    def readings(self, now_ms: int) -> list[tuple[Stream, BaseModel]]:
        """Called once per second: contract readings for what arrived since the last call. Nothing
        new → nothing, so a silent device stays visible as silence."""
        ...

    def problems(self) -> Counter[str]:
        """Everything rejected so far, by reason."""
        ...

    def last_problem(self) -> str | None:
        """The latest rejection in one line (reason and the offending bytes), for the log."""
        ...

    def battery_pct(self) -> float | None:
        """The last battery level the device reported, if it reports one."""
        ...
