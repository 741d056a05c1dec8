"""The signed day head published for the centre (docs/records.md, "Signed day heads"; docs/contract.md
``records/head``): the gateway retains its latest signed head when it signs one and again on every
start and reconnect, as a ``RecordsHead`` anyone holding the site's public key can check — driven through
the engine with an injected clock, through the MQTT shell on a real Mosquitto and through the JetStream
shell on a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from gateway.config import RulesConfig
from gateway.db.store import Store
from gateway.engine.site import Pending, SiteEngine
from gateway.engine.stats import GatewayStats
from gateway.records.keeper import RecordsSigning
from gateway.records.signing import SignedHead, signature_ok
from gateway.records.store import RecordStore
from gateway.service.engine_host import EngineOptions
from gateway.service.jetstream import run_jetstream_gateway
from gateway.service.mqtt import run_gateway
from nurserywatch.cli.records_signing import open_signing
from nurserywatch.clock import ManualClock
from nurserywatch.contract import RecordsHead, decode, records_head_topic
from nurserywatch.jetstream import mqtt_filter_to_subject
from nurserywatch.keys import key_id, load_public_key, public_key_path
from tests.support.clock import MIN
from tests.support.clock import T0 as CLOCK_T0
from tests.support.gateway_stack import client, drain, retained
from tests.support.mosquitto import MosquittoProcess
from tests.support.nap_records import KIT, nap
from tests.support.nats_cluster import NatsCluster
from tests.support.waiting import wait_until

TOPIC = records_head_topic(KIT.site)
#: 2026-01-02 00:00:01 JST: the gateway's first tick of the second local day (tests/gateway/test_records_signing.py).
MIDNIGHT = CLOCK_T0 + 15 * 60 * MIN + 1_000
DAY1_ENTRIES = 46


@pytest.fixture
def day1(tmp_path: Path) -> tuple[Path, Path]:
    """(database, key): a day-1 nap written by a signing keeper, nothing signed yet (day 1 not over)."""
    db, key = tmp_path / "gw.sqlite3", tmp_path / "credentials" / "records-signing.key"
    nap(db, signing=open_signing(key))
    return db, key


def heads(out: list[Pending]) -> list[Pending]:
    return [m for m in out if m.topic == TOPIC]


def checked(payload: bytes, key: Path) -> SignedHead:
    """The published head, parsed by the contract and verified against the site's public key only."""
    signed = SignedHead.from_contract(decode(RecordsHead, payload))
    assert signature_ok(signed, load_public_key(public_key_path(key)))
    return signed


def engine_at(db: Path, clock: ManualClock, signing: RecordsSigning | None) -> tuple[Store, SiteEngine]:
    store = Store(db)
    return store, SiteEngine(KIT, store, RulesConfig(), clock, records_signing=signing)


def test_the_head_is_retained_when_the_day_ends_and_again_on_restart(day1: tuple[Path, Path]) -> None:
    db, key = day1
    clock = ManualClock(MIDNIGHT - 2_000)  # still day 1
    store, engine = engine_at(db, clock, open_signing(key))
    try:
        engine.connected()
        assert heads(drain(engine)) == []  # nothing signed yet: nothing to publish
        engine.tick()
        assert heads(drain(engine)) == []
        clock.set(MIDNIGHT)
        engine.tick()
        (msg,) = heads(drain(engine))
        engine.tick()  # signed once a day: no second publish
        assert heads(drain(engine)) == []
    finally:
        engine.close()
        store.close()
    assert msg.retain and not msg.clear_after
    signed = checked(msg.payload, key)
    h = signed.head
    assert (h.site, h.day, h.timezone, h.seq, h.signed_ts) == (KIT.site, "2026-01-01", KIT.timezone, DAY1_ENTRIES,
                                                                MIDNIGHT)  # fmt: skip
    assert h.key_id == key_id(load_public_key(public_key_path(key)))
    with RecordStore(db) as records:
        assert records.last_signed_head() == signed  # the very head the database holds

    # A restart (and any reconnect): the last signed head goes out again, unchanged.
    clock.advance(3_600_000)
    store, engine = engine_at(db, clock, open_signing(key))
    try:
        engine.connected()
        (again,) = heads(drain(engine))
        engine.disconnected()
        engine.connected()
        (reconnect,) = heads(drain(engine))
    finally:
        engine.close()
        store.close()
    assert again.payload == reconnect.payload == msg.payload and again.retain


