"""Senseair S8 over Modbus RTU: the CRC, decoder tables (raw bytes → whole expected result), the
channel, and round trips through the simulator's independent Modbus server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.channels.air import SenseairS8Channel
from edge.decoders.modbus_crc import crc16_modbus, crc_ok, with_crc
from edge.decoders.senseair_s8 import ModbusException, S8Reading, SenseairS8Decoder, read_request
from firmware_sim.models import senseair_s8 as sim_s8
from firmware_sim.models.mhz19b import Co2Step, Co2Timeline
from firmware_sim.models.senseair_s8 import SenseairS8Model, encode_exception, encode_registers
from nurserywatch.contract import AirReading, Stream
from tests.support.byte_decoding import hexb, outcomes

REQUEST = hexb("fe 04 00 03 00 01 d5 c5")  # docs/devices.md, Senseair's application note
# Replies captured from real S8 sensors, quoted in arendst/Tasmota tasmota/xsns_17_senseair.ino.
CO2_1580 = hexb("fe 04 02 06 2c af 59")  # input register 3: 0x062C = 1580 ppm
TYPE_ID = hexb("fe 04 02 01 77 ec 92")  # register 26 read the same way: 0x0177
ILLEGAL_ADDRESS = hexb("fe 84 02 f2 f1")  # the S8 has no register 4
# Built by hand (CRC from the standard algorithm, checked against the CRC test vector below).
FROM_0X68 = hexb("68 04 02 06 2c e7 44")
HOLDING_REPLY = hexb("fe 03 02 00 b4 ac 27")  # a function 03 answer: not what we asked
HOLDING_EXCEPTION = hexb("fe 83 02 f0 c1")

Result = S8Reading | ModbusException | str


TABLE: list[tuple[str, bytes, list[Result]]] = [
    ("captured CO2 reply", CO2_1580, [S8Reading(1580)]),
    ("captured reply of another register", TYPE_ID, [S8Reading(0x0177)]),
    ("captured exception: illegal data address", ILLEGAL_ADDRESS, [ModbusException(0x84, 2)]),
    (
        "replies back to back",
        CO2_1580 + ILLEGAL_ADDRESS + TYPE_ID,
        [S8Reading(1580), ModbusException(0x84, 2), S8Reading(375)],
    ),
    ("bad CRC", CO2_1580[:-1] + b"\x58" + TYPE_ID, ["bad_checksum", S8Reading(375)]),
    ("exception with a bad CRC", ILLEGAL_ADDRESS[:-1] + b"\xf0" + CO2_1580, ["bad_checksum", S8Reading(1580)]),
    ("garbage before", b"\x00\x55\xaa" + CO2_1580, ["garbage", S8Reading(1580)]),
    ("garbage between", CO2_1580 + b"\x13\x04\x02\x99" + CO2_1580, [S8Reading(1580), "garbage", S8Reading(1580)]),
    ("truncated by the next reply", CO2_1580[:4] + CO2_1580, ["truncated", S8Reading(1580)]),
    ("wrong slave address", FROM_0X68 + CO2_1580, ["wrong_address", S8Reading(1580)]),
    ("wrong function", HOLDING_REPLY + CO2_1580, ["wrong_function", S8Reading(1580)]),
    ("exception for the wrong function", HOLDING_EXCEPTION, ["wrong_function"]),
    ("our own request echoed", REQUEST + CO2_1580, ["garbage", S8Reading(1580)]),
    ("partial reply waits for more", CO2_1580[:6], []),
    ("garbage after a rejected reply", CO2_1580[:-1] + b"\x58" + b"\x00\x13\x55\xaa\x01\x02\x03\x05\x06\x07",
     ["bad_checksum", "garbage"]),  # fmt: skip
]


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "byte_by_byte"])
@pytest.mark.parametrize(("data", "expected"), [pytest.param(d, e, id=name) for name, d, e in TABLE])
def test_table(data: bytes, expected: list[Result], byte_by_byte: bool) -> None:
    assert outcomes(SenseairS8Decoder(), data, byte_by_byte=byte_by_byte) == expected


def test_crc_check_value_and_the_published_frames() -> None:
    # "123456789" → 0x4B37 is the catalogued check value of CRC-16/MODBUS.
    assert crc16_modbus(b"123456789") == 0x4B37
    assert sim_s8.crc16(b"123456789") == 0x4B37, "the simulator's own (table-driven) CRC"
    assert read_request() == REQUEST
    assert with_crc(REQUEST[:-2]) == REQUEST
    for frame in (REQUEST, CO2_1580, TYPE_ID, ILLEGAL_ADDRESS, FROM_0X68, HOLDING_REPLY, HOLDING_EXCEPTION):
        assert crc_ok(frame)
        assert sim_s8.crc16(frame) == 0, "a frame followed by its CRC has CRC 0"
    assert not crc_ok(CO2_1580[:-1] + b"\x58")


def test_exception_names() -> None:
    assert ModbusException(0x84, 2).name == "illegal_data_address"
    assert ModbusException(0x84, 0x42).name == "exception_66"


def test_channel_counts_exceptions_and_publishes_values() -> None:
    ch = SenseairS8Channel("s8-1")
    assert ch.poll_interval_s == 5.0 and ch.request() == REQUEST
    ch.on_bytes(ILLEGAL_ADDRESS, 10)
    assert ch.readings(11) == []
    assert ch.problems() == {"modbus_exception": 1}
    assert ch.last_problem() == "modbus_exception: function 84 refused: 2 (illegal_data_address)"
    ch.request()  # the exception was an answer: no no_reply
    ch.on_bytes(CO2_1580[:3], 20)
    ch.on_bytes(CO2_1580[3:], 25)
    assert ch.readings(30) == [(Stream.AIR, AirReading(ts=25, seq=0, co2_ppm=1580))]
    ch.request()
    ch.request()
    assert ch.problems() == {"modbus_exception": 1, "no_reply": 1}


def model(ppm: float) -> SenseairS8Model:
    return SenseairS8Model(Co2Timeline([Co2Step(at_s=0, co2_ppm=ppm)], loop_s=None, seed="s8"))


def request(address: int, function: int, start: int, count: int) -> bytes:
    return with_crc(bytes([address, function]) + start.to_bytes(2, "big") + count.to_bytes(2, "big"))


@pytest.mark.parametrize(
    ("req", "reply"),
    [
        pytest.param(request(0xFE, 4, 26, 1), TYPE_ID, id="type id, as captured from a real S8"),
        pytest.param(request(0xFE, 4, 4, 1), ILLEGAL_ADDRESS, id="register 4, as captured from a real S8"),
        pytest.param(
            request(0x68, 4, 0, 3), with_crc(hexb("68 04 06 00 00 00 00 00 00")), id="status registers, own address"
        ),
        pytest.param(request(0xFE, 3, 31, 1), with_crc(hexb("fe 03 02 00 b4")), id="ABC period 180 h"),
        pytest.param(request(0xFE, 4, 0, 0), with_crc(hexb("fe 84 03")), id="count 0: illegal data value"),
        pytest.param(request(0xFE, 6, 1, 0x7C06), with_crc(hexb("fe 86 01")), id="writes: illegal function"),
        pytest.param(request(0x01, 4, 3, 1), b"", id="another address: silence"),
        pytest.param(request(0x00, 4, 3, 1), b"", id="broadcast: silence"),
        pytest.param(REQUEST[:-1] + b"\xc4", b"", id="bad CRC: silence"),
    ],
)
def test_emulator_answers_like_a_real_s8(req: bytes, reply: bytes) -> None:
    assert model(600).respond(req, 1.0) == reply


def test_emulator_handles_split_and_noisy_requests() -> None:
    sim = model(1580)
    assert sim.respond(b"\x00\xff" + REQUEST[:5], 0.0) == b""
    replies = sim.respond(REQUEST[5:] + REQUEST, 0.0)
    decoded = SenseairS8Decoder().feed(replies)
    assert len(decoded) == 2 and all(isinstance(r, S8Reading) and abs(r.co2_ppm - 1580) <= 15 for r in decoded)


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=1), st.integers(1, 255))
def test_round_trip_through_the_simulator_encoders(values: list[int], code: int) -> None:
    assert SenseairS8Decoder().decode(encode_registers(0xFE, 4, values)) == [S8Reading(values[0])]
    assert SenseairS8Decoder().decode(encode_exception(0xFE, 4, code)) == [ModbusException(0x84, code)]


@given(st.floats(0, 10000), st.floats(0, 3600))
def test_emulator_replies_decode_to_the_scripted_value(ppm: float, t_s: float) -> None:
    (reading,) = SenseairS8Decoder().feed(model(ppm).respond(REQUEST, t_s))
    assert isinstance(reading, S8Reading) and abs(reading.co2_ppm - ppm) <= 5 * 3 + 0.5
