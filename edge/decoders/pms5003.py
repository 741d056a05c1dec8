"""Decoder for the Plantower PMS5003 particulate sensor in active mode (docs/devices.md). Pure.

At 9600 baud 8N1 the sensor sends a 32-byte frame about once a second on its own::

    42 4D | length u16 BE (= 28) | 13 data words u16 BE | checksum u16 BE

Data words (µg/m³ unless said otherwise):
  1–3  PM1.0, PM2.5, PM10 "CF=1" (factory calibration against a standard particle)
  4–6  PM1.0, PM2.5, PM10 under atmospheric conditions — what the edge publishes
  7–12 particles larger than 0.3, 0.5, 1.0, 2.5, 5.0, 10 µm per 0.1 L of air
  13   reserved
The checksum is the sum of bytes 0..29 (header, length and data), modulo 65536.

    decoder = Pms5003Decoder()
    frames = decoder.feed(chunk)     # any chunking; resynchronises on the next 42 4D

Reject reasons (edge/decoders/byte_framing.py explains the resynchronisation): ``bad_length`` (length
field not 28), ``bad_checksum``, ``truncated`` (cut off by the next frame, or by a port reopen),
``garbage`` (bytes outside any frame, one count per run).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import StrEnum

from edge.decoders.byte_framing import ByteFramer, NotAFrame, Reject, show

FRAME_BYTES = 32
LENGTH_FIELD = 28  # 13 data words + the checksum word
_START = b"\x42\x4d"


class PmsReason(StrEnum):
    BAD_LENGTH = "bad_length"
    BAD_CHECKSUM = "bad_checksum"


@dataclass(frozen=True, slots=True)
class PmsFrame:
    #: Atmospheric-environment concentrations (data words 4–6), µg/m³.
    pm1_ugm3: int
    pm25_ugm3: int
    pm10_ugm3: int
    #: "CF=1" concentrations (data words 1–3), µg/m³; not published, kept for diagnosis.
    pm1_cf1_ugm3: int
    pm25_cf1_ugm3: int
    pm10_cf1_ugm3: int
    #: Particles larger than 0.3, 0.5, 1.0, 2.5, 5.0 and 10 µm per 0.1 L (data words 7–12).
    particles_per_dl: tuple[int, int, int, int, int, int]
    #: Data word 13.
    reserved: int


class Pms5003Format:
    start = re.compile(re.escape(_START))
    start_len = len(_START)
    strong_start = re.compile(re.escape(_START + LENGTH_FIELD.to_bytes(2, "big")))
    strong_len = 4
    strong_first = 0x42
    max_frame = FRAME_BYTES

    def examine(self, data: bytes) -> tuple[PmsFrame, int] | Reject | NotAFrame | None:
        if len(data) < 4:
            return None
        length = int.from_bytes(data[2:4], "big")
        if length != LENGTH_FIELD:
            return Reject(PmsReason.BAD_LENGTH, f"length field {length}, expected {LENGTH_FIELD}: {show(data[:4])}", 4)
        if len(data) < FRAME_BYTES:
            return None
        frame = data[:FRAME_BYTES]
        computed = sum(frame[:30]) & 0xFFFF
        given = int.from_bytes(frame[30:32], "big")
        if computed != given:
            return Reject(
                PmsReason.BAD_CHECKSUM,
                f"computed {computed:04X}, frame says {given:04X}: {show(frame)}",
                FRAME_BYTES,
            )
        w = struct.unpack(">13H", frame[4:30])
        return (
            PmsFrame(
                pm1_ugm3=w[3],
                pm25_ugm3=w[4],
                pm10_ugm3=w[5],
                pm1_cf1_ugm3=w[0],
                pm25_cf1_ugm3=w[1],
                pm10_cf1_ugm3=w[2],
                particles_per_dl=(w[6], w[7], w[8], w[9], w[10], w[11]),
                reserved=w[12],
            ),
            FRAME_BYTES,
        )


class Pms5003Decoder(ByteFramer[PmsFrame]):
    def __init__(self) -> None:
        super().__init__(Pms5003Format())
