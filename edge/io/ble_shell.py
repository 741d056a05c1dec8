"""Thin shell around bleak: Bluetooth LE payloads → the devices' channels, and device presence.

    await run_ble(devices, clock, on_status)      # until cancelled; never raises for Bluetooth trouble

``devices`` are this agent's BLE devices with their channels; ``on_status(device_id, online,
rssi_dbm)`` is called when a device comes or goes (and when its signal changes a lot).

- One scanner for everything, passive where BlueZ allows it (an advertisement monitor with
  or-patterns: no scan requests, so sensor batteries last), else active. Its detection callback,
  ``BleShell.on_advertisement``, hands the BTHome service data of a known address to its channel
  and remembers the RSSI and the BLEDevice to connect to.
- Advertising devices (air_ble) are online while heard; silent for ``offline_after_s`` → offline.
- GATT devices (thermometer; nap mat and posture clip on BLE) are connected through
  bleak-retry-connector once the scanner has seen them; ``start_notify`` on their characteristic
  (edge/io/ble_gatt.py) feeds every notification/indication to the channel through
  ``BleShell.notification_handler``. Online while connected; on disconnect, reconnect with backoff.
- No adapter, no BlueZ, no D-Bus: one clear log line (no traceback), the devices stay offline and
  the scanner is retried every ``scanner_retry_s``, so the rest of the edge keeps running.

Tests drive the real callbacks with the bytes a radio would deliver, and run the whole loop on
bleak's backend interface (``scanner_backend``/``client_backend``); docs/ble.md says what has and
has not run against a radio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from bleak import BleakClient, BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern, OrPatternLike
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak_retry_connector import BleakClientWithServiceCache, establish_connection

from edge.channels.base import Channel
from edge.decoders.bthome import embedded_mac
from edge.io.ble_gatt import (
    ADVERTISING_KINDS,
    BTHOME_SERVICE,
    BTHOME_SERVICE_UUID,
    HEALTH_THERMOMETER_SERVICE,
    NOTIFY_CHARACTERISTIC,
    NW_SENSOR_SERVICE_UUID,
)
from nurserywatch.clock import Clock
from nurserywatch.kit import BleTransport, Device

log = logging.getLogger(__name__)

StatusCallback = Callable[[str, bool, int | None], None]

#: An advertising device not heard for this long is offline. BTHome sensors advertise every few
#: seconds to a minute; a trigger-based one only on change, so give those a longer time.
OFFLINE_AFTER_S = 90.0
#: Report a changed RSSI of an online device only if it moved this much, at most this often:
#: the status topic is retained, it must not churn with every advert.
RSSI_REPORT_DELTA_DB = 6
RSSI_REPORT_MIN_INTERVAL_S = 60.0


async def run_ble(devices: list[tuple[Device, Channel]], clock: Clock, on_status: StatusCallback) -> None:
    """Read this agent's BLE ``devices`` until cancelled (see the module doc)."""
    await BleShell(devices, clock, on_status).run()


@dataclass
class _Peer:
    device: Device
    channel: Channel
    address: str  # upper case, as BlueZ reports it
    notify_uuid: str | None  # None: an advertising device, never connected
    ble_device: BLEDevice | None = None
    seen: asyncio.Event = field(default_factory=asyncio.Event)
    heard_ms: int | None = None
    rssi: int | None = None
    online: bool = False
    reported_rssi: int | None = None
    reported_ms: int = 0


