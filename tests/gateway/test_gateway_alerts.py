"""AlertBook lifecycle: raise, update, resolve, acknowledge, close, restore — pure, no I/O."""

from __future__ import annotations

import pytest

from gateway.alert_changes import Change, Transition
from gateway.engine.alerts import AlertBook, Subject, UnknownAlertError, alert_id
from gateway.rules.events import Cleared, Firing
from nurserywatch.contract import IDENT_RE, Alert, AlertState, Severity, decode
from tests.support.clock import T0

CHILD = Subject(device="clip-01", room="hiyoko", child="c001")
ROOM_DEVICE = Subject(device="air-01", room="hiyoko", child=None)


def firing(ts: int, started: int = T0, severity: Severity = Severity.CRITICAL, rule: str = "prone") -> Firing:
    msg = ("うつぶせ寝が30秒以上続いています", "Prone for 30 s or more")
    if severity is not Severity.CRITICAL:
        msg = ("注意", "Attention")
    return Firing(rule, severity, "clip-01", started, ts, (ts - started) / 1000, *msg)


def changes(ts: list[Transition]) -> list[tuple[Change, AlertState, bool]]:
    return [(t.change, t.alert.state, t.alert.acknowledged) for t in ts]


def test_raise_returns_alert_and_one_transition() -> None:
    book = AlertBook()
    alert, ts = book.fire(firing(T0 + 30_000), CHILD)
    assert changes(ts) == [(Change.RAISED, AlertState.ACTIVE, False)]
    assert ts[0].alert == alert and ts[0].ts == T0 + 30_000
    assert (alert.device, alert.room, alert.child, alert.started_ts, alert.updated_ts) == (
        "clip-01",
        "hiyoko",
        "c001",
        T0,
        T0 + 30_000,
    )
    # the alert survives the wire
    assert decode(Alert, alert.to_json()) == alert
    assert book.open_alerts() == [alert]


def test_refiring_with_nothing_new_is_a_noop() -> None:
    book = AlertBook()
    first, _ = book.fire(firing(T0 + 30_000), CHILD)
    again, ts = book.fire(firing(T0 + 31_000), CHILD)
    assert ts == []
    assert again == first  # updated_ts and value stay as last published
    assert len(book.open_alerts()) == 1


def test_severity_change_updates_the_same_alert() -> None:
    book = AlertBook()
    first, _ = book.fire(firing(T0 + 30_000, severity=Severity.WARNING), CHILD)
    updated, ts = book.fire(firing(T0 + 40_000, severity=Severity.CRITICAL), CHILD)
    assert changes(ts) == [(Change.UPDATED, AlertState.ACTIVE, False)]
    assert updated.id == first.id
    assert (updated.severity, updated.updated_ts, updated.value) == (Severity.CRITICAL, T0 + 40_000, 40.0)
    assert updated.message == "うつぶせ寝が30秒以上続いています"
    assert book.open_alerts() == [updated]


def test_one_active_alert_per_subject_and_rule() -> None:
    book = AlertBook()
    a, _ = book.fire(firing(T0 + 30_000), CHILD)
    b, _ = book.fire(firing(T0 + 30_000, rule="apnea"), CHILD)
    c, _ = book.fire(firing(T0 + 30_000), ROOM_DEVICE)
    assert len({a.id, b.id, c.id}) == 3
    assert book.active("prone", CHILD) == a
    assert book.active("apnea", CHILD) == b
    assert book.active("prone", ROOM_DEVICE) == c


def test_resolve_keeps_unacknowledged_alert_open() -> None:
    book = AlertBook()
    alert, _ = book.fire(firing(T0 + 30_000), CHILD)
    ts = book.resolve(Cleared("prone", "clip-01", T0 + 45_000), CHILD)
    assert changes(ts) == [(Change.RESOLVED, AlertState.RESOLVED, False)]
    resolved = ts[0].alert
    assert (resolved.id, resolved.resolved_ts, resolved.updated_ts) == (alert.id, T0 + 45_000, T0 + 45_000)
    assert not ts[0].closes and resolved.retained
    assert book.active("prone", CHILD) is None
    assert book.open_alerts() == [resolved]  # staff must still see it


