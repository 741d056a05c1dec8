"""LiveState (pure) and Fanout: tables of MQTT messages in, whole events / rejection reasons out."""

from __future__ import annotations

import asyncio

import pytest

from dashboard.live.fanout import Fanout
from dashboard.live.sse import MAX_EVENTS_PER_WRITE, event_stream, format_event
from dashboard.live.state import Event, EventKind, LiveState
from nurserywatch.contract import Alert, AlertState
from tests.support.dashboard_server import make_alert as alert
from tests.support.kits import make_kit

SITE = "himawari"
ROOT = f"nurserywatch/v1/{SITE}"

KIT = make_kit(SITE, name="ひまわり保育園", children={"c001": {"age_band": "0", "nickname": "はると"}})


A1 = alert()
A1_ACKED = alert(
    acknowledged=True, acknowledged_by="田中", acknowledged_ts=1_767_225_605_000, updated_ts=1_767_225_605_000
)
A1_DONE = alert(
    acknowledged=True,
    acknowledged_by="田中",
    acknowledged_ts=1_767_225_605_000,
    state=AlertState.RESOLVED,
    resolved_ts=1_767_225_610_000,
    updated_ts=1_767_225_610_000,
)
A1_RESOLVED_UNACKED = alert(state=AlertState.RESOLVED, resolved_ts=1_767_225_610_000, updated_ts=1_767_225_610_000)


def ev(kind: EventKind, data: dict[str, object]) -> Event:
    return Event(kind, data)


def alert_ev(a: Alert) -> Event:
    return ev(EventKind.ALERT, a.model_dump(mode="json"))


