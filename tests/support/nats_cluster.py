"""Real nats-server processes for the tests and benchmarks: one node or a cluster of three on loopback,
each with JetStream and an MQTT listener (the launcher is nurserywatch/nats_local.py, which
`nurserywatch demo --cluster` uses too). Fixtures: ``nats_cluster`` (3 nodes) and ``nats_node`` (1), fresh per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nurserywatch.nats_local import NATS_SERVER, NatsCluster, NatsNode

__all__ = ["NATS_SERVER", "NatsCluster", "NatsNode", "nats_cluster", "nats_node"]


def _running(d: Path, size: int) -> Iterator[NatsCluster]:
    c = NatsCluster(d, size=size)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nodes, started; stopped after the test."""
    yield from _running(tmp_path / "nats", 3)


@pytest.fixture
def nats_node(tmp_path: Path) -> Iterator[NatsCluster]:
    """One node, started; stopped after the test."""
    yield from _running(tmp_path / "nats", 1)
