"""The light site traffic generator (tests/support/site_traffic.py) that tests/fleet/ and bench/fleet.py
drive the centre with: deterministic from its seed and time base, every payload a valid contract
message, alert lifecycles and signed records heads as a gateway makes them, and its audit — what was
published and acknowledged — matching what a subscriber of a real broker received (Mosquitto, and
nats-server's MQTT listener)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import time
from collections import defaultdict
from pathlib import Path

import aiomqtt
import pytest

from gateway.records.signing import signature_ok
from nurserywatch.clock import SystemClock
from nurserywatch.contract import AirReading, Alert, AlertState, DeviceStatus, TopicKind, alert_topic, parse_topic
from nurserywatch.keys import load_public_key
from nurserywatch.mqtt import BrokerURL
from tests.support.clock import T0
from tests.support.nats_cluster import NatsCluster
from tests.support.site_traffic import (
    Audit,
    Message,
    SiteTraffic,
    TrafficConfig,
    decode_message,
    message_key,
    publish,
    signed_head,
)
from tests.support.waiting import wait_until

#: Incidents and CO2 waves fast enough that a few minutes of schedule holds every alert change.
BUSY = TrafficConfig(sites=3, devices=20, seed=7, incident_mean_ms=20_000, co2_period_ms=60_000, air_ms=2_000)
_runs = itertools.count()


def test_the_same_seed_and_time_base_give_the_same_messages_however_they_are_taken() -> None:
    whole = SiteTraffic(BUSY, T0).due(T0 + 300_000)
    stepped = SiteTraffic(BUSY, T0)
    pieces = [m for t in [*range(0, 300_000, 777), 300_000] for m in stepped.due(T0 + t)]
    assert pieces == whole
    other = SiteTraffic(dataclasses.replace(BUSY, seed=8), T0).due(T0 + 300_000)
    assert [m.payload for m in other] != [m.payload for m in whole]
    assert [m.ts for m in whole] == sorted(m.ts for m in whole) and all(T0 <= m.ts <= T0 + 300_000 for m in whole)
    assert len({message_key(m.topic, m.payload) for m in whole}) == len(whole), "a receiver matches by key"


def test_every_message_is_a_contract_message_and_the_lifecycles_are_the_gateways(tmp_path: Path) -> None:
    traffic = SiteTraffic(BUSY, T0)
    keys = {site: load_public_key(path) for site, path in traffic.write_public_keys(tmp_path).items()}
    msgs = traffic.due(T0 + 300_000)
    kinds = defaultdict(list)
    for m in msgs:
        decode_message(m.topic, m.payload)  # raises ContractError for anything a receiver would refuse
        kinds[parse_topic(m.topic).kind].append(m)
    per_site_s = 300 * BUSY.sites
    assert len(kinds[TopicKind.GATEWAY]) == per_site_s and all(m.retain for m in kinds[TopicKind.GATEWAY])
    assert len(kinds[TopicKind.EDGE]) == BUSY.sites
    assert all(m.retain for k in (TopicKind.STATUS, TopicKind.EDGE, TopicKind.RECORDS_HEAD) for m in kinds[k])
    assert not any(m.retain for m in kinds[TopicKind.READING])
    for m in kinds[TopicKind.STATUS]:  # each names its device's room, as the edge's statuses do
        status = decode_message(m.topic, m.payload)
        assert isinstance(status, DeviceStatus) and status.room == traffic.rooms(m.site)[m.topic.rsplit("/", 1)[1]]
    # Readings: mats and clips every second, one air sensor a room every 2 s.
    assert len(kinds[TopicKind.READING]) == BUSY.sites * 300 * (18 + 2 / 2)
    # Each site's records head is signed by its own key, checkable with the public key alone.
    for m in kinds[TopicKind.RECORDS_HEAD]:
        head = signed_head(m.payload)
        assert head.head.site == m.site and signature_ok(head, keys[m.site])
        assert not signature_ok(head, keys[next(s for s in traffic.sites if s != m.site)])
    # CO2 crosses 1000 ppm in some rooms and not in others.
    air = [decode_message(m.topic, m.payload) for m in kinds[TopicKind.READING] if m.topic.endswith("/air")]
    co2 = [r.co2_ppm for r in air if isinstance(r, AirReading) and r.co2_ppm is not None]
    assert len(co2) == len(air) and min(co2) < 900 and max(co2) > 1000
    # Alerts: raised (retained), resolved and acknowledged in either order, then the final state not
    # retained and the retained message cleared — as the gateway publishes them.
    by_id: dict[str, list[Message]] = defaultdict(list)
    for m in kinds[TopicKind.ALERT]:
        by_id[m.topic].append(m)
    closed = 0
    for topic, changes in by_id.items():
        alerts = [Alert.model_validate_json(m.payload) for m in changes if m.payload]
        assert alerts[0].state is AlertState.ACTIVE and not alerts[0].acknowledged and changes[0].retain
        assert topic == alert_topic(changes[0].site, alerts[0].id)
        assert alerts[0].rule in ("prone", "co2") and (
            alerts[0].child is None or re.fullmatch(r"c\d{3}", alerts[0].child)
        )
        if len(changes) > 1 and not changes[-1].payload:
            closed += 1
            final = alerts[-1]
            assert final.state is AlertState.RESOLVED and final.acknowledged and not changes[-2].retain
            assert changes[-1].retain and all(m.retain for m in changes[:-2])
    rules = {Alert.model_validate_json(c[0].payload).rule for c in by_id.values()}
    assert closed >= 10 and rules == {"prone", "co2"}


@pytest.mark.parametrize("broker", ["mosquitto", "nats"])
async def test_what_was_acknowledged_is_what_a_subscriber_received(broker: str, request: pytest.FixtureRequest) -> None:
    """Three sites in real time for about 3 s on a real broker, every message checked off against a
    QoS 1 subscriber: 0 lost, none made up, each a contract message."""
    if broker == "nats":
        node: NatsCluster = request.getfixturevalue("nats_node")
        url = node.mqtt_urls[0]
    else:
        url = request.getfixturevalue("mosquitto")
    cfg = TrafficConfig(sites=3, devices=10, seed=next(_runs), prefix=f"tr{next(_runs)}x", incident_mean_ms=500,
                        co2_period_ms=4_000, air_ms=500, lifecycle_scale=0.01)  # fmt: skip
    clock = SystemClock()
    start = clock.now_ms()
    traffic = SiteTraffic(cfg, start)
    received: list[tuple[str, bytes]] = []
    async with _subscriber(url, [f"nurserywatch/v1/{s}/#" for s in traffic.sites]) as sub:

        async def collect() -> None:
            async for m in sub.messages:
                assert isinstance(m.payload, bytes)
                decode_message(m.topic.value, m.payload)
                received.append(message_key(m.topic.value, m.payload))

        collector = asyncio.create_task(collect())
        try:
            audit = await publish(traffic, lambda _site: url, clock, start + 3_000)
            await wait_until(lambda: len(received) >= len(audit.acked), "the subscriber to get every message", 20)
        finally:
            collector.cancel()
    assert audit.errors.total() == 0 and len(audit.acked) == len(audit.sent)
    assert audit.missing_from(received) == []
    assert sorted(received) == sorted(s.key for s in audit.sent), "nothing more than was published"
    kinds = audit.by_kind()
    assert kinds["reading"] >= 3 * 9 * 2 and kinds["gateway"] >= 3 * 2 and kinds["records_head"] == 3
    assert kinds["status"] == 30 and kinds["edge"] == 3
    alert_changes = [s for s in audit.sent if "/alert/" in s.topic]
    cleared = message_key("", b"")[1]
    assert any(s.digest == cleared for s in alert_changes), "alerts closed (and cleared) within the run"


def _subscriber(url: BrokerURL, filters: list[str]) -> _Subscribed:
    return _Subscribed(url, filters)


class _Subscribed:
    """A clean-session client subscribed (QoS 1) before the block runs. A NATS node's first MQTT client
    sets up the account's MQTT streams, which on a loaded machine outlasts a CONNECT: tried again
    for up to ``SETUP_S``."""

    SETUP_S = 60.0

    def __init__(self, url: BrokerURL, filters: list[str]) -> None:
        self.url, self.filters = url, filters
        self.client: aiomqtt.Client | None = None

    async def __aenter__(self) -> aiomqtt.Client:
        deadline = time.monotonic() + self.SETUP_S
        while True:
            client = aiomqtt.Client(self.url.host, self.url.port, identifier=f"traffic-audit-{next(_runs)}",
                                    clean_session=True)  # fmt: skip
            try:
                await client.__aenter__()
                break
            except aiomqtt.MqttError:
                if time.monotonic() > deadline:
                    raise
        self.client = client
        await client.subscribe([(f, 1) for f in self.filters], timeout=self.SETUP_S)
        return client

    async def __aexit__(self, *exc: object) -> None:
        assert self.client is not None
        await self.client.__aexit__(None, None, None)


@pytest.mark.e2e
async def test_a_node_killed_mid_run_its_sites_fail_over_and_nothing_acknowledged_is_lost(
    nats_cluster: NatsCluster,
) -> None:
    """Three sites on a 3-node cluster, each first on its own node; node 0 is killed -9 once it took
    traffic. Its site moves on to the next node and sends again what was not acknowledged: the
    subscriber on node 2 gets every acknowledged message (some perhaps twice: at least once)."""
    urls = nats_cluster.mqtt_urls  # (no warm-up: each node gets a site's client from the start)
    cfg = TrafficConfig(sites=3, devices=10, seed=5, prefix=f"fo{next(_runs)}x", incident_mean_ms=500,
                        co2_period_ms=4_000, air_ms=500, lifecycle_scale=0.01)  # fmt: skip
    order = {site: i for i, site in enumerate(cfg.site_ids())}
    first = cfg.site_ids()[0]  # on node 0 first
    audit = Audit()
    received: list[tuple[str, bytes]] = []
    async with _subscriber(urls[2], [f"nurserywatch/v1/{s}/#" for s in order]) as sub:
        clock = SystemClock()
        start = clock.now_ms()
        traffic = SiteTraffic(cfg, start)

        async def collect() -> None:
            async for m in sub.messages:
                assert isinstance(m.payload, bytes)
                received.append(message_key(m.topic.value, m.payload))

        async def kill_node_0() -> None:
            await wait_until(lambda: any(s.acked for s in audit.sent if s.site == first), "node 0 to take traffic", 60)
            nats_cluster.kill(0)

        collector = asyncio.create_task(collect())
        killer = asyncio.create_task(kill_node_0())
        try:
            brokers = {site: [*urls[i:], *urls[:i]] for site, i in order.items()}
            await publish(traffic, brokers.__getitem__, clock, start + 5_000, audit=audit)
            await killer
            await wait_until(lambda: not audit.missing_from(received), "the subscriber to get every message", 30)
        finally:
            collector.cancel()
            killer.cancel()
    assert audit.errors.total() == 0 and len(audit.acked) == len(audit.sent)
    assert audit.failovers >= 1 and audit.connects[first] >= 2
    assert set(received) <= {s.key for s in audit.sent}, "nothing that was not published"
