"""The prone rule together with the AlertBook, on message time: a table of posture/ack steps →
the whole list of alert transitions it must produce. No sleeping, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.alert_changes import Change
from gateway.config import ProneConfig
from gateway.engine.alerts import AlertBook, Subject
from gateway.rules.events import Cleared, Firing
from gateway.rules.prone import PostureSample, ProneRule, StaleReading
from nurserywatch.contract import AlertState, Position, Severity
from tests.support.clock import T0
from tests.support.kits import make_kit

KIT = make_kit("s1", name="test", rooms={"hiyoko": "ひよこ"}, agents=("pi",), children={"c001": "0", "c002": "0"},
               devices={"clip-01": "c001", "clip-02": "c002", "clip-99": None})

P, S, L, R, U, UP = (Position.PRONE, Position.SUPINE, Position.LEFT, Position.RIGHT, Position.UNKNOWN,
                     Position.UPRIGHT)  # fmt: skip


@dataclass(frozen=True)
class Ack:
    at_s: float
    by: str = "staff-a"


# A step is (seconds after T0, position) for clip-01, (seconds, position, device), or an Ack of the
# first open alert. Expected: (change, at_s, state, acknowledged, started_s, subject) per transition.
Step = tuple[float, Position] | tuple[float, Position, str] | Ack
Row = tuple[Change, float, AlertState, bool, float, str]
A, RS = AlertState.ACTIVE, AlertState.RESOLVED
RAISED, RESOLVED, ACKED = Change.RAISED, Change.RESOLVED, Change.ACKNOWLEDGED


def prone_every_second(start: int, end: int) -> list[Step]:
    return [(float(s), P) for s in range(start, end + 1)]


CASES: list[tuple[str, float, list[Step], list[Row], int]] = [
    # name, min_duration_s, steps, expected transitions, expected stale count
    ("fires at exactly 30 s", 30, prone_every_second(0, 30), [(RAISED, 30, A, False, 0, "c001")], 0),
    ("not at 29.9 s", 30, [(0, P), (29.9, P)], [], 0),
    ("fires at 30.0 after 29.9", 30, [(0, P), (29.9, P), (30.0, P)], [(RAISED, 30, A, False, 0, "c001")], 0),
    ("supine before prone starts nothing", 30, [(0, S), (10, S)], [], 0),
    ("turning supine resolves", 30, [(0, P), (30, P), (31, S)],
     [(RAISED, 30, A, False, 0, "c001"), (RESOLVED, 31, RS, False, 0, "c001")], 0),
    ("left resolves", 30, [(0, P), (30, P), (31, L)],
     [(RAISED, 30, A, False, 0, "c001"), (RESOLVED, 31, RS, False, 0, "c001")], 0),
    ("right resolves", 30, [(0, P), (30, P), (31, R)],
     [(RAISED, 30, A, False, 0, "c001"), (RESOLVED, 31, RS, False, 0, "c001")], 0),
    ("upright resolves", 30, [(0, P), (30, P), (31, UP)],
     [(RAISED, 30, A, False, 0, "c001"), (RESOLVED, 31, RS, False, 0, "c001")], 0),
    ("turning before 30 s resets the run", 30, [(0, P), (20, S), (21, P), (50, P), (51, P)],
     [(RAISED, 51, A, False, 21, "c001")], 0),
    ("unknown samples do not reset the run", 30, [(0, P), (10, U), (20, U), (30, P)],
     [(RAISED, 30, A, False, 0, "c001")], 0),
    ("unknown does not start a run", 30, [(0, U), (10, P), (39, P), (40, P)],
     [(RAISED, 40, A, False, 10, "c001")], 0),
    ("unknown does not resolve", 30, [(0, P), (30, P), (40, U), (50, U)],
     [(RAISED, 30, A, False, 0, "c001")], 0),
    ("min_duration_s 0 fires on the first prone sample", 0, [(0, S), (5, P)],
     [(RAISED, 5, A, False, 5, "c001")], 0),
    ("fractional threshold", 0.5, [(0, P), (0.4, P), (0.5, P)], [(RAISED, 0.5, A, False, 0, "c001")], 0),
    ("ack while prone keeps it active and acknowledged", 30, [(0, P), (30, P), Ack(35), (40, P), (60, P)],
     [(RAISED, 30, A, False, 0, "c001"), (ACKED, 35, A, True, 0, "c001")], 0),
    ("ack then turn: resolved and acknowledged", 30, [(0, P), (30, P), Ack(35), (40, S)],
     [(RAISED, 30, A, False, 0, "c001"), (ACKED, 35, A, True, 0, "c001"), (RESOLVED, 40, RS, True, 0, "c001")], 0),
    ("turn then ack: resolved, then acknowledged", 30, [(0, P), (30, P), (31, S), Ack(32)],
     [(RAISED, 30, A, False, 0, "c001"), (RESOLVED, 31, RS, False, 0, "c001"), (ACKED, 32, RS, True, 0, "c001")], 0),
    ("continued prone updates one alert, no duplicate", 30, prone_every_second(0, 300),
     [(RAISED, 30, A, False, 0, "c001")], 0),
    ("prone again after resolving is a new alert", 30, [(0, P), (30, P), (31, S), (40, P), (70, P)],
     [(RAISED, 30, A, False, 0, "c001"), (RESOLVED, 31, RS, False, 0, "c001"), (RAISED, 70, A, False, 40, "c001")],
     0),
    ("a stale supine does not resolve", 30, [(0, P), (30, P), (20, S), (31, P)],
     [(RAISED, 30, A, False, 0, "c001")], 1),
    ("an out-of-order prone does not restart the run", 30, [(0, P), (10, P), (5, S), (3, P), (30, P)],
     [(RAISED, 30, A, False, 0, "c001")], 2),
    ("equal timestamps are not stale", 30, [(0, P), (30, P), (30, S)],
     [(RAISED, 30, A, False, 0, "c001"), (RESOLVED, 30, RS, False, 0, "c001")], 0),
    ("devices are independent", 30, [(0, P), (10, P, "clip-02"), (30, P), (35, S, "clip-02"), (40, P, "clip-02")],
     [(RAISED, 30, A, False, 0, "c001")], 0),
    ("two children prone: two alerts", 30, [(0, P), (1, P, "clip-02"), (30, P), (31, P, "clip-02")],
     [(RAISED, 30, A, False, 0, "c001"), (RAISED, 31, A, False, 1, "c002")], 0),
]  # fmt: skip


def run(min_duration_s: float, steps: list[Step]) -> tuple[list[Row], int, AlertBook]:
    rule = ProneRule(ProneConfig(min_duration_s=min_duration_s))
    book = AlertBook()
    rows: list[Row] = []
    stale = 0
    for step in steps:
        if isinstance(step, Ack):
            transitions = book.acknowledge(book.open_alerts()[0].id, step.by, T0 + round(step.at_s * 1000))
        else:
            device = step[2] if len(step) == 3 else "clip-01"
            sample = PostureSample(device, step[1], T0 + round(step[0] * 1000))
            try:
                events = rule.feed(sample)
            except StaleReading:
                stale += 1
                continue
            transitions = [t for ev in events for t in book.apply(ev, Subject.of_device(KIT, device))]
        for t in transitions:
            a = t.alert
            subject = a.child or a.device or ""
            rows.append((t.change, (t.ts - T0) / 1000, a.state, a.acknowledged, (a.started_ts - T0) / 1000, subject))
    return rows, stale, book


@pytest.mark.parametrize(("name", "min_s", "steps", "expected", "stale"), CASES, ids=[c[0] for c in CASES])
def test_prone_scenarios(name: str, min_s: float, steps: list[Step], expected: list[Row], stale: int) -> None:
    rows, stale_seen, _ = run(min_s, steps)
    assert rows == expected
    assert stale_seen == stale


def test_raised_alert_is_a_whole_critical_contract_alert() -> None:
    _, _, book = run(30, prone_every_second(0, 45))
    [alert] = book.open_alerts()
    assert alert.model_dump() == {
        "id": alert.id,
        "rule": "prone",
        "severity": Severity.CRITICAL,
        "state": AlertState.ACTIVE,
        "acknowledged": False,
        "acknowledged_by": None,
        "acknowledged_ts": None,
        "escalated": False,
        "device": "clip-01",
        "room": "hiyoko",
        "child": "c001",
        "started_ts": T0,
        "updated_ts": T0 + 30_000,
        "resolved_ts": None,
        "value": 30.0,
        "message": "うつぶせ寝が30秒以上続いています",
        "message_en": "Prone for 30 s or more",
        "notify_count": 0,
        "notified_ts": T0 + 30_000,  # without a gateway clock, the event's time
        "escalated_ts": None,
    }
    assert alert.id.startswith("prone-")


def test_ack_while_prone_records_who_and_when_and_stays_open() -> None:
    _, _, book = run(30, [(0, P), (30, P), Ack(33, "hoikushi-1"), (50, P)])
    [alert] = book.open_alerts()
    assert (alert.state, alert.acknowledged, alert.acknowledged_by, alert.acknowledged_ts) == (
        AlertState.ACTIVE,
        True,
        "hoikushi-1",
        T0 + 33_000,
    )


def test_resolved_and_acknowledged_alert_leaves_the_book() -> None:
    rows, _, book = run(30, [(0, P), (30, P), (31, S), Ack(32)])
    assert rows[-1][0] is ACKED
    assert book.open_alerts() == []


def test_unbound_device_is_its_own_subject() -> None:
    rows, _, book = run(0, [(0, P, "clip-99")])
    assert rows == [(RAISED, 0, A, False, 0, "clip-99")]
    [alert] = book.open_alerts()
    assert (alert.device, alert.child, alert.room) == ("clip-99", None, "hiyoko")


def test_rule_reports_levels_not_edges() -> None:
    # Every prone sample past the threshold reports Firing with the same start; every known
    # non-prone sample reports Cleared (so a restarted gateway resolves a restored alert).
    rule = ProneRule(ProneConfig(min_duration_s=1))
    out = [rule.feed(PostureSample("d", p, T0 + ms)) for p, ms in [(P, 0), (P, 1000), (P, 2000), (U, 2500), (S, 3000)]]
    assert [[type(e).__name__ for e in evs] for evs in out] == [[], ["Firing"], ["Firing"], [], ["Cleared"]]
    fired = [e for evs in out for e in evs if isinstance(e, Firing)]
    assert {e.started_ts for e in fired} == {T0}
    assert [e.value for e in fired] == [1.0, 2.0]
    assert out[-1] == [Cleared("prone", "d", T0 + 3000)]


def test_stale_reading_names_device_and_times() -> None:
    rule = ProneRule()
    rule.feed(PostureSample("clip-01", P, T0 + 5000))
    with pytest.raises(StaleReading) as exc:
        rule.feed(PostureSample("clip-01", S, T0 + 4000))
    assert (exc.value.device, exc.value.ts, exc.value.latest_ts) == ("clip-01", T0 + 4000, T0 + 5000)
    assert exc.value.reason == "stale"


def test_zero_second_rule_has_its_own_message() -> None:
    rule = ProneRule(ProneConfig(min_duration_s=0))
    [ev] = rule.feed(PostureSample("d", P, T0))
    assert isinstance(ev, Firing)
    assert (ev.message, ev.message_en, ev.value) == ("うつぶせ寝になっています", "Lying prone", 0.0)
