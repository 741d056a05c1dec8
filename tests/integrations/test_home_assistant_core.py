"""The discovery configs against Home Assistant itself (release 2024.1.6, the last for Python 3.11, in its
own venv made by scripts/bootstrap.sh --test; tests/support/home_assistant.py):

- every config passes Home Assistant's own MQTT discovery schemas (DISCOVERY_SCHEMA of its sensor and
  binary_sensor platforms, and the origin schema), and the schemas drop none of our keys;
- a real Home Assistant Core on the tests' Mosquitto, with the bridge running, makes one entity per
  config (the signal strengths are disabled by default), shows the values of readings, statuses and
  the rooms' alerts, answers its own birth message with the configs again, makes a device's entities
  unavailable when its edge agent's last will arrives, and logs no MQTT warning or error."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import aiomqtt

from gateway.integrations.home_assistant import discovery_configs
from gateway.integrations.home_assistant_bridge import BridgeStats, run_home_assistant_bridge
from nurserywatch import __version__
from nurserywatch.clock import ManualClock
from nurserywatch.contract import (
    AirReading,
    Alert,
    AlertState,
    BodyTempReading,
    BreathingReading,
    DeviceStatus,
    EdgeStatus,
    GatewayStatus,
    Position,
    PostureReading,
    Severity,
    Stream,
    alert_topic,
    edge_topic,
    gateway_topic,
    reading_topic,
    status_topic,
)
from nurserywatch.mqtt import BrokerURL
from tests.support.gateway_stack import client
from tests.support.home_assistant import HomeAssistantCore, ha_kit, schema_check
from tests.support.tasks import running
from tests.support.waiting import wait_until

T = 1_767_225_600_000
#: Keys newer Home Assistant releases take that 2024.1's schemas drop: a sensor's enum ``options``
#: (MQTT sensors since 2024.9, home-assistant/core PR 123248). 2024.1 shows the posture without them.
NEWER_KEYS = {"options"}


def test_every_config_passes_home_assistants_own_schemas() -> None:
    configs = discovery_configs(ha_kit(), __version__)
    items = [{"topic": c.topic, "component": c.component.value, "payload": c.payload} for c in configs]
    broken = {"topic": "broken", "component": "sensor",  # the checker itself must refuse a wrong config
              "payload": {"state_topic": "x", "device_class": "co2", "misspelt_key": 1}}  # fmt: skip
    results = schema_check([*items, broken])
    assert len(results) == len(configs) + 1
    assert [r for r in results[:-1] if r["error"] or set(r["dropped"]) - NEWER_KEYS] == []
    assert [r["topic"].split("/")[3] for r in results if r["dropped"]] == ["clip-02_posture"]
    assert "device_class" in results[-1]["error"]


class StateStream:
    """What mqtt_statestream publishes: ``{base}/{domain}/{object}/state`` and one topic per attribute."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.state: dict[str, str] = {}  # "domain/object" -> state
        self.names: dict[str, str] = {}  # friendly name -> "domain/object"

    async def run(self, c: aiomqtt.Client) -> None:
        async for m in c.messages:
            assert isinstance(m.payload, bytes | bytearray)
            domain, obj, what = m.topic.value[len(self.base) + 1:].split("/", 2)
            if what == "state":
                self.state[f"{domain}/{obj}"] = m.payload.decode()
            elif what == "friendly_name":
                self.names[json.loads(m.payload)] = f"{domain}/{obj}"

    def of(self, name: str) -> str | None:
        entity = self.names.get(name)
        return None if entity is None else self.state.get(entity)


async def _publish_site(pub: aiomqtt.Client, site: str, *, retained_only: bool) -> None:
    """The edge's and the gateway's retained state; then (not retained) one reading of each kind."""
    if retained_only:
        await pub.publish(gateway_topic(site), GatewayStatus(ts=T, online=True, heartbeat_s=1).to_json(), qos=1,
                          retain=True)  # fmt: skip
        devices = ["clip-01", "co2-01", "air-02", "mat-02", "clip-02", "thermo-02"]
        edge = EdgeStatus(ts=T, online=True, version="1.2.3", devices=devices, clock_ok=True)
        await pub.publish(edge_topic(site, "pi-1"), edge.to_json(), qos=1, retain=True)
        for d in devices:
            status = DeviceStatus(ts=T, online=True, battery_pct=87 if d == "air-02" else None, rssi_dbm=-60)
            await pub.publish(status_topic(site, d), status.to_json(), qos=1, retain=True)
        alert = Alert(id="prone-1", rule="prone", severity=Severity.CRITICAL, state=AlertState.ACTIVE, device="clip-01",
                      room="hiyoko", child="c001", started_ts=T, updated_ts=T, message="m", message_en="m")  # fmt: skip
        await pub.publish(alert_topic(site, "prone-1"), alert.to_json(), qos=1, retain=True)
        return
    readings = [
        ("co2-01", Stream.AIR, AirReading(ts=T, seq=1, co2_ppm=812)),
        ("air-02", Stream.AIR, AirReading(ts=T, seq=1, co2_ppm=650, pm25_ugm3=12, pm10_ugm3=20, temp_c=23.5,
                                          rh_pct=45)),  # fmt: skip
        ("mat-02", Stream.BREATHING, BreathingReading(ts=T, seq=1, rate_bpm=32, present=True, quality=0.9)),
        ("clip-02", Stream.POSTURE, PostureReading(ts=T, seq=1, position=Position.SUPINE)),
        ("clip-01", Stream.POSTURE, PostureReading(ts=T, seq=1, position=Position.PRONE)),  # hiyoko: not shown
        ("thermo-02", Stream.BODY_TEMP, BodyTempReading(ts=T, seq=1, celsius=36.6)),
    ]
    for d, stream, reading in readings:
        await pub.publish(reading_topic(site, d, stream), reading.to_json(), qos=1)


