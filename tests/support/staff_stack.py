"""The staff side's whole stack in one process: a real gateway and a real dashboard reading its database,
against the test session's Mosquitto, with an HTTP client and an MQTT client."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from dashboard.app import serve_dashboard
from dashboard.auth.models import Role
from gateway.config import RulesConfig
from gateway.engine.stats import GatewayStats
from gateway.service.engine_host import EngineOptions
from gateway.service.mqtt import run_gateway
from nurserywatch.clock import ManualClock
from nurserywatch.kit import Kit
from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port
from tests.support.clock import T0
from tests.support.commands import COMMAND_VERIFIER, signer_on
from tests.support.dashboard_login import FAST, add_accounts, login
from tests.support.gateway_stack import assignment_kit
from tests.support.waiting import wait_until

DAY = "2026-01-01"


@dataclass
class Stack:
    kit: Kit
    http: httpx.AsyncClient
    mqtt: aiomqtt.Client
    clock: ManualClock
    stats: GatewayStats
    base: str
    login: Callable[[Role], Any]
    #: "gateway", "dashboard": cancel one to stop it (the browser watchdog tests)
    tasks: dict[str, asyncio.Task[None]]

    @property
    def site(self) -> str:
        return self.kit.site


@contextlib.asynccontextmanager
async def staff_stack(broker: BrokerURL, *, gateway_db: bool = True) -> AsyncIterator[Stack]:
    """A gateway (ManualClock, ticks every 50 ms real time) and a dashboard reading its database,
    an HTTP client signed in as staff, and a test MQTT client."""
    kit = assignment_kit(f"staff-{uuid.uuid4().hex[:8]}")
    clock = ManualClock(T0)
    stats = GatewayStats()
    with tempfile.TemporaryDirectory(prefix="nw-staff-") as tmp:
        db = Path(tmp) / "gw.sqlite3"
        data = Path(tmp) / "dash"
        data.mkdir()
        add_accounts(data)
        gw = asyncio.create_task(
            run_gateway(kit, broker, db, RulesConfig(tick_ms=50), clock,
                EngineOptions(stats=stats, command_key=COMMAND_VERIFIER))
        )
        port = free_port()
        # The dashboard runs in real time (its watchdog is tested so) but signs its commands at the
        # gateway's ManualClock time, which the gateway checks them against.
        dash = asyncio.create_task(serve_dashboard(
            kit, broker, "127.0.0.1", port, data_dir=data, auth_policy=FAST, gateway_db=db if gateway_db else None,
            command_key=signer_on(clock),
        ))  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            async with (
                httpx.AsyncClient(base_url=base, timeout=5) as http,
                aiomqtt.Client("127.0.0.1", broker.port, identifier=f"staff-test-{uuid.uuid4().hex[:8]}") as mqtt,
            ):

                async def healthy() -> bool:
                    with contextlib.suppress(httpx.TransportError):
                        return (await http.get("/healthz")).status_code == 200 and stats.sessions >= 1
                    return False

                await wait_until(healthy, "dashboard and gateway up", 10)
                await login(http, Role.STAFF)
                tasks = {"gateway": gw, "dashboard": dash}
                yield Stack(kit, http, mqtt, clock, stats, base, lambda role: login(http, role), tasks)
        finally:
            for task in (dash, gw):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    assert stats.rejected["internal_error"] == 0