# Each case: messages applied in order to a fresh state -> events of the LAST message, rejections, alert ids.
CASES: list[tuple[str, list[tuple[str, bytes]], list[Event], dict[str, int], list[str]]] = [
    ("new alert", [(f"{ROOT}/alert/a1", A1.to_json())], [alert_ev(A1)], {}, ["a1"]),
    ("same alert again: nothing new", [(f"{ROOT}/alert/a1", A1.to_json())] * 2, [], {}, ["a1"]),
    (
        "acknowledged update",
        [(f"{ROOT}/alert/a1", A1.to_json()), (f"{ROOT}/alert/a1", A1_ACKED.to_json())],
        [alert_ev(A1_ACKED)],
        {},
        ["a1"],
    ),
    (
        "older update does not undo a newer one",
        [(f"{ROOT}/alert/a1", A1_ACKED.to_json()), (f"{ROOT}/alert/a1", A1.to_json())],
        [],
        {},
        ["a1"],
    ),
    (
        "resolved but unacknowledged stays",
        [(f"{ROOT}/alert/a1", A1.to_json()), (f"{ROOT}/alert/a1", A1_RESOLVED_UNACKED.to_json())],
        [alert_ev(A1_RESOLVED_UNACKED)],
        {},
        ["a1"],
    ),
    (
        "resolved and acknowledged leaves the list, with its final version",
        [(f"{ROOT}/alert/a1", A1.to_json()), (f"{ROOT}/alert/a1", A1_DONE.to_json())],
        [ev(EventKind.ALERT_REMOVED, {"id": "a1", "alert": A1_DONE.model_dump(mode="json")})],
        {},
        [],
    ),
    (
        "empty retained payload leaves the list",
        [(f"{ROOT}/alert/a1", A1.to_json()), (f"{ROOT}/alert/a1", b"")],
        [ev(EventKind.ALERT_REMOVED, {"id": "a1", "alert": None})],
        {},
        [],
    ),
    ("empty payload for an unknown alert: nothing", [(f"{ROOT}/alert/a9", b"")], [], {}, []),
    ("not JSON", [(f"{ROOT}/alert/a1", b"{oops")], [], {"bad_json": 1}, []),
    ("not UTF-8", [(f"{ROOT}/alert/a1", b"\xff\xfe")], [], {"bad_utf8": 1}, []),
    ("NaN", [(f"{ROOT}/alert/a1", A1.to_json().replace(b'"value":"prone"', b'"value":NaN'))], [], {"bad_json": 1}, []),
    ("missing fields", [(f"{ROOT}/alert/a1", b'{"id": "a1"}')], [], {"invalid_payload": 1}, []),
    ("id differs from topic", [(f"{ROOT}/alert/a2", A1.to_json())], [], {"id_mismatch": 1}, []),
    ("too large", [(f"{ROOT}/alert/a1", b" " * 70_000)], [], {"too_large": 1}, []),
    ("other site", [("nurserywatch/v1/sakura/alert/a1", A1.to_json())], [], {"wrong_site": 1}, []),
    ("not a contract topic", [("nurserywatch/v1/himawari/alert", A1.to_json())], [], {"bad_topic": 1}, []),
    (
        "posture of a kit device",
        [(f"{ROOT}/reading/clip-01/posture", b'{"ts": 1767225600000, "seq": 1, "position": "prone"}')],
        [
            ev(
                EventKind.POSTURE,
                {"device": "clip-01", "child": "c001", "room": "hiyoko", "position": "prone", "ts": 1767225600000},
            )
        ],
        {},
        [],
    ),
    (
        "older posture is not shown over a newer one",
        [
            (f"{ROOT}/reading/clip-01/posture", b'{"ts": 1767225601000, "seq": 2, "position": "supine"}'),
            (f"{ROOT}/reading/clip-01/posture", b'{"ts": 1767225600000, "seq": 1, "position": "prone"}'),
        ],
        [],
        {},
        [],
    ),
    (
        "posture with an unknown position",
        [(f"{ROOT}/reading/clip-01/posture", b'{"ts": 1767225600000, "seq": 1, "position": "flying"}')],
        [],
        {"invalid_payload": 1},
        [],
    ),
    (
        "posture of a device not in the kit",
        [(f"{ROOT}/reading/clip-99/posture", b'{"ts": 1767225600000, "seq": 1, "position": "supine"}')],
        [],
        {"unknown_device": 1},
        [],
    ),
    (
        "a stream the dashboard does not follow",
        [(f"{ROOT}/reading/clip-01/air", b'{"ts": 1767225600000, "seq": 1}')],
        [],
        {"unexpected_topic": 1},
        [],
    ),
    (
        "device status",
        [(f"{ROOT}/status/clip-01", b'{"ts": 1767225600000, "online": true, "battery_pct": 80}')],
        [
            ev(
                EventKind.DEVICE_STATUS,
                {
                    "device": "clip-01",
                    "ts": 1767225600000,
                    "online": True,
                    "battery_pct": 80.0,
                    "rssi_dbm": None,
                    "room": None,
                },
            )
        ],
        {},
        [],
    ),
    (
        "edge last will",
        [(f"{ROOT}/edge/pi-1", b'{"online": false}')],
        [
            ev(
                EventKind.EDGE_STATUS,
                {"agent": "pi-1", "ts": None, "online": False, "version": None, "devices": [], "clock_ok": None},
            )
        ],
        {},
        [],
    ),
    ("edge agent not in the kit", [(f"{ROOT}/edge/pi-9", b'{"online": true}')], [], {"unknown_agent": 1}, []),
]