EXPECTED_STATES = {
    "co2-01 CO2": "812.0", "air-02 CO2": "650.0", "air-02 PM2.5": "12.0", "air-02 PM10": "20.0",
    "air-02 Temperature": "23.5", "air-02 Humidity": "45.0", "air-02 Battery": "87.0",
    "mat-02 Breathing rate": "32.0", "mat-02 On the mat": "on", "clip-02 Posture": "supine",
    "thermo-02 Body temperature": "36.6",
    "pi-1 Connectivity": "on", "co2-01 Connectivity": "on", "clip-01 Connectivity": "on",
    "ひよこ組 Alert": "on", "りす組 Alert": "off",
}  # fmt: skip


async def test_a_real_home_assistant_core_makes_the_entities(mosquitto: BrokerURL, tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:8]
    site, prefix, base = f"hacore{uid}", f"ha-{uid}", f"hastate-{uid}"
    kit = ha_kit({"enabled": True, "discovery_prefix": prefix, "birth_topic": f"{prefix}/status",
                  "rooms": {"risu": {"children": True}}}, site=site)  # fmt: skip
    configs = discovery_configs(kit, __version__)
    core = HomeAssistantCore(tmp_path / "ha", mosquitto, discovery_prefix=prefix, state_topic=base)
    stream, stats = StateStream(base), BridgeStats()
    async with client(mosquitto) as pub, client(mosquitto) as sub:
        await _publish_site(pub, site, retained_only=True)
        await sub.subscribe(f"{base}/#", qos=1)
        async with running(stream.run(sub)), running(run_home_assistant_bridge(kit, mosquitto, ManualClock(T),
                                                                               __version__, stats=stats)):  # fmt: skip
            await wait_until(lambda: stats.room_updates >= 2, "the bridge to publish", timeout_s=10)
            core.start()
            try:
                # Home Assistant's birth message: the bridge publishes every config again.
                await wait_until(lambda: stats.births >= 1, "Home Assistant's birth message", timeout_s=60)

                async def shown() -> bool:  # readings are not retained: sent until HA has subscribed
                    await _publish_site(pub, site, retained_only=False)
                    return all(stream.of(name) == value for name, value in EXPECTED_STATES.items())

                try:
                    await wait_until(shown, "the entities' states", timeout_s=30, every_s=0.3)
                except TimeoutError:
                    got = {name: stream.of(name) for name in EXPECTED_STATES}
                    raise AssertionError(f"states: {got}\n{core.log.read_text()[-4000:]}") from None
                disabled = [c for c in configs if c.payload.get("enabled_by_default") is False]
                assert len(stream.names) == len(configs) - len(disabled), sorted(stream.names)
                assert not any(name.startswith("clip-01 Posture") for name in stream.names)  # hiyoko did not opt in

                # The edge agent dies: its last will makes its devices' entities unavailable.
                await pub.publish(edge_topic(site, "pi-1"), EdgeStatus(online=False).to_json(), qos=1, retain=True)
                after = {"pi-1 Connectivity": "off", "co2-01 CO2": "unavailable", "co2-01 Connectivity": "unavailable",
                         "mat-02 Breathing rate": "unavailable", "ひよこ組 Alert": "on"}  # fmt: skip
                await wait_until(lambda: all(stream.of(n) == v for n, v in after.items()), "unavailable", timeout_s=10)
                # Read before the stop: stopping, mqtt_statestream (this test's eyes) warns of its own tasks.
                problems = [line for line in core.log_lines("WARNING", "ERROR") if "mqtt" in line.lower()]
                assert problems == [], "\n".join(problems)
            finally:
                core.stop()
    assert stats.rejected == {}


