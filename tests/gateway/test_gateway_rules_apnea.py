"""Apnea timing: the alert comes 20.0–21.0 s after the last breath (docs/gateway.md), with breathing
readings arriving once a second — whatever the phase of the breath, of the readings and of the
gateway's tick, and whatever the offset between the edge's clock and the gateway's, because the
gateway times the pause from ``last_breath_ts`` and extrapolates the device's time on its ticks."""

from __future__ import annotations

import itertools

import pytest

from gateway.alert_changes import Change
from gateway.config import NotifyConfig, RulesConfig
from nurserywatch.contract import SessionAction, Severity, Stream
from tests.support.gateway_rules_harness import T0, Periodic, Session, breathing, ms, posture, replay

QUIET = NotifyConfig(critical_renotify_s=0, warning_renotify_s=0, info_renotify_s=0)
LAST_BREATH_S = 30.0  # edge time of the last breath before the pause (plus the phase)


def _apnea_alert_delay(
    phase_s: float, reading_offset_s: float, skew_s: float, latency_s: float, tick_ms: int, pause_s: float = 25
) -> tuple[float | None, list[tuple[float, Change]]]:
    """Seconds (gateway clock) from the true moment of the last breath to the raised alert.

    ``skew_s``: the edge's clock runs this far ahead of true time. ``latency_s``: readings reach the
    gateway this long after the edge stamped them (the gateway clock is true time)."""
    last = LAST_BREATH_S + phase_s  # edge time of the last breath
    mat = breathing(
        "mat-0", reading_offset_s, last + pause_s + 15, breath_every_s=2.0, breath_phase_s=phase_s,
        pauses=((last + 0.01, last + pause_s),), skew_s=skew_s - latency_s,
    )  # fmt: skip
    # In the harness a reading delivered at gateway time t carries ts = t + skew − latency; the
    # breath at edge time `last` happened at true (gateway) time last − skew.
    rules = RulesConfig(tick_ms=tick_ms, notify=QUIET)
    r = replay([mat], last + pause_s + 15, rules=rules)
    rows = [(t, ch) for t, ch, rule, *_ in r.rows() if rule == "apnea"]
    raised = [t for t, ch in rows if ch is Change.RAISED]
    if not raised:
        return None, rows
    [alert] = [s.transition.alert for s in r.seen if s.transition.change is Change.RAISED]
    assert alert.started_ts == T0 + ms(last), "started_ts is the last breath (edge time)"
    return round(raised[0] - (last - skew_s), 3), rows  # ms resolution: no float residue


TIMING = list(
    itertools.product(
        [0.0, 0.35, 0.8, 1.55],  # breath phase within the 2 s breathing cycle
        [0.0, 0.45, 0.9],  # reading phase within the 1 s reporting cycle
        [(0.0, 0.0), (3.7, 0.0), (-2.2, 0.0), (0.0, 0.3)],  # (edge clock skew, delivery latency)
    )
)


@pytest.mark.parametrize(("phase", "offset", "skew_latency"), TIMING)
def test_apnea_alert_20_to_21_s_after_the_last_breath(
    phase: float, offset: float, skew_latency: tuple[float, float]
) -> None:
    skew, latency = skew_latency
    delay, rows = _apnea_alert_delay(phase, offset, skew, latency, tick_ms=200)
    assert delay is not None, f"no apnea alert: {rows}"
    assert 20.0 <= delay <= 21.0, f"alert {delay:.3f} s after the last breath"
    # without a delivery latency the 200 ms tick decides it
    if latency == 0:
        assert delay < 20.2 + 1e-9
    assert [ch for _t, ch in rows] == [Change.RAISED, Change.RESOLVED], "one alert, resolved when breathing is back"


@pytest.mark.parametrize("tick_ms", [100, 250, 1000])
def test_apnea_timing_for_any_tick_up_to_a_second(tick_ms: int) -> None:
    for phase, offset in itertools.product([0.0, 0.55, 1.3], [0.0, 0.6]):
        delay, rows = _apnea_alert_delay(phase, offset, 0.0, 0.0, tick_ms)
        assert delay is not None and 20.0 <= delay <= 20.0 + tick_ms / 1000 + 1e-9, (phase, offset, delay, rows)


@pytest.mark.parametrize(("phase", "offset"), list(itertools.product([0.0, 0.35, 0.8, 1.55], [0.0, 0.45, 0.9])))
def test_pauses_a_reading_interval_short_of_20_s_raise_nothing(phase: float, offset: float) -> None:
    # The gateway learns of the breath that ends a pause from the next reading (≤ 1 s later), so a
    # pause of 19 s is never an apnea; one of 15 s is far from it.
    for pause in (15.0, 19.0):
        delay, rows = _apnea_alert_delay(phase, offset, 0.0, 0.0, tick_ms=200, pause_s=pause)
        assert delay is None, (pause, rows)


def test_silent_mat_does_not_invent_an_apnea_but_is_a_lost_sensor() -> None:
    # During a nap the mat stops reporting 12 s into a pause: the gateway extrapolates at most 3 s
    # (freshness) past the newest reading, so no apnea is claimed — the silence is the alert.
    events = [
        Session(0, "hiyoko"),
        breathing("mat-1", 0, 100),
        posture("clip-0", 0, 100, "supine"),
        breathing("mat-0", 0, 42.5, pauses=((30.5, 100),)),
    ]
    rows = replay(events, 70, rules=RulesConfig(notify=QUIET)).rows()
    assert rows == [(52.0, Change.RAISED, "sensor_lost", Severity.CRITICAL, "mat-0")]


def test_apnea_needs_presence_not_a_session() -> None:
    # No nap session: an apnea on an occupied mat still alerts (a child is lying there).
    rows = replay([breathing("mat-3", 0, 60, pauses=((10.5, 60),))], 60, rules=RulesConfig(notify=QUIET)).rows()
    assert rows == [(30.0, Change.RAISED, "apnea", Severity.CRITICAL, "c3")]


def test_a_mat_of_unknown_presence_is_timed_from_its_last_breath_and_not_judged_without_one() -> None:
    # Was: never judged without ``present`` ("cannot tell an apnea from an empty mat"). But unknown
    # is not empty: a breath reported and none since is a child who stopped breathing (an edge that
    # restarted and saw 1-2 breaths before an apnea) — the visible alert wins.
    breathed = Periodic(0, 60, "mat-0", Stream.BREATHING, lambda t: {"last_breath_ts": T0 + 5_000})
    assert replay([breathed], 60, rules=RulesConfig(notify=QUIET)).rows() == [
        (25.0, Change.RAISED, "apnea", Severity.CRITICAL, "c0")
    ]
    # No breath at all: nothing to time an apnea from (outside a nap, nothing else speaks either;
    # in a nap, presence_unknown does — tests/test_gateway_rules_presence.py).
    silent = Periodic(0, 60, "mat-0", Stream.BREATHING, lambda t: {})
    assert replay([silent], 60, rules=RulesConfig(notify=QUIET)).rows() == []


def test_session_stop_does_not_end_apnea_monitoring() -> None:
    events = [
        Session(0, "kirin"),
        Session(5, "kirin", SessionAction.STOP),
        breathing("mat-3", 0, 60, pauses=((10.5, 60),)),
    ]
    rows = replay(events, 60, rules=RulesConfig(notify=QUIET)).rows()
    assert [(t, ch, rule) for t, ch, rule, *_ in rows] == [(30.0, Change.RAISED, "apnea")]
