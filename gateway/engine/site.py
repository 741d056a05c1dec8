"""The site engine: one nursery site's gateway without its transport. Messages in (topic string,
payload bytes, retained flag) → validate → store → rules → alerts → records → messages to publish out
(``Outgoing``, in an outbox), time from the injected ``Clock``. No network, no event loop: a transport
shell (gateway/service/mqtt.py today; a NATS JetStream consumer next) moves bytes in and out.

What a transport shell must do:

* deliver every message of the site's subscriptions (``SUBSCRIPTIONS``) to ``handle(topic, payload,
  retained, ack)``; ``retained`` is true only for a retained message delivered on subscribing;
  ``ack`` (optional) acknowledges the message to the transport — the engine calls it once the batch
  holding what the message wrote is committed, never before (a gateway killed before gets the message
  again, and its redelivery is refused as a duplicate);
* call ``connected()`` once subscribed (the engine queues the retained state to republish: open alerts,
  escalations, nap sessions, assignments, a heartbeat; and from then on batches its writes) and
  ``disconnected()`` when the session ends (the acks it still holds are dropped: they belong to that
  connection);
* call ``tick()`` every ``tick_ms`` of real time, connected or not;
* publish the outbox: ``next_outgoing()`` (commits first, so nothing — an alert above all — goes out
  before the state behind it is stored) gives the oldest pending message; publish it with QoS 1 (and
  the retain flag; when ``clear_after``, then an empty retained payload on the same topic), and once
  the transport confirmed it call ``published(msg)``. A message not confirmed stays in the outbox and
  goes out on the next session; a newer state for a topic replaces an unsent older one. Flush
  whenever ``flush_due()``, when the transport's own queue of incoming messages is empty, and after a
  tick;
* publish the last will ``heartbeat(online=False)`` for a gateway that vanished, if it can.

Broker-facing behaviour (docs/gateway.md):

* every alert change is published on ``alert/{id}``, QoS 1, retained;
* once an alert is resolved *and* acknowledged its final state is published (not retained) and the
  retained message is cleared with an empty retained payload, so it leaves late subscribers' lists;
* an escalated alert is also published on ``escalation/{id}``, retained while it is active and
  unacknowledged (and cleared when it is acknowledged or resolved);
* each room's nap session is retained on ``session/{room}``;
* on every (re)connect the open alerts, escalations and sessions are republished (a broker restarted
  without persistence has lost them), and retained alerts / escalations the engine does not hold any
  more are cleared;
* a heartbeat (``GatewayStatus``) is retained on ``gateway`` about every second, from the timer tick
  (a dead timer stops it too);
* the nap-check records' latest signed day head (``RecordsHead``, when the site signs them) is retained
  on ``records/head`` when it is signed and on every (re)connect, for the centre (docs/records.md);
* runtime child ↔ device assignments (``command/assign``, gateway/engine/assignments.py) re-bind the
  rules and records and are retained on ``assignment/{device}``;
* a staff command (``command/*``) is taken only when signed by the dashboard's command key, within
  the time window and not seen before (nurserywatch/command_auth.py); any other is counted and dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import methodcaller

from gateway.alert_changes import Change, Transition
from gateway.child_data.store import ChildDataStoreError, note_bindings
from gateway.config import RulesConfig
from gateway.db.assignments_observer import AssignmentsObserver
from gateway.db.reader import StoreError
from gateway.db.store import Store
from gateway.engine.alerts import UnknownAlertError
from gateway.engine.assignments import AssignmentError
from gateway.engine.observers import AcceptedReading, GatewayObserver, ObserverContext, ObserverFactory, Outgoing
from gateway.engine.rules_engine import Outcome, RulesEngine
from gateway.engine.sessions import UnknownRoomError
from gateway.engine.stats import GatewayStats
from gateway.records.entries import RecordCommandError, RecordsConfig
from gateway.records.keeper import RecordsObserver, RecordsSigning
from gateway.rules.events import StaleReading
from nurserywatch.clock import Clock, stopwatch
from nurserywatch.command_auth import CommandGate, CommandVerifier
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
    Topic,
    TopicKind,
    alert_topic,
    decode,
    escalation_topic,
    gateway_topic,
    is_cleared,
    parse_reading,
    parse_topic,
    session_topic,
    time_ahead,
)
from nurserywatch.jetstream import INPUT_KINDS
from nurserywatch.kit import STREAMS_BY_KIND, Device, Kit

log = logging.getLogger(__name__)

#: What a transport subscribes to (all QoS 1). Alerts and escalations only to reconcile retained
#: messages on (re)connect; live echoes of the gateway's own publishes arrive not retained and are ignored.
#: (The input kinds are the ones the JetStream shell takes from nats-server's stream instead.)
SUBSCRIPTIONS = (*INPUT_KINDS, TopicKind.ALERT, TopicKind.ESCALATION)
#: Seconds between two log lines for the same rejection reason (the counters still count all).
LOG_INTERVAL_S = 10.0
#: About how often the heartbeat goes out (in whole timer ticks; docs/dashboard.md: the dashboard calls a
#: gateway lost after 5 s of silence).
HEARTBEAT_MS = 1000
#: Readings committed (and acknowledged to the transport) at most this many at a time; a batch is also
#: committed whenever the transport's queue is empty, before anything is published, before a tick and
#: before any other kind of message (docs/gateway.md "Batched commits").
BATCH_MAX = 500


class RateLimitedLog:
    """One log line per reason at most every ``interval_s``; says how many were not logged."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = LOG_INTERVAL_S,
        monotonic: Callable[[], float] = stopwatch,
    ) -> None:
        self._logger = logger
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
        self._logger.log(level, "%s%s", msg, f" (+{more} more {reason} not logged)" if more else "")


