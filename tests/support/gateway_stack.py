"""A running gateway against the test session's real Mosquitto, and the MQTT clients tests drive it with;
``drain``: a site engine's outbox published without a broker."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiomqtt

from gateway.config import RulesConfig
from gateway.engine.observers import ObserverFactory
from gateway.engine.site import Pending, SiteEngine
from gateway.engine.stats import GatewayStats
from gateway.service.engine_host import EngineOptions
from gateway.service.mqtt import run_gateway
from nurserywatch.clock import ManualClock
from nurserywatch.contract import Position, PostureReading, reading_topic
from nurserywatch.kit import Kit
from nurserywatch.mqtt import BrokerURL
from tests.support.commands import COMMAND_VERIFIER
from tests.support.kits import make_kit
from tests.support.waiting import wait_until

TIMEOUT_S = 5.0
#: The gateway's timer every 50 ms of real time: a test that moves a ManualClock sees its timers run.
TICKING = RulesConfig(tick_ms=50)
_ids = itertools.count()


def two_clip_kit(site: str) -> Kit:
    """Two children of different age bands (c001: 0, c002: 1-2), each watched by a posture clip."""
    return make_kit(site, children={"c001": "0", "c002": "1-2"}, devices={"clip-01": "c001", "clip-02": "c002"})


def assignment_kit(site: str = "assign") -> Kit:
    """Two rooms; in hiyoko c001 (0) and c002 (1-2) on clip-01 and clip-02, a spare clip-03 and a CO2
    sensor; c009 (3+) in kirin with no device."""
    return make_kit(
        site,
        rooms={"hiyoko": "ひよこ組", "kirin": "きりん組"},
        children={"c001": "0", "c002": "1-2", "c009": {"age_band": "3+", "room": "kirin"}},
        devices={"clip-01": "c001", "clip-02": "c002", "clip-03": None, "air-1": {"kind": "mhz19b"}},
    )


def client(broker: BrokerURL) -> aiomqtt.Client:
    return aiomqtt.Client(broker.host, broker.port, identifier=f"test-{next(_ids)}", clean_session=True)


def posture(seq: int, ts: int, position: Position) -> bytes:
    return PostureReading(ts=ts, seq=seq, position=position, accel_mg=(0, 0, -1000)).to_json()


@contextlib.asynccontextmanager
async def gateway(
    kit: Kit,
    broker: BrokerURL,
    db: Path,
    clock: ManualClock,
    observers: Sequence[ObserverFactory] = (),
    *,
    rules: RulesConfig | None = None,
) -> AsyncIterator[GatewayStats]:
    """run_gateway (``rules`` default: RulesConfig()) until the block ends, from the moment it has
    subscribed; no message may have failed inside it."""
    stats = GatewayStats()
    rules = RulesConfig() if rules is None else rules
    task = asyncio.create_task(
        run_gateway(kit, broker, db, rules, clock,
            EngineOptions(stats=stats, observers=observers, command_key=COMMAND_VERIFIER))
    )
    try:
        await wait_until(lambda: stats.sessions >= 1 or task.done(), "the gateway to subscribe")
        if task.done():
            task.result()  # re-raise why it died
        yield stats
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert stats.rejected["internal_error"] == 0


def drain(engine: SiteEngine) -> list[Pending]:
    """What a transport shell does with a site engine's outbox: take each message, "publish" it, confirm it."""
    out: list[Pending] = []
    while (msg := engine.next_outgoing()) is not None:
        out.append(msg)
        engine.published(msg)
    return out


async def retained(broker: BrokerURL, topic_filter: str) -> dict[str, bytes]:
    """What a client subscribing now would find retained under ``topic_filter`` (empty payloads left out).
    The broker sends retained messages on SUBSCRIBE, before our own later sentinel round-trip."""
    sentinel = f"test/sentinel/{next(_ids)}"
    got: dict[str, bytes] = {}
    async with client(broker) as c:
        await c.subscribe(topic_filter, qos=1)
        await c.subscribe(sentinel, qos=1)
        await c.publish(sentinel, b"x", qos=1)
        async with asyncio.timeout(TIMEOUT_S):
            async for msg in c.messages:
                if msg.topic.value == sentinel:
                    return got
                assert isinstance(msg.payload, bytes)
                if msg.retain and msg.payload:
                    got[msg.topic.value] = msg.payload
    raise AssertionError("unreachable")


class Clips:
    """Publishes posture readings stamped with the ManualClock and waits until the gateway has them."""

    def __init__(self, pub: aiomqtt.Client, site: str, clock: ManualClock, stats: GatewayStats) -> None:
        self.pub, self.site, self.clock, self.stats = pub, site, clock, stats
        self.seq = itertools.count()
        self.sent = 0

    async def send(self, *devices: str, position: Position = Position.SUPINE) -> None:
        for device in devices:
            reading = PostureReading(ts=self.clock.now_ms(), seq=next(self.seq), position=position)
            await self.pub.publish(reading_topic(self.site, device, "posture"), reading.to_json(), qos=1)
            self.sent += 1
        await wait_until(lambda: self.stats.readings_received >= self.sent, "the gateway to receive the readings")

    async def seconds(self, n: int, *devices: str, position: Position = Position.SUPINE) -> None:
        """n seconds of the clock, a reading from each of ``devices`` at the start of each."""
        for _ in range(n):
            await self.send(*devices, position=position)
            self.clock.advance(1000)
            await asyncio.sleep(0.06)  # let a tick run at the new time
