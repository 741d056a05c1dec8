"""SQLite storage of the gateway: readings, the current state of every alert, the audit log, and
nap sessions (current state per room, append-only session log).

``Store`` is the gateway's single writer; ``StoreReader`` is the read-only interface the dashboard
imports (it opens the file with ``mode=ro`` and never touches rule state). WAL mode lets both run
at once. The schema is described in docs/gateway.md.

Readings carry UNIQUE (device, stream, seq, ts): a redelivered reading (QoS 1 duplicate,
store-and-forward replay) is not stored twice, and ``add_reading`` returning False tells the
service not to judge it twice either.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from gateway.engine.alerts import Change, Transition
from gateway.engine.sessions import SessionChange, SessionChangeKind
from gateway.retention.store import trend
from gateway.trends.queries import Bucket, TrendWindow
from nurserywatch.contract import Alert, Reading, SessionState, Stream, parse_reading

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id          INTEGER PRIMARY KEY,
    device      TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    ts          INTEGER NOT NULL,   -- message time, unix ms
    seq         INTEGER NOT NULL,
    payload     TEXT    NOT NULL,   -- the validated reading as JSON
    received_ts INTEGER NOT NULL,   -- gateway clock, unix ms
    UNIQUE (device, stream, seq, ts)
);
CREATE INDEX IF NOT EXISTS readings_by_stream ON readings (stream, device, ts);

CREATE TABLE IF NOT EXISTS alerts (
    id           TEXT    PRIMARY KEY,
    rule         TEXT    NOT NULL,
    severity     TEXT    NOT NULL,
    state        TEXT    NOT NULL,  -- active | resolved
    acknowledged INTEGER NOT NULL,  -- 0 | 1
    device       TEXT,
    room         TEXT,
    child        TEXT,
    started_ts   INTEGER NOT NULL,
    updated_ts   INTEGER NOT NULL,
    resolved_ts  INTEGER,
    body         TEXT    NOT NULL   -- the whole contract Alert as JSON
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (state, acknowledged);
CREATE INDEX IF NOT EXISTS alerts_by_start ON alerts (started_ts);

CREATE TABLE IF NOT EXISTS alert_transitions (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- append-only audit order
    alert_id TEXT    NOT NULL,
    change   TEXT    NOT NULL,  -- raised | updated | resolved | acknowledged
    ts       INTEGER NOT NULL,
    body     TEXT    NOT NULL   -- the alert after the change
);
CREATE INDEX IF NOT EXISTS alert_transitions_by_alert ON alert_transitions (alert_id, seq);

CREATE TABLE IF NOT EXISTS sessions (
    room            TEXT PRIMARY KEY,
    body            TEXT,           -- the room's latest SessionState as JSON (NULL: never had one)
    schedule_window TEXT            -- the nap_schedule window the gateway last acted on
);

CREATE TABLE IF NOT EXISTS session_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- append-only
    room       TEXT    NOT NULL,
    change     TEXT    NOT NULL,  -- started | stopped
    ts         INTEGER NOT NULL,  -- gateway clock, unix ms
    session_id TEXT    NOT NULL,
    body       TEXT    NOT NULL   -- the SessionState after the change
);
CREATE INDEX IF NOT EXISTS session_log_by_room ON session_log (room, ts);
"""


class StoreError(Exception):
    """The database could not be opened, read or written."""


@dataclass(frozen=True, slots=True)
class StoredReading:
    device: str
    stream: Stream
    reading: Reading
    received_ts: int


