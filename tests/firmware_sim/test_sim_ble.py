"""firmware_sim's BLE payload encoders: they reproduce published bytes, and the edge's independently
written decoders read back whatever they produce (hypothesis round trips)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.decoders.bthome import BTHomeDecoder, BTHomePacket, parse_bthome
from edge.decoders.health_thermometer import (
    Rejection,
    TemperatureMeasurement,
    TemperatureType,
    TemperatureUnit,
    decode_temperature_measurement,
)
from firmware_sim.encoders.bthome import encode_bthome
from firmware_sim.encoders.health_thermometer import NAN, NRES, encode_temperature_measurement

MAC = "54:48:E6:8F:80:A5"
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")


def test_thermometer_spec_example() -> None:
    assert encode_temperature_measurement(36.5) == bytes.fromhex("00 6D 01 00 FF")


def test_thermometer_all_fields() -> None:
    got = encode_temperature_measurement(
        97.7, fahrenheit=True, timestamp=datetime(2026, 1, 15, 9, 30, 5), temp_type=3
    )
    assert got == bytes.fromhex("07 D1 03 00 FF EA 07 01 0F 09 1E 05 03")


def test_thermometer_special_values() -> None:
    assert encode_temperature_measurement(0, raw_value=NAN) == bytes.fromhex("00 FF FF 7F 00")
    assert encode_temperature_measurement(0, raw_value=NRES) == bytes.fromhex("00 00 00 80 00")


def test_bthome_plain_matches_bthome_ble_vector() -> None:
    # Bluetooth-Devices/bthome-ble tests/test_parser_v2.py, test_bthome_packet_id_temperature_humidity_battery
    got = encode_bthome([(0x00, 9), (0x01, 93), (0x02, 23.97), (0x03, 63.27)])
    assert got == bytes.fromhex("40 00 09 01 5d 02 5d 09 03 b7 18")


def test_bthome_encrypted_matches_bthome_ble_vector() -> None:
    # bthome-ble src/bthome_ble/bthome_v2_encryption.py example: 02CA0903BF13, counter 1122867, this
    # MAC and key; its output is the advert of tests/test_parser_v2.py test_same_service_data.
    got = encode_bthome([(0x02, 25.06), (0x03, 50.55)], bindkey=KEY, mac=MAC, counter=1122867)
    assert got == bytes.fromhex("41 e4 45 f3 c9 96 2b 33 22 11 00 6c 7c 45 19")


def test_bthome_mac_in_payload_matches_bthome_ble_vector() -> None:
    # bthome-ble tests/test_parser_v2.py, test_bthome_with_mac_encrypted
    got = encode_bthome(
        [(0x02, 25.06), (0x03, 50.55)], bindkey=KEY, mac=MAC, counter=0x33221100, mac_in_payload=True
    )
    assert got == bytes.fromhex("43 a5 80 8f e6 48 54 f1 96 c0 6f fb 49 00 11 22 33 f0 8e cb de")


def test_encrypted_needs_the_mac() -> None:
    with pytest.raises(ValueError, match="MAC"):
        encode_bthome([(0x01, 50)], bindkey=KEY)


# -- round trips

tenths = st.integers(min_value=-50_000, max_value=50_000)


@given(
    tenths=tenths,
    fahrenheit=st.booleans(),
    ts=st.none() | st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    temp_type=st.none() | st.integers(1, 9),
)
def test_thermometer_round_trip(tenths: int, fahrenheit: bool, ts: datetime | None, temp_type: int | None) -> None:
    value = tenths / 10
    payload = encode_temperature_measurement(value, fahrenheit=fahrenheit, timestamp=ts, temp_type=temp_type)
    celsius = round((value - 32) * 5 / 9, 2) if fahrenheit else value
    assert decode_temperature_measurement(payload) == TemperatureMeasurement(
        celsius=celsius,
        unit=TemperatureUnit.FAHRENHEIT if fahrenheit else TemperatureUnit.CELSIUS,
        timestamp=ts.replace(microsecond=0) if ts else None,
        temp_type=TemperatureType(temp_type) if temp_type else None,
    )


@given(raw=st.sampled_from([0x007FFFFF, 0x00800000, 0x007FFFFE, 0x00800002, 0x00800001]), flags=st.integers(0, 7))
def test_thermometer_special_values_never_become_readings(raw: int, flags: int) -> None:
    payload = encode_temperature_measurement(
        0,
        fahrenheit=bool(flags & 1),
        timestamp=datetime(2026, 1, 1) if flags & 2 else None,
        temp_type=2 if flags & 4 else None,
        raw_value=raw,
    )
    assert isinstance(decode_temperature_measurement(payload), Rejection)


air = st.fixed_dictionaries(
    {
        0x01: st.integers(0, 100),
        0x02: st.integers(-4000, 8500).map(lambda v: v / 100),
        0x03: st.integers(0, 10000).map(lambda v: v / 100),
        0x0D: st.integers(0, 1000),
        0x0E: st.integers(0, 1000),
        0x12: st.integers(400, 10000),
    }
)


@given(
    values=air,
    packet_ids=st.lists(st.integers(0, 255), min_size=1, max_size=5, unique=True),
    encrypted=st.booleans(),
    counter=st.integers(100, 2**32 - 10),
)
def test_bthome_round_trip(values: dict[int, float], packet_ids: list[int], encrypted: bool, counter: int) -> None:
    decoder = BTHomeDecoder(MAC, KEY if encrypted else None)
    for i, packet_id in enumerate(packet_ids):
        objects = [(0x00, packet_id), *sorted(values.items())]
        data = encode_bthome(objects, bindkey=KEY if encrypted else None, mac=MAC, counter=counter + i)
        # 10 s apart: every advert is a new one whatever its packet id
        packet = decoder.decode(data, now_ms=i * 10_000)
        assert isinstance(packet, BTHomePacket), packet
        assert packet.encrypted is encrypted
        assert packet.counter == (counter + i if encrypted else None)
        assert [(ob.object_id, ob.value) for ob in packet.objects] == objects
    assert not decoder.rejected


@given(values=air, key=st.binary(min_size=16, max_size=16))
def test_bthome_wrong_key_never_decodes(values: dict[int, float], key: bytes) -> None:
    data = encode_bthome(sorted(values.items()), bindkey=KEY, mac=MAC, counter=1000)
    result = parse_bthome(data, MAC, key)
    assert (result.reason.value if not isinstance(result, BTHomePacket) else "ok") == (
        "ok" if key == KEY else "decrypt_failed"
    )
