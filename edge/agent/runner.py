"""The edge agent's shell: serial ports and Bluetooth LE → decoders → one reading per second → MQTT.

    await run_edge(kit, agent_id, broker, clock)     # until cancelled

For each device of this agent whose kind has a channel (edge/channels/registry.py) and a serial
transport it reads the port (reconnecting with backoff; polling request/response devices), and
once per second per device publishes what the channel produced on
``reading/{device}/{stream}`` (QoS 1). Retained state: ``edge/{agent}`` online on every connect,
offline on shutdown, and the broker sends the last will ``{"online": false}`` if the agent dies;
``status/{device}`` online/offline as its port opens and disappears (offline on shutdown: nobody
watches it then). Devices with a BLE transport are read by edge/io/ble_shell.py (scanning, GATT
connections), which reports their presence and RSSI; without Bluetooth they stay offline.

Bad serial input is counted per device and logged at most every 10 s per device.

Store and forward: every reading goes through the on-disk spool (edge/io/spool.py, bounded by the
agent's ``spool`` settings in the kit) and is deleted only after the broker acknowledged it, so a
broker outage or an agent restart loses nothing and a kill -9 at most the last second. Clock sanity
(edge/agent/clock_sanity.py): sensor data is stamped with a steady timebase, and readings are held in
memory while the wall clock is not plausible (``clock_ok: false`` in the agent's status).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from pydantic import BaseModel

from edge.agent.clock_sanity import ClockSanity
from edge.agent.reject_log import RejectLog
from edge.channels.base import Channel
from edge.channels.registry import make_channel
from edge.io.ble_shell import run_ble
from edge.io.clock_probe import clock_synchronised
from edge.io.serial_port import read_serial
from edge.io.spool import Spool
from nurserywatch import BUILD_DATE_MS, __version__
from nurserywatch.clock import Clock
from nurserywatch.contract import (
    DeviceStatus,
    EdgeStatus,
    Stream,
    edge_topic,
    reading_topic,
    status_topic,
)
from nurserywatch.kit import BleTransport, Device, Kit, SerialTransport
from nurserywatch.mqtt import Brokers, publish, run_session
from nurserywatch.systemd import Notifier

log = logging.getLogger(__name__)

READING_INTERVAL_S = 1.0
#: An open serial port with no decodable data for this long is reported offline (DeviceStatus).
SILENCE_S = 5.0
#: Bound on each goodbye publish during shutdown, so a dead broker cannot hold the agent up.
SHUTDOWN_PUBLISH_TIMEOUT_S = 2.0
#: The last will, exactly as docs/contract.md (Topics) gives it.
WILL_PAYLOAD = json.dumps({"online": False}).encode()


async def run_edge(
    kit: Kit,
    agent_id: str,
    broker: Brokers,
    clock: Clock,
    *,
    spool_path: str | Path | None = None,
    mono_ms: Callable[[], int] | None = None,
    synchronised: Callable[[], bool] = clock_synchronised,
    notifier: Notifier | None = None,
) -> None:
    """Run the edge agent ``agent_id`` of ``kit`` until cancelled. ValueError if it is not in the kit.
    ``spool_path`` overrides the kit's spool file (the demo keeps it in its data folder);
    ``mono_ms`` and ``synchronised`` replace the monotonic clock and the clock-sync probe (tests);
    ``notifier``: systemd's (READY once the ports and the spool run, the watchdog from the tick)."""
    await EdgeAgent(
        kit,
        agent_id,
        broker,
        clock,
        spool_path=spool_path,
        mono_ms=mono_ms,
        synchronised=synchronised,
        notifier=notifier,
    ).run()


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


@dataclass
class _SerialDevice:
    port: str
    baud: int
    channel: Channel


