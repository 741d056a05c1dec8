"""Unknown mat presence (``present: null``) through the RulesEngine, on the injected clock.

An edge that restarts while a child lies still (or is already in apnea) cannot tell that mat from an
empty one and says so: ``present: null`` (docs/devices.md). Unknown is never empty for the gateway:
it does not resolve an apnea, and during a nap a bound mat that stays unknown raises
``presence_unknown`` — critical when the child was known to be on the mat before, warning otherwise.
Each replay is well under 0.1 s.
"""

from __future__ import annotations

from gateway.alert_changes import Change
from gateway.config import NotifyConfig, RulesConfig
from nurserywatch.contract import Alert, SessionAction, Severity, Stream
from tests.support.gateway_rules_harness import KIT_OPTIONS, T0, Periodic, Replay, Session, breathing, replay
from tests.support.kits import make_kit

C, W = Severity.CRITICAL, Severity.WARNING
RAISED, RESOLVED = Change.RAISED, Change.RESOLVED
QUIET = RulesConfig(notify=NotifyConfig(critical_renotify_s=0, warning_renotify_s=0, info_renotify_s=0))
UNKNOWN = "presence_unknown"


def unknown(device: str, start_s: float, end_s: float, last_breath_s: float | None = None) -> Periodic:
    """A restarted edge: ``present: null``, no rate, and no ``last_breath_ts`` unless it saw one."""
    lb = None if last_breath_s is None else T0 + round(last_breath_s * 1000)
    return Periodic(start_s, end_s, device, Stream.BREATHING,
                    lambda t: {"present": None, "rate_bpm": None, "last_breath_ts": lb, "motion": 0.0})  # fmt: skip


def test_an_active_apnea_is_not_resolved_by_unknown_presence() -> None:
    # Apnea from 10.5 s, raised at 30 s; the edge restarts at 40 s and reports null from then on.
    # Before: false 10 s later, and the gateway resolved the apnea at once. Now it stays, and in a
    # nap the unknown mat raises presence_unknown (critical: the child was on it) 30 s after 40 s.
    apnea_then_restart = [breathing("mat-3", 0, 40, pauses=((10.5, 40),)), unknown("mat-3", 40, 120)]
    assert replay(apnea_then_restart, 120, rules=QUIET).rows() == [(30.0, RAISED, "apnea", C, "c3")]
    in_nap = replay([Session(0, "kirin"), *apnea_then_restart], 120, rules=QUIET)
    assert in_nap.rows() == [(30.0, RAISED, "apnea", C, "c3"), (70.0, RAISED, UNKNOWN, C, "c3")]
    assert {a.rule for a in in_nap.open_alerts()} == {"apnea", UNKNOWN}


def test_a_restart_before_the_apnea_is_still_timed_from_the_breaths_the_new_edge_saw() -> None:
    # The restarted edge saw a breath at 45 s and none after: unknown presence does not stop the
    # apnea rule (20 s after that breath), whatever the gateway knew before.
    events = [breathing("mat-3", 0, 40), unknown("mat-3", 40, 100, last_breath_s=45)]
    assert replay(events, 100, rules=QUIET).rows() == [(65.0, RAISED, "apnea", C, "c3")]
    # Known empty before, then unknown with a breath since: someone lay down unseen — timed too …
    events = [breathing("mat-3", 0, 40, present=False), unknown("mat-3", 40, 100, last_breath_s=45)]
    assert replay(events, 100, rules=QUIET).rows() == [(65.0, RAISED, "apnea", C, "c3")]
    # … but a breath from before the mat was known empty is not a child lying there now.
    events = [breathing("mat-3", 0, 20), breathing("mat-3", 20, 40, present=False), unknown("mat-3", 40, 100, 19)]
    assert replay(events, 100, rules=QUIET).rows() == []


def test_presence_unknown_raises_after_30_s_in_a_nap_and_resolves_when_known() -> None:
    # Never known (an edge started on a still mat): warning at 30 s, resolved once the child is seen.
    events = [Session(0, "kirin"), unknown("mat-3", 0, 100), breathing("mat-3", 100, 140)]
    assert replay(events, 140, rules=QUIET).rows() == [
        (30.0, RAISED, UNKNOWN, W, "c3"),
        (100.0, RESOLVED, UNKNOWN, W, "c3"),
    ]
    # Known empty, then unknown (an edge restart on an empty mat): warning too; known empty again resolves.
    events = [Session(0, "kirin"), breathing("mat-3", 0, 10, present=False), unknown("mat-3", 10, 60),
              breathing("mat-3", 60, 80, present=False)]  # fmt: skip
    assert replay(events, 80, rules=QUIET).rows() == [
        (40.0, RAISED, UNKNOWN, W, "c3"),
        (60.0, RESOLVED, UNKNOWN, W, "c3"),
    ]


