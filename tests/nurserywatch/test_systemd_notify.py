"""systemd notifications (nurserywatch/systemd.py) against a real unix datagram socket standing in for
systemd: the real gateway, edge and dashboard processes send READY=1, then WATCHDOG=1 from their main
loops, and STOPPING=1 on SIGTERM; a gateway whose engine blocks stops the pings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gateway.config import RulesConfig
from gateway.engine.observers import GatewayObserver, ObserverContext
from gateway.service.engine_host import EngineOptions
from gateway.service.mqtt import run_gateway
from nurserywatch.clock import ManualClock
from nurserywatch.kit import Kit
from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port
from nurserywatch.systemd import Notifier
from tests.support.clock import T0
from tests.support.kits import make_kit, write_kit
from tests.support.notify_socket import NotifySocket
from tests.support.processes import print_logs, spawn, stop

#: WatchdogSec=2 for the processes: a ping at least every second.
WATCHDOG_S = 2.0


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


# ---------------------------------------------------------------- the notifier itself


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "2000000"})
    assert not notifier.enabled and notifier.watchdog_s is None
    notifier.ready()
    notifier.alive()  # no socket, no error


def test_abstract_and_path_sockets_and_the_watchdog_rate(tmp_path: Path) -> None:
    path_sock = NotifySocket(str(tmp_path / "notify"))
    abstract = NotifySocket()
    now = [0.0]
    try:
        env = {**path_sock.env(watchdog_s=10), "WATCHDOG_PID": str(os.getpid())}
        by_path = Notifier.from_environment(env)
        assert by_path.watchdog_s == 10
        by_path.ready("up")
        assert path_sock.drain() == ["READY=1\nSTATUS=up"]

        pinger = Notifier(abstract.address, 10.0, monotonic=lambda: now[0])
        for t in (0.0, 1.0, 4.9, 5.0, 9.9, 10.0):  # half the interval between pings
            now[0] = t
            pinger.alive()
        pinger.stopping()
        assert abstract.drain() == ["WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1", "STOPPING=1"]
    finally:
        path_sock.close()
        abstract.close()


def test_a_watchdog_meant_for_another_process_is_not_ours(notify: NotifySocket) -> None:
    other = Notifier.from_environment({**notify.env(watchdog_s=2), "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.enabled and other.watchdog_s is None
    other.alive()
    assert notify.drain() == []


def test_a_vanished_socket_is_logged_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gone = Notifier(str(tmp_path / "nobody-listens"), 2.0)
    gone.ready()
    gone.status("still fine")
    assert [r.message for r in caplog.records].count(
        "cannot notify systemd at NOTIFY_SOCKET: [Errno 2] No such file or directory"
    ) == 1


# ---------------------------------------------------------------- the real processes


def _pinged_then_stopped(name: str, args: list[str], notify: NotifySocket, tmp_path: Path,
                         env: dict[str, str] | None = None, connected: bool = False) -> None:  # fmt: skip
    """``nurserywatch <args>`` under our NOTIFY_SOCKET: READY=1, then WATCHDOG=1 again and again
    (and, with ``connected``, the broker connection in STATUS), and STOPPING=1 on SIGTERM."""
    proc, log = spawn(name, args, tmp_path, env={**notify.env(WATCHDOG_S), **(env or {})})
    try:
        notify.wait_for("READY=1")
        ready_at = notify.fields().index("READY=1")
        notify.wait_for("WATCHDOG=1", count=notify.fields()[:ready_at].count("WATCHDOG=1") + 3)
        if connected:
            notify.wait_for("STATUS=connected to the MQTT broker")
        assert proc.poll() is None
        os.killpg(proc.pid, signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert proc.wait(timeout=20) == 0
    except BaseException:
        print_logs({name: log})
        raise
    finally:
        stop(proc)


def test_gateway_process_notifies_and_keeps_the_password_off_its_command_line(
    mosquitto: BrokerURL, notify: NotifySocket, tmp_path: Path
) -> None:
    write_kit(tmp_path)
    # The broker URL only in the environment, as the unit's EnvironmentFile gives it (docs/deploy.md).
    # The test broker takes anonymous clients, so any user and password are let in.
    url = f"mqtt://gateway:s3cret-pw@{mosquitto.host}:{mosquitto.port}"
    args = ["gateway", "--config", str(tmp_path / "kit.yaml"), "--db", str(tmp_path / "gw.sqlite3")]
    proc, log = spawn("gateway", args, tmp_path, env={**notify.env(WATCHDOG_S), "NURSERYWATCH_BROKER": url})
    try:
        notify.wait_for("STATUS=connected to the MQTT broker")
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"s3cret-pw" not in cmdline and b"mqtt://" not in cmdline
    except BaseException:
        print_logs({"gateway": log})
        raise
    finally:
        stop(proc)


def test_gateway_process_sends_ready_watchdog_and_stopping(
    mosquitto: BrokerURL, notify: NotifySocket, tmp_path: Path
) -> None:
    write_kit(tmp_path)
    args = ["gateway", "--config", str(tmp_path / "kit.yaml"), "--db", str(tmp_path / "gw.sqlite3"),
            "--broker", str(mosquitto)]  # fmt: skip
    _pinged_then_stopped("gateway", args, notify, tmp_path, connected=True)


def test_edge_process_sends_ready_watchdog_and_stopping(
    mosquitto: BrokerURL, notify: NotifySocket, tmp_path: Path
) -> None:
    write_kit(tmp_path)  # its serial port does not exist: the agent runs (and pings) anyway
    args = ["edge", "--config", str(tmp_path / "kit.yaml"), "--broker", str(mosquitto)]
    _pinged_then_stopped("edge", args, notify, tmp_path, connected=True)


def test_edge_is_ready_without_a_broker(notify: NotifySocket, tmp_path: Path) -> None:
    """At power-up the Pi may have no network: the agent collects (and is ready) all the same."""
    write_kit(tmp_path)
    args = ["edge", "--config", str(tmp_path / "kit.yaml"), "--broker", f"mqtt://127.0.0.1:{free_port()}"]
    _pinged_then_stopped("edge", args, notify, tmp_path)


def test_dashboard_process_sends_ready_watchdog_and_stopping(
    mosquitto: BrokerURL, notify: NotifySocket, tmp_path: Path
) -> None:
    write_kit(tmp_path)
    args = ["dashboard", "--config", str(tmp_path / "kit.yaml"), "--broker", str(mosquitto), "--port",
            str(free_port()), "--db", str(tmp_path / "gw.sqlite3"), "--data-dir", str(tmp_path / "dash")]  # fmt: skip
    _pinged_then_stopped("dashboard", args, notify, tmp_path)


def test_home_assistant_bridge_process_sends_ready_watchdog_and_stopping(
    mosquitto: BrokerURL, notify: NotifySocket, tmp_path: Path
) -> None:
    """configs/nurserywatch-home-assistant.service is Type=notify with a watchdog, like the others."""
    kit = make_kit("hanotify")
    kit = Kit.model_validate({**kit.model_dump(), "home_assistant": {"enabled": True}})
    (tmp_path / "kit.yaml").write_text(yaml.safe_dump(kit.model_dump(mode="json"), allow_unicode=True))
    args = ["home-assistant", "--config", str(tmp_path / "kit.yaml"), "--broker", str(mosquitto)]
    _pinged_then_stopped("home-assistant", args, notify, tmp_path, connected=True)


# ---------------------------------------------------------------- a hung gateway


class _Blocker(GatewayObserver):
    """Blocks the engine's thread in its tick once ``block`` is set, as a stuck database call or a
    bug would, until ``release``."""

    def __init__(self) -> None:
        self.block, self.entered, self.release = threading.Event(), threading.Event(), threading.Event()

    def on_tick(self, now_ms: int) -> None:
        if self.block.is_set():
            self.entered.set()
            self.release.wait(60)


def test_a_blocked_gateway_stops_the_watchdog_pings(mosquitto: BrokerURL, notify: NotifySocket, tmp_path: Path) -> None:
    blocker = _Blocker()
    notifier = Notifier(notify.address, 0.4)  # a ping at least every 0.2 s (ticks every 50 ms)
    running: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]] = {}

    def factory(_: ObserverContext) -> GatewayObserver:
        return blocker

    async def main() -> None:
        coro = run_gateway(make_kit("wd"), mosquitto, tmp_path / "gw.sqlite3", RulesConfig(tick_ms=50),
                           ManualClock(T0), EngineOptions(observers=[factory]), notifier=notifier)  # fmt: skip
        task = asyncio.ensure_future(coro)
        running["gw"] = (asyncio.get_running_loop(), task)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="gateway")
    thread.start()
    try:
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1", count=3)
        blocker.block.set()
        assert blocker.entered.wait(30), "the engine never ticked"
        # Every ping sent before the engine blocked is already in the socket's queue (sendto is
        # synchronous, on the same thread): take them; from here on nothing may come.
        notify.drain()
        seen = len(notify.received)
        assert not blocker.release.wait(2.0)  # 10 watchdog half-intervals
        notify.drain()
        assert notify.received[seen:] == [], "pinged while the engine was blocked"
        blocker.block.clear()
        blocker.release.set()
        notify.wait_for("WATCHDOG=1", count=notify.fields().count("WATCHDOG=1") + 1)  # alive again
    finally:
        blocker.block.clear()
        blocker.release.set()
        if "gw" in running:
            loop, task = running["gw"]
            loop.call_soon_threadsafe(task.cancel)
        thread.join(30)
        notifier.close()
