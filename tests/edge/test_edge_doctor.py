"""`nurserywatch doctor` against real parts: simulated devices on real ptys (a clip that streams, a
CO2 sensor that must be asked), a missing port, a pty sending garbage, the real Mosquitto, a closed
port, and a Mosquitto with password authentication started here."""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import edge.agent.doctor
from edge.agent.doctor import Check, check_broker, check_clock, check_spool, format_checks, run_doctor
from firmware_sim.io.pty_device import PtyDevice
from firmware_sim.io.runner import run_sim
from firmware_sim.scenario import parse_scenario
from nurserywatch.clock import ManualClock, SystemClock
from nurserywatch.kit import Kit, load_kit
from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port
from tests.support.mosquitto import MosquittoProcess
from tests.support.tasks import running

AGENT = "pi-1"


def write_kit(tmp_path: Path, devices: list[str], spool: str = "") -> Kit:
    lines = [
        "site: doctor",
        "name: doctor test",
        "rooms: [{id: room1, name: Room 1}]",
        f"agents: [{{id: {AGENT}{', spool: ' + spool if spool else ''}}}]",
        "devices:",
        *(f"  - {d}" for d in devices),
    ]
    (tmp_path / "kit.yaml").write_text("\n".join(lines) + "\n")
    return load_kit(tmp_path / "kit.yaml")


def serial(device_id: str, kind: str) -> str:
    transport = f"{{type: serial, port: ports/{device_id}}}"
    return f"{{id: {device_id}, kind: {kind}, room: room1, agent: {AGENT}, transport: {transport}}}"


BLE_THERMOMETER = (
    f"{{id: temp-01, kind: thermometer, room: room1, agent: {AGENT}, "
    "transport: {type: ble, address: 'AA:BB:CC:DD:EE:01'}}"
)

SCENARIO: dict[str, dict[str, object]] = {
    "devices": {
        "clip-01": {"rate_hz": 10, "timeline": [{"at_s": 0, "posture": "supine"}]},
        "co2-01": {"timeline": [{"at_s": 0, "co2_ppm": 650}]},
    }
}


@contextlib.asynccontextmanager
async def garbage_device(path: Path) -> AsyncIterator[None]:
    """A pty that sends line noise (wrong baud rate, wrong device): bytes, but nothing decodable."""
    pty = PtyDevice(path)
    rng = random.Random(7)

    async def babble() -> None:
        while True:
            pty.write(bytes(rng.randrange(256) for _ in range(64)) + b"\r\n$NWIMU,1,2*00\r\n")
            await asyncio.sleep(0.05)

    try:
        async with running(babble()):
            yield
    finally:
        pty.close()


@contextlib.asynccontextmanager
async def simulated(kit: Kit) -> AsyncIterator[None]:
    wanted = {d: spec for d, spec in SCENARIO["devices"].items() if kit.device(d) is not None}
    async with running(run_sim(kit, parse_scenario({"devices": wanted}))):
        await asyncio.sleep(0.3)  # ptys created
        yield


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name.split(" (")[0]: c for c in checks}


async def test_serial_ports_answering_missing_and_garbage(
    mosquitto: BrokerURL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge.agent.doctor, "BLUETOOTH_SYSFS", tmp_path / "no-sysfs")  # the machine has none either
    monkeypatch.setattr(edge.agent.doctor, "DBUS_SYSTEM_SOCKET", tmp_path / "no-dbus")
    kit = write_kit(
        tmp_path,
        [
            serial("clip-01", "posture_clip"),
            serial("co2-01", "mhz19b"),
            serial("clip-02", "posture_clip"),
            serial("clip-03", "posture_clip"),
            BLE_THERMOMETER,
        ],
    )
    async with simulated(kit), garbage_device(tmp_path / "ports" / "clip-03"):
        checks = await run_doctor(kit, AGENT, mosquitto, serial_timeout_s=2.0)
    c = by_name(checks)
    assert list(c) == [
        "serial clip-01",
        "serial co2-01",
        "serial clip-02",
        "serial clip-03",
        "bluetooth",
        f"broker {mosquitto}",
        "clock",
        f"spool {tmp_path / 'nurserywatch-spool.sqlite3'}",
    ]
    assert c["serial clip-01"].ok and c["serial clip-01"].detail.startswith("answering (")
    assert c["serial co2-01"].ok, "the request was written and the reply decoded"
    assert not c["serial clip-02"].ok and c["serial clip-02"].detail == "port not present"
    assert "/dev/serial/by-id/" in (c["serial clip-02"].advice or "")
    garbage = c["serial clip-03"]
    assert not garbage.ok and garbage.detail.startswith("not answering: ")
    assert "none decoded as a posture_clip (rejected: " in garbage.detail and "baud rate" in (garbage.advice or "")
    assert not c["bluetooth"].ok
    assert "no Bluetooth adapter" in c["bluetooth"].detail and "no D-Bus system bus" in c["bluetooth"].detail
    assert c[f"broker {mosquitto}"].ok and c["clock"].ok and c[f"spool {tmp_path / 'nurserywatch-spool.sqlite3'}"].ok

    text = format_checks(checks)
    assert "✓ serial clip-01 (posture_clip on " in text and "✗ serial clip-02 (posture_clip on " in text
    assert "    → plug the device in" in text and text.endswith("5 passed, 3 failed")


