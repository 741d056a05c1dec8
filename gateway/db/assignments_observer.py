"""The runtime child ↔ device assignments in the running gateway (semantics in
gateway/engine/assignments.py, docs/gateway.md "Assignments"): an observer that applies staff
commands, re-binds the rules and records, publishes the retained states and rolls the day over on
its timer tick. History in the gateway's database (gateway/db/assignments_store.py)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from gateway.db.assignments_store import AssignmentStore
from gateway.engine.assignments import AssignmentBook, local_day
from gateway.engine.observers import GatewayObserver, ObserverContext, Outgoing
from nurserywatch.contract import AlertState, AssignCommand, DeviceAssignment, assignment_topic

log = logging.getLogger(__name__)


class AssignmentsObserver(GatewayObserver):
    """The assignments of the running gateway: commands in, rules and records re-bound, retained
    states out. Its ``on_tick`` rolls the day over."""

    def __init__(self, ctx: ObserverContext) -> None:
        self.ctx = ctx
        kit = ctx.kit
        self.store = AssignmentStore(ctx.db_path)
        now = ctx.clock.now_ms()
        tz = ZoneInfo(kit.timezone)
        self.book = AssignmentBook(kit, tz, now, self.store.load(local_day(now, tz)))
        for device, child in self.book.bindings().items():
            if child != (d.child if (d := kit.device(device)) is not None else None):
                log.info("assignment for today: %s watches %s", device, child or "nobody")
                ctx.rebind_device(device, child, now)

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
                self.ctx.count_rejected("store_error")
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
            self.ctx.rebind_device(state.device, state.child, now_ms)
            self._enqueue(state)

    def _busy(self, device: str) -> bool:
        return any(a.device == device and a.state is AlertState.ACTIVE for a in self.ctx.open_alerts())

    def _enqueue(self, state: DeviceAssignment) -> None:
        self.ctx.enqueue(Outgoing(assignment_topic(self.ctx.kit.site, state.device), state.to_json(), True))
