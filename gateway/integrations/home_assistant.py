"""Home Assistant MQTT discovery configs of a site, from its kit (docs/integrations.md, "Home Assistant").
Pure: kit in, (topic, JSON payload) out; ``gateway/integrations/home_assistant_bridge.py`` publishes them.

What Home Assistant gets, every entity reading the contract's own topics (no copy of any reading):

- per air sensor (one HA device each): CO2, PM2.5, PM10, temperature, humidity — what its kind measures —
  from ``reading/{device}/air``;
- per device: connectivity (``status/{device}``), and battery and signal for Bluetooth devices;
- per edge agent: connectivity (``edge/{agent}``, retained, with the last will ``{"online": false}``);
- per room: a ``problem`` binary sensor from ``room_alerts/{room}`` (which the bridge derives);
- only in rooms that opt in (``home_assistant.rooms.{room}.children: true``): breathing rate and
  presence on the mat, posture, body temperature. Never a child's id or name.

Availability: a device's entities are available while its edge agent *and* the device are online
(``availability_mode: all``); its connectivity while its agent is (so it can say "disconnected"); a
room's alert while the gateway and the bridge are online.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nurserywatch.contract import (
    Position,
    Stream,
    bridge_topic,
    edge_topic,
    gateway_topic,
    reading_topic,
    room_alerts_topic,
    status_topic,
)
from nurserywatch.kit import BleTransport, Device, DeviceKind, Kit

#: The bridge's name in ``bridge/{name}`` (its status and last will).
BRIDGE_NAME = "home_assistant"

#: Availability from the contract's JSON status payloads ({"online": bool}): HA wants a plain payload.
ONLINE_TEMPLATE = "{{ 'online' if value_json.online else 'offline' }}"


class Component(StrEnum):
    SENSOR = "sensor"
    BINARY_SENSOR = "binary_sensor"


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """One entity's discovery message: retained on ``topic``; ``payload`` is its JSON object."""

    component: Component
    object_id: str
    topic: str
    payload: Mapping[str, Any]

    def to_json(self) -> bytes:
        return encode(self.payload)


def encode(payload: Mapping[str, Any]) -> bytes:
    # Sorted and compact: the same kit always gives the same bytes (tests, and no needless HA updates).
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class AirField:
    key: str  # the entity's suffix in ids
    field: str  # the AirReading field
    name: str
    device_class: str
    unit: str
    precision: int


CO2 = AirField("co2", "co2_ppm", "CO2", "carbon_dioxide", "ppm", 0)
PM25 = AirField("pm25", "pm25_ugm3", "PM2.5", "pm25", "\u00b5g/m\u00b3", 0)
PM10 = AirField("pm10", "pm10_ugm3", "PM10", "pm10", "\u00b5g/m\u00b3", 0)
TEMPERATURE = AirField("temperature", "temp_c", "Temperature", "temperature", "\u00b0C", 1)
HUMIDITY = AirField("humidity", "rh_pct", "Humidity", "humidity", "%", 0)

#: What each kind of air sensor measures. A BTHome sensor says in each advertisement what it has; the
#: kit does not, so it gets all five (those it never sends stay "unknown" in HA and can be disabled there).
AIR_FIELDS: dict[DeviceKind, tuple[AirField, ...]] = {
    DeviceKind.MHZ19B: (CO2,),
    DeviceKind.SENSEAIR_S8: (CO2,),
    DeviceKind.PMS5003: (PM25, PM10),
    DeviceKind.AIR_BLE: (CO2, PM25, PM10, TEMPERATURE, HUMIDITY),
}

#: (manufacturer or None, model) shown on each HA device.
MODELS: dict[DeviceKind, tuple[str | None, str]] = {
    DeviceKind.NAP_MAT: (None, "nap-check mat (NWMAT)"),
    DeviceKind.POSTURE_CLIP: (None, "posture clip (NWIMU)"),
    DeviceKind.THERMOMETER: (None, "body thermometer (Health Thermometer Service)"),
    DeviceKind.AIR_BLE: (None, "air sensor (BTHome v2)"),
    DeviceKind.PMS5003: ("Plantower", "PMS5003"),
    DeviceKind.MHZ19B: ("Winsen", "MH-Z19B"),
    DeviceKind.SENSEAIR_S8: ("Senseair", "S8"),
}


def node_id(site: str) -> str:
    """The discovery topic's node id: every config of this site sits under it (found again by it)."""
    return f"nurserywatch_{site}"


def config_topic(prefix: str, component: Component, site: str, object_id: str) -> str:
    return f"{prefix}/{component.value}/{node_id(site)}/{object_id}/config"


