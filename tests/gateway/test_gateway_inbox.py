"""The gateway's bounded receive path (gateway/service/inbox.py): a persistent session's backlog —
which Mosquitto sends all at once on reconnect, whatever its in-flight window — never holds more than
the inbox's bound in the gateway's memory, and every message still arrives, in order, once.

Real Mosquitto (the session fixture); ~5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path

import aiomqtt

from gateway.config import RulesConfig
from gateway.engine.stats import GatewayStats
from gateway.service.engine_host import EngineOptions, running_engine
from gateway.service.inbox import Inbox
from gateway.service.mqtt import MqttGateway
from nurserywatch.clock import ManualClock
from nurserywatch.contract import Position, PostureReading, Stream, TopicKind, reading_topic, subscription
from nurserywatch.mqtt import BrokerURL, run_session
from tests.support.clock import T0
from tests.support.kits import make_kit
from tests.support.waiting import wait_until

QUIET = logging.getLogger("tests.inbox.mqtt")  # not a warning per publish waiting for the window
QUIET.setLevel(logging.ERROR)
SITE_IDS = iter(range(10_000))


async def _backlog(broker: BrokerURL, ident: str, site: str, messages: list[tuple[str, bytes]]) -> None:
    """A persistent session for ``ident`` (subscribed to the site's readings, then gone) and
    ``messages`` queued for it by the broker."""
    async with broker.client(ident) as c:
        await c.subscribe(subscription(site, TopicKind.READING), qos=1)
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=f"{ident}-pub", max_inflight_messages=100, logger=QUIET
    ) as pub:
        for j in range(0, len(messages), 100):  # gather starts them in order, paho sends them in order
            await asyncio.gather(*(pub.publish(t, p, qos=1) for t, p in messages[j : j + 100]))


def _stream(site: str, n: int) -> list[tuple[str, bytes]]:
    topic = reading_topic(site, "clip-1", Stream.POSTURE)
    return [(topic, PostureReading(ts=T0 + k * 100, seq=k, position=Position.SUPINE).to_json()) for k in range(n)]


async def _drain(broker: BrokerURL, ident: str, n: int, high: int) -> tuple[list[bytes], Inbox]:
    """Take ``n`` messages of the backlog through an inbox bounded at ``high``, slowly (yielding to the
    socket reader after each): the broker sends faster than they are taken."""
    got: list[bytes] = []
    async with broker.client(ident) as c:
        inbox = Inbox(c, high=high, low=high // 4)
        inbox.bound()
        async with asyncio.timeout(30):
            while len(got) < n:
                m = inbox.take()
                if m is None:
                    await inbox.wait()
                    continue
                got.append(m.payload)
                await asyncio.sleep(0)
    return got, inbox


async def test_a_backlog_never_holds_more_than_the_bound(mosquitto: BrokerURL) -> None:
    site = f"inbox{next(SITE_IDS)}"
    messages = _stream(site, 5000)
    await _backlog(mosquitto, f"{site}-bounded", site, messages)
    await _backlog(mosquitto, f"{site}-unbounded", site, messages)
    got, inbox = await _drain(mosquitto, f"{site}-bounded", len(messages), high=200)
    assert got == [p for _t, p in messages]  # every one, once, in order
    assert inbox.pauses >= 1 and inbox.peak <= 200, (inbox.pauses, inbox.peak)
    # The same backlog without the bound: the broker's burst does land in memory (what the bound is for).
    got, unbounded = await _drain(mosquitto, f"{site}-unbounded", len(messages), high=10**9)
    assert got == [p for _t, p in messages]
    assert unbounded.peak > 1000, unbounded.peak


async def test_the_gateway_drains_a_backlog_within_its_inbox_bound(mosquitto: BrokerURL, tmp_path: Path) -> None:
    """The whole gateway on a bounded inbox: its heartbeat and retained state are published (PUBACKs
    behind readings in the socket) while the socket reader pauses, nothing stalls, every reading is
    stored once and acknowledged (nothing is redelivered to the next session)."""
    site = f"inbox{next(SITE_IDS)}"
    kit = make_kit(site, devices={"clip-1": "c1"}, children={"c1": "1-2"})
    messages = _stream(site, 4000)
    ident = f"nurserywatch-gateway-{site}"
    await _backlog(mosquitto, ident, site, messages)
    stats, clock = GatewayStats(), ManualClock(T0 + 4000 * 100 + 1000)
    rules = RulesConfig.model_validate({"tick_ms": 50})
    db = tmp_path / "gw.sqlite3"
    async with running_engine(kit, db, rules, clock, EngineOptions(stats=stats)) as engine:
        gw = MqttGateway(engine, inbox_high=100, inbox_low=25)
        ticker = asyncio.create_task(gw.tick_forever())
        task = asyncio.create_task(run_session(mosquitto, ident, gw.session, manual_ack=True))
        try:
            await wait_until(lambda: stats.readings_stored >= len(messages) or task.done(), "the backlog stored", 30)
            await wait_until(lambda: engine.outbox_depth == 0 or task.done(), "the outbox published", 10)
        finally:
            for t in (task, ticker):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
    assert stats.readings_stored == len(messages) and stats.rejected.total() == 0, stats.rejected
    inbox = gw.inbox
    assert isinstance(inbox, Inbox)
    assert inbox.pauses >= 1 and inbox.peak <= 100, (inbox.pauses, inbox.peak)
    assert stats.sessions == 1  # no reconnect: no PUBACK or SUBACK waited behind the paused socket
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT seq) FROM readings").fetchone() == (4000, 4000)
    # Every reading was acknowledged: a new session of the same client gets nothing again.
    async with mosquitto.client(ident) as c:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for m in c.messages:
                    raise AssertionError(f"redelivered after the drain: {m.topic}")