async def test_silent_port_is_not_answering(tmp_path: Path) -> None:
    kit = write_kit(tmp_path, [serial("clip-01", "posture_clip")])
    pty = PtyDevice(tmp_path / "ports" / "clip-01")  # present, opens, says nothing
    try:
        (check,) = [c for c in await run_doctor(kit, AGENT, BrokerURL("127.0.0.1", free_port())) if "clip" in c.name]
    finally:
        pty.close()
    assert not check.ok and check.detail == "no bytes in 3 s" and "baud rate" in (check.advice or "")


async def test_broker_refused_and_timeout(tmp_path: Path) -> None:
    refused = await check_broker(BrokerURL("127.0.0.1", free_port()), "nw-doctor-test", 2.0)
    assert not refused.ok and refused.detail == "connection refused: nothing listens on that port"
    # A listener that accepts TCP but never speaks MQTT (a wrong port): the MQTT step times out.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        silent = await check_broker(BrokerURL("127.0.0.1", port), "nw-doctor-test", 1.0)
    assert not silent.ok and silent.detail.startswith("TCP connects but MQTT does not answer")


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto that only lets user edge-pi-1 (password s3cret) in."""
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "edge-pi-1", "s3cret"], check=True)
    broker = MosquittoProcess(tmp_path / "mosquitto", persistence=False, anonymous=False,
                              options=[f"password_file {passwd}"])  # fmt: skip
    broker.start()
    try:
        yield broker.port
    finally:
        broker.stop()


async def test_broker_credentials(password_broker: int) -> None:
    good = await check_broker(BrokerURL.parse(f"mqtt://edge-pi-1:s3cret@127.0.0.1:{password_broker}"), "t", 3.0)
    assert good.ok and good.detail == "connected; credentials of 'edge-pi-1' accepted"
    bad = await check_broker(BrokerURL.parse(f"mqtt://edge-pi-1:wrong@127.0.0.1:{password_broker}"), "t", 3.0)
    assert not bad.ok and bad.detail.startswith("bad credentials: the broker refused user 'edge-pi-1' (")
    assert "mqtt://user:password@host:port" in (bad.advice or "")
    anonymous = await check_broker(BrokerURL("127.0.0.1", password_broker), "t", 3.0)
    assert not anonymous.ok and anonymous.detail.startswith("bad credentials: the broker refused no username")


def test_clock_check() -> None:
    ok = check_clock(SystemClock(), lambda: False)
    assert ok.ok and "after the build date" in ok.detail and "not NTP-synchronised" in ok.detail
    pi = check_clock(ManualClock(0), lambda: False)  # a Pi without RTC, before NTP
    assert not pi.ok and pi.detail.startswith("1970-01-01 00:00:00 UTC is before the build date")
    assert "NTP" in (pi.advice or "")
    assert check_clock(ManualClock(0), lambda: True).ok, "synchronised wins"


def test_spool_check(tmp_path: Path) -> None:
    clock = SystemClock()
    fresh = check_spool(tmp_path / "var" / "spool.sqlite3", 2**20, clock)
    assert fresh.ok and "empty (not created yet)" in fresh.detail
    (tmp_path / "file").write_text("")
    blocked = check_spool(tmp_path / "file" / "spool.sqlite3", 2**20, clock)
    assert not blocked.ok and blocked.detail == f"{tmp_path / 'file'} is not a folder"
    too_big = check_spool(tmp_path / "spool.sqlite3", 2**62, clock)
    assert not too_big.ok and "lower spool.max_bytes" in (too_big.advice or "")

    from edge.io.spool import Spool

    spool = Spool(tmp_path / "spool.sqlite3", max_bytes=2**20, max_age_s=60, clock=clock)
    spool.put("t", b"x")
    spool.commit()
    held = check_spool(tmp_path / "spool.sqlite3", 2**20, clock)  # while the edge has it open
    spool.close()
    assert held.ok and "1 readings waiting for the broker (oldest queued 0 min ago)" in held.detail


async def doctor_cli(tmp_path: Path, broker: BrokerURL) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nurserywatch",
        "doctor",
        "--config",
        str(tmp_path / "kit.yaml"),
        "--broker",
        str(broker),
        "--timeout",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_cli_exit_codes(mosquitto: BrokerURL, tmp_path: Path) -> None:
    kit = write_kit(tmp_path, [serial("clip-01", "posture_clip")], spool="{path: state/spool.sqlite3}")
    async with simulated(kit):
        code, out = await doctor_cli(tmp_path, mosquitto)
        assert code == 0, out
        assert out.startswith(f"nurserywatch doctor — kit {tmp_path / 'kit.yaml'}, agent {AGENT}\n")
        assert "✓ serial clip-01" in out and "✓ bluetooth: not used by this agent" in out
        assert out.rstrip().endswith("all 5 checks passed")
        code, out = await doctor_cli(tmp_path, BrokerURL("127.0.0.1", free_port()))
    assert code == 1 and "✗ broker" in out and "connection refused" in out
