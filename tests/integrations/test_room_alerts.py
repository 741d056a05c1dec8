"""A room's alerts summed up from the retained ``alert/{id}`` messages (gateway/integrations/room_alerts.py):
steps of alerts in, the whole summaries that changed out. Pure."""

from __future__ import annotations

import pytest

from gateway.integrations.room_alerts import RoomAlertBook
from nurserywatch.contract import Alert, AlertState, RoomAlerts, Severity
from tests.support.kits import make_kit

T = 1_767_225_600_000
KIT = make_kit("himawari", rooms={"hiyoko": "ひよこ組", "risu": "りす組"},
               devices={"clip-01": "c001", "co2-02": {"kind": "mhz19b", "room": "risu"}})  # fmt: skip


def alert(aid: str, *, room: str | None = "hiyoko", device: str | None = "clip-01", severity: str = "critical",
          state: str = "active", acknowledged: bool = False) -> Alert:  # fmt: skip
    return Alert(id=aid, rule="prone", severity=Severity(severity), state=AlertState(state), acknowledged=acknowledged,
                 device=device, room=room, started_ts=T, updated_ts=T, message="m", message_en="m")  # fmt: skip


def summary(room: str, problem: bool, active: int, unacknowledged: int, severity: str | None, ts: int) -> RoomAlerts:
    return RoomAlerts(room=room, problem=problem, active=active, unacknowledged=unacknowledged,
                      severity=None if severity is None else Severity(severity), updated_ts=ts)  # fmt: skip


Step = tuple[str, Alert | None]

CASES: list[tuple[str, list[list[Step]], list[list[RoomAlerts]]]] = [
    ("first call: every room, even without alerts", [[]],
     [[summary("hiyoko", False, 0, 0, None, 1), summary("risu", False, 0, 0, None, 1)]]),
    ("an active alert, acknowledged, resolved, then closed", [
        [],
        [("a1", alert("a1"))],
        [("a1", alert("a1", acknowledged=True))],
        [("a1", alert("a1", acknowledged=True, state="resolved"))],  # closed: resolved and acknowledged
    ], [
        [summary("hiyoko", False, 0, 0, None, 1), summary("risu", False, 0, 0, None, 1)],
        [summary("hiyoko", True, 1, 1, "critical", 2)],
        [summary("hiyoko", True, 1, 0, "critical", 3)],  # still a problem until resolved
        [summary("hiyoko", False, 0, 0, None, 4)],
    ]),
    ("resolved but unacknowledged: no problem, still unacknowledged; the empty retained payload closes it", [
        [("a1", alert("a1", state="resolved"))],
        [("a1", None)],
    ], [
        [summary("hiyoko", False, 0, 1, None, 1), summary("risu", False, 0, 0, None, 1)],
        [summary("hiyoko", False, 0, 0, None, 2)],
    ]),
    ("the highest active severity; the room from the kit when the alert has none", [
        [("a1", alert("a1", severity="info")), ("a2", alert("a2", room=None, device="co2-02", severity="warning"))],
        [("a3", alert("a3", severity="critical", state="resolved"))],  # resolved: not in the severity
        [("a4", alert("a4", severity="warning"))],
        [("a5", alert("a5", room=None, device="co2-02", severity="critical"))],
    ], [
        [summary("hiyoko", True, 1, 1, "info", 1), summary("risu", True, 1, 1, "warning", 1)],
        [summary("hiyoko", True, 1, 2, "info", 2)],
        [summary("hiyoko", True, 2, 3, "warning", 3)],
        [summary("risu", True, 2, 2, "critical", 4)],
    ]),
    ("an alert moving rooms leaves the first (the last message of an id wins)", [
        [("a1", alert("a1"))],
        [("a1", alert("a1", room="risu"))],
    ], [
        [summary("hiyoko", True, 1, 1, "critical", 1), summary("risu", False, 0, 0, None, 1)],
        [summary("hiyoko", False, 0, 0, None, 2), summary("risu", True, 1, 1, "critical", 2)],
    ]),
]  # fmt: skip


@pytest.mark.parametrize(("steps", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_room_summaries(steps: list[list[Step]], expected: list[list[RoomAlerts]]) -> None:
    book = RoomAlertBook(KIT)
    got = []
    for ts, step in enumerate(steps, start=1):
        for aid, a in step:
            assert book.apply(aid, a) is None
        got.append(book.changes(ts))
    assert got == expected
    assert [s.room for s in book.handed_out()] == ["hiyoko", "risu"]


@pytest.mark.parametrize(
    ("a", "reason"),
    [
        (alert("x1", room="panda"), "unknown_room"),
        (alert("x1", room=None, device="ghost-01"), "unknown_device"),
        (alert("x1", room=None, device=None), "no_room"),
    ],
)
def test_alerts_outside_the_kit_are_refused_with_a_reason(a: Alert, reason: str) -> None:
    book = RoomAlertBook(KIT)
    book.apply("a1", alert("a1"))
    book.changes(1)
    assert book.apply("x1", a) == reason
    assert book.changes(2) == []  # and change nothing


def test_handed_out_keeps_the_time_of_the_change() -> None:
    book = RoomAlertBook(KIT)
    book.apply("a1", alert("a1"))
    book.changes(5)
    assert book.changes(9) == []
    assert book.handed_out() == [summary("hiyoko", True, 1, 1, "critical", 5), summary("risu", False, 0, 0, None, 5)]
