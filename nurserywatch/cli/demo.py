"""`nurserywatch demo`: every part in one process on one event loop, for a first look.

The parts are the same code the separate commands run; only the wiring differs: the kit's serial
ports are redirected to pseudo-terminals in a temporary folder, where the simulator plays them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from nurserywatch.cli.demo_cluster import INSTANCES, DemoCluster
from nurserywatch.cli.embedded_broker import embedded_broker
from nurserywatch.clock import Clock, SystemClock
from nurserywatch.command_auth import ID_BYTES, CommandSigner
from nurserywatch.contract import (
    GatewayStatus,
    SessionAction,
    SessionCommand,
    SessionState,
    gateway_topic,
    session_command_topic,
    session_topic,
)
from nurserywatch.kit import Kit
from nurserywatch.mqtt import Brokers, describe_brokers, publish, run_session
from nurserywatch.ports import free_port

if TYPE_CHECKING:
    import aiomqtt

    from firmware_sim.scenario import Scenario
    from gateway.config import RulesConfig
    from gateway.records.entries import RecordsConfig

#: Who starts the demo's nap sessions (shown on the room view and in the records as who started it).
DEMO_BY = "demo"


def redirect_serial_ports(kit: Kit, folder: Path) -> Kit:
    """A copy of ``kit`` whose serial devices use ``folder/<device>.tty`` (where the simulator
    creates its pseudo-terminal links) instead of real hardware ports."""
    data = kit.model_dump(mode="json")
    for dev in data["devices"]:
        if dev["transport"]["type"] == "serial":
            dev["transport"]["port"] = str(folder / f"{dev['id']}.tty")
    return Kit.model_validate(data)


def _record_minutes(kit: Kit, room: str, records: RecordsConfig) -> float:
    """Minutes until the room's first nap-check record: its shortest interval among its children."""
    bands = {c.age_band for c in kit.children if c.room == room}
    return min((records.interval_ms(room, b) for b in bands), default=0) / 60_000