def test_a_site_that_does_not_sign_publishes_no_head(day1: tuple[Path, Path]) -> None:
    db, _key = day1
    clock = ManualClock(MIDNIGHT)
    store, engine = engine_at(db, clock, None)
    try:
        engine.connected()
        engine.tick()
        assert heads(drain(engine)) == []
    finally:
        engine.close()
        store.close()


def test_a_tampered_head_does_not_verify(day1: tuple[Path, Path]) -> None:
    db, key = day1
    store, engine = engine_at(db, ManualClock(MIDNIGHT), open_signing(key))
    try:
        engine.connected()
        engine.tick()
        (msg,) = heads(drain(engine))
    finally:
        engine.close()
        store.close()
    good = decode(RecordsHead, msg.payload)
    forged = SignedHead.from_contract(good.model_copy(update={"seq": good.seq + 1}))
    assert not signature_ok(forged, load_public_key(public_key_path(key)))
    assert SignedHead.from_contract(good).to_contract() == good  # one conversion, both ways


async def test_the_mqtt_gateway_retains_the_head_after_midnight_and_on_restart(
    day1: tuple[Path, Path], tmp_path: Path
) -> None:
    db, key = day1
    broker = MosquittoProcess(tmp_path / "mosquitto", persistence=False)
    broker.start()
    clock = ManualClock(MIDNIGHT - 5_000)

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[GatewayStats]:
        stats = GatewayStats()
        task = asyncio.create_task(run_gateway(KIT, broker.url, db, RulesConfig(tick_ms=50), clock,
                                               EngineOptions(stats=stats,
                                                             records_signing=open_signing(key))))  # fmt: skip
        try:
            await wait_until(lambda: stats.sessions >= 1 or task.done(), "the gateway to subscribe")
            if task.done():
                task.result()
            yield stats
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def head_retained() -> bool:
        return TOPIC in await retained(broker.url, TOPIC)

    try:
        async with running() as stats:
            await wait_until(lambda: stats.ticks >= 3, "a few ticks on day 1")
            assert not await head_retained()
            clock.set(MIDNIGHT)
            await wait_until(head_retained, "the signed head retained on the broker")
            payload = (await retained(broker.url, TOPIC))[TOPIC]
            assert checked(payload, key).head.day == "2026-01-01"
        async with client(broker.url) as c:  # an operator clears it (or a broker lost it)
            await c.publish(TOPIC, b"", qos=1, retain=True)
        assert not await head_retained()
        clock.advance(60_000)
        async with running():
            await wait_until(head_retained, "the head retained again by the restarted gateway")
            assert (await retained(broker.url, TOPIC))[TOPIC] == payload
    finally:
        broker.stop()


async def test_the_jetstream_gateway_publishes_the_head_as_a_retained_message_and_a_nats_subject(
    day1: tuple[Path, Path], nats_node: NatsCluster
) -> None:
    """The same engine behind the JetStream shell: the head is retained on the site's NATS (MQTT
    listener), and its NATS subject is what the site's out stream for the centre captures."""
    db, key = day1
    clock = ManualClock(MIDNIGHT)
    nc = await nats.connect(nats_node.nats_urls)
    sub = await nc.subscribe(mqtt_filter_to_subject(TOPIC))
    stats = GatewayStats()
    task = asyncio.create_task(run_jetstream_gateway(KIT, nats_node.nats_urls, nats_node.mqtt_urls, db,
                                                     RulesConfig(tick_ms=50), clock,
                                                     EngineOptions(stats=stats,
                                                                   records_signing=open_signing(key))))  # fmt: skip
    try:
        msg = await sub.next_msg(timeout=20)
        assert not task.done()
        assert checked(msg.data, key).head.seq == DAY1_ENTRIES
        assert (await retained(nats_node.mqtt_urls[0], TOPIC))[TOPIC] == msg.data
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()
    assert stats.rejected["internal_error"] == 0