def test_resolve_without_active_alert_is_a_noop() -> None:
    assert AlertBook().resolve(Cleared("prone", "clip-01", T0), CHILD) == []


def test_acknowledge_records_who_and_when_independently_of_state() -> None:
    book = AlertBook()
    alert, _ = book.fire(firing(T0 + 30_000), CHILD)
    ts = book.acknowledge(alert.id, "hoikushi-1", T0 + 35_000)
    assert changes(ts) == [(Change.ACKNOWLEDGED, AlertState.ACTIVE, True)]
    acked = ts[0].alert
    assert (acked.acknowledged_by, acked.acknowledged_ts, acked.updated_ts) == ("hoikushi-1", T0 + 35_000, T0 + 35_000)
    assert book.active("prone", CHILD) == acked
    assert not ts[0].closes


def test_acknowledge_twice_keeps_the_first() -> None:
    book = AlertBook()
    alert, _ = book.fire(firing(T0 + 30_000), CHILD)
    book.acknowledge(alert.id, "a", T0 + 31_000)
    assert book.acknowledge(alert.id, "b", T0 + 32_000) == []
    got = book.get(alert.id)
    assert got is not None and got.acknowledged_by == "a"


def test_ack_clock_behind_message_time_does_not_move_updated_ts_back() -> None:
    book = AlertBook()
    alert, _ = book.fire(firing(T0 + 30_000), CHILD)
    [t] = book.acknowledge(alert.id, "a", T0 + 10_000)
    assert (t.alert.acknowledged_ts, t.alert.updated_ts) == (T0 + 10_000, T0 + 30_000)


@pytest.mark.parametrize("ack_first", [True, False])
def test_resolved_and_acknowledged_closes_in_either_order(ack_first: bool) -> None:
    book = AlertBook()
    alert, _ = book.fire(firing(T0 + 30_000), CHILD)

    def ack() -> list[Transition]:
        return book.acknowledge(alert.id, "a", T0 + 40_000)

    def res() -> list[Transition]:
        return book.resolve(Cleared("prone", "clip-01", T0 + 50_000), CHILD)

    first, last = (ack(), res()) if ack_first else (res(), ack())
    assert not first[0].closes
    assert last[0].closes
    final = last[0].alert
    assert (final.state, final.acknowledged, final.retained) == (AlertState.RESOLVED, True, False)
    assert book.open_alerts() == []
    with pytest.raises(UnknownAlertError, match="no open alert"):
        book.acknowledge(alert.id, "a", T0 + 60_000)


def test_unknown_alert_id() -> None:
    with pytest.raises(UnknownAlertError) as exc:
        AlertBook().acknowledge("prone-nothing", "a", T0)
    assert exc.value.alert_id == "prone-nothing"


def test_alert_ids_are_deterministic_and_contract_identifiers() -> None:
    a = alert_id("prone", "c001", T0)
    assert a == alert_id("prone", "c001", T0)
    others = {alert_id("prone", "c002", T0), alert_id("prone", "c001", T0 + 1), alert_id("apnea", "c001", T0)}
    assert len(others | {a}) == 4
    assert IDENT_RE.fullmatch(a)
    assert IDENT_RE.fullmatch(alert_id("x" * 64, "c" * 64, 2**40))


