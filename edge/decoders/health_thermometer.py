"""Decoder for the Bluetooth Health Thermometer's Temperature Measurement (0x2A1C). Pure.

    result = decode_temperature_measurement(payload)    # one whole GATT indication
    TemperatureMeasurement(celsius=36.5, unit=TemperatureUnit.CELSIUS, timestamp=None, temp_type=None)
    Rejection(reason="nan", detail="...")                # or why there is no reading

Layout (Health Thermometer Service 1.0, §3.1; all little-endian)::

    flags u8            bit0 unit (0 °C, 1 °F), bit1 timestamp present, bit2 temperature type present,
                        bits 3-7 reserved for future use
    value FLOAT         IEEE-11073 32-bit: mantissa s24 (bytes 0-2), exponent s8 (byte 3)
    timestamp 7 bytes   if bit1: year u16, month, day, hours, minutes, seconds (Date Time, 0x2A08)
    temperature type u8 if bit2: 1 armpit … 9 tympanum (0x2A1D)

Reserved flag bits are ignored, as the Core spec asks of receivers; the trailing bytes a future
flag might add are then tolerated too. Without reserved bits the length must match exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum

from edge.decoders.rejection import Rejection

FLAG_FAHRENHEIT = 0x01
FLAG_TIMESTAMP = 0x02
FLAG_TEMP_TYPE = 0x04
FLAGS_RESERVED = 0xF8

#: IEEE-11073 32-bit FLOAT special values (exponent 0) → reject reason.
SPECIAL_VALUES = {
    0x007FFFFF: "nan",
    0x00800000: "nres",  # "not at this resolution"
    0x007FFFFE: "plus_infinity",
    0x00800002: "minus_infinity",
    0x00800001: "reserved_value",
}


class TemperatureUnit(StrEnum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class TemperatureType(IntEnum):
    """Where the temperature was taken (Temperature Type characteristic 0x2A1D)."""

    ARMPIT = 1
    BODY = 2  # general
    EAR = 3  # usually the earlobe
    FINGER = 4
    GI_TRACT = 5
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9  # ear drum


class RejectReason(StrEnum):
    TRUNCATED = "truncated"  # shorter than its flags say
    WRONG_LENGTH = "wrong_length"  # bytes left over (no reserved flag explains them)
    NAN = "nan"
    NRES = "nres"
    PLUS_INFINITY = "plus_infinity"
    MINUS_INFINITY = "minus_infinity"
    RESERVED_VALUE = "reserved_value"
    BAD_TEMP_TYPE = "bad_temp_type"  # 0 or 10-255: reserved codes


@dataclass(frozen=True, slots=True)
class TemperatureMeasurement:
    celsius: float
    #: The unit the thermometer sent (the value is converted to °C either way).
    unit: TemperatureUnit
    #: The thermometer's own clock: local time without a zone, often never set; None if absent,
    #: or if it says "unknown" (zero year/month/day) or is not a real date.
    timestamp: datetime | None
    temp_type: TemperatureType | None


def decode_temperature_measurement(payload: bytes) -> TemperatureMeasurement | Rejection:
    """Decode one Temperature Measurement value; never raises."""
    if len(payload) < 5:
        return Rejection(RejectReason.TRUNCATED, f"{len(payload)} bytes, need ≥ 5: {payload.hex(' ')}")
    flags = payload[0]
    need = 5 + (7 if flags & FLAG_TIMESTAMP else 0) + (1 if flags & FLAG_TEMP_TYPE else 0)
    if len(payload) < need:
        return Rejection(
            RejectReason.TRUNCATED, f"flags 0x{flags:02X} need {need} bytes, got {len(payload)}: {payload.hex(' ')}"
        )
    if len(payload) > need and not flags & FLAGS_RESERVED:
        return Rejection(
            RejectReason.WRONG_LENGTH, f"flags 0x{flags:02X} need {need} bytes, got {len(payload)}: {payload.hex(' ')}"
        )
    raw = int.from_bytes(payload[1:5], "little")
    if raw in SPECIAL_VALUES:
        return Rejection(RejectReason(SPECIAL_VALUES[raw]), f"special FLOAT value 0x{raw:08X}: {payload.hex(' ')}")
    value = float11073(raw)
    pos = 5
    timestamp = None
    if flags & FLAG_TIMESTAMP:
        timestamp = _date_time(payload[pos : pos + 7])
        pos += 7
    temp_type = None
    if flags & FLAG_TEMP_TYPE:
        code = payload[pos]
        if code not in TemperatureType._value2member_map_:
            return Rejection(RejectReason.BAD_TEMP_TYPE, f"temperature type {code} is reserved: {payload.hex(' ')}")
        temp_type = TemperatureType(code)
    if flags & FLAG_FAHRENHEIT:
        return TemperatureMeasurement(round((value - 32) * 5 / 9, 2), TemperatureUnit.FAHRENHEIT, timestamp, temp_type)
    return TemperatureMeasurement(value, TemperatureUnit.CELSIUS, timestamp, temp_type)


def float11073(raw: int) -> float:
    """An IEEE-11073 32-bit FLOAT (as an unsigned int) → value; special values are the caller's."""
    mantissa = raw & 0xFFFFFF
    if mantissa >= 0x800000:
        mantissa -= 0x1000000
    exponent = raw >> 24
    if exponent >= 0x80:
        exponent -= 0x100
    # Dividing by an exact power of ten gives the double nearest the decimal (36.55, not 36.550000000000004).
    return float(mantissa * 10**exponent) if exponent >= 0 else mantissa / 10**-exponent


def _date_time(data: bytes) -> datetime | None:
    year = int.from_bytes(data[0:2], "little")
    month, day, hours, minutes, seconds = data[2:7]
    try:
        return datetime(year, month, day, hours, minutes, seconds)
    except ValueError:  # 0 = "unknown" in year/month/day, or a date that does not exist
        return None
