"""Which child each mat / posture clip watches today: the kit's binding, overridden by staff for the
day (``command/assign``), persisted in the gateway's SQLite and retained on ``assignment/{device}``.

Why at run time: the kit file binds a device to a child once, but a nursery moves futons and children
every day (a child absent, a spare mat). The rules (apnea, prone, sensor lost, child off mat) and the
nap-check records follow the effective binding, so an alert and a record name the child actually
on the mat.

Semantics (docs/gateway.md, "Assignments"):

* a staff assignment holds for the local day (kit time zone) it was made on; the next day the kit's
  binding returns (at the first tick after midnight, published like any change);
* a child already on another device of the same kind is *moved*: that device watches nobody today;
* refused (counted under the reason in ``GatewayStats.rejected``): ``unknown_device``,
  ``not_assignable`` (a room device such as an air sensor), ``unknown_child``, ``wrong_room`` (the
  child belongs to another room than the device), ``device_alerting`` (an alert is active on a
  device the change touches: resolve it first, so no alert is left without a monitor to end it).

``AssignmentBook`` (here) is pure, clock passed in; gateway/db/assignments_store.py holds the SQLite
history and gateway/db/assignments_observer.py ``AssignmentsObserver``, which ties both to the
running gateway through the observer hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from nurserywatch.contract import (
    AssignCommand,
    AssignmentSource,
    DeviceAssignment,
)
from nurserywatch.kit import CHILD_DEVICES, Kit


class AssignmentError(ValueError):
    """A refused ``command/assign``; ``reason`` is the counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def local_day(now_ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(now_ms / 1000, tz).date().isoformat()


class AssignmentBook:
    """The effective device → child binding. Pure: feed it commands and clock ticks."""

    def __init__(self, kit: Kit, tz: ZoneInfo, now_ms: int, rows: Iterable[DeviceAssignment] = ()) -> None:
        self.kit = kit
        self.tz = tz
        self.day = local_day(now_ms, tz)
        self._devices = {d.id: d for d in kit.devices if d.kind in CHILD_DEVICES}
        #: device -> today's staff assignment (only rows of ``day`` count).
        self._staff: dict[str, DeviceAssignment] = {}
        for row in rows:
            if row.day == self.day and row.device in self._devices:
                self._staff[row.device] = row

    def child_of(self, device: str) -> str | None:
        staff = self._staff.get(device)
        if staff is not None:
            return staff.child
        d = self._devices.get(device)
        return d.child if d is not None else None

    def bindings(self) -> dict[str, str | None]:
        """Every child-watching device of the kit with the child it watches now."""
        return {d: self.child_of(d) for d in self._devices}

    def state(self, device: str, now_ms: int) -> DeviceAssignment:
        staff = self._staff.get(device)
        if staff is not None:
            return staff
        return DeviceAssignment(
            device=device, child=self._devices[device].child, source=AssignmentSource.KIT, updated_ts=now_ms
        )

    def states(self, now_ms: int) -> list[DeviceAssignment]:
        return [self.state(d, now_ms) for d in self._devices]

    def command(self, cmd: AssignCommand, now_ms: int, busy: Callable[[str], bool]) -> list[DeviceAssignment]:
        """Apply a staff assignment; returns the devices whose binding changed (their new state).
        ``busy(device)``: an alert is active on it. Raises AssignmentError."""
        self.tick(now_ms)  # a command after midnight applies to the new day
        device = self._devices.get(cmd.device)
        if device is None:
            reason = "not_assignable" if self.kit.device(cmd.device) is not None else "unknown_device"
            raise AssignmentError(reason, f"device {cmd.device!r} is not a device of the kit that watches a child")
        moves: dict[str, str | None] = {}
        if cmd.child is not None:
            child = self.kit.child(cmd.child)
            if child is None:
                raise AssignmentError("unknown_child", f"child {cmd.child!r} is not in the kit")
            if child.room != device.room:
                raise AssignmentError(
                    "wrong_room",
                    f"child {cmd.child!r} is in room {child.room!r}, device {device.id!r} in {device.room!r}",
                )
            for other in self._devices.values():
                if other.id != device.id and other.kind is device.kind and self.child_of(other.id) == cmd.child:
                    moves[other.id] = None
        moves[device.id] = cmd.child
        changed = {d: c for d, c in moves.items() if self.child_of(d) != c}
        for d in changed:
            if busy(d):
                raise AssignmentError("device_alerting", f"device {d!r} has an active alert; it must end first")
        out = []
        for d, c in changed.items():
            row = DeviceAssignment(
                device=d, child=c, source=AssignmentSource.STAFF, day=self.day, by=cmd.by, updated_ts=now_ms
            )
            self._staff[d] = row
            out.append(row)
        return out

    def tick(self, now_ms: int) -> list[DeviceAssignment]:
        """At the first call on a new local day, staff assignments end; returns the devices whose
        binding changed back (their kit state)."""
        day = local_day(now_ms, self.tz)
        if day == self.day:
            return []
        before = self.bindings()
        self.day = day
        self._staff.clear()
        return [self.state(d, now_ms) for d, child in self.bindings().items() if child != before[d]]
