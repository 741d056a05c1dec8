"""Decoder for the Winsen MH-Z19B CO2 sensor's serial protocol (docs/devices.md). Pure.

9600 baud 8N1, request/response. The edge sends the read command and the sensor answers::

    request  FF 01 86 00 00 00 00 00 79
    reply    FF 86 HH LL b4 b5 b6 b7 CS        CO2 = HH·256 + LL ppm

Both end with a checksum: 0xFF − (sum of bytes 1..7 mod 256) + 1, modulo 256 (the two's
complement of the sum). Bytes 4–7 of the reply are not documented by Winsen and are ignored.

    decoder = Mhz19bDecoder()
    replies = decoder.feed(chunk)     # any chunking; resynchronises on the next FF 86

Reject reasons (resynchronisation: edge/decoders/byte_framing.py): ``bad_checksum``, ``truncated`` (cut
off by the next reply, or by a port reopen), ``garbage`` (bytes outside a reply, one count per
run; replies to other commands than 0x86 — which the edge never sends — count here too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from edge.decoders.byte_framing import ByteFramer, NotAFrame, Reject, show

FRAME_BYTES = 9
READ_CO2 = 0x86
_START = bytes([0xFF, READ_CO2])


class Mhz19bReason(StrEnum):
    BAD_CHECKSUM = "bad_checksum"


@dataclass(frozen=True, slots=True)
class Mhz19bReading:
    co2_ppm: int


def checksum(frame: bytes) -> int:
    """The checksum of a 9-byte command or reply: 0xFF − (sum of bytes 1..7) + 1, mod 256."""
    return (0xFF - (sum(frame[1:8]) & 0xFF) + 1) & 0xFF


def read_request(sensor: int = 0x01) -> bytes:
    """The "read CO2" command: FF 01 86 00 00 00 00 00 79."""
    body = bytes([0xFF, sensor, READ_CO2, 0, 0, 0, 0, 0])
    return body + bytes([checksum(body)])


class Mhz19bFormat:
    start = re.compile(re.escape(_START))
    start_len = len(_START)
    strong_start = start
    strong_len = 2
    strong_first = 0xFF
    max_frame = FRAME_BYTES

    def examine(self, data: bytes) -> tuple[Mhz19bReading, int] | Reject | NotAFrame | None:
        if len(data) < FRAME_BYTES:
            return None
        frame = data[:FRAME_BYTES]
        computed = checksum(frame)
        if computed != frame[8]:
            return Reject(
                Mhz19bReason.BAD_CHECKSUM, f"computed {computed:02X}, reply says {frame[8]:02X}: {show(frame)}", 9
            )
        return Mhz19bReading(co2_ppm=frame[2] * 256 + frame[3]), FRAME_BYTES


class Mhz19bDecoder(ByteFramer[Mhz19bReading]):
    def __init__(self) -> None:
        super().__init__(Mhz19bFormat())
