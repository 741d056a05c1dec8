"""A real Home Assistant Core for the tests, from its own venv (``.venv/homeassistant``, made by
``scripts/bootstrap.sh --test``: its pins — httpx 0.26, cryptography 41, … — conflict with the project's).

``ha_kit`` is the tests' kit: two rooms, one of them opted in to children's data.
``HomeAssistantCore`` runs ``hass`` on a private config folder: its MQTT integration set up on the
tests' Mosquitto (a config entry written beforehand, as the UI would), discovery under a prefix of the
test's own, and ``mqtt_statestream`` publishing every entity's state and attributes back over MQTT
under ``state_topic`` — so a test reads what Home Assistant made of the discovery configs without its
web API. ``schema_check`` runs ``ha_schema_check.py`` with Home Assistant's own discovery schemas."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from nurserywatch.kit import Kit
from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port
from tests.support.kits import make_kit
from tests.support.processes import stop

ROOT = Path(__file__).resolve().parents[2]
HA_VENV = ROOT / ".venv" / "homeassistant"
HASS = HA_VENV / "bin" / "hass"
HA_PYTHON = HA_VENV / "bin" / "python"
SCHEMA_CHECK = Path(__file__).with_name("ha_schema_check.py")
#: The release scripts/bootstrap.sh installs: the last one for Python 3.11.
HA_VERSION = "2024.1.6"
SITE = "himawari"


def ha_kit(home_assistant: dict[str, Any] | None = None, site: str = SITE) -> Kit:
    """Two rooms; only risu opts in to children's data. hiyoko: a clip (serial) and a CO2 sensor;
    risu: a BTHome air sensor, a mat, a clip and a thermometer watching c002 (Bluetooth but the mat)."""
    base = make_kit(
        site,
        rooms={"hiyoko": "ひよこ組", "risu": "りす組"},
        children={"c001": "0", "c002": {"age_band": "1-2", "room": "risu"}},
        devices={
            "clip-01": "c001",
            "co2-01": {"kind": "mhz19b"},
            "air-02": {"kind": "air_ble", "room": "risu"},
            "mat-02": {"kind": "nap_mat", "child": "c002", "room": "risu"},
            "clip-02": {"kind": "posture_clip", "child": "c002", "room": "risu",
                        "transport": {"type": "ble", "address": "AA:BB:CC:00:00:02"}},
            "thermo-02": {"kind": "thermometer", "child": "c002", "room": "risu"},
        },
    )  # fmt: skip
    ha = home_assistant if home_assistant is not None else {"enabled": True, "rooms": {"risu": {"children": True}}}
    return Kit.model_validate({**base.model_dump(), "home_assistant": ha})


def require_home_assistant() -> None:
    """Fail (skip only on a Python that Home Assistant 2024.1 does not install on) without it."""
    if HASS.exists():
        return
    if sys.version_info >= (3, 13):
        pytest.skip(f"Home Assistant {HA_VERSION} does not install on Python {sys.version.split()[0]}")
    pytest.fail(f"Home Assistant Core is not installed in {HA_VENV}; run scripts/bootstrap.sh --test")


def schema_check(configs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each ``{"topic", "component", "payload"}`` through Home Assistant's DISCOVERY_SCHEMA."""
    require_home_assistant()
    done = subprocess.run([str(HA_PYTHON), str(SCHEMA_CHECK)], input=json.dumps(configs).encode(),
                          capture_output=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


class HomeAssistantCore:
    def __init__(self, d: Path, broker: BrokerURL, *, discovery_prefix: str, state_topic: str) -> None:
        require_home_assistant()
        self.dir = d
        self.log = d / "hass.out"
        self.discovery_prefix = discovery_prefix
        self.birth_topic = f"{discovery_prefix}/status"
        config = d / "config"
        (config / ".storage").mkdir(parents=True, exist_ok=True)
        (config / "configuration.yaml").write_text(
            "homeassistant:\n"
            "  name: nurserywatch test\n  latitude: 35.68\n  longitude: 139.77\n  elevation: 0\n"
            "  unit_system: metric\n  time_zone: Asia/Tokyo\n  country: JP\n  currency: JPY\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {free_port()}\n"
            f"mqtt_statestream:\n  base_topic: {state_topic}\n  publish_attributes: true\n"
            "logger:\n  default: warning\n"
        )
        # The MQTT integration is set up from the UI only (no YAML): its config entry, as the UI stores it.
        entry = {
            "entry_id": "nurserywatchtestmqtt0000000000", "version": 1, "minor_version": 1, "domain": "mqtt",
            "title": broker.host, "options": {}, "pref_disable_new_entities": False, "pref_disable_polling": False,
            "source": "user", "unique_id": None, "disabled_by": None,
            "data": {
                "broker": broker.host, "port": broker.port, "discovery": True, "discovery_prefix": discovery_prefix,
                "birth_message": {"topic": self.birth_topic, "payload": "online", "qos": 0, "retain": False},
                "will_message": {"topic": self.birth_topic, "payload": "offline", "qos": 0, "retain": False},
            },
        }  # fmt: skip
        storage = {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [entry]}}
        (config / ".storage" / "core.config_entries").write_text(json.dumps(storage))
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # --skip-pip: its requirements are in its venv already (the tests reach no package index).
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([str(HASS), "-c", str(self.config), "--skip-pip", "--log-no-color"],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def log_lines(self, *levels: str) -> list[str]:
        """Home Assistant's log lines of these levels (a line starts with its time, then the level)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if line[24:].split(" ", 1)[0] in levels]
