"""Real nats-server processes for the tests and benchmarks: one node or a cluster of three on loopback,
each with JetStream and an MQTT listener (the launcher is nurserywatch/nats_local.py, which
`nurserywatch demo --cluster` uses too). ``nats_cluster``: a fixture, a fresh 3-node cluster per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nurserywatch.nats_local import NATS_SERVER, NatsCluster, NatsNode

__all__ = ["NATS_SERVER", "NatsCluster", "NatsNode", "nats_cluster"]


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nodes, started; stopped after the test."""
    c = NatsCluster(tmp_path / "nats", size=3)
    c.start()
    try:
        yield c
    finally:
        c.stop()
