"""The SQL of retention and downsampling on the gateway's SQLite (the pure part is gateway/retention/policy.py):
the rollup table, rolling readings up, deleting what is past retention, and trend queries that read
rollups plus raw rows. Its two tables (``reading_rollups``, ``retention_state``) are gateway/db/schema.py's,
beside the readings; it works on any connection to the migrated file.

Bookkeeping in ``retention_state``:

* ``rolled_until`` — every rollup bucket before it is rolled up (a 15-min boundary);
* ``rolled_id`` — every reading with an id up to it is accounted for in the rollups (ids grow in
  arrival order), so a reading that arrives *late* (store-and-forward replay: id above
  ``rolled_id``, ts before ``rolled_until``) is found and added on the next run;
* ``raw_from`` — raw readings before it have been deleted (never past ``rolled_until``).

Work is done in short transactions (one device-day of rollups, 20 000 deletions) so the gateway's
own writes — which alerting waits for — are never held up for long.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from gateway.db.schema import connect_writer
from gateway.retention.policy import (
    DAY_MS,
    ROLLUP_FIELDS,
    ROLLUP_MS,
    Cutoffs,
    Partial,
    RetentionReport,
    floor_to,
    raw_partials,
    read_plan,
    rollups,
    trend_buckets,
)
from gateway.trends.queries import Bucket, TrendWindow
from nurserywatch.contract import Stream

DELETE_BATCH = 20_000


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection of the retention job's own (it runs in a worker thread), autocommit like Store's,
    to the migrated file (gateway/db/schema.py)."""
    return connect_writer(path)


def _state(db: sqlite3.Connection) -> dict[str, int]:
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'retention_state'").fetchone() is None:
        return {}  # a reader on a file no writer has migrated yet (gateway/db/schema.py): all raw
    return {k: int(v) for k, v in db.execute("SELECT key, value FROM retention_state")}


def _set_state(db: sqlite3.Connection, **values: int) -> None:
    db.executemany(
        "INSERT INTO retention_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        list(values.items()),
    )


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _values_sql(stream: Stream) -> str:
    cols = ", ".join(f"json_extract(payload, '$.{f}')" for f in ROLLUP_FIELDS[stream])
    return f"SELECT device, ts, {cols} FROM readings WHERE stream = ?"  # not json_array: it rounds to 15 digits


def _rows(
    db: sqlite3.Connection, stream: Stream, where: str, args: Sequence[int | str]
) -> list[tuple[str, int, tuple[float | int | None, ...]]]:
    sql = _values_sql(stream) + " AND " + where
    return [(str(r[0]), int(r[1]), tuple(r[2:])) for r in db.execute(sql, (stream.value, *args))]


def _pairs(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """Distinct (stream, device) of the readings, by skip-scan of the (stream, device, ts) index."""
    out: list[tuple[str, str]] = []
    row = db.execute("SELECT stream, device FROM readings ORDER BY stream, device LIMIT 1").fetchone()
    while row is not None:
        out.append((str(row[0]), str(row[1])))
        row = db.execute(
            "SELECT stream, device FROM readings WHERE (stream, device) > (?, ?) ORDER BY stream, device LIMIT 1",
            row,
        ).fetchone()
    return out


def _upsert(db: sqlite3.Connection, parts: dict[tuple[str, str, str, int], Partial]) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO reading_rollups (stream, field, device, bucket, count, sum, min, max)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(*k, p.count, p.sum, p.min, p.max) for k, p in parts.items()],
    )


def roll_up(db: sqlite3.Connection, until_ms: int) -> tuple[int, int, int]:
    """Roll up the readings of every whole 15-min bucket before ``until_ms`` not rolled up yet, and
    add late readings to the rollups they belong to. Returns (rows rolled, late rows, rollups written)."""
    until_ms = floor_to(until_ms, ROLLUP_MS)
    st = _state(db)
    rolled_until, rolled_id, raw_from = st.get("rolled_until", 0), st.get("rolled_id", 0), st.get("raw_from", 0)
    streams = list(ROLLUP_FIELDS)
    written = late_count = rolled = 0

    # 1. Late readings (arrived after the last run, for buckets already rolled up). A bucket whose raw
    # rows are all still there is recomputed from them (exact); one whose raw rows are gone gets the
    # late values added. Same transaction as the new rolled_id: a late reading counts exactly once.
    with _transaction(db):
        # Read under the write lock: a run that waited for the gateway's open batch counts its readings.
        max_id = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()[0])
        parts: dict[tuple[str, str, str, int], Partial] = {}
        for stream in streams:
            late = _rows(db, stream, "id > ? AND id <= ? AND ts < ?", (rolled_id, max_id, rolled_until))
            late_count += len(late)
            touched = {(d, floor_to(ts, ROLLUP_MS)) for d, ts, _v in late}
            for (key, p) in rollups(stream, [r for r in late if floor_to(r[1], ROLLUP_MS) < raw_from]).items():
                old = db.execute(
                    "SELECT count, sum, min, max FROM reading_rollups WHERE stream = ? AND field = ? AND device = ?"
                    " AND bucket = ?", key,
                ).fetchone()  # fmt: skip
                parts[key] = p if old is None else Partial(*old).merge(p)
            for device, bucket in sorted(t for t in touched if t[1] >= raw_from):
                rows = _rows(db, stream, "device = ? AND ts >= ? AND ts < ? AND id <= ?",
                             (device, bucket, bucket + ROLLUP_MS, max_id))  # fmt: skip
                parts.update(rollups(stream, rows))
        _upsert(db, parts)
        written += len(parts)
        _set_state(db, rolled_id=max_id)

    # 2. New buckets [rolled_until, until_ms), per device and day (index range scans, short locks).
    if rolled_until == 0:
        first = db.execute("SELECT MIN(ts) FROM readings").fetchone()[0]
        rolled_until = until_ms if first is None else min(until_ms, floor_to(int(first), ROLLUP_MS))
    pairs = [(Stream(s), d) for s, d in _pairs(db) if Stream(s) in ROLLUP_FIELDS]
    for start in range(rolled_until, until_ms, DAY_MS):
        end = min(start + DAY_MS, until_ms)
        with _transaction(db):
            for stream, device in pairs:
                rows = _rows(db, stream, "device = ? AND ts >= ? AND ts < ? AND id <= ?", (device, start, end, max_id))
                rolled += len(rows)
                parts = rollups(stream, rows)
                _upsert(db, parts)
                written += len(parts)
            _set_state(db, rolled_until=end)
    if rolled_until >= until_ms and st.get("rolled_until") != rolled_until:
        with _transaction(db):
            _set_state(db, rolled_until=rolled_until)
    return rolled, late_count, written


