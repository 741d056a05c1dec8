"""The dashboard against a real Mosquitto, over real HTTP sockets: alerts in over MQTT, out over the
JSON API and the SSE stream; acknowledgements out as AckCommand on command/ack. The running dashboard
and its helpers: tests/support/dashboard_server.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nurserywatch.contract import (
    AckCommand,
    Alert,
    AlertState,
    Severity,
    ack_topic,
    alert_topic,
    reading_topic,
    status_topic,
)
from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port
from tests.support.clock import T0
from tests.support.dashboard_server import (
    Dash,
    ack_of,
    dashboard_kit,
    make_alert,
    next_message,
    read_sse,
    running_dashboard,
)
from tests.support.waiting import wait_until


@pytest.fixture
async def dash(mosquitto: BrokerURL) -> AsyncIterator[Dash]:
    # A fresh site per test: the broker is shared by the whole session and keeps retained alerts.
    async with running_dashboard(dashboard_kit(f"dash-{uuid.uuid4().hex[:8]}"), mosquitto) as d:
        yield d


# ---------------------------------------------------------------- tests


async def test_healthz(dash: Dash) -> None:
    r = await dash.http.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    connections = body.pop("connections")  # the HTTP server's guard (dashboard/http_server.py)
    assert body == {"ok": True, "mqtt_connected": True, "alerts": 0, "live_clients": 0, "rejected": {}}
    assert connections["open"] >= 1 and connections["cap"] > 0
    assert {k: connections[k] for k in ("evicted", "refused", "timed_out", "accept_errors")} == dict.fromkeys(
        ("evicted", "refused", "timed_out", "accept_errors"), 0
    )


async def test_alert_appears_is_acknowledged_and_leaves(dash: Dash) -> None:
    await dash.publish_alert(make_alert("a1"))

    async def listed() -> bool:
        return await dash.alert_ids("active") == ["a1"]

    await wait_until(listed, "alert a1 listed as active")
    assert await dash.alert_ids("resolved") == []
    body = (await dash.http.get("/api/alerts")).json()
    assert Alert.model_validate(body[0]) == make_alert("a1")

    await dash.mqtt.subscribe(ack_topic(dash.site), qos=1)
    r = await dash.http.post("/api/alerts/a1/ack", json={"by": "田中"})
    assert (r.status_code, r.json()) == (202, {"status": "sent"})
    message = await next_message(dash.mqtt)
    assert message.topic.value == ack_topic(dash.site)
    assert message.qos == 1
    assert ack_of(message) == AckCommand(alert_id="a1", by="田中")

    # The name comes from the session (tanaka, shown as 田中), with or without a body, and a body
    # naming someone else is ignored: nobody acknowledges in another's name.
    for kwargs in ({}, {"json": {"by": "誰か"}}):
        r = await dash.http.post("/api/alerts/a1/ack", **kwargs)
        assert r.status_code == 202
        assert ack_of(await next_message(dash.mqtt)) == AckCommand(alert_id="a1", by="田中")

    # The gateway's answer comes back on alert/a1; the dashboard only mirrors it.
    acked = make_alert("a1", acknowledged=True, acknowledged_by="田中", acknowledged_ts=T0 + 5000, updated_ts=T0 + 5000)
    await dash.publish_alert(acked)

    async def shows_acked() -> bool:
        alerts = (await dash.http.get("/api/alerts")).json()
        return len(alerts) == 1 and alerts[0]["acknowledged_by"] == "田中"

    await wait_until(shows_acked, "alert shown as acknowledged")

    await dash.clear_alert("a1")

    async def gone() -> bool:
        return await dash.alert_ids() == []

    await wait_until(gone, "alert removed by the empty retained payload")


async def test_resolved_and_acknowledged_alert_leaves(dash: Dash) -> None:
    await dash.publish_alert(make_alert("a2"))

    async def listed() -> bool:
        return await dash.alert_ids() == ["a2"]

    await wait_until(listed)
    done = make_alert(
        "a2",
        state=AlertState.RESOLVED,
        resolved_ts=T0 + 9000,
        acknowledged=True,
        acknowledged_by="x",
        acknowledged_ts=T0 + 1000,
        updated_ts=T0 + 9000,
    )
    await dash.publish_alert(done)

    async def gone() -> bool:
        return await dash.alert_ids() == []

    await wait_until(gone)


async def test_ack_of_unknown_alert_is_404(dash: Dash) -> None:
    r = await dash.http.post("/api/alerts/nope/ack", json={"by": "田中"})
    assert r.status_code == 404
    assert r.json()["error"] == "unknown_alert"
    assert "nope" in r.json()["message"]


async def test_bad_requests_get_json_errors(dash: Dash) -> None:
    await dash.publish_alert(make_alert("a3"))

    async def listed() -> bool:
        return await dash.alert_ids() == ["a3"]

    await wait_until(listed)
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("GET", "/no/such/page", {}, 404, "not_found"),
        ("GET", "/api/alerts?state=bogus", {}, 422, "invalid_request"),
        ("POST", "/api/alerts/a3/ack", {"json": {"by": ""}}, 422, "invalid_request"),
        ("POST", "/api/alerts/a3/ack", {"json": {"by": "x" * 129}}, 422, "invalid_request"),
        ("POST", "/api/alerts/a3/ack", {"json": {"who": "x"}}, 422, "invalid_request"),
        (
            "POST",
            "/api/alerts/a3/ack",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "invalid_request",
        ),
        ("DELETE", "/api/alerts", {}, 405, "method_not_allowed"),
    ]
    for method, path, kwargs, status, code in cases:
        r = await dash.http.request(method, path, **kwargs)
        assert r.status_code == status, (method, path, r.text)
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"] == code
        assert "Traceback" not in r.text


async def test_malformed_payloads_are_counted_and_ignored(dash: Dash) -> None:
    site = dash.site
    for topic, payload in [
        (alert_topic(site, "a4"), b"{this is not json"),
        (alert_topic(site, "a5"), make_alert("a6").to_json()),
        (alert_topic(site, "a7"), b'{"id": "a7"}'),
        (reading_topic(site, "clip-01", "posture"), b'{"ts": 1, "seq": 1, "position": "flying"}'),
        (reading_topic(site, "ghost", "posture"), b'{"ts": 1, "seq": 1, "position": "supine"}'),
    ]:
        await dash.mqtt.publish(topic, payload, qos=1)
    await dash.publish_alert(make_alert("a8"))  # a good one after the bad ones still gets through

    async def counted() -> bool:
        rejected: dict[str, int] = (await dash.http.get("/healthz")).json()["rejected"]
        return rejected == {
            "bad_json": 1,
            "id_mismatch": 1,
            "invalid_payload": 2,
            "unknown_device": 1,
        }

    await wait_until(counted, "rejections counted by reason")
    assert await dash.alert_ids() == ["a8"]
    assert (await dash.http.get("/healthz")).status_code == 200


async def test_posture_and_device_status_show_in_rooms(dash: Dash) -> None:
    await dash.mqtt.publish(
        reading_topic(dash.site, "clip-02", "posture"),
        json.dumps({"ts": T0, "seq": 7, "position": "prone", "accel_mg": [10, 20, -1000]}),
        qos=1,
    )
    await dash.mqtt.publish(
        status_topic(dash.site, "clip-02"),
        json.dumps({"ts": T0, "online": True, "battery_pct": 64}),
        qos=1,
        retain=True,
    )

    async def shown() -> bool:
        rooms = (await dash.http.get("/api/rooms")).json()
        yui = rooms[0]["children"][1]
        return yui["posture"] is not None and yui["devices"][0]["online"] is True

    await wait_until(shown, "posture and status of clip-02 in /api/rooms")
    rooms = (await dash.http.get("/api/rooms")).json()
    assert [r["id"] for r in rooms] == ["hiyoko", "risu"]
    assert rooms[1]["children"] == []
    haruto, yui = rooms[0]["children"]
    assert haruto["posture"] is None
    assert yui["id"] == "c002" and yui["nickname"] == "ゆい"
    assert yui["posture"]["position"] == "prone" and yui["posture"]["device"] == "clip-02"
    assert yui["posture"]["ts"] == T0 and yui["posture"]["age_s"] > 0
    assert yui["devices"] == [
        {"id": "clip-02", "kind": "posture_clip", "online": True, "battery_pct": 64.0, "status_ts": T0}
    ]


async def test_sse_stream_delivers_snapshot_and_changes(dash: Dash) -> None:
    await dash.publish_alert(make_alert("a9"))

    async def listed() -> bool:
        return await dash.alert_ids() == ["a9"]

    await wait_until(listed)
    async with dash.http.stream("GET", "/api/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_sse(response)
        name, snapshot = await asyncio.wait_for(anext(events), 3)
        assert name == "snapshot"
        assert snapshot["mqtt_connected"] is True
        assert [a["id"] for a in snapshot["alerts"]] == ["a9"]
        assert (await dash.http.get("/healthz")).json()["live_clients"] == 1

        new = make_alert(
            "a10",
            severity=Severity.WARNING,
            rule="battery_low",
            child=None,
            message="電池残量低下",
            message_en="Battery low",
        )
        await dash.publish_alert(new)
        name, data = await asyncio.wait_for(anext(events), 3)
        assert name == "alert"
        assert Alert.model_validate(data) == new

        await dash.clear_alert("a9")
        assert await asyncio.wait_for(anext(events), 3) == ("alert_removed", {"id": "a9", "alert": None})

        done = new.model_copy(
            update={"state": AlertState.RESOLVED, "acknowledged": True, "acknowledged_by": "x", "updated_ts": T0 + 1}
        )
        await dash.publish_alert(done)
        assert await asyncio.wait_for(anext(events), 3) == (
            "alert_removed",
            {"id": "a10", "alert": done.model_dump(mode="json")},
        )

        await dash.mqtt.publish(
            reading_topic(dash.site, "clip-01", "posture"), json.dumps({"ts": T0, "seq": 1, "position": "left"}), qos=1
        )
        assert await asyncio.wait_for(anext(events), 3) == (
            "posture",
            {"device": "clip-01", "child": "c001", "room": "hiyoko", "position": "left", "ts": T0},
        )


async def test_page_language(dash: Dash) -> None:
    ja = await dash.http.get("/")
    assert ja.status_code == 200 and ja.headers["content-type"].startswith("text/html")
    assert '<html lang="ja">' in ja.text
    for text in ("午睡チェック", "アラートはありません", "データなし", "はると", "ひよこ組", "English"):
        assert text in ja.text
    en = await dash.http.get("/?lang=en")
    assert '<html lang="en">' in en.text
    for text in ("Nap check", "No alerts", "No data", "はると", "日本語"):
        assert text in en.text
    assert "アラートはありません" not in en.text
    # Unknown languages fall back to the default instead of failing.
    assert '<html lang="ja">' in (await dash.http.get("/?lang=xx")).text
    # Every asset is served by the dashboard itself (no CDN).
    for asset in ("static/app.js", "static/style.css", "static/icons.svg"):
        assert f'"{asset}' in ja.text or asset in ja.text
        assert (await dash.http.get(f"/{asset}")).status_code == 200
    assert "http://" not in ja.text and "https://" not in ja.text


class TcpProxy:
    """A TCP relay we can cut, to take the dashboard (and only it) off the broker."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_broker_loss_503_then_resync_after_reconnect(mosquitto: BrokerURL) -> None:
    proxy = TcpProxy(mosquitto.port)
    await proxy.start()
    kit = dashboard_kit(f"dash-{uuid.uuid4().hex[:8]}")
    async with running_dashboard(kit, BrokerURL("127.0.0.1", proxy.port), mqtt_broker=mosquitto) as dash:
        await dash.publish_alert(make_alert("b1"))
        await dash.publish_alert(make_alert("b2"))

        async def listed() -> bool:
            return await dash.alert_ids() == ["b1", "b2"]

        await wait_until(listed)
        await proxy.cut()

        await wait_until(lambda: _status_is(dash, 503), "healthz 503 without the broker")
        assert (await dash.http.get("/healthz")).json()["mqtt_connected"] is False
        r = await dash.http.post("/api/alerts/b1/ack", json={"by": "田中"})
        assert (r.status_code, r.json()["error"]) == (503, "mqtt_unavailable")

        # While the dashboard is away, b1 is cleared on the broker. At QoS 0 the broker does not queue
        # the clear for the dashboard's offline session, so (as after a broker restart) no message
        # will ever tell it: only the resync after reconnecting can.
        await dash.mqtt.publish(alert_topic(dash.site, "b1"), b"", qos=0, retain=True)
        await proxy.start()
        await wait_until(lambda: _status_is(dash, 200), "reconnected", 10)

        async def swept() -> bool:
            return await dash.alert_ids() == ["b2"]

        await wait_until(swept, "alert cleared while away is dropped after reconnecting")
    await proxy.cut()


async def _status_is(dash: Dash, status: int) -> bool:
    return (await dash.http.get("/healthz")).status_code == status
