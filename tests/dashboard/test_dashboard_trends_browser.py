"""The trends page in a real headless Chromium, served over real HTTP by uvicorn: the CO2 chart draws
one mean point per bucket of /api/trends, the min–max band and the threshold bands; a metric without
data shows the empty state. Screenshots go to test-artifacts/. ~3 s."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, expect

from dashboard.app import create_app
from dashboard.auth.models import Role
from nurserywatch.clock import ManualClock
from nurserywatch.mqtt import BrokerURL
from tests.support.manager_data import FAST_AUTH, NOW, RULES, as_user, co2_readings, load_test_kit, store_co2

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.mark.parametrize("lang", ["ja", "en"])
async def test_trends_chart_renders_with_data(browser: Browser, tmp_path: Path, lang: str) -> None:
    kit, kit_path = load_test_kit(tmp_path)
    db = tmp_path / "gateway.sqlite3"
    store_co2(db, co2_readings()[::3])  # a third of them: enough for every bucket, quicker to write
    # No MQTT needed for this page (lifespan off); the role is given, not signed in (AUTH's tests sign in).
    app = create_app(kit, BrokerURL.parse("mqtt://127.0.0.1:1"), clock=ManualClock(NOW), gateway_db=db, rules=RULES,
                     kit_path=kit_path, auth_policy=FAST_AUTH)  # fmt: skip
    as_user(app, Role.MANAGER)
    async with serving(app) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            api = (await http.get("/api/trends", params={"room": "hiyoko", "metric": "co2", "range": "24h"})).json()
        page = await browser.new_page(locale="ja-JP", viewport={"width": 1400, "height": 1000})
        requests: list[str] = []
        errors: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{base}/trends?room=hiyoko&range=24h&lang={lang}")

        co2 = page.locator('.chart[data-metric="co2"]')
        await expect(co2).to_have_attribute("data-state", "ready", timeout=5000)
        mean = co2.locator("svg.trend path.mean")
        d = await mean.get_attribute("d") or ""
        points = re.findall(r"[ML]\s*(-?[\d.]+),(-?[\d.]+)", d)
        assert len(points) == len(api["buckets"]) == int(await mean.get_attribute("data-points") or 0) > 90
        xs = [float(x) for x, _ in points]
        assert xs == sorted(xs)  # time runs left to right
        assert await co2.locator("svg.trend path.minmax").count() == 1
        # Threshold bands (hiyoko's rules: warning from 800, critical from 1200), shaded and lined.
        warn = co2.locator('rect.band-warning[data-key="co2.warning_ppm"]')
        crit = co2.locator('rect.band-critical[data-key="co2.critical_ppm"]')
        await expect(warn).to_have_count(1)
        await expect(crit).to_have_count(1)
        warn_y, warn_h = float(await warn.get_attribute("y") or 0), float(await warn.get_attribute("height") or 0)
        crit_y, crit_h = float(await crit.get_attribute("y") or 0), float(await crit.get_attribute("height") or 0)
        assert warn_h > 0 and crit_h > 0 and crit_y + crit_h == pytest.approx(warn_y, abs=0.01)  # stacked bands
        assert await co2.locator("line.threshold").count() == 2

        # No PM2.5 sensor readings: the empty state, in the page's language.
        pm = page.locator('.chart[data-metric="pm25"]')
        await expect(pm).to_have_attribute("data-state", "empty")
        await expect(pm.locator(".empty")).to_have_text(
            "この期間のデータはありません" if lang == "ja" else "No data in this range"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"trends-{lang}.png"), full_page=True)
        assert errors == []
        assert all(u.startswith(base) for u in requests), [u for u in requests if not u.startswith(base)]
