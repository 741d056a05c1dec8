"""Prometheus metrics: the families and their exposition through prometheus_client (parsed back by
its own text and OpenMetrics parsers, the process's metrics beside them), and both /metrics
endpoints scraped in a real run — gateway and dashboard on a real Mosquitto, readings,
bad payloads, a prone alert raised, shown live (SSE) and acknowledged through the dashboard — with
every counter checked against the inputs. Who may scrape the dashboard's /metrics (loopback, token)."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.core import Metric

from dashboard.app import create_app
from dashboard.auth.models import Role
from nurserywatch.clock import ManualClock
from nurserywatch.contract import Position, reading_topic
from nurserywatch.metrics import Histogram
from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port
from nurserywatch.prometheus import (
    TEXT_CONTENT_TYPE,
    by_label,
    counter,
    exposition,
    gauge,
    histogram,
    labels,
    scrape_registry,
)
from tests.support.clock import T0
from tests.support.commands import signer_on
from tests.support.dashboard_login import FAST
from tests.support.dashboard_server import running_dashboard
from tests.support.gateway_stack import client, posture
from tests.support.kits import make_kit
from tests.support.metrics_scrape import gateway_with_metrics, parse, scrape, value
from tests.support.waiting import wait_until

# ---------------------------------------------------------------- pure


def families_for_test() -> list[Metric]:
    h = Histogram((0.01, 0.1, 1.0))
    for v in (0.005, 0.01, 0.05, 0.5, 3.0):
        h.observe(v)
    return [
        counter("x_rejected_total", "Rejected by reason.", by_label("reason", {"bad_json": 3, "too_large": 1})),
        counter("x_nothing_yet_total", "No samples yet.", {}),
        gauge("x_queue", 'Depth with "quotes", a \\ and\na newline.', {labels(where='a"b\\c\nd'): 7}),
        gauge("x_ratio", "A float.", 0.25),
        histogram("x_latency_seconds", "Latency.", h),
    ]  # fmt: skip


def test_exposition_parses_back_exactly_in_both_formats() -> None:
    registry = scrape_registry(families_for_test)
    body, ctype = exposition(registry, None)
    assert ctype == TEXT_CONTENT_TYPE
    text = body.decode()
    m = parse(text)
    assert value(m, "x_rejected_total", reason="bad_json") == 3
    assert value(m, "x_rejected_total", reason="too_large") == 1
    assert value(m, "x_queue", where='a"b\\c\nd') == 7
    assert value(m, "x_ratio") == 0.25
    # cumulative buckets: ≤ 0.01 holds 0.005 and 0.01 (le is inclusive)
    assert [value(m, "x_latency_seconds_bucket", le=le) for le in ("0.01", "0.1", "1.0", "+Inf")] == [2, 3, 4, 5]
    assert value(m, "x_latency_seconds_count") == 5
    assert math.isclose(value(m, "x_latency_seconds_sum"), 3.565)
    assert "# TYPE x_rejected_total counter" in text and "# TYPE x_nothing_yet_total counter" in text
    # the process's own metrics, from this registry (not the global one)
    assert value(m, "process_resident_memory_bytes") > 0 and value(m, "process_open_fds") > 0
    assert any(name == "python_info" for name, _ in m)

    om_body, om_type = exposition(registry, "application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert om_type.startswith("application/openmetrics-text; version=1.0.0")
    om = parse(om_body.decode(), openmetrics=True)
    assert om_body.endswith(b"# EOF\n")
    assert value(om, "x_rejected_total", reason="bad_json") == 3
    assert value(om, "x_latency_seconds_bucket", le="0.1") == 3
    # a scraper preferring the text format, or one that asks for nothing known, gets the text format
    assert exposition(registry, "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")[1] == TEXT_CONTENT_TYPE


def test_families_refuse_bad_names() -> None:
    with pytest.raises(ValueError, match="_total"):
        counter("x", "h", 1)
    with pytest.raises(ValueError, match="bad metric name"):
        gauge("x-y", "h", 1)
    with pytest.raises(ValueError, match="bad label name"):
        gauge("x", "h", {labels(**{"le-x": "1"}): 1})
    with pytest.raises(ValueError, match="different label names"):
        gauge("x", "h", {labels(a="1"): 1, labels(b="1"): 2})
    # two families of one name is a bug in a part: the scrape fails (the gateway answers 500)
    registry = scrape_registry(lambda: [gauge("x", "h", 1), gauge("x", "h", 2)])
    with pytest.raises(ValueError, match="built twice"):
        exposition(registry, None)


# ---------------------------------------------------------------- real run


async def test_both_endpoints_count_a_real_run(mosquitto: BrokerURL, tmp_path: Path) -> None:
    site = f"metrics-{uuid.uuid4().hex[:8]}"
    topic = reading_topic(site, "clip-01", "posture")
    G = "nurserywatch_gateway_"
    D = "nurserywatch_dashboard_"
    clock = ManualClock(T0)
    async with (
        gateway_with_metrics(make_kit(site), mosquitto, tmp_path / "gw.sqlite3", clock) as (stats, gw_url),
        running_dashboard(make_kit(site), mosquitto, command_key=signer_on(clock)) as dash,
        client(mosquitto) as pub,
        httpx.AsyncClient(timeout=5) as http,
    ):
        before = await scrape(http, gw_url)
        assert value(before, G + "readings_received_total", stream="posture") == 0
        assert value(before, G + "mqtt_outgoing_queue") == 0

        # 3 bad payloads, then 31 prone readings 1 s apart (message time): the last raises the alert
        for bad in (b"{not json", b"[]", b"{"):
            await pub.publish(topic, bad, qos=1)
        for i in range(31):
            await pub.publish(topic, posture(i + 1, T0 + i * 1000, Position.PRONE), qos=1)
        await wait_until(lambda: stats.alerts_published >= 1, "the prone alert published")

        # the dashboard shows it live: a staff client's SSE stream gets the alert event
        events = 0
        alert_id = None
        async with dash.http.stream("GET", "/api/events") as sse:
            async for line in sse.aiter_lines():
                if line.startswith("event: "):
                    events += 1
                if line.startswith("data: ") and '"rule": "prone"' in line.replace('":"', '": "'):
                    found = json.loads(line[6:])
                    alerts = found.get("alerts", [found])  # in the snapshot or as its own event
                    alert_id = next(a["id"] for a in alerts if a.get("rule") == "prone")
                    break
        assert alert_id is not None and events >= 1
        assert (await dash.http.post(f"/api/alerts/{alert_id}/ack")).status_code == 202
        assert (await dash.http.post("/api/alerts/prone-nope/ack")).status_code == 404
        await wait_until(lambda: stats.alerts_published >= 2, "the acknowledged alert published")

        gw = await scrape(http, gw_url)
        assert value(gw, G + "readings_received_total", stream="posture") == 34
        assert value(gw, G + "readings_stored_total") == 31
        assert value(gw, G + "rejected_total", reason="bad_json") == 3
        assert value(gw, G + "alert_transitions_total", rule="prone", change="raised") == 1
        assert value(gw, G + "alert_transitions_total", rule="prone", change="acknowledged") == 1
        assert value(gw, G + "alerts_open", rule="prone", state="active") == 1
        assert value(gw, G + "alerts_open", rule="prone", state="acknowledged") == 1
        assert value(gw, G + "alerts_published_total") == 2  # raised, acknowledged
        assert value(gw, G + "judge_seconds_count") == 31  # every stored reading was judged
        assert value(gw, G + "alert_publish_seconds_count") == 2
        assert 0 < value(gw, G + "alert_publish_seconds_sum") < 2
        assert value(gw, G + "judge_seconds_bucket", le="+Inf") == 31
        assert value(gw, G + "mqtt_sessions_total") == 1

        d = await scrape(http, f"{dash.base}/metrics")  # loopback, no session: answered
        assert value(d, D + "mqtt_connected") == 1
        assert value(d, D + "rejected_total", reason="bad_json") == 3  # it reads reading/+/posture too
        assert value(d, D + "ack_requests_total", status="202") == 1
        assert value(d, D + "ack_requests_total", status="404") == 1
        # the stream is closed: sent ≥ what the client read (a tick may have been in flight)
        assert events <= value(d, D + "sse_events_sent_total") <= events + 3
        assert value(d, D + "live_clients") == 0
        assert value(d, D + "alerts_shown", state="active") == 1

        # the process's own metrics on both, and OpenMetrics when asked for (the same counters)
        assert value(gw, "process_resident_memory_bytes") > 0 and value(d, "process_open_fds") > 0
        gw_om = await scrape(http, gw_url, openmetrics=True)
        assert value(gw_om, G + "readings_received_total", stream="posture") == 34
        assert value(gw_om, G + "alert_publish_seconds_count") == 2
        d_om = await scrape(http, f"{dash.base}/metrics", openmetrics=True)
        assert value(d_om, D + "ack_requests_total", status="202") == 1

        # only GET /metrics on the gateway
        assert (await http.get(gw_url.replace("/metrics", "/"))).status_code == 404
        assert (await http.post(gw_url)).status_code == 405
    assert stats.rejected["internal_error"] == 0


async def test_dashboard_metrics_scrapers(mosquitto: BrokerURL) -> None:
    """Without a token: loopback only (a LAN address gets 403). With one: 401 without it, from anywhere."""
    kit = make_kit(f"metrics-{uuid.uuid4().hex[:8]}")
    open_app = create_app(kit, BrokerURL("127.0.0.1", free_port()), auth_policy=FAST)
    token = "s3cret-token-for-prometheus"
    locked_app = create_app(kit, BrokerURL("127.0.0.1", free_port()), auth_policy=FAST, metrics_token=token)

    async def get(app: object, peer: str, headers: dict[str, str] | None = None) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as http:
            return await http.get("/metrics", headers=headers)

    assert (await get(open_app, "127.0.0.1")).status_code == 200
    assert (await get(open_app, "::1")).status_code == 200
    r = await get(open_app, "192.168.1.20")
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    assert "nurserywatch" not in r.text
    for peer in ("127.0.0.1", "192.168.1.20"):
        r = await get(locked_app, peer)
        assert (r.status_code, r.json()["error"]) == (401, "metrics_token_required")
        assert (await get(locked_app, peer, {"Authorization": "Bearer wrong"})).status_code == 401
        ok = await get(locked_app, peer, {"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and value(parse(ok.text), "nurserywatch_dashboard_live_clients") == 0
    # a session does not open it either: it is not a staff page
    assert Role.STAFF  # (the route table test lists /metrics as public: tests/test_dashboard_auth.py)
