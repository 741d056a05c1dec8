"""A child's data in the gateway's SQLite file — the shell of ``nurserywatch data export/erase``:
the device-binding log the gateway appends to at start, the append-only ``data_requests`` log,
reading/alert selection and chunked deletion, and the InfluxDB disk buffer's lines. What to select
is decided in gateway/child_data/selection.py; the records' redaction is ``RecordStore.erase``.

Safe beside a running gateway: WAL (readers never block the writer) and a 5 s busy timeout on both
sides; deletions go in transactions of ``ERASE_CHUNK_ROWS`` rows so the gateway's own writes wait
milliseconds, not the length of the whole erase.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Any

from gateway.child_data.selection import (
    ERASE_CHUNK_ROWS,
    Binding,
    DayAssignment,
    DeviceWindow,
    Request,
    changed_bindings,
    line_child,
)
from gateway.db.schema import connect_writer
from gateway.retention.policy import ROLLUP_MS
from nurserywatch.contract import Alert
from nurserywatch.kit import Kit
from nurserywatch.sqlite import connect

log = logging.getLogger("nurserywatch.gateway.child_data")

#: (device, stream, ts, seq, received_ts, payload)
ReadingRow = tuple[str, str, int, int, int, str]
Progress = Callable[[str, int, int], None]


class ChildDataStoreError(Exception):
    """The database could not be opened, read or written."""


def note_bindings(path: str | Path, kit: Kit, now_ms: int) -> int:
    """The gateway at start: append the kit's device→child bindings that differ from the last ones
    noted. Returns how many were appended."""
    with ChildDataStore(path) as store:
        return store.note_bindings(kit, now_ms)


class ChildDataStore:
    """One connection to the gateway's database file (created if missing, migrated to the latest
    schema: every table it reads or writes is there)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = connect_writer(self.path, synchronous=None)  # SQLite's default sync level, as before
        except sqlite3.Error as exc:
            raise ChildDataStoreError(f"{self.path}: cannot open the gateway database: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ChildDataStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise ChildDataStoreError(f"{self.path}: {exc}") from None

    # ------------------------------------------------------------ bindings

    def bindings(self) -> list[Binding]:
        return [Binding(d, c, int(t)) for d, c, t in self._q("SELECT device, child, since_ts FROM device_bindings"
                                                             " ORDER BY since_ts, seq")]  # fmt: skip

    def note_bindings(self, kit: Kit, now_ms: int) -> int:
        new = changed_bindings(self.bindings(), kit, now_ms)
        if new:
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany("INSERT INTO device_bindings (device, child, since_ts) VALUES (?, ?, ?)",
                                         [(b.device, b.child, b.since_ts) for b in new])  # fmt: skip
            except sqlite3.Error as exc:
                raise ChildDataStoreError(f"{self.path}: cannot note device bindings: {exc}") from None
        return len(new)

    def forget_child_in_bindings(self, child: str) -> int:
        """After an erase: the rows keep their device and time (the intervals of the other children
        stay right) but no longer say whom the device watched."""
        return self._write("UPDATE device_bindings SET child = NULL WHERE child = ?", (child,))

    def assignments(self) -> list[DayAssignment]:
        """Staff assignments of the day (``device_assignments``, gateway/db/assignments_store.py), if any."""
        rows = self._q("SELECT device, child, day, ts FROM device_assignments ORDER BY seq")
        return [DayAssignment(d, c, day, int(ts)) for d, c, day, ts in rows]

    def forget_child_in_assignments(self, child: str) -> int:
        return self._write("UPDATE device_assignments SET child = NULL WHERE child = ?", (child,))

    # ------------------------------------------------------------ what is held

    def children_with_data(self) -> set[str]:
        found = {r[0] for r in self._q("SELECT DISTINCT child FROM device_bindings WHERE child IS NOT NULL")}
        found |= {a.child for a in self.assignments() if a.child is not None}
        found |= {r[0] for r in self._q("SELECT DISTINCT child FROM alerts WHERE child IS NOT NULL")}
        found |= {r[0] for r in self._q("SELECT DISTINCT child FROM record_entries WHERE child IS NOT NULL")}
        return found

    def _reading_where(self, w: DeviceWindow) -> tuple[str, list[Any]]:
        sql, args = "device = ? AND ts >= ?", [w.device, w.start_ts]
        if w.end_ts is not None:
            sql, args = sql + " AND ts < ?", [*args, w.end_ts]
        return sql, args

    def count_readings(self, windows: Sequence[DeviceWindow]) -> int:
        total = 0
        for w in windows:
            where, args = self._reading_where(w)
            total += int(self._q(f"SELECT COUNT(*) FROM readings WHERE {where}", args)[0][0])
        return total

    def readings(self, windows: Sequence[DeviceWindow], batch: int = 10_000) -> Iterator[ReadingRow]:
        """The child's readings, per window in time order, streamed in batches (a year stays small
        in memory). Keyset pagination on (ts, id), so rows the gateway adds meanwhile do not shift it."""
        for w in windows:
            where, args = self._reading_where(w)
            after: tuple[int, int] = (-1, -1)
            while True:
                rows = self._q(
                    f"SELECT device, stream, ts, seq, received_ts, payload, id FROM readings WHERE {where}"
                    " AND (ts > ? OR (ts = ? AND id > ?)) ORDER BY ts, id LIMIT ?",
                    [*args, after[0], after[0], after[1], batch],
                )
                for r in rows:
                    yield r[0], r[1], int(r[2]), int(r[3]), int(r[4]), r[5]
                if len(rows) < batch:
                    break
                after = (int(rows[-1][2]), int(rows[-1][6]))

    def erase_readings(self, windows: Sequence[DeviceWindow], progress: Progress | None = None) -> int:
        """Delete the child's readings in short transactions; returns how many."""
        total, done = self.count_readings(windows), 0
        for w in windows:
            where, args = self._reading_where(w)
            while True:
                n = self._write(
                    f"DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE {where} LIMIT ?)",
                    [*args, ERASE_CHUNK_ROWS],
                )
                done += n
                if progress is not None:
                    progress("readings", done, max(total, done))
                if n < ERASE_CHUNK_ROWS:
                    break
        return done

    def _rollup_where(self, w: DeviceWindow) -> tuple[str, list[Any]]:
        # every 15-min bucket that overlaps the window: a bucket shared with the next child is theirs too
        sql, args = "device = ? AND bucket > ?", [w.device, w.start_ts - ROLLUP_MS]
        if w.end_ts is not None:
            sql, args = sql + " AND bucket < ?", [*args, w.end_ts]
        return sql, args

    def rollups(self, windows: Sequence[DeviceWindow]) -> list[dict[str, Any]]:
        """The downsampled readings (retention's ``reading_rollups``) of the child's device windows."""
        out = []
        for w in windows:
            where, args = self._rollup_where(w)
            cols = ("stream", "field", "device", "bucket", "count", "sum", "min", "max")
            rows = self._q(f"SELECT {', '.join(cols)} FROM reading_rollups WHERE {where} ORDER BY bucket", args)
            out += [dict(zip(cols, r, strict=True)) for r in rows]
        return out

    def erase_rollups(self, windows: Sequence[DeviceWindow]) -> int:
        done = 0
        for w in windows:
            where, args = self._rollup_where(w)
            done += self._write(f"DELETE FROM reading_rollups WHERE {where}", args)
        return done

    def alerts(self, child: str) -> list[tuple[Alert, list[tuple[int, str, int, Alert]]]]:
        """The child's alerts (oldest first), each with its transitions (audit seq, change, ts, alert after)."""
        out = []
        for (body,) in self._q("SELECT body FROM alerts WHERE child = ? ORDER BY started_ts, id", (child,)):
            alert = Alert.model_validate_json(body)
            transitions = [
                (int(seq), change, int(ts), Alert.model_validate_json(b))
                for seq, change, ts, b in self._q(
                    "SELECT seq, change, ts, body FROM alert_transitions WHERE alert_id = ? ORDER BY seq", (alert.id,)
                )
            ]
            out.append((alert, transitions))
        return out

    def open_alerts(self, child: str) -> list[str]:
        return [r[0] for r in self._q("SELECT id FROM alerts WHERE child = ? AND (state = 'active' OR acknowledged = 0)"
                                      " ORDER BY started_ts", (child,))]  # fmt: skip

    def erase_alerts(self, child: str) -> tuple[int, int]:
        """Delete the child's alerts and their transitions, atomically; (alerts, transitions)."""
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                t = self._db.execute(
                    "DELETE FROM alert_transitions WHERE alert_id IN (SELECT id FROM alerts WHERE child = ?)", (child,)
                ).rowcount
                a = self._db.execute("DELETE FROM alerts WHERE child = ?", (child,)).rowcount
        except sqlite3.Error as exc:
            raise ChildDataStoreError(f"{self.path}: cannot erase alerts: {exc}") from None
        return a, t

    # ------------------------------------------------------------ the request log

    def log_request(self, r: Request) -> None:
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO data_requests (ts, action, child, by, outcome, counts, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (r.ts, r.action, r.child, r.by, r.outcome, json.dumps(dict(r.counts)), r.detail),
                )
        except sqlite3.Error as exc:
            raise ChildDataStoreError(f"{self.path}: cannot log the data request: {exc}") from None
        log.info("%s", r.summary())

    def requests(self, child: str | None = None) -> list[Request]:
        sql, args = "SELECT ts, action, child, by, outcome, counts, detail FROM data_requests", list[Any]()
        if child is not None:
            sql, args = sql + " WHERE child = ?", [child]
        rows = self._q(sql + " ORDER BY seq", args)
        return [Request(int(ts), a, c, b, o, json.loads(n), d) for ts, a, c, b, o, n, d in rows]

    def _write(self, sql: str, args: Sequence[Any]) -> int:
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                return int(self._db.execute(sql, args).rowcount)
        except sqlite3.Error as exc:
            raise ChildDataStoreError(f"{self.path}: {exc}") from None


def erase_buffered_lines(path: str | Path, child: str) -> int:
    """Delete the lines tagged with ``child`` from the InfluxDB writer's disk buffer (if the file
    exists). Safe beside the running writer: it only ever reads the oldest rows and acknowledges
    by id, and it recounts its rows when it finds fewer than it thought (gateway/influx/buffer.py)."""
    p = Path(path)
    if not p.is_file():
        return 0
    try:
        with closing(connect(p, synchronous=None)) as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'pending'").fetchone() is None:
                return 0
            ids = [i for i, line in db.execute("SELECT id, line FROM pending") if line_child(line) == child]
            for start in range(0, len(ids), ERASE_CHUNK_ROWS):
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany(
                        "DELETE FROM pending WHERE id = ?", [(i,) for i in ids[start : start + ERASE_CHUNK_ROWS]]
                    )
    except sqlite3.Error as exc:
        raise ChildDataStoreError(f"{p}: cannot erase from the InfluxDB buffer: {exc}") from None
    return len(ids)