class BleShell:
    def __init__(
        self,
        devices: list[tuple[Device, Channel]],
        clock: Clock,
        on_status: StatusCallback,
        *,
        offline_after_s: float = OFFLINE_AFTER_S,
        scanner_retry_s: float = 30.0,
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        scanner_backend: type[BaseBleakScanner] | None = None,
        client_backend: type[BaseBleakClient] | None = None,
    ) -> None:
        self.clock, self.on_status = clock, on_status
        self.offline_after_s, self.scanner_retry_s = offline_after_s, scanner_retry_s
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max_backoff_s
        self.scanner_backend, self.client_backend = scanner_backend, client_backend
        #: Adverts from known addresses that carried no BTHome data (for diagnostics).
        self.adverts_without_data = 0
        self.peers: dict[str, _Peer] = {}
        for device, channel in devices:
            if not isinstance(device.transport, BleTransport):
                log.warning("%s: transport %s is not BLE; the BLE shell ignores it", device.id, device.transport.type)
                continue
            notify = NOTIFY_CHARACTERISTIC.get(device.kind)
            if notify is None and device.kind not in ADVERTISING_KINDS:
                log.warning("%s: a %s cannot be read over BLE; ignoring it", device.id, device.kind.value)
                continue
            address = device.transport.address.upper()
            self.peers[address] = _Peer(device, channel, address, notify)
        self.scanning_mode: Literal["active", "passive"] | None = None

    # -- the callbacks the radio drives

    def on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        """BleakScanner's detection callback: called for every advertisement report."""
        peer = self.peers.get(device.address.upper())
        data = adv.service_data.get(BTHOME_SERVICE_UUID)
        if peer is None and data is not None and (mac := embedded_mac(data)) is not None:
            peer = self.peers.get(mac)  # a device on a random address naming itself in the payload
        if peer is None:
            return
        now = self.clock.now_ms()
        peer.ble_device, peer.rssi, peer.heard_ms = device, adv.rssi, now
        peer.seen.set()
        if peer.notify_uuid is not None:
            return  # a GATT device: its adverts tell us where it is, its data comes by connection
        if data is None:
            self.adverts_without_data += 1
        else:
            self._feed(peer, data, now)
        if not peer.online:
            self._set_online(peer, True)

    def notification_handler(self, device_id: str) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        """The callback given to BleakClient.start_notify for ``device_id``."""
        peer = next(p for p in self.peers.values() if p.device.id == device_id)

        def on_notify(_characteristic: BleakGATTCharacteristic, data: bytearray) -> None:
            self._feed(peer, bytes(data), self.clock.now_ms())

        return on_notify

    def _feed(self, peer: _Peer, data: bytes, now_ms: int) -> None:
        try:
            peer.channel.on_bytes(data, now_ms)
        except Exception:  # a bug downstream must not kill bleak's dispatch
            log.exception("%s: error while handling %d bytes", peer.device.id, len(data))

    # -- presence

    def _set_online(self, peer: _Peer, online: bool) -> None:
        peer.online = online
        peer.reported_rssi, peer.reported_ms = peer.rssi, self.clock.now_ms()
        self.on_status(peer.device.id, online, peer.rssi if online else None)

    def check_presence(self) -> None:
        """Once a second: silent advertising devices go offline; a big RSSI change is reported."""
        now = self.clock.now_ms()
        for peer in self.peers.values():
            if not peer.online:
                continue
            silent = peer.heard_ms is None or now - peer.heard_ms > self.offline_after_s * 1000
            if peer.notify_uuid is None and silent:
                log.warning("%s: not heard for %.0f s; offline", peer.device.id, self.offline_after_s)
                self._set_online(peer, False)
            elif (
                peer.rssi is not None
                and (peer.reported_rssi is None or abs(peer.rssi - peer.reported_rssi) >= RSSI_REPORT_DELTA_DB)
                and now - peer.reported_ms >= RSSI_REPORT_MIN_INTERVAL_S * 1000
            ):
                self._set_online(peer, True)

    # -- the loops

    async def run(self) -> None:
        if not self.peers:
            return
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._scan_forever(), name="ble-scan")
            tg.create_task(self._presence_forever(), name="ble-presence")
            for peer in self.peers.values():
                if peer.notify_uuid is not None:
                    tg.create_task(self._connect_forever(peer), name=f"ble-{peer.device.id}")

    async def _presence_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.check_presence()

    async def _scan_forever(self) -> None:
        last_error: str | None = None
        while True:
            scanner, error = await self._start_scanner()
            if scanner is None:
                if error != last_error:
                    log.error(
                        "Bluetooth unavailable (%s); BLE devices %s stay offline, retrying every %.0f s",
                        error,
                        ", ".join(p.device.id for p in self.peers.values()),
                        self.scanner_retry_s,
                    )
                    last_error = error
                await asyncio.sleep(self.scanner_retry_s)
                continue
            log.info("Bluetooth: %s scanning for %d device(s)", self.scanning_mode, len(self.peers))
            last_error = None
            try:
                await asyncio.Event().wait()  # scan until cancelled
            finally:
                with contextlib.suppress(Exception):
                    await scanner.stop()

    async def _start_scanner(self) -> tuple[BleakScanner | None, str]:
        """A started scanner (passive if possible) or None and why not."""
        errors: list[str] = []
        mode: Literal["active", "passive"]
        for mode in ("passive", "active"):
            bluez: BlueZScannerArgs = {"or_patterns": self._or_patterns()} if mode == "passive" else {}
            try:
                scanner = BleakScanner(
                    self.on_advertisement, scanning_mode=mode, bluez=bluez, backend=self.scanner_backend
                )
                await scanner.start()
            except Exception as exc:  # bleak raises BleakError, BleakDBusError, OSError, … by platform
                errors.append(f"{mode} scan: {describe_error(exc)}")
                continue
            if errors:
                log.info("Bluetooth: passive scanning unavailable (%s); scanning actively", errors[0])
            self.scanning_mode = mode
            return scanner, ""
        return None, "; ".join(errors)

    def _or_patterns(self) -> list[OrPatternLike]:
        """What a passive scan reports: BTHome service data, and the service UUIDs our GATT devices
        advertise (16-bit lists may name the thermometer service anywhere among the first four)."""
        patterns: list[OrPatternLike] = [
            OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, BTHOME_SERVICE.to_bytes(2, "little"))
        ]
        ad = AdvertisementDataType
        thermometer = HEALTH_THERMOMETER_SERVICE.to_bytes(2, "little")
        for list16 in (ad.COMPLETE_LIST_SERVICE_UUID16, ad.INCOMPLETE_LIST_SERVICE_UUID16):
            patterns += [OrPattern(pos, list16, thermometer) for pos in (0, 2, 4, 6)]
        nw = uuid.UUID(NW_SENSOR_SERVICE_UUID).bytes[::-1]  # little-endian on air
        for list128 in (ad.COMPLETE_LIST_SERVICE_UUID128, ad.INCOMPLETE_LIST_SERVICE_UUID128):
            patterns.append(OrPattern(0, list128, nw))
        return patterns

    async def _connect_forever(self, peer: _Peer) -> None:
        name = peer.device.id
        backoff = self.min_backoff_s
        last_error: str | None = None
        while True:
            await peer.seen.wait()
            disconnected = asyncio.Event()
            try:
                client = await self._connect(peer, disconnected)
            except Exception as exc:  # BleakError and friends, TimeoutError, OSError without D-Bus
                error = describe_error(exc)
                if error != last_error:
                    log.warning(
                        "%s: cannot connect to %s (%s); retrying every ≤%g s",
                        name,
                        peer.address,
                        error,
                        self.max_backoff_s,
                    )
                    last_error = error
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            log.info("%s: connected to %s, subscribed to %s", name, peer.address, peer.notify_uuid)
            last_error, backoff = None, self.min_backoff_s
            self._set_online(peer, True)
            try:
                await disconnected.wait()
                log.warning("%s: %s disconnected; reconnecting", name, peer.address)
            finally:
                self._set_online(peer, False)
                with contextlib.suppress(Exception):
                    await client.disconnect()
            await asyncio.sleep(self.min_backoff_s)

    async def _connect(self, peer: _Peer, disconnected: asyncio.Event) -> BleakClient:
        """Connect and subscribe; ``disconnected`` is set when the link drops."""
        assert peer.notify_uuid is not None

        def latest_device() -> BLEDevice:  # the scanner keeps it current (address type, path)
            assert peer.ble_device is not None
            return peer.ble_device

        client = await establish_connection(
            BleakClientWithServiceCache,
            latest_device(),
            peer.device.id,
            disconnected_callback=lambda _client: disconnected.set(),
            ble_device_callback=latest_device,
            backend=self.client_backend,
        )
        try:
            peer.channel.port_opened()  # a new link: no partial sentence survives
            await client.start_notify(peer.notify_uuid, self.notification_handler(peer.device.id))
        except BaseException:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise
        return client


def describe_error(exc: BaseException) -> str:
    """One readable line for a Bluetooth failure, without a traceback."""
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return "no D-Bus system bus or BlueZ (is this machine's Bluetooth stack running?)"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__
