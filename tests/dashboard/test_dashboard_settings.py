"""DashboardSettings read from NURSERYWATCH_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dashboard.settings import DashboardSettings
from nurserywatch.mqtt import BrokerURL

ROOT = Path(__file__).resolve().parents[2]


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BROKER", "KIT", "DASHBOARD_HOST", "DASHBOARD_PORT", "DASHBOARD_LANG"):
        monkeypatch.delenv(f"NURSERYWATCH_{name}", raising=False)
    s = DashboardSettings()
    assert (s.dashboard_host, s.dashboard_port, s.dashboard_lang) == ("127.0.0.1", 8080, "ja")
    assert s.brokers() == (BrokerURL("127.0.0.1", 1883),)


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NURSERYWATCH_BROKER", "mqtts://staff:pw@broker.local")
    monkeypatch.setenv("NURSERYWATCH_KIT", str(ROOT / "configs" / "kit.example.yaml"))
    monkeypatch.setenv("NURSERYWATCH_DASHBOARD_HOST", "0.0.0.0")
    monkeypatch.setenv("NURSERYWATCH_DASHBOARD_PORT", "9000")
    monkeypatch.setenv("NURSERYWATCH_DASHBOARD_LANG", "en")
    s = DashboardSettings()
    assert s.brokers() == (BrokerURL("broker.local", 8883, "staff", "pw", tls=True),)
    assert s.load_kit().site == "himawari"
    assert (s.dashboard_host, s.dashboard_port, s.dashboard_lang) == ("0.0.0.0", 9000, "en")


@pytest.mark.parametrize(("name", "value"), [("DASHBOARD_PORT", "70000"), ("DASHBOARD_LANG", "fr")])
def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"NURSERYWATCH_{name}", value)
    with pytest.raises(ValidationError):
        DashboardSettings()


def test_several_brokers_separated_by_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NATS cluster's nodes, tried in order (as --broker takes them)."""
    monkeypatch.setenv("NURSERYWATCH_BROKER", "mqtt://n1.local:1883, mqtt://n2.local:1884,mqtts://u:p%2Cq@n3.local")
    assert DashboardSettings().brokers() == (
        BrokerURL("n1.local", 1883),
        BrokerURL("n2.local", 1884),
        BrokerURL("n3.local", 8883, "u", "p,q", tls=True),
    )
    monkeypatch.setenv("NURSERYWATCH_BROKER", "mqtt://n1.local,,mqtt://n2.local")
    with pytest.raises(ValueError, match="empty URL between commas"):
        DashboardSettings().brokers()
