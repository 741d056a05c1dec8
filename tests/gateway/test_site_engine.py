"""The site engine (gateway/engine/site.py) driven directly, with no broker: messages in, messages to
publish out, time from an injected clock — what a second transport shell would build on. And its
commit guarantee: a message is acknowledged only after what it wrote is committed, and nothing is
handed out for publishing before that."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.config import RulesConfig
from gateway.db.reader import StoreReader
from gateway.db.store import Store
from gateway.engine.site import Pending, SiteEngine
from nurserywatch.clock import ManualClock
from nurserywatch.contract import (
    Alert,
    AlertState,
    Position,
    PostureReading,
    Severity,
    alert_topic,
    gateway_topic,
    reading_topic,
)
from tests.support.clock import T0
from tests.support.kits import make_kit

KIT = make_kit("engine")  # one child, c001, watched by one posture clip
CLIP = "clip-01"


def prone(seq: int, ts: int) -> bytes:
    return PostureReading(ts=ts, seq=seq, position=Position.PRONE).to_json()


def drain(engine: SiteEngine) -> list[Pending]:
    """What a transport shell does: take each message, "publish" it, confirm it."""
    out: list[Pending] = []
    while (msg := engine.next_outgoing()) is not None:
        out.append(msg)
        engine.published(msg)
    return out


def test_prone_readings_in_a_critical_alert_out_on_the_injected_clock(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    topic = reading_topic(KIT.site, CLIP, "posture")
    with Store(tmp_path / "gw.sqlite3") as store:
        engine = SiteEngine(KIT, store, RulesConfig(), clock)
        try:
            engine.connected()
            assert gateway_topic(KIT.site) in {m.topic for m in drain(engine)}  # the heartbeat, with the states
            alerts: list[Alert] = []
            for s in range(1, 41):
                clock.set(T0 + s * 1000)
                engine.handle(topic, prone(s, T0 + s * 1000))
                engine.tick()
                alerts += [Alert.model_validate_json(m.payload) for m in drain(engine) if "/alert/" in m.topic]
        finally:
            engine.close()
    (alert,) = alerts
    assert (alert.rule, alert.device, alert.child) == ("prone", CLIP, "c001")
    assert alert.severity is Severity.CRITICAL and alert.state is AlertState.ACTIVE
    assert T0 < alert.started_ts <= T0 + 40_000  # device time, which the injected clock accepted
    assert engine.stats.alerts_published == 1 and engine.stats.rejected.total() == 0
    assert engine.outbox_depth == 0


def test_acknowledged_only_after_commit_and_committed_before_anything_is_published(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    clock = ManualClock(T0)
    topic = reading_topic(KIT.site, CLIP, "posture")
    events: list[str] = []
    with Store(db) as store:
        engine = SiteEngine(KIT, store, RulesConfig(), clock)
        try:
            engine.connected()  # batches from here on
            drain(engine)

            def ack(s: int) -> Callable[[], None]:
                return lambda: events.append(f"ack {s}")

            for s in range(1, 41):
                clock.set(T0 + s * 1000)
                engine.handle(topic, prone(s, T0 + s * 1000), ack=ack(s))
            # Handled, judged and queued, but neither committed nor acknowledged yet.
            assert events == [] and engine.flush_due()
            assert StoreReader(db).count_readings(CLIP) == 0
            assert any("/alert/" in m.topic for m in engine.outbox())
            assert StoreReader(db).open_alerts() == []
            while (msg := engine.next_outgoing()) is not None:
                # Whatever goes out, the state behind it is committed (another connection sees it).
                assert StoreReader(db).count_readings(CLIP) == 40 and StoreReader(db).open_alerts()
                events.append(f"publish {msg.topic}")
                engine.published(msg)
            assert events[:40] == [f"ack {s}" for s in range(1, 41)]
            assert events[40:] == [f"publish {alert_topic(KIT.site, StoreReader(db).open_alerts()[0].id)}"]

            # A session that ends drops the acks it still holds (they belong to its connection); the
            # writes are committed all the same, and the redelivered message is a duplicate.
            engine.handle(topic, prone(41, T0 + 41_000), ack=lambda: events.append("ack 41"))
            engine.disconnected()
            assert "ack 41" not in events and StoreReader(db).count_readings(CLIP) == 41
            engine.handle(topic, prone(41, T0 + 41_000), ack=lambda: events.append("ack 41 again"))
            assert events[-1] == "ack 41 again"  # not batching: acknowledged at once
            assert engine.stats.rejected == {"duplicate": 1}
        finally:
            engine.close()
