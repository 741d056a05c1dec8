"""The gateway's JetStream shell (gateway/service/jetstream.py) on a REAL nats-server (one node, JetStream
and its MQTT listener): readings published over MQTT QoS 1 reach the input stream, are stored once and
acknowledged only after their commit (the gateway consumes nats-server's own stream of what it accepted
over MQTT); a backlog is drained a bounded batch at a time; alerts go out
retained over MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiomqtt
import nats
import pytest
from nats.js import api

from gateway.config import RulesConfig
from gateway.db.reader import StoreReader
from gateway.engine.stats import GatewayStats
from gateway.service.engine_host import EngineOptions, running_engine
from gateway.service.jetstream import (
    FETCH_BATCH,
    JetStreamGateway,
    JetStreamStats,
    ensure_input,
    run_jetstream_gateway,
    touch_mqtt,
)
from nurserywatch.clock import ManualClock
from nurserywatch.contract import (
    Alert,
    BreathingReading,
    Position,
    PostureReading,
    TopicKind,
    decode,
    reading_topic,
    subscription,
)
from nurserywatch.jetstream import MQTT_SUBJECT_PREFIX, SiteLayout, mqtt_filter_to_subject
from nurserywatch.kit import Kit
from tests.support.clock import T0
from tests.support.commands import COMMAND_VERIFIER
from tests.support.gateway_stack import retained
from tests.support.kits import make_kit
from tests.support.nats_cluster import NatsCluster
from tests.support.swallowed_cancel import SwallowedCancel
from tests.support.waiting import wait_until

TICKING = RulesConfig(tick_ms=50)
_sites = itertools.count()


@pytest.fixture
def node(nats_node: NatsCluster) -> NatsCluster:
    return nats_node


def kit_with_mat() -> Kit:
    return make_kit(f"js{next(_sites)}", devices={"clip-01": "c001", "mat-1": {"kind": "nap_mat", "child": "c001"}})


@contextlib.asynccontextmanager
async def running(kit: Kit, cluster: NatsCluster, db: Path, clock: ManualClock) -> AsyncIterator[
        tuple[GatewayStats, JetStreamStats]]:  # fmt: skip
    stats, js_stats = GatewayStats(), JetStreamStats()
    gw = run_jetstream_gateway(kit, cluster.nats_urls, cluster.mqtt_urls, db, TICKING, clock,
                               EngineOptions(stats=stats, command_key=COMMAND_VERIFIER), js_stats=js_stats)  # fmt: skip
    task = asyncio.create_task(gw)
    try:
        await wait_until(lambda: stats.sessions >= 2 or task.done(), "the gateway to consume and connect", 20)
        if task.done():
            task.result()
        yield stats, js_stats
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert stats.rejected["internal_error"] == 0


async def settled(cluster: NatsCluster, layout: SiteLayout) -> bool:
    """Nothing pending or unacknowledged. (The gateway sends its acks without waiting for an answer:
    they land a moment after it counted them.)"""
    info = await consumer(cluster, layout)
    return info.num_ack_pending == 0 and info.num_pending == 0


def touch(cluster: NatsCluster) -> Callable[[], Awaitable[None]]:
    return functools.partial(touch_mqtt, cluster.mqtt_urls, "touch")


def stored_subject(kit: Kit) -> str:
    """A clip's posture subject as nats-server stores what it accepted over MQTT: publishing there
    directly fills a backlog faster than MQTT would."""
    return MQTT_SUBJECT_PREFIX + mqtt_filter_to_subject(reading_topic(kit.site, "clip-01", "posture"))


async def consumer(cluster: NatsCluster, layout: SiteLayout) -> api.ConsumerInfo:
    nc = await nats.connect(cluster.nats_urls)
    try:
        info: api.ConsumerInfo = await nc.jetstream().consumer_info(layout.input_stream, layout.consumer)
        return info
    finally:
        await nc.close()


async def test_readings_over_mqtt_stored_once_acked_and_an_apnea_alert_retained(node: NatsCluster,
                                                                                 tmp_path: Path) -> None:  # fmt: skip
    kit = kit_with_mat()
    layout = SiteLayout(kit.site)
    clock = ManualClock(T0)
    db = tmp_path / "gw.sqlite3"
    broker = node.mqtt_urls[0]
    async with running(kit, node, db, clock) as (stats, js_stats):
        async with aiomqtt.Client(broker.host, broker.port, identifier="edge", clean_session=True) as edge:
            for s in range(1, 31):  # breathing stops after 5 s: an apnea 20 s later
                now = T0 + s * 1000
                clock.set(now)
                reading = BreathingReading(ts=now, seq=s, present=True, rate_bpm=None if s > 5 else 30.0,
                                           last_breath_ts=T0 + min(s, 5) * 1000, motion=0.05, quality=0.9)  # fmt: skip
                await edge.publish(reading_topic(kit.site, "mat-1", "breathing"), reading.to_json(), qos=1)
                posture = PostureReading(ts=now, seq=s, position=Position.SUPINE)
                await edge.publish(reading_topic(kit.site, "clip-01", "posture"), posture.to_json(), qos=1)
                await wait_until(lambda s=s: stats.readings_received >= 2 * s, "the gateway to take the readings")  # type: ignore[misc]
            await wait_until(lambda: js_stats.acked >= 60, "every reading acknowledged")
        found = {}

        async def apnea_retained() -> bool:
            found.update(await retained(broker, subscription(kit.site, TopicKind.ALERT)))
            return any(decode(Alert, p).rule == "apnea" for p in found.values())

        await wait_until(apnea_retained, "the apnea alert retained", 10, every_s=0.2)
        await wait_until(lambda: settled(node, layout), "the consumer to hold no unacknowledged message", 10)
        info = await consumer(node, layout)
    assert StoreReader(db).count_readings() == 60 and stats.readings_stored == 60
    assert info.num_redelivered == 0
    assert js_stats.acked == 60


class _Killed(Exception):
    pass


class DiesBeforeAck(JetStreamGateway):
    """Commits, then dies before its first acknowledgement (a gateway killed between the two)."""

    committed = 0

    async def _flush(self) -> None:
        if self._committed or self.engine.store.in_batch:
            self.engine.commit()
            DiesBeforeAck.committed = self.engine.stats.readings_stored
            raise _Killed
        await super()._flush()


async def test_killed_between_commit_and_ack_the_readings_come_again_and_stored_once(
    node: NatsCluster, tmp_path: Path
) -> None:
    kit = kit_with_mat()
    layout = SiteLayout(kit.site)
    clock = ManualClock(T0 + 100_000)
    db = tmp_path / "gw.sqlite3"
    nc = await nats.connect(node.nats_urls)
    js = nc.jetstream()
    await ensure_input(js, layout, touch(node))
    subject = stored_subject(kit)
    for s in range(100):
        await js.publish(subject, PostureReading(ts=T0 + s * 100, seq=s, position=Position.SUPINE).to_json())
    gw_nc = await nats.connect(node.nats_urls)
    async with running_engine(kit, db, TICKING, clock) as engine:
        psub = await ensure_input(gw_nc.jetstream(), layout)
        with pytest.raises(_Killed):
            await DiesBeforeAck(engine, psub).run()
    await gw_nc.close()  # the connection dies with the process: nothing was acknowledged
    assert 0 < DiesBeforeAck.committed <= 100
    assert StoreReader(db).count_readings() == DiesBeforeAck.committed
    async with running(kit, node, db, clock) as (stats, js_stats):
        # At once, not after the consumer's 30 s ack wait: the new gateway resets the consumer.
        await wait_until(lambda: js_stats.acked >= 100, "every reading acknowledged after the restart", 10)
        await wait_until(lambda: settled(node, layout), "the consumer to hold no unacknowledged message", 10)
    await nc.close()
    assert StoreReader(db).count_readings() == 100
    assert stats.rejected["duplicate"] == DiesBeforeAck.committed, "the redelivered ones refused, not stored twice"


async def test_a_backlog_of_20k_is_drained_a_bounded_batch_at_a_time(node: NatsCluster, tmp_path: Path) -> None:
    kit = kit_with_mat()
    layout = SiteLayout(kit.site)
    n = 20_000
    nc = await nats.connect(node.nats_urls)
    js = nc.jetstream()
    await ensure_input(js, layout, touch(node))
    subject = stored_subject(kit)
    for s in range(n):  # core publishes: the stream takes them; one flush at the end
        await nc.publish(subject, PostureReading(ts=T0 + s * 10, seq=s, position=Position.SUPINE).to_json())
    await nc.flush()
    await wait_until(lambda: _stream_count(js, layout.input_stream, n), "the backlog in the stream", 30, every_s=0.1)
    clock = ManualClock(T0 + n * 10 + 1000)
    max_ack_pending = int(layout.consumer_config()["max_ack_pending"])  # type: ignore[call-overload]
    async with running(kit, node, tmp_path / "gw.sqlite3", clock) as (stats, js_stats):
        peak = 0

        async def drained() -> bool:
            nonlocal peak
            info = await js.consumer_info(layout.input_stream, layout.consumer)
            peak = max(peak, info.num_ack_pending)
            return js_stats.acked >= n

        await wait_until(drained, "the backlog drained", 120, every_s=0.05)
    await nc.close()
    assert stats.readings_stored == n and stats.rejected.total() == 0
    # Fetched a batch at a time (nats-py adds what came late for an expired pull), acknowledged every
    # flush: never more than the consumer lets out, whatever the backlog.
    assert FETCH_BATCH < max_ack_pending and js_stats.flushes >= n // max_ack_pending
    assert js_stats.max_in_flight <= max_ack_pending and peak <= max_ack_pending


async def _stream_count(js: nats.js.JetStreamContext, stream: str, n: int) -> bool:
    return int((await js.stream_info(stream)).state.messages) >= n


async def test_a_fleet_site_gateway_creates_the_out_stream_its_readings_land_in(
    node: NatsCluster, tmp_path: Path
) -> None:
    """A kit naming a fleet (``nats.fleet``): the gateway creates the site's out stream when missing,
    and what the site publishes for the centre lands there (docs/fleet.md, "Transport"). Bounded: an
    earlier version waited forever once for an MQTT PUBACK under a loaded parallel run (not traced)."""
    from nurserywatch.fleet_layout import SiteOutLayout
    from nurserywatch.kit import NatsClusterConfig

    plain = kit_with_mat()
    nodes = [{"name": f"n{i}", "host": f"127.0.0.{i}", "client_port": 14222, "cluster_port": 16222,
              "mqtt_port": 18883, "monitor_port": 18222} for i in (1, 2, 3)]  # fmt: skip
    cluster = NatsClusterConfig.model_validate({"nodes": nodes, "fleet": {"leaf_urls": ["nats-leaf://hub:7422"]}})
    kit = plain.model_copy(update={"nats": cluster})
    out = SiteOutLayout(kit.site)
    nc = await nats.connect(node.nats_urls)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(60), running(kit, node, tmp_path / "gw.sqlite3", ManualClock(T0)):
            info = await js.stream_info(out.stream)  # made before the gateway started its engine
            assert sorted(info.config.subjects or []) == sorted(out.subjects)
            # What the site publishes for the centre lands there (a reading's subject, as the MQTT
            # listener hands it on).
            subject = mqtt_filter_to_subject(reading_topic(kit.site, "clip-01", "posture"))
            ack = await js.publish(subject, b'{"ts": %d, "seq": 1, "position": "supine"}' % T0)
            assert ack.stream == out.stream
        # And a site without a fleet: no out stream.
        other = kit_with_mat()
        async with asyncio.timeout(60), running(other, node, tmp_path / "other.sqlite3", ManualClock(T0)):
            names = {s.config.name for s in await js.streams_info()}
            assert out.stream in names and SiteOutLayout(other.site).stream not in names
    finally:
        await nc.close()


async def test_a_stop_landing_with_a_fetch_reply_stops_the_message_loop(node: NatsCluster, tmp_path: Path) -> None:
    """A SIGTERM in the same loop step as a pull's reply (Python 3.11's wait_for then loses it) must
    still stop the loop at its next step: it once kept an active gateway serving, and renewing its
    lease, until it was killed (a standby could not take over)."""
    kit = kit_with_mat()
    nc = await nats.connect(node.nats_urls)
    try:
        psub = await ensure_input(nc.jetstream(), SiteLayout(kit.site), touch(node))
        async with running_engine(kit, tmp_path / "gw.sqlite3", TICKING, ManualClock(T0)) as engine:
            gw = JetStreamGateway(engine, psub)
            sc = SwallowedCancel()

            async def fetch(timeout_s: float) -> list[object]:
                return list(await sc.wait([]))

            gw._fetch = fetch  # type: ignore[method-assign,assignment]
            loop = asyncio.create_task(gw.run())
            await sc.complete_and_cancel(loop)
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(loop, 2)
            assert sc.calls_after == 0
    finally:
        await nc.close()


async def test_a_legacy_consumer_is_migrated_from_its_ack_floor_and_deleted(node: NatsCluster, tmp_path: Path) -> None:
    """A site upgraded from a gateway that acknowledged each message (``legacy_consumer``): the active
    gateway continues from where that one was acknowledged, with one acknowledgement per commit, and
    the legacy consumer is gone — nothing it had not acknowledged is lost on the way."""
    kit = kit_with_mat()
    layout = SiteLayout(kit.site)
    nc = await nats.connect(node.nats_urls)
    js = nc.jetstream()
    try:
        await touch(node)()
        legacy = {**layout.consumer_config(), "durable_name": layout.legacy_consumer, "ack_policy": "explicit"}
        await js.add_consumer(layout.input_stream, api.ConsumerConfig.from_response(legacy))
        subject = stored_subject(kit)
        for s in range(50):
            await js.publish(subject, PostureReading(ts=T0 + s * 100, seq=s, position=Position.SUPINE).to_json())
        old = await js.pull_subscribe_bind(durable=layout.legacy_consumer, stream=layout.input_stream)
        taken = await old.fetch(30, timeout=5)
        for msg in taken[:20]:  # the old gateway acknowledged 20, and died holding 10 more
            await msg.ack()
        await nc.flush()
        await wait_until(lambda: _acked_up_to(js, layout.legacy_consumer, layout, 20), "the legacy ack floor at 20")
        db = tmp_path / "gw.sqlite3"
        async with running(kit, node, db, ManualClock(T0 + 100_000)) as (stats, js_stats):
            await wait_until(lambda: js_stats.acked >= 30, "the 30 the legacy consumer had not acknowledged")
            await wait_until(lambda: settled(node, layout), "the new consumer to hold nothing unacknowledged", 10)
            info = await consumer(node, layout)
        names = {c.name for c in await js.consumers_info(layout.input_stream)}
        assert layout.legacy_consumer not in names and layout.consumer in names
        assert info.config.ack_policy == api.AckPolicy.ALL
        assert StoreReader(db).count_readings() == 30 and stats.rejected.total() == 0
        # Interest retention: acknowledged by every consumer there is, the stream let them go.
        assert (await js.stream_info(layout.input_stream)).state.messages == 0
    finally:
        await nc.close()


async def _acked_up_to(js: nats.js.JetStreamContext, name: str, layout: SiteLayout, seq: int) -> bool:
    info = await js.consumer_info(layout.input_stream, name)
    return info.ack_floor is not None and (info.ack_floor.consumer_seq or 0) >= seq


async def test_deliveries_another_puller_took_are_not_covered_by_the_next_acknowledgement(
    node: NatsCluster, tmp_path: Path
) -> None:
    """One acknowledgement covers every message before it in the stream (ack policy all). Messages
    another client of the consumer pulled and never acknowledged (a gateway that lost its lease, still
    pulling for a moment) leave a gap in the active gateway's delivery sequence: it must reset the
    consumer and get them again, not acknowledge past them — acknowledged, they would be lost."""
    kit = kit_with_mat()
    layout = SiteLayout(kit.site)
    nc = await nats.connect(node.nats_urls)
    js = nc.jetstream()
    db = tmp_path / "gw.sqlite3"
    subject = stored_subject(kit)
    try:
        async with running(kit, node, db, ManualClock(T0 + 10_000_000)) as (stats, js_stats):
            thief = await nats.connect(node.nats_urls)
            try:
                psub = await thief.jetstream().pull_subscribe_bind(durable=layout.consumer, stream=layout.input_stream)
                stolen = asyncio.create_task(psub.fetch(5, timeout=10))
                await asyncio.sleep(0.2)  # its pull request is waiting on the server beside the gateway's
                n = 0
                while not stolen.done() and n < 20_000:
                    for _ in range(100):
                        reading = PostureReading(ts=T0 + n * 10, seq=n, position=Position.SUPINE)
                        await js.publish(subject, reading.to_json())
                        n += 1
                assert stolen.done() and stolen.result(), "the other puller got some (and never acknowledges them)"
            finally:
                await thief.close()
            for _ in range(100):  # more after the gap: the gateway sees the sequence broken
                await js.publish(subject, PostureReading(ts=T0 + n * 10, seq=n, position=Position.SUPINE).to_json())
                n += 1
            await wait_until(lambda: stats.readings_stored >= n, "every reading stored, the stolen ones too", 30)
            await wait_until(lambda: settled(node, layout), "the consumer to hold nothing unacknowledged", 10)
        assert js_stats.resyncs >= 1
        assert StoreReader(db).count_readings() == n and stats.readings_stored == n
    finally:
        await nc.close()