async def start_demo_naps(
    kit: Kit, broker: Brokers, clock: Clock, records: RecordsConfig, command_key: CommandSigner
) -> None:
    """Start a nap session in every room of the demo (as staff would with 午睡開始, by ``demo``), so the
    nap-check records fill and the apnea and sensor-lost rules judge from the first look. Waits for a
    live heartbeat of the gateway (a command sent before it subscribes would be lost); a room already
    in a session (a restarted demo) is left as it is. Prints what it did; never stops the demo."""
    rooms = {r.id: r.name for r in kit.rooms}
    states: dict[str, SessionState] = {}
    sent: set[str] = set()

    async def session(client: aiomqtt.Client) -> None:
        await client.subscribe([(gateway_topic(kit.site), 1)] + [(session_topic(kit.site, r), 1) for r in rooms])
        gateway_live = False
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            try:
                if message.topic.matches(gateway_topic(kit.site)):
                    # A live heartbeat (not an old retained one): the gateway is subscribed to commands.
                    gateway_live = gateway_live or (GatewayStatus.from_json(payload).online and not message.retain)
                else:
                    st = SessionState.from_json(payload)
                    states[st.room] = st
            except ValueError:
                continue
            if not gateway_live:
                continue
            for room in rooms.keys() - sent:
                if not (room in states and states[room].active):
                    command = SessionCommand(room=room, action=SessionAction.START, by=DEMO_BY)
                    topic = session_command_topic(kit.site)
                    payload, _ = command_key.sign(
                        topic, command.model_dump(mode="json"), clock.now_ms(), secrets.token_bytes(ID_BYTES)
                    )
                    await publish(client, topic, payload, qos=1)
                sent.add(room)
            if all(room in states and states[room].active for room in rooms):
                return

    try:
        async with asyncio.timeout(60):
            await run_session(broker, f"nurserywatch-demo-naps-{kit.site}", session)
    except TimeoutError:
        missing = ", ".join(rooms[r] for r in rooms if not (r in states and states[r].active))
        print(f"  午睡を開始できませんでした / could not start the nap session: {missing}", flush=True)
        return
    for room, name in rooms.items():
        st = states[room]
        mine = st.started_by == DEMO_BY and st.started_ts is not None and clock.now_ms() - st.started_ts < 120_000
        how = "開始しました / started" if mine else "すでに午睡中です / already in progress"
        minutes = _record_minutes(kit, room, records)
        print(
            f"  午睡 / nap session {name}: {how} (by {st.started_by}); 午睡チェック表 / records every {minutes:g} min"
            " (「午睡終了」 on the room view ends it)",
            flush=True,
        )


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
    broker: Brokers | None,
    port: int,
    data_dir: Path,
    host: str = "127.0.0.1",
    kit_path: Path | None = None,
    cluster_rules: Path | None = None,
) -> None:
    """The demo; with ``cluster_rules`` (the rules file its gateway processes read) on a 3-node NATS
    cluster with two gateway processes (nurserywatch/cli/demo_cluster.py; needs ``kit_path``)
    instead of one broker."""
    from dashboard.app import serve_dashboard
    from dashboard.auth.deps import demo_accounts
    from edge.agent.runner import run_edge
    from firmware_sim.io.runner import run_sim
    from gateway.records.entries import RecordsConfig
    from gateway.service.engine_host import EngineOptions
    from gateway.service.mqtt import run_gateway
    from nurserywatch.cli.records_signing import key_path, open_signing

    data_dir.mkdir(parents=True, exist_ok=True)
    clock = SystemClock()
    accounts = demo_accounts(data_dir, clock.now_ms())
    # The command key lives only in this process: the dashboard (and the nap starter) sign, the gateway
    # checks — the same path as a provisioned site, with nothing to set up (docs/contract.md).
    command_key = CommandSigner.generate()
    with tempfile.TemporaryDirectory(prefix="nurserywatch-demo-") as tmp:
        demo_kit = redirect_serial_ports(kit, Path(tmp))
        async with contextlib.AsyncExitStack() as stack:
            nodes: DemoCluster | None = None
            if cluster_rules is not None:
                if kit_path is None:
                    raise ValueError("the cluster demo needs the kit file (its gateways are processes)")
                print(f"nurserywatch demo — NATS cluster of 3 nodes on 127.0.0.1, gateway instances "
                      f"{' and '.join(INSTANCES)} (files: {data_dir / 'cluster'})", flush=True)  # fmt: skip
                nodes = await stack.enter_async_context(
                    DemoCluster(data_dir / "cluster", kit_path, cluster_rules, command_key)
                )
                broker = nodes.brokers(0)
            elif broker is None:
                broker = await stack.enter_async_context(embedded_broker(free_port(host), host))
            if nodes is None:
                print(f"nurserywatch demo — broker {describe_brokers(broker)}", flush=True)
            print(f"  ダッシュボード / dashboard: http://{host}:{port}/   (Ctrl-C で停止 / to stop)", flush=True)
            for username, password, role in accounts:  # fresh passwords on every start
                print(f"  ログイン / sign in ({role.label}): {username} / {password}", flush=True)
            async with asyncio.TaskGroup() as tg:
                records = RecordsConfig()  # the built-in intervals (0-year-olds: every 5 min)
                if nodes is None:
                    db = data_dir / "demo.sqlite3"
                    signing = open_signing(key_path(None, db))  # the records' day heads, signed as on a site
                    tg.create_task(
                        run_gateway(demo_kit, broker, db, rules, clock,
                                    EngineOptions(records=records, command_key=command_key.verifier,
                                                  records_signing=signing))  # fmt: skip
                    )
                else:
                    db = nodes.gateway_db()  # instance a's copy (a standby's file follows the journal)

                one: Brokers = broker

                def brokers(first: int) -> Brokers:
                    """Each part's URL list starts at a different node (one broker: that one)."""
                    return nodes.brokers(first) if nodes is not None else one

                tg.create_task(
                    serve_dashboard(
                        demo_kit, brokers(1), host, port, gateway_db=db, data_dir=data_dir, rules=rules,
                        kit_path=kit_path, command_key=command_key,
                    )
                )
                for i, agent in enumerate(demo_kit.agents):
                    spool = data_dir / f"edge-{agent.id}-spool.sqlite3"
                    tg.create_task(run_edge(demo_kit, agent.id, brokers(2 + i), clock, spool_path=spool))
                tg.create_task(run_sim(demo_kit, scenario))
                tg.create_task(start_demo_naps(demo_kit, brokers(1), clock, records, command_key))