@dataclass(frozen=True, slots=True)
class Pending:
    """A message in the outbox, waiting to be published and confirmed."""

    topic: str
    payload: bytes
    retain: bool
    #: Publish, then clear the retained message (an alert's final, closing state).
    clear_after: bool = False
    #: The engine's stopwatch when the message or tick that caused this alert change was taken up (metrics).
    since: float | None = None


class SiteEngine:
    """State of one running gateway without its transport: the rules engine, the store, the observers,
    the outbox and the counters."""

    def __init__(
        self,
        kit: Kit,
        store: Store,
        rules: RulesConfig,
        clock: Clock,
        stats: GatewayStats | None = None,
        observers: Sequence[ObserverFactory] = (),
        records: RecordsConfig | None = None,
        stopwatch: Callable[[], float] = stopwatch,
        command_key: CommandVerifier | None = None,
        records_signing: RecordsSigning | None = None,
    ) -> None:
        """``stopwatch``: monotonic seconds, for the latency metrics only (the rules run on ``clock``).
        ``command_key``: the dashboard's public command key; staff commands must be signed with its
        private half (nurserywatch/command_auth.py). None: every command is refused."""
        self.kit = kit
        self.commands = CommandGate(command_key)
        self._stopwatch = stopwatch
        self.store = store
        self.rules = rules
        self.clock = clock
        self.stats = stats if stats is not None else GatewayStats()
        try:  # the history `nurserywatch data export/erase` find a child's readings by (docs/storage.md)
            note_bindings(store.path, kit, clock.now_ms())
        except ChildDataStoreError as exc:
            log.error("%s", exc)
        sessions, windows = store.sessions()
        self.rules_engine = RulesEngine(
            kit, rules, clock.now_ms(), alerts=store.open_alerts(), sessions=sessions, schedule_windows=windows,
            recent=store.recent_readings,
        )
        for room in sorted(set(rules.rooms) - {r.id for r in kit.rooms}):
            log.error("rules file: rooms.%s is not a room of kit %r; its settings are not used", room, kit.site)
        self._devices = {d.id: d for d in kit.devices}
        self._reading_topics: dict[str, Topic] = {}
        self._agents = frozenset(a.id for a in kit.agents)
        self.edges_online: dict[str, bool] = {}
        self._log = RateLimitedLog(log, monotonic=stopwatch)
        # Messages not yet confirmed published, by topic (a newer state replaces an unsent older one).
        self._outbox: dict[str, Pending] = {}
        #: Counts messages put in the outbox: a shell that publishes from another task compares it
        #: with the value it last flushed at (``flush_due(since=)``).
        self.outbox_version = 0
        # Acks of messages handled whose writes wait in the open batch: called after its commit.
        self._acks: list[Callable[[], None]] = []
        # True while a transport session runs: readings are then written in batches (Store.begin/commit).
        self._batching = False
        self._failed_observers: set[str] = set()
        # The stopwatch at the start of the message or tick being handled (latency metrics only).
        self._taken_up = 0.0
        open_alerts = self.rules_engine.book.open_alerts()
        if open_alerts:
            log.info("restored %d open alert(s) from %s", len(open_alerts), store.path)
        self.context = ObserverContext(
            kit=kit,
            rules=rules,
            db_path=store.path,
            clock=clock,
            open_alerts=self.open_alerts,
            session=self.rules_engine.sessions.state,
            device=self.device,
            enqueue=self.enqueue,
            rebind_device=self.rebind_device,
            count_rejected=self._count_rejected,
        )
        # The nap-check records (docs/records.md) always run, through the same hook as any observer.
        # ``records_signing``: the site key that signs each day's head (docs/records.md); None: unsigned.
        self.records = RecordsObserver(self.context, records, records_signing)
        self.observers: list[GatewayObserver] = [self.records, *(factory(self.context) for factory in observers)]
        # Today's child ↔ device assignments (gateway/engine/assignments.py); re-binds devices as it loads.
        self.assignments = AssignmentsObserver(self.context)
        self.observers.append(self.assignments)
        self._heartbeat_every = max(1, round(HEARTBEAT_MS / rules.tick_ms))
        now = clock.now_ms()
        for change in self.rules_engine.restored_sessions(now):
            log.info("nap session %s of room %s continues", change.state.session_id, change.room)
            self._notify(methodcaller("on_session", change))

    def close(self) -> None:
        """Close the observers' own connections (the store belongs to the caller)."""
        self.records.close()
        self.assignments.close()

    # ------------------------------------------------------------ what observers and shells read

    def device(self, device_id: str) -> Device | None:
        """A kit device as the gateway binds it now (today's assignments included); None: unknown."""
        return self._devices.get(device_id)

    def open_alerts(self) -> list[Alert]:
        return self.rules_engine.book.open_alerts()

    def rebind_device(self, device: str, child: str | None, now: int) -> None:
        """A runtime assignment (gateway/engine/assignments.py): ``device`` now watches ``child``."""
        self._devices[device] = self._devices[device].model_copy(update={"child": child})
        self.rules_engine.rebind(device, child, now)
        self.records.keeper.rebind(device, child)

    def heartbeat(self, online: bool = True) -> Outgoing:
        """The gateway's status message (``online=False``: the transport's last will)."""
        status = GatewayStatus(ts=self.clock.now_ms(), online=online, heartbeat_s=HEARTBEAT_MS / 1000)
        return Outgoing(gateway_topic(self.kit.site), status.to_json(), retain=True)

    # ------------------------------------------------------------ the outbox

    def enqueue(self, message: Outgoing) -> None:
        """Publish ``message`` (QoS 1) as soon as the transport can."""
        self._outbox[message.topic] = Pending(message.topic, message.payload, message.retain)
        self.outbox_version += 1

    @property
    def outbox_depth(self) -> int:
        """Messages waiting to be published (and confirmed by the transport)."""
        return len(self._outbox)

    def outbox(self) -> list[Pending]:
        """The messages waiting, oldest first (a snapshot; for checks and tests)."""
        return list(self._outbox.values())

    def next_outgoing(self) -> Pending | None:
        """The oldest message waiting, None when there is none. Commits the open batch first: nothing
        (an alert above all) goes out before the state behind it is committed."""
        self.commit()
        return next(iter(self._outbox.values()), None)

    def published(self, msg: Pending) -> None:
        """The transport confirmed ``msg``: it leaves the outbox unless a newer state replaced it."""
        if self._outbox.get(msg.topic) is msg:
            del self._outbox[msg.topic]
        if "/alert/" in msg.topic and msg.payload:
            self.stats.alerts_published += 1
            if msg.since is not None:
                self.stats.alert_publish_seconds.observe(self._stopwatch() - msg.since)

    # ------------------------------------------------------------ the transport session and batches

    def connected(self) -> None:
        """A transport session is subscribed: queue the retained state again (a broker restarted
        without persistence lost it) and batch writes from now on."""
        self.stats.sessions += 1
        now = self.clock.now_ms()
        for alert in self.rules_engine.book.open_alerts():
            self._enqueue_alert(alert)
        for state in self.rules_engine.sessions.states(now):
            self.enqueue(Outgoing(session_topic(self.kit.site, state.room), state.to_json(), retain=True))
        self.assignments.publish_all(now)
        self.records.publish_head()
        self.enqueue(self.heartbeat())
        self._batching = True

    def disconnected(self) -> None:
        """The transport session ended: messages handled but not acknowledged stay so (their
        redelivery is refused as duplicate; the acks belonged to the lost connection); commit."""
        self._batching = False
        self._acks.clear()
        self.commit()

    def flush_due(self, since: int | None = None) -> bool:
        """Something waits to be published, or the batch is full: the shell should flush now.
        ``since``: an ``outbox_version`` already handed to a publisher — only what was put in the
        outbox after it is due (a shell publishing from its own task; the unconfirmed rest is its)."""
        if len(self._acks) >= BATCH_MAX:
            return True
        if since is None:
            return bool(self._outbox)
        return self.outbox_version != since

    def commit(self) -> None:
        """Commit the open batch of readings, then acknowledge its messages. A failed commit is counted
        and logged (``store_error``) and acknowledged all the same: alerting must go on while the
        database fails, and unacknowledged messages would stall delivery."""
        try:
            self.store.commit()
        except StoreError as exc:
            self._reject("store_error", f"{exc}; {len(self._acks)} message(s) not stored", level=logging.ERROR)
        acks, self._acks = self._acks, []
        for ack in acks:
            ack()

    # ------------------------------------------------------------ messages in

    def handle(self, topic: str, payload: bytes, retained: bool = False, ack: Callable[[], None] | None = None) -> None:
        """Process one message; what to publish goes to the outbox. ``ack`` is called once its writes
        are committed (at once when not batching). Never raises for bad input."""
        self._handle(topic, payload, retained)
        if ack is not None:
            self._acks.append(ack)
            if not self._batching:
                self.commit()

    def _handle(self, topic_str: str, payload: bytes, retained: bool) -> None:
        self._taken_up = self._stopwatch()
        topic = self._reading_topics.get(topic_str)
        if topic is None:
            try:
                topic = parse_topic(topic_str)
                if topic.site != self.kit.site:
                    raise ContractError("bad_topic", f"site {topic.site!r} is not this gateway's {self.kit.site!r}")
            except ContractError as exc:
                self._reject("bad_topic", f"{topic_str!r}: {exc.detail}")
                return
            if topic.kind is TopicKind.READING and topic.device in self._devices:
                # Valid reading topics of the kit's devices, parsed once (a bounded set: devices × streams).
                self._reading_topics[topic_str] = topic
        if is_cleared(topic.kind, payload):
            # MQTT's delete of a retained message (an operator clearing an edge's status, our own
            # clear of a closed alert): nothing to judge, and not bad input. The last known state stands.
            self.stats.cleared[topic.kind.value] += 1
            self._log(logging.INFO, "cleared", f"retained {topic_str} cleared (empty payload)")
            return
        if topic.kind is not TopicKind.READING:
            # Commands and the rest write through other connections to the same file (records,
            # assignments), which would wait for the batch's write lock: commit it first.
            self.commit()
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
                    self._on_ack(topic_str, payload)
                case TopicKind.COMMAND_SESSION:
                    self._on_session_command(topic_str, payload)
                case TopicKind.COMMAND_RECORD:
                    self._on_record_command(topic_str, payload)
                case TopicKind.COMMAND_ASSIGN:
                    self._on_assign_command(topic_str, payload)
                case TopicKind.ALERT | TopicKind.ESCALATION:
                    assert topic.alert_id is not None
                    if retained and not self._should_be_retained(topic.kind, topic.alert_id):
                        log.info("clearing retained %s/%s: not open in the gateway", topic.kind.value, topic.alert_id)
                        self.stats.stale_retained_cleared += 1
                        self._outbox.setdefault(topic_str, Pending(topic_str, b"", retain=True))
                        self.outbox_version += 1
                case _:
                    pass
        except Exception:  # a bug must not stop the gateway; count it and keep going
            self.stats.rejected["internal_error"] += 1
            log.exception("internal error while handling %s", topic_str)

    def tick(self) -> None:
        """The timer: judge at the injected clock's now (rules, schedules, re-notification), then the
        observers' tick; every ``HEARTBEAT_MS`` a heartbeat."""
        self.commit()  # the tick's observers write through their own connections (records, retention)
        self._taken_up = self._stopwatch()
        now = self.clock.now_ms()
        self.stats.ticks += 1
        try:
            outcome = self.rules_engine.tick(now)
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
            # Keep judging: alerting must not stop because the database did. The reading itself is then
            # not stored (there is no second buffer for SQLite): counted and logged as store_error.
            self._reject("store_error", str(exc), level=logging.ERROR)
        dev = self._devices[device]
        accepted = AcceptedReading(device, dev.child, dev.room, stream, reading, now)
        # Storage copies (InfluxDB) want every stored reading, also one too old for the rules.
        self._notify(methodcaller("on_stored", accepted))
        try:
            outcome = self.rules_engine.reading(device, stream, reading, now)
        except StaleReading as exc:
            self._reject("stale", f"{topic}: {exc}")
            return
        self._process(outcome)
        self._notify(methodcaller("on_reading", accepted))
        self.stats.judge_seconds.observe(self._stopwatch() - self._taken_up)

    def _on_status(self, device: str, payload: bytes, topic: str) -> None:
        if device not in self._devices:
            self._reject("unknown_device", f"{topic}: device {device!r} is not in kit {self.kit.site!r}")
            return
        status = self._decode(DeviceStatus, payload, topic)
        if status is None:
            return
        self._process(self.rules_engine.device_status(device, status, self.clock.now_ms()))

    def _decode(self, model: type[P], payload: bytes, where: str) -> P | None:
        """The payload as ``model``, or None after counting and logging why it was refused."""
        try:
            return decode(model, payload)
        except ContractError as exc:
            self._reject(exc.reason, f"{where}: {exc.detail}")
            return None

    def _command(self, model: type[P], topic: str, payload: bytes, where: str) -> P | None:
        """A staff command that is signed by the dashboard's key, within the time window and not seen
        before, as ``model``; None after counting and logging why it was refused. Its ``by`` is then
        the name the dashboard signed, never one a broker client made up."""
        try:
            signed = self.commands.open(topic, payload, self.clock.now_ms())
        except ContractError as exc:
            self._reject(exc.reason, f"{where}: {exc.detail}")
            return None
        cmd = self._decode(model, signed.payload, f"{where} (command {signed.id})")
        if cmd is not None:
            log.info("%s: command %s signed at %d accepted", where, signed.id, signed.ts)
        return cmd

    def _on_ack(self, topic: str, payload: bytes) -> None:
        cmd = self._command(AckCommand, topic, payload, "command/ack")
        if cmd is None:
            return
        try:
            outcome = self.rules_engine.acknowledge(cmd.alert_id, cmd.by, self.clock.now_ms())
        except UnknownAlertError as exc:
            self._reject("unknown_alert", f"command/ack by {cmd.by!r}: {exc}")
            return
        self._process(outcome)

    def _on_session_command(self, topic: str, payload: bytes) -> None:
        cmd = self._command(SessionCommand, topic, payload, "command/session")
        if cmd is None:
            return
        try:
            outcome = self.rules_engine.session_command(cmd, self.clock.now_ms())
        except UnknownRoomError as exc:
            self._reject("unknown_room", f"command/session by {cmd.by!r}: {exc}")
            return
        log.info("command/session: %s %s by %s", cmd.action.value, cmd.room, cmd.by)
        self._process(outcome)
        if not outcome.sessions:  # already so: answer with the current state all the same
            for state in self.rules_engine.sessions.states(self.clock.now_ms()):
                if state.room == cmd.room:
                    self.enqueue(Outgoing(session_topic(self.kit.site, state.room), state.to_json(), retain=True))

    def _on_record_command(self, topic: str, payload: bytes) -> None:
        cmd = self._command(RecordCommand, topic, payload, "command/record")
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

    def _on_assign_command(self, topic: str, payload: bytes) -> None:
        cmd = self._command(AssignCommand, topic, payload, "command/assign")
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
        self._process(self.rules_engine.edge_status(agent, status, self.clock.now_ms()))

    # ------------------------------------------------------------ outcome → store, observers, outbox

    def _process(self, outcome: Outcome) -> None:
        sessions = self.rules_engine.sessions
        if outcome.sessions or sessions.dirty_windows:
            windows = {r: sessions.schedule_windows[r] for r in sessions.dirty_windows}
            sessions.dirty_windows.clear()
            for change in outcome.sessions:
                log.info("nap session %s of room %s %s by %s", change.state.session_id, change.room,
                         change.kind.value, change.state.stopped_by or change.state.started_by)  # fmt: skip
            try:
                self.store.record_sessions(outcome.sessions, windows)
            except StoreError as exc:
                self._reject("store_error", str(exc), level=logging.ERROR)
        self._record(outcome.transitions)
        if outcome.sessions:
            self.commit()  # the records write a session's sheet through their own connection
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
        self._outbox[topic] = Pending(topic, alert.to_json(), retain=alert.retained, clear_after=not alert.retained,
                                      since=since)  # fmt: skip
        self.outbox_version += 1
        if _escalation_retained(alert):
            self.enqueue(Outgoing(escalation_topic(self.kit.site, alert.id), alert.to_json(), retain=True))

    def _should_be_retained(self, kind: TopicKind, alert_id: str) -> bool:
        alert = self.rules_engine.book.get(alert_id)
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
            # The alert is still published; the audit row is lost, counted and logged (no second buffer).
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

    def _count_rejected(self, reason: str) -> None:
        self.stats.rejected[reason] += 1

    def _reject(self, reason: str, detail: str, level: int = logging.WARNING) -> None:
        self.stats.rejected[reason] += 1
        self._log(level, reason, f"rejected ({reason}, {self.stats.rejected[reason]} so far): {detail}")


def _escalation_retained(alert: Alert) -> bool:
    """escalation/{id} is retained while the alert is escalated, active and unacknowledged."""
    return alert.escalated and alert.state is AlertState.ACTIVE and not alert.acknowledged
