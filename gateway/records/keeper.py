"""The nap-check records in the running gateway: ``RecordKeeper`` ties the pure scheduler
(gateway/records/entries.py) to the append-only store (gateway/records/store.py), and
``RecordsObserver`` feeds it from the site engine's observer hook (gateway/engine/observers.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.alert_changes import Transition
from gateway.engine.observers import AcceptedReading, GatewayObserver, ObserverContext, Outgoing
from gateway.engine.sessions import SessionChange, SessionChangeKind
from gateway.records.entries import (
    AUTO,
    BREATHING_RULES,
    ChainedEntry,
    Confirmation,
    Entry,
    RateLimits,
    RecordCommandError,
    RecordScheduler,
    RecordsConfig,
    confirmation_for,
    correction_for,
    rules_rate_limits,
)
from gateway.records.reader import RecordStoreError
from gateway.records.signing import DaySigner, SignedHead
from gateway.records.store import RecordStore
from nurserywatch.contract import (
    Alert,
    BodyTempReading,
    BreathingReading,
    PostureReading,
    Reading,
    RecordAction,
    RecordCommand,
    records_head_topic,
)
from nurserywatch.kit import Kit

log = logging.getLogger(__name__)


class RecordKeeper:
    """The records' part of the running gateway: feeds the scheduler, appends what it writes to the
    store, applies staff confirmations and corrections. The service calls it; it never raises for
    bad input (commands raise RecordCommandError with a counter key).

    If SQLite fails, entries wait in memory (in order, bounded) and are appended on the next call:
    the chain is only extended by whole, committed transactions, so a retry cannot fork it."""

    #: Entries kept in memory while the database refuses writes (≈ a day of a large nursery).
    MAX_PENDING = 50_000

    def __init__(
        self,
        kit: Kit,
        store: RecordStore,
        config: RecordsConfig | None = None,
        *,
        rate_limits: RateLimits | None = None,
        breathing_rules: frozenset[str] = BREATHING_RULES,
        signing: RecordsSigning | None = None,
        on_signed: Callable[[SignedHead], None] | None = None,
    ) -> None:
        """``on_signed``: called with each day head once it is stored (the gateway publishes it)."""
        self.kit = kit
        self.store = store
        self.signing = signing
        self._on_signed = on_signed
        #: When and what to sign (None: this keeper does not sign; see RecordsSigning).
        self.signer = (
            None
            if signing is None
            else DaySigner(signing.key, kit.site, ZoneInfo(kit.timezone), store.last_signed_head())
        )
        self.scheduler = RecordScheduler(kit, config, rate_limits, breathing_rules)
        #: appended, store_error, dropped, signed, sign_error, and the reasons of refused commands.
        self.stats: Counter[str] = Counter()
        self._children = {d.id: d.child for d in kit.devices if d.child is not None}
        self._pending: list[Entry] = []
        for started, written in store.open_sessions():
            self.scheduler.resume(started, written)
            log.info("records: resumed nap session %s in room %s", started.session, started.room)

    # -- what the service reports

    def seed_alerts(self, alerts: Iterable[Alert]) -> None:
        """Alerts restored after a restart count in the intervals they are still active in."""
        for alert in alerts:
            self.scheduler.observe_alert(alert, alert.started_ts)

    def session_started(self, room: str, ts: int, by: str, session_id: str | None = None) -> list[ChainedEntry]:
        """Open the room's sheet. The same session again (a restart) continues it; another session
        while one is open (the sessions and the records disagree after a crash) closes the old one
        at ``ts`` first, so no sheet stays open for ever."""
        out: list[Entry] = []
        current = self.scheduler.session(room)
        if current is not None and session_id is not None and current != session_id:
            log.warning("records: room %s: session %s was still open; closing it for %s", room, current, session_id)
            out += self.scheduler.stop_session(room, ts, AUTO)
        out += self.scheduler.start_session(room, ts, by, session_id)
        return self._append(out)

    def session_stopped(self, room: str, ts: int, by: str) -> list[ChainedEntry]:
        return self._append(self.scheduler.stop_session(room, ts, by))

    def reading(self, device: str, reading: Reading) -> None:
        child = self._children.get(device)
        if child is None:
            return
        if isinstance(reading, PostureReading):
            self.scheduler.observe_posture(child, reading.position, reading.ts)
        elif isinstance(reading, BreathingReading):
            self.scheduler.observe_breathing(child, reading.rate_bpm, reading.present, reading.ts)
        elif isinstance(reading, BodyTempReading):
            self.scheduler.observe_body_temp(child, reading.celsius, reading.ts)

    def rebind(self, device: str, child: str | None) -> None:
        """A runtime assignment (gateway/engine/assignments.py): the device's readings count for ``child``."""
        if child is None:
            self._children.pop(device, None)
        else:
            self._children[device] = child

    def transitions(self, transitions: Iterable[Transition]) -> None:
        for t in transitions:
            self.scheduler.observe_alert(t.alert, t.ts)

    def tick(self, now_ms: int) -> list[ChainedEntry]:
        # Sign first: a day's head is the chain as it was when the day ended, before this tick's records.
        self.sign_due(now_ms)
        return self._append(self.scheduler.tick(now_ms))

    def sign_due(self, now_ms: int) -> SignedHead | None:
        """Sign the chain's head if a day ended since the last signed head (``DaySigner``); store it
        in the database and append it to the log beside the key. None when nothing was due (or
        failed: logged, counted, tried again on the next tick)."""
        signer = self.signer
        if signer is None or self.signing is None:
            return None
        try:
            signed = signer.due(now_ms, self.store.head, self.store.oldest_after)
            if signed is None:
                return None
            self.store.add_signed_head(signed)
        except RecordStoreError as exc:
            self.stats["sign_error"] += 1
            log.error("records: the day head was not signed: %s", exc)
            return None
        signer.signed(signed, now_ms)
        self.stats["signed"] += 1
        h = signed.head
        log.info("records: signed the head of %s: entry %d %s (key %s)", h.day, h.seq, h.hash, h.key_id)
        if self.signing.log is not None:
            try:
                self.signing.log(signed)
            except OSError as exc:  # the database holds it; the log is the copy out of the holder's reach
                self.stats["sign_error"] += 1
                log.error("records: the signed head of %s is not in the heads file: %s", h.day, exc)
        if self._on_signed is not None:
            self._on_signed(signed)
        return signed

    # -- staff commands

    def command(self, cmd: RecordCommand, now_ms: int) -> ChainedEntry:
        """Apply a dashboard command; raises RecordCommandError (``reason`` is a counter key)."""
        if cmd.action is RecordAction.CONFIRM:
            if cmd.changes or cmd.reason:
                raise RecordCommandError("invalid_command", "a confirmation carries no changes or reason")
            return self.confirm(cmd.entry, cmd.by, now_ms)
        return self.correct(cmd.entry, cmd.by, now_ms, cmd.changes or {}, cmd.reason)

    def confirm(self, seq: int, by: str, now_ms: int) -> ChainedEntry:
        entry = confirmation_for(self._target(seq), seq, by, now_ms, self._confirmers(seq))
        return self._append_one(entry)

    def correct(
        self, seq: int, by: str, now_ms: int, changes: Mapping[str, Any], reason: str | None = None
    ) -> ChainedEntry:
        return self._append_one(correction_for(self._target(seq), seq, by, now_ms, changes, reason))

    # -- internals

    def _target(self, seq: int) -> ChainedEntry | None:
        try:
            return self.store.entry(seq)
        except RecordStoreError as exc:
            raise RecordCommandError("store_error", str(exc)) from None

    def _confirmers(self, seq: int) -> list[str]:
        try:
            stored = self.store.confirmed_by(seq)
        except RecordStoreError as exc:
            raise RecordCommandError("store_error", str(exc)) from None
        return stored + [e.by for e in self._pending if isinstance(e, Confirmation) and e.refers == seq]

    def _append_one(self, entry: Entry) -> ChainedEntry:
        written = self._append([entry])
        if not written or written[-1].entry != entry:
            raise RecordCommandError("store_error", "the database refused the write; it is kept and retried")
        return written[-1]

    def _append(self, entries: Sequence[Entry]) -> list[ChainedEntry]:
        self._pending += entries
        if not self._pending:
            return []
        try:
            written = self.store.append(self._pending)
        except RecordStoreError as exc:
            self.stats["store_error"] += 1
            if len(self._pending) > self.MAX_PENDING:
                dropped = len(self._pending) - self.MAX_PENDING
                del self._pending[:dropped]
                self.stats["dropped"] += dropped
            log.error("records: %s (%d entries waiting)", exc, len(self._pending))
            return []
        self._pending = []
        self.stats["appended"] += len(written)
        return written


