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
from gateway.engine.site import SiteEngine
from nurserywatch.clock import ManualClock
from nurserywatch.contract import (
    Alert,
    AlertState,
    Position,
    PostureReading,
    Severity,
    alert_topic,
    edge_topic,
    escalation_topic,
    gateway_topic,
    reading_topic,
    status_topic,
)
from tests.support.clock import T0
from tests.support.gateway_stack import drain
from tests.support.kits import make_kit

KIT = make_kit("engine")  # one child, c001, watched by one posture clip
CLIP = "clip-01"


def prone(seq: int, ts: int) -> bytes:
    return PostureReading(ts=ts, seq=seq, position=Position.PRONE).to_json()


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


def test_an_empty_retained_payload_is_state_cleared_not_bad_input(tmp_path: Path) -> None:
    # MQTT deletes a retained message with an empty retained payload, and subscribers get that empty
    # payload too (an operator or a test clearing an edge's status, a decommissioned device). Found
    # under load: test_edge_last_will… counted the clear of edge/pi-1 as bad_json.
    clock = ManualClock(T0)
    with Store(tmp_path / "gw.sqlite3") as store:
        engine = SiteEngine(KIT, store, RulesConfig(), clock)
        try:
            engine.handle(edge_topic(KIT.site, "pi-1"), b'{"ts": %d, "online": true}' % T0, retained=True)
            for topic in (edge_topic(KIT.site, "pi-1"), status_topic(KIT.site, CLIP),
                          alert_topic(KIT.site, "prone-0"), escalation_topic(KIT.site, "prone-0")):  # fmt: skip
                engine.handle(topic, b"", retained=True)  # delivered on subscribing
                engine.handle(topic, b"")  # live, as it happens
            assert engine.stats.rejected == {}
            assert engine.stats.cleared == {"edge": 2, "status": 2, "alert": 2, "escalation": 2}
            assert engine.edges_online == {"pi-1": True}, "not judged: the last known state stands"
            # A reading has no retained state to clear: an empty one is bad input, as before.
            engine.handle(reading_topic(KIT.site, CLIP, "posture"), b"")
            assert engine.stats.rejected == {"bad_json": 1}
            # Nor do commands: refused (for whichever reason comes first), not "cleared".
            engine.handle(f"nurserywatch/v1/{KIT.site}/command/ack", b"")
            assert engine.stats.rejected.total() == 2
            assert engine.stats.cleared == {"edge": 2, "status": 2, "alert": 2, "escalation": 2}
        finally:
            engine.close()


def test_wrong_json_types_are_rejected_as_invalid_payload_and_not_stored(tmp_path: Path) -> None:
    # Found from outside: "ts": "<digits>", "co2_ppm": "500", "seq": true were coerced, stored and
    # written to InfluxDB. The contract is strict JSON types (docs/contract.md).
    kit = make_kit("engine", devices={CLIP: "c001", "air-1": {"kind": "mhz19b"}})
    clock = ManualClock(T0)
    db = tmp_path / "gw.sqlite3"
    posture = reading_topic(kit.site, CLIP, "posture")
    air = reading_topic(kit.site, "air-1", "air")
    with Store(db) as store:
        engine = SiteEngine(kit, store, RulesConfig(), clock)
        try:
            engine.handle(posture, b'{"ts": "%d", "seq": 1, "position": "prone"}' % T0)
            engine.handle(posture, b'{"ts": %d, "seq": true, "position": "prone"}' % T0)
            engine.handle(air, b'{"ts": %d, "seq": 1, "co2_ppm": "500"}' % T0)
            assert engine.stats.rejected == {"invalid_payload": 3}
            assert StoreReader(db).count_readings(CLIP) == StoreReader(db).count_readings("air-1") == 0
            # The same readings with the right types are taken.
            engine.handle(posture, b'{"ts": %d, "seq": 1, "position": "prone"}' % T0)
            engine.handle(air, b'{"ts": %d, "seq": 1, "co2_ppm": 500}' % T0)
            assert engine.stats.readings_stored == 2 and engine.stats.rejected == {"invalid_payload": 3}
        finally:
            engine.close()
