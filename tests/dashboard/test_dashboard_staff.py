"""Staff side of the dashboard against a REAL gateway and a REAL Mosquitto over real HTTP: nap session
start by the API (the gateway's retained state comes back), today's assignment (and every refusal the
dashboard can know), the SSE tick with the gateway's heartbeat age, breathing on the cards (and the
per-mat event throttle), the nap-check records (JSON, confirm by tap through the gateway, CSV, print
page), and the errors. About 6 s."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dashboard.live.state import LiveState
from nurserywatch.contract import BreathingReading, Position, PostureReading, reading_topic
from nurserywatch.kit import Kit
from nurserywatch.mqtt import BrokerURL
from tests.support.clock import T0
from tests.support.dashboard_server import make_alert, read_sse
from tests.support.staff_stack import DAY, Stack, staff_stack
from tests.support.waiting import wait_until


@pytest.fixture
async def stack(mosquitto: BrokerURL) -> AsyncIterator[Stack]:
    async with staff_stack(mosquitto) as s:
        yield s


async def rooms(s: Stack) -> dict[str, Any]:
    r = await s.http.get("/api/rooms")
    assert r.status_code == 200
    return {room["id"]: room for room in r.json()}


async def test_session_and_assignment_round_trip_through_the_gateway(stack: Stack) -> None:
    s = stack

    async def session_active() -> bool:
        room = (await rooms(s))["hiyoko"]
        return room["session"] is not None and room["session"]["active"]

    r = await s.http.post("/api/rooms/hiyoko/session", json={"action": "start"})
    assert (r.status_code, r.json()) == (202, {"status": "sent"})
    await wait_until(session_active, "the gateway's session state on the dashboard")
    assert (await rooms(s))["hiyoko"]["session"]["started_by"] == "田中"  # the signed-in user, not a body field

    # c002 moves onto the spare clip: clip-02 watches nobody today; the card follows.
    r = await s.http.post("/api/assignments", json={"device": "clip-03", "child": "c002"})
    assert r.status_code == 202

    async def moved() -> bool:
        room = (await rooms(s))["hiyoko"]
        wanted = {"clip-01": "c001", "clip-02": None, "clip-03": "c002"}
        return {d["id"]: d["child"] for d in room["assignable"]} == wanted

    await wait_until(moved, "the assignment retained by the gateway")
    room = (await rooms(s))["hiyoko"]
    assert {d["id"]: d["source"] for d in room["assignable"]}["clip-03"] == "staff"
    c002 = next(c for c in room["children"] if c["id"] == "c002")
    assert [d["id"] for d in c002["devices"]] == ["clip-03"]

    # Refusals the dashboard can know, before anything goes to MQTT.
    for body, status, code in [
        ({"device": "air-1", "child": "c001"}, 422, "not_assignable"),
        ({"device": "nope", "child": "c001"}, 404, "unknown_device"),
        ({"device": "clip-01", "child": "c404"}, 404, "unknown_child"),
        ({"device": "clip-01", "child": "c009"}, 422, "wrong_room"),
        ({"device": "clip-01"}, 422, "invalid_request"),  # child must be given (null = nobody)
    ]:
        r = await s.http.post("/api/assignments", json=body)
        assert (r.status_code, r.json()["error"]) == (status, code), body
    # An active alert on a device the change touches: 409 (moving c001 would take it off clip-01).
    alert = make_alert("lost-1", rule="sensor_lost", device="clip-01", child="c001")
    await s.mqtt.publish(f"nurserywatch/v1/{s.site}/alert/lost-1", alert.to_json(), qos=1, retain=True)
    await wait_until(lambda: _has_alert(s, "lost-1"), "the alert on the dashboard")
    r = await s.http.post("/api/assignments", json={"device": "clip-03", "child": "c001"})
    assert (r.status_code, r.json()["error"]) == (409, "device_alerting")
    await s.mqtt.publish(f"nurserywatch/v1/{s.site}/alert/lost-1", b"", qos=1, retain=True)

    r = await s.http.post("/api/rooms/nope/session", json={"action": "start"})
    assert (r.status_code, r.json()["error"]) == (404, "unknown_room")
    r = await s.http.post("/api/rooms/hiyoko/session", json={"action": "nap"})
    assert (r.status_code, r.json()["error"]) == (422, "invalid_request")


async def _has_alert(s: Stack, alert_id: str) -> bool:
    return alert_id in [a["id"] for a in (await s.http.get("/api/alerts")).json()]


async def test_sse_ticks_carry_the_gateway_heartbeat_and_breathing_is_throttled(stack: Stack) -> None:
    s = stack
    events: list[tuple[float, str, Any]] = []
    loop = asyncio.get_running_loop()
    async with s.http.stream("GET", "/api/events") as response:
        assert response.status_code == 200
        it = read_sse(response)
        name, snap = await anext(it)
        assert name == "snapshot" and snap["gateway_online"] is True and snap["mqtt_connected"] is True
        assert {a["device"] for a in snap["assignments"]} == {"clip-01", "clip-02", "clip-03"}
        async with asyncio.timeout(4):
            while sum(1 for e in events if e[1] == "tick") < 3:
                name, data = await anext(it)
                events.append((loop.time(), name, data))
    ticks = [e for e in events if e[1] == "tick"]
    gaps = [b[0] - a[0] for a, b in zip(ticks, ticks[1:], strict=False)]
    assert all(0.7 < g < 1.4 for g in gaps), gaps
    for _, _, t in ticks:
        assert t["gateway_online"] is True and t["mqtt_connected"] is True
        assert 0 <= t["gateway_age_ms"] < 2500, t  # the gateway beats about every second


def test_breathing_events_are_throttled_per_mat_but_presence_changes_go_at_once() -> None:
    kit = Kit.model_validate({
        "site": "thr", "name": "x", "rooms": [{"id": "r", "name": "R"}], "agents": [{"id": "a"}],
        "children": [{"id": "c1", "age_band": "0", "room": "r"}],
        "devices": [{"id": "mat-1", "kind": "nap_mat", "room": "r", "agent": "a", "child": "c1",
                     "transport": {"type": "serial", "port": "/dev/x"}}],
    })  # fmt: skip
    state = LiveState(kit)
    topic = reading_topic("thr", "mat-1", "breathing")
    sent = []
    for i in range(20):  # 20 readings 100 ms apart: 2 s of message time
        r = BreathingReading(ts=T0 + 100 * i, seq=i, rate_bpm=30 + i, present=True)
        sent += state.apply(topic, r.to_json())
    assert [e.data["ts"] for e in sent] == [T0, T0 + 1000]
    assert state.breathing["mat-1"].rate_bpm == 49  # the state holds the newest all the same
    off = BreathingReading(ts=T0 + 2050, seq=21, rate_bpm=None, present=False)
    assert [e.data["present"] for e in state.apply(topic, off.to_json())] == [False]  # at once


async def test_records_confirm_csv_and_print(stack: Stack) -> None:
    s = stack
    r = await s.http.post("/api/rooms/hiyoko/session", json={"action": "start"})
    assert r.status_code == 202
    await wait_until(lambda: _session_active(s), "session active")
    seq = 0
    for _ in range(6):  # 6 minutes, a reading a minute: c001 (0 y) gets its 5-minute record
        for device in ("clip-01", "clip-02"):
            reading = PostureReading(ts=s.clock.now_ms(), seq=seq, position=Position.SUPINE)
            await s.mqtt.publish(reading_topic(s.site, device, "posture"), reading.to_json(), qos=1)
            seq += 1
        await wait_until(lambda n=seq: _received(s, n), "readings at the gateway")  # type: ignore[misc]
        s.clock.advance(60_000)
        await asyncio.sleep(0.08)

    async def sheet() -> dict[str, Any]:
        r = await s.http.get("/api/records", params={"room": "hiyoko", "date": DAY})
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def has_record() -> bool:
        return any(c["child"] == "c001" for c in (await sheet())["cells"])

    await wait_until(has_record, "c001's first record")
    data = await sheet()
    cell = next(c for c in data["cells"] if c["child"] == "c001")
    assert (cell["posture"], cell["posture_mark"], cell["recorded_by"], cell["confirmed_by"]) == (
        "supine", "仰", "auto", []
    )
    assert [c["id"] for c in data["children"]] == ["c001", "c002"] and data["started"] == "09:00"

    r = await s.http.post(f"/api/records/{cell['seq']}/confirm", json={})
    assert r.status_code == 202

    async def confirmed() -> bool:
        found = next(c for c in (await sheet())["cells"] if c["seq"] == cell["seq"])
        return bool(found["confirmed_by"] == ["田中"])

    await wait_until(confirmed, "the gateway's confirmation")

    # Errors: unknown entry, a session entry, bad date, unknown room.
    r = await s.http.post("/api/records/99999/confirm", json={})
    assert (r.status_code, r.json()["error"]) == (404, "unknown_record")
    r = await s.http.post("/api/records/1/confirm", json={})  # entry 1 is the session start
    assert (r.status_code, r.json()["error"]) == (422, "not_a_record")
    r = await s.http.get("/api/records", params={"room": "hiyoko", "date": "01/01/2026"})
    assert (r.status_code, r.json()["error"]) == (422, "invalid_request")
    r = await s.http.get("/api/records", params={"room": "nope"})
    assert (r.status_code, r.json()["error"]) == (404, "unknown_room")

    # Pages: the grid and the printable A4 sheet; the CSV for staff too (one rule for the sheet: staff see
    # it on the page, the API and on paper, so the same sheet as a file is theirs as well).
    page = await s.http.get("/records", params={"room": "hiyoko", "date": DAY})
    assert page.status_code == 200 and 'data-testid="records-grid"' in page.text and "確認: 田中" in page.text
    assert 'data-testid="records-csv"' in page.text
    printed = await s.http.get("/records/print", params={"room": "hiyoko", "date": DAY})
    assert printed.status_code == 200
    for text in ("午睡チェック表", s.kit.name, "ひよこ組", "施設長 確認印", "records_print.css"):
        assert text in printed.text, text
    r = await s.http.get("/records.csv", params={"room": "hiyoko", "date": DAY})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f'filename="nap-check-hiyoko-{DAY}.csv"' in r.headers["content-disposition"]
    assert r.content.startswith(b"\xef\xbb\xbf")  # BOM: Excel in Japan
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][0] == "記録番号" and any(row[0] == str(cell["seq"]) and "田中" in row for row in rows[1:])
    css = await s.http.get("/static/records_print.css")
    assert "@page { size: A4" in css.text


async def _session_active(s: Stack) -> bool:
    room = (await rooms(s))["hiyoko"]
    return bool(room["session"] and room["session"]["active"])


async def _received(s: Stack, n: int) -> bool:
    return s.stats.readings_received >= n


async def test_records_need_the_gateway_database(mosquitto: BrokerURL) -> None:
    async with staff_stack(mosquitto, gateway_db=False) as s:
        r = await s.http.get("/api/records", params={"room": "hiyoko", "date": DAY})
        assert (r.status_code, r.json()["error"]) == (503, "no_gateway_db")
        r = await s.http.post("/api/records/1/confirm", json={})
        assert (r.status_code, r.json()["error"]) == (503, "no_gateway_db")
