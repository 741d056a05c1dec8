"""`nurserywatch demo`: every part in one process on one event loop, for a first look.

The parts are the same code the separate commands run; only the wiring differs: the kit's serial
ports are redirected to pseudo-terminals in a temporary folder, where the simulator plays them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from nurserywatch.clock import SystemClock
from nurserywatch.embedded_broker import embedded_broker
from nurserywatch.kit import Kit
from nurserywatch.mqtt import BrokerURL

if TYPE_CHECKING:
    from firmware_sim.scenario import Scenario
    from gateway.config import RulesConfig


def redirect_serial_ports(kit: Kit, folder: Path) -> Kit:
    """A copy of ``kit`` whose serial devices use ``folder/<device>.tty`` (where the simulator
    creates its pseudo-terminal links) instead of real hardware ports."""
    data = kit.model_dump(mode="json")
    for dev in data["devices"]:
        if dev["transport"]["type"] == "serial":
            dev["transport"]["port"] = str(folder / f"{dev['id']}.tty")
    return Kit.model_validate(data)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Raise ValueError with a readable message when the dashboard port is taken."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            raise ValueError(f"port {port} on {host} is already in use; choose another with --port") from None


async def run_demo(
    kit: Kit,
    scenario: Scenario,
    rules: RulesConfig,
    *,
    broker: BrokerURL | None,
    port: int,
    data_dir: Path,
    host: str = "127.0.0.1",
    kit_path: Path | None = None,
) -> None:
    from dashboard.app import serve_dashboard
    from dashboard.auth import demo_accounts
    from edge.agent import run_edge
    from firmware_sim.runner import run_sim
    from gateway.service import run_gateway

    data_dir.mkdir(parents=True, exist_ok=True)
    clock = SystemClock()
    accounts = demo_accounts(data_dir, clock.now_ms())
    with tempfile.TemporaryDirectory(prefix="nurserywatch-demo-") as tmp:
        demo_kit = redirect_serial_ports(kit, Path(tmp))
        async with contextlib.AsyncExitStack() as stack:
            if broker is None:
                broker = await stack.enter_async_context(embedded_broker(free_port(host), host))
            print(f"nurserywatch demo — broker {broker}", flush=True)
            print(f"  ダッシュボード / dashboard: http://{host}:{port}/   (Ctrl-C で停止 / to stop)", flush=True)
            for username, password, role in accounts:  # fresh passwords on every start
                print(f"  ログイン / sign in ({role.label}): {username} / {password}", flush=True)
            async with asyncio.TaskGroup() as tg:
                db = data_dir / "demo.sqlite3"
                tg.create_task(run_gateway(demo_kit, broker, db, rules, clock))
                tg.create_task(
                    serve_dashboard(
                        demo_kit, broker, host, port, gateway_db=db, data_dir=data_dir, rules=rules, kit_path=kit_path
                    )
                )
                for agent in demo_kit.agents:
                    spool = data_dir / f"edge-{agent.id}-spool.sqlite3"
                    tg.create_task(run_edge(demo_kit, agent.id, broker, clock, spool_path=spool))
                tg.create_task(run_sim(demo_kit, scenario))
