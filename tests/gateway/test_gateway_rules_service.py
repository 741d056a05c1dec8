"""The rules engine in the running gateway against a REAL Mosquitto: a nap session started by an MQTT
command, a bound clip going silent (sensor lost, critical), an edge agent's last will delivered by
the broker (critical for all its devices), re-notification and the escalation topic, and the
observer hook. The gateway's ticks run in real time (every 50 ms) on a ManualClock the test moves."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from gateway.alert_changes import Change, Transition
from gateway.db.reader import StoreReader
from gateway.engine.observers import AcceptedReading, GatewayObserver, ObserverContext, Outgoing
from gateway.engine.sessions import SessionChange
from nurserywatch.clock import ManualClock
from nurserywatch.contract import (
    AckCommand,
    Alert,
    AlertState,
    Position,
    SessionAction,
    SessionCommand,
    SessionSource,
    SessionState,
    Severity,
    ack_topic,
    decode,
    edge_topic,
    escalation_topic,
    session_command_topic,
    site_root,
)
from nurserywatch.mqtt import BrokerURL
from tests.support.clock import T0
from tests.support.commands import publish_command
from tests.support.gateway_stack import TICKING, TIMEOUT_S, Clips, client, gateway, retained, two_clip_kit
from tests.support.waiting import wait_until

_ids = itertools.count()  # client ids of the raw MQTT connections below


class Watcher:
    """A live subscriber on alert/+, escalation/+ and session/+ of one site."""

    def __init__(self, c: aiomqtt.Client, site: str) -> None:
        self._it = aiter(c.messages)
        self._root = site_root(site)
        self.seen: list[tuple[str, bytes]] = []

    async def next(self, kind: str, pred: Callable[[str, bytes], bool] = lambda t, p: True) -> tuple[str, bytes]:
        """The next message on ``{root}/{kind}/…`` that satisfies ``pred``; others are kept in ``seen``."""
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                msg = await anext(self._it)
                assert isinstance(msg.payload, bytes)
                self.seen.append((msg.topic.value, msg.payload))
                if msg.topic.value.startswith(f"{self._root}/{kind}/") and pred(msg.topic.value, msg.payload):
                    return msg.topic.value, msg.payload

    async def drain(self, seconds: float) -> None:
        """Read whatever arrives within ``seconds`` into ``seen``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    msg = await anext(self._it)
                    assert isinstance(msg.payload, bytes)
                    self.seen.append((msg.topic.value, msg.payload))

    async def alert(self, pred: Callable[[Alert], bool]) -> Alert:
        _, payload = await self.next("alert", lambda t, p: bool(p) and pred(decode(Alert, p)))
        return decode(Alert, payload)

    async def session(self, pred: Callable[[SessionState], bool]) -> SessionState:
        _, payload = await self.next("session", lambda t, p: pred(decode(SessionState, p)))
        return decode(SessionState, payload)


@contextlib.asynccontextmanager
async def watch(broker: BrokerURL, site: str) -> AsyncIterator[Watcher]:
    async with client(broker) as c:
        for kind in ("alert", "escalation", "session"):
            await c.subscribe(f"{site_root(site)}/{kind}/+", qos=1)
        yield Watcher(c, site)


# ---------------------------------------------------------------- a raw client whose death the broker announces


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    n, length = len(body), b""
    while True:
        byte, n = n % 128, n // 128
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            return bytes([first]) + length + body


async def edge_agent_that_dies(broker: BrokerURL, topic: str, online: bytes, will: bytes) -> None:
    """Connect with a last will (QoS 1, retained) as a real edge agent does, publish the retained
    online status, then drop the TCP connection without DISCONNECT — the broker publishes the will."""
    reader, writer = await asyncio.open_connection(broker.host, broker.port)
    flags = 0x02 | 0x04 | 0x08 | 0x20  # clean session, will, will QoS 1, will retain
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", 30) + _str(f"edge-{next(_ids)}")
    writer.write(_packet(0x10, body + _str(topic) + _str(will)))
    await writer.drain()
    connack = await asyncio.wait_for(reader.readexactly(4), TIMEOUT_S)
    assert connack == b"\x20\x02\x00\x00", connack
    writer.write(_packet(0x31, _str(topic) + online))  # PUBLISH, QoS 0, retained
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()  # no DISCONNECT: an agent that lost power


# ---------------------------------------------------------------- tests


