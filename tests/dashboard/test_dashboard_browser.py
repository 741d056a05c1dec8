"""The staff room page in a real headless Chromium against a real Mosquitto: an alert published after
the page loaded appears live, the Acknowledge button sends an AckCommand over MQTT, the gateway's
acknowledged version shows who acknowledged, and an empty retained payload removes the row."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, expect

from dashboard.auth.models import Role
from nurserywatch.contract import AckCommand, ack_topic, reading_topic
from nurserywatch.mqtt import BrokerURL
from tests.support.browser import ARTIFACTS, PageWatch
from tests.support.clock import T0
from tests.support.dashboard_login import ACCOUNTS, PASSWORD
from tests.support.dashboard_server import Dash, ack_of, dashboard_kit, make_alert, next_message, running_dashboard


@pytest.fixture
async def dash(mosquitto: BrokerURL) -> AsyncIterator[Dash]:
    async with running_dashboard(dashboard_kit(f"dash-{uuid.uuid4().hex[:8]}"), mosquitto) as d:
        yield d


async def open_page(browser: Browser, dash: Dash, path: str = "/", role: Role = Role.STAFF) -> tuple[Page, PageWatch]:
    """Open ``path``: the dashboard sends the browser to its login page, the test signs in with the
    form as the account of ``role``, and lands back on ``path``."""
    page = await browser.new_page(locale="ja-JP", viewport={"width": 1280, "height": 800})
    watch = PageWatch(page)
    await page.goto(dash.base + path)
    await page.wait_for_url("**/login?next=*")
    username, _ = ACCOUNTS[role]
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click('[data-testid="login-submit"]')
    await page.wait_for_url(lambda url: "/login" not in url)
    # The live stream is open and its snapshot applied: from here on, changes arrive as events.
    await expect(page.locator("#live-status")).to_have_attribute("data-live", "ok")
    return page, watch


async def test_alert_lifecycle_live_in_the_browser(browser: Browser, dash: Dash) -> None:
    page, watch = await open_page(browser, dash)
    await expect(page.locator("#no-alerts")).to_be_visible()
    card = page.locator('[data-child-id="c001"]')
    await expect(card.locator(".posture-label")).to_have_text("データなし")

    # Posture, live.
    await dash.mqtt.publish(
        reading_topic(dash.site, "clip-01", "posture"), json.dumps({"ts": T0, "seq": 1, "position": "prone"}), qos=1
    )
    await expect(card).to_have_attribute("data-posture", "prone", timeout=1000)
    await expect(card.locator(".posture-label")).to_have_text("うつぶせ")

    # An alert published after the page loaded appears without a reload, within a second.
    await dash.publish_alert(make_alert("a1"))
    row = page.locator('[data-alert-id="a1"]')
    await expect(row).to_be_visible(timeout=1000)
    await expect(row.locator(".msg")).to_have_text("うつぶせ寝が30秒続いています")
    await expect(row).to_contain_text("はると (c001)")
    await expect(row).to_have_attribute("data-acknowledged", "false")
    await expect(page.locator("#alerts-section")).to_have_class("alerts has-active has-unacked")
    await expect(card).to_have_class("child alerting")
    await expect(page.locator("#no-alerts")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-alert-active.png"), full_page=True)

    # Acknowledge: the click becomes an AckCommand on command/ack, under the signed-in user's name (no name
    # field on the page since sign-in exists).
    await dash.mqtt.subscribe(ack_topic(dash.site), qos=1)
    await expect(page.locator("#staff-name")).to_have_count(0)
    button = row.locator("button.ack")
    await expect(button).to_have_text("確認")
    await button.click()
    message = await next_message(dash.mqtt)
    assert ack_of(message) == AckCommand(alert_id="a1", by="田中")
    # Until the gateway answers, the row stays unacknowledged and the button shows it is waiting.
    await expect(button).to_be_disabled()
    await expect(row).to_have_attribute("data-acknowledged", "false")

    # The gateway's acknowledged version comes back on alert/a1.
    acked = make_alert("a1", acknowledged=True, acknowledged_by="田中", acknowledged_ts=T0 + 5000, updated_ts=T0 + 5000)
    await dash.publish_alert(acked)
    await expect(row).to_have_attribute("data-acknowledged", "true", timeout=1000)
    await expect(row.locator(".status")).to_contain_text("確認済み: 田中")
    await expect(row.locator("button.ack")).to_have_count(0)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-acknowledged.png"), full_page=True)

    # Cleared retained message: the row leaves the page.
    await dash.clear_alert("a1")
    await expect(row).to_have_count(0, timeout=1000)
    await expect(page.locator("#no-alerts")).to_be_visible()
    await expect(card).to_have_class("child")

    assert [u for u in watch.requests if not u.startswith(dash.base)] == []  # everything vendored, no CDN
    assert watch.errors == []


async def test_english_page_and_resolved_unacknowledged_alert(browser: Browser, dash: Dash) -> None:
    page, watch = await open_page(browser, dash, "/?lang=en")
    await expect(page.locator("h1")).to_contain_text("Nap check")
    # Resolved but never acknowledged: staff must still see it, with its button.
    resolved = make_alert("a2", state="resolved", resolved_ts=T0 + 9000, updated_ts=T0 + 9000)
    await dash.publish_alert(resolved)
    row = page.locator('[data-alert-id="a2"]')
    await expect(row).to_be_visible(timeout=1000)
    await expect(row.locator(".msg")).to_have_text("Face down for 30 s")
    await expect(row.locator(".status")).to_have_text("Resolved, not yet acknowledged")
    await expect(row.locator("button.ack")).to_have_text("Acknowledge")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-en-resolved-unacked.png"), full_page=True)
    assert watch.errors == []
