"""The fleet board in a real headless Chromium, in Japanese and in English, served by the fleet app
from a real nats-server's ``fleet_state`` bucket: an operator (granted every site) signs in with the
form, sees the site with an open critical alert first and the site whose link is down with since when,
for how long and what is pending; a state changed in the bucket shows on the open page without a
reload, within the page's refresh period (1 s here, 5 s by default). Screenshots go to
test-artifacts/fleet-{board,site,air}-{ja,en}.png. ~3 s each."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from dashboard.auth.deps import open_store
from dashboard.auth.models import ALL_SITES
from tests.support.browser import ARTIFACTS, PageWatch
from tests.support.dashboard_login import FAST, PASSWORD
from tests.support.fleet_board import (
    NOW,
    OPERATOR,
    SITE_A,
    SITE_B,
    SITE_C,
    prone_alert,
    put_state,
    running_board,
    site_a,
    site_b,
    site_c,
    state_bucket,
)
from tests.support.nats_cluster import NatsCluster

TEXTS = {
    "ja": {
        "critical": "緊急",
        "down": "切断中",
        "for": "5分",
        "pending": "未転送 42 件",
        "title": "園の一覧（フリート）",
    },
    "en": {"critical": "Critical", "down": "Down", "for": "5 min", "pending": "42 pending", "title": "Fleet board"},
}


@pytest.mark.parametrize("lang", ["ja", "en"])
async def test_fleet_board_in_chromium(browser: Browser, nats_node: NatsCluster, lang: str) -> None:
    texts = TEXTS[lang]
    nc, kv = await state_bucket(nats_node.nats_urls)
    try:
        for state in (site_a(), site_b(), site_c()):
            await put_state(kv, state)
        async with running_board(nats_node.nats_urls, refresh_s=1) as board:
            store = open_store(board.data_dir, FAST)
            try:
                store.set_sites(OPERATOR, [ALL_SITES], NOW)
            finally:
                store.close()
            page = await browser.new_page(locale="ja-JP", timezone_id="Asia/Tokyo",
                                          viewport={"width": 1400, "height": 700})  # fmt: skip
            watch = PageWatch(page)
            await page.goto(f"{board.base}/fleet?lang={lang}")
            await page.wait_for_url("**/login?next=*")
            await page.fill("#username", OPERATOR)
            await page.fill("#password", PASSWORD)
            await page.click('[data-testid="login-submit"]')
            await page.wait_for_url("**/fleet?lang=*")

            table = page.locator("#fleet-board")
            await expect(table).to_have_attribute("data-state", "ready")
            await expect(page.locator("h1")).to_contain_text(texts["title"])
            rows = table.locator("tbody tr")
            await expect(rows).to_have_count(3)
            first = rows.nth(0)
            await expect(first).to_have_attribute("data-site", SITE_A)  # the open critical alert first
            await expect(first).to_have_attribute("data-level", "critical")
            await expect(first.locator("td.status")).to_contain_text(texts["critical"])
            down = table.locator(f'tr[data-site="{SITE_B}"]')
            await expect(down).to_have_attribute("data-link-up", "false")
            link = down.locator("td.link")
            for text in (texts["down"], texts["for"], texts["pending"]):
                await expect(link).to_contain_text(text)
            await expect(down.locator("td.records")).to_have_attribute("data-status", "problem")
            await expect(page.locator('[data-testid="fleet-stale"]')).to_be_hidden()
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / f"fleet-board-{lang}.png"), full_page=True)

            # Live: site C gets a critical alert in the bucket; the open page shows it without a reload.
            await page.evaluate("window.__sameDocument = true")
            changed = site_c()
            changed.alerts = {"c-prone": prone_alert().model_copy(update={"id": "c-prone"})}
            await put_state(kv, changed)
            c_row = table.locator(f'tr[data-site="{SITE_C}"]')
            await expect(c_row).to_have_attribute("data-level", "critical", timeout=10_000)
            assert await page.evaluate("window.__sameDocument === true")  # the same page, not reloaded
            order = [await rows.nth(i).get_attribute("data-site") for i in range(3)]
            assert order == [SITE_A, SITE_C, SITE_B]  # A has a warning too; B's outage after both criticals

            # The drill-down of the critical site: the child by id, the alert in the page's language.
            await first.locator("td.site a").click()
            await page.wait_for_url(f"**/fleet/sites/{SITE_A}?lang={lang}")
            alert = page.locator('#site-alerts tr[data-alert-id="a-prone-1"]')
            await expect(alert.locator("td.child-id")).to_have_text("c001")
            await expect(alert).to_contain_text(
                "うつぶせ寝が30秒続いています" if lang == "ja" else "Face down for 30 s"
            )
            await page.screenshot(path=str(ARTIFACTS / f"fleet-site-{lang}.png"), full_page=True)
            await page.goto(f"{board.base}/fleet/air?month=2026-01&lang={lang}")
            await expect(page.locator(f'#fleet-air tr[data-site="{SITE_A}"] td[data-rule="co2"]')).to_have_attribute(
                "data-over-s", "7200.0"
            )
            await page.screenshot(path=str(ARTIFACTS / f"fleet-air-{lang}.png"), full_page=True)
            assert watch.errors == []
            assert all(u.startswith(board.base) for u in watch.requests), "a request left the board's host"
            await page.close()
    finally:
        await nc.close()