async def test_session_command_then_a_silent_clip_is_a_critical_sensor_lost(
    mosquitto: BrokerURL, tmp_path: Path
) -> None:
    site = "rules-svc-lost"
    clock = ManualClock(T0)
    db = tmp_path / "gw.sqlite3"
    async with (
        watch(mosquitto, site) as w,
        gateway(two_clip_kit(site), mosquitto, db, clock, rules=TICKING) as stats,
        client(mosquitto) as pub,
    ):
        # the room's session state is retained from the start: no nap yet
        idle = await w.session(lambda s: s.room == "hiyoko")
        assert idle.active is False
        clips = Clips(pub, site, clock, stats)
        await clips.seconds(3, "clip-01", "clip-02")

        cmd = SessionCommand(room="hiyoko", action=SessionAction.START, by="hoikushi-1")
        await publish_command(pub, session_command_topic(site), cmd, clock.now_ms())
        started = await w.session(lambda s: s.active)
        assert (started.source, started.started_by, started.started_ts) == (
            SessionSource.STAFF,
            "hoikushi-1",
            T0 + 3000,
        )
        assert await retained(mosquitto, f"{site_root(site)}/session/+") == {
            f"{site_root(site)}/session/hiyoko": started.to_json()
        }

        # clip-01 goes silent; clip-02 keeps reporting
        await clips.seconds(2, "clip-01", "clip-02")
        await clips.seconds(12, "clip-02")
        lost = await w.alert(lambda a: a.rule == "sensor_lost")
        assert (lost.severity, lost.state, lost.device, lost.child, lost.room) == (
            Severity.CRITICAL, AlertState.ACTIVE, "clip-01", "c001", "hiyoko",
        )  # fmt: skip
        assert lost.started_ts == T0 + 4000  # its last reading
        assert (lost.message, lost.message_en) == (
            "センサーからの受信が10秒以上途絶えています",
            "No data from the sensor for 10 s or more",
        )
        assert stats.rejected == Counter()

        # staff stop the nap: the silence is no longer anyone's concern
        stop = SessionCommand(room="hiyoko", action=SessionAction.STOP, by="hoikushi-2")
        await publish_command(pub, session_command_topic(site), stop, clock.now_ms())
        ended = await w.session(lambda s: not s.active)
        assert (ended.stopped_by, ended.session_id) == ("hoikushi-2", started.session_id)
        resolved = await w.alert(lambda a: a.id == lost.id and a.state is AlertState.RESOLVED)
        assert resolved.acknowledged is False  # staff still have to see it

        # a command for a room that is not in the kit is counted, not obeyed
        bad = SessionCommand(room="kuma", action=SessionAction.START, by="x")
        await publish_command(pub, session_command_topic(site), bad, clock.now_ms())
        await wait_until(lambda: stats.rejected == Counter(unknown_room=1), "unknown_room")

    reader = StoreReader(db)
    assert [(s.active, s.started_by, s.stopped_by) for s in reader.session_log("hiyoko")] == [
        (True, "hoikushi-1", None),
        (False, "hoikushi-1", "hoikushi-2"),
    ]
    assert [t.change for t in reader.transitions(lost.id)] == [Change.RAISED, Change.RESOLVED]


async def test_edge_last_will_raises_critical_alerts_for_all_its_devices(mosquitto: BrokerURL, tmp_path: Path) -> None:
    site = "rules-svc-will"
    clock = ManualClock(T0)
    async with (
        watch(mosquitto, site) as w,
        gateway(two_clip_kit(site), mosquitto, tmp_path / "gw.sqlite3", clock, rules=TICKING) as stats,
        client(mosquitto) as pub,
    ):
        clips = Clips(pub, site, clock, stats)
        start = SessionCommand(room="hiyoko", action=SessionAction.START, by="hoikushi-1")
        await publish_command(pub, session_command_topic(site), start, clock.now_ms())
        await w.session(lambda s: s.active)
        await clips.seconds(2, "clip-01", "clip-02")

        topic = edge_topic(site, "pi-1")
        online = json.dumps({"ts": T0, "online": True, "version": "1", "devices": ["clip-01", "clip-02"]}).encode()
        await edge_agent_that_dies(mosquitto, topic, online, b'{"online": false}')
        alerts = [await w.alert(lambda a: a.rule == "sensor_lost") for _ in range(2)]
        assert sorted((a.device, a.child, a.severity, a.value) for a in alerts) == [
            ("clip-01", "c001", Severity.CRITICAL, "edge_offline"),
            ("clip-02", "c002", Severity.CRITICAL, "edge_offline"),
        ]
        assert alerts[0].message_en == "Edge agent pi-1 is offline"
        assert alerts[0].message == "中継機（pi-1）との接続が切れました"

        # the agent comes back and data flows again for 5 s: both resolve
        await pub.publish(topic, online, qos=1, retain=True)
        await clips.seconds(7, "clip-01", "clip-02")
        resolved = [
            await w.alert(lambda a: a.rule == "sensor_lost" and a.state is AlertState.RESOLVED) for _ in range(2)
        ]
        assert {a.device for a in resolved} == {"clip-01", "clip-02"}
        # Leave the broker clean. The gateway gets this delete too: wait until it has (under load it
        # used to arrive before the check below, at random, and was counted as bad_json).
        await pub.publish(topic, b"", qos=1, retain=True)
        await wait_until(lambda: stats.cleared["edge"] == 1, "the gateway to see the retained status cleared")
        assert stats.rejected == Counter()


