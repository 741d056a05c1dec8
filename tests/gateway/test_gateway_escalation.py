"""Re-notification and escalation: on the gateway clock, per severity, stopped by acknowledgement,
restarted by a worse severity, continued across a restart from the stored alert."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.alert_changes import Change
from gateway.config import NotifyConfig, RulesConfig
from gateway.db.reader import StoreReader
from gateway.db.store import Store
from gateway.engine.alerts import AlertBook, Subject
from gateway.engine.rules_engine import RulesEngine
from gateway.rules.events import Cleared, Firing
from nurserywatch.contract import AlertState, Severity, Stream
from tests.support.gateway_rules_harness import (
    KIT,
    T0,
    Ack,
    Periodic,
    Session,
    Status,
    air,
    breathing,
    ms,
    posture,
    replay,
    steps,
)

CHILD = Subject(device="clip-0", room="hiyoko", child="c0")


def firing(severity: Severity, ts: int, rule: str = "fever") -> Firing:
    return Firing(rule, severity, "thermo-0", T0, ts, 38.0, f"{severity.value} ja", f"{severity.value} en")


def test_renotify_schedule_per_severity_and_escalation() -> None:
    policy = NotifyConfig(critical_renotify_s=30, warning_renotify_s=120, info_renotify_s=0, escalate_after=2)
    book = AlertBook()
    crit, _ = book.fire(firing(Severity.CRITICAL, T0, "apnea"), CHILD, now=T0)
    warn, _ = book.fire(firing(Severity.WARNING, T0, "fever"), CHILD, now=T0)
    info, _ = book.fire(firing(Severity.INFO, T0, "humidity"), CHILD, now=T0)
    assert crit.notified_ts == T0 and crit.notify_count == 0
    seen = []
    for s in range(0, 301):
        for t in book.renotify(T0 + s * 1000, policy):
            seen.append((s, t.change, t.alert.rule, t.alert.notify_count, t.alert.escalated))
    assert seen == [
        (30, Change.RENOTIFIED, "apnea", 1, False),
        (60, Change.ESCALATED, "apnea", 2, True),
        (90, Change.RENOTIFIED, "apnea", 3, True),  # keeps re-notifying once escalated
        (120, Change.RENOTIFIED, "apnea", 4, True),
        (120, Change.RENOTIFIED, "fever", 1, False),
        (150, Change.RENOTIFIED, "apnea", 5, True),
        (180, Change.RENOTIFIED, "apnea", 6, True),
        (210, Change.RENOTIFIED, "apnea", 7, True),
        (240, Change.RENOTIFIED, "apnea", 8, True),
        (240, Change.ESCALATED, "fever", 2, True),
        (270, Change.RENOTIFIED, "apnea", 9, True),
        (300, Change.RENOTIFIED, "apnea", 10, True),
    ]
    escalated = book.get(crit.id)
    assert escalated is not None and escalated.escalated_ts == T0 + 60_000 and escalated.updated_ts == T0 + 300_000
    assert book.get(info.id) == info  # info: never re-notified


def test_acknowledged_resolved_and_never_escalating_alerts() -> None:
    policy = NotifyConfig(critical_renotify_s=30, escalate_after=0)
    book = AlertBook()
    a, _ = book.fire(firing(Severity.CRITICAL, T0, "apnea"), CHILD, now=T0)
    b, _ = book.fire(firing(Severity.CRITICAL, T0, "prone"), CHILD, now=T0)
    c, _ = book.fire(firing(Severity.CRITICAL, T0, "fever"), CHILD, now=T0)
    book.acknowledge(a.id, "hoikushi-1", T0 + 5_000)
    book.resolve(Cleared("prone", "thermo-0", T0 + 6_000), CHILD)
    changes = [(t.alert.rule, t.change) for s in range(0, 200) for t in book.renotify(T0 + s * 1000, policy)]
    # only the active, unacknowledged one; escalate_after 0 never escalates
    assert changes == [("fever", Change.RENOTIFIED)] * 6
    assert book.get(c.id).escalated is False  # type: ignore[union-attr]


def test_one_renotification_after_a_long_gap() -> None:
    book = AlertBook()
    book.fire(firing(Severity.CRITICAL, T0, "apnea"), CHILD, now=T0)
    [t] = book.renotify(T0 + 600_000, NotifyConfig())  # e.g. the gateway was down for 10 minutes
    assert (t.change, t.alert.notify_count, t.alert.notified_ts) == (Change.RENOTIFIED, 1, T0 + 600_000)
    assert book.renotify(T0 + 600_000 + 29_999, NotifyConfig()) == []


def test_worse_severity_withdraws_the_acknowledgement_and_notifies_again() -> None:
    # 37.6 °C acknowledged; then 38.4 °C: staff acknowledged a warning, not a high fever.
    events = [*(_temp(t, 37.6) for t in (0, 60)), Ack(10, "fever", "hoikushi-1"), _temp(120, 38.4)]
    r = replay(events, 200, rules=RulesConfig(notify=NotifyConfig(critical_renotify_s=30)))
    assert [(t, ch, sev) for t, ch, _rule, sev, _s in r.rows()] == [
        (0.0, Change.RAISED, Severity.WARNING),
        (10.0, Change.ACKNOWLEDGED, Severity.WARNING),
        (120.0, Change.UPDATED, Severity.CRITICAL),
        (150.0, Change.RENOTIFIED, Severity.CRITICAL),
        (180.0, Change.RENOTIFIED, Severity.CRITICAL),
    ]
    upgraded = r.seen[2].transition.alert
    assert (upgraded.acknowledged, upgraded.acknowledged_by, upgraded.acknowledged_ts) == (False, None, None)
    assert upgraded.notified_ts == T0 + 120_000
    # easing back to a warning keeps whatever acknowledgement there is
    r = replay([_temp(0, 38.4), Ack(5, "fever"), _temp(60, 37.7)], 100, rules=RulesConfig())
    assert [ch for _t, ch, *_ in r.rows()] == [Change.RAISED, Change.ACKNOWLEDGED, Change.UPDATED]
    assert r.open_alerts()[0].acknowledged


def _temp(at_s: float, celsius: float) -> Periodic:
    return Periodic(at_s, at_s + 0.5, "thermo-0", Stream.BODY_TEMP, lambda t: {"celsius": celsius})


def test_prone_cannot_be_acknowledged_away() -> None:
    # Acknowledging stops the re-notification; the alert stays active until the child is turned.
    events = [posture("clip-0", 0, 100, "prone"), Ack(40, "prone", "hoikushi-2"), posture("clip-0", 100, 110, "supine")]
    r = replay(events, 110, rules=RulesConfig())
    assert [(t, ch) for t, ch, *_ in r.rows()] == [
        (30.0, Change.RAISED),
        (40.0, Change.ACKNOWLEDGED),
        (100.0, Change.RESOLVED),
    ]
    assert r.open_alerts() == []


def test_notification_schedule_survives_a_restart(tmp_path: Path) -> None:
    """Raised at 30 s, re-notified at 60 s, gateway down from 70 s to 100 s: the restored alert is
    re-notified at 100 s (overdue since 90 s) and escalated at the 3rd re-notification (130 s)."""
    db = tmp_path / "gw.sqlite3"
    rules = RulesConfig()
    apnea = breathing("mat-0", 0, 200, pauses=((10.5, 200),))
    with Store(db) as store:
        r = replay([apnea], 70, rules=rules)
        store.record([s.transition for s in r.seen])
        assert [(t, ch) for t, ch, *_ in r.rows()] == [(30.0, Change.RAISED), (60.0, Change.RENOTIFIED)]
        restored = store.open_alerts()
    engine = RulesEngine(KIT, rules, T0 + ms(100), alerts=restored)
    r2 = replay([breathing("mat-0", 100, 200, pauses=((0, 200),))], 140, rules=rules, engine=engine, start_s=100)
    assert [(t, ch) for t, ch, *_ in r2.rows()] == [(100.0, Change.RENOTIFIED), (130.0, Change.ESCALATED)]
    [alert] = r2.open_alerts()
    assert (alert.id, alert.notify_count, alert.escalated, alert.state) == (
        restored[0].id,
        3,
        True,
        AlertState.ACTIVE,
    )
    with Store(db) as store:
        store.record([s.transition for s in r2.seen])
    changes = [t.change for t in StoreReader(db).transitions(alert.id)]
    assert changes == [Change.RAISED, Change.RENOTIFIED, Change.RENOTIFIED, Change.ESCALATED]


def test_restored_alert_resolves_by_its_own_clear_rule() -> None:
    # A CO2 warning restored at start: a reading in the hysteresis band (950 ppm) must not resolve
    # it — the rule is seeded from the restored alert; 850 ppm held 60 s does.
    rules = RulesConfig(tick_ms=1000)
    first = replay([air("air-1", 0, 400, co2_ppm=steps((0, 1200)))], 310, rules=rules)
    [alert] = first.open_alerts()
    engine = RulesEngine(KIT, rules, T0 + ms(400), alerts=[alert])
    r = replay([air("air-1", 400, 700, co2_ppm=steps((400, 950), (500, 850)))], 700, rules=rules, engine=engine,
               start_s=400)  # fmt: skip
    assert [(t, ch) for t, ch, *_ in r.rows()] == [(560.0, Change.RESOLVED)]


@pytest.mark.parametrize("escalate_after", [1, 5])
def test_escalate_after_is_configurable(escalate_after: int) -> None:
    rules = RulesConfig(notify=NotifyConfig(escalate_after=escalate_after))
    r = replay([posture("clip-0", 0, 400, "prone")], 30 + 30 * escalate_after, rules=rules)
    assert r.rows()[-1][:2] == (30.0 + 30 * escalate_after, Change.ESCALATED)
    assert sum(1 for row in r.rows() if row[1] is Change.ESCALATED) == 1


@pytest.mark.parametrize("unplugged", [True, False], ids=["status-offline", "silent"])
def test_critical_sensor_lost_stays_critical_across_a_restart(unplugged: bool) -> None:
    """A clip heard during the nap, then lost (unplugged: its status says offline, retained, and is
    delivered again to the restarted gateway; or silent): the alert is critical. After a gateway
    restart with the device still lost it must stay critical with the same message and id — found
    by the chaos test: the restarted monitor had never heard the device and downgraded it to warning
    (no re-notification for warnings), and while silent it flipped to 'not started'."""
    rules = RulesConfig(tick_ms=1000)
    lost = [Status(12, "clip-0", online=False)] if unplugged else []
    events = [Session(0, "hiyoko"), posture("clip-0", 0, 12, "supine"), *lost]
    first = replay(events, 30, rules=rules)
    [alert] = [a for a in first.open_alerts("sensor_lost") if a.device == "clip-0"]
    assert alert.severity is Severity.CRITICAL
    engine = RulesEngine(KIT, rules, T0 + ms(40), alerts=first.engine.book.open_alerts(),
                         sessions=first.engine.sessions.states(T0 + ms(40)))  # fmt: skip
    again = [Status(40, "clip-0", online=False)] if unplugged else []  # the retained status, redelivered
    r = replay(again, 100, rules=rules, engine=engine, start_s=40)
    assert [s.row for s in r.seen if s.transition.alert.id == alert.id
            and s.transition.change not in (Change.RENOTIFIED, Change.ESCALATED)] == []  # fmt: skip
    [after] = [a for a in r.open_alerts("sensor_lost") if a.device == "clip-0"]
    assert (after.id, after.severity, after.message_en) == (alert.id, Severity.CRITICAL, alert.message_en)
    assert after.notify_count > alert.notify_count  # a critical alert keeps being re-notified
