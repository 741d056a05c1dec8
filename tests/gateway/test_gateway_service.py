"""The gateway against a REAL Mosquitto: readings in, alerts out, acknowledgements, retained-message
policy, rejection counters and restart. Times come from the messages, so nothing waits 30 s."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from gateway.alert_changes import Change
from gateway.db.reader import StoreReader
from nurserywatch.clock import ManualClock
from nurserywatch.contract import (
    AckCommand,
    Alert,
    AlertState,
    Position,
    Severity,
    TopicKind,
    ack_topic,
    alert_topic,
    decode,
    reading_topic,
    site_root,
    subscription,
)
from nurserywatch.mqtt import BrokerURL
from tests.support.clock import T0
from tests.support.commands import publish_command
from tests.support.gateway_stack import TIMEOUT_S, client, gateway, posture
from tests.support.kits import make_kit
from tests.support.waiting import wait_until


class AlertWatcher:
    """A live subscriber on alert/+ that hands out messages one by one."""

    def __init__(self, c: aiomqtt.Client) -> None:
        self._it = aiter(c.messages)

    async def next(self) -> tuple[str, bytes]:
        msg = await asyncio.wait_for(anext(self._it), TIMEOUT_S)
        assert isinstance(msg.payload, bytes)
        return msg.topic.value, msg.payload

    async def next_alert(self) -> Alert:
        topic, payload = await self.next()
        alert = decode(Alert, payload)
        assert topic.endswith(f"/alert/{alert.id}")
        return alert


@contextlib.asynccontextmanager
async def watch_alerts(broker: BrokerURL, site: str) -> AsyncIterator[AlertWatcher]:
    async with client(broker) as c:
        await c.subscribe(subscription(site, TopicKind.ALERT), qos=1)
        yield AlertWatcher(c)


async def retained_alerts(broker: BrokerURL, site: str) -> dict[str, Alert]:
    """What a dashboard connecting now would find: the retained alert messages, by topic. The
    broker sends retained messages on SUBSCRIBE, before our own later sentinel round-trip."""
    sentinel = f"test/{site}/sentinel"
    got: dict[str, Alert] = {}
    async with client(broker) as c:
        await c.subscribe(subscription(site, TopicKind.ALERT), qos=1)
        await c.subscribe(sentinel, qos=1)
        await c.publish(sentinel, b"x", qos=1)
        async with asyncio.timeout(TIMEOUT_S):
            async for msg in c.messages:
                if msg.topic.value == sentinel:
                    return got
                assert msg.retain and isinstance(msg.payload, bytes)
                got[msg.topic.value] = decode(Alert, msg.payload)
    raise AssertionError("unreachable")


async def test_prone_alert_lifecycle_over_mqtt(mosquitto: BrokerURL, tmp_path: Path) -> None:
    site = "svc-lifecycle"
    kit = make_kit(site)
    clock = ManualClock(T0 + 100_000)
    db = tmp_path / "gw.sqlite3"
    posture_topic = reading_topic(site, "clip-01", "posture")
    async with (
        gateway(kit, mosquitto, db, clock) as stats,
        watch_alerts(mosquitto, site) as alerts,
        client(mosquitto) as pub,
    ):
        # supine, then prone from T0 to T0+31 s in 1 s steps — published at once, timed by ts
        await pub.publish(posture_topic, posture(0, T0 - 1000, Position.SUPINE), qos=1)
        for i in range(32):
            await pub.publish(posture_topic, posture(i + 1, T0 + i * 1000, Position.PRONE), qos=1)

        raised = await alerts.next_alert()
        assert (raised.rule, raised.severity, raised.state, raised.acknowledged) == (
            "prone",
            Severity.CRITICAL,
            AlertState.ACTIVE,
            False,
        )
        assert (raised.device, raised.room, raised.child) == ("clip-01", "hiyoko", "c001")
        assert (raised.started_ts, raised.updated_ts, raised.value) == (T0, T0 + 30_000, 30.0)
        assert (raised.message, raised.message_en) == ("うつぶせ寝が30秒以上続いています", "Prone for 30 s or more")
        assert await retained_alerts(mosquitto, site) == {alert_topic(site, raised.id): raised}

        # bad input of every kind: counted by reason, nothing crashes, nothing stored
        await pub.publish(posture_topic, posture(32, T0 + 31_000, Position.PRONE), qos=1)  # redelivery
        await pub.publish(posture_topic, b"{not json", qos=1)
        await pub.publish(posture_topic, b'{"ts": 1, "seq": 1, "position": "prone", "accel_mg": [NaN, 0, 0]}', qos=1)
        await pub.publish(posture_topic, b'{"ts": 1, "seq": 1, "position": "sideways"}', qos=1)
        await pub.publish(posture_topic, b"\xff\xfe{}", qos=1)
        await pub.publish(posture_topic, b'{"pad": "' + b"x" * 70_000 + b'"}', qos=1)
        await pub.publish(reading_topic(site, "ghost", "posture"), posture(1, T0, Position.PRONE), qos=1)
        await pub.publish(f"{site_root(site)}/reading/clip-01/bogus", posture(1, T0, Position.PRONE), qos=1)
        await pub.publish(reading_topic(site, "clip-01", "breathing"), b'{"ts": 1, "seq": 1, "rate_bpm": 30}', qos=1)
        await pub.publish(posture_topic, posture(99, T0 + 20_000, Position.SUPINE), qos=1)  # older: stale
        await publish_command(pub, ack_topic(site), AckCommand(alert_id="prone-nope", by="hoikushi-1"), clock.now_ms())
        await publish_command(pub, ack_topic(site), {"alert_id": "Bad Id!", "by": "x"}, clock.now_ms())
        # Not signed by the dashboard's command key: any broker client could have sent it.
        await pub.publish(ack_topic(site), AckCommand(alert_id=raised.id, by="院長 (forged)").to_json(), qos=1)
        expected = Counter(
            duplicate=1,
            bad_json=2,
            invalid_payload=2,
            bad_utf8=1,
            too_large=1,
            unknown_device=1,
            unexpected_stream=1,
            bad_topic=1,
            stale=1,
            unknown_alert=1,
            unsigned=1,
        )
        await wait_until(lambda: stats.rejected == expected, f"rejections {expected}")
        reader = StoreReader(db)
        # 33 good readings + the stale one (stored for history, not judged); the duplicate once
        assert reader.count_readings() == 34
        assert stats.readings_stored == 34

        # acknowledge while still prone: republished acknowledged, stays active (and retained)
        clock.advance(5_000)
        await publish_command(pub, ack_topic(site), AckCommand(alert_id=raised.id, by="hoikushi-1"), clock.now_ms())
        acked = await alerts.next_alert()  # no "update" for the continued prone came before it
        assert (acked.id, acked.state, acked.acknowledged, acked.acknowledged_by, acked.acknowledged_ts) == (
            raised.id,
            AlertState.ACTIVE,
            True,
            "hoikushi-1",
            T0 + 105_000,
        )
        assert await retained_alerts(mosquitto, site) == {alert_topic(site, raised.id): acked}

        # the child is turned: final state published, then the retained message is cleared
        await pub.publish(posture_topic, posture(33, T0 + 40_000, Position.SUPINE), qos=1)
        final = await alerts.next_alert()
        assert (final.id, final.state, final.acknowledged, final.resolved_ts) == (
            raised.id,
            AlertState.RESOLVED,
            True,
            T0 + 40_000,
        )
        assert await alerts.next() == (alert_topic(site, raised.id), b"")
        assert await retained_alerts(mosquitto, site) == {}
        await wait_until(lambda: stats.alerts_published == 3, "3 alert publications")

    assert [t.change for t in reader.transitions(raised.id)] == [Change.RAISED, Change.ACKNOWLEDGED, Change.RESOLVED]
    assert reader.alert(raised.id) == final


async def test_restart_restores_republishes_and_keeps_queued_readings(mosquitto: BrokerURL, tmp_path: Path) -> None:
    site = "svc-restart"
    kit = make_kit(site)
    clock = ManualClock(T0 + 100_000)
    db = tmp_path / "gw.sqlite3"
    posture_topic = reading_topic(site, "clip-01", "posture")
    ghost = Alert(
        id="prone-ghost", rule="prone", severity=Severity.CRITICAL, state=AlertState.ACTIVE,
        started_ts=T0, updated_ts=T0, message="古い", message_en="stale",
    )  # fmt: skip

    async with watch_alerts(mosquitto, site) as alerts, client(mosquitto) as pub:
        async with gateway(kit, mosquitto, db, clock):
            await pub.publish(posture_topic, posture(1, T0, Position.PRONE), qos=1)
            await pub.publish(posture_topic, posture(2, T0 + 30_000, Position.PRONE), qos=1)
            raised = await alerts.next_alert()
        topic = alert_topic(site, raised.id)

        # While the gateway is down: the broker loses its retained alert (a restart without
        # persistence), someone leaves a retained alert the gateway never had, and the child is turned.
        await pub.publish(topic, b"", qos=1, retain=True)
        await pub.publish(alert_topic(site, ghost.id), ghost.to_json(), qos=1, retain=True)
        await pub.publish(posture_topic, posture(3, T0 + 45_000, Position.SUPINE), qos=1)
        assert await alerts.next() == (topic, b"")
        assert (await alerts.next_alert()).id == ghost.id

        async with gateway(kit, mosquitto, db, clock) as stats:
            seen = [await alerts.next() for _ in range(3)]
            # the restored alert is republished, then the queued supine reading resolves it; the
            # ghost's retained message is cleared
            assert (topic, raised.to_json()) in seen
            assert (alert_topic(site, ghost.id), b"") in seen
            [resolved] = [decode(Alert, p) for t, p in seen if t == topic and p != raised.to_json()]
            assert (resolved.state, resolved.acknowledged, resolved.resolved_ts) == (
                AlertState.RESOLVED,
                False,
                T0 + 45_000,
            )
            assert stats.stale_retained_cleared == 1
            # resolved but unacknowledged: still retained, staff must see it
            assert await retained_alerts(mosquitto, site) == {topic: resolved}

            await publish_command(pub, ack_topic(site), AckCommand(alert_id=raised.id, by="hoikushi-2"), clock.now_ms())
            final = await alerts.next_alert()
            assert (final.state, final.acknowledged, final.acknowledged_by) == (AlertState.RESOLVED, True, "hoikushi-2")
            assert await alerts.next() == (topic, b"")
            assert await retained_alerts(mosquitto, site) == {}
            assert stats.rejected == Counter()

    reader = StoreReader(db)
    assert reader.count_readings() == 3
    assert [t.change for t in reader.transitions(raised.id)] == [Change.RAISED, Change.RESOLVED, Change.ACKNOWLEDGED]
    assert reader.open_alerts() == []


@pytest.mark.parametrize(
    ("site", "payload"),
    [("svc-edge-up", b'{"online": true, "ts": 1, "devices": ["clip-01"]}'), ("svc-edge-will", b'{"online": false}')],
)
async def test_edge_status_is_validated_not_fatal(
    mosquitto: BrokerURL, tmp_path: Path, site: str, payload: bytes
) -> None:
    kit = make_kit(site)
    async with gateway(kit, mosquitto, tmp_path / "gw.sqlite3", ManualClock()) as stats, client(mosquitto) as pub:
        await pub.publish(f"{site_root(site)}/edge/pi-1", payload, qos=1)
        await pub.publish(f"{site_root(site)}/edge/pi-9", payload, qos=1)
        await pub.publish(f"{site_root(site)}/edge/pi-1", b"[]", qos=1)
        await wait_until(lambda: stats.rejected == Counter(unknown_agent=1, bad_json=1), "edge rejections")
