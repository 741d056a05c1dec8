"""PMS5003 decoder: tables of raw bytes → the whole expected result, published frames where they
exist, and round trips through the simulator's independent encoder."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.decoders.pms5003 import Pms5003Decoder, PmsFrame
from firmware_sim.models.pms5003 import Pms5003Model, PmsStep, encode_frame
from tests.support.byte_decoding import hexb, outcomes

# From the README of luhuadong/rtt-pmsxx (an RT-Thread driver): a frame whose "CF=1" and
# atmospheric values differ, so it shows which words are read.
RTT = hexb("42 4d 00 1c 00 03 00 04 00 07 00 04 00 05 00 08 03 1b 00 f9 00 1b 00 06 00 03 00 03 9a 00 02 a2")
RTT_FRAME = PmsFrame(
    pm1_ugm3=4,
    pm25_ugm3=5,
    pm10_ugm3=8,
    pm1_cf1_ugm3=3,
    pm25_cf1_ugm3=4,
    pm10_cf1_ugm3=7,
    particles_per_dl=(795, 249, 27, 6, 3, 3),
    reserved=0x9A00,
)
# Captured from a real sensor: avaldebe/PyPMS tests/captured_data/PMSx003.hexdump (first frame).
CAPTURED = hexb("42 4d 00 1c 00 00 00 08 00 08 00 00 00 08 00 08 00 d2 00 46 00 2d 00 1e 00 00 00 00 97 00 02 c5")
CAPTURED_FRAME = PmsFrame(0, 8, 8, 0, 8, 8, (210, 70, 45, 30, 0, 0), 0x9700)
# Built by hand from the datasheet layout: values with high bytes set; checksum 0x081B.
HIGH = hexb("42 4d 00 1c 01 38 02 1c 02 bd 00 da 01 6f 01 d4 9c 40 2e e0 09 c4 01 a4 00 3c 00 0c 97 00 08 1b")
HIGH_FRAME = PmsFrame(218, 367, 468, 312, 540, 701, (40000, 12000, 2500, 420, 60, 12), 0x9700)
# A PMS3003 (length field 20, 24 bytes) on a PMS5003 port: avaldebe/PyPMS tests (checksum 1050).
PMS3003 = hexb("42 4d 00 14 00 51 00 6a 00 77 00 35 00 46 00 4f 33 d2 0f 28 00 3f 04 1a")

BAD_SUM = RTT[:-1] + b"\xa3"

Result = PmsFrame | str


TABLE: list[tuple[str, bytes, list[Result]]] = [
    ("published frame (CF=1 differs from atmospheric)", RTT, [RTT_FRAME]),
    ("captured frame", CAPTURED, [CAPTURED_FRAME]),
    ("hand-built frame with high bytes", HIGH, [HIGH_FRAME]),
    ("frames back to back", RTT + CAPTURED + HIGH, [RTT_FRAME, CAPTURED_FRAME, HIGH_FRAME]),
    ("garbage before", b"\x00\xff\x13\x42" + CAPTURED, ["garbage", CAPTURED_FRAME]),
    ("garbage between", RTT + b"\x55\xaa\x4d" + RTT, [RTT_FRAME, "garbage", RTT_FRAME]),
    ("only garbage", b"\x00\x01\x02\x03\xfe", ["garbage"]),
    ("bad checksum, then a good frame", BAD_SUM + CAPTURED, ["bad_checksum", CAPTURED_FRAME]),
    ("bad checksum does not hide a frame right after it", BAD_SUM + RTT, ["bad_checksum", RTT_FRAME]),
    ("truncated by the next frame", RTT[:20] + CAPTURED, ["truncated", CAPTURED_FRAME]),
    ("truncated inside the length field", RTT[:3] + CAPTURED, ["truncated", CAPTURED_FRAME]),
    ("wrong length field (a PMS3003)", PMS3003 + RTT, ["bad_length", RTT_FRAME]),
    ("length field 0 (PyPMS's wrong-header case)", hexb("42 4d 00 00") + RTT[4:] + RTT, ["bad_length", RTT_FRAME]),
    ("a false start in noise", b"\x01BM\x00\x1c" + b"\x00" * 5 + RTT, ["garbage", "truncated", RTT_FRAME]),
    ("a false start that is all zeros to the end", b"BM\x00\x1c" + b"\x00" * 28, ["bad_checksum"]),
    ("partial frame waits for more", RTT[:31], []),
]


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "byte_by_byte"])
@pytest.mark.parametrize(("data", "expected"), [pytest.param(d, e, id=name) for name, d, e in TABLE])
def test_table(data: bytes, expected: list[Result], byte_by_byte: bool) -> None:
    assert outcomes(Pms5003Decoder(), data, byte_by_byte=byte_by_byte) == expected


def test_rejections_are_counted_with_a_readable_detail() -> None:
    decoder = Pms5003Decoder()
    assert decoder.feed(b"\x00\x01" + BAD_SUM + PMS3003 + RTT[:10] + RTT) == [RTT_FRAME]
    assert decoder.rejected == {"garbage": 1, "bad_checksum": 1, "bad_length": 1, "truncated": 1}
    assert decoder.accepted == 1
    assert decoder.skipped_bytes == 2 + 32 + 24 + 10
    decoder.feed(BAD_SUM)
    assert str(decoder.last_rejection) == (
        "bad_checksum: computed 02A2, frame says 02A3: 42 4d 00 1c 00 03 00 04 00 07 00 04 00 05 00 08 03 1b "
        "00 f9 00 1b 00 06 00 03 00 03 9a 00 02 a3"
    )


def test_a_stream_captured_from_a_real_sensor_in_random_chunks() -> None:
    # avaldebe/PyPMS tests/captured_data/PMSx003.hexdump with its .csv: PM2.5 of ten frames.
    words = [
        ("0008 0008 0000 0008 0008 00d2 0046 002d 001e 0000 0000", "02c5"),
        ("0007 0007 0000 0007 0007 00d2 0046 002d 001e 0000 0000", "02c1"),
        ("0007 0007 0000 0007 0007 00bd 003f 002a 001b 0000 0000", "029f"),
        ("0007 0007 0000 0007 0007 00b4 003c 0027 0018 0000 0000", "028d"),
        ("0007 0007 0000 0007 0007 00b4 003c 0027 0018 0000 0000", "028d"),
        ("0006 0006 0000 0006 0006 00b4 003c 001d 0015 0000 0000", "027c"),
        ("0006 0006 0000 0006 0006 00b4 003c 001d 0015 0000 0000", "027c"),
        ("0006 0006 0000 0006 0006 009f 0035 001a 0012 0000 0000", "025a"),
        ("0006 0006 0000 0006 0006 009f 0035 001a 0012 0000 0000", "025a"),
        ("0005 0005 0000 0005 0005 008a 002e 0017 000f 0000 0000", "0234"),
    ]
    stream = b"".join(hexb(f"424d001c 0000 {w} 9700 {cs}") for w, cs in words)
    assert len(stream) == 320
    rng = random.Random(5003)
    decoder = Pms5003Decoder()
    frames: list[PmsFrame] = []
    pos = 0
    while pos < len(stream):
        n = rng.randint(1, 40)
        frames += decoder.feed(stream[pos : pos + n])
        pos += n
    assert [f.pm25_ugm3 for f in frames] == [8, 7, 7, 7, 7, 6, 6, 6, 6, 5]
    assert [f.pm10_ugm3 for f in frames] == [8, 7, 7, 7, 7, 6, 6, 6, 6, 5]
    assert decoder.rejected == {}


def test_reset_counts_a_partial_frame_as_truncated() -> None:
    decoder = Pms5003Decoder()
    decoder.feed(b"\x00" + RTT[:12])
    decoder.reset()
    assert decoder.feed(RTT[12:] + CAPTURED) == [CAPTURED_FRAME]
    assert decoder.rejected == {"garbage": 2, "truncated": 1}


def test_memory_stays_bounded_whatever_arrives() -> None:
    rng = random.Random(1)
    decoder = Pms5003Decoder()
    for _ in range(300):
        chunk = bytes(rng.choice(b"BM\x00\x1c\xff") for _ in range(rng.randint(1, 200)))
        decoder.feed(chunk)
        assert len(decoder._buf) < 32 + 3
    assert decoder.feed(RTT + RTT)[-1] == RTT_FRAME
    assert decoder.skipped_bytes > 20_000 and decoder.accepted >= 1


@given(st.binary(max_size=300), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_garbage_of_any_kind_never_hides_the_frames_after_it(noise: bytes, cuts: list[int]) -> None:
    decoder = Pms5003Decoder()
    data = noise + RTT + CAPTURED
    out: list[PmsFrame] = []
    pos, i = 0, 0
    while pos < len(data):
        n = cuts[i % len(cuts)]
        out += decoder.feed(data[pos : pos + n])
        pos, i = pos + n, i + 1
        assert len(decoder._buf) < 32
    assert out[-1] == CAPTURED_FRAME


u16 = st.integers(0, 0xFFFF)


@given(st.lists(u16, min_size=13, max_size=13))
def test_round_trip_through_the_simulator_encoder(words: list[int]) -> None:
    frame = encode_frame(words)
    w = words
    assert Pms5003Decoder().decode(frame) == [
        PmsFrame(w[3], w[4], w[5], w[0], w[1], w[2], (w[6], w[7], w[8], w[9], w[10], w[11]), w[12])
    ]


@given(st.lists(st.floats(0, 1000), min_size=3, max_size=3), st.booleans(), st.integers(0, 10_000))
def test_simulator_output_decodes_to_the_scripted_values(values: list[float], derived: bool, index: int) -> None:
    pm1, pm25, pm10 = sorted(values)
    if derived:  # pm1 and pm10 left to the model
        pm1, pm10 = 0.7 * pm25, 1.2 * pm25
        step = PmsStep(at_s=0, pm25_ugm3=pm25)
    else:
        step = PmsStep(at_s=0, pm25_ugm3=pm25, pm1_ugm3=pm1, pm10_ugm3=pm10)
    model = Pms5003Model([step], rate_hz=1.0, loop_s=None, seed="t")
    (frame,) = Pms5003Decoder().feed(model.output(index))
    assert model.output(index) == model.output(index), "the bytes depend on the index only"
    decoded = (frame.pm1_ugm3, frame.pm25_ugm3, frame.pm10_ugm3)
    for got, scripted in zip(decoded, (pm1, pm25, pm10), strict=True):
        assert abs(got - scripted) <= 5 * max(0.5, 0.03 * scripted) + 0.5  # 5 σ of noise plus rounding
    assert frame.pm1_ugm3 <= frame.pm25_ugm3 <= frame.pm10_ugm3
    assert frame.pm25_cf1_ugm3 >= frame.pm25_ugm3
