"""`nurserywatch doctor`: check what an edge agent needs on this machine, one pass/fail line each.

    checks = await run_doctor(kit, agent_id, broker)
    print(format_checks(checks)); exit(0 if all(c.ok for c in checks) else 1)

Checks, in order:
- every serial device of the agent: the port is present, can be opened, and *answers* — bytes that
  the device's own channel (edge/channels/registry.py, the same decoding the agent uses) turns into a reading
  within ``serial_timeout_s``; request/response devices get their request written as the agent would;
- Bluetooth, when the agent has BLE devices: an adapter, the D-Bus system bus, and a short bleak scan;
- the broker: TCP reachable (refused / timeout / unknown host told apart), then the MQTT connection
  with the URL's credentials (bad credentials told apart from other refusals);
- the clock: plausible (clock_sanity.py), and whether NTP has synchronised it;
- the spool: its folder writable and enough free disk for the configured ``max_bytes``; what it holds.

Read-only for the system: it opens ports and the spool file but changes nothing; a port held by a
running edge agent is reported as busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import serial
from pydantic import BaseModel

from edge.agent.clock_sanity import ClockSanity
from edge.channels.base import Channel
from edge.channels.registry import make_channel
from edge.io.clock_probe import TIME_ERROR, TIMESYNCD_FLAG, clock_synchronised, kernel_clock_state
from nurserywatch import BUILD_DATE_MS
from nurserywatch.clock import Clock, SystemClock
from nurserywatch.kit import BleTransport, Device, Kit, SerialTransport
from nurserywatch.mqtt import Brokers, BrokerURL, broker_list

BLUETOOTH_SYSFS = Path("/sys/class/bluetooth")
DBUS_SYSTEM_SOCKET = Path("/run/dbus/system_bus_socket")
#: CONNACK refusals that mean the username/password (or the lack of them) was not accepted.
BAD_CREDENTIALS = {"Bad user name or password", "Not authorized"}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    #: One line telling the integrator what to do; for failures.
    advice: str | None = None


def format_checks(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{'✓' if c.ok else '✗'} {c.name}: {c.detail}")
        if not c.ok and c.advice:
            lines.append(f"    → {c.advice}")
    failed = sum(not c.ok for c in checks)
    lines.append(f"{len(checks) - failed} passed, {failed} failed" if failed else f"all {len(checks)} checks passed")
    return "\n".join(lines)


async def run_doctor(
    kit: Kit,
    agent_id: str,
    broker: Brokers,
    *,
    clock: Clock | None = None,
    synchronised: Callable[[], bool] = clock_synchronised,
    serial_timeout_s: float = 3.0,
    broker_timeout_s: float = 5.0,
    ble_scan_s: float = 3.0,
) -> list[Check]:
    agent = kit.agent(agent_id)
    if agent is None:
        raise ValueError(f"agent {agent_id!r} is not in the kit")
    clock = clock or SystemClock()
    devices = kit.devices_of_agent(agent_id)
    serial_devices = [d for d in devices if isinstance(d.transport, SerialTransport)]
    ble_devices = [d for d in devices if isinstance(d.transport, BleTransport)]
    checks = list(await asyncio.gather(*(check_serial(kit, d, serial_timeout_s, clock) for d in serial_devices)))
    checks.append(await check_bluetooth(ble_devices, ble_scan_s))
    for url in broker_list(broker):  # every node of a cluster: the agent fails over to each
        checks.append(await check_broker(url, f"nw-doctor-{kit.site}-{agent_id}", broker_timeout_s))
    checks.append(check_clock(clock, synchronised))
    checks.append(check_spool(Path(kit.resolve_port(agent.spool.path)), agent.spool.max_bytes, clock))
    return checks


# -- serial


async def check_serial(kit: Kit, device: Device, timeout_s: float, clock: Clock) -> Check:
    assert isinstance(device.transport, SerialTransport)
    port = kit.resolve_port(device.transport.port)
    name = f"serial {device.id} ({device.kind.value} on {port})"
    channel = make_channel(device)
    if channel is None:
        return Check(name, False, "this edge version cannot read this kind of device", "update nurserywatch")
    if not os.path.exists(port):
        return Check(
            name,
            False,
            "port not present",
            "plug the device in and check the port path in the kit (stable names: ls -l /dev/serial/by-id/)",
        )
    try:
        ser = serial.Serial(port, device.transport.baud, timeout=0, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        return _open_failure(name, exc)
    try:
        return await _listen(name, device, ser, channel, timeout_s, clock)
    finally:
        ser.close()


def _open_failure(name: str, exc: BaseException) -> Check:
    text = str(exc)
    code = getattr(exc, "errno", None)
    if code == errno.EACCES or "Permission denied" in text:
        return Check(
            name,
            False,
            "permission denied",
            "add the service user to the dialout group (sudo usermod -aG dialout nurserywatch), then log in again",
        )
    if "exclusively lock" in text or code == errno.EBUSY:
        return Check(
            name,
            False,
            "port busy (another program has it open)",
            "stop the edge agent while running doctor: sudo systemctl stop nurserywatch-edge",
        )
    return Check(name, False, f"cannot open: {text}", "check the port path and the device's USB connection")


async def _listen(
    name: str, device: Device, ser: serial.Serial, channel: Channel, timeout_s: float, clock: Clock
) -> Check:
    """Read (and poll, for request/response devices) until the channel makes a reading."""
    ser.reset_input_buffer()
    channel.port_opened()
    loop = asyncio.get_running_loop()
    start = loop.time()
    next_request = start
    received = 0
    while (now := loop.time()) - start < timeout_s:
        if channel.poll_interval_s and now >= next_request:
            request = channel.request()
            if request:
                ser.write(request)
            next_request = now + min(channel.poll_interval_s, 1.0)  # doctor asks at least once a second
        try:
            data = ser.read(4096)
        except (serial.SerialException, OSError) as exc:
            return Check(name, False, f"port failed while reading: {exc}", "check the cable and the USB adapter")
        if data:
            received += len(data)
            channel.on_bytes(data, clock.now_ms())
        if channel.readings(clock.now_ms()):
            return Check(name, True, f"answering ({received} bytes in {now - start:.1f} s decoded as expected)")
        await asyncio.sleep(0.05)
    problems = channel.problems()
    if not received:
        return Check(
            name,
            False,
            f"no bytes in {timeout_s:g} s",
            "check power and wiring (TX/RX crossed?), and that the baud rate in the kit matches the device",
        )
    return Check(
        name,
        False,
        f"not answering: {received} bytes in {timeout_s:g} s but none decoded as a {device.kind.value}"
        + (f" (rejected: {_fmt(problems)})" if problems else ""),
        "check the baud rate in the kit and that this port is really this kind of device",
    )


# -- Bluetooth


async def check_bluetooth(devices: list[Device], scan_s: float) -> Check:
    name = "bluetooth"
    if not devices:
        return Check(name, True, "not used by this agent (no BLE device in the kit)")
    adapters = sorted(p.name for p in BLUETOOTH_SYSFS.glob("hci*")) if BLUETOOTH_SYSFS.is_dir() else []
    missing = []
    if not adapters:
        missing.append(f"no Bluetooth adapter (nothing in {BLUETOOTH_SYSFS})")
    if not DBUS_SYSTEM_SOCKET.exists():
        missing.append(f"no D-Bus system bus ({DBUS_SYSTEM_SOCKET}), which BlueZ needs")
    if missing:
        return Check(
            name,
            False,
            "; ".join(missing) + f" — {len(devices)} BLE device(s) cannot be read",
            "on a Raspberry Pi: sudo apt install bluez, sudo systemctl enable --now bluetooth, sudo rfkill unblock "
            "bluetooth; the service user needs the bluetooth group",
        )
    try:
        from bleak import BleakScanner

        found = await BleakScanner.discover(timeout=scan_s)
    except Exception as exc:  # bleak raises BleakError, D-Bus and OS errors alike
        return Check(
            name,
            False,
            f"adapter {', '.join(adapters)} present but scanning failed: {type(exc).__name__}: {exc}",
            "check that bluetoothd runs (systemctl status bluetooth) and the service user is in the bluetooth group",
        )
    wanted = {d.transport.address.upper(): d.id for d in devices if isinstance(d.transport, BleTransport)}
    seen = {getattr(f, "address", "").upper() for f in found}
    missing_ids = [f"{dev} ({addr})" for addr, dev in wanted.items() if addr not in seen]
    detail = f"adapter {', '.join(adapters)} scanning; {len(wanted) - len(missing_ids)}/{len(wanted)} kit devices seen"
    if missing_ids:
        detail += f" — not seen in {scan_s:g} s: {', '.join(missing_ids)} (asleep, out of range or flat battery?)"
    return Check(name, True, detail)


# -- broker


async def check_broker(broker: BrokerURL, identifier: str, timeout_s: float) -> Check:
    name = f"broker {broker}"
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(broker.host, broker.port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    except TimeoutError:
        return Check(
            name,
            False,
            f"no answer within {timeout_s:g} s (timeout)",
            "check the host name/address, the network and any firewall between this Pi and the broker",
        )
    except ConnectionRefusedError:
        return Check(
            name,
            False,
            "connection refused: nothing listens on that port",
            "start the broker (sudo systemctl start mosquitto) or correct the port in --broker",
        )
    except OSError as exc:
        return Check(
            name,
            False,
            f"unreachable: {exc.strerror or exc}",
            "check the host name/address in --broker and the network",
        )
    client = aiomqtt.Client(
        hostname=broker.host,
        port=broker.port,
        identifier=identifier,
        username=broker.username,
        password=broker.password,
        clean_session=True,  # leave no session behind
        tls_params=broker.tls_params(),  # the site CA from ?credentials= or ?ca=
        timeout=timeout_s,
    )
    try:
        async with asyncio.timeout(timeout_s), client:
            pass
    except aiomqtt.MqttCodeError as exc:
        reason = str(exc.rc) if exc.rc is not None else str(exc)
        if any(bad in reason for bad in BAD_CREDENTIALS) or exc.rc in (4, 5):
            who = f"user {broker.username!r}" if broker.username else "no username"
            return Check(
                name,
                False,
                f"bad credentials: the broker refused {who} ({reason})",
                "check user and password in --broker (mqtt://user:password@host:port) and the broker's password file",
            )
        return Check(name, False, f"the broker refused the connection: {reason}", "see the broker's log")
    except (aiomqtt.MqttError, TimeoutError) as exc:
        return Check(
            name,
            False,
            f"TCP connects but MQTT does not answer ({exc or 'timeout'})",
            "is this port really an MQTT listener (TLS needs mqtts://)?",
        )
    auth = f"credentials of {broker.username!r} accepted" if broker.username else "anonymous access accepted"
    return Check(name, True, f"connected; {auth}")


# -- clock


def check_clock(clock: Clock, synchronised: Callable[[], bool]) -> Check:
    guard: ClockSanity[None, BaseModel] = ClockSanity(
        clock, lambda: time.monotonic_ns() // 1_000_000, synchronised, BUILD_DATE_MS
    )
    ok = guard.check()
    synced = synchronised()
    sources = []
    if os.path.exists(TIMESYNCD_FLAG):
        sources.append("systemd-timesyncd synchronised")
    state = kernel_clock_state()
    if state is not None:
        sources.append("kernel: " + ("not synchronised" if state == TIME_ERROR else "synchronised"))
    detail = f"{guard.reason}" + (f" ({'; '.join(sources)})" if sources else "")
    if not ok:
        return Check(
            "clock",
            False,
            detail,
            "give the Pi network access to an NTP server (timedatectl set-ntp true, or chrony); until then the "
            "edge holds readings and reports clock_ok: false",
        )
    if not synced:
        detail += " — plausible but not NTP-synchronised: timestamps may be off by the time the Pi was off"
    return Check("clock", True, detail)


# -- spool


def check_spool(path: Path, max_bytes: int, clock: Clock) -> Check:
    name = f"spool {path}"
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Check(name, False, f"{existing} is not a folder", "set spool.path of this agent in the kit to a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".nurserywatch-doctor-"):
            pass
    except OSError as exc:
        return Check(
            name,
            False,
            f"cannot write in {existing}: {exc.strerror or exc}",
            "give the service user write access (StateDirectory= in the systemd unit does this for /var/lib)",
        )
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file()) if path.exists() else 0
    free = shutil.disk_usage(existing).free
    queued = _spool_contents(path, clock)
    detail = f"writable; {free / 2**30:.1f} GiB free for a bound of {max_bytes / 2**20:.0f} MiB; {queued}"
    if free + size < max_bytes * 1.2:  # WAL and page slack on top of the counted bytes
        return Check(
            name,
            False,
            detail,
            "free disk space or lower spool.max_bytes for this agent in the kit",
        )
    return Check(name, True, detail)


def _spool_contents(path: Path, clock: Clock) -> str:
    if not path.exists():
        return "empty (not created yet)"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
            count, oldest = db.execute("SELECT COUNT(*), MIN(queued_ms) FROM queue").fetchone()
    except sqlite3.Error as exc:
        return f"unreadable ({exc}; the edge moves a damaged file aside and starts a new one)"
    if not count:
        return "empty"
    return f"{count} readings waiting for the broker (oldest queued {(clock.now_ms() - oldest) / 60000:.0f} min ago)"


def _fmt(counts: Counter[str]) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in sorted(counts.items()))
