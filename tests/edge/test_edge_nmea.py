"""edge.decoders.nmea: raw bytes in → whole decoded result out, as tables. Checksums in the table were
computed by hand / taken from public NMEA examples, not from the code under test."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.decoders.nmea import MAX_LINE_BYTES, ImuSample, MatFrame, NmeaDecoder
from edge.decoders.rejection import Rejection
from firmware_sim.encoders.nmea import encode_imu, encode_mat

IMU42 = b"$NWIMU,42,0,0,1000*4F\r\n"
S42 = ImuSample(42, 0, 0, 1000)

# (case id, chunks fed in order, expected frames and reject reasons in order)
CASES: list[tuple[str, list[bytes], list[ImuSample | MatFrame | str]]] = [
    # -- valid
    ("imu", [b"$NWIMU,0,12,-8,1003*6C\r\n"], [ImuSample(0, 12, -8, 1003)]),
    ("imu seq max", [b"$NWIMU,65535,-1000,0,0*54\r\n"], [ImuSample(65535, -1000, 0, 0)]),
    ("mat", [b"$NWMAT,7,25,512,-3,0*45\r\n"], [MatFrame(7, 25, (512, -3, 0))]),
    ("mat one sample", [b"$NWMAT,1,25,100*6A\r\n"], [MatFrame(1, 25, (100,))]),
    ("mat 24-bit extremes", [b"$NWMAT,3,25,-8388608,8388607*57\r\n"], [MatFrame(3, 25, (-8388608, 8388607))]),
    ("lower-case hex accepted", [b"$NWIMU,0,12,-8,1003*6c\r\n"], [ImuSample(0, 12, -8, 1003)]),
    ("LF only", [b"$NWIMU,42,0,0,1000*4F\n"], [S42]),
    ("CR only", [b"$NWIMU,42,0,0,1000*4F\r"], [S42]),
    ("two in one read", [IMU42 + b"$NWMAT,1,25,100*6A\r\n"], [S42, MatFrame(1, 25, (100,))]),
    ("trailing space after checksum", [b"$NWIMU,42,0,0,1000*4F \r\n"], [S42]),
    ("blank lines ignored", [b"\r\n\r\n  \r\n" + IMU42 + b"\n\n"], [S42]),
    ("split across reads", [b"$NWIM", b"U,42,0,0,", b"1000*4", b"F\r", b"\n"], [S42]),
    ("split CR | LF", [b"$NWIMU,42,0,0,1000*4F\r", b"\n" + IMU42], [S42, S42]),
    ("incomplete line waits", [b"$NWIMU,42,0,0,1000*4F"], []),
    ("byte by byte", [bytes([b]) for b in IMU42], [S42]),
    # -- checksum
    ("bad checksum", [b"$NWIMU,42,0,0,1000*4E\r\n"], ["bad_checksum"]),
    ("checksum not hex", [b"$NWIMU,42,0,0,1000*G1\r\n"], ["bad_checksum"]),
    ("junk after checksum", [b"$NWIMU,42,0,0,1000*4FX\r\n"], ["bad_checksum"]),
    (
        "real GPGGA (checksum ok)",
        [b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"],
        ["unknown_sentence"],
    ),
    # -- truncated
    ("no checksum", [b"$NWIMU,42,0,0,1000\r\n"], ["truncated"]),
    ("checksum cut", [b"$NWIMU,42,0,0,1000*4\r\n"], ["truncated"]),
    ("star only", [b"$NWIMU,42,0,0,1000*\r\n"], ["truncated"]),
    ("cut by next $", [b"$NWIMU,42,0,0,10" + IMU42], ["truncated", S42]),
    ("cut by next $ across reads", [b"$NWIMU,42,0", b",0,1000*4F$NWIMU", b",42,0,0,1000*4F\r\n"], [S42, S42]),
    ("lone $", [b"$\r\n"], ["truncated"]),
    # -- fields and values
    ("imu 3 fields", [b"$NWIMU,1,2,3*54\r\n"], ["wrong_field_count"]),
    ("imu 5 fields", [b"$NWIMU,1,2,3,4,5*55\r\n"], ["wrong_field_count"]),
    ("mat without samples", [b"$NWMAT,1,25*77\r\n"], ["wrong_field_count"]),
    ("letter", [b"$NWIMU,1,x,0,1000*30\r\n"], ["bad_value"]),
    ("plus sign", [b"$NWIMU,1,+5,0,1000*56\r\n"], ["bad_value"]),
    ("decimal", [b"$NWIMU,1,1.5,0,1000*62\r\n"], ["bad_value"]),
    ("empty field", [b"$NWIMU,1,,0,1000*48\r\n"], ["bad_value"]),
    ("space in field", [b"$NWIMU,1, 5,0,1000*5D\r\n"], ["bad_value"]),
    ("negative seq", [b"$NWIMU,-1,0,0,1000*55\r\n"], ["bad_value"]),
    ("seq past 65535", [b"$NWIMU,70000,0,0,1000*7E\r\n"], ["bad_value"]),
    ("accel past int16", [b"$NWIMU,1,40000,0,0*4D\r\n"], ["bad_value"]),
    ("fs_hz zero", [b"$NWMAT,1,0,5*59\r\n"], ["bad_value"]),
    (
        "mat samples at the int32 bound",
        [b"$NWMAT,1,25,2147483647,-2147483647*5A\r\n"],
        [MatFrame(1, 25, (2147483647, -2147483647))],
    ),
    ("mat sample past int32", [b"$NWMAT,1,25,2147483648*5E\r\n"], ["bad_value"]),
    ("mat sample -2^31", [b"$NWMAT,1,25,-2147483648,0*6F\r\n"], ["bad_value"]),
    ("mat sample letter", [b"$NWMAT,1,25,5,x*3A\r\n"], ["bad_value"]),
    ("mat sample empty", [b"$NWMAT,1,25,5,*42\r\n"], ["bad_value"]),
    ("mat sample plus sign", [b"$NWMAT,1,25,0,+5*59\r\n"], ["bad_value"]),
    ("unknown talker", [b"$GPGGA,1*4B\r\n"], ["unknown_sentence"]),
    # -- garbage and noise
    ("text line", [b"hello\r\n"], ["garbage"]),
    ("binary noise then sentence", [b"\x00\xff\x13\x37\xfe\r\n" + IMU42], ["garbage", S42]),
    ("noise glued before $", [IMU42 + b"zz\x99" + IMU42], [S42, "garbage", S42]),
    ("noise run across reads counts once", [b"\x01\x02", b"\x03\x04", b"\x05\r\n"], ["garbage"]),
    ("control char, checksum ok", [b"$NWIMU,1,\x07,0,1000*4F\r\n"], ["garbage"]),
    ("high byte, checksum ok", [b"$NWIMU,1,\x80,0,1000*C8\r\n"], ["garbage"]),
    # -- length bound
    ("overlong line", [b"$NWMAT,1,25," + b"1," * 600 + b"\r\n" + IMU42], ["too_long", S42]),
    ("overlong, resync at $", [b"$NWMAT,1,25," + b"1," * 600 + IMU42], ["too_long", S42]),
    (
        "overlong across reads counts once",
        [b"$NWMAT,1,25,"] + [b"1," * 100] * 30 + [b"\r\n" + IMU42],
        ["too_long", S42],
    ),
    ("longest allowed line", [b"$NWMAT,1,25," + b"0," * 504 + b"0*6B\r\n"], [MatFrame(1, 25, (0,) * 505)]),
    ("one byte longer", [b"$NWMAT,1,25," + b"0," * 504 + b"00*6B\r\n"], ["too_long"]),
]


def _result(items: list[ImuSample | MatFrame | Rejection]) -> list[ImuSample | MatFrame | str]:
    return [item.reason.value if isinstance(item, Rejection) else item for item in items]


@pytest.mark.parametrize(("chunks", "expected"), [(c, e) for _, c, e in CASES], ids=[i for i, _, _ in CASES])
def test_decode_table(chunks: list[bytes], expected: list[ImuSample | MatFrame | str]) -> None:
    decoder = NmeaDecoder()
    got: list[ImuSample | MatFrame | Rejection] = []
    for chunk in chunks:
        got += decoder.decode(chunk)
    assert _result(got) == expected
    # Counters agree with what was returned, and feed() returns exactly the frames.
    reasons = [r for r in expected if isinstance(r, str)]
    assert decoder.rejected == Counter(reasons)
    assert decoder.accepted == len(expected) - len(reasons)
    assert (decoder.last_rejection.reason.value if decoder.last_rejection else None) == (
        reasons[-1] if reasons else None
    )
    again = NmeaDecoder()
    assert [f for c in chunks for f in again.feed(c)] == [e for e in expected if not isinstance(e, str)]


def test_longest_line_is_the_bound() -> None:
    line = b"$NWMAT,1,25," + b"0," * 504 + b"0*6B"
    assert len(line) == MAX_LINE_BYTES  # the table's "longest allowed line" sits exactly on the bound


def test_rejection_detail_is_one_readable_line() -> None:
    decoder = NmeaDecoder()
    decoder.feed(b"$NWIMU,42,0,0,1000*4E\r\n")
    assert str(decoder.last_rejection) == "bad_checksum: computed 4F, sentence says 4E: b'$NWIMU,42,0,0,1000*4E'"
    decoder.feed(b"\x00\xffnoise\r\n")
    assert str(decoder.last_rejection) == r"garbage: 7 bytes outside a sentence: b'\x00\xffnoise'"


def test_endless_input_keeps_the_buffer_bounded() -> None:
    decoder = NmeaDecoder()
    decoder.feed(b"$NWMAT")
    for _ in range(200):  # 200 kB in one "sentence" without a line end
        decoder.feed(b"7" * 1000)
        assert len(decoder._line) <= MAX_LINE_BYTES
    decoder.feed(b"\r\n")
    for _ in range(200):  # then 200 kB of noise without a line end
        decoder.feed(b"\x01" * 1000)
        assert len(decoder._garbage) <= 32
    assert decoder.feed(b"\r\n" + IMU42) == [S42]
    assert decoder.rejected == Counter({"too_long": 1, "garbage": 1})
    assert str(decoder.last_rejection).startswith("garbage: 200000 bytes outside a sentence: b'\\x01\\x01")


def test_reset_forgets_a_partial_line() -> None:
    decoder = NmeaDecoder()
    decoder.feed(b"$NWIMU,42,0,0,10")
    decoder.reset()
    assert decoder.decode(IMU42) == [S42]
    assert not decoder.rejected


# -- the simulator's encoder and the edge's decoder agree (written independently)

ROUND_TRIP = [
    (0, 0, 0, 1000),
    (65535, -16000, 16000, -1),
    (65536, 1, 2, 3),  # seq wraps to 0
    (123456, -999, 0, 999),
]


@pytest.mark.parametrize(("seq", "ax", "ay", "az"), ROUND_TRIP)
def test_sim_imu_round_trip(seq: int, ax: int, ay: int, az: int) -> None:
    sentence = encode_imu(seq, ax, ay, az)
    assert re.fullmatch(rb"\$NWIMU,[-0-9,]+\*[0-9A-F]{2}\r\n", sentence)  # upper-case hex, CRLF
    assert NmeaDecoder().feed(sentence) == [ImuSample(seq % 65536, ax, ay, az)]


accel = st.integers(min_value=-32767, max_value=32767)
adc = st.integers(min_value=-(2**31) + 1, max_value=2**31 - 1)


@given(
    imu=st.lists(st.tuples(st.integers(0, 10**6), accel, accel, accel), max_size=20),
    mats=st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(1, 10000), st.lists(adc, min_size=1, max_size=60)), max_size=10
    ),
    cuts=st.lists(st.integers(0, 10**5), max_size=20),
)
def test_sim_round_trip_random(
    imu: list[tuple[int, int, int, int]], mats: list[tuple[int, int, list[int]]], cuts: list[int]
) -> None:
    stream = b"".join(encode_imu(*v) for v in imu) + b"".join(encode_mat(s, fs, xs) for s, fs, xs in mats)
    expected = [ImuSample(s % 65536, x, y, z) for s, x, y, z in imu] + [
        MatFrame(s % 65536, fs, tuple(xs)) for s, fs, xs in mats
    ]
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder = NmeaDecoder()
    got = [f for a, b in zip(points, points[1:], strict=False) for f in decoder.feed(stream[a:b])]
    assert got == expected
    assert not decoder.rejected
