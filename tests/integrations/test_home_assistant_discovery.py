"""Home Assistant discovery configs from a kit (gateway/integrations/home_assistant.py): the whole set of
topics, whole payloads per kind of entity, children's data only where a room opts in, stale configs,
birth messages; and the kit's ``home_assistant:`` section. Pure: no broker (the bridge's own test and
the real Home Assistant Core are in test_home_assistant_bridge.py and test_home_assistant_core.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.integrations.home_assistant import (
    Birth,
    Component,
    classify_birth,
    config_filter,
    discovery_configs,
    stale_topics,
)
from nurserywatch.kit import KitError, load_kit
from tests.support.home_assistant import SITE, ha_kit
from tests.support.kits import make_kit

R = f"nurserywatch/v1/{SITE}"
N = f"nurserywatch_{SITE}"
VERSION = "9.9.9"
ORIGIN = {"name": "nurserywatch", "sw_version": VERSION}
ONLINE = "{{ 'online' if value_json.online else 'offline' }}"
EDGE_UP = {"topic": f"{R}/edge/pi-1", "value_template": ONLINE}


def device(d: str, model: str, area: str, manufacturer: str | None = None) -> dict[str, Any]:
    block = {"identifiers": [f"{N}_device_{d}"], "name": d, "model": model, "via_device": f"{N}_edge_pi-1",
             "suggested_area": area}  # fmt: skip
    return block | ({"manufacturer": manufacturer} if manufacturer else {})


def available(d: str) -> dict[str, Any]:
    return {"availability": [EDGE_UP, {"topic": f"{R}/status/{d}", "value_template": ONLINE}],
            "availability_mode": "all"}  # fmt: skip


CO2_01 = device("co2-01", "MH-Z19B", "ひよこ組", "Winsen")
AIR_02 = device("air-02", "air sensor (BTHome v2)", "りす組")


def test_the_whole_set_of_configs() -> None:
    configs = discovery_configs(ha_kit(), VERSION)
    assert [c.topic for c in configs] == sorted(c.topic for c in configs)
    assert {(c.component, c.object_id) for c in configs} == {
        (Component.BINARY_SENSOR, o) for o in [
            "edge_pi-1_online", "room_hiyoko_alert", "room_risu_alert",
            "clip-01_online", "co2-01_online", "air-02_online", "mat-02_online", "clip-02_online", "thermo-02_online",
            "mat-02_on_mat",
        ]
    } | {
        (Component.SENSOR, o) for o in [
            "co2-01_co2",
            "air-02_co2", "air-02_pm25", "air-02_pm10", "air-02_temperature", "air-02_humidity",
            "air-02_battery", "air-02_rssi", "clip-02_battery", "clip-02_rssi", "thermo-02_battery", "thermo-02_rssi",
            "mat-02_breathing_rate", "clip-02_posture", "thermo-02_body_temperature",
        ]
    }  # fmt: skip
    for c in configs:
        assert c.topic == f"homeassistant/{c.component.value}/{N}/{c.object_id}/config"
        assert c.payload["unique_id"] == f"{N}_{c.object_id}"
        assert c.payload["origin"] == ORIGIN and c.payload["qos"] == 1
        assert b"c001" not in c.to_json() and b"c002" not in c.to_json()  # no child id, ever


EXPECTED: dict[str, dict[str, Any]] = {
    "co2-01_co2": {
        "name": "CO2", "device_class": "carbon_dioxide", "unit_of_measurement": "ppm", "state_class": "measurement",
        "suggested_display_precision": 0, "state_topic": f"{R}/reading/co2-01/air",
        "value_template": "{% if value_json.co2_ppm is number %}{{ value_json.co2_ppm }}{% endif %}",
        **available("co2-01"), "device": CO2_01,
    },
    "air-02_pm25": {
        "name": "PM2.5", "device_class": "pm25", "unit_of_measurement": "µg/m³", "state_class": "measurement",
        "suggested_display_precision": 0, "state_topic": f"{R}/reading/air-02/air",
        "value_template": "{% if value_json.pm25_ugm3 is number %}{{ value_json.pm25_ugm3 }}{% endif %}",
        **available("air-02"), "device": AIR_02,
    },
    "air-02_temperature": {
        "name": "Temperature", "device_class": "temperature", "unit_of_measurement": "°C",
        "state_class": "measurement", "suggested_display_precision": 1, "state_topic": f"{R}/reading/air-02/air",
        "value_template": "{% if value_json.temp_c is number %}{{ value_json.temp_c }}{% endif %}",
        **available("air-02"), "device": AIR_02,
    },
    "air-02_humidity": {
        "name": "Humidity", "device_class": "humidity", "unit_of_measurement": "%", "state_class": "measurement",
        "suggested_display_precision": 0, "state_topic": f"{R}/reading/air-02/air",
        "value_template": "{% if value_json.rh_pct is number %}{{ value_json.rh_pct }}{% endif %}",
        **available("air-02"), "device": AIR_02,
    },
    "co2-01_online": {
        "name": "Connectivity", "device_class": "connectivity", "entity_category": "diagnostic",
        "state_topic": f"{R}/status/co2-01", "value_template": "{{ 'ON' if value_json.online else 'OFF' }}",
        "availability": [EDGE_UP], "device": CO2_01,
    },
    "air-02_battery": {
        "name": "Battery", "device_class": "battery", "unit_of_measurement": "%", "state_class": "measurement",
        "entity_category": "diagnostic", "state_topic": f"{R}/status/air-02",
        "value_template": "{% if value_json.battery_pct is number %}{{ value_json.battery_pct }}{% endif %}",
        **available("air-02"), "device": AIR_02,
    },
    "air-02_rssi": {
        "name": "Signal strength", "device_class": "signal_strength", "unit_of_measurement": "dBm",
        "state_class": "measurement", "entity_category": "diagnostic", "enabled_by_default": False,
        "state_topic": f"{R}/status/air-02",
        "value_template": "{% if value_json.rssi_dbm is number %}{{ value_json.rssi_dbm }}{% endif %}",
        **available("air-02"), "device": AIR_02,
    },
    "edge_pi-1_online": {
        "name": "Connectivity", "device_class": "connectivity", "entity_category": "diagnostic",
        "state_topic": f"{R}/edge/pi-1", "value_template": "{{ 'ON' if value_json.online else 'OFF' }}",
        "json_attributes_topic": f"{R}/edge/pi-1",
        "json_attributes_template":
            "{{ {'version': value_json.get('version'), 'clock_ok': value_json.get('clock_ok')} | tojson }}",
        "device": {"identifiers": [f"{N}_edge_pi-1"], "name": "pi-1", "manufacturer": "nurserywatch",
                   "model": "edge agent"},
    },
    "room_hiyoko_alert": {
        "name": "Alert", "device_class": "problem", "state_topic": f"{R}/room_alerts/hiyoko",
        "value_template": "{{ 'ON' if value_json.problem else 'OFF' }}",
        "json_attributes_topic": f"{R}/room_alerts/hiyoko",
        "json_attributes_template": "{{ {'active': value_json.active, 'unacknowledged': value_json.unacknowledged, "
                                    "'severity': value_json.severity} | tojson }}",
        "availability": [{"topic": f"{R}/gateway", "value_template": ONLINE},
                         {"topic": f"{R}/bridge/home_assistant", "value_template": ONLINE}],
        "availability_mode": "all",
        "device": {"identifiers": [f"{N}_room_hiyoko"], "name": "ひよこ組", "manufacturer": "nurserywatch",
                   "model": "room", "suggested_area": "ひよこ組"},
    },
    "mat-02_breathing_rate": {
        "name": "Breathing rate", "icon": "mdi:lungs", "unit_of_measurement": "bpm", "state_class": "measurement",
        "suggested_display_precision": 0, "state_topic": f"{R}/reading/mat-02/breathing",
        "value_template": "{% if value_json.rate_bpm is number %}{{ value_json.rate_bpm }}{% else %}None{% endif %}",
        **available("mat-02"), "device": device("mat-02", "nap-check mat (NWMAT)", "りす組"),
    },
    "mat-02_on_mat": {
        "name": "On the mat", "device_class": "occupancy", "state_topic": f"{R}/reading/mat-02/breathing",
        "value_template": "{{ {true: 'ON', false: 'OFF'}.get(value_json.present, 'None') }}",
        **available("mat-02"), "device": device("mat-02", "nap-check mat (NWMAT)", "りす組"),
    },
    "clip-02_posture": {
        "name": "Posture", "icon": "mdi:human-handsdown", "device_class": "enum",
        "options": ["supine", "prone", "left", "right", "upright", "unknown"],
        "state_topic": f"{R}/reading/clip-02/posture", "value_template": "{{ value_json.position }}",
        **available("clip-02"), "device": device("clip-02", "posture clip (NWIMU)", "りす組"),
    },
    "thermo-02_body_temperature": {
        "name": "Body temperature", "device_class": "temperature", "unit_of_measurement": "°C",
        "state_class": "measurement", "suggested_display_precision": 1,
        "state_topic": f"{R}/reading/thermo-02/body_temp",
        "value_template": "{% if value_json.celsius is number %}{{ value_json.celsius }}{% endif %}",
        **available("thermo-02"),
        "device": device("thermo-02", "body thermometer (Health Thermometer Service)", "りす組"),
    },
}  # fmt: skip


@pytest.mark.parametrize("object_id", EXPECTED)
def test_whole_payloads(object_id: str) -> None:
    by_id = {c.object_id: c for c in discovery_configs(ha_kit(), VERSION)}
    assert dict(by_id[object_id].payload) == {"unique_id": f"{N}_{object_id}", "origin": ORIGIN, "qos": 1,
                                              **EXPECTED[object_id]}  # fmt: skip


def test_payload_bytes_are_stable_compact_json_in_utf8() -> None:
    room = next(c for c in discovery_configs(ha_kit(), VERSION) if c.object_id == "room_hiyoko_alert")
    raw = room.to_json()
    assert "ひよこ組".encode() in raw and b'"availability":[{' in raw and raw.startswith(b'{"availability"')
    assert raw == next(c for c in discovery_configs(ha_kit(), VERSION) if c.object_id == "room_hiyoko_alert").to_json()


@pytest.mark.parametrize(
    ("home_assistant", "children_entities"),
    [
        ({"enabled": True}, set()),  # nobody opted in: no child's data at all
        ({"enabled": True, "rooms": {"risu": {"children": False}}}, set()),
        ({"enabled": True, "rooms": {"risu": {"children": True}}},
         {"mat-02_breathing_rate", "mat-02_on_mat", "clip-02_posture", "thermo-02_body_temperature"}),
        # hiyoko opted in: its clip's posture only (risu's devices stay out)
        ({"enabled": True, "rooms": {"hiyoko": {"children": True}}}, {"clip-01_posture"}),
    ],
)  # fmt: skip
def test_childrens_data_only_where_a_room_opts_in(home_assistant: dict[str, Any], children_entities: set[str]) -> None:
    ids = {c.object_id for c in discovery_configs(ha_kit(home_assistant), VERSION)}
    children = {i for i in ids if i.endswith(("_breathing_rate", "_on_mat", "_posture", "_body_temperature"))}
    assert children == children_entities
    # The rest is the same whatever the rooms say: devices' state, air and the rooms' alerts.
    assert {"clip-01_online", "mat-02_online", "thermo-02_battery", "room_risu_alert", "air-02_co2"} <= ids


def test_nothing_unless_enabled() -> None:
    assert discovery_configs(ha_kit({}), VERSION) == []
    assert discovery_configs(ha_kit({"enabled": False, "rooms": {"risu": {"children": True}}}), VERSION) == []


def test_another_discovery_prefix() -> None:
    kit = ha_kit({"enabled": True, "discovery_prefix": "ha/site-1"})
    assert {c.topic.split(f"/{N}/")[0] for c in discovery_configs(kit, VERSION)} == {
        "ha/site-1/sensor", "ha/site-1/binary_sensor"}  # fmt: skip
    assert config_filter(kit) == f"ha/site-1/+/{N}/+/config"


@pytest.mark.parametrize(
    ("seen", "stale"),
    [
        ([], []),
        ([f"homeassistant/sensor/{N}/co2-01_co2/config"], []),  # still made: kept
        ([f"homeassistant/sensor/{N}/gone-01_co2/config", f"homeassistant/sensor/{N}/co2-01_co2/config"],
         [f"homeassistant/sensor/{N}/gone-01_co2/config"]),  # a device taken out of the kit
        ([f"homeassistant/sensor/{N}/clip-02_posture/config"], []),
    ],
)  # fmt: skip
def test_stale_topics(seen: list[str], stale: list[str]) -> None:
    assert stale_topics(seen, discovery_configs(ha_kit(), VERSION)) == stale


def test_a_room_opting_out_makes_its_childrens_configs_stale() -> None:
    before = [c.topic for c in discovery_configs(ha_kit(), VERSION)]
    after = discovery_configs(ha_kit({"enabled": True}), VERSION)
    assert [t.split("/")[3] for t in stale_topics(before, after)] == [
        "mat-02_on_mat", "clip-02_posture", "mat-02_breathing_rate", "thermo-02_body_temperature"]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "birth"),
    [(b"online", Birth.ONLINE), (b"online\n", Birth.ONLINE), (b"offline", Birth.OFFLINE), (b"", Birth.BAD),
     (b"ONLINE", Birth.BAD), (b'{"online": true}', Birth.BAD), (b"\xff\xfe", Birth.BAD)],
)  # fmt: skip
def test_birth_messages(payload: bytes, birth: Birth) -> None:
    assert classify_birth(payload) is birth


# ---------------------------------------------------------------- the kit's section


def _kit_file(tmp_path: Path, home_assistant: object) -> Path:
    data = ha_kit().model_dump(mode="json")
    data["home_assistant"] = home_assistant
    path = tmp_path / "kit.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def test_kit_section_defaults_to_off() -> None:
    ha = make_kit().home_assistant
    assert (ha.enabled, ha.discovery_prefix, ha.birth_topic, ha.rooms) == (False, "homeassistant",
                                                                           "homeassistant/status", {})  # fmt: skip


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"enabled": True, "rooms": {"panda": {"children": True}}},
         "home_assistant.rooms.panda (line 80): 'panda' is not a room id defined in this kit (known: hiyoko, risu)"),
        ({"enabled": True, "rooms": {"risu": {"childern": True}}}, "home_assistant.rooms.risu.childern (line 81): "
                                                                   "unknown key"),
        ({"enabled": True, "discovery_prefix": "home/#"}, "discovery_prefix"),
        ({"enabled": "yes please"}, "enabled"),
    ],
)  # fmt: skip
def test_bad_kit_sections_are_named(tmp_path: Path, section: object, message: str) -> None:
    with pytest.raises(KitError) as exc:
        load_kit(_kit_file(tmp_path, section))
    assert message in str(exc.value), str(exc.value)


def test_example_kit_section_loads(tmp_path: Path) -> None:
    """The commented example in configs/kit.example.yaml, uncommented, is a valid kit."""
    example = Path(__file__).resolve().parents[2] / "configs" / "kit.example.yaml"
    lines = example.read_text().splitlines()
    start = lines.index("# home_assistant:")
    block = [line[2:] for line in lines[start:] if line.startswith("# ")]
    section = yaml.safe_load("\n".join(block))
    kit = load_kit(_example_with(tmp_path, example, section))
    assert kit.home_assistant.enabled and kit.home_assistant.rooms["hiyoko"].children


def _example_with(tmp_path: Path, example: Path, section: dict[str, Any]) -> Path:
    data = yaml.safe_load(example.read_text())
    data.update(section)
    path = tmp_path / "kit.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path
