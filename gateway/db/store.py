"""SQLite storage of the gateway: readings, the current state of every alert, the audit log, and
nap sessions (current state per room, append-only session log).

``Store`` is the gateway's single writer; ``StoreReader`` (gateway/db/reader.py) is the read-only
side the dashboard uses (it opens the file with ``mode=ro`` and never touches rule state). WAL mode
lets both run at once. The tables are gateway/db/schema.py's, described in docs/gateway.md.

Readings carry UNIQUE (device, stream, seq, ts): a redelivered reading (QoS 1 duplicate,
store-and-forward replay) is not stored twice, and ``add_reading`` returning False tells the
service not to judge it twice either.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

from gateway.alert_changes import Transition
from gateway.db.reader import StoreError
from gateway.db.schema import SchemaError, connect_writer
from gateway.engine.sessions import SessionChange, SessionChangeKind
from nurserywatch.contract import Alert, Reading, SessionState, Stream, parse_reading
from nurserywatch.sqlite import connect

log = logging.getLogger(__name__)

#: Seconds between two WAL checkpoints of the background checkpointer (``Store(background_checkpoint=True)``).
CHECKPOINT_INTERVAL_S = 0.5


class Store:
    """The writer. Not thread-safe: the gateway uses it from its one event loop.

    ``background_checkpoint``: this connection never checkpoints the WAL itself (SQLite's automatic
    checkpoint ran inside a batch's COMMIT and was two thirds of its cost, bench/README.md issue 17);
    a thread of its own does, every ``CHECKPOINT_INTERVAL_S``, through its own connection (PASSIVE:
    it never blocks the writer; SQLite releases the GIL while it copies and syncs). Durability is
    SQLite's WAL + ``synchronous=NORMAL`` either way: a committed transaction is in the WAL."""

    def __init__(self, path: str | Path, *, background_checkpoint: bool = False) -> None:
        self.path = Path(path)
        try:
            self._db = connect_writer(self.path)  # migrated: gateway/db/schema.py
        except SchemaError as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the database: {exc}") from None
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if background_checkpoint:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(target=self._checkpoint_forever, name="sqlite-checkpoint",
                                                  daemon=True)  # fmt: skip
            self._checkpointer.start()

    def _checkpoint_forever(self) -> None:
        # Not recorded: a checkpoint is no write of the gateway's data (gateway/ha/journal.py records those).
        db = connect(self.path, check_same_thread=False, recorded=False)
        try:
            while not self._stop.wait(CHECKPOINT_INTERVAL_S):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # busy or failing disk: the next round tries again
                    log.warning("%s: WAL checkpoint failed: %s", self.path, exc)
        finally:
            db.close()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._stop.set()
            self._checkpointer.join()
            self._checkpointer = None
            with suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def add_reading(self, device: str, stream: Stream, reading: Reading, received_ts: int) -> bool:
        """Store a validated reading. False when it is a duplicate (already stored)."""
        try:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO readings (device, stream, ts, seq, payload, received_ts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (device, stream.value, reading.ts, reading.seq, reading.model_dump_json(), received_ts),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot store a reading: {exc}") from None
        return cur.rowcount == 1

    def record(self, transitions: Sequence[Transition]) -> None:
        """Append transitions to the audit log and upsert each alert's current state, atomically."""
        if not transitions:
            return
        try:
            with self._transaction():
                for t in transitions:
                    a = t.alert
                    body = a.model_dump_json()
                    self._db.execute(
                        "INSERT INTO alert_transitions (alert_id, change, ts, body) VALUES (?, ?, ?, ?)",
                        (a.id, t.change.value, t.ts, body),
                    )
                    self._db.execute(
                        "INSERT OR REPLACE INTO alerts (id, rule, severity, state, acknowledged, device, room,"
                        " child, started_ts, updated_ts, resolved_ts, body)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            a.id, a.rule, a.severity.value, a.state.value, int(a.acknowledged), a.device,
                            a.room, a.child, a.started_ts, a.updated_ts, a.resolved_ts, body,
                        ),
                    )  # fmt: skip
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot record alert transitions: {exc}") from None

    def record_sessions(self, changes: Sequence[SessionChange], windows: dict[str, str] | None = None) -> None:
        """Append session starts/stops to the log, keep each room's latest state, and remember the
        schedule windows acted on — atomically. Restored-session notices are not changes: skipped."""
        changes = [c for c in changes if c.kind is not SessionChangeKind.RESTORED]
        if not changes and not windows:
            return
        try:
            with self._transaction():
                for c in changes:
                    body = c.state.model_dump_json()
                    self._db.execute(
                        "INSERT INTO session_log (room, change, ts, session_id, body) VALUES (?, ?, ?, ?, ?)",
                        (c.room, c.kind.value, c.ts, c.state.session_id or "", body),
                    )
                    self._db.execute(
                        "INSERT INTO sessions (room, body) VALUES (?, ?)"
                        " ON CONFLICT (room) DO UPDATE SET body = excluded.body",
                        (c.room, body),
                    )
                for room, window in (windows or {}).items():
                    self._db.execute(
                        "INSERT INTO sessions (room, schedule_window) VALUES (?, ?)"
                        " ON CONFLICT (room) DO UPDATE SET schedule_window = excluded.schedule_window",
                        (room, window),
                    )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot record nap sessions: {exc}") from None

    def sessions(self) -> tuple[list[SessionState], dict[str, str]]:
        """Each room's latest session state, and the schedule window last acted on per room."""
        try:
            rows = self._db.execute("SELECT room, body, schedule_window FROM sessions ORDER BY room").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read nap sessions: {exc}") from None
        states = [SessionState.model_validate_json(body) for _room, body, _w in rows if body is not None]
        return states, {room: w for room, _body, w in rows if w is not None}

    def open_alerts(self) -> list[Alert]:
        """Alerts to restore on start: active, or resolved but not yet acknowledged."""
        try:
            rows = self._db.execute(
                "SELECT body FROM alerts WHERE state = 'active' OR acknowledged = 0 ORDER BY started_ts, id"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read alerts: {exc}") from None
        return [Alert.model_validate_json(r[0]) for r in rows]

    def recent_readings(self, device: str, stream: Stream, window_ms: int) -> list[tuple[Reading, int]]:
        """The device's readings of ``stream`` from its newest one back ``window_ms`` (message time),
        oldest first, each with the gateway time it was received — to rebuild the rules' state on
        start (gateway/engine/rules_engine.py ``RulesEngine``)."""
        try:
            (newest,) = self._db.execute(
                "SELECT MAX(ts) FROM readings WHERE stream = ? AND device = ?", (stream.value, device)
            ).fetchone()
            if newest is None:
                return []
            rows = self._db.execute(
                "SELECT payload, received_ts FROM readings WHERE stream = ? AND device = ? AND ts >= ?"
                " ORDER BY ts, id",
                (stream.value, device, newest - window_ms),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read recent readings: {exc}") from None
        return [(parse_reading(stream, payload), int(received)) for payload, received in rows]

    # ---------------------------------------------------------------- batches (the message loop)

    def begin(self) -> None:
        """Open a batch (no-op if one is open): the writes that follow are one transaction until
        ``commit``. The gateway's message loop batches readings — one commit per reading was half of
        its per-reading cost — and acknowledges them to the broker only after ``commit``. While a
        batch is open this connection holds the database's write lock: commit before anything writes
        the same file through another connection (the records, the assignments) on this thread."""
        if self._db.in_transaction:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot begin a transaction: {exc}") from None

    def commit(self) -> None:
        """Commit the open batch (no-op without one). On failure it is rolled back: StoreError."""
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise StoreError(f"{self.path}: cannot commit: {exc}") from None

    @property
    def in_batch(self) -> bool:
        return self._db.in_transaction

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._db.in_transaction:  # inside a batch: all or nothing as a savepoint of it
            self._db.execute("SAVEPOINT tx")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK TO tx")
                self._db.execute("RELEASE tx")
                raise
            self._db.execute("RELEASE tx")
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