class Store:
    """The writer. Not thread-safe: the gateway uses it from its one event loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            self._db.execute("PRAGMA busy_timeout=5000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {version} is newer than this gateway ({SCHEMA_VERSION})")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the database: {exc}") from None

    def close(self) -> None:
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


class StoreReader:
    """Read-only view for the dashboard. Opens a fresh ``mode=ro`` connection per call, so it is
    safe from any thread and always sees the writer's latest commits."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._uri = self.path.resolve().as_uri() + "?mode=ro"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            with closing(sqlite3.connect(self._uri, uri=True)) as db:
                db.execute("PRAGMA busy_timeout=5000")
                yield db
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the gateway database: {exc}") from None

    def alerts(self, state: Literal["active", "resolved"] | None = None, limit: int = 1000) -> list[Alert]:
        """Alerts, newest first; ``state`` filters active or resolved ones."""
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        with self._connect() as db:
            rows = db.execute(
                f"SELECT body FROM alerts {where} ORDER BY started_ts DESC, id LIMIT ?", (*args, limit)
            ).fetchall()
        return [Alert.model_validate_json(r[0]) for r in rows]

    def open_alerts(self) -> list[Alert]:
        """What staff must see: active alerts and resolved ones nobody acknowledged yet."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT body FROM alerts WHERE state = 'active' OR acknowledged = 0 ORDER BY started_ts DESC, id"
            ).fetchall()
        return [Alert.model_validate_json(r[0]) for r in rows]

    def alert(self, alert_id: str) -> Alert | None:
        with self._connect() as db:
            row = db.execute("SELECT body FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else Alert.model_validate_json(row[0])

    def transitions(self, alert_id: str) -> list[Transition]:
        """The audit log of one alert, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT change, ts, body FROM alert_transitions WHERE alert_id = ? ORDER BY seq", (alert_id,)
            ).fetchall()
        return [Transition(Change(c), Alert.model_validate_json(b), ts) for c, ts, b in rows]

    def latest_readings(self, stream: Stream | str) -> list[StoredReading]:
        """The newest reading (by message time) of every device for one stream."""
        st = Stream(stream)
        with self._connect() as db:
            # SQLite returns the other columns from the row holding MAX(ts) (documented behaviour).
            rows = db.execute(
                "SELECT device, MAX(ts), payload, received_ts FROM readings WHERE stream = ?"
                " GROUP BY device ORDER BY device",
                (st.value,),
            ).fetchall()
        return [StoredReading(dev, st, parse_reading(st, payload), rts) for dev, _ts, payload, rts in rows]

    def sessions(self) -> list[SessionState]:
        """Each room's latest nap session state (rooms that never had one are absent)."""
        with self._connect() as db:
            rows = db.execute("SELECT body FROM sessions WHERE body IS NOT NULL ORDER BY room").fetchall()
        return [SessionState.model_validate_json(r[0]) for r in rows]

    def session_log(
        self, room: str | None = None, since_ts: int = 0, until_ts: int | None = None
    ) -> list[SessionState]:
        """Session starts and stops (the state after each), oldest first, optionally of one room and
        within [since_ts, until_ts)."""
        sql, args = "SELECT body FROM session_log WHERE ts >= ?", list[int | str]([since_ts])
        if until_ts is not None:
            sql, args = sql + " AND ts < ?", [*args, until_ts]
        if room is not None:
            sql, args = sql + " AND room = ?", [*args, room]
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY seq", args).fetchall()
        return [SessionState.model_validate_json(r[0]) for r in rows]

    def count_readings(self, device: str | None = None) -> int:
        with self._connect() as db:
            if device is None:
                row = db.execute("SELECT COUNT(*) FROM readings").fetchone()
            else:
                row = db.execute("SELECT COUNT(*) FROM readings WHERE device = ?", (device,)).fetchone()
        return int(row[0])

    def max_reading_id(self) -> int:
        """The id of the newest stored reading (0: none yet); ids grow in arrival order."""
        with self._connect() as db:
            row = db.execute("SELECT MAX(id) FROM readings").fetchone()
        return int(row[0] or 0)

    def reading_id(self, device: str, stream: Stream | str, seq: int, ts: int) -> int | None:
        """The id of the reading with this identity (the table's UNIQUE key), None if not stored."""
        with self._connect() as db:
            row = db.execute(
                "SELECT id FROM readings WHERE device = ? AND stream = ? AND seq = ? AND ts = ?",
                (device, Stream(stream).value, seq, ts),
            ).fetchone()
        return None if row is None else int(row[0])

    def readings_after(self, after_id: int, limit: int) -> list[tuple[int, StoredReading]]:
        """Up to ``limit`` readings with an id above ``after_id``, oldest first, with their ids
        (InfluxDB backfill pages through them)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, device, stream, payload, received_ts FROM readings WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [(int(i), StoredReading(dev, Stream(st), parse_reading(Stream(st), p), rts))
                for i, dev, st, p, rts in rows]  # fmt: skip

    def reading_buckets(self, w: TrendWindow, devices: Sequence[str]) -> list[Bucket]:
        """Mean/min/max of one field per epoch-aligned bucket over the readings of ``devices`` in
        [start, end): the same answer as gateway/trends/queries.py's InfluxQL (empty buckets absent). Whole
        15-min buckets already rolled up come from the rollups, the rest from raw readings — the
        same answer either way (gateway/retention/policy.py)."""
        with self._connect() as db:
            return trend(db, w, devices)

    # ---------------------------------------------------------------- manager pages (dashboard)

    def alert_history(
        self,
        *,
        room: str | None = None,
        rule: str | None = None,
        severity: str | None = None,
        acknowledged: bool | None = None,
        since_ts: int | None = None,
        until_ts: int | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[int, list[Alert]]:
        """Alerts that started in [since_ts, until_ts), filtered, newest first: (total matching,
        one page of ``limit`` from ``offset``)."""
        conds: list[str] = []
        args: list[str | int] = []
        for column, value in (("room", room), ("rule", rule), ("severity", severity)):
            if value is not None:
                conds.append(f"{column} = ?")
                args.append(value)
        if acknowledged is not None:
            conds.append("acknowledged = ?")
            args.append(int(acknowledged))
        if since_ts is not None:
            conds.append("started_ts >= ?")
            args.append(since_ts)
        if until_ts is not None:
            conds.append("started_ts < ?")
            args.append(until_ts)
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        with self._connect() as db:
            total = int(db.execute(f"SELECT COUNT(*) FROM alerts {where}", args).fetchone()[0])
            rows = db.execute(
                f"SELECT body FROM alerts {where} ORDER BY started_ts DESC, id LIMIT ? OFFSET ?", [*args, limit, offset]
            ).fetchall()
        return total, [Alert.model_validate_json(r[0]) for r in rows]

    def alert_rules(self) -> list[str]:
        """The rules that ever raised an alert (for the history filter)."""
        with self._connect() as db:
            rows = db.execute("SELECT DISTINCT rule FROM alerts ORDER BY rule").fetchall()
        return [r[0] for r in rows]

    def reading_values(
        self, stream: Stream, field: str, devices: Sequence[str], start_ms: int, end_ms: int
    ) -> list[tuple[str, int, float]]:
        """(device, ts, value) of one numeric field of ``devices`` in [start_ms, end_ms), by time;
        readings without the field are left out (the time-above-threshold summary)."""
        if not devices:
            return []
        with self._connect() as db:
            rows = db.execute(
                "SELECT device, ts, v FROM ("
                "  SELECT device, ts, json_extract(payload, :path) AS v FROM readings"
                "  WHERE stream = :stream AND device IN (SELECT value FROM json_each(:devices))"
                "  AND ts >= :start AND ts < :end"
                ") WHERE v IS NOT NULL ORDER BY ts, device",
                {"path": f"$.{field}", "stream": stream.value, "start": start_ms, "end": end_ms,
                 "devices": json.dumps(list(devices))},
            ).fetchall()  # fmt: skip
        return [(str(d), int(t), float(v)) for d, t, v in rows]
