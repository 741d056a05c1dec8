"""End to end on real parts: a real Mosquitto, the simulator on real pseudo-terminals, and the edge,
gateway and dashboard as separate `nurserywatch` processes; a live SSE client and a real headless
Chromium watch the dashboard. The child turns prone; the alert must reach the live client within
35 s of the first prone sample, be acknowledged by a click, and leave the list once the child is
turned back."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dashboard.auth.models import Role
from nurserywatch.cli.demo import redirect_serial_ports
from nurserywatch.kit import load_kit
from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port, wait_for_port
from tests.support.browser import chromium_page
from tests.support.commands import command_key_files
from tests.support.dashboard_login import ACCOUNTS, PASSWORD, add_accounts, browser_login_sync, login_sync
from tests.support.processes import ROOT, print_logs, spawn, stop

ARTIFACTS = ROOT / "test-artifacts"
PRONE_AT_S = 3.0  # configs/scenarios/prone_once.yaml
SUPINE_AT_S = 40.0

pytestmark = pytest.mark.e2e


@dataclass
class Stack:
    base_url: str
    sim_started: float
    logs: dict[str, Path]
    api: httpx.Client  # signed in as staff
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def stack(mosquitto: BrokerURL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    d = tmp_path_factory.mktemp("e2e")
    kit = redirect_serial_ports(load_kit(ROOT / "configs" / "kit.demo.yaml"), d / "ttys")
    (d / "ttys").mkdir()
    kit_file = d / "kit.yaml"
    kit_file.write_text(yaml.safe_dump(kit.model_dump(mode="json"), allow_unicode=True))
    broker = str(mosquitto)
    port = free_port()
    logs: dict[str, Path] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    common = ["--config", str(kit_file), "--log-level", "info"]
    add_accounts(d)  # one account per role in the dashboard's data folder
    signing, checking = command_key_files(d)  # the dashboard signs the acknowledgement, the gateway checks it
    try:
        for name, args in [
            ("gateway", ["gateway", *common, "--broker", broker, "--db", str(d / "gw.sqlite3"),
                         "--command-key", str(checking)]),
            ("dashboard", ["dashboard", *common, "--broker", broker, "--port", str(port), "--data-dir", str(d),
                           "--command-key", str(signing)]),
            ("edge", ["edge", *common, "--broker", broker]),
        ]:
            procs[name], logs[name] = spawn(name, args, d)
        wait_for_port(port, timeout_s=30)
        _wait_healthy(f"http://127.0.0.1:{port}")
        sim_started = time.time()
        procs["sim"], logs["sim"] = spawn(
            "sim", ["sim", *common, "--scenario", str(ROOT / "configs/scenarios/prone_once.yaml")], d
        )
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base) as api:
            login_sync(api, ACCOUNTS[Role.STAFF][0], PASSWORD)
            yield Stack(base, sim_started, logs, api, procs)
    finally:
        for proc in procs.values():
            stop(proc)
        print_logs(logs)
        for name, proc in procs.items():
            assert proc.returncode is not None, f"{name} did not stop"


def _wait_healthy(base: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base}/healthz did not report healthy within {timeout_s} s")


def _find_alerts(obj: Any) -> Iterator[dict[str, Any]]:
    """Every contract alert object inside an SSE event, however the event wraps it."""
    if isinstance(obj, dict):
        if "rule" in obj and "state" in obj and "id" in obj:
            yield obj
        for v in obj.values():
            yield from _find_alerts(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _find_alerts(v)


def _sse_listener(
    api: httpx.Client, url: str, out: queue.Queue[tuple[float, dict[str, Any]]], stop: threading.Event
) -> None:
    with api.stream("GET", url, timeout=httpx.Timeout(5, read=None)) as resp:
        for line in resp.iter_lines():
            if stop.is_set():
                return
            if line.startswith("data:"):
                try:
                    data = json.loads(line[5:])
                except json.JSONDecodeError:
                    continue
                for alert in _find_alerts(data):
                    out.put((time.time(), alert))


def test_prone_alert_end_to_end(stack: Stack) -> None:
    events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
    stop = threading.Event()
    threading.Thread(target=_sse_listener, args=(stack.api, "/api/events", events, stop), daemon=True).start()

    # 1. The alert reaches a live client within 35 s of the first prone sample. The sim process
    # starts before its timeline does, so measuring from its launch is conservative.
    first_prone = stack.sim_started + PRONE_AT_S
    alert: dict[str, Any] | None = None
    while alert is None:
        remaining = first_prone + 35 - time.time()
        assert remaining > 0, "no prone alert reached the live client within 35 s of the first prone sample"
        try:
            at, candidate = events.get(timeout=remaining)
        except queue.Empty:
            continue
        if candidate["rule"] == "prone" and candidate["state"] == "active":
            alert = candidate
    latency = at - first_prone
    print(f"prone alert reached the live client {latency:.1f} s after the first prone sample")
    assert 29.0 <= latency <= 35.0, "the prone rule fired too early: minimum duration is 30 s"
    assert alert["severity"] == "critical" and alert["device"] == "clip-01" and alert["child"] == "c001"

    active = stack.api.get("/api/alerts", params={"state": "active"}).json()
    assert [a["id"] for a in active] == [alert["id"]]

    # 2. A real browser finds the alert on the page and acknowledges it with a click.
    with chromium_page() as page:
        browser_login_sync(page, stack.base_url, ACCOUNTS[Role.STAFF][0], PASSWORD)
        row = page.locator(f'[data-alert-id="{alert["id"]}"]')
        row.wait_for(state="visible", timeout=5000)
        assert "うつぶせ" in row.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "e2e-prone-alert.png"), full_page=True)
        row.locator("button.ack").click()

        # The gateway owns alert state: the acknowledgement comes back through MQTT.
        deadline = time.time() + 5
        while True:
            now = {a["id"]: a for a in stack.api.get("/api/alerts").json()}
            if now.get(alert["id"], {}).get("acknowledged"):
                break
            assert time.time() < deadline, "acknowledgement was not applied within 5 s"
            time.sleep(0.1)

        # 3. The child is turned back at 40 s: resolved + acknowledged leaves the list and the page.
        deadline = stack.sim_started + SUPINE_AT_S + 10
        while stack.api.get("/api/alerts").json():
            assert time.time() < deadline, "the alert did not leave the list after the child was turned"
            time.sleep(0.2)
        row.wait_for(state="detached", timeout=5000)
        page.screenshot(path=str(ARTIFACTS / "e2e-resolved.png"), full_page=True)
    assert stack.api.get("/api/alerts", params={"state": "active"}).json() == []
    stop.set()

    # The live client saw the whole lifecycle: acknowledged, then resolved.
    seen = []
    while not events.empty():
        seen.append(events.get()[1])
    mine = [a for a in seen if a["id"] == alert["id"]]
    assert any(a["acknowledged"] and a["acknowledged_by"] == "田中" for a in mine)  # the signed-in user
    assert any(a["state"] == "resolved" for a in mine)
    for name, proc in stack.procs.items():
        if name != "sim":
            assert proc.poll() is None, f"{name} exited early; see its log"