class EdgeAgent:
    def __init__(
        self,
        kit: Kit,
        agent_id: str,
        broker: Brokers,
        clock: Clock,
        *,
        spool_path: str | Path | None = None,
        mono_ms: Callable[[], int] | None = None,
        synchronised: Callable[[], bool] = clock_synchronised,
        notifier: Notifier | None = None,
    ) -> None:
        agent = kit.agent(agent_id)
        if agent is None:
            known = ", ".join(a.id for a in kit.agents)
            raise ValueError(f"agent {agent_id!r} is not in the kit of site {kit.site!r} (known agents: {known})")
        self.kit, self.agent_id, self.broker, self.clock = kit, agent_id, broker, clock
        self.spool_config = agent.spool
        self.spool_path = Path(spool_path or kit.resolve_port(agent.spool.path))
        #: Steady time for sensor data, and whether the wall clock may be published (clock_sanity.py).
        self.time: ClockSanity[tuple[str, Stream], BaseModel] = ClockSanity(
            clock, mono_ms or _monotonic_ms, synchronised, BUILD_DATE_MS
        )
        #: Every device this agent reads, by id; serial ones also have a port to open.
        self.channels: dict[str, Channel] = {}
        self.serial: dict[str, _SerialDevice] = {}
        self.ble: list[tuple[Device, Channel]] = []
        for device in kit.devices_of_agent(agent_id):
            channel = make_channel(device)
            if channel is not None and isinstance(device.transport, SerialTransport):
                self.channels[device.id] = channel
                self.serial[device.id] = _SerialDevice(
                    kit.resolve_port(device.transport.port), device.transport.baud, channel
                )
            elif channel is not None and isinstance(device.transport, BleTransport):
                self.channels[device.id] = channel
                self.ble.append((device, channel))
            else:
                log.warning(
                    "%s: %s over %s is not supported by this edge version yet; ignoring it",
                    device.id,
                    device.kind.value,
                    device.transport.type,
                )
        if not self.channels:
            log.warning("agent %s has no device it can read; publishing its status only", agent_id)
        # Device state as the ports report it, and what the broker last got from us.
        now = clock.now_ms()
        self._rooms = {d.id: d.room for d in kit.devices_of_agent(agent_id)}
        self._online = {d: DeviceStatus(ts=now, online=False, room=self._rooms[d]) for d in self.channels}
        # Serial ports: open or not (from the shell), and when each last produced a reading (loop time).
        self._port_open: dict[str, bool] = {}
        self._last_data_s: dict[str, float] = {}
        self._published: dict[str, DeviceStatus] = {}
        self._published_clock_ok: bool | None = None
        self.spool: Spool  # opened by run()
        self._reject_log = RejectLog()
        self.notifier = notifier or Notifier(None)

    @property
    def edge_topic(self) -> str:
        return edge_topic(self.kit.site, self.agent_id)

    def edge_status(self, online: bool) -> EdgeStatus:
        return EdgeStatus(
            ts=self.clock.now_ms(),
            online=online,
            version=__version__,
            devices=list(self.channels),
            clock_ok=self.time.ok,
        )

    def _status(self, device_id: str, online: bool, rssi_dbm: float | None = None) -> DeviceStatus:
        battery = self.channels[device_id].battery_pct()
        return DeviceStatus(ts=self.clock.now_ms(), online=online, battery_pct=battery, rssi_dbm=rssi_dbm,
                            room=self._rooms[device_id])  # fmt: skip

    async def run(self) -> None:
        will = aiomqtt.Will(self.edge_topic, WILL_PAYLOAD, qos=1, retain=True)
        identifier = f"nw-edge-{self.kit.site}-{self.agent_id}"
        cfg = self.spool_config
        self.spool = Spool(self.spool_path, max_bytes=cfg.max_bytes, max_age_s=cfg.max_age_s, clock=self.clock)
        self.time.check()
        try:
            async with asyncio.TaskGroup() as tg:
                for device_id, dev in self.serial.items():
                    tg.create_task(
                        read_serial(
                            dev.port,
                            dev.baud,
                            self._on_data(dev.channel),
                            on_state=self._on_port(device_id),
                            label=device_id,
                            request=dev.channel.request,
                            poll_interval_s=dev.channel.poll_interval_s,
                        ),
                        name=f"serial-{device_id}",
                    )
                if self.ble:
                    tg.create_task(run_ble(self.ble, self.time, self._on_ble_status), name="ble")
                tg.create_task(self._tick(), name="edge-tick")
                tg.create_task(run_session(self.broker, identifier, self._session, will=will), name="edge-mqtt")
        finally:
            for device_id, channel in self.channels.items():
                log.info("%s: stopped; rejected %s", device_id, dict(channel.problems()) or "none")
            self.spool.close()
            dropped = self.spool.dropped + self.time.dropped
            log.info(
                "spool: %d readings %s at shutdown; dropped by bounds: %s",
                len(self.spool),
                "kept for the next start" if self.spool.on_disk else "LOST (memory only)",
                dict(dropped) or "none",
            )

    # -- serial side

    def _on_data(self, channel: Channel) -> Callable[[bytes], None]:
        def on_data(data: bytes) -> None:
            channel.on_bytes(data, self.time.now_ms())

        return on_data

    def _on_port(self, device_id: str) -> Callable[[bool], None]:
        def on_port(online: bool) -> None:
            if online:
                self.channels[device_id].port_opened()
                self._last_data_s[device_id] = asyncio.get_running_loop().time()  # grace period from now
            self._port_open[device_id] = online
            self._online[device_id] = self._status(device_id, online)
            self.spool.ready.set()

        return on_port

    def _watch_silence(self, device_id: str, got_data: bool, now_s: float) -> None:
        """A port that is open but says nothing (sensor hung, wrong baud, cable half out) is as
        lost as an unplugged one: report it offline after SILENCE_S (or 2.5 polls)."""
        if got_data:
            self._last_data_s[device_id] = now_s
        if not self._port_open.get(device_id):
            return
        poll = self.channels[device_id].poll_interval_s
        limit = max(SILENCE_S, 2.5 * poll) if poll else SILENCE_S
        silent_s = now_s - self._last_data_s.get(device_id, now_s)
        alive = silent_s <= limit
        was = self._online[device_id]
        if alive != was.online:
            if alive:
                log.info("%s: data again; reporting online", device_id)
            else:
                log.warning("%s: port open but silent for %.0f s; reporting offline", device_id, silent_s)
            self._online[device_id] = self._status(device_id, alive, was.rssi_dbm)
            self.spool.ready.set()

    def _on_ble_status(self, device_id: str, online: bool, rssi_dbm: int | None) -> None:
        self._online[device_id] = self._status(device_id, online, rssi_dbm)
        self.spool.ready.set()

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        # Ready without the broker: the agent collects into the spool from power-up (and systemd's
        # watchdog only runs once READY is sent).
        self.notifier.ready("collecting; waiting for the MQTT broker")
        while True:
            due += READING_INTERVAL_S
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = max(due, loop.time() - READING_INTERVAL_S)  # after a stall, do not burst
            now = self.time.now_ms()
            fresh: list[tuple[tuple[str, Stream], BaseModel]] = []
            for device_id, channel in self.channels.items():
                produced = [((device_id, stream), reading) for stream, reading in channel.readings(now)]
                fresh += produced
                if device_id in self.serial:
                    self._watch_silence(device_id, bool(produced), loop.time())
                battery = channel.battery_pct()
                if battery is not None and battery != self._online[device_id].battery_pct:
                    was = self._online[device_id]
                    self._online[device_id] = self._status(device_id, was.online, was.rssi_dbm)
                summary = self._reject_log.summary(device_id, channel.problems(), channel.last_problem(), loop.time())
                if summary:
                    log.warning("%s", summary)
            # Held while the wall clock is not plausible; then in order, stamped with wall time.
            for (device_id, stream), reading in self.time.admit(fresh):
                self.spool.put(reading_topic(self.kit.site, device_id, stream), reading.model_dump_json().encode())
            self.spool.commit()  # one transaction per tick: a kill -9 loses at most this second
            if self.time.ok != self._published_clock_ok:
                self.spool.ready.set()  # the publisher re-announces clock_ok
            # This loop is the agent's heartbeat: if it hangs (or dies), systemd's watchdog restarts us.
            self.notifier.alive()

    # -- MQTT side

    async def _session(self, client: aiomqtt.Client) -> None:
        """One broker connection: announce, then publish whatever is due until the connection
        drops (MqttError → run_session reconnects) or the agent is cancelled (goodbye first)."""
        self._published.clear()  # a new connection: state is sent again
        await self._announce(client)
        log.info("agent %s online with devices %s", self.agent_id, ", ".join(self.channels) or "none")
        self.notifier.status("connected to the MQTT broker")
        tasks = {asyncio.create_task(self._publish_forever(client)), asyncio.create_task(_until_lost(client))}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _cancel(tasks)
            with contextlib.suppress(aiomqtt.MqttError):
                await self._goodbye(client)
            raise
        await _cancel(tasks)
        for task in done:
            task.result()  # the MqttError that ended the connection

    async def _announce(self, client: aiomqtt.Client) -> None:
        status = self.edge_status(True)
        await publish(client, self.edge_topic, status.to_json(), retain=True)
        self._published_clock_ok = status.clock_ok

    async def _publish_forever(self, client: aiomqtt.Client) -> None:
        while True:
            self.spool.ready.clear()
            await self._flush(client)
            await self.spool.ready.wait()

    async def _flush(self, client: aiomqtt.Client) -> None:
        if self.time.ok != self._published_clock_ok:
            await self._announce(client)
        for device_id, status in list(self._online.items()):
            if self._published.get(device_id) != status:
                await publish(client, status_topic(self.kit.site, device_id), status.to_json(), retain=True)
                self._published[device_id] = status
        # Oldest first, as queued (original ts and seq); deleted only once the broker acknowledged
        # it (QoS 1: publish returns on PUBACK). A repeat after a crash is dropped by the gateway.
        while (message := self.spool.peek()) is not None:
            await publish(client, message.topic, message.payload)
            self.spool.pop(message)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        # Runs while the task is being cancelled: plain client.publish, because the
        # cancellation-safe wrapper would (rightly) stop after the first message.
        now = self.clock.now_ms()
        for device_id in self.channels:
            offline = DeviceStatus(ts=now, online=False, room=self._rooms[device_id]).to_json()
            await client.publish(
                status_topic(self.kit.site, device_id), offline, qos=1, retain=True, timeout=SHUTDOWN_PUBLISH_TIMEOUT_S
            )
        await client.publish(
            self.edge_topic, self.edge_status(False).to_json(), qos=1, retain=True, timeout=SHUTDOWN_PUBLISH_TIMEOUT_S
        )
        log.info("agent %s offline (shutdown)", self.agent_id)


async def _until_lost(client: aiomqtt.Client) -> None:
    """Raise MqttError when the connection drops. We subscribe to nothing, so no message ever
    arrives; the iterator is aiomqtt's public way to notice a disconnect while idle."""
    async for _ in client.messages:
        pass
    raise aiomqtt.MqttError("message iterator ended")


async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
