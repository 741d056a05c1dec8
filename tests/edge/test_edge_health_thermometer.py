"""edge.decoders.health_thermometer: Temperature Measurement (0x2A1C) bytes → whole result, as a table.

Expected bytes were worked out by hand from the Health Thermometer Service spec: flags, then the
IEEE-11073 FLOAT little-endian (mantissa s24, exponent s8), then the optional Date Time (year u16,
month, day, hours, minutes, seconds) and Temperature Type. docs/ble.md gives the spec's example
36.5 °C = 6D 01 00 FF.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from edge.decoders.health_thermometer import (
    Rejection,
    TemperatureMeasurement,
    TemperatureType,
    TemperatureUnit,
    decode_temperature_measurement,
)

C, F = TemperatureUnit.CELSIUS, TemperatureUnit.FAHRENHEIT
T = datetime(2026, 1, 15, 9, 30, 5)  # EA 07 01 0F 09 1E 05


def m(
    celsius: float, unit: TemperatureUnit = C, ts: datetime | None = None, kind: TemperatureType | None = None
) -> TemperatureMeasurement:
    return TemperatureMeasurement(celsius, unit, ts, kind)


CASES: list[tuple[str, str, TemperatureMeasurement | str]] = [
    # -- values
    ("spec example 36.5 °C", "00 6D 01 00 FF", m(36.5)),
    ("two decimals", "00 47 0E 00 FE", m(36.55)),  # 3655 × 10^-2
    ("exponent 0", "00 25 00 00 00", m(37.0)),
    ("positive exponent", "00 04 00 00 01", m(40.0)),  # 4 × 10^1
    ("negative mantissa", "00 CE FF FF FF", m(-5.0)),  # -50 × 10^-1: decoded; plausibility is the channel's
    ("°F converted", "01 DA 03 00 FF", m(37.0, F)),  # 98.6 °F
    ("°F 97.7 → 36.5", "01 D1 03 00 FF", m(36.5, F)),
    ("°F rounded to 0.01", "01 D6 03 00 FF", m(36.78, F)),  # 98.2 °F = 36.777… °C
    # -- optional fields
    ("timestamp", "02 6D 01 00 FF EA 07 01 0F 09 1E 05", m(36.5, ts=T)),
    ("type armpit", "04 6D 01 00 FF 01", m(36.5, kind=TemperatureType.ARMPIT)),
    ("type tympanum", "04 6D 01 00 FF 09", m(36.5, kind=TemperatureType.TYMPANUM)),
    ("everything", "07 D1 03 00 FF EA 07 01 0F 09 1E 05 03", m(36.5, F, T, TemperatureType.EAR)),
    ("timestamp unknown (zeros)", "02 6D 01 00 FF 00 00 00 00 00 00 00", m(36.5)),
    ("timestamp not a date (30 Feb)", "02 6D 01 00 FF EA 07 02 1E 00 00 00", m(36.5)),
    # -- reserved flag bits are ignored (Core spec: receivers ignore RFU bits), with what they may add
    ("reserved bit 3", "08 6D 01 00 FF", m(36.5)),
    ("reserved bit 7 + future bytes", "80 6D 01 00 FF AA BB", m(36.5)),
    ("reserved bits, timestamp, type", "FE 6D 01 00 FF EA 07 01 0F 09 1E 05 06", m(36.5, C, T, TemperatureType.MOUTH)),
    # -- special values
    ("NaN", "00 FF FF 7F 00", "nan"),
    ("NRes", "00 00 00 80 00", "nres"),
    ("+INF", "00 FE FF 7F 00", "plus_infinity"),
    ("-INF", "00 02 00 80 00", "minus_infinity"),
    ("reserved special", "00 01 00 80 00", "reserved_value"),
    ("NaN in °F with type", "05 FF FF 7F 00 02", "nan"),
    # -- lengths
    ("empty", "", "truncated"),
    ("flags only", "00", "truncated"),
    ("value cut", "00 6D 01 00", "truncated"),
    ("timestamp cut", "02 6D 01 00 FF EA 07 01", "truncated"),
    ("type missing", "04 6D 01 00 FF", "truncated"),
    ("type missing (reserved bits set)", "0C 6D 01 00 FF", "truncated"),
    ("extra byte", "00 6D 01 00 FF 00", "wrong_length"),
    ("type byte without its flag", "00 6D 01 00 FF 01", "wrong_length"),
    # -- type codes
    ("type 0 reserved", "04 6D 01 00 FF 00", "bad_temp_type"),
    ("type 10 reserved", "04 6D 01 00 FF 0A", "bad_temp_type"),
]


@pytest.mark.parametrize(("payload", "expected"), [(p, e) for _, p, e in CASES], ids=[i for i, _, _ in CASES])
def test_decode_table(payload: str, expected: TemperatureMeasurement | str) -> None:
    result = decode_temperature_measurement(bytes.fromhex(payload))
    if isinstance(expected, str):
        assert isinstance(result, Rejection)
        assert result.reason.value == expected
    else:
        assert result == expected


def test_rejection_says_what_and_shows_the_bytes() -> None:
    assert str(decode_temperature_measurement(bytes.fromhex("00 FF FF 7F 00"))) == (
        "nan: special FLOAT value 0x007FFFFF: 00 ff ff 7f 00"
    )
    assert str(decode_temperature_measurement(bytes.fromhex("02 6D 01 00 FF EA"))) == (
        "truncated: flags 0x02 need 12 bytes, got 6: 02 6d 01 00 ff ea"
    )


def test_bytearray_from_bleak_is_accepted() -> None:
    # bleak hands notification data over as a bytearray.
    assert decode_temperature_measurement(bytearray.fromhex("00 6D 01 00 FF")) == m(36.5)
