"""The read side of the gateway's SQLite (the writer is ``Store``, gateway/db/store.py): alerts, their
audit log, readings, trend buckets and nap sessions, for the dashboard, the InfluxDB backfill and
the CLI. It loads no engine module, so the dashboard's read interface (gateway/read.py) stays apart
from the gateway's write side.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.alert_changes import Change, Transition
from gateway.retention.store import trend
from gateway.trends.queries import Bucket, TrendWindow
from nurserywatch.contract import Alert, Reading, SessionState, Stream, parse_reading
from nurserywatch.sqlite import connect


class StoreError(Exception):
    """The database could not be opened, read or written."""


@dataclass(frozen=True, slots=True)
class StoredReading:
    device: str
    stream: Stream
    reading: Reading
    received_ts: int


class StoreReader:
    """Read-only view for the dashboard. Opens a fresh ``mode=ro`` connection per call, so it is
    safe from any thread and always sees the writer's latest commits."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            with closing(connect(self.path, readonly=True)) as db:
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
