"""The SQLite shell of the runtime child ↔ device assignments (the pure part and the semantics are in
gateway/engine/assignments.py): an append-only history table in the gateway's database, and
``Assignments``, the gateway observer that applies commands, re-binds rules and records, publishes
the retained states and rolls the day over on its timer tick."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from gateway.engine.assignments import AssignmentBook, local_day
from gateway.engine.observers import GatewayObserver, Outgoing
from nurserywatch.contract import AlertState, AssignCommand, AssignmentSource, DeviceAssignment, assignment_topic

if TYPE_CHECKING:
    from gateway.service.mqtt import Gateway

log = logging.getLogger(__name__)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS device_assignments (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    day    TEXT    NOT NULL,   -- local date the assignment holds for
    device TEXT    NOT NULL,
    child  TEXT,               -- null: the device watches nobody that day
    by     TEXT    NOT NULL,
    ts     INTEGER NOT NULL    -- unix ms, gateway clock
);
CREATE INDEX IF NOT EXISTS device_assignments_by_day ON device_assignments (day, device, seq);
"""


class AssignmentStore:
    """Append-only history of staff assignments in the gateway's database; the latest row of a
    (day, device) is in force."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def load(self, day: str) -> list[DeviceAssignment]:
        rows = self._db.execute(
            "SELECT device, child, by, ts FROM device_assignments WHERE seq IN "
            "(SELECT MAX(seq) FROM device_assignments WHERE day = ? GROUP BY device)",
            (day,),
        ).fetchall()
        return [
            DeviceAssignment(device=r[0], child=r[1], source=AssignmentSource.STAFF, day=day, by=r[2], updated_ts=r[3])
            for r in rows
        ]

    def append(self, rows: Iterable[DeviceAssignment]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT INTO device_assignments (day, device, child, by, ts) VALUES (?, ?, ?, ?, ?)",
                [(r.day, r.device, r.child, r.by or "", r.updated_ts) for r in rows],
            )

    def close(self) -> None:
        self._db.close()


class Assignments(GatewayObserver):
    """The assignments of the running gateway: commands in, rules and records re-bound, retained
    states out. Its ``on_tick`` rolls the day over."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        kit = gateway.kit
        self.store = AssignmentStore(gateway.store.path)
        now = gateway.clock.now_ms()
        tz = ZoneInfo(kit.timezone)
        self.book = AssignmentBook(kit, tz, now, self.store.load(local_day(now, tz)))
        for device, child in self.book.bindings().items():
            if child != (d.child if (d := kit.device(device)) is not None else None):
                log.info("assignment for today: %s watches %s", device, child or "nobody")
                gateway.rebind_device(device, child, now)

    def publish_all(self, now_ms: int) -> None:
        for state in self.book.states(now_ms):
            self._enqueue(state)

    def command(self, cmd: AssignCommand, now_ms: int) -> list[DeviceAssignment]:
        """Raises AssignmentError. Applied in memory even if SQLite refuses (logged): monitoring must
        follow the child the staff just put on the mat."""
        self.on_tick(now_ms)
        changes = self.book.command(cmd, now_ms, self._busy)
        if changes:
            try:
                self.store.append(changes)
            except sqlite3.Error as exc:
                self.gateway.stats.rejected["store_error"] += 1
                log.error("assignments: not stored (%s); in force until the gateway restarts", exc)
        self._apply(changes, now_ms)
        if not changes:  # already so: answer with the current state all the same
            self._enqueue(self.book.state(cmd.device, now_ms))
        return changes

    def on_tick(self, now_ms: int) -> None:
        changes = self.book.tick(now_ms)
        if changes:
            log.info("new day %s: %d device(s) back to the kit's binding", self.book.day, len(changes))
        self._apply(changes, now_ms)

    def close(self) -> None:
        self.store.close()

    def _apply(self, changes: Iterable[DeviceAssignment], now_ms: int) -> None:
        for state in changes:
            self.gateway.rebind_device(state.device, state.child, now_ms)
            self._enqueue(state)

    def _busy(self, device: str) -> bool:
        return any(a.device == device and a.state is AlertState.ACTIVE for a in self.gateway.engine.book.open_alerts())

    def _enqueue(self, state: DeviceAssignment) -> None:
        self.gateway.enqueue(Outgoing(assignment_topic(self.gateway.kit.site, state.device), state.to_json(), True))