def _delete_batched(db: sqlite3.Connection, sql: str, args: Sequence[int | str]) -> int:
    """Run ``DELETE … WHERE rowid IN (SELECT … LIMIT ?)`` until nothing is left; one transaction per batch."""
    total = 0
    while True:
        cur = db.execute(sql, (*args, DELETE_BATCH))
        total += cur.rowcount
        if cur.rowcount < DELETE_BATCH:
            return total


def prune(db: sqlite3.Connection, c: Cutoffs) -> RetentionReport:
    """Delete what is past retention (after ``roll_up``): raw readings already rolled up, old rollups,
    alerts resolved *and acknowledged* before the cutoff (never an active or unacknowledged one) with
    their transitions, and old nap-session log entries."""
    st = _state(db)
    raw_before = min(c.raw_before_ms, st.get("rolled_until", 0))
    rolled_id = st.get("rolled_id", 0)
    raw = 0
    if raw_before > st.get("raw_from", 0):
        for stream, device in _pairs(db):
            raw += _delete_batched(
                db,
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE stream = ? AND device = ?"
                " AND ts < ? AND id <= ? LIMIT ?)",
                (stream, device, raw_before, rolled_id),
            )
        with _transaction(db):
            _set_state(db, raw_from=raw_before)
    rollups_deleted = _delete_batched(
        db,
        "DELETE FROM reading_rollups WHERE (stream, field, device, bucket) IN"
        " (SELECT stream, field, device, bucket FROM reading_rollups WHERE bucket < ? LIMIT ?)",
        (c.rollups_before_ms,),
    )
    alerts = transitions = 0
    while True:
        ids = [r[0] for r in db.execute(
            "SELECT id FROM alerts WHERE state = 'resolved' AND acknowledged = 1 AND resolved_ts < ? LIMIT 1000",
            (c.alerts_before_ms,),
        )]  # fmt: skip
        if not ids:
            break
        with _transaction(db):
            marks = ",".join("?" * len(ids))
            transitions += db.execute(f"DELETE FROM alert_transitions WHERE alert_id IN ({marks})", ids).rowcount
            alerts += db.execute(f"DELETE FROM alerts WHERE id IN ({marks})", ids).rowcount
    sessions = db.execute("DELETE FROM session_log WHERE ts < ?", (c.sessions_before_ms,)).rowcount
    return RetentionReport(
        raw_deleted=raw, rollups_deleted=rollups_deleted, alerts_deleted=alerts, transitions_deleted=transitions,
        session_log_deleted=sessions,
    )  # fmt: skip


def trend(db: sqlite3.Connection, w: TrendWindow, devices: Sequence[str]) -> list[Bucket]:
    """``StoreReader.reading_buckets``: rollups for the whole rolled-up buckets of the window, raw rows
    for the rest, in one read transaction (a consistent snapshot while the job runs)."""
    if not devices:
        return []
    devs = json.dumps(list(devices))
    db.execute("BEGIN")
    try:
        st = _state(db)
        plan = read_plan(w, st.get("rolled_until", 0), st.get("raw_from", 0))
        parts: list[tuple[int, Partial]] = []
        if plan.rollups_until > plan.rollups_from:
            parts += [
                (int(b), Partial(int(n), float(s), float(lo), float(hi)))
                for b, n, s, lo, hi in db.execute(
                    "SELECT bucket, count, sum, min, max FROM reading_rollups WHERE stream = ? AND field = ?"
                    " AND device IN (SELECT value FROM json_each(?)) AND bucket >= ? AND bucket < ?",
                    (w.stream.value, w.field, devs, plan.rollups_from, plan.rollups_until),
                )
            ]
        for a, b in plan.raw:
            rows = db.execute(
                "SELECT device, ts, json_extract(payload, ?) FROM readings WHERE stream = ?"
                " AND device IN (SELECT value FROM json_each(?)) AND ts >= ? AND ts < ?",
                (f"$.{w.field}", w.stream.value, devs, a, b),
            )
            parts += raw_partials((str(d), int(ts), v) for d, ts, v in rows)
    finally:
        db.execute("COMMIT")
    return trend_buckets(w.bucket_ms, parts)
