"""Several broker URLs (nurserywatch/mqtt.py, run_session): tried in order, the next one at once when a
connection is refused or lost, round-robin, backoff only after a whole round failed — on real Mosquittos
and a real 3-node NATS cluster. The single-URL behaviour keeps its own tests (tests/e2e/test_chaos.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from typer.testing import CliRunner

from nurserywatch.cli.main import app
from nurserywatch.mqtt import BrokerURL, parse_brokers, run_session
from nurserywatch.ports import free_port
from tests.support.kits import write_kit
from tests.support.mosquitto import MosquittoProcess
from tests.support.nats_cluster import NatsCluster
from tests.support.waiting import wait_until


def test_parse_brokers_takes_a_comma_separated_list_in_order(tmp_path: Path) -> None:
    assert parse_brokers("mqtt://a:1883") == (BrokerURL("a", 1883),)
    assert parse_brokers("mqtt://a:1, mqtts://b ,mqtt://u:p%2Cq@c") == (
        BrokerURL("a", 1),
        BrokerURL("b", 8883, tls=True),
        BrokerURL("c", 1883, username="u", password="p,q"),
    )
    for bad, message in (
        ("", "no broker URL"),
        (" , ", "no broker URL"),
        ("mqtt://a:1,,mqtt://b:2", "empty URL between commas"),
        ("mqtt://a:1,http://b", "expected mqtt://host:port"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_brokers(bad)


class Probe:
    """A session that notes the port it got (the broker it is on) and follows the connection until it
    drops or ``done`` is set."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.done = asyncio.Event()

    async def session(self, client: aiomqtt.Client) -> None:
        await client.subscribe("probe/#", qos=1)
        self.ports.append(client._port)  # the broker this connection went to
        follow = asyncio.ensure_future(self._follow(client))
        done = asyncio.ensure_future(self.done.wait())
        await asyncio.wait({follow, done}, return_when=asyncio.FIRST_COMPLETED)
        for task in (follow, done):
            task.cancel()
        if follow.done() and not follow.cancelled():
            follow.result()  # the MqttError of a lost connection

    @staticmethod
    async def _follow(client: aiomqtt.Client) -> None:
        async for _ in client.messages:  # raises MqttError when the broker goes away
            pass


@pytest.fixture
def mosquittos(tmp_path: Path) -> Iterator[list[MosquittoProcess]]:
    brokers = [MosquittoProcess(tmp_path / f"m{i}", persistence=False) for i in range(2)]
    yield brokers
    for b in brokers:
        b.stop()


async def test_first_that_answers_and_failover_round_robin(mosquittos: list[MosquittoProcess]) -> None:
    a, b = mosquittos
    dead = BrokerURL("127.0.0.1", free_port())  # nothing listens there
    b.start()
    probe = Probe()
    task = asyncio.create_task(run_session([dead, a.url, b.url], "t-failover", probe.session))
    try:
        # Nothing at the first, the second not started: the third, within the first round (no backoff).
        await wait_until(lambda: probe.ports == [b.port], "a connection to the third URL", 10)
        a.start()
        b.stop()  # lost: the next in order is the dead one, then a, then b again
        await wait_until(lambda: probe.ports == [b.port, a.port], "failover to the second URL", 10)
        b.start()
        a.stop()
        await wait_until(lambda: probe.ports == [b.port, a.port, b.port], "round-robin back to the third", 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_order_is_kept_when_all_answer(mosquittos: list[MosquittoProcess]) -> None:
    for m in mosquittos:
        m.start()
    probe = Probe()
    task = asyncio.create_task(run_session([m.url for m in mosquittos], "t-order", probe.session))
    try:
        await wait_until(lambda: probe.ports == [mosquittos[0].port], "a connection to the first URL", 10)
        probe.done.set()
        await asyncio.wait_for(task, 10)  # the session returned: run_session returns
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_all_down_backs_off_and_connects_when_one_comes_back(
    mosquittos: list[MosquittoProcess], caplog: pytest.LogCaptureFixture
) -> None:
    probe = Probe()
    task = asyncio.create_task(run_session([m.url for m in mosquittos], "t-alldown", probe.session,
                                           max_backoff_s=0.5))  # fmt: skip
    try:
        with caplog.at_level(logging.WARNING, logger="nurserywatch.mqtt"):
            await wait_until(lambda: caplog.text.count("retrying in") >= 2, "two failed rounds", 10)
        assert caplog.text.count("trying mqtt://") >= 2  # each round went on to the second URL at once
        mosquittos[1].start()
        await wait_until(lambda: probe.ports == [mosquittos[1].port], "a connection once a broker is up", 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def cluster(nats_cluster: NatsCluster) -> NatsCluster:
    return nats_cluster


async def test_nats_cluster_node_killed_the_session_moves_to_the_next_node(cluster: NatsCluster) -> None:
    await cluster.warm()  # as at a site, where every node has clients (NatsCluster.warm)
    probe = Probe()
    task = asyncio.create_task(run_session(cluster.mqtt_urls, "t-nats-failover", probe.session))
    try:
        ports = [n.mqtt_port for n in cluster.nodes]
        await wait_until(lambda: probe.ports == ports[:1], "a connection to node 1", 20)
        killed = time.monotonic()
        cluster.kill(0)
        await wait_until(lambda: len(probe.ports) == 2, "a connection to another node", 30)
        print(f"reconnected to node port {probe.ports[1]} {time.monotonic() - killed:.2f} s after kill -9 of node 1")
        assert probe.ports[1] in ports[1:]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("part", ["edge", "gateway", "dashboard", "doctor"])
def test_a_bad_url_in_the_list_stops_the_part_with_one_line(part: str, tmp_path: Path) -> None:
    write_kit(tmp_path)
    result = CliRunner().invoke(app, [part, "--config", str(tmp_path / "kit.yaml"),
                                      "--broker", "mqtt://127.0.0.1:1,,mqtt://127.0.0.1:2"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: broker URLs 'mqtt://127.0.0.1:1,,mqtt://127.0.0.1:2': an empty URL between commas"
    )
