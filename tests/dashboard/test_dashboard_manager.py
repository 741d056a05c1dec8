"""Manager and integrator pages and their API, in process (httpx over ASGI, no server, no broker):
trends equal to numpy over the same readings, threshold bands from the rules file, 400/503 answers,
alert history filters and pages, time beyond thresholds (hand-computed), devices, agents, kit check.

The signed-in user is supplied by overriding the role dependencies: logging in is AUTH's to test;
here the roles each route demands are asserted with ``required_role``."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from dashboard.air_summary import time_covered, time_in_violation
from dashboard.app import create_app
from dashboard.auth.deps import required_role
from dashboard.auth.models import Role
from dashboard.deps import get_link_of
from dashboard.pages import NAV
from dashboard.routes import integrator as integrator_pages
from dashboard.routes import manager as manager_pages
from gateway.alert_changes import Change, Transition
from gateway.config import RulesConfig, Threshold
from gateway.db.store import Store
from gateway.trends.queries import RANGES, window
from nurserywatch.clock import ManualClock
from nurserywatch.contract import (
    Alert,
    DeviceStatus,
    EdgeStatus,
    Position,
    PostureReading,
    Severity,
    Stream,
    edge_topic,
    status_topic,
)
from nurserywatch.kit import Kit
from nurserywatch.mqtt import BrokerURL
from tests.support.manager_data import (
    FAST_AUTH,
    JST_MIDNIGHT,
    KIT_YAML,
    NOW,
    RULES,
    alert,
    as_user,
    co2_readings,
    load_test_kit,
    numpy_buckets,
    store_co2,
)


@dataclass
class Env:
    app: FastAPI
    http: httpx.AsyncClient
    kit: Kit
    kit_path: Path
    db: Path
    clock: ManualClock
    #: (device, ts, co2) of every stored CO2 reading
    co2: list[tuple[str, int, float]]


@pytest.fixture(scope="module")
def co2_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, int, float]]]:
    """The readings database, written once (8 000 readings take ~1 s); each test gets a copy."""
    db = tmp_path_factory.mktemp("co2") / "gateway.sqlite3"
    readings = co2_readings()
    store_co2(db, readings)  # closed: everything is in the main file, no WAL left to copy
    return db, readings


@pytest.fixture
async def env(tmp_path: Path, co2_db: tuple[Path, list[tuple[str, int, float]]]) -> AsyncIterator[Env]:
    kit, kit_path = load_test_kit(tmp_path)
    db = tmp_path / "gateway.sqlite3"
    shutil.copy(co2_db[0], db)
    readings = co2_db[1]
    clock = ManualClock(NOW)
    app = create_app(kit, BrokerURL.parse("mqtt://127.0.0.1:1"), clock=clock, gateway_db=db, rules=RULES,
                     kit_path=kit_path, auth_policy=FAST_AUTH)  # fmt: skip
    as_user(app, Role.ADMIN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as http:
        yield Env(app, http, kit, kit_path, db, clock, readings)


# ---------------------------------------------------------------- trends


@pytest.mark.parametrize("range_", list(RANGES))
async def test_trends_equal_numpy_on_sqlite(env: Env, range_: str) -> None:
    r = await env.http.get("/api/trends", params={"room": "hiyoko", "metric": "co2", "range": range_})
    assert r.status_code == 200, r.text
    body = r.json()
    w = window("co2", range_, NOW)
    assert (body["start_ms"], body["end_ms"], body["bucket_ms"]) == (w.start_ms, w.end_ms, w.bucket_ms)
    assert (body["unit"], body["source"], body["room"], body["metric"]) == ("ppm", "sqlite", "hiyoko", "co2")
    expected = numpy_buckets(env.co2, {"co2-01", "co2-02"}, w.start_ms, w.end_ms, w.bucket_ms)
    got = [(b["start"], b["mean"], b["min"], b["max"]) for b in body["buckets"]]
    assert len(got) == len(expected) > 10  # risu's co2-03 is not in it (else means would differ)
    for g, e in zip(got, expected, strict=True):
        assert g[0] == e[0]
        assert g[1:] == pytest.approx(e[1:], rel=1e-9)


async def test_trend_thresholds_come_from_the_rules_per_room(env: Env) -> None:
    def values(body: dict[str, Any]) -> list[tuple[str, str, float, bool]]:
        return [(t["level"], t["direction"], t["value"], t["inclusive"]) for t in body["thresholds"]]

    hiyoko = (await env.http.get("/api/trends", params={"room": "hiyoko", "metric": "co2"})).json()
    risu = (await env.http.get("/api/trends", params={"room": "risu", "metric": "co2"})).json()
    assert values(hiyoko) == [("warning", "above", 800, True), ("critical", "above", 1200, True)]
    assert values(risu) == [("warning", "above", 1000, True), ("critical", "above", 1500, True)]
    temp = (await env.http.get("/api/trends", params={"room": "risu", "metric": "temperature"})).json()
    assert values(temp) == [("warning", "below", 18, False), ("warning", "above", 28, False)]
    assert temp["buckets"] == [] and temp["unit"] == "°C"
    pm = (await env.http.get("/api/trends", params={"room": "hiyoko", "metric": "pm25", "range": "7d"})).json()
    assert values(pm) == [("warning", "above", 35, False), ("critical", "above", 70, False)]
    hum = (await env.http.get("/api/trends", params={"room": "hiyoko", "metric": "humidity"})).json()
    assert [t["level"] for t in hum["thresholds"]] == ["info", "info"]


@pytest.mark.parametrize(
    ("params", "code", "fragment"),
    [
        ({"room": "kirin", "metric": "co2"}, "bad_room", "'kirin' is not a room of this kit (one of hiyoko, risu)"),
        ({"metric": "co2"}, "bad_room", "room: required"),
        ({"room": "hiyoko", "metric": "noise"}, "bad_metric", "'noise' is not one of co2, pm25"),
        ({"room": "hiyoko"}, "bad_metric", "None is not one of"),
        ({"room": "hiyoko", "metric": "co2", "range": "1y"}, "bad_range", "'1y' is not one of 24h, 7d, 30d"),
    ],
)
async def test_trends_bad_parameters_are_400(env: Env, params: dict[str, str], code: str, fragment: str) -> None:
    r = await env.http.get("/api/trends", params=params)
    assert r.status_code == 400
    assert r.json()["error"] == code
    assert fragment in r.json()["message"]


async def test_trends_503_when_the_database_is_unreachable(env: Env, tmp_path: Path) -> None:
    env.app.state.gateway_db = tmp_path / "missing" / "gateway.sqlite3"
    r = await env.http.get("/api/trends", params={"room": "hiyoko", "metric": "co2"})
    assert r.status_code == 503
    assert r.json()["error"] == "database_unavailable"
    assert "the gateway's SQLite" in r.json()["message"]
    env.app.state.gateway_db = None
    r = await env.http.get("/api/trends", params={"room": "hiyoko", "metric": "co2"})
    assert (r.status_code, r.json()["error"]) == (503, "no_gateway_db")


async def test_trends_503_when_influxdb_is_unreachable(tmp_path: Path) -> None:
    from nurserywatch.ports import free_port

    kit, _ = load_test_kit(tmp_path)
    kit = kit.model_copy(update={"storage": kit.storage.model_copy(
        update={"readings": "influxdb", "url": f"http://127.0.0.1:{free_port()}"})})  # fmt: skip
    app = create_app(kit, BrokerURL.parse("mqtt://127.0.0.1:1"), clock=ManualClock(NOW),
                     auth_policy=FAST_AUTH)  # no SQLite needed  # fmt: skip
    as_user(app, Role.MANAGER)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as http:
        r = await http.get("/api/trends", params={"room": "hiyoko", "metric": "co2"})
    assert r.status_code == 503
    assert r.json()["error"] == "database_unavailable"
    assert r.json()["message"].startswith("cannot read trends from InfluxDB")


async def test_trends_page_ja_en(env: Env) -> None:
    r = await env.http.get("/trends", params={"room": "risu", "range": "7d"})
    assert r.status_code == 200
    assert "室内環境の推移" in r.text and 'data-metric="co2"' in r.text and "/static/trends.js" in r.text
    boot = json.loads(r.text.split('<script id="boot" type="application/json">')[1].split("</script>")[0])
    assert (boot["room"], boot["range"], boot["timezone"]) == ("risu", "7d", "Asia/Tokyo")
    assert [m["id"] for m in boot["metrics"]] == ["co2", "pm25", "temperature", "humidity"]
    en = await env.http.get("/trends", params={"lang": "en"})
    assert "Air-quality trends" in en.text and boot["t"]["trends.empty"] == "この期間のデータはありません"


# ---------------------------------------------------------------- time beyond thresholds (pure)

CO2_WARN = Threshold("co2", Severity.WARNING, "above", 1000, True, 100, "co2.warning_ppm")
CO2_CRIT = Threshold("co2", Severity.CRITICAL, "above", 1500, True, 100, "co2.critical_ppm")
S = 1000
HAND = [("a", 0, 900.0), ("a", 60 * S, 1100.0), ("a", 120 * S, 1600.0), ("a", 400 * S, 1000.0),
        ("b", 30 * S, 1200.0), ("b", 90 * S, 500.0)]  # fmt: skip


def test_time_above_hand_computed() -> None:
    # Each reading holds until its device's next one, at most 180 s; a moment counts once.
    # a ≥ 1000: [60,120) [120,300) [400,580);  b: [30,90)  → union [30,300) + [400,580) = 270 + 180 s
    assert time_in_violation(HAND, CO2_WARN, 0, 600 * S, 180 * S) == 450 * S
    assert time_in_violation(HAND, CO2_CRIT, 0, 600 * S, 180 * S) == 180 * S  # a: [120,300)
    # Known at all: a [0,300) [400,580), b [30,270) → 300 + 180 s (the 300–400 s gap is unknown)
    assert time_covered(HAND, 0, 600 * S, 180 * S) == 480 * S
    # A window starting at 100 s: a's reading at 60 s still counts for [100,120); b's 1200 is over by 90 s.
    assert time_in_violation(HAND, CO2_WARN, 100 * S, 600 * S, 180 * S) == (20 + 180 + 180) * S
    # Shorter hold: a's 1600 at 120 s stands only 60 s.
    assert time_in_violation(HAND, CO2_CRIT, 0, 600 * S, 60 * S) == 60 * S
    assert time_in_violation([], CO2_WARN, 0, 600 * S, 180 * S) == 0


def test_threshold_comparisons_follow_the_rules() -> None:
    rules = RulesConfig().resolve(None, None)
    pm_warn, _ = rules.thresholds("pm25")
    assert not pm_warn.violated_by(35.0) and pm_warn.violated_by(35.1)  # PM2.5: above, not at
    assert CO2_WARN.violated_by(1000.0)  # CO2: at or above
    low, high = rules.thresholds("temperature")
    assert low.violated_by(17.9) and not low.violated_by(18.0) and high.violated_by(28.1) and not high.violated_by(28)
    assert rules.thresholds("breathing_rate") == [] and rules.thresholds("pm10") == []


async def test_air_summary_api(env: Env) -> None:
    r = await env.http.get("/api/air-summary", params={"range": "24h"})
    assert r.status_code == 200, r.text
    body = r.json()
    hiyoko = next(x for x in body["rooms"] if x["room"] == "hiyoko")
    co2 = next(m for m in hiyoko["metrics"] if m["metric"] == "co2")
    w = window("co2", "24h", NOW)
    hold = round(RULES.freshness.air_s * 1000)
    samples = [x for x in env.co2 if x[0] in ("co2-01", "co2-02") and w.start_ms - hold <= x[1] < w.end_ms]
    warn = Threshold("co2", Severity.WARNING, "above", 800, True, 100, "co2.warning_ppm")
    assert [t["value"] for t in co2["thresholds"]] == [800, 1200]
    assert co2["thresholds"][0]["ms"] == time_in_violation(samples, warn, w.start_ms, w.end_ms, hold) > 0
    assert co2["covered_ms"] == w.end_ms - w.start_ms  # readings every 97 s, held 180 s: all of it
    pm = next(m for m in hiyoko["metrics"] if m["metric"] == "pm25")
    assert pm["covered_ms"] == 0 and all(t["ms"] == 0 for t in pm["thresholds"])
    bad = await env.http.get("/api/air-summary", params={"range": "2d"})
    assert (bad.status_code, bad.json()["error"]) == (400, "bad_range")


# ---------------------------------------------------------------- alert history


@pytest.fixture
def alerts(env: Env) -> list[Alert]:
    made = []
    for i in range(12):  # one every 4 h from day 0, 00:00 JST
        made.append(alert(f"p{i:02d}", JST_MIDNIGHT + i * 4 * 3600_000, acknowledged=i % 3 == 0,
                          acknowledged_by="田中" if i % 3 == 0 else None,
                          room="hiyoko" if i % 2 == 0 else "risu",
                          severity=Severity.CRITICAL if i < 6 else Severity.WARNING,
                          rule="prone" if i < 8 else "co2"))  # fmt: skip
    with Store(env.db) as store:
        store.record([Transition(Change.RAISED, a, a.started_ts) for a in made])
    return made


async def history_ids(env: Env, **params: str) -> tuple[int, list[str]]:
    r = await env.http.get("/api/alerts/history", params=params)
    assert r.status_code == 200, r.text
    return r.json()["total"], [a["id"] for a in r.json()["items"]]


async def test_history_filters(env: Env, alerts: list[Alert]) -> None:
    assert await history_ids(env) == (12, [f"p{i:02d}" for i in reversed(range(12))])  # newest first
    assert await history_ids(env, room="risu") == (6, ["p11", "p09", "p07", "p05", "p03", "p01"])
    assert await history_ids(env, rule="co2") == (4, ["p11", "p10", "p09", "p08"])
    assert await history_ids(env, severity="warning", room="hiyoko") == (3, ["p10", "p08", "p06"])
    assert await history_ids(env, acknowledged="true") == (4, ["p09", "p06", "p03", "p00"])
    assert (await history_ids(env, acknowledged="false"))[0] == 8
    # Site days (Asia/Tokyo): day 0 holds p00–p05 (00:00–20:00 JST), "to" is inclusive.
    assert await history_ids(env, **{"from": "2026-01-01", "to": "2026-01-01"}) == (
        6, ["p05", "p04", "p03", "p02", "p01", "p00"])  # fmt: skip
    assert (await history_ids(env, **{"from": "2026-01-02"}))[0] == 6
    assert await history_ids(env, room="", rule="", severity="", acknowledged="") == await history_ids(env)


async def test_history_pages(env: Env, alerts: list[Alert]) -> None:
    r = await env.http.get("/api/alerts/history", params={"per_page": "5", "page": "3"})
    body = r.json()
    assert (body["total"], body["page"], body["per_page"], body["pages"]) == (12, 3, 5, 3)
    assert [a["id"] for a in body["items"]] == ["p01", "p00"]
    beyond = (await env.http.get("/api/alerts/history", params={"per_page": "5", "page": "4"})).json()
    assert beyond["items"] == [] and beyond["total"] == 12


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"severity": "urgent"}, "severity: 'urgent' is not one of critical, warning, info"),
        ({"acknowledged": "yes"}, "acknowledged: 'yes' is not true or false"),
        ({"from": "2026-13-01"}, "from: '2026-13-01' is not a date like 2026-01-31"),
        ({"from": "2026-01-05", "to": "2026-01-01"}, "to: 2026-01-01 is before from: 2026-01-05"),
        ({"per_page": "500"}, "per_page: '500' is not a whole number from 1 to 200"),
        ({"page": "0"}, "page: '0' is not a whole number"),
        ({"page": "x"}, "page: 'x' is not a whole number"),
        ({"room": "kirin"}, "room: 'kirin' is not a room of this kit"),
    ],
)
async def test_history_bad_filters_are_400(env: Env, params: dict[str, str], fragment: str) -> None:
    r = await env.http.get("/api/alerts/history", params=params)
    assert r.status_code == 400
    assert fragment in r.json()["message"]


async def test_history_page_renders_filters_table_and_summary(env: Env, alerts: list[Alert]) -> None:
    r = await env.http.get("/history", params={"room": "hiyoko", "per_page": "2", "summary_range": "7d"})
    assert r.status_code == 200, r.text
    assert "6件（1/3ページ）" in r.text
    assert r.text.count('data-alert-id="') == 2 and 'data-alert-id="p10"' in r.text
    assert 'rel="next"' in r.text and "page=2" in r.text and 'rel="prev"' not in r.text
    assert '<option value="hiyoko" selected>' in r.text
    assert "しきい値を超えた時間" in r.text and 'data-key="co2.warning_ppm"' in r.text
    assert "800 ppm 以上" in r.text and "35 µg/m³ 超" in r.text
    en = await env.http.get("/history", params={"lang": "en", "room": "risu", "rule": "nothing"})
    assert "No alerts match" in en.text and "Time beyond thresholds" in en.text


# ---------------------------------------------------------------- integrator pages


async def test_devices_and_agents(env: Env) -> None:
    state = get_link_of(env.app).state
    site = env.kit.site
    state.apply(status_topic(site, "co2-01"), DeviceStatus(ts=NOW - 5000, online=True, battery_pct=80,
                                                           rssi_dbm=-67).to_json())  # fmt: skip
    state.apply(status_topic(site, "clip-01"), DeviceStatus(ts=NOW - 9000, online=False).to_json())
    state.apply(edge_topic(site, "pi-1"), EdgeStatus(ts=NOW - 1000, online=True, version="0.1.0",
                                                     devices=["clip-01", "co2-01"], clock_ok=False
                                                     ).to_json())  # fmt: skip
    with Store(env.db) as store:
        clip = PostureReading(ts=NOW - 2000, seq=1, position=Position.SUPINE)
        store.add_reading("clip-01", Stream.POSTURE, clip, NOW)
    body = (await env.http.get("/api/devices")).json()
    dev = {d["id"]: d for d in body["devices"]}
    assert dev["co2-01"]["online"] is True and dev["co2-01"]["battery_pct"] == 80 and dev["co2-01"]["rssi_dbm"] == -67
    assert dev["co2-01"]["last_reading_ts"] == max(t for d, t, _ in env.co2 if d == "co2-01")
    assert dev["clip-01"]["online"] is False and dev["clip-01"]["last_seen_ts"] == NOW - 2000  # reading newer
    assert dev["pm-01"]["online"] is None and dev["pm-01"]["last_seen_ts"] is None
    agents = {a["id"]: a for a in body["agents"]}
    assert agents["pi-1"]["clock_ok"] is False and agents["pi-1"]["kit_devices"] == ["clip-01", "co2-01", "co2-02",
                                                                                       "pm-01"]  # fmt: skip
    assert agents["pi-2"]["online"] is None
    assert body["readings_error"] is None

    page = await env.http.get("/devices")
    assert page.status_code == 200
    assert '<tr data-device-id="clip-01" data-online="false">' in page.text and "-67 dBm" in page.text
    assert "未同期（測定を保留中）" in page.text and '<tr data-agent-id="pi-2" data-online="unknown">' in page.text


async def test_kit_check(env: Env) -> None:
    ok = (await env.http.get("/api/kit/check")).json()
    assert ok == {"file": str(env.kit_path), "ok": True, "problems": [], "changed": False}
    assert "問題はありません" in (await env.http.get("/kit")).text

    env.kit_path.write_text(KIT_YAML.replace("room: risu, agent: pi-2", "room: kirin, agent: pi-2"))
    bad = (await env.http.get("/api/kit/check")).json()
    assert bad["ok"] is False and bad["changed"] is True
    assert bad["problems"] == [f"{env.kit_path}: device \"co2-03\" (line 14): room: 'kirin' is not a room id defined "
                               "in this kit (known: hiyoko, risu)"]  # fmt: skip
    page = (await env.http.get("/kit", params={"lang": "en"})).text
    assert "Problems found" in page and "&#39;kirin&#39; is not a room id" in page and "has changed" in page

    # The rules file configures hiyoko: a kit without it is a problem the gateway would refuse too.
    env.kit_path.write_text(KIT_YAML.replace("{id: hiyoko, name: ひよこ組}", "{id: usagi, name: うさぎ組}")
                            .replace("room: hiyoko", "room: usagi"))  # fmt: skip
    rules_bad = (await env.http.get("/api/kit/check")).json()
    assert rules_bad["ok"] is False and "rooms.hiyoko: not a room of kit 'mgr'" in rules_bad["problems"][0]


def test_routes_demand_their_roles() -> None:
    routes = [*manager_pages.router.routes, *integrator_pages.router.routes]
    roles = {r.path: required_role(r) for r in routes if isinstance(r, APIRoute)}
    assert len(roles) == 9
    for path in ("/api/trends", "/trends", "/api/air-summary", "/api/alerts/history", "/history"):
        assert roles[path] is Role.MANAGER, path
    for path in ("/api/devices", "/devices", "/api/kit/check", "/kit"):
        assert roles[path] is Role.ADMIN, path
    nav = {item.href: item.role for item in NAV}
    assert (nav["/trends"], nav["/history"], nav["/devices"], nav["/kit"]) == (Role.MANAGER,) * 2 + (Role.ADMIN,) * 2