@dataclass(frozen=True, slots=True)
class RecordsSigning:
    """How the gateway signs its day heads: the site key (loaded by the shell, nurserywatch/keys.py)
    and where each signed head is also appended (the log file beside the key; None: the database only)."""

    key: Ed25519PrivateKey
    log: Callable[[SignedHead], None] | None = None


class RecordsObserver(GatewayObserver):
    """The records' hook into the running gateway (gateway/engine/observers.py): nap sessions, accepted
    readings, alert transitions and timer ticks go to a RecordKeeper on the gateway's database file;
    ``command`` applies the dashboard's ``command/record``. "Breathing OK" uses the gateway's rules.
    Each signed day head is retained on ``records/head`` (``publish_head``: again on every connect)."""

    def __init__(
        self, ctx: ObserverContext, config: RecordsConfig | None = None, signing: RecordsSigning | None = None
    ) -> None:
        self.ctx = ctx
        self.keeper = RecordKeeper(ctx.kit, RecordStore(ctx.db_path), config, rate_limits=rules_rate_limits(ctx.rules),
                                   signing=signing, on_signed=self._publish)  # fmt: skip
        self.keeper.seed_alerts(ctx.open_alerts())
        # A sheet the records still hold open for a room the gateway has no session in (its stop was
        # lost with a crash) is closed now — else it would write empty records for ever.
        for room in self.keeper.scheduler.open_rooms():
            st = ctx.session(room)
            if st is None or not st.active:
                ts = st.stopped_ts if st is not None and st.stopped_ts is not None else ctx.clock.now_ms()
                by = st.stopped_by if st is not None and st.stopped_by is not None else AUTO
                log.warning("records: room %s has no nap session any more; closing its sheet", room)
                self.keeper.session_stopped(room, ts, by)

    def on_session(self, change: SessionChange) -> None:
        st = change.state
        if change.kind is SessionChangeKind.STOPPED:
            self.keeper.session_stopped(st.room, st.stopped_ts or change.ts, st.stopped_by or AUTO)
        else:  # started, or restored after a restart (continued if the sheet is open)
            self.keeper.session_started(st.room, st.started_ts or change.ts, st.started_by or AUTO, st.session_id)

    def on_reading(self, accepted: AcceptedReading) -> None:
        self.keeper.reading(accepted.device, accepted.reading)

    def on_alert(self, transition: Transition) -> None:
        self.keeper.transitions([transition])

    def on_tick(self, now_ms: int) -> None:
        self.keeper.tick(now_ms)

    def command(self, cmd: RecordCommand, now_ms: int) -> ChainedEntry:
        return self.keeper.command(cmd, now_ms)

    def publish_head(self) -> None:
        """Retain the latest signed day head on ``records/head`` again (on every connect: a broker
        restarted without persistence lost it); nothing when the site does not sign its heads."""
        if self.keeper.signer is not None and self.keeper.signer.last is not None:
            self._publish(self.keeper.signer.last)

    def _publish(self, signed: SignedHead) -> None:
        # For whoever holds the site's public key (the fleet tier): checkable without the records.
        topic = records_head_topic(self.ctx.kit.site)
        self.ctx.enqueue(Outgoing(topic, signed.to_contract().to_json(), retain=True))

    def close(self) -> None:
        self.keeper.store.close()
