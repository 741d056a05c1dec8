"""The gateway's MQTT shell: readings in → validate → store → judge → alerts out.

Everything that decides lives in pure modules (contract validation, ``rules``, ``alerts``); this file
only moves bytes between the broker, those modules and the SQLite store, counts what it rejects,
and keeps the broker's retained alert messages in step with the AlertBook:

* every alert change is published on ``alert/{id}``, QoS 1, retained;
* once an alert is resolved *and* acknowledged its final state is published (not retained) and the
  retained message is cleared with an empty retained payload, so it leaves late subscribers' lists;
* on every (re)connect the open alerts are republished (a broker restarted without persistence has
  lost them), and retained alerts the book does not hold any more are cleared.

TODO(contract): a retained gateway status/heartbeat topic (like ``edge/{agent}``) would let the
dashboard show "gateway offline"; it is not in contract v1 yet, so nothing is published for it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from gateway.alerts import AlertBook, Change, Subject, Transition, UnknownAlertError
from gateway.config import RulesConfig
from gateway.rules.prone import PostureSample, ProneRule, StaleReading
from gateway.store import Store, StoreError
from nurserywatch.clock import Clock
from nurserywatch.contract import (
    AckCommand,
    Alert,
    ContractError,
    EdgeStatus,
    PostureReading,
    Stream,
    TopicKind,
    alert_topic,
    decode,
    parse_reading,
    parse_topic,
    subscription,
)
from nurserywatch.kit import STREAMS_BY_KIND, Kit
from nurserywatch.mqtt import BrokerURL, raise_if_cancel_was_swallowed, run_session

log = logging.getLogger(__name__)

#: Seconds between two log lines for the same rejection reason (the counters still count all).
LOG_INTERVAL_S = 10.0


@dataclass
class GatewayStats:
    """Counters of one gateway run; tests read them (Prometheus metrics come later)."""

    #: MQTT sessions that reached "subscribed" (1 after start, +1 per reconnect).
    sessions: int = 0
    readings_received: int = 0
    readings_stored: int = 0
    alerts_published: int = 0
    #: Retained alert messages cleared because the book no longer holds them (restart reconciliation).
    stale_retained_cleared: int = 0
    #: Input not used, by reason: bad_topic, unknown_device, unexpected_stream, unknown_agent, unknown_alert, bad_json,
    #: invalid_payload, too_large, bad_utf8, duplicate, stale, store_error, internal_error.
    rejected: Counter[str] = field(default_factory=Counter)


class _RateLimitedLog:
    """One log line per reason at most every ``interval_s``; says how many were not logged."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S, monotonic: Callable[[], float] = time.monotonic):
        self._interval = interval_s
        self._monotonic = monotonic  # log pacing only, not logic: wall-clock injection is not needed
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def __call__(self, level: int, reason: str, msg: str) -> None:
        now = self._monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            self._suppressed[reason] += 1
            return
        self._last[reason] = now
        more = self._suppressed.pop(reason, 0)
        log.log(level, "%s%s", msg, f" (+{more} more {reason} not logged)" if more else "")


