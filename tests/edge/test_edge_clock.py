"""Clock sanity (edge/agent/clock_sanity.py) with fake wall and monotonic clocks: readings are held while
the wall clock is not plausible and released re-stamped when it is; later steps are corrected."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from edge.agent.clock_sanity import TIME_FIELDS, ClockSanity
from edge.io.clock_probe import clock_synchronised
from nurserywatch import BUILD_DATE_MS
from nurserywatch.clock import ManualClock
from nurserywatch.contract import READING_MODELS, BreathingReading, Position, PostureReading, Stream, WaveformReading

BUILD = 1_795_910_400_000  # 2026-11-29
BOOT = 0  # a Pi without RTC and without fake-hwclock starts in 1970
REAL = BUILD + 30 * 86_400_000  # what NTP will say


class Mono:
    def __init__(self) -> None:
        self.ms = 5_000  # uptime

    def __call__(self) -> int:
        return self.ms


class Rig:
    """A wall clock, a monotonic clock and a sync probe that move together like on a Pi."""

    def __init__(self, wall_ms: int) -> None:
        self.wall = ManualClock(wall_ms)
        self.mono = Mono()
        self.synced = False
        self.guard: ClockSanity[str, PostureReading | BreathingReading] = ClockSanity(
            self.wall, self.mono, lambda: self.synced, BUILD, max_held=5
        )

    def advance(self, ms: int) -> None:
        self.wall.advance(ms)
        self.mono.ms += ms


def posture(guard: ClockSanity[str, PostureReading | BreathingReading], seq: int) -> PostureReading:
    return PostureReading(ts=guard.now_ms(), seq=seq, position=Position.SUPINE)


def test_plausible_clock_passes_readings_through_unchanged() -> None:
    rig = Rig(REAL)
    r = posture(rig.guard, 1)
    assert r.ts == REAL
    assert rig.guard.admit([("clip-01", r)]) == [("clip-01", r)]
    assert rig.guard.ok is True and "after the build date" in rig.guard.reason


def test_readings_are_held_until_the_clock_is_set_then_restamped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.agent.clock_sanity")
    rig = Rig(BOOT)
    assert rig.guard.ok is None, "not checked yet"
    sampled = []
    for seq in range(3):  # three ticks, one second apart, before NTP
        r = posture(rig.guard, seq)
        sampled.append(r)
        assert rig.guard.admit([("clip-01", r)]) == []
        rig.advance(1000)
    assert rig.guard.ok is False and rig.guard.held == 3
    assert "clock NOT plausible: 1970-01-01 00:00:00 UTC is before the build date 2026-11-29" in caplog.text
    # NTP steps the wall clock; the monotonic clock does not move.
    rig.wall.set(REAL)
    r3 = posture(rig.guard, 3)
    out = rig.guard.admit([("clip-01", r3)])
    assert rig.guard.ok is True and rig.guard.held == 0
    # ts = wall_now − (mono_now − mono_sample): sample 0 was taken 3 s before "now".
    assert [(k, r.seq, r.ts) for k, r in out] == [
        ("clip-01", 0, REAL - 3000),
        ("clip-01", 1, REAL - 2000),
        ("clip-01", 2, REAL - 1000),
        ("clip-01", 3, REAL),
    ]
    assert [r.model_copy(update={"ts": 0}) for _, r in out] == [
        r.model_copy(update={"ts": 0}) for r in [*sampled, r3]
    ], "only the time moves"
    assert "wall clock stepped by +" in caplog.text and "releasing 3 held readings" in caplog.text


def test_a_synchronised_clock_is_plausible_even_before_the_build_date() -> None:
    rig = Rig(BUILD - 86_400_000)  # e.g. a release built with a date in the future
    assert rig.guard.admit([("clip-01", posture(rig.guard, 0))]) == []
    rig.synced = True
    out = rig.guard.admit([("clip-01", posture(rig.guard, 1))])
    assert [r.seq for _, r in out] == [0, 1] and rig.guard.reason.startswith("synchronised")


def test_holding_is_bounded_and_drops_the_oldest(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(BOOT)
    for seq in range(8):
        rig.guard.admit([("clip-01", posture(rig.guard, seq))])
        rig.advance(1000)
    assert rig.guard.held == 5 and rig.guard.dropped == Counter(clock_hold_full=3)
    assert caplog.text.count("5 readings held: dropping the oldest from now on") == 1
    rig.wall.set(REAL)
    assert [r.seq for _, r in rig.guard.admit([])] == [3, 4, 5, 6, 7]


def test_a_later_step_moves_every_time_field_of_readings_stamped_before_it() -> None:
    """fake-hwclock: the clock is plausible (saved at the last shutdown) but 2 h behind; NTP then
    steps it. A breathing reading made after the step still carries last_breath_ts from before."""
    rig = Rig(REAL - 7_200_000)
    last_breath = rig.guard.now_ms()
    rig.advance(500)
    assert rig.guard.admit([]) == []
    rig.wall.advance(7_200_000)  # the NTP step
    rig.advance(500)
    r = BreathingReading(ts=rig.guard.now_ms(), seq=1, rate_bpm=30.0, last_breath_ts=last_breath)
    ((_, out),) = rig.guard.admit([("mat-01", r)])
    assert isinstance(out, BreathingReading)
    assert out.ts == rig.wall.now_ms() == REAL + 1000
    assert out.last_breath_ts == REAL, "1 s before ts, as it really was — not 2 h"


def test_clock_read_jitter_is_not_a_step() -> None:
    rig = Rig(REAL)
    rig.wall.advance(3)  # the two clocks are read a few ms apart
    r = posture(rig.guard, 0)
    assert rig.guard.admit([("clip-01", r)]) == [("clip-01", r)]


def test_time_fields_cover_every_unix_ms_field_of_the_contract() -> None:
    """A new unix-ms field in a reading model must be re-stamped too."""
    unix_ms = {
        name
        for model in READING_MODELS.values()
        for name, field in model.model_fields.items()
        if any(getattr(m, "le", None) == 32503680000000 for m in field.metadata)
        or name in ("ts", "t0", "last_breath_ts")
    }
    assert unix_ms == set(TIME_FIELDS)
    mono = Mono()
    guard: ClockSanity[Stream, WaveformReading] = ClockSanity(ManualClock(REAL), mono, lambda: False, BUILD)
    w = WaveformReading(ts=guard.now_ms(), seq=0, fs_hz=25, t0=guard.now_ms() - 1000, samples=[1])
    mono.ms += 1000  # a second passes but the wall clock stays: it was stepped back by 1 s
    ((_, out),) = guard.admit([(Stream.WAVEFORM, w)])
    assert (out.ts, out.t0) == (REAL - 1000, REAL - 2000)


def test_the_build_date_is_recent_and_the_probe_answers() -> None:
    assert 1_767_225_600_000 <= BUILD_DATE_MS  # not before 2026
    assert isinstance(clock_synchronised(), bool)
