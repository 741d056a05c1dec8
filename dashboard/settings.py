"""Dashboard settings from the environment (``NURSERYWATCH_*``), for running it on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from dashboard.i18n import Lang
from nurserywatch.kit import Kit, load_kit
from nurserywatch.mqtt import BrokerURL, parse_brokers


class DashboardSettings(BaseSettings):
    """``NURSERYWATCH_BROKER`` (one URL or several, comma-separated), ``NURSERYWATCH_KIT``,
    ``NURSERYWATCH_DASHBOARD_HOST``, ``NURSERYWATCH_DASHBOARD_PORT``, ``NURSERYWATCH_DASHBOARD_LANG``,
    ``NURSERYWATCH_GATEWAY_DB``, ``NURSERYWATCH_DASHBOARD_DATA_DIR``.

    Host and port carry a ``dashboard_`` prefix because every part shares the ``NURSERYWATCH_``
    namespace and a bare ``NURSERYWATCH_PORT`` would be ambiguous."""

    model_config = SettingsConfigDict(env_prefix="NURSERYWATCH_", extra="ignore")

    broker: str = "mqtt://127.0.0.1:1883"
    kit: Path = Path("configs/kit.example.yaml")
    # Loopback by default: exposing the staff view to the LAN is a deliberate choice.
    dashboard_host: str = "127.0.0.1"
    dashboard_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    dashboard_lang: Lang = "ja"
    #: The gateway's SQLite file, read-only (records, alert history, trends from SQLite).
    gateway_db: Path = Path("run/nurserywatch.sqlite3")
    #: The dashboard's own files (users, sessions, audit log).
    dashboard_data_dir: Path = Path("run")

    def brokers(self) -> tuple[BrokerURL, ...]:
        """The broker URL, or several separated by commas (a NATS cluster's nodes), tried in order as
        ``--broker`` takes them (nurserywatch/mqtt.py parse_brokers). ValueError when one is bad."""
        return parse_brokers(self.broker)

    def load_kit(self) -> Kit:
        return load_kit(self.kit)