@dataclass
class Recorder(GatewayObserver):
    """What the records engineer's scheduler would see."""

    ctx: ObserverContext
    readings: list[AcceptedReading] = field(default_factory=list)
    alerts: list[Transition] = field(default_factory=list)
    sessions: list[SessionChange] = field(default_factory=list)
    ticks: int = 0

    def on_reading(self, accepted: AcceptedReading) -> None:
        self.readings.append(accepted)

    def on_alert(self, transition: Transition) -> None:
        self.alerts.append(transition)
        if transition.change is Change.ESCALATED:  # observers may publish through the gateway
            self.ctx.enqueue(Outgoing(f"{site_root(self.ctx.kit.site)}/session/pager", b"escalated"))

    def on_session(self, change: SessionChange) -> None:
        self.sessions.append(change)

    def on_tick(self, now_ms: int) -> None:
        self.ticks += 1


class Broken(GatewayObserver):
    def on_reading(self, accepted: AcceptedReading) -> None:
        raise RuntimeError("a bug in an observer")


async def test_renotification_escalation_topic_and_observers(mosquitto: BrokerURL, tmp_path: Path) -> None:
    site = "rules-svc-escalate"
    clock = ManualClock(T0)
    recorders: list[Recorder] = []

    def recorder(ctx: ObserverContext) -> Recorder:
        recorders.append(Recorder(ctx))
        return recorders[-1]

    async with (
        watch(mosquitto, site) as w,
        gateway(
            two_clip_kit(site),
            mosquitto,
            tmp_path / "gw.sqlite3",
            clock,
            [recorder, lambda _ctx: Broken()],
            rules=TICKING,
        ) as stats,
        client(mosquitto) as pub,
    ):
        clips = Clips(pub, site, clock, stats)
        await clips.seconds(31, "clip-01", position=Position.PRONE)  # no nap session: silence is no alert
        raised = await w.alert(lambda a: a.rule == "prone")
        assert (raised.severity, raised.notify_count, raised.escalated) == (Severity.CRITICAL, 0, False)

        counts: list[int] = []
        for _ in range(3):
            clock.advance(30_000)
            again = await w.alert(lambda a: a.id == raised.id and a.notify_count > (counts[-1] if counts else 0))
            counts.append(again.notify_count)
            assert again.updated_ts == clock.now_ms() and again.notified_ts == clock.now_ms()
        assert counts == [1, 2, 3] and again.escalated and again.escalated_ts == clock.now_ms()
        topic, payload = await w.next("escalation")
        assert topic == escalation_topic(site, raised.id) and decode(Alert, payload) == again
        assert await retained(mosquitto, f"{site_root(site)}/escalation/+") == {topic: payload}

        # acknowledged: the escalation's retained message goes; the alert stays active (still prone)
        await publish_command(pub, ack_topic(site), AckCommand(alert_id=raised.id, by="enchou"), clock.now_ms())
        acked = await w.alert(lambda a: a.acknowledged)
        assert (acked.state, acked.acknowledged_by, acked.escalated) == (AlertState.ACTIVE, "enchou", True)
        assert await w.next("escalation") == (topic, b"")
        assert await retained(mosquitto, f"{site_root(site)}/escalation/+") == {}
        # acknowledged: no more re-notifications, however long it stays prone
        clock.advance(60_000)
        await w.drain(0.5)
        published = [decode(Alert, p) for t, p in w.seen if t.endswith(f"/alert/{raised.id}") and p]
        assert max(a.notify_count for a in published) == 3

    [rec] = recorders
    assert [(r.device, r.child, r.room, r.stream.value) for r in rec.readings[:1]] == [
        ("clip-01", "c001", "hiyoko", "posture")
    ]
    assert len(rec.readings) == 31
    assert [t.change for t in rec.alerts] == [
        Change.RAISED, Change.RENOTIFIED, Change.RENOTIFIED, Change.ESCALATED, Change.ACKNOWLEDGED,
    ]  # fmt: skip
    assert rec.sessions == [] and rec.ticks > 10
    assert stats.observer_errors == 31  # the broken observer failed on every reading; nothing else did
    assert ("nurserywatch/v1/rules-svc-escalate/session/pager", b"escalated") in w.seen
