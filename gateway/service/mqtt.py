"""The gateway's MQTT shell: readings in → validate → store → judge → alerts out.

Everything that decides lives in pure modules (contract validation, ``engine`` with its ``rules``,
``alerts`` and ``sessions``); this file only moves bytes between the broker, the engine, the SQLite
store and the observers (``hooks``), runs the timer tick, counts what it rejects, and keeps the
broker's retained messages in step with the engine:

* every alert change is published on ``alert/{id}``, QoS 1, retained;
* once an alert is resolved *and* acknowledged its final state is published (not retained) and the
  retained message is cleared with an empty retained payload, so it leaves late subscribers' lists;
* an escalated alert is also published on ``escalation/{id}``, retained while it is active and
  unacknowledged (and cleared when it is acknowledged or resolved);
* each room's nap session is retained on ``session/{room}``;
* on every (re)connect the open alerts, escalations and sessions are republished (a broker
  restarted without persistence has lost them), and retained alerts / escalations the engine does
  not hold any more are cleared.

* a heartbeat (``GatewayStatus``) is retained on ``gateway`` about every second, from the timer tick
  (a dead timer stops it too); the broker publishes the last will ``{"online": false}`` for a
  gateway that vanished;
* runtime child ↔ device assignments (``command/assign``, gateway/engine/assignments.py) re-bind the rules
  and records and are retained on ``assignment/{device}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import methodcaller
from pathlib import Path

import aiomqtt

from gateway.child_data.store import ChildDataStoreError, note_bindings
from gateway.config import RulesConfig
from gateway.db.assignments_store import Assignments
from gateway.db.store import Store, StoreError
from gateway.engine.alerts import Change, Transition, UnknownAlertError
from gateway.engine.assignments import AssignmentError
from gateway.engine.observers import AcceptedReading, GatewayObserver, ObserverFactory, Outgoing
from gateway.engine.rules_engine import Outcome, RulesEngine
from gateway.engine.sessions import UnknownRoomError
from gateway.influx.writer import ReadingsSink, WriterStats
from gateway.records.entries import RecordCommandError, RecordsConfig
from gateway.records.store import RecordsObserver
from gateway.retention.job import RetentionRunner
from gateway.rules.events import StaleReading
from gateway.service.metrics import gateway_families
from gateway.service.metrics_http import metrics_server
from nurserywatch.clock import Clock
from nurserywatch.contract import (
    AckCommand,
    Alert,
    AlertState,
    AssignCommand,
    ContractError,
    DeviceStatus,
    EdgeStatus,
    GatewayStatus,
    P,
    RecordCommand,
    SessionCommand,
    Stream,
    TopicKind,
    alert_topic,
    decode,
    escalation_topic,
    gateway_topic,
    parse_reading,
    parse_topic,
    session_topic,
    subscription,
    time_ahead,
)
from nurserywatch.kit import STREAMS_BY_KIND, Device, Kit
from nurserywatch.metrics import Histogram
from nurserywatch.metrics import render as render_metrics
from nurserywatch.mqtt import BrokerURL, raise_if_cancel_was_swallowed, run_session
from nurserywatch.mqtt import ack as mqtt_ack

log = logging.getLogger(__name__)

#: Seconds between two log lines for the same rejection reason (the counters still count all).
LOG_INTERVAL_S = 10.0
#: About how often the heartbeat goes out (in whole timer ticks; DESIGN: the dashboard calls a
#: gateway lost after 5 s of silence).
HEARTBEAT_MS = 1000
#: Wait at most this long for a PUBACK. aiomqtt does not wake a pending publish when the connection
#: drops: with its 10 s default a broker that went down mid-publish left the gateway deaf for 10 s
#: (found by tests/e2e/test_chaos.py). On loopback a PUBACK takes milliseconds; a timeout reconnects,
#: and the unsent message stays in the outbox.
PUBLISH_TIMEOUT_S = 2.0
#: Readings committed (and acknowledged to the broker) at most this many at a time; a batch is also
#: committed whenever the MQTT client's queue is empty, before anything is published, before a tick
#: and before any other kind of message (docs/gateway.md "Batched commits").
BATCH_MAX = 500


@dataclass
class GatewayStats:
    """Counters of one gateway run; tests read them (Prometheus metrics come later)."""

    #: MQTT sessions that reached "subscribed" (1 after start, +1 per reconnect).
    sessions: int = 0
    readings_received: int = 0
    readings_stored: int = 0
    alerts_published: int = 0
    #: Retained alert / escalation messages cleared because the engine no longer holds them.
    stale_retained_cleared: int = 0
    #: Timer ticks run (rules, schedules, re-notification).
    ticks: int = 0
    #: Exceptions raised by observers (logged; the gateway carries on).
    observer_errors: int = 0
    #: Input not used, by reason: bad_topic, unknown_device, unexpected_stream, unknown_agent, unknown_alert,
    #: unknown_room, bad_json, invalid_payload, too_large, bad_utf8, duplicate, stale, future (a time more than
    #: contract.MAX_AHEAD_MS ahead of the gateway clock), store_error, internal_error;
    #: command/record: unknown_record, not_a_record, already_confirmed, invalid_command (docs/records.md).
    rejected: Counter[str] = field(default_factory=Counter)
    #: The InfluxDB writer's counters (``readings: influxdb``; None with SQLite only): written,
    #: buffered, dropped, dead_lettered, retries, backfilled, last_error — the same live object.
    influx: WriterStats | None = None
    #: Readings received by stream (valid or not; ``readings_received`` is their sum) — /metrics.
    readings_by_stream: Counter[str] = field(default_factory=Counter)
    #: Alert transitions by (rule, change) — /metrics.
    alert_transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Seconds from a reading taken off the MQTT client's queue to its rules judged (stored, observers run).
    judge_seconds: Histogram = field(default_factory=Histogram)
    #: Seconds from the message (or timer tick) that changed an alert to its publish acknowledged by the broker.
    alert_publish_seconds: Histogram = field(default_factory=Histogram)
    #: The port /metrics is served on (None: off), once listening.
    metrics_port: int | None = None


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


@dataclass(frozen=True, slots=True)
class _Pending:
    payload: bytes
    retain: bool
    #: Publish, then clear the retained message (an alert's final, closing state).
    clear_after: bool = False
    #: perf_counter() when the message or tick that caused this alert change was taken up (metrics).
    since: float | None = None


class Gateway:
    """State of one running gateway: the rules engine, the store, the observers and the counters."""

    def __init__(
        self,
        kit: Kit,
        store: Store,
        rules: RulesConfig,
        clock: Clock,
        stats: GatewayStats,
        observers: Sequence[ObserverFactory] = (),
        records: RecordsConfig | None = None,
    ) -> None:
        self.kit = kit
        self.store = store
        self.rules = rules
        self.clock = clock
        self.stats = stats
        try:  # the history `nurserywatch data export/erase` find a child's readings by (docs/storage.md)
            note_bindings(store.path, kit, clock.now_ms())
        except ChildDataStoreError as exc:
            log.error("%s", exc)
        sessions, windows = store.sessions()
        self.engine = RulesEngine(
            kit, rules, clock.now_ms(), alerts=store.open_alerts(), sessions=sessions, schedule_windows=windows
        )
        for room in sorted(set(rules.rooms) - {r.id for r in kit.rooms}):
            log.error("rules file: rooms.%s is not a room of kit %r; its settings are not used", room, kit.site)
        self._devices = {d.id: d for d in kit.devices}
        self._agents = frozenset(a.id for a in kit.agents)
        self.edges_online: dict[str, bool] = {}
        self._log = _RateLimitedLog()
        # Messages not yet confirmed published, by topic (a newer state replaces an unsent older one).
        self._outbox: dict[str, _Pending] = {}
        self._client: aiomqtt.Client | None = None
        self._flush_lock = asyncio.Lock()
        # Messages handled (mid, qos) whose writes wait in the open batch: acknowledged after its commit.
        self._unacked: list[tuple[int, int]] = []
        # True while the message loop runs: readings are then written in batches (Store.begin/commit).
        self._batching = False
        self._failed_observers: set[str] = set()
        # perf_counter() at the start of the message or tick being handled (latency metrics only).
        self._taken_up = 0.0
        open_alerts = self.engine.book.open_alerts()
        if open_alerts:
            log.info("restored %d open alert(s) from %s", len(open_alerts), store.path)
        # The nap-check records (docs/records.md) always run, through the same hook as any observer.
        self.records = RecordsObserver(self, records)
        self.observers: list[GatewayObserver] = [self.records, *(factory(self) for factory in observers)]
        # Today's child ↔ device assignments (gateway/engine/assignments.py); re-binds devices as it loads.
        self.assignments = Assignments(self)
        self.observers.append(self.assignments)
        self._heartbeat_every = max(1, round(HEARTBEAT_MS / rules.tick_ms))
        now = clock.now_ms()
        for change in self.engine.restored_sessions(now):
            log.info("nap session %s of room %s continues", change.state.session_id, change.room)
            self._notify(methodcaller("on_session", change))

    # ------------------------------------------------------------ hook for other parts

    def device(self, device_id: str) -> Device | None:
        """A kit device as the gateway binds it now (today's assignments included); None: unknown."""
        return self._devices.get(device_id)

    def add_observer(self, observer: GatewayObserver) -> None:
        self.observers.append(observer)

    def rebind_device(self, device: str, child: str | None, now: int) -> None:
        """A runtime assignment (gateway/engine/assignments.py): ``device`` now watches ``child``."""
        self._devices[device] = self._devices[device].model_copy(update={"child": child})
        self.engine.rebind(device, child, now)
        self.records.keeper.rebind(device, child)

    def heartbeat(self, online: bool = True) -> Outgoing:
        status = GatewayStatus(ts=self.clock.now_ms(), online=online, heartbeat_s=HEARTBEAT_MS / 1000)
        return Outgoing(gateway_topic(self.kit.site), status.to_json(), retain=True)

    @property
    def outbox_depth(self) -> int:
        """Messages waiting to be published (and confirmed by the broker)."""
        return len(self._outbox)

    def enqueue(self, message: Outgoing) -> None:
        """Publish ``message`` (QoS 1) as soon as the broker is reachable."""
        self._outbox[message.topic] = _Pending(message.payload, message.retain)

    # ------------------------------------------------------------ MQTT session

    async def session(self, client: aiomqtt.Client) -> None:
        site = self.kit.site
        await client.subscribe(
            [
                (subscription(site, TopicKind.READING), 1),
                (subscription(site, TopicKind.STATUS), 1),
                (subscription(site, TopicKind.EDGE), 1),
                (subscription(site, TopicKind.COMMAND_ACK), 1),
                (subscription(site, TopicKind.COMMAND_SESSION), 1),
                (subscription(site, TopicKind.COMMAND_RECORD), 1),
                (subscription(site, TopicKind.COMMAND_ASSIGN), 1),
                # Only to reconcile retained messages on (re)connect; live echoes of our own
                # publishes arrive with retain=False and are ignored.
                (subscription(site, TopicKind.ALERT), 1),
                (subscription(site, TopicKind.ESCALATION), 1),
            ]
        )
        raise_if_cancel_was_swallowed()
        self.stats.sessions += 1
        now = self.clock.now_ms()
        for alert in self.engine.book.open_alerts():
            self._enqueue_alert(alert)
        for state in self.engine.sessions.states(now):
            self.enqueue(Outgoing(session_topic(site, state.room), state.to_json(), retain=True))
        self.assignments.publish_all(now)
        self.enqueue(self.heartbeat())
        self._client = client
        self._batching = True
        try:
            await self._flush(client)
            async for message in client.messages:
                self.handle(message.topic.value, _payload_bytes(message.payload), message.retain)
                # Acknowledged only once its batch is committed (manual_ack): a gateway killed before
                # gets it again from the broker, which keeps it for our persistent session.
                self._unacked.append((message.mid, message.qos))
                if self._outbox or len(self._unacked) >= BATCH_MAX or not len(client.messages):
                    await self._flush(client)  # commits and acknowledges first
        finally:
            self._batching = False
            # Handled but not acknowledged: kept (their redelivery is refused as duplicate); the mids
            # belonged to this connection and mean nothing on the next.
            self._unacked.clear()
            self._commit()
            self._client = None

    async def tick_forever(self) -> None:
        """The timer: every ``tick_ms`` (real time) judge at the injected clock's now, then publish.
        Runs across reconnects, so rules keep being judged (and stored) while the broker is away."""
        interval_s = self.rules.tick_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            self.tick()
            client = self._client
            if client is None:
                continue
            try:
                await self._flush(client)
            except aiomqtt.MqttError as exc:  # the message loop notices and reconnects
                self._log(logging.WARNING, "publish", f"publishing after a tick failed: {exc}")
            except Exception:  # the timer must outlive any bug: a dead timer would silence apnea alerts
                self.stats.rejected["internal_error"] += 1
                log.exception("internal error while publishing after a tick")

    def _commit(self) -> None:
        """Commit the open batch of readings, then acknowledge its messages to the broker. A failed
        commit is counted and logged (``store_error``) and acknowledged all the same: alerting must go
        on while the database fails, and unacknowledged messages would stall delivery."""
        try:
            self.store.commit()
        except StoreError as exc:
            self._reject("store_error", f"{exc}; {len(self._unacked)} message(s) not stored", level=logging.ERROR)
        client = self._client
        if client is not None:
            for mid, qos in self._unacked:
                mqtt_ack(client, mid, qos)
        self._unacked.clear()

    async def _flush(self, client: aiomqtt.Client) -> None:
        """Publish pending messages in order; an entry leaves the outbox only once sent, so a
        connection lost half-way is made good on the next session. Commits first: nothing (an
        alert above all) goes out before the state behind it is committed."""
        self._commit()
        async with self._flush_lock:
            while self._outbox:
                topic, msg = next(iter(self._outbox.items()))
                await client.publish(topic, msg.payload, qos=1, retain=msg.retain, timeout=PUBLISH_TIMEOUT_S)
                raise_if_cancel_was_swallowed()
                if msg.clear_after:
                    await client.publish(topic, b"", qos=1, retain=True, timeout=PUBLISH_TIMEOUT_S)
                    raise_if_cancel_was_swallowed()
                if self._outbox.get(topic) is msg:  # not replaced by a newer state meanwhile
                    del self._outbox[topic]
                if "/alert/" in topic and msg.payload:
                    self.stats.alerts_published += 1
                    if msg.since is not None:
                        self.stats.alert_publish_seconds.observe(time.perf_counter() - msg.since)

    # ------------------------------------------------------------ message handling (no network)

    def handle(self, topic_str: str, payload: bytes, retained: bool = False) -> None:
        """Process one message; what to publish goes to the outbox. Never raises for bad input."""
        self._taken_up = time.perf_counter()
        try:
            topic = parse_topic(topic_str)
            if topic.site != self.kit.site:
                raise ContractError("bad_topic", f"site {topic.site!r} is not this gateway's {self.kit.site!r}")
        except ContractError as exc:
            self._reject("bad_topic", f"{topic_str!r}: {exc.detail}")
            return
        if topic.kind is not TopicKind.READING:
            # Commands and the rest write through other connections to the same file (records,
            # assignments), which would wait for the batch's write lock: commit it first.
            self._commit()
        try:
            match topic.kind:
                case TopicKind.READING:
                    assert topic.device is not None and topic.stream is not None
                    self._on_reading(topic.device, topic.stream, payload, topic_str)
                case TopicKind.STATUS:
                    assert topic.device is not None
                    self._on_status(topic.device, payload, topic_str)
                case TopicKind.EDGE:
                    assert topic.agent is not None
                    self._on_edge(topic.agent, payload)
                case TopicKind.COMMAND_ACK:
                    self._on_ack(payload)
                case TopicKind.COMMAND_SESSION:
                    self._on_session_command(payload)
                case TopicKind.COMMAND_RECORD:
                    self._on_record_command(payload)
                case TopicKind.COMMAND_ASSIGN:
                    self._on_assign_command(payload)
                case TopicKind.ALERT | TopicKind.ESCALATION:
                    assert topic.alert_id is not None
                    if retained and payload and not self._should_be_retained(topic.kind, topic.alert_id):
                        log.info("clearing retained %s/%s: not open in the gateway", topic.kind.value, topic.alert_id)
                        self.stats.stale_retained_cleared += 1
                        self._outbox.setdefault(topic_str, _Pending(b"", retain=True))
                case _:
                    pass
        except Exception:  # a bug must not stop the gateway; count it and keep going
            self.stats.rejected["internal_error"] += 1
            log.exception("internal error while handling %s", topic_str)

    def tick(self) -> None:
        self._commit()  # the tick's observers write through their own connections (records, retention)
        self._taken_up = time.perf_counter()
        now = self.clock.now_ms()
        self.stats.ticks += 1
        try:
            outcome = self.engine.tick(now)
        except Exception:  # a bug in one rule must not stop the timer of all the others
            self.stats.rejected["internal_error"] += 1
            log.exception("internal error in the timer tick")
            return
        self._process(outcome)
        self._notify(methodcaller("on_tick", now))
        if self.stats.ticks % self._heartbeat_every == 0:
            self.enqueue(self.heartbeat())

    def _on_reading(self, device: str, stream: Stream, payload: bytes, topic: str) -> None:
        self.stats.readings_received += 1
        self.stats.readings_by_stream[stream.value] += 1
        known = self._devices.get(device)
        if known is None:
            self._reject("unknown_device", f"{topic}: device {device!r} is not in kit {self.kit.site!r}")
            return
        kind = known.kind
        if stream not in STREAMS_BY_KIND[kind]:
            self._reject("unexpected_stream", f"{topic}: a {kind.value} does not publish {stream.value} readings")
            return
        try:
            reading = parse_reading(stream, payload)
        except ContractError as exc:
            self._reject(exc.reason, f"{topic}: {exc.detail}")
            return
        now = self.clock.now_ms()
        ahead = time_ahead(reading, now)
        if ahead is not None:  # neither stored nor judged: it would make the real ones stale
            self._reject("future", f"{topic}: {ahead}")
            return
        try:
            if self._batching:
                self.store.begin()
            if not self.store.add_reading(device, stream, reading, now):
                self._reject("duplicate", f"{topic}: seq {reading.seq} ts {reading.ts} already stored")
                return
            self.stats.readings_stored += 1
        except StoreError as exc:
            # Keep judging: alerting must not stop because the database did (buffering comes later).
            self._reject("store_error", str(exc), level=logging.ERROR)
        dev = self._devices[device]
        accepted = AcceptedReading(device, dev.child, dev.room, stream, reading, now)
        # Storage copies (InfluxDB) want every stored reading, also one too old for the rules.
        self._notify(methodcaller("on_stored", accepted))
        try:
            outcome = self.engine.reading(device, stream, reading, now)
        except StaleReading as exc:
            self._reject("stale", f"{topic}: {exc}")
            return
        self._process(outcome)
        self._notify(methodcaller("on_reading", accepted))
        self.stats.judge_seconds.observe(time.perf_counter() - self._taken_up)

    def _on_status(self, device: str, payload: bytes, topic: str) -> None:
        if device not in self._devices:
            self._reject("unknown_device", f"{topic}: device {device!r} is not in kit {self.kit.site!r}")
            return
        status = self._decode(DeviceStatus, payload, topic)
        if status is None:
            return
        self._process(self.engine.device_status(device, status, self.clock.now_ms()))

    def _decode(self, model: type[P], payload: bytes, where: str) -> P | None:
        """The payload as ``model``, or None after counting and logging why it was refused."""
        try:
            return decode(model, payload)
        except ContractError as exc:
            self._reject(exc.reason, f"{where}: {exc.detail}")
            return None

    def _on_ack(self, payload: bytes) -> None:
        cmd = self._decode(AckCommand, payload, "command/ack")
        if cmd is None:
            return
        try:
            outcome = self.engine.acknowledge(cmd.alert_id, cmd.by, self.clock.now_ms())
        except UnknownAlertError as exc:
            self._reject("unknown_alert", f"command/ack by {cmd.by!r}: {exc}")
            return
        self._process(outcome)

    def _on_session_command(self, payload: bytes) -> None:
        cmd = self._decode(SessionCommand, payload, "command/session")
        if cmd is None:
            return
        try:
            outcome = self.engine.session_command(cmd, self.clock.now_ms())
        except UnknownRoomError as exc:
            self._reject("unknown_room", f"command/session by {cmd.by!r}: {exc}")
            return
        log.info("command/session: %s %s by %s", cmd.action.value, cmd.room, cmd.by)
        self._process(outcome)
        if not outcome.sessions:  # already so: answer with the current state all the same
            for state in self.engine.sessions.states(self.clock.now_ms()):
                if state.room == cmd.room:
                    self.enqueue(Outgoing(session_topic(self.kit.site, state.room), state.to_json(), retain=True))

    def _on_record_command(self, payload: bytes) -> None:
        cmd = self._decode(RecordCommand, payload, "command/record")
        if cmd is None:
            return
        try:
            entry = self.records.command(cmd, self.clock.now_ms())
        except RecordCommandError as exc:
            self._reject(
                exc.reason, f"command/record {cmd.action.value} of entry {cmd.entry} by {cmd.by!r}: {exc.detail}"
            )
            return
        log.info("nap-check entry %d %sed by %s (entry %d)", cmd.entry, cmd.action.value, cmd.by, entry.seq)

    def _on_assign_command(self, payload: bytes) -> None:
        cmd = self._decode(AssignCommand, payload, "command/assign")
        if cmd is None:
            return
        try:
            changes = self.assignments.command(cmd, self.clock.now_ms())
        except AssignmentError as exc:
            self._reject(exc.reason, f"command/assign of {cmd.device} by {cmd.by!r}: {exc.detail}")
            return
        for c in changes:
            log.info("assignment for %s: %s watches %s (by %s)", c.day, c.device, c.child or "nobody", cmd.by)

    def _on_edge(self, agent: str, payload: bytes) -> None:
        if agent not in self._agents:
            self._reject("unknown_agent", f"edge/{agent}: agent {agent!r} is not in kit {self.kit.site!r}")
            return
        status = self._decode(EdgeStatus, payload, f"edge/{agent}")
        if status is None:
            return
        if self.edges_online.get(agent) != status.online:
            log.info("edge agent %s is %s", agent, "online" if status.online else "OFFLINE")
        self.edges_online[agent] = status.online
        self._process(self.engine.edge_status(agent, status, self.clock.now_ms()))

    # ------------------------------------------------------------ outcome → store, observers, outbox

    def _process(self, outcome: Outcome) -> None:
        if outcome.sessions or self.engine.sessions.dirty_windows:
            windows = {r: self.engine.sessions.schedule_windows[r] for r in self.engine.sessions.dirty_windows}
            self.engine.sessions.dirty_windows.clear()
            for change in outcome.sessions:
                log.info("nap session %s of room %s %s by %s", change.state.session_id, change.room,
                         change.kind.value, change.state.stopped_by or change.state.started_by)  # fmt: skip
            try:
                self.store.record_sessions(outcome.sessions, windows)
            except StoreError as exc:
                self._reject("store_error", str(exc), level=logging.ERROR)
        self._record(outcome.transitions)
        if outcome.sessions:
            self._commit()  # the records write a session's sheet through their own connection
        for change in outcome.sessions:
            self._notify(methodcaller("on_session", change))
            self.enqueue(Outgoing(session_topic(self.kit.site, change.room), change.state.to_json(), retain=True))
        for t in outcome.transitions:
            self.stats.alert_transitions[(t.alert.rule, t.change.value)] += 1
            self._notify(methodcaller("on_alert", t))
            self._enqueue_transition(t)

    def _enqueue_transition(self, t: Transition) -> None:
        alert = t.alert
        self._enqueue_alert(alert, since=self._taken_up)
        if alert.escalated and t.change in (Change.ACKNOWLEDGED, Change.RESOLVED):
            self.enqueue(Outgoing(escalation_topic(self.kit.site, alert.id), b"", retain=True))

    def _enqueue_alert(self, alert: Alert, since: float | None = None) -> None:
        topic = alert_topic(self.kit.site, alert.id)
        self._outbox[topic] = _Pending(alert.to_json(), retain=alert.retained, clear_after=not alert.retained,
                                       since=since)  # fmt: skip
        if _escalation_retained(alert):
            self.enqueue(Outgoing(escalation_topic(self.kit.site, alert.id), alert.to_json(), retain=True))

    def _should_be_retained(self, kind: TopicKind, alert_id: str) -> bool:
        alert = self.engine.book.get(alert_id)
        if alert is None:
            return False
        return kind is TopicKind.ALERT or _escalation_retained(alert)

    def _record(self, transitions: Sequence[Transition]) -> None:
        for t in transitions:
            a = t.alert
            if t.change is Change.RENOTIFIED:
                log.debug("alert %s renotified (%d)", a.id, a.notify_count)
                continue
            by = f" by {a.acknowledged_by}" if t.change is Change.ACKNOWLEDGED else ""
            log.info("alert %s %s%s: %s %s %s/%s", a.id, t.change.value, by, a.severity.value, a.rule, a.child,
                     a.device)  # fmt: skip
        try:
            self.store.record(transitions)
        except StoreError as exc:
            # The alert is still published; the audit row is lost and said so (disk buffer comes later).
            self._reject("store_error", str(exc), level=logging.ERROR)

    def _notify(self, call: Callable[[GatewayObserver], None]) -> None:
        for observer in self.observers:
            try:
                call(observer)
            except Exception as exc:
                self.stats.observer_errors += 1
                name = type(observer).__name__
                if name not in self._failed_observers:  # the first traceback, then rate-limited lines
                    self._failed_observers.add(name)
                    log.exception("observer %s failed", name)
                else:
                    self._log(logging.ERROR, f"observer:{name}", f"observer {name} failed again: {exc!r}")

    def _reject(self, reason: str, detail: str, level: int = logging.WARNING) -> None:
        self.stats.rejected[reason] += 1
        self._log(level, reason, f"rejected ({reason}, {self.stats.rejected[reason]} so far): {detail}")


def _escalation_retained(alert: Alert) -> bool:
    """escalation/{id} is retained while the alert is escalated, active and unacknowledged."""
    return alert.escalated and alert.state is AlertState.ACTIVE and not alert.acknowledged


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
    observers: Sequence[ObserverFactory] = (),
    records: RecordsConfig | None = None,
    metrics_host: str = "127.0.0.1",
    metrics_port: int | None = None,
) -> None:
    """Run the gateway until cancelled. ``stats`` (optional) receives the counters, for tests;
    ``observers`` are factories of GatewayObservers (see gateway/engine/observers.py); ``records`` the nap-check
    record settings (configs/records.yaml; default: built-in). ``metrics_port``: serve Prometheus
    metrics on ``metrics_host`` (docs/metrics.md); None: off, 0: a free port (in ``stats.metrics_port``)."""
    sink = ReadingsSink(kit)  # readings: influxdb → an observer feeding a writer task (docs/storage.md)
    # Retention and downsampling, hourly on the gateway clock (docs/storage.md "Retention").
    retention = RetentionRunner(kit, db_path, buffer=None if sink.writer is None else sink.writer.buffer)
    with Store(db_path) as store:
        gw = Gateway(kit, store, rules, clock, stats if stats is not None else GatewayStats(),
                     [*observers, *sink.observers, retention.observer], records)  # fmt: skip
        if sink.writer is not None:
            gw.stats.influx = sink.writer.stats
        ticker = asyncio.create_task(gw.tick_forever(), name="gateway-tick")
        metrics = contextlib.AsyncExitStack()
        try:
            if metrics_port is not None:

                def scrape() -> str:
                    return render_metrics(gateway_families(gw, sink.writer))

                gw.stats.metrics_port = await metrics.enter_async_context(
                    metrics_server(metrics_host, metrics_port, scrape))  # fmt: skip
            # A fixed client id with clean_session=False: the broker queues QoS 1 readings while the
            # gateway restarts, and manual acknowledgement: a reading is acknowledged once stored, so
            # one received but not yet stored when the gateway dies is sent again.
            will = aiomqtt.Will(gateway_topic(kit.site), GatewayStatus(online=False).to_json(), qos=1, retain=True)
            await run_session(broker, f"nurserywatch-gateway-{kit.site}", gw.session, will=will, manual_ack=True)
        finally:
            await metrics.aclose()
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            gw.records.close()
            gw.assignments.close()
            await retention.aclose()
            await sink.aclose()
