"""The fleet board for its tests: three sites' ``SiteState`` (one with an open critical alert, one with
its link down, one fine), written into the real ``fleet_state`` bucket of a nats-server the way the
fleet workers write them, and the board (dashboard/fleet_app.py) served on a free port with one account
per role and an operator granted the first site only."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.js.kv import KeyValue

from dashboard.auth.deps import open_store
from dashboard.auth.models import Role
from dashboard.fleet_app import serve_fleet_dashboard
from dashboard.routes.fleet import FleetHeader
from fleet.state import DeviceHealth, EdgeHealth, LinkState, OpenAlert, RecordsHeadState, SiteState
from nurserywatch.clock import ManualClock
from nurserywatch.contract import Severity
from nurserywatch.fleet_layout import FleetLayout
from nurserywatch.ports import free_port
from tests.support.clock import MIN, T0
from tests.support.dashboard_login import ACCOUNTS, FAST, add_accounts, login
from tests.support.waiting import wait_until

#: The board's "now" (ManualClock): 2026-01-15 10:00 Asia/Tokyo.
NOW = T0 + 14 * 24 * 60 * MIN + 60 * MIN
SITE_A, SITE_B, SITE_C = "hoikuen-a", "hoikuen-b", "hoikuen-c"
#: An operator who may see SITE_A only (the role's account of tests/support/dashboard_login.py).
OPERATOR = ACCOUNTS[Role.OPERATOR][0]


def prone_alert(started: int = NOW - 2 * MIN) -> OpenAlert:
    return OpenAlert(id="a-prone-1", rule="prone", severity=Severity.CRITICAL, active=True, room="hiyoko",
                     device="clip-01", child="c001", started_ts=started, updated_ts=started,
                     message="うつぶせ寝が30秒続いています", message_en="Face down for 30 s")  # fmt: skip


def site_a() -> SiteState:
    """An open critical alert (a child face down), a warning, a verified records head."""
    co2 = OpenAlert(id="a-co2-1", rule="co2", severity=Severity.WARNING, active=True, room="hiyoko",
                    device="air-01", started_ts=NOW - 30 * MIN, updated_ts=NOW - MIN,
                    message="CO2濃度が1000ppmを超えています", message_en="CO2 above 1000 ppm")  # fmt: skip
    return SiteState(
        site=SITE_A, partition=1, last_seq=40, last_arrival_ms=NOW - 1000, last_msg_ts=NOW - 1200, lag_ms=200,
        gateway_ts=NOW - 1500, gateway_online=True, link=LinkState(up=True, checked_ms=NOW - 2000),
        alerts={a.id: a for a in (prone_alert(), co2)},
        devices={"clip-01": DeviceHealth(device="clip-01", online=True, battery_pct=80, status_ts=NOW - 5000),
                 "air-01": DeviceHealth(device="air-01", online=True, battery_pct=9, status_ts=NOW - 5000)},
        edges={"edge-1": EdgeHealth(agent="edge-1", online=True, ts=NOW - 3000)},
        records=RecordsHeadState(day="2026-01-14", seq=118, hash="ab" * 32, signed_ts=NOW - 15 * 60 * MIN,
                                 key_id="0123456789abcdef", verified=True, received_ms=NOW - 14 * 60 * MIN),
        air_over_s={"2026-01": {"hiyoko": {"co2": 5400.0}}, "2025-12": {"hiyoko": {"co2": 900.0, "humidity": 1800.0}}},
        air_observed_s={"2026-01": {"hiyoko": 36_000.0}, "2025-12": {"hiyoko": 90_000.0}}, readings=5000,
    )  # fmt: skip


def site_b(down_since: int = NOW - 5 * MIN) -> SiteState:
    """Its link to the centre down for five minutes, 42 messages waiting on the site."""
    return SiteState(
        site=SITE_B, partition=0, last_seq=10, last_arrival_ms=down_since, last_msg_ts=down_since, lag_ms=300,
        gateway_ts=down_since, gateway_online=True, link=LinkState(up=False, down_since_ms=down_since, pending=42,
                                                                   checked_ms=NOW - 1000),
        devices={"mat-01": DeviceHealth(device="mat-01", online=False, status_ts=down_since)},
        records=RecordsHeadState(day="2026-01-14", seq=7, hash="cd" * 32, signed_ts=NOW - 15 * 60 * MIN,
                                 key_id="fedcba9876543210", verified=False, problem="seq went back from 9 to 7",
                                 received_ms=NOW - 14 * 60 * MIN), readings=700,
    )  # fmt: skip


def site_c() -> SiteState:
    return SiteState(site=SITE_C, partition=2, last_arrival_ms=NOW - 500, lag_ms=100, gateway_ts=NOW - 800,
                     gateway_online=True, link=LinkState(up=True), readings=900)  # fmt: skip


async def state_bucket(servers: Sequence[str]) -> tuple[Any, KeyValue]:
    """(connection, the fleet_state bucket), created as the fleet workers would."""
    nc = await nats.connect(servers=list(servers))
    js = nc.jetstream()
    kv = await js.create_key_value(bucket=FleetLayout.state_bucket, history=1)
    return nc, kv


async def put_state(kv: KeyValue, state: SiteState) -> None:
    await kv.put(FleetLayout.state_key(state.site), state.model_dump_json().encode())


@dataclass
class Board:
    base: str
    data_dir: Path

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=5)

    @contextlib.asynccontextmanager
    async def signed_in(self, role: Role | None) -> AsyncIterator[httpx.AsyncClient]:
        async with self.client() as http:
            if role is not None:
                await login(http, role)
            yield http


@contextlib.asynccontextmanager
async def running_board(servers: Sequence[str], refresh_s: float = 5.0, sites: int = 3) -> AsyncIterator[Board]:
    """The board on a free port, watching ``servers``' bucket; returns once it holds ``sites`` sites.
    Accounts: one per role; the operator may see SITE_A only."""
    port = free_port()
    data = tempfile.TemporaryDirectory(prefix="nw-fleet-")
    data_dir = Path(data.name)
    add_accounts(data_dir, NOW)
    store = open_store(data_dir, FAST)
    try:
        store.set_sites(OPERATOR, [SITE_A], NOW)
    finally:
        store.close()
    task = asyncio.create_task(serve_fleet_dashboard(
        servers, "127.0.0.1", port, header=FleetHeader("テスト運営"), data_dir=data_dir, auth_policy=FAST,
        clock=ManualClock(NOW), refresh_s=refresh_s,
    ))  # fmt: skip
    board = Board(f"http://127.0.0.1:{port}", data_dir)
    try:
        async with board.client() as http:

            async def ready() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    r = await http.get("/healthz")
                    return r.status_code == 200 and r.json()["sites"] == sites
                return False

            await wait_until(ready, f"fleet board synced with {sites} sites", 15)
        yield board
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        data.cleanup()