class Gateway:
    """State of one running gateway: the alert book, the rules, the store and the counters."""

    def __init__(self, kit: Kit, store: Store, rules: RulesConfig, clock: Clock, stats: GatewayStats) -> None:
        self.kit = kit
        self.store = store
        self.clock = clock
        self.stats = stats
        self.book = AlertBook(store.open_alerts())
        self.prone = ProneRule(rules.prone)
        # Lookups built once: every reading needs its device's subject, every edge status its agent.
        self._subjects = {d.id: Subject.of_device(kit, d.id) for d in kit.devices}
        self._kinds = {d.id: d.kind for d in kit.devices}
        self._agents = frozenset(a.id for a in kit.agents)
        self.edges_online: dict[str, bool] = {}
        self._log = _RateLimitedLog()
        # Alert states not yet confirmed published (survives reconnects within a run).
        self._outbox: dict[str, Alert] = {}
        if self.book.open_alerts():
            log.info("restored %d open alert(s) from %s", len(self.book.open_alerts()), store.path)

    # ------------------------------------------------------------ MQTT session

    async def session(self, client: aiomqtt.Client) -> None:
        site = self.kit.site
        await client.subscribe(
            [
                (subscription(site, TopicKind.READING), 1),
                (subscription(site, TopicKind.COMMAND_ACK), 1),
                (subscription(site, TopicKind.EDGE), 1),
                # Only to reconcile retained alerts on (re)connect; live echoes of our own publishes
                # arrive with retain=False and are ignored.
                (subscription(site, TopicKind.ALERT), 1),
            ]
        )
        raise_if_cancel_was_swallowed()
        self.stats.sessions += 1
        for alert in self.book.open_alerts():
            self._outbox[alert.id] = alert
        await self._flush(client)
        async for message in client.messages:
            transitions, clear = self.handle(message.topic.value, _payload_bytes(message.payload), message.retain)
            for t in transitions:
                self._outbox[t.alert.id] = t.alert
            if clear is not None:
                await self._clear(client, clear)
            await self._flush(client)

    async def _flush(self, client: aiomqtt.Client) -> None:
        """Publish pending alert states in order; an entry leaves the outbox only once sent, so a
        connection lost half-way is made good on the next session."""
        while self._outbox:
            alert_id, alert = next(iter(self._outbox.items()))
            topic = alert_topic(self.kit.site, alert_id)
            await client.publish(topic, alert.to_json(), qos=1, retain=alert.retained)
            raise_if_cancel_was_swallowed()
            if not alert.retained:
                await self._clear(client, alert_id)
            del self._outbox[alert_id]
            self.stats.alerts_published += 1

    async def _clear(self, client: aiomqtt.Client, alert_id: str) -> None:
        await client.publish(alert_topic(self.kit.site, alert_id), b"", qos=1, retain=True)
        raise_if_cancel_was_swallowed()

    # ------------------------------------------------------------ message handling (no network)

    def handle(self, topic_str: str, payload: bytes, retained: bool = False) -> tuple[list[Transition], str | None]:
        """Process one message. Returns the alert transitions to publish and, for a stale retained
        alert, the id whose retained message must be cleared. Never raises for bad input."""
        try:
            topic = parse_topic(topic_str)
            if topic.site != self.kit.site:
                raise ContractError("bad_topic", f"site {topic.site!r} is not this gateway's {self.kit.site!r}")
        except ContractError as exc:
            self._reject("bad_topic", f"{topic_str!r}: {exc.detail}")
            return [], None
        try:
            match topic.kind:
                case TopicKind.READING:
                    assert topic.device is not None and topic.stream is not None
                    return self._on_reading(topic.device, topic.stream, payload, topic_str), None
                case TopicKind.COMMAND_ACK:
                    return self._on_ack(payload), None
                case TopicKind.EDGE:
                    assert topic.agent is not None
                    self._on_edge(topic.agent, payload)
                case TopicKind.ALERT:
                    assert topic.alert_id is not None
                    if retained and payload and self.book.get(topic.alert_id) is None:
                        log.info("clearing retained alert %s: not open in the gateway's book", topic.alert_id)
                        self.stats.stale_retained_cleared += 1
                        return [], topic.alert_id
                case _:
                    pass
        except Exception:  # a bug must not stop the gateway; count it and keep going
            self.stats.rejected["internal_error"] += 1
            log.exception("internal error while handling %s", topic_str)
        return [], None

    def _on_reading(self, device: str, stream: Stream, payload: bytes, topic: str) -> list[Transition]:
        self.stats.readings_received += 1
        subject = self._subjects.get(device)
        if subject is None:
            self._reject("unknown_device", f"{topic}: device {device!r} is not in kit {self.kit.site!r}")
            return []
        kind = self._kinds[device]
        if stream not in STREAMS_BY_KIND[kind]:
            self._reject("unexpected_stream", f"{topic}: a {kind.value} does not publish {stream.value} readings")
            return []
        try:
            reading = parse_reading(stream, payload)
        except ContractError as exc:
            self._reject(exc.reason, f"{topic}: {exc.detail}")
            return []
        try:
            if not self.store.add_reading(device, stream, reading, self.clock.now_ms()):
                self._reject("duplicate", f"{topic}: seq {reading.seq} ts {reading.ts} already stored")
                return []
            self.stats.readings_stored += 1
        except StoreError as exc:
            # Keep judging: alerting must not stop because the database did (buffering comes later).
            self._reject("store_error", str(exc), level=logging.ERROR)
        if isinstance(reading, PostureReading):
            try:
                events = self.prone.feed(PostureSample(device, reading.position, reading.ts))
            except StaleReading as exc:
                self._reject("stale", f"{topic}: {exc}")
                return []
            transitions = [t for ev in events for t in self.book.apply(ev, subject)]
            self._record(transitions)
            return transitions
        return []

    def _on_ack(self, payload: bytes) -> list[Transition]:
        try:
            cmd = decode(AckCommand, payload)
        except ContractError as exc:
            self._reject(exc.reason, f"command/ack: {exc.detail}")
            return []
        try:
            transitions = self.book.acknowledge(cmd.alert_id, cmd.by, self.clock.now_ms())
        except UnknownAlertError as exc:
            self._reject("unknown_alert", f"command/ack by {cmd.by!r}: {exc}")
            return []
        self._record(transitions)
        return transitions

    def _on_edge(self, agent: str, payload: bytes) -> None:
        if agent not in self._agents:
            self._reject("unknown_agent", f"edge/{agent}: agent {agent!r} is not in kit {self.kit.site!r}")
            return
        try:
            status = decode(EdgeStatus, payload)
        except ContractError as exc:
            self._reject(exc.reason, f"edge/{agent}: {exc.detail}")
            return
        # Kept for the sensor-lost rule (rules-engine issue); for now only logged on change.
        if self.edges_online.get(agent) != status.online:
            log.info("edge agent %s is %s", agent, "online" if status.online else "OFFLINE")
        self.edges_online[agent] = status.online

    def _record(self, transitions: Sequence[Transition]) -> None:
        for t in transitions:
            a = t.alert
            by = f" by {a.acknowledged_by}" if t.change is Change.ACKNOWLEDGED else ""
            log.info("alert %s %s%s: %s %s/%s", a.id, t.change.value, by, a.rule, a.child, a.device)
        try:
            self.store.record(transitions)
        except StoreError as exc:
            # The alert is still published; the audit row is lost and said so (disk buffer comes later).
            self._reject("store_error", str(exc), level=logging.ERROR)

    def _reject(self, reason: str, detail: str, level: int = logging.WARNING) -> None:
        self.stats.rejected[reason] += 1
        self._log(level, reason, f"rejected ({reason}, {self.stats.rejected[reason]} so far): {detail}")


def _payload_bytes(payload: bytes | bytearray | str | int | float | None) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


async def run_gateway(
    kit: Kit,
    broker: BrokerURL,
    db_path: Path,
    rules: RulesConfig,
    clock: Clock,
    *,
    stats: GatewayStats | None = None,
) -> None:
    """Run the gateway until cancelled. ``stats`` (optional) receives the counters, for tests."""
    with Store(db_path) as store:
        gw = Gateway(kit, store, rules, clock, stats if stats is not None else GatewayStats())
        # A fixed client id with clean_session=False: the broker queues QoS 1 readings while the
        # gateway restarts, so none is lost.
        await run_session(broker, f"nurserywatch-gateway-{kit.site}", gw.session)
