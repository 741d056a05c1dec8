"""Fixtures that start real services (Mosquitto, Chromium, InfluxDB, NATS) on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nurserywatch.mqtt import BrokerURL
from tests.support.browser import browser
from tests.support.fleet_cluster import fleet_transport
from tests.support.influx_servers import influxdb
from tests.support.mosquitto import MOSQUITTO, MosquittoProcess
from tests.support.nats_cluster import nats_cluster, nats_node

# Fixtures defined in tests/support, registered here for every test.
__all__ = ["browser", "fleet_transport", "influxdb", "nats_cluster", "nats_node"]


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerURL]:
    """A real Mosquitto broker on a free loopback port, for the whole test session."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed; run `make test`, which installs it")
    # Unbounded queues, as a provisioned broker is sized for its kit (docs/deploy.md): with Mosquitto's
    # default of 1,000 a burst test on a loaded machine had its readings silently dropped by the broker.
    broker = MosquittoProcess(
        tmp_path_factory.mktemp("mosquitto"), persistence=False, max_queued_messages=0,
        log_types=("error", "warning", "notice"),
    )
    try:
        broker.start()
        yield broker.url
    finally:
        broker.stop()