def config_filter(kit: Kit) -> str:
    """Every discovery config this site's bridge may have published (to find stale ones)."""
    return f"{kit.home_assistant.discovery_prefix}/+/{node_id(kit.site)}/+/config"


def _number(field: str, *, none_is_unknown: bool = False) -> str:
    # A field that is absent or null renders "" (HA keeps the last value) or "None" (HA: unknown).
    # Air values keep the last one: a sensor that sends CO2 and temperature in turns is not unknown
    # between them. A breathing rate of null means "no rate now": showing an old one would mislead.
    otherwise = "{% else %}None" if none_is_unknown else ""
    return f"{{% if value_json.{field} is number %}}{{{{ value_json.{field} }}}}{otherwise}{{% endif %}}"


class _Builder:
    def __init__(self, kit: Kit, version: str) -> None:
        self.kit = kit
        self.site = kit.site
        self.prefix = kit.home_assistant.discovery_prefix
        self.origin = {"name": "nurserywatch", "sw_version": version}
        self.out: list[DiscoveryConfig] = []

    def ident(self, *parts: str) -> str:
        return "_".join((node_id(self.site), *parts))

    def add(self, component: Component, object_id: str, payload: dict[str, Any]) -> None:
        payload = {"unique_id": self.ident(object_id), "origin": self.origin, "qos": 1, **payload}
        topic = config_topic(self.prefix, component, self.site, object_id)
        self.out.append(DiscoveryConfig(component, object_id, topic, payload))

    # -- HA devices

    def edge_device(self, agent: str) -> dict[str, Any]:
        return {"identifiers": [self.ident("edge", agent)], "name": agent, "manufacturer": "nurserywatch",
                "model": "edge agent"}  # fmt: skip

    def device_block(self, d: Device) -> dict[str, Any]:
        manufacturer, model = MODELS[d.kind]
        room = self.kit.room(d.room)
        block: dict[str, Any] = {"identifiers": [self.ident("device", d.id)], "name": d.id, "model": model,
                                 "via_device": self.ident("edge", d.agent)}  # fmt: skip
        if manufacturer is not None:
            block["manufacturer"] = manufacturer
        if room is not None:
            block["suggested_area"] = room.name
        return block

    def edge_online(self, agent: str) -> dict[str, str]:
        return {"topic": edge_topic(self.site, agent), "value_template": ONLINE_TEMPLATE}

    def device_available(self, d: Device) -> dict[str, Any]:
        status = {"topic": status_topic(self.site, d.id), "value_template": ONLINE_TEMPLATE}
        return {"availability": [self.edge_online(d.agent), status], "availability_mode": "all"}

    # -- entities

    def edge(self, agent: str) -> None:
        # No availability: an agent that is down is "disconnected" (its last will), not "unavailable".
        attributes = "{{ {'version': value_json.get('version'), 'clock_ok': value_json.get('clock_ok')} | tojson }}"
        self.add(Component.BINARY_SENSOR, f"edge_{agent}_online", {
            "name": "Connectivity", "device_class": "connectivity", "entity_category": "diagnostic",
            "state_topic": edge_topic(self.site, agent),
            "value_template": "{{ 'ON' if value_json.online else 'OFF' }}",
            "json_attributes_topic": edge_topic(self.site, agent), "json_attributes_template": attributes,
            "device": self.edge_device(agent),
        })  # fmt: skip

    def device_state(self, d: Device) -> None:
        status = status_topic(self.site, d.id)
        self.add(Component.BINARY_SENSOR, f"{d.id}_online", {
            "name": "Connectivity", "device_class": "connectivity", "entity_category": "diagnostic",
            "state_topic": status, "value_template": "{{ 'ON' if value_json.online else 'OFF' }}",
            "availability": [self.edge_online(d.agent)], "device": self.device_block(d),
        })  # fmt: skip
        if not isinstance(d.transport, BleTransport):
            return  # a serial device is powered by its edge: no battery, no radio
        self.add(Component.SENSOR, f"{d.id}_battery", {
            "name": "Battery", "device_class": "battery", "unit_of_measurement": "%", "state_class": "measurement",
            "entity_category": "diagnostic", "state_topic": status, "value_template": _number("battery_pct"),
            **self.device_available(d), "device": self.device_block(d),
        })  # fmt: skip
        self.add(Component.SENSOR, f"{d.id}_rssi", {
            "name": "Signal strength", "device_class": "signal_strength", "unit_of_measurement": "dBm",
            "state_class": "measurement", "entity_category": "diagnostic", "enabled_by_default": False,
            "state_topic": status, "value_template": _number("rssi_dbm"),
            **self.device_available(d), "device": self.device_block(d),
        })  # fmt: skip

    def air(self, d: Device) -> None:
        for f in AIR_FIELDS.get(d.kind, ()):
            self.add(Component.SENSOR, f"{d.id}_{f.key}", {
                "name": f.name, "device_class": f.device_class, "unit_of_measurement": f.unit,
                "state_class": "measurement", "suggested_display_precision": f.precision,
                "state_topic": reading_topic(self.site, d.id, Stream.AIR), "value_template": _number(f.field),
                **self.device_available(d), "device": self.device_block(d),
            })  # fmt: skip

    def child(self, d: Device) -> None:
        """A child's readings: only called for rooms that opted in."""
        common = {**self.device_available(d), "device": self.device_block(d)}
        if d.kind is DeviceKind.NAP_MAT:
            topic = reading_topic(self.site, d.id, Stream.BREATHING)
            self.add(Component.SENSOR, f"{d.id}_breathing_rate", {
                "name": "Breathing rate", "icon": "mdi:lungs", "unit_of_measurement": "bpm",
                "state_class": "measurement", "suggested_display_precision": 0, "state_topic": topic,
                "value_template": _number("rate_bpm", none_is_unknown=True), **common,
            })  # fmt: skip
            self.add(Component.BINARY_SENSOR, f"{d.id}_on_mat", {
                "name": "On the mat", "device_class": "occupancy", "state_topic": topic,
                "value_template": "{{ {true: 'ON', false: 'OFF'}.get(value_json.present, 'None') }}", **common,
            })  # fmt: skip
        elif d.kind is DeviceKind.POSTURE_CLIP:
            self.add(Component.SENSOR, f"{d.id}_posture", {
                "name": "Posture", "icon": "mdi:human-handsdown", "device_class": "enum",
                "options": [p.value for p in Position],
                "state_topic": reading_topic(self.site, d.id, Stream.POSTURE),
                "value_template": "{{ value_json.position }}", **common,
            })  # fmt: skip
        elif d.kind is DeviceKind.THERMOMETER:
            self.add(Component.SENSOR, f"{d.id}_body_temperature", {
                "name": "Body temperature", "device_class": "temperature", "unit_of_measurement": "\u00b0C",
                "state_class": "measurement", "suggested_display_precision": 1,
                "state_topic": reading_topic(self.site, d.id, Stream.BODY_TEMP),
                "value_template": _number("celsius"), **common,
            })  # fmt: skip

    def room(self, room_id: str, name: str) -> None:
        topic = room_alerts_topic(self.site, room_id)
        attributes = ("{{ {'active': value_json.active, 'unacknowledged': value_json.unacknowledged, "
                      "'severity': value_json.severity} | tojson }}")  # fmt: skip
        self.add(Component.BINARY_SENSOR, f"room_{room_id}_alert", {
            "name": "Alert", "device_class": "problem", "state_topic": topic,
            "value_template": "{{ 'ON' if value_json.problem else 'OFF' }}",
            "json_attributes_topic": topic, "json_attributes_template": attributes,
            "availability": [
                {"topic": gateway_topic(self.site), "value_template": ONLINE_TEMPLATE},
                {"topic": bridge_topic(self.site, BRIDGE_NAME), "value_template": ONLINE_TEMPLATE},
            ],
            "availability_mode": "all",
            "device": {"identifiers": [self.ident("room", room_id)], "name": name, "manufacturer": "nurserywatch",
                       "model": "room", "suggested_area": name},
        })  # fmt: skip