@pytest.mark.parametrize(
    ("messages", "events", "rejected", "alert_ids"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_apply(
    messages: list[tuple[str, bytes]], events: list[Event], rejected: dict[str, int], alert_ids: list[str]
) -> None:
    state = LiveState(KIT)
    last: list[Event] = []
    for topic, payload in messages:
        last = state.apply(topic, payload)
    assert last == events
    assert dict(state.rejected) == rejected
    assert [a.id for a in state.alerts_list()] == alert_ids


def test_alert_filter_and_snapshot() -> None:
    state = LiveState(KIT)
    state.apply(f"{ROOT}/alert/a1", A1.to_json())
    state.apply(f"{ROOT}/alert/a2", alert(id="a2", state=AlertState.RESOLVED, started_ts=1_767_225_500_000).to_json())
    assert [a.id for a in state.alerts_list("all")] == ["a2", "a1"]  # oldest first
    assert [a.id for a in state.alerts_list("active")] == ["a1"]
    assert [a.id for a in state.alerts_list("resolved")] == ["a2"]
    snap = state.snapshot(server_ms=42)
    assert snap.kind is EventKind.SNAPSHOT
    assert snap.data["server_ms"] == 42
    assert snap.data["mqtt_connected"] is False
    assert [a["id"] for a in snap.data["alerts"]] == ["a2", "a1"]


def test_resync_drops_alerts_the_broker_no_longer_holds() -> None:
    state = LiveState(KIT)
    state.apply(f"{ROOT}/alert/a1", A1.to_json())
    state.apply(f"{ROOT}/alert/a2", alert(id="a2").to_json())
    state.begin_resync()
    state.apply(f"{ROOT}/alert/a2", alert(id="a2").to_json())  # the broker re-sent only a2
    assert [a.id for a in state.alerts_list()] == ["a1", "a2"]  # a1 stays visible until the sweep
    assert state.end_resync() == [ev(EventKind.ALERT_REMOVED, {"id": "a1", "alert": None})]
    assert [a.id for a in state.alerts_list()] == ["a2"]
    assert state.end_resync() == []


def test_connection_events_only_on_change() -> None:
    state = LiveState(KIT)
    assert state.set_connected(True) == [ev(EventKind.CONNECTION, {"mqtt_connected": True})]
    assert state.set_connected(True) == []
    assert state.set_connected(False) == [ev(EventKind.CONNECTION, {"mqtt_connected": False})]


async def test_fanout_drops_a_slow_client_without_blocking_others() -> None:
    fanout = Fanout(queue_size=3)
    fast, slow = fanout.subscribe(), fanout.subscribe()
    events = [ev(EventKind.ALERT_REMOVED, {"id": f"a{i}"}) for i in range(5)]
    for e in events:
        fanout.publish([e])
        assert await asyncio.wait_for(fast.get(), 1) == e  # the fast client keeps up
    assert await asyncio.wait_for(slow.get(), 1) is None  # the slow one's stream ends: it will resync
    assert slow.closed and len(fanout) == 1 and fanout.dropped == 1
    fanout.close()
    assert await asyncio.wait_for(fast.get(), 1) is None
    assert await asyncio.wait_for(fanout.subscribe().get(), 1) is None  # no new streams after close


def test_an_empty_retained_payload_clears_no_state_and_is_not_rejected() -> None:
    # MQTT deletes a retained message with an empty payload (docs/contract.md): on a state topic it is
    # "cleared" — counted, not a bad_json rejection; the last known state stays on screen, as in the
    # gateway. On a reading topic an empty payload is still bad input.
    s = LiveState(KIT)
    edge = f"{ROOT}/edge/pi-1"
    assert s.apply(edge, b'{"ts": 1767225600000, "online": true}')
    for kind in ("edge/pi-1", "status/clip-01", "gateway", "session/hiyoko", "assignment/clip-01", "alert/a9"):
        assert s.apply(f"{ROOT}/{kind}", b"", retained=True) == []
    assert s.rejected == {}
    assert s.cleared == {"edge": 1, "status": 1, "gateway": 1, "session": 1, "assignment": 1, "alert": 1}
    assert s.edge_status["pi-1"].online is True
    assert s.apply(f"{ROOT}/reading/clip-01/posture", b"") == []
    assert s.rejected == {"bad_json": 1}


async def test_events_queued_while_a_write_went_out_leave_in_one_write_and_the_end_still_ends() -> None:
    """event_stream joins what is queued into one chunk (one send, not one per event) without losing
    an event, splitting one, or missing the end marker behind them (dropped client, server stop)."""
    fanout = Fanout()
    sub = fanout.subscribe()
    stream = event_stream(ev(EventKind.SNAPSHOT, {}), sub, keepalive_s=60)
    assert (await anext(stream)).startswith("retry: ") and (await anext(stream)).startswith("event: snapshot")
    events = [ev(EventKind.ALERT_REMOVED, {"id": f"a{i}"}) for i in range(MAX_EVENTS_PER_WRITE + 5)]
    fanout.publish(events)
    first, second = await anext(stream), await anext(stream)
    assert first == "".join(format_event(e) for e in events[:MAX_EVENTS_PER_WRITE])
    assert second == "".join(format_event(e) for e in events[MAX_EVENTS_PER_WRITE:])
    fanout.publish(events[:2])
    fanout.close()  # the end marker replaces what was queued: the stream ends at once
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 1)
    sub2 = Fanout().subscribe()
    stream2 = event_stream(ev(EventKind.SNAPSHOT, {}), sub2, keepalive_s=60)
    await anext(stream2), await anext(stream2)
    for item in (events[0], events[1], None):  # two events, then the end marker behind them
        sub2.queue.put_nowait(item)
    sub2.closed = True
    assert await anext(stream2) == format_event(events[0]) + format_event(events[1])
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream2), 1)
