"""``GET /api/trends`` from a real InfluxDB 1.6.7 (the kit's ``readings: influxdb``): the same readings
as the SQLite test, written with the v1 line protocol; every range equals numpy's aggregation and
the SQLite answer of the same dashboard. ~2 s (most of it starting influxd)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dashboard.app import create_app
from dashboard.auth.models import Role
from gateway.influx.line_protocol import reading_line
from gateway.influx.writer import create_database
from gateway.trends.queries import RANGES, window
from nurserywatch.clock import ManualClock
from nurserywatch.contract import AirReading, Stream
from nurserywatch.mqtt import BrokerURL
from tests.support.influx_servers import DB, Server
from tests.support.manager_data import (
    FAST_AUTH,
    NOW,
    RULES,
    as_user,
    co2_readings,
    load_test_kit,
    numpy_buckets,
    store_co2,
)

ROOMS = {"co2-01": "hiyoko", "co2-02": "hiyoko", "co2-03": "risu"}


async def test_trends_from_influxdb_equal_numpy_and_sqlite(influxdb: Server, tmp_path: Path) -> None:
    readings = co2_readings()
    await create_database(influxdb.url, DB)
    lines = [
        reading_line(
            site="mgr",
            room=ROOMS[d],
            device=d,
            child=None,
            stream=Stream.AIR,
            reading=AirReading(ts=ts, seq=i, co2_ppm=v),
        )
        for i, (d, ts, v) in enumerate(readings)
    ]
    async with httpx.AsyncClient(base_url=influxdb.url) as client:
        r = await client.post("/write", params={"db": DB, "precision": "ms"},
                              content="\n".join(line for line in lines if line).encode())  # fmt: skip
        assert r.status_code == 204, r.text
    db = tmp_path / "gateway.sqlite3"
    store_co2(db, readings)

    kit, kit_path = load_test_kit(tmp_path)
    influx_kit = kit.model_copy(update={"storage": kit.storage.model_copy(
        update={"readings": "influxdb", "url": influxdb.url, "database": DB})})  # fmt: skip
    broker = BrokerURL.parse("mqtt://127.0.0.1:1")
    apps = {
        "influxdb": create_app(influx_kit, broker, clock=ManualClock(NOW), rules=RULES, auth_policy=FAST_AUTH),
        "sqlite": create_app(kit, broker, clock=ManualClock(NOW), gateway_db=db, rules=RULES, auth_policy=FAST_AUTH),
    }
    answers: dict[str, dict[str, list[list[float]]]] = {"influxdb": {}, "sqlite": {}}
    for source, app in apps.items():
        as_user(app, Role.MANAGER)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as http:
            for range_ in RANGES:
                r = await http.get("/api/trends", params={"room": "hiyoko", "metric": "co2", "range": range_})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["source"] == source
                assert [t["value"] for t in body["thresholds"]] == [800, 1200]
                answers[source][range_] = [[b["start"], b["mean"], b["min"], b["max"]] for b in body["buckets"]]

    for range_ in RANGES:
        w = window("co2", range_, NOW)
        expected = numpy_buckets(readings, {"co2-01", "co2-02"}, w.start_ms, w.end_ms, w.bucket_ms)
        got = answers["influxdb"][range_]
        assert len(got) == len(expected) == len(answers["sqlite"][range_]) > 10, range_
        for g, e, s in zip(got, expected, answers["sqlite"][range_], strict=True):
            assert g[0] == e[0] == s[0]
            assert g[1:] == pytest.approx(list(e[1:]), rel=1e-9) == s[1:]

    # InfluxDB stopped: 503, not a traceback and not an empty chart.
    influxdb.stop()
    app = apps["influxdb"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as http:
        r = await http.get("/api/trends", params={"room": "hiyoko", "metric": "co2"})
    assert (r.status_code, r.json()["error"]) == (503, "database_unavailable")
