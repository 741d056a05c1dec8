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

    # ---- fleet mode (docs/fleet.md, "Fleet board"): the dashboard as the central fleet board
    #: The central NATS cluster's client URLs, comma-separated (``nats://host:4222,...``); set: fleet mode.
    fleet_nats: str | None = None
    #: Who the board connects as (the central cluster's FLEET account); or ``user:password@`` in a URL.
    fleet_nats_user: str | None = None
    fleet_nats_password: str | None = None
    #: The central JetStream domain, when the board reaches the cluster through a leaf node.
    fleet_nats_domain: str | None = None
    #: Shown in the page header.
    fleet_name: Annotated[str, Field(min_length=1, max_length=64)] = "nurserywatch fleet"
    #: The time zone of the board's server-rendered times and of "this month" (the board's table uses the browser's).
    fleet_timezone: str = "Asia/Tokyo"
    #: How often the board page re-reads the sites (seconds).
    fleet_refresh_s: Annotated[float, Field(ge=1, le=300)] = 5.0

    def fleet_servers(self) -> list[str]:
        """The fleet NATS URLs (empty: not in fleet mode); ValueError naming a URL that is not nats:// or tls://."""
        urls = [u.strip() for u in (self.fleet_nats or "").split(",") if u.strip()]
        for url in urls:
            if not url.startswith(("nats://", "tls://")):
                raise ValueError(f"NURSERYWATCH_FLEET_NATS: {url.rsplit('@', 1)[-1]!r} is not a nats:// or tls:// URL")
        return urls

    def brokers(self) -> tuple[BrokerURL, ...]:
        """The broker URL, or several separated by commas (a NATS cluster's nodes), tried in order as
        ``--broker`` takes them (nurserywatch/mqtt.py parse_brokers). ValueError when one is bad."""
        return parse_brokers(self.broker)

    def load_kit(self) -> Kit:
        return load_kit(self.kit)