def discovery_configs(kit: Kit, version: str) -> list[DiscoveryConfig]:
    """Every discovery config of the kit, sorted by topic; empty when Home Assistant is not enabled.
    ``version``: nurserywatch's, shown as the entities' origin."""
    if not kit.home_assistant.enabled:
        return []
    b = _Builder(kit, version)
    for agent in kit.agents:
        b.edge(agent.id)
    for room in kit.rooms:
        b.room(room.id, room.name)
    for d in kit.devices:
        b.device_state(d)
        b.air(d)
        opted = kit.home_assistant.rooms.get(d.room)
        if opted is not None and opted.children:
            b.child(d)
    return sorted(b.out, key=lambda c: c.topic)


def stale_topics(seen: Iterable[str], current: Sequence[DiscoveryConfig]) -> list[str]:
    """Config topics found retained (``seen``, under ``config_filter``) that the kit no longer makes:
    a device taken out, a room that opted out of children's data. Publishing an empty retained payload
    on each removes the entity from Home Assistant."""
    wanted = {c.topic for c in current}
    return sorted(set(seen) - wanted)


class Birth(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    BAD = "bad"


def classify_birth(payload: bytes) -> Birth:
    """Home Assistant's birth ("online") and last will ("offline") messages; anything else is BAD."""
    text = payload.strip()
    if text == b"online":
        return Birth.ONLINE
    if text == b"offline":
        return Birth.OFFLINE
    return Birth.BAD
