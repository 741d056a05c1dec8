"""The nap mat's Channel (edge/channels/mat.py): NWMAT bytes → sample times → BreathingReading,
tested with literal sentences and with simulator output fed on a manual clock."""

from __future__ import annotations

from collections import Counter
from functools import reduce

import pytest

from edge.channels.mat import MatChannel
from edge.channels.registry import CHANNELS
from firmware_sim.models.mat import MatModel, MatStep
from nurserywatch.contract import BreathingReading, Stream
from nurserywatch.kit import Device, DeviceKind, SerialTransport
from tests.support.clock import T0


def nwmat(seq: int, *samples: int, fs: int = 25) -> bytes:
    body = ",".join(["NWMAT", str(seq), str(fs), *map(str, samples)]).encode()
    return b"$" + body + b"*%02X\r\n" % reduce(lambda a, b: a ^ b, body, 0)


def test_registered_for_nap_mats() -> None:
    device = Device(
        id="mat-01",
        kind=DeviceKind.NAP_MAT,
        room="r",
        agent="a",
        transport=SerialTransport(type="serial", port="/dev/ttyUSB0"),
    )
    channel = CHANNELS[DeviceKind.NAP_MAT](device)
    assert isinstance(channel, MatChannel) and channel.device_id == "mat-01" and channel.poll_interval_s is None
    assert channel.request() is None and channel.battery_pct() is None


def test_one_sentence_gives_one_reading_with_the_sample_time() -> None:
    ch = MatChannel("mat-01")
    ch.on_bytes(b"$NWMAT,7,25,9500,9501,9502,9503,9504*55\r\n", T0)
    assert ch.readings(T0 + 300) == [
        (
            Stream.BREATHING,
            BreathingReading(
                ts=T0,  # the last sample of the first sentence is placed at its arrival
                seq=7,
                rate_bpm=None,
                amplitude=None,
                motion=0.0,
                present=None,
                quality=0.0,
                last_breath_ts=None,
            ),
        )
    ]
    assert ch.readings(T0 + 1300) == [], "nothing new, nothing published"
    assert ch.problems() == Counter() and ch.last_problem() is None


def test_sample_times_come_from_seq_and_fs_not_from_arrival() -> None:
    ch = MatChannel("mat-01")
    ch.on_bytes(nwmat(0, 1, 2, 3, 4, 5), T0)
    # The next second arrives in one burst, late, with sentences 3 and 4 lost.
    ch.on_bytes(b"".join(nwmat(s, 1, 2, 3, 4, 5) for s in (1, 2, 5, 6, 7)), T0 + 1450)
    ((_, reading),) = ch.readings(T0 + 1500)
    assert isinstance(reading, BreathingReading)
    assert reading.seq == 7 and reading.ts == T0 + 7 * 200, "sentence 7 ends 7 × 5 samples after sentence 0"
    assert ch.lost == 2 and ch.resyncs == 0 and ch.samples == 30


def test_a_restarted_device_is_re_anchored_not_counted_as_lost() -> None:
    ch = MatChannel("mat-01")
    for s in range(500, 510):
        ch.on_bytes(nwmat(s, 9500), T0 + (s - 500) * 40)
    ch.on_bytes(nwmat(0, 9500), T0 + 3000)  # rebooted: seq starts again
    assert ch.lost == 0 and ch.resyncs == 1
    ((_, reading),) = ch.readings(T0 + 3100)
    assert reading.ts == T0 + 3000  # type: ignore[attr-defined]


def test_drifting_device_clock_is_re_anchored() -> None:
    ch = MatChannel("mat-01")
    for s in range(200):  # a device whose 25 Hz is really 23.8 Hz: 5 % slow
        ch.on_bytes(nwmat(s, 9500, 9500, 9500, 9500, 9500), T0 + round(s * 210))
    assert ch.resyncs == 1 and ch.lost == 0


REJECTS: list[tuple[str, bytes, Counter[str], str]] = [
    (
        "a clip on the mat's port",
        b"$NWIMU,42,0,0,1000*4F\r\n",
        Counter(unexpected_frame=1),
        "unexpected_frame: ImuSample seq 42 on a mat port",
    ),
    (
        "bad checksum",
        b"$NWMAT,1,25,9500*00\r\n",
        Counter(bad_checksum=1),
        "bad_checksum: computed 57, sentence says 00: b'$NWMAT,1,25,9500*00'",
    ),
    (
        "no samples",
        b"$NWMAT,1,25*77\r\n",
        Counter(wrong_field_count=1),
        "wrong_field_count: NWMAT needs seq, fs_hz and ≥1 sample, got 2 fields: b'$NWMAT,1,25*77'",
    ),
    (
        "line noise",
        b"\x00\xff\x13\r\n",
        Counter(garbage=1),
        "garbage: 3 bytes outside a sentence: b'\\x00\\xff\\x13'",
    ),
]


@pytest.mark.parametrize(("name", "data", "counts", "last"), REJECTS, ids=[r[0] for r in REJECTS])
def test_rejections_are_counted_by_reason(name: str, data: bytes, counts: Counter[str], last: str) -> None:
    ch = MatChannel("mat-01")
    ch.on_bytes(nwmat(0, 9500) + data + nwmat(1, 9500), T0)
    assert ch.problems() == counts and ch.last_problem() == last
    assert ch.samples == 2 and ch.readings(T0 + 1000) != [], "the good sentences around it still count"


def test_port_reopened_and_sample_rate_changed() -> None:
    ch = MatChannel("mat-01")
    ch.on_bytes(nwmat(0, 9500) + b"$NWMAT,1,25,95", T0)
    ch.port_opened()  # the half sentence is forgotten, the clock anchors again
    ch.on_bytes(b"00*7B\r\n" + nwmat(900, 9500), T0 + 5000)
    assert ch.problems() == Counter(garbage=1) and ch.lost == 0 and ch.resyncs == 0
    ((_, reading),) = ch.readings(T0 + 5100)
    assert reading.ts == T0 + 5000  # type: ignore[attr-defined]
    analyzer = ch.analyzer
    ch.on_bytes(nwmat(901, 9500, 9500, fs=50), T0 + 5040)
    assert ch.analyzer is not analyzer and ch.analyzer is not None and ch.analyzer.fs == 50


def test_simulated_mat_through_the_channel() -> None:
    model = MatModel(
        [MatStep(at_s=0, present=False), MatStep(at_s=3, present=True, rate_bpm=40), MatStep(at_s=30, present=False)],
        seed="ch",
    )
    ch = MatChannel("mat-01")
    readings: list[BreathingReading] = []
    for index in range(int(40 * model.rate_hz)):
        now = T0 + round((index + 1) * 1000 / model.rate_hz)  # a sentence arrives when its last sample is taken
        ch.on_bytes(model.output(index), now)
        if (index + 1) % 5 == 0:
            readings += [r for _, r in ch.readings(now) if isinstance(r, BreathingReading)]
    assert len(readings) == 40 and ch.problems() == Counter() and ch.lost == 0 and ch.resyncs == 0
    assert [r.seq for r in readings] == [5 * k + 4 for k in range(40)]
    assert all(r.ts == T0 + 1000 * (k + 1) for k, r in enumerate(readings)), "anchored on the first arrival"
    during = readings[16:29]
    assert all(r.present and r.rate_bpm == pytest.approx(40, abs=2) for r in during)
    assert all(r.last_breath_ts is not None and r.ts - 2600 <= r.last_breath_ts <= r.ts for r in during)
    assert readings[-1].present is False and readings[-1].rate_bpm is None
