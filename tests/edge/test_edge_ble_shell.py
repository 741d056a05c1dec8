"""edge.io.ble_shell without a radio: this machine has no Bluetooth adapter, kernel support or D-Bus.

What stands in for the radio, and only that:
- BlueZScannerNoDBus is bleak's own BlueZ scanner with start/stop (the D-Bus calls) replaced: an
  advertisement goes in as the org.bluez.Device1 properties BlueZ reports over D-Bus, and bleak's
  code turns them into the BLEDevice and AdvertisementData that reach our detection callback.
- GattPeripheral is a bleak client backend for a peripheral with one notify characteristic; bleak's
  BleakClient and bleak-retry-connector's establish_connection run unchanged on top of it, and a
  notification goes through the callback our shell gave to BleakClient.start_notify.
The last test runs the real platform scanner and checks the shell's answer to "no Bluetooth".
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, ClassVar

import pytest
from bleak.backends.bluezdbus.scanner import BleakScannerBlueZDBus
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError

from edge.agent.runner import run_edge
from edge.channels.base import Channel
from edge.channels.ble import BTHomeAirChannel, ThermometerChannel
from edge.channels.clip import ClipChannel
from edge.channels.registry import make_channel
from edge.io.ble_gatt import (
    BTHOME_SERVICE_UUID,
    HEALTH_THERMOMETER_SERVICE_UUID,
    NW_SENSOR_SERVICE_UUID,
    NW_SENTENCE_CHAR_UUID,
    TEMPERATURE_MEASUREMENT_CHAR_UUID,
)
from edge.io.ble_shell import BleShell, run_ble
from firmware_sim.encoders.bthome import encode_bthome
from firmware_sim.encoders.health_thermometer import encode_temperature_measurement
from firmware_sim.encoders.nmea import encode_imu
from firmware_sim.io.runner import run_sim
from nurserywatch.clock import Clock, ManualClock
from nurserywatch.contract import (
    AirReading,
    BodyTempReading,
    DeviceStatus,
    EdgeStatus,
    Position,
    PostureReading,
    Stream,
    decode,
    edge_topic,
    reading_topic,
    status_topic,
)
from nurserywatch.kit import Device, Kit, load_kit
from nurserywatch.mqtt import BrokerURL
from tests.support.clock import ShiftedClock
from tests.support.edge_recorder import AGENT, is_status, record, site_id
from tests.support.scenarios import clip_scenario
from tests.support.tasks import stop
from tests.support.waiting import wait_until

AIR = "A4:C1:38:8D:18:B2"
SHELLY = "54:48:E6:8F:80:A5"
THERMO = "C0:FF:EE:00:00:01"
CLIP = "C0:FF:EE:00:00:02"
KEY_HEX = "231d39c1d7cc1ab1aee224cd096db932"


def device(device_id: str, kind: str, address: str, bindkey: str | None = None) -> Device:
    transport: dict[str, Any] = {"type": "ble", "address": address.lower()}  # kits may use lower case
    if bindkey:
        transport["bindkey"] = bindkey
    return Device.model_validate(
        {"id": device_id, "kind": kind, "room": "r1", "agent": "a1", "transport": transport, "child": None}
    )


def with_channel(dev: Device) -> tuple[Device, Channel]:
    channel = make_channel(dev)
    assert channel is not None, f"no channel registered for {dev.kind}"
    return dev, channel


def device1(
    address: str, rssi: int, service_data: dict[str, bytes] | None = None, uuids: list[str] | None = None
) -> dict[str, Any]:
    """org.bluez.Device1 properties as BlueZ reports them for an advertising device."""
    return {
        "Address": address,
        "AddressType": "public",
        "Alias": address.replace(":", "-"),
        "Paired": False,
        "Connected": False,
        "RSSI": rssi,
        "UUIDs": uuids or [],
        "ManufacturerData": {},
        "ServiceData": service_data or {},
    }


class BlueZScannerNoDBus(BleakScannerBlueZDBus):
    instances: ClassVar[list[BlueZScannerNoDBus]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # bleak's checks (e.g. passive needs or_patterns) run
        self.running = False
        BlueZScannerNoDBus.instances.append(self)

    async def start(self) -> None:
        self.seen_devices = {}
        self.running = True

    async def stop(self) -> None:
        self.running = False

    def advertise(self, props: dict[str, Any]) -> None:
        path = "/org/bluez/hci0/dev_" + props["Address"].replace(":", "_")
        self._handle_advertising_data(path, props)  # type: ignore[arg-type]  # bleak's BlueZ code path


class GattPeripheral(BaseBleakClient):
    """Whatever bleak connects to offers both our notify characteristics."""

    instances: ClassVar[list[GattPeripheral]] = []
    refuse_next: ClassVar[int] = 0

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=kwargs["disconnected_callback"], timeout=kwargs["timeout"]
        )
        self.connected = False
        self.subscriptions: dict[str, NotifyCallback] = {}
        GattPeripheral.instances.append(self)

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if GattPeripheral.refuse_next:
            GattPeripheral.refuse_next -= 1
            raise BleakError("le-connection-abort-by-local")
        services = BleakGATTServiceCollection()
        for handle, (service_uuid, char_uuid, prop) in enumerate(
            [
                (HEALTH_THERMOMETER_SERVICE_UUID, TEMPERATURE_MEASUREMENT_CHAR_UUID, "indicate"),
                (NW_SENSOR_SERVICE_UUID, NW_SENTENCE_CHAR_UUID, "notify"),
            ]
        ):
            service = BleakGATTService(None, handle * 10, service_uuid)
            services.add_service(service)
            services.add_characteristic(
                BleakGATTCharacteristic(None, handle * 10 + 1, char_uuid, [prop], lambda: 20, service)
            )
        self.services = services
        self.connected = True

    async def disconnect(self) -> None:
        self.connected = False

    def drop_link(self) -> None:
        """The peripheral goes out of range: bleak calls the disconnected callback."""
        self.connected = False
        assert self._disconnected_callback is not None
        self._disconnected_callback()

    def send(self, char_uuid: str, data: bytes) -> None:
        self.subscriptions[char_uuid](bytearray(data))

    @property
    def mtu_size(self) -> int:
        return 23  # the default ATT MTU: 20-byte notifications

    @property
    def is_connected(self) -> bool:
        return self.connected

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        self.subscriptions[characteristic.uuid] = callback

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        self.subscriptions.pop(characteristic.uuid, None)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def unpair(self) -> None:
        raise NotImplementedError

    async def read_gatt_char(self, *args: Any, **kwargs: Any) -> bytearray:
        raise NotImplementedError

    async def read_gatt_descriptor(self, *args: Any, **kwargs: Any) -> bytearray:
        raise NotImplementedError

    async def write_gatt_char(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def write_gatt_descriptor(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError


class Statuses:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, int | None]] = []

    def __call__(self, device_id: str, online: bool, rssi: int | None) -> None:
        self.calls.append((device_id, online, rssi))


@pytest.fixture(autouse=True)
def _fresh_fakes() -> None:
    BlueZScannerNoDBus.instances.clear()
    GattPeripheral.instances.clear()
    GattPeripheral.refuse_next = 0


def scanner_for(shell: BleShell) -> BlueZScannerNoDBus:
    """A scanner wired to the shell exactly as _start_scanner wires the real one (passive)."""
    return BlueZScannerNoDBus(shell.on_advertisement, None, "passive", bluez={"or_patterns": shell._or_patterns()})


# -- advertisements: BTHome through the detection callback


def test_bthome_adverts_become_air_readings_battery_and_presence() -> None:
    clock, statuses = ManualClock(), Statuses()
    air = with_channel(device("air-01", "air_ble", AIR))
    shell = BleShell([air], clock, statuses)
    scanner = scanner_for(shell)
    data = encode_bthome([(0x00, 7), (0x01, 88), (0x02, 22.5), (0x03, 41.25), (0x0D, 12), (0x0E, 20), (0x12, 812)])

    scanner.advertise(device1("11:22:33:44:55:66", -50, {BTHOME_SERVICE_UUID: data}))  # not ours
    assert statuses.calls == [] and air[1].readings(clock.now_ms()) == []

    scanner.advertise(device1(AIR, -71, {BTHOME_SERVICE_UUID: data}))
    start = clock.now_ms()
    clock.advance(300)
    scanner.advertise(device1(AIR, -69, {BTHOME_SERVICE_UUID: data}))  # BlueZ re-reports: RSSI changed
    assert statuses.calls == [("air-01", True, -71)]
    assert air[1].readings(clock.now_ms()) == [
        (
            Stream.AIR,
            AirReading(ts=start, seq=0, co2_ppm=812, pm25_ugm3=12, pm10_ugm3=20, temp_c=22.5, rh_pct=41.25),
        )
    ]
    assert air[1].readings(clock.now_ms()) == [], "the repeated advert is a duplicate"
    assert isinstance(air[1], BTHomeAirChannel) and air[1].duplicates == 1
    assert air[1].battery_pct() == 88

    clock.advance(89_000)
    shell.check_presence()
    assert statuses.calls[-1] == ("air-01", True, -71), "still within 90 s"
    clock.advance(2_000)
    shell.check_presence()
    assert statuses.calls[-1] == ("air-01", False, None)
    scanner.advertise(device1(AIR, -60, {BTHOME_SERVICE_UUID: encode_bthome([(0x00, 8), (0x12, 900)])}))
    assert statuses.calls[-1] == ("air-01", True, -60)


def test_encrypted_bthome_with_the_kits_bindkey() -> None:
    # Bluetooth-Devices/bthome-ble tests/test_parser_v2.py test_bindkey_correct: this advert, MAC and key.
    clock, statuses = ManualClock(), Statuses()
    air = with_channel(device("air-02", "air_ble", SHELLY, bindkey=KEY_HEX))
    shell = BleShell([air], clock, statuses)
    scanner_for(shell).advertise(
        device1(SHELLY, -80, {BTHOME_SERVICE_UUID: bytes.fromhex("41a47266c95f730011223378237214")})
    )
    assert air[1].readings(clock.now_ms()) == [
        (Stream.AIR, AirReading(ts=clock.now_ms(), seq=0, temp_c=25.06, rh_pct=50.55))
    ]
    assert not air[1].problems()


def test_encrypted_bthome_without_a_key_is_counted_not_used() -> None:
    clock, statuses = ManualClock(), Statuses()
    air = with_channel(device("air-03", "air_ble", SHELLY))
    shell = BleShell([air], clock, statuses)
    scanner_for(shell).advertise(
        device1(SHELLY, -80, {BTHOME_SERVICE_UUID: bytes.fromhex("41a47266c95f730011223378237214")})
    )
    assert air[1].readings(clock.now_ms()) == []
    assert air[1].problems() == {"encrypted_no_key": 1}
    assert (air[1].last_problem() or "").startswith("encrypted_no_key: encrypted advert and no bindkey configured")
    assert statuses.calls == [("air-03", True, -80)], "heard, so present, even if its data cannot be read"


def test_device_on_a_random_address_found_by_the_mac_in_its_payload() -> None:
    clock, statuses = ManualClock(), Statuses()
    air = with_channel(device("air-04", "air_ble", AIR))
    shell = BleShell([air], clock, statuses)
    data = encode_bthome([(0x12, 640)], mac=AIR, mac_in_payload=True)
    scanner_for(shell).advertise(device1("5E:11:22:33:44:55", -65, {BTHOME_SERVICE_UUID: data}))
    assert [r.co2_ppm for _, r in air[1].readings(clock.now_ms()) if isinstance(r, AirReading)] == [640]


def test_rssi_changes_are_reported_sparingly() -> None:
    clock, statuses = ManualClock(), Statuses()
    air = with_channel(device("air-01", "air_ble", AIR))
    shell = BleShell([air], clock, statuses)
    scanner = scanner_for(shell)

    def heard(rssi: int, after_s: int) -> None:
        clock.advance(after_s * 1000)
        scanner.advertise(device1(AIR, rssi, {BTHOME_SERVICE_UUID: encode_bthome([(0x12, 500)])}))
        shell.check_presence()

    heard(-70, 0)
    heard(-78, 10)
    assert statuses.calls == [("air-01", True, -70)], "8 dB, but within 60 s of the last report"
    heard(-78, 50)
    assert statuses.calls[-1] == ("air-01", True, -78), "60 s later"
    heard(-75, 70)
    assert statuses.calls[-1] == ("air-01", True, -78), "3 dB: not worth a retained status"
    heard(-90, 0)
    assert statuses.calls == [("air-01", True, -70), ("air-01", True, -78), ("air-01", True, -90)]


def test_a_channel_bug_does_not_escape_into_bleak(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(ThermometerChannel):
        def on_bytes(self, data: bytes, now_ms: int) -> None:
            raise RuntimeError("boom")

    clock, statuses = ManualClock(), Statuses()
    dev = device("air-09", "air_ble", AIR)
    shell = BleShell([(dev, Broken("air-09"))], clock, statuses)
    scanner_for(shell).advertise(device1(AIR, -50, {BTHOME_SERVICE_UUID: b"\x40"}))
    assert "air-09: error while handling 1 bytes" in caplog.text


# -- GATT: the whole loop on bleak + bleak-retry-connector, over a stand-in backend


async def test_gatt_devices_connect_notify_disconnect_and_reconnect() -> None:
    clock, statuses = ManualClock(), Statuses()
    thermo = with_channel(device("thermo-01", "thermometer", THERMO))
    clip = with_channel(device("clip-07", "posture_clip", CLIP))
    assert isinstance(thermo[1], ThermometerChannel) and isinstance(clip[1], ClipChannel)
    shell = BleShell(
        [thermo, clip],
        clock,
        statuses,
        min_backoff_s=0.01,
        max_backoff_s=0.05,
        scanner_backend=BlueZScannerNoDBus,
        client_backend=GattPeripheral,
    )
    GattPeripheral.refuse_next = 1  # the first attempt fails; bleak-retry-connector tries again
    task = asyncio.create_task(shell.run())
    try:
        await wait_until(lambda: bool(BlueZScannerNoDBus.instances) and BlueZScannerNoDBus.instances[-1].running)
        scanner = BlueZScannerNoDBus.instances[-1]
        assert shell.scanning_mode == "passive"
        scanner.advertise(device1(THERMO, -58, uuids=[HEALTH_THERMOMETER_SERVICE_UUID]))
        scanner.advertise(device1(CLIP, -64, uuids=[NW_SENSOR_SERVICE_UUID]))
        await wait_until(lambda: {c[0] for c in statuses.calls if c[1]} == {"thermo-01", "clip-07"})
        assert ("thermo-01", True, -58) in statuses.calls and ("clip-07", True, -64) in statuses.calls
        assert GattPeripheral.refuse_next == 0 and len(GattPeripheral.instances) == 2, "refused once, then retried"

        by_address = {p.address: p for p in GattPeripheral.instances if p.connected}
        by_address[THERMO].send(TEMPERATURE_MEASUREMENT_CHAR_UUID, encode_temperature_measurement(36.5))
        by_address[THERMO].send(TEMPERATURE_MEASUREMENT_CHAR_UUID, bytes.fromhex("00 FF FF 7F 00"))  # NaN
        assert thermo[1].readings(clock.now_ms()) == [
            (Stream.BODY_TEMP, BodyTempReading(ts=clock.now_ms(), seq=0, celsius=36.5))
        ]
        assert thermo[1].problems() == {"nan": 1}

        # default ATT MTU: a 20-byte payload, so the sentence comes in pieces
        sentence = encode_imu(42, 10, -5, -990)
        for i in range(0, len(sentence), 20):
            by_address[CLIP].send(NW_SENTENCE_CHAR_UUID, sentence[i : i + 20])
        assert clip[1].readings(clock.now_ms()) == [
            (
                Stream.POSTURE,
                PostureReading(ts=clock.now_ms(), seq=42, position=Position.PRONE, accel_mg=(10, -5, -990)),
            )
        ]

        # the clip drops its link half-way through a sentence, and comes back
        by_address[CLIP].send(NW_SENTENCE_CHAR_UUID, sentence[:20])
        by_address[CLIP].drop_link()
        await wait_until(lambda: statuses.calls[-1] == ("clip-07", False, None))
        await wait_until(lambda: statuses.calls[-1] == ("clip-07", True, -64))
        again = next(p for p in reversed(GattPeripheral.instances) if p.address == CLIP and p.connected)
        again.send(NW_SENTENCE_CHAR_UUID, encode_imu(43, 0, 0, 1000))
        assert [r.seq for _, r in clip[1].readings(clock.now_ms()) if isinstance(r, PostureReading)] == [43]
        assert clip[1].problems() == {}, "the half sentence was forgotten on reconnect, not counted as garbage"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert statuses.calls[-2:] in (
        [("thermo-01", False, None), ("clip-07", False, None)],
        [("clip-07", False, None), ("thermo-01", False, None)],
    ), "offline when the shell stops"


# -- no Bluetooth at all: this machine


async def test_without_bluetooth_the_shell_says_so_once_and_keeps_running(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    statuses = Statuses()
    devices = [with_channel(device("air-01", "air_ble", AIR)), with_channel(device("thermo-01", "thermometer", THERMO))]
    task = asyncio.create_task(run_ble(devices, ManualClock(), statuses))
    await asyncio.sleep(1.5)
    assert not task.done(), "the shell keeps waiting for an adapter instead of ending the edge"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    errors = [r for r in caplog.records if r.name == "edge.io.ble_shell" and r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert message.startswith("Bluetooth unavailable (passive scan: no D-Bus system bus or BlueZ")
    assert "BLE devices air-01, thermo-01 stay offline, retrying every 30 s" in message
    assert errors[0].exc_info is None, "no traceback"
    assert statuses.calls == []


async def test_no_adapter_message_comes_from_bleak() -> None:
    class NoAdapter(BlueZScannerNoDBus):
        async def start(self) -> None:
            raise BleakError("No Bluetooth adapters found.")

    shell = BleShell(
        [with_channel(device("air-01", "air_ble", AIR))], ManualClock(), Statuses(), scanner_backend=NoAdapter
    )
    scanner, error = await shell._start_scanner()
    assert scanner is None
    assert error == "passive scan: No Bluetooth adapters found.; active scan: No Bluetooth adapters found."


async def test_passive_scanning_refused_falls_back_to_active() -> None:
    class NoMonitor(BlueZScannerNoDBus):
        async def start(self) -> None:
            if self._scanning_mode == "passive":
                raise BleakError("org.bluez.Error.NotSupported")
            await super().start()

    shell = BleShell(
        [with_channel(device("air-01", "air_ble", AIR))], ManualClock(), Statuses(), scanner_backend=NoMonitor
    )
    scanner, _ = await shell._start_scanner()
    assert scanner is not None and shell.scanning_mode == "active"


# -- in the edge agent, with a real Mosquitto


def ble_kit(tmp_path: Path, site: str) -> Kit:
    """A serial posture clip (simulated on a pty), a BTHome air sensor and a thermometer on BLE."""
    (tmp_path / "kit.yaml").write_text(
        f"site: {site}\n"
        "name: test nursery\n"
        "rooms: [{id: room1, name: Room 1}]\n"
        "agents: [{id: pi-1}]\n"
        "children: [{id: c1, age_band: '1-2', room: room1}]\n"
        "devices:\n"
        "  - {id: clip-01, kind: posture_clip, room: room1, agent: pi-1,\n"
        "     transport: {type: serial, port: ports/clip-01}}\n"
        f"  - {{id: air-01, kind: air_ble, room: room1, agent: pi-1, transport: {{type: ble, address: '{AIR}'}}}}\n"
        "  - {id: thermo-01, kind: thermometer, room: room1, agent: pi-1, child: c1,\n"
        f"     transport: {{type: ble, address: '{THERMO.lower()}'}}}}\n"
    )
    return load_kit(tmp_path / "kit.yaml")


async def test_edge_without_bluetooth_serves_serial_and_reports_ble_offline(
    mosquitto: BrokerURL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    site = site_id()
    kit = ble_kit(tmp_path, site)
    posture = reading_topic(site, "clip-01", "posture")
    async with record(mosquitto, site) as rec:
        sim = asyncio.create_task(run_sim(kit, clip_scenario(10, (0, "supine"))))
        edge = asyncio.create_task(run_edge(kit, AGENT, mosquitto, ShiftedClock()))
        try:
            await rec.wait_for(lambda m: m.topic == posture, timeout=10)
            await rec.wait_for(is_status(site, "clip-01", True))
            hello = decode(EdgeStatus, rec.on(edge_topic(site, AGENT))[0].payload)
            assert hello.devices == ["clip-01", "air-01", "thermo-01"]
            for ble_device in ("air-01", "thermo-01"):
                assert [decode(DeviceStatus, m.payload).online for m in rec.on(status_topic(site, ble_device))] == [
                    False
                ]
        finally:
            await stop(edge)
            await stop(sim)
    assert "Bluetooth unavailable (passive scan: no D-Bus system bus or BlueZ" in caplog.text
    assert "Traceback" not in caplog.text


async def test_edge_publishes_ble_readings_and_status(
    mosquitto: BrokerURL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shells: list[BleShell] = []

    async def run_ble_on_stand_in(devices: list[tuple[Device, Channel]], clock: Clock, on_status: Any) -> None:
        shells.append(
            BleShell(devices, clock, on_status, scanner_backend=BlueZScannerNoDBus, client_backend=GattPeripheral)
        )
        await shells[-1].run()

    monkeypatch.setattr("edge.agent.runner.run_ble", run_ble_on_stand_in)  # the radio is the one stand-in
    site = site_id()
    kit = ble_kit(tmp_path, site)
    air, body = reading_topic(site, "air-01", "air"), reading_topic(site, "thermo-01", "body_temp")
    async with record(mosquitto, site) as rec:
        edge = asyncio.create_task(run_edge(kit, AGENT, mosquitto, ShiftedClock()))
        try:
            await wait_until(lambda: bool(BlueZScannerNoDBus.instances) and BlueZScannerNoDBus.instances[-1].running)
            scanner = BlueZScannerNoDBus.instances[-1]
            advert = encode_bthome([(0x00, 1), (0x01, 76), (0x02, 23.4), (0x03, 48.0), (0x12, 1234)])
            scanner.advertise(device1(AIR, -71, {BTHOME_SERVICE_UUID: advert}))
            scanner.advertise(device1(THERMO, -55, uuids=[HEALTH_THERMOMETER_SERVICE_UUID]))

            reading = decode(AirReading, (await rec.wait_for(lambda m: m.topic == air)).payload)
            assert (reading.co2_ppm, reading.temp_c, reading.rh_pct, reading.pm25_ugm3) == (1234, 23.4, 48.0, None)
            status = await rec.wait_for(
                lambda m: m.topic == status_topic(site, "air-01") and decode(DeviceStatus, m.payload).online
            )
            got = decode(DeviceStatus, status.payload)
            assert (got.rssi_dbm, got.battery_pct) == (-71, 76)

            await rec.wait_for(is_status(site, "thermo-01", True))
            peripheral = next(p for p in GattPeripheral.instances if p.connected)
            peripheral.send(TEMPERATURE_MEASUREMENT_CHAR_UUID, encode_temperature_measurement(37.2))
            temp = decode(BodyTempReading, (await rec.wait_for(lambda m: m.topic == body)).payload)
            assert temp.celsius == 37.2 and temp.ts >= ShiftedClock.START_MS
        finally:
            await stop(edge)
