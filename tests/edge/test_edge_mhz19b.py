"""MH-Z19B: decoder tables (raw bytes → whole expected result), the request, the channel's
polling bookkeeping, and round trips through the simulator's independent emulator."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.channels.air import Mhz19bChannel
from edge.decoders.mhz19b import Mhz19bDecoder, Mhz19bReading, checksum, read_request
from firmware_sim.models.mhz19b import Co2Step, Co2Timeline, Mhz19bModel, encode_reply
from nurserywatch.contract import AirReading, Stream
from tests.support.byte_decoding import hexb, outcomes

REQUEST = hexb("ff 01 86 00 00 00 00 00 79")  # docs/devices.md and the Winsen datasheet
# Captured from a real sensor: avaldebe/PyPMS tests/captured_data/MHZ19B.hexdump (+ .csv).
R636 = hexb("ff 86 02 7c 42 00 00 00 ba")
R635 = hexb("ff 86 02 7b 42 00 00 00 bb")
R633 = hexb("ff 86 02 79 42 00 00 00 bd")
# Built by hand from the datasheet: 5000 ppm = 0x1388, checksum 0x100 − (0x86 + 0x13 + 0x88 mod 256) = 0xDF.
R5000 = hexb("ff 86 13 88 00 00 00 00 df")

Result = Mhz19bReading | str


TABLE: list[tuple[str, bytes, list[Result]]] = [
    ("captured reply", R636, [Mhz19bReading(636)]),
    ("captured replies back to back", R636 + R635 + R633, [Mhz19bReading(636), Mhz19bReading(635), Mhz19bReading(633)]),
    ("hand-built reply, high byte set", R5000, [Mhz19bReading(5000)]),
    ("bad checksum", R636[:-1] + b"\xbb" + R635, ["bad_checksum", Mhz19bReading(635)]),
    ("garbage before", b"\x00\x13\xfe" + R636, ["garbage", Mhz19bReading(636)]),
    ("garbage between", R636 + b"\xff\xff\x00" + R635, [Mhz19bReading(636), "garbage", Mhz19bReading(635)]),
    ("truncated by the next reply", R636[:5] + R635, ["truncated", Mhz19bReading(635)]),
    ("our own request echoed (RX wired to TX)", REQUEST + R636, ["garbage", Mhz19bReading(636)]),
    ("reply to another command", hexb("ff 99 00 00 00 00 00 00 67") + R633, ["garbage", Mhz19bReading(633)]),
    ("partial reply waits for more", R636[:8], []),
    # Only the rejected reply's own bytes belong to its rejection: noise after it is garbage.
    ("garbage after a rejected reply", R636[:-1] + b"\xbb" + b"\x00\x13\xfe\x00\x11\x22\x33\x44\x55\x66",
     ["bad_checksum", "garbage"]),  # fmt: skip
]


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "byte_by_byte"])
@pytest.mark.parametrize(("data", "expected"), [pytest.param(d, e, id=name) for name, d, e in TABLE])
def test_table(data: bytes, expected: list[Result], byte_by_byte: bool) -> None:
    assert outcomes(Mhz19bDecoder(), data, byte_by_byte=byte_by_byte) == expected


def test_request_and_checksum_match_the_datasheet() -> None:
    assert read_request() == REQUEST
    assert [checksum(f) for f in (REQUEST, R636, R635, R633, R5000)] == [0x79, 0xBA, 0xBB, 0xBD, 0xDF]


def test_rejection_detail_names_both_checksums() -> None:
    decoder = Mhz19bDecoder()
    decoder.feed(R636[:-1] + b"\x00" + R635)
    assert str(decoder.last_rejection) == "bad_checksum: computed BA, reply says 00: ff 86 02 7c 42 00 00 00 00"


def test_channel_polls_counts_missing_replies_and_publishes_each_value_once() -> None:
    ch = Mhz19bChannel("co2-1")
    assert ch.poll_interval_s == 5.0
    assert ch.request() == REQUEST
    assert ch.readings(1000) == []
    ch.on_bytes(R636[:4], 1_700_000_000_100)
    ch.on_bytes(R636[4:], 1_700_000_000_120)
    assert ch.readings(1_700_000_001_000) == [(Stream.AIR, AirReading(ts=1_700_000_000_120, seq=0, co2_ppm=636))]
    assert ch.readings(1_700_000_002_000) == [], "nothing new, nothing published"
    ch.request()
    ch.request()  # the previous request got no answer
    ch.request()
    assert ch.problems() == {"no_reply": 2}
    assert ch.last_problem() == "no_reply: no valid answer within 5 s to ff 01 86 00 00 00 00 00 79"
    ch.on_bytes(R636[:-1] + b"\x00" + R635, 1_700_000_003_000)
    assert ch.readings(1_700_000_004_000) == [(Stream.AIR, AirReading(ts=1_700_000_003_000, seq=1, co2_ppm=635))]
    assert ch.problems() == {"no_reply": 2, "bad_checksum": 1}
    assert ch.last_problem() is not None and ch.last_problem().startswith("bad_checksum: computed BA")  # type: ignore[union-attr]
    ch.port_opened()
    ch.request()  # after a reconnect the request before it is nobody's fault
    assert ch.problems()["no_reply"] == 2


def test_channel_counts_noise_after_a_rejected_reply() -> None:
    """A polled port: one reply arrives corrupted, then the sensor only sends noise (a loose wire,
    another baud rate). The noise is garbage, counted at once, not hidden behind the rejection."""
    ch = Mhz19bChannel("co2-1")
    ch.request()
    ch.on_bytes(R636[:-1] + b"\x00", 1_000)
    assert ch.problems() == {"bad_checksum": 1}
    ch.request()  # the corrupted reply was no answer
    ch.on_bytes(b"\x00\x13\xfe\x00\x11\x22\x33\x44\x55", 6_000)
    assert ch.problems() == {"bad_checksum": 1, "no_reply": 1, "garbage": 1}
    assert ch.last_problem() == "garbage: bytes outside a frame: 00 13 fe 00 11 22 33 44"


def test_channel_seq_wraps_at_65536() -> None:
    ch = Mhz19bChannel("co2-1")
    ch._seq = 65535
    ch.on_bytes(R636, 5)
    ch.on_bytes(R635, 6)
    assert ch.readings(7) == [(Stream.AIR, AirReading(ts=6, seq=65535, co2_ppm=635))], "the latest value wins"
    ch.on_bytes(R633, 8)
    assert ch.readings(9) == [(Stream.AIR, AirReading(ts=8, seq=0, co2_ppm=633))]


def model(*steps: tuple[float, float]) -> Mhz19bModel:
    return Mhz19bModel(Co2Timeline([Co2Step(at_s=t, co2_ppm=v) for t, v in steps], loop_s=None, seed="x"))


def test_emulator_answers_only_a_valid_read_request() -> None:
    sim = model((0, 600), (30, 1600))
    bad = REQUEST[:-1] + b"\x78"
    calibrate = hexb("ff 01 87 00 00 00 00 00 78")  # zero-point calibration: no answer
    assert sim.respond(bad, 1.0) == b""
    assert sim.respond(calibrate, 1.0) == b""
    assert sim.respond(b"\x00\x17" + REQUEST[:3], 1.0) == b"", "half a request"
    reply = sim.respond(REQUEST[3:], 1.0)
    assert len(reply) == 9 and reply[:2] == b"\xff\x86"
    two = sim.respond(REQUEST + REQUEST, 40.0)
    decoded = Mhz19bDecoder().feed(two)
    assert len(decoded) == 2 and all(abs(r.co2_ppm - 1600) <= 15 for r in decoded)
    assert sim.answered == 3 and sim.ignored == 1


@given(st.integers(0, 0xFFFF))
def test_round_trip_through_the_simulator_encoder(ppm: int) -> None:
    assert Mhz19bDecoder().decode(encode_reply(ppm)) == [Mhz19bReading(ppm)]


@given(st.floats(0, 10000), st.floats(0, 3600))
def test_emulator_replies_decode_to_the_scripted_value(ppm: float, t_s: float) -> None:
    (reading,) = Mhz19bDecoder().feed(model((0, ppm)).respond(REQUEST, t_s))
    assert abs(reading.co2_ppm - ppm) <= 5 * 3 + 0.5  # 5 σ of noise plus rounding