def test_restore_keeps_open_alerts_and_ignores_closed_ones() -> None:
    book = AlertBook()
    active, _ = book.fire(firing(T0 + 30_000), CHILD)
    book.fire(firing(T0 + 30_000), ROOM_DEVICE)
    resolved = book.resolve(Cleared("prone", "air-01", T0 + 40_000), ROOM_DEVICE)[0].alert
    other = Subject("clip-02", "hiyoko", "c002")
    x, _ = book.fire(firing(T0 + 30_000), other)
    book.acknowledge(x.id, "a", T0 + 31_000)
    closed = book.resolve(Cleared("prone", "clip-02", T0 + 32_000), other)[0].alert
    assert not closed.retained
    restored = AlertBook([closed, resolved, active])
    assert restored.open_alerts() == [active, resolved]
    assert restored.active("prone", CHILD) == active
    assert restored.active("prone", ROOM_DEVICE) is None
    assert restored.get(closed.id) is None
    # a restored active alert keeps absorbing firings and resolves on the first clear
    assert restored.fire(firing(T0 + 99_000, started=T0 + 90_000), CHILD)[1] == []
    assert changes(restored.resolve(Cleared("prone", "clip-01", T0 + 100_000), CHILD)) == [
        (Change.RESOLVED, AlertState.RESOLVED, False)
    ]


def test_every_active_alert_of_a_rule_resolves_while_others_stay_or_come_back() -> None:
    # A clear of a rule with nothing active is answered without a lookup (every tick clears every
    # quiet rule of every device): the count behind that must follow raises, updates and resolves.
    subjects = [Subject(f"clip-{i}", "hiyoko", f"c{i}") for i in range(3)]
    book = AlertBook()
    for s in subjects:
        book.fire(firing(T0 + 30_000), s)
    book.fire(firing(T0 + 40_000, severity=Severity.WARNING), subjects[0])  # an update: still one of them
    for i, s in enumerate(subjects):
        assert changes(book.resolve(Cleared("prone", f"clip-{i}", T0 + 50_000), s))[0][0] is Change.RESOLVED
        assert book.resolve(Cleared("prone", f"clip-{i}", T0 + 51_000), s) == []
    again, ts = book.fire(firing(T0 + 90_000, started=T0 + 60_000), subjects[1])
    assert changes(ts) == [(Change.RAISED, AlertState.ACTIVE, False)]
    assert changes(book.resolve(Cleared("prone", "clip-1", T0 + 95_000), subjects[1])) == [
        (Change.RESOLVED, AlertState.RESOLVED, False)
    ]
    restored = AlertBook([again])  # restored active alerts count too
    assert len(restored.resolve(Cleared("prone", "clip-1", T0 + 95_000), subjects[1])) == 1


def test_subject_key_prefers_child_then_device() -> None:
    assert CHILD.key == "c001"
    assert ROOM_DEVICE.key == "air-01"
    with pytest.raises(ValueError):
        _ = Subject(None, None, None).key


def test_a_new_alert_never_starts_before_the_last_one_of_its_rule_and_subject_resolved() -> None:
    # A rule that times a new episode from input older than the last resolution (a restarted edge's
    # old breath) would make two overlapping alerts: the book starts the new one at the resolution.
    book = AlertBook()
    first, _ = book.fire(firing(T0 + 30_000, started=T0 + 10_000, rule="apnea"), CHILD)
    book.resolve(Cleared("apnea", "clip-01", T0 + 49_000), CHILD)
    second, ts = book.fire(firing(T0 + 68_600, started=T0 + 48_500, rule="apnea"), CHILD)
    assert changes(ts) == [(Change.RAISED, AlertState.ACTIVE, False)]
    assert second.started_ts == T0 + 49_000 and second.id == alert_id("apnea", "c001", T0 + 49_000)
    # … also across a gateway restart while the first is resolved but not yet acknowledged …
    restored = AlertBook([first.model_copy(update={"state": AlertState.RESOLVED, "resolved_ts": T0 + 49_000})])
    again, _ = restored.fire(firing(T0 + 68_600, started=T0 + 48_500, rule="apnea"), CHILD)
    assert again.started_ts == T0 + 49_000
    # … and only for the same rule and subject; a later start stays as it is.
    other, _ = book.fire(firing(T0 + 68_600, started=T0 + 48_500), CHILD)
    assert other.started_ts == T0 + 48_500
    book.resolve(Cleared("apnea", "clip-01", T0 + 70_000), CHILD)
    later, _ = book.fire(firing(T0 + 99_000, started=T0 + 75_000, rule="apnea"), CHILD)
    assert later.started_ts == T0 + 75_000
