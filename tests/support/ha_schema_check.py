"""Check MQTT discovery payloads with Home Assistant's own schemas. Run by the Python of the separate
Home Assistant Core venv (tests/support/home_assistant.py), never imported by the project: it needs
only Home Assistant. Reads ``[{"topic", "component", "payload"}, ...]`` as JSON on stdin and prints one
``{"topic", "error", "dropped"}`` per config: ``error`` is the schema's complaint or null; ``dropped``
the keys the schema removed (its DISCOVERY_SCHEMA drops what it does not know: a misspelt key would
otherwise pass unnoticed)."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

# Home Assistant's modules import one another in a cycle that its loader breaks by importing this first.
import homeassistant.helpers.entity_platform  # type: ignore[import-not-found]  # noqa: F401


def check(component: str, payload: dict[str, Any]) -> tuple[str | None, list[str]]:
    from homeassistant.components.mqtt.discovery import MQTT_ORIGIN_INFO_SCHEMA  # type: ignore[import-not-found]

    module = importlib.import_module(f"homeassistant.components.mqtt.{component}")
    try:
        if "origin" in payload:
            MQTT_ORIGIN_INFO_SCHEMA(dict(payload["origin"]))
        validated = module.DISCOVERY_SCHEMA(dict(payload))
    except Exception as exc:  # voluptuous.Invalid and its kin: the message is what matters
        return f"{type(exc).__name__}: {exc}", []
    return None, sorted(set(payload) - set(validated))


def main() -> None:
    results = []
    for item in json.load(sys.stdin):
        error, dropped = check(item["component"], item["payload"])
        results.append({"topic": item["topic"], "error": error, "dropped": dropped})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
