"""The nap-check records' SQLite shell: an append-only, hash-chained table in the gateway's database,
a read-only view (dashboard, ``nurserywatch records``), and ``RecordKeeper``, which ties the pure
scheduler (``gateway.records.entries``) to the store for the gateway service.

Append-only at every level: the code only INSERTs; two triggers refuse UPDATE and DELETE on the
table. The triggers stop mistakes and casual edits through the application's connection, not
someone with the file (they can drop the triggers) — that is what the hash chain is for, and
``nurserywatch records verify`` names the first entry that was edited, deleted or inserted.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from gateway.child_data.selection import mentions_child
from gateway.engine.alerts import Transition
from gateway.engine.observers import AcceptedReading, GatewayObserver
from gateway.engine.sessions import SessionChange, SessionChangeKind
from gateway.records.entries import (
    AUTO,
    BREATHING_RULES,
    GENESIS,
    REDACTED_COLUMNS,
    ChainedEntry,
    ChainHead,
    Confirmation,
    Entry,
    Erasure,
    RateLimits,
    RecordCommandError,
    RecordScheduler,
    RecordsConfig,
    RecordsPruned,
    RedactedRef,
    SessionStarted,
    StoredEntry,
    VerifyResult,
    chain,
    confirmation_for,
    correction_for,
    decode_stored,
    index_columns,
    redaction_marker,
    rules_rate_limits,
    verify_chain,
)
from nurserywatch.contract import (
    Alert,
    BodyTempReading,
    BreathingReading,
    PostureReading,
    Reading,
    RecordAction,
    RecordCommand,
)
from nurserywatch.kit import Kit

if TYPE_CHECKING:
    from gateway.service.mqtt import Gateway

log = logging.getLogger(__name__)

_COLUMNS = ("kind", "ts", "room", "child", "session", "refers")

#: Dropped and re-created around a redaction only, inside the erasure's transaction (RecordStore.erase).
_NO_UPDATE = """CREATE TRIGGER IF NOT EXISTS record_entries_no_update BEFORE UPDATE ON record_entries
BEGIN SELECT RAISE(ABORT, 'nap-check records are append-only: UPDATE refused'); END;"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS record_entries (
    seq       INTEGER PRIMARY KEY,  -- assigned by the chain (1, 2, …), not by SQLite
    kind      TEXT    NOT NULL,     -- session_started | session_stopped | record | confirmation | correction
    ts        INTEGER NOT NULL,     -- unix ms: the check time of a record, else when it happened
    room      TEXT    NOT NULL,
    child     TEXT,
    session   TEXT    NOT NULL,
    refers    INTEGER,              -- the entry a confirmation or correction is about
    body      TEXT    NOT NULL,     -- canonical JSON of the entry, with seq and prev_hash: what is hashed
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL      -- SHA-256 of body
);
CREATE INDEX IF NOT EXISTS record_entries_by_room ON record_entries (room, kind, ts);
CREATE INDEX IF NOT EXISTS record_entries_by_refers ON record_entries (refers);
{no_update}
CREATE TRIGGER IF NOT EXISTS record_entries_no_delete BEFORE DELETE ON record_entries
BEGIN SELECT RAISE(ABORT, 'nap-check records are append-only: DELETE refused'); END;
"""

_SCHEMA = _SCHEMA.format(no_update=_NO_UPDATE)

_SELECT = "SELECT seq, prev_hash, hash, body, " + ", ".join(_COLUMNS) + " FROM record_entries"


class RecordStoreError(Exception):
    """The records could not be opened, read or written."""


def _stored(row: Sequence[Any]) -> StoredEntry:
    return StoredEntry(row[0], row[1], row[2], row[3], dict(zip(_COLUMNS, row[4:], strict=True)))


class RecordStore:
    """The writer (the gateway's). Not thread-safe: used from the gateway's one event loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot open the records: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def append(self, entries: Sequence[Entry]) -> list[ChainedEntry]:
        """Chain ``entries`` after the current head and insert them, all or none."""
        if not entries:
            return []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT seq, hash FROM record_entries ORDER BY seq DESC LIMIT 1").fetchone()
                chained = chain(GENESIS if row is None else ChainHead(row[0], row[1]), entries)
                for c in chained:
                    cols = index_columns(c.entry)
                    self._db.execute(
                        "INSERT INTO record_entries (seq, body, prev_hash, hash, " + ", ".join(_COLUMNS) + ")"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (c.seq, c.body, c.prev_hash, c.hash, *(cols[k] for k in _COLUMNS)),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot append nap-check records: {exc}") from None
        return chained

    def erase(self, child: str, by: str, ts: int, request: str) -> tuple[ChainedEntry | None, int]:
        """Remove the content of every entry that mentions ``child`` (their records, confirmations,
        corrections, and the session starts listing them) and chain an ``Erasure`` entry naming
        those entries with their links and hashes — one transaction, so ``verify`` never sees a
        redaction without its erasure entry. Returns (the erasure entry or None when nothing
        mentioned the child, entries redacted). Refuses (RecordStoreError) while a session that
        lists the child is open: the running gateway resumes sessions from those entries."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    _SELECT + " WHERE child = ? OR kind = 'session_started' ORDER BY seq", (child,)
                ).fetchall()
                stopped = {r[0] for r in self._db.execute("SELECT session FROM record_entries"
                                                          " WHERE kind = 'session_stopped'")}  # fmt: skip
                targets = []
                for row in rows:
                    try:
                        decoded = decode_stored(_stored(row))
                    except ValueError:
                        continue  # unreadable: not ours to judge; verify names it
                    if not mentions_child(decoded.entry, child):
                        continue
                    if isinstance(decoded.entry, SessionStarted) and decoded.entry.session not in stopped:
                        raise RecordStoreError(
                            f"child {child!r} is in the nap session {decoded.entry.session} of room "
                            f"{decoded.entry.room}, which is still open: stop it, then erase"
                        )
                    targets.append(decoded)
                if not targets:
                    self._db.execute("ROLLBACK")
                    return None, 0
                last = self._db.execute("SELECT seq, hash FROM record_entries ORDER BY seq DESC LIMIT 1").fetchone()
                refs = tuple(RedactedRef(seq=t.seq, kind=t.entry.kind, prev_hash=t.prev_hash, hash=t.hash)
                             for t in targets)  # fmt: skip
                (erasure,) = chain(ChainHead(last[0], last[1]), [Erasure(ts=ts, by=by, request=request,
                                                                          redacted=refs)])  # fmt: skip
                cols = index_columns(erasure.entry)
                self._db.execute(
                    "INSERT INTO record_entries (seq, body, prev_hash, hash, " + ", ".join(_COLUMNS) + ")"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (erasure.seq, erasure.body, erasure.prev_hash, erasure.hash, *(cols[k] for k in _COLUMNS)),
                )
                # The one sanctioned UPDATE: lifted and restored inside this transaction only.
                self._db.execute("DROP TRIGGER IF EXISTS record_entries_no_update")
                blank = [REDACTED_COLUMNS[k] for k in _COLUMNS]
                self._db.executemany(
                    "UPDATE record_entries SET body = ?, " + ", ".join(f"{k} = ?" for k in _COLUMNS) + " WHERE seq = ?",
                    [(redaction_marker(t.seq, t.prev_hash, erasure.seq), *blank, t.seq) for t in targets],
                )
                self._db.execute(_NO_UPDATE)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot erase from the nap-check records: {exc}") from None
        return erasure, len(targets)

    def mentioning(self, child: str) -> list[ChainedEntry]:
        """Every readable entry that mentions ``child`` (for an export), in seq order."""
        try:
            rows = self._db.execute(
                _SELECT + " WHERE child = ? OR kind = 'session_started' ORDER BY seq", (child,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read the nap-check records: {exc}") from None
        return [e for e in _decoded(rows) if mentions_child(e.entry, child)]

    def entry(self, seq: int) -> ChainedEntry | None:
        try:
            row = self._db.execute(_SELECT + " WHERE seq = ?", (seq,)).fetchone()
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read entry {seq}: {exc}") from None
        if row is None:
            return None
        try:
            return decode_stored(_stored(row))
        except ValueError:
            return None  # unreadable (tampered): not something staff can confirm; verify names it

    def confirmed_by(self, seq: int) -> list[str]:
        try:
            rows = self._db.execute(
                "SELECT body FROM record_entries WHERE kind = 'confirmation' AND refers = ?", (seq,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read confirmations: {exc}") from None
        return [str(e.entry.by) for e in (_decode_body(seq, r[0]) for r in rows) if e is not None]

    def open_sessions(self) -> list[tuple[SessionStarted, dict[str, int]]]:
        """Sessions started and not stopped, with the end of each child's last written record."""
        try:
            rows = self._db.execute(
                _SELECT + " WHERE kind = 'session_started' AND session NOT IN"
                " (SELECT session FROM record_entries WHERE kind = 'session_stopped') ORDER BY seq"
            ).fetchall()
            out: list[tuple[SessionStarted, dict[str, int]]] = []
            for row in rows:
                try:
                    started = decode_stored(_stored(row)).entry
                except ValueError:
                    log.error(
                        "records: entry %s (a session start) is unreadable; run `nurserywatch records verify`", row[0]
                    )
                    continue
                assert isinstance(started, SessionStarted)
                written = self._db.execute(
                    "SELECT child, MAX(ts) FROM record_entries WHERE kind = 'record' AND session = ? GROUP BY child",
                    (started.session,),
                ).fetchall()
                out.append((started, {c: int(ts) for c, ts in written}))
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read open sessions: {exc}") from None
        return out


def _decode_body(seq: int, body: str) -> ChainedEntry | None:
    try:
        return decode_stored(StoredEntry(seq, "", "", body, {}))
    except ValueError:
        return None


class RecordReader:
    """Read-only view (dashboard, CLI): a fresh ``mode=ro`` connection per call, so it can never
    write and always sees the gateway's latest commits."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._uri = self.path.resolve().as_uri() + "?mode=ro"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self.path.is_file():
            raise RecordStoreError(f"{self.path}: file not found")
        try:
            with closing(sqlite3.connect(self._uri, uri=True)) as db:
                db.execute("PRAGMA busy_timeout=5000")
                if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'record_entries'").fetchone() is None:
                    raise RecordStoreError(f"{self.path}: holds no nap-check records (not a gateway database?)")
                yield db
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read the nap-check records: {exc}") from None

    def stored(self) -> Iterator[StoredEntry]:
        """Every row in seq order, streamed (verification of a year of records stays small)."""
        with self._connect() as db:
            for row in db.execute(_SELECT + " ORDER BY seq"):
                yield _stored(row)

    def verify(self) -> VerifyResult:
        return verify_chain(self.stored(), self.pruned_anchor())

    def pruned_anchor(self) -> ChainHead | None:
        """Where the chain starts after retention pruned its beginning: the last ``pruned`` entry's
        (upto_seq, upto_hash). That entry is itself in the chain, so verify checks it like any other."""
        with self._connect() as db:
            row = db.execute(_SELECT + " WHERE kind = 'pruned' ORDER BY seq DESC LIMIT 1").fetchone()
        try:
            entry = None if row is None else decode_stored(_stored(row)).entry
        except ValueError:
            return None  # unreadable: verify names that entry
        return ChainHead(entry.upto_seq, entry.upto_hash) if isinstance(entry, RecordsPruned) else None

    def entry(self, seq: int) -> ChainedEntry | None:
        with self._connect() as db:
            row = db.execute(_SELECT + " WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else decode_stored(_stored(row))

    def hash_at(self, seq: int) -> str | None:
        """The stored hash of entry ``seq`` (also of a redacted one), for ``verify --expect-head``."""
        with self._connect() as db:
            row = db.execute("SELECT hash FROM record_entries WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    def rooms(self) -> list[str]:
        with self._connect() as db:
            # '' is the room of erasure entries and redacted ones (they belong to no room)
            return [r[0] for r in db.execute("SELECT DISTINCT room FROM record_entries WHERE room != '' ORDER BY room")]

    def records(self, room: str, start_ms: int, end_ms: int) -> tuple[list[ChainedEntry], list[ChainedEntry]]:
        """The records of ``room`` with check times in ``[start_ms, end_ms)`` and every confirmation and
        correction about them (whenever they were made). Unreadable rows are skipped — run verify."""
        with self._connect() as db:
            rows = db.execute(
                _SELECT + " WHERE room = ? AND kind = 'record' AND ts >= ? AND ts < ? ORDER BY ts, child, seq",
                (room, start_ms, end_ms),
            ).fetchall()
            records = _decoded(rows)
            followups: list[ChainedEntry] = []
            pending = [r.seq for r in records]
            while pending:  # confirmations of corrections refer to the correction
                marks = ",".join("?" * len(pending[:500]))
                found = _decoded(
                    db.execute(_SELECT + f" WHERE refers IN ({marks}) ORDER BY seq", pending[:500]).fetchall()
                )
                pending = pending[500:] + [f.seq for f in found if f.entry.kind == "correction"]
                followups += found
        followups.sort(key=lambda e: e.seq)
        return records, followups


def _decoded(rows: Iterable[Sequence[Any]]) -> list[ChainedEntry]:
    out = []
    for row in rows:
        try:
            out.append(decode_stored(_stored(row)))
        except ValueError:
            log.warning("records: entry %s is unreadable and left out; run `nurserywatch records verify`", row[0])
    return out


def verify_file(path: str | Path) -> VerifyResult:
    """Walk the whole chain of a database file. Raises RecordStoreError when it cannot be read."""
    return RecordReader(path).verify()


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
    ) -> None:
        self.kit = kit
        self.store = store
        self.scheduler = RecordScheduler(kit, config, rate_limits, breathing_rules)
        #: appended, store_error, dropped, and the reasons of refused commands.
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
        return self._append(self.scheduler.tick(now_ms))

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


class RecordsObserver(GatewayObserver):
    """The records' hook into the running gateway (gateway/engine/observers.py): nap sessions, accepted
    readings, alert transitions and timer ticks go to a RecordKeeper on the gateway's database file;
    ``command`` applies the dashboard's ``command/record``. "Breathing OK" uses the gateway's rules."""

    def __init__(self, gateway: Gateway, config: RecordsConfig | None = None) -> None:
        self.keeper = RecordKeeper(
            gateway.kit, RecordStore(gateway.store.path), config, rate_limits=rules_rate_limits(gateway.rules)
        )
        self.keeper.seed_alerts(gateway.engine.book.open_alerts())
        # A sheet the records still hold open for a room the gateway has no session in (its stop was
        # lost with a crash) is closed now — else it would write empty records for ever.
        sessions = gateway.engine.sessions
        for room in self.keeper.scheduler.open_rooms():
            if sessions.active(room) is None:
                st = sessions.state(room)
                ts = st.stopped_ts if st is not None and st.stopped_ts is not None else gateway.clock.now_ms()
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

    def close(self) -> None:
        self.keeper.store.close()


def prune_records(path: str | Path, before_ts: int, now_ms: int) -> int:
    """Retention (kit ``retention.records_days``): delete the longest run of entries from the start of
    the chain whose times are all before ``before_ts`` (a local midnight: whole days), stopping at
    the first session still open, and chain a ``pruned`` anchor naming the last deleted entry and its
    hash — one transaction, so verify always finds the anchor it starts from. Returns entries deleted.
    Earlier anchors are pruned with the rest (the new one supersedes them); a confirmation or
    correction made within the retention period keeps everything after it (prefix only)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA busy_timeout=5000")
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'record_entries'").fetchone() is None:
            return 0  # no records kept in this file (yet)
        db.execute("BEGIN IMMEDIATE")
        try:
            keep = db.execute(
                "SELECT MIN(seq) FROM record_entries WHERE (ts >= ? AND kind != 'pruned') OR (kind = 'session_started'"
                " AND session NOT IN (SELECT session FROM record_entries WHERE kind = 'session_stopped'))",
                (before_ts,),
            ).fetchone()[0]
            first, last = db.execute("SELECT MIN(seq), MAX(seq) FROM record_entries").fetchone()
            upto = (last if keep is None else int(keep) - 1) if first is not None else 0
            if first is None or upto < first:
                db.execute("ROLLBACK")
                return 0
            hashes = dict(db.execute("SELECT seq, hash FROM record_entries WHERE seq IN (?, ?)", (upto, last)))
            count = upto - int(first) + 1
            pruned = RecordsPruned(ts=now_ms, upto_seq=upto, upto_hash=hashes[upto], before_ts=before_ts, entries=count)
            (anchor,) = chain(ChainHead(int(last), hashes[last]), [pruned])
            cols = index_columns(anchor.entry)
            db.execute(
                "INSERT INTO record_entries (seq, body, prev_hash, hash, " + ", ".join(_COLUMNS) + ")"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (anchor.seq, anchor.body, anchor.prev_hash, anchor.hash, *(cols[k] for k in _COLUMNS)),
            )
            # The one sanctioned DELETE: the trigger is lifted and restored (as it was) in this transaction.
            trigger = db.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'record_entries_no_delete'"
            ).fetchone()
            db.execute("DROP TRIGGER IF EXISTS record_entries_no_delete")
            db.execute("DELETE FROM record_entries WHERE seq <= ?", (upto,))
            if trigger is not None:
                db.execute(trigger[0])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    log.info("records: pruned entries %d–%d (before %d), anchor entry %d", first, upto, before_ts, anchor.seq)
    return count