def test_presence_unknown_not_outside_a_nap_not_when_known_not_for_short_stretches() -> None:
    assert replay([unknown("mat-3", 0, 200)], 200, rules=QUIET).rows() == [], "no nap: no alert"
    known = [Session(0, "kirin"), breathing("mat-3", 0, 200)]
    assert replay(known, 200, rules=QUIET).rows() == []
    # 29 s unknown (an edge's start-up is ≤ 10 s), known for 1 s, again and again: never 30 s.
    flicker = [Session(0, "kirin"), *(unknown("mat-3", s, s + 29) for s in range(0, 180, 30)),
               *(breathing("mat-3", s + 29, s + 30) for s in range(0, 180, 30))]  # fmt: skip
    # (No breath reported in those stretches: the apnea rule rightly speaks — not the subject here.)
    assert replay(flicker, 180, rules=QUIET).rows(UNKNOWN) == []
    # A mat bound to no child: nobody's nap to watch on it.
    devices = {**KIT_OPTIONS["devices"], "mat-3": {"kind": "nap_mat", "room": "kirin", "agent": "pi-2"}}
    kit = make_kit(**{**KIT_OPTIONS, "devices": devices})
    unbound = replay([Session(0, "kirin"), unknown("mat-3", 0, 100)], 100, rules=QUIET, kit=kit)
    assert unbound.rows() == []


def test_presence_unknown_ends_with_the_session_and_its_duration_is_configurable() -> None:
    events = [Session(0, "kirin"), unknown("mat-3", 0, 100), Session(50, "kirin", SessionAction.STOP)]
    assert replay(events, 100, rules=QUIET).rows() == [
        (30.0, RAISED, UNKNOWN, W, "c3"),
        (50.0, RESOLVED, UNKNOWN, W, "c3"),
    ]
    rules = RulesConfig.model_validate({"notify": QUIET.notify.model_dump(), UNKNOWN: {"min_duration_s": 60}})
    assert replay([Session(0, "kirin"), unknown("mat-3", 0, 100)], 100, rules=rules).rows() == [
        (60.0, RAISED, UNKNOWN, W, "c3")
    ]


def test_a_real_empty_mat_is_no_apnea_and_still_child_off_mat() -> None:
    # The child left at 20 s (a weight drop after present: the edge says false, not null).
    events = [Session(0, "kirin"), breathing("mat-3", 0, 120, present=lambda t: t < 20)]
    assert replay(events, 120, rules=QUIET).rows() == [(50.0, RAISED, "child_off_mat", W, "c3")]


def _apnea_spans(r: Replay) -> list[tuple[int, int | None]]:
    """(started_ts, resolved_ts) of every apnea alert, in the order raised, from its last transition."""
    last: dict[str, Alert] = {}
    for s in r.seen:
        if s.transition.alert.rule == "apnea":
            last[s.transition.alert.id] = s.transition.alert
    return [(a.started_ts, a.resolved_ts) for a in last.values()]


def test_an_edge_restart_never_times_a_new_apnea_before_the_last_one_resolved() -> None:
    # Found by the chaos test under load: apnea from 10.5 s (raised at 30 s), breathing back at 40 s
    # (breaths every 2 s); edge-1 dies after its reading at 47 s (last breath 46 s), and the gateway's
    # ticks resolve the apnea at 49 s (3 new breaths by 44 s, clear held 5 s) — after the last breath
    # it saw. The restarted edge reports an unknown mat and a breath from before that resolution
    # (48.5 s), or none at all, then no breath: the gateway timed a second apnea from that old breath
    # — started_ts before the first one's resolved_ts, two overlapping alerts for one child.
    first = breathing("mat-3", 0, 47.5, pauses=((10.5, 40),))
    for seen_by_new_edge in (48.5, None):
        r = replay([first, unknown("mat-3", 52, 120, last_breath_s=seen_by_new_edge)], 120, rules=QUIET)
        # The apnea still comes (a child who stopped breathing must not be missed) — but its pause
        # cannot begin before the last one ended: timed from the resolution at 49 s, raised at 69 s.
        assert r.rows("apnea") == [(30.0, RAISED, "apnea", C, "c3"), (49.0, RESOLVED, "apnea", C, "c3"),
                                   (69.0, RAISED, "apnea", C, "c3")], seen_by_new_edge  # fmt: skip
        assert _apnea_spans(r) == [(T0 + 10_000, T0 + 49_000), (T0 + 49_000, None)], seen_by_new_edge


def test_breathing_that_stops_again_during_the_resolution_is_not_a_second_overlapping_apnea() -> None:
    # The same cause without any restart: breaths at 40, 42, 44 end the apnea at 49 s (clear held
    # 5 s), and no breath follows. Timed from 44 s, the second apnea started before the first ended.
    r = replay([breathing("mat-3", 0, 100, pauses=((10.5, 40), (44.01, 100)))], 100, rules=QUIET)
    assert r.rows("apnea") == [(30.0, RAISED, "apnea", C, "c3"), (49.0, RESOLVED, "apnea", C, "c3"),
                               (69.0, RAISED, "apnea", C, "c3")]  # fmt: skip
    assert _apnea_spans(r) == [(T0 + 10_000, T0 + 49_000), (T0 + 49_000, None)]
