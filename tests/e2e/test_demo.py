"""`nurserywatch demo` as a newcomer runs it: embedded broker, simulator, edge, gateway and dashboard
in one command; it starts a nap session by itself; a prone alert appears within the first minute, a
click in a real browser acknowledges it, and Ctrl-C (SIGINT) stops everything without leaving a
process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from nurserywatch.ports import free_port, wait_for_port
from tests.support.browser import chromium_page
from tests.support.dashboard_login import browser_login_sync, login_sync
from tests.support.processes import spawn

pytestmark = pytest.mark.e2e


def test_demo_shows_a_prone_alert_that_a_click_acknowledges(tmp_path: Path) -> None:
    port = free_port()
    started = time.time()
    proc, log = spawn("demo", ["demo", "--port", str(port), "--data-dir", str(tmp_path)], tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, timeout_s=30)
        printed = log.read_text()
        assert f"{base}/" in printed, "the demo must print the dashboard URL"
        # ... and a staff account to sign in with (fresh password each start).
        account = re.search(r"sign in \(staff\): (\S+) / (\S+)", printed)
        assert account, "the demo must print a staff account"
        assert re.search(r"sign in \(admin\): admin / \S+", printed)
        username, password = account.groups()
        api = httpx.Client(base_url=base)
        assert api.get("/api/alerts").status_code == 401  # nothing without signing in
        assert login_sync(api, username, password)["role"] == "staff"

        alert = None
        while alert is None:
            assert time.time() - started < 60, "no prone alert within the first minute"
            active = api.get("/api/alerts", params={"state": "active"}).json()
            alert = next((a for a in active if a["rule"] == "prone"), None)
            time.sleep(0.5)

        # The demo starts a nap session itself (so records and the nap-time rules run from the first look).
        room = api.get("/api/rooms").json()[0]
        assert room["session"] is not None and room["session"]["active"], room["session"]
        assert room["session"]["started_by"] == "demo"
        assert re.search(r"nap session .*開始しました / started \(by demo\).*records every 5 min", log.read_text())

        with chromium_page() as page:
            browser_login_sync(page, base, username, password)
            row = page.locator(f'[data-alert-id="{alert["id"]}"]')
            row.wait_for(state="visible", timeout=5000)
            row.locator("button.ack").click()
            deadline = time.time() + 5
            while not {a["id"]: a for a in api.get("/api/alerts").json()}[alert["id"]]["acknowledged"]:
                assert time.time() < deadline, "the click did not acknowledge the alert"
                time.sleep(0.1)
            # Still prone: the alert stays active (acknowledged) until the child is turned.
            row.filter(has_text="確認済み").wait_for(timeout=5000)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the demo did not stop within 15 s of Ctrl-C")
        print(log.read_text()[-3000:])
    assert rc == 0
    with pytest.raises(ProcessLookupError):  # nothing of the demo's process group is left
        os.killpg(proc.pid, 0)
