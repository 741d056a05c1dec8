"""Nap sessions per room, pure, on the gateway clock: started and stopped by staff (``command/session``)
or by the kit's ``nap_schedule`` (local times in the kit's ``timezone``).

Schedule semantics (docs/gateway.md):

* When a room's window begins and the room has no session, the schedule starts one (``source:
  schedule``, ``started_by: "schedule"``) with ``scheduled_end_ts`` = the window's end; a gateway
  started in the middle of a window starts it at once. The schedule acts on each window once:
  staff who stop the session early are not overruled until the next window.
* At the window's end the schedule stops the sessions *it* started. A session staff started runs
  until staff stop it, windows or not.
* Staff ``start`` on a room that already has a session, or ``stop`` on one that has none, changes
  nothing (the current state is re-published).

The window the schedule last acted on is kept per room (``schedule_windows``) and stored, so a
restart neither repeats nor forgets it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from nurserywatch.contract import SessionAction, SessionCommand, SessionSource, SessionState
from nurserywatch.kit import Kit, NapWindow

SCHEDULE_BY = "schedule"


class UnknownRoomError(KeyError):
    def __init__(self, room: str) -> None:
        super().__init__(room)
        self.room = room

    def __str__(self) -> str:
        return f"room {self.room!r} is not in the kit"


class SessionChangeKind(StrEnum):
    STARTED = "started"
    STOPPED = "stopped"
    #: An active session found in the store when the gateway started (delivered once to observers).
    RESTORED = "restored"


@dataclass(frozen=True, slots=True)
class SessionChange:
    kind: SessionChangeKind
    #: The room's session state after the change.
    state: SessionState
    #: Gateway time of the change.
    ts: int

    @property
    def room(self) -> str:
        return self.state.room


@dataclass(frozen=True, slots=True)
class Occurrence:
    key: str
    start_ms: int
    end_ms: int


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def window_at(windows: Iterable[NapWindow], now_ms: int, tz: ZoneInfo) -> Occurrence | None:
    """The occurrence of one of ``windows`` that contains ``now_ms``, if any (first listed wins)."""
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    for w in windows:
        for day in (local.date() - timedelta(days=1), local.date()):
            start = datetime.combine(day, w.start_time, tz)
            end_day: date = day if w.end_time > w.start_time else day + timedelta(days=1)
            end = datetime.combine(end_day, w.end_time, tz)
            if start <= local < end:
                return Occurrence(f"{day.isoformat()}T{w.start}", _ms(start), _ms(end))
    return None


class NapSessions:
    def __init__(
        self,
        kit: Kit,
        restored: Iterable[SessionState] = (),
        schedule_windows: Mapping[str, str] | None = None,
    ) -> None:
        self._tz = ZoneInfo(kit.timezone)
        self._windows = {r.id: list(r.nap_schedule) for r in kit.rooms}
        self._state: dict[str, SessionState] = {}
        for st in restored:
            if st.room in self._windows:
                self._state[st.room] = st
        #: Per room, the key of the schedule window the gateway last acted on.
        self.schedule_windows: dict[str, str] = {
            room: key for room, key in (schedule_windows or {}).items() if room in self._windows
        }
        #: Rooms whose schedule_windows entry changed since the caller last took them.
        self.dirty_windows: set[str] = set()

    # -- queries

    def state(self, room: str) -> SessionState | None:
        """The room's latest session state (active or the last one that ended), None if never."""
        return self._state.get(room)

    def active(self, room: str) -> SessionState | None:
        st = self._state.get(room)
        return st if st is not None and st.active else None

    def states(self, now_ms: int) -> list[SessionState]:
        """One state per kit room (rooms never in a session: inactive), for the retained topic."""
        return [self._state.get(r) or SessionState(room=r, active=False, updated_ts=now_ms) for r in self._windows]

    def restored_changes(self, now_ms: int) -> list[SessionChange]:
        return [SessionChange(SessionChangeKind.RESTORED, st, now_ms) for st in self._state.values() if st.active]

    # -- operations

    def command(self, cmd: SessionCommand, now_ms: int) -> list[SessionChange]:
        if cmd.room not in self._windows:
            raise UnknownRoomError(cmd.room)
        if cmd.action is SessionAction.START:
            return self._start(cmd.room, now_ms, SessionSource.STAFF, cmd.by, None)
        return self._stop(cmd.room, now_ms, cmd.by)

    def tick(self, now_ms: int) -> list[SessionChange]:
        out: list[SessionChange] = []
        for room, windows in self._windows.items():
            st = self.active(room)
            if (
                st is not None
                and st.source is SessionSource.SCHEDULE
                and st.scheduled_end_ts is not None
                and now_ms >= st.scheduled_end_ts
            ):
                out += self._stop(room, now_ms, SCHEDULE_BY)
            if not windows:
                continue
            occ = window_at(windows, now_ms, self._tz)
            if occ is None or self.schedule_windows.get(room) == occ.key:
                continue
            self.schedule_windows[room] = occ.key
            self.dirty_windows.add(room)
            if self.active(room) is None:
                out += self._start(room, now_ms, SessionSource.SCHEDULE, SCHEDULE_BY, occ.end_ms)
        return out

    def _start(
        self, room: str, now_ms: int, source: SessionSource, by: str, scheduled_end: int | None
    ) -> list[SessionChange]:
        if self.active(room) is not None:
            return []
        st = SessionState(
            room=room,
            active=True,
            session_id=f"{room}-{now_ms}",
            source=source,
            started_ts=now_ms,
            started_by=by,
            scheduled_end_ts=scheduled_end,
            updated_ts=now_ms,
        )
        self._state[room] = st
        return [SessionChange(SessionChangeKind.STARTED, st, now_ms)]

    def _stop(self, room: str, now_ms: int, by: str) -> list[SessionChange]:
        current = self.active(room)
        if current is None:
            return []
        updated_ts = max(now_ms, current.updated_ts)
        st = current.model_copy(
            update={"active": False, "stopped_ts": now_ms, "stopped_by": by, "updated_ts": updated_ts}
        )
        self._state[room] = st
        return [SessionChange(SessionChangeKind.STOPPED, st, now_ms)]
