"""Encoder for the Bluetooth Health Thermometer's Temperature Measurement (0x2A1C), written from the
Health Thermometer Service spec and docs/ble.md (not from the edge): the bytes a thermometer
indicates.

    encode_temperature_measurement(36.5)                              → 00 6D 01 00 FF
    encode_temperature_measurement(97.7, fahrenheit=True, temp_type=3, timestamp=datetime(...))
"""

from __future__ import annotations

import struct
from datetime import datetime

NAN = 0x007FFFFF
NRES = 0x00800000
PLUS_INFINITY = 0x007FFFFE
MINUS_INFINITY = 0x00800002
RESERVED = 0x00800001


def float11073(value: float, decimals: int = 1) -> bytes:
    """``value`` as an IEEE-11073 32-bit FLOAT with ``decimals`` digits after the point: mantissa
    (signed 24 bit) = value·10^decimals, exponent (signed 8 bit) = −decimals; little-endian."""
    mantissa = round(value * 10**decimals)
    if not -0x7FFFFD <= mantissa <= 0x7FFFFD:  # the top and bottom codes are special values
        raise ValueError(f"{value} does not fit a FLOAT with {decimals} decimals")
    return struct.pack("<I", ((-decimals & 0xFF) << 24) | (mantissa & 0xFFFFFF))


def encode_temperature_measurement(
    value: float,
    *,
    fahrenheit: bool = False,
    timestamp: datetime | None = None,
    temp_type: int | None = None,
    decimals: int = 1,
    raw_value: int | None = None,
    extra_flags: int = 0,
) -> bytes:
    """One Temperature Measurement. ``raw_value`` sends those 32 bits instead of ``value`` (special
    values such as NAN); ``extra_flags`` sets reserved flag bits (fault injection)."""
    flags = (0x01 if fahrenheit else 0) | (0x02 if timestamp else 0) | (0x04 if temp_type is not None else 0)
    out = bytes([flags | extra_flags])
    out += struct.pack("<I", raw_value) if raw_value is not None else float11073(value, decimals)
    if timestamp is not None:
        t = timestamp
        out += struct.pack("<HBBBBB", t.year, t.month, t.day, t.hour, t.minute, t.second)
    if temp_type is not None:
        out += bytes([temp_type])
    return out
