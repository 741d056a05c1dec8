"""Nap sessions: staff commands, the kit's schedule in the site's time zone, persistence across a
restart, the store, and how sessions drive the session-dependent rules after a restart."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from gateway.alert_changes import Change
from gateway.config import NotifyConfig, RulesConfig
from gateway.db.reader import StoreReader
from gateway.db.store import Store
from gateway.engine.rules_engine import RulesEngine
from gateway.engine.sessions import NapSessions, SessionChangeKind, UnknownRoomError, window_at
from nurserywatch.contract import SessionAction, SessionCommand, SessionSource, SessionState, Severity
from nurserywatch.kit import Kit, KitError, load_kit
from tests.support.gateway_rules_harness import KIT_OPTIONS, T0, Session, breathing, posture, replay
from tests.support.kits import make_kit

TOKYO = ZoneInfo("Asia/Tokyo")
QUIET = NotifyConfig(critical_renotify_s=0, warning_renotify_s=0, info_renotify_s=0)


def at(local: str, tz: ZoneInfo = TOKYO) -> int:
    """Unix ms of a local time like '2026-01-05 12:30:00'."""
    return int(datetime.fromisoformat(local).replace(tzinfo=tz).timestamp() * 1000)


def kit_with(schedule: dict[str, list[dict[str, str]]], timezone: str | None = None) -> Kit:
    data: dict[str, Any] = {
        "site": "s",
        "name": "n",
        "rooms": [{"id": r, "name": r, "nap_schedule": w} for r, w in schedule.items()],
        "agents": [{"id": "pi"}],
    }
    if timezone:
        data["timezone"] = timezone
    return Kit.model_validate(data)


def cmd(room: str, action: str, by: str = "hoikushi-1") -> SessionCommand:
    return SessionCommand(room=room, action=SessionAction(action), by=by)


def run(sessions: NapSessions, start: int, end: int, step_ms: int = 1000) -> list[tuple[int, str, str | None]]:
    """Tick from start to end; (time, kind, started_by/stopped_by) of every change."""
    out = []
    for now in range(start, end + 1, step_ms):
        for c in sessions.tick(now):
            out.append(
                (now, c.kind.value, c.state.stopped_by if c.kind is SessionChangeKind.STOPPED else c.state.started_by)
            )
    return out


# ---------------------------------------------------------------- staff commands


def test_staff_start_and_stop() -> None:
    s = NapSessions(kit_with({"hiyoko": [], "risu": []}))
    [started] = s.command(cmd("hiyoko", "start", "hoikushi-1"), T0)
    assert started.kind is SessionChangeKind.STARTED and started.ts == T0
    assert started.state == SessionState(
        room="hiyoko", active=True, session_id=f"hiyoko-{T0}", source=SessionSource.STAFF, started_ts=T0,
        started_by="hoikushi-1", updated_ts=T0,
    )  # fmt: skip
    assert s.command(cmd("hiyoko", "start", "hoikushi-2"), T0 + 1000) == []  # already running: no-op
    assert s.active("risu") is None
    [stopped] = s.command(cmd("hiyoko", "stop", "hoikushi-2"), T0 + 7_200_000)
    assert (stopped.kind, stopped.state.active, stopped.state.stopped_by, stopped.state.stopped_ts) == (
        SessionChangeKind.STOPPED, False, "hoikushi-2", T0 + 7_200_000,
    )  # fmt: skip
    assert stopped.state.session_id == started.state.session_id
    assert s.command(cmd("hiyoko", "stop"), T0 + 7_300_000) == []  # nothing running: no-op
    # rooms never in a session are reported inactive (for the retained topic)
    assert [(st.room, st.active) for st in s.states(T0)] == [("hiyoko", False), ("risu", False)]
    with pytest.raises(UnknownRoomError, match="'kuma' is not in the kit"):
        s.command(cmd("kuma", "start"), T0)


# ---------------------------------------------------------------- schedule

DAY = "2026-01-05"


def test_schedule_starts_and_stops_on_local_time() -> None:
    s = NapSessions(kit_with({"hiyoko": [{"start": "12:30", "end": "14:30"}], "risu": []}))
    changes = run(s, at(f"{DAY} 12:29:00"), at(f"{DAY} 14:31:00"))
    assert changes == [
        (at(f"{DAY} 12:30:00"), "started", "schedule"),
        (at(f"{DAY} 14:30:00"), "stopped", "schedule"),
    ]
    st = s.state("hiyoko")
    assert st is not None and st.source is SessionSource.SCHEDULE
    assert (st.started_ts, st.scheduled_end_ts) == (at(f"{DAY} 12:30:00"), at(f"{DAY} 14:30:00"))
    # 12:30 in Tokyo is 03:30 UTC
    assert at(f"{DAY} 12:30:00") == at(f"{DAY} 03:30:00", ZoneInfo("UTC"))


def test_schedule_uses_the_kit_time_zone() -> None:
    s = NapSessions(kit_with({"r": [{"start": "12:30", "end": "12:35"}]}, timezone="Europe/London"))
    london = ZoneInfo("Europe/London")
    assert run(s, at(f"{DAY} 12:29:00", london), at(f"{DAY} 12:36:00", london)) == [
        (at(f"{DAY} 12:30:00", london), "started", "schedule"),
        (at(f"{DAY} 12:35:00", london), "stopped", "schedule"),
    ]


def test_gateway_started_mid_window_starts_the_session_at_once() -> None:
    s = NapSessions(kit_with({"hiyoko": [{"start": "12:30", "end": "14:30"}]}))
    assert run(s, at(f"{DAY} 13:10:00"), at(f"{DAY} 13:10:05")) == [(at(f"{DAY} 13:10:00"), "started", "schedule")]


def test_staff_stop_is_not_overruled_until_the_next_window() -> None:
    s = NapSessions(kit_with({"hiyoko": [{"start": "12:30", "end": "14:30"}]}))
    run(s, at(f"{DAY} 12:30:00"), at(f"{DAY} 12:30:00"))
    [stop] = s.command(cmd("hiyoko", "stop", "hoikushi-3"), at(f"{DAY} 13:00:00"))
    assert stop.state.stopped_by == "hoikushi-3"
    assert run(s, at(f"{DAY} 13:00:01"), at(f"{DAY} 14:31:00"), 60_000) == []
    assert run(s, at("2026-01-06 12:29:30"), at("2026-01-06 12:30:30"), 30_000) == [
        (at("2026-01-06 12:30:00"), "started", "schedule")
    ]


def test_staff_sessions_are_not_ended_by_the_schedule() -> None:
    s = NapSessions(kit_with({"hiyoko": [{"start": "12:30", "end": "14:30"}]}))
    s.command(cmd("hiyoko", "start"), at(f"{DAY} 12:20:00"))  # staff start early
    assert run(s, at(f"{DAY} 12:20:01"), at(f"{DAY} 15:00:00"), 60_000) == []
    st = s.active("hiyoko")
    assert st is not None and st.source is SessionSource.STAFF and st.scheduled_end_ts is None


def test_window_across_midnight() -> None:
    windows = kit_with({"yoru": [{"start": "22:00", "end": "06:00"}]}).rooms[0].nap_schedule
    occ = window_at(windows, at("2026-01-06 02:00:00"), TOKYO)
    assert occ is not None and (occ.start_ms, occ.end_ms) == (at(f"{DAY} 22:00:00"), at("2026-01-06 06:00:00"))
    assert window_at(windows, at("2026-01-06 06:00:00"), TOKYO) is None
    assert window_at(windows, at(f"{DAY} 21:59:59"), TOKYO) is None


def test_restart_neither_repeats_nor_forgets_a_window() -> None:
    kit = kit_with({"hiyoko": [{"start": "12:30", "end": "14:30"}]})
    first = NapSessions(kit)
    run(first, at(f"{DAY} 12:30:00"), at(f"{DAY} 12:30:00"))
    first.command(cmd("hiyoko", "stop"), at(f"{DAY} 13:00:00"))
    # restart at 13:30 from what was stored: the stopped session is not started again
    again = NapSessions(kit, [first.state("hiyoko")], first.schedule_windows)  # type: ignore[list-item]
    assert run(again, at(f"{DAY} 13:30:00"), at(f"{DAY} 14:31:00"), 60_000) == []
    # a scheduled session still running at the restart ends on schedule
    s = NapSessions(kit)
    run(s, at(f"{DAY} 12:30:00"), at(f"{DAY} 12:30:00"))
    again = NapSessions(kit, [s.state("hiyoko")], s.schedule_windows)  # type: ignore[list-item]
    assert [c.kind for c in again.restored_changes(at(f"{DAY} 13:00:00"))] == [SessionChangeKind.RESTORED]
    assert run(again, at(f"{DAY} 13:00:00"), at(f"{DAY} 14:31:00"), 60_000) == [
        (at(f"{DAY} 14:30:00"), "stopped", "schedule")
    ]


# ---------------------------------------------------------------- kit file


@pytest.mark.parametrize(
    ("rooms_yaml", "message"),
    [
        ("- {id: r, name: r, nap_schedule: [{start: '25:00', end: '14:30'}]}",
         'room "r" (line 5): nap_schedule[0].start: expected a time of day'),
        ("- {id: r, name: r, nap_schedule: [{start: '12:30', end: '12:30'}]}", "equals start"),
        ("- {id: r, name: r, nap_schedule: [{start: '12:30'}]}", 'room "r" (line 5): nap_schedule[0].end: required'),
    ],
)
def test_bad_schedules_are_clear_errors(tmp_path: Path, rooms_yaml: str, message: str) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(f"site: s\nname: n\nagents: [{{id: pi}}]\nrooms:\n{rooms_yaml}\n")
    with pytest.raises(KitError, match=re.escape(message)):
        load_kit(path)


def test_unquoted_yaml_times_and_time_zone(tmp_path: Path) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(
        "site: s\nname: n\ntimezone: Asia/Tokyo\nagents: [{id: pi}]\n"
        "rooms:\n- {id: r, name: r, nap_schedule: [{start: 12:30, end: 14:30}, {start: '09:00', end: '09:45'}]}\n"
    )
    assert yaml.safe_load("t: 12:30")["t"] == 750  # YAML 1.1 sexagesimal, turned back into a time
    kit = load_kit(path)
    assert [(w.start, w.end) for w in kit.rooms[0].nap_schedule] == [("12:30", "14:30"), ("09:00", "09:45")]
    path.write_text("site: s\nname: n\ntimezone: Asia/Tokio\nagents: [{id: pi}]\nrooms: [{id: r, name: r}]\n")
    with pytest.raises(KitError, match=r"timezone \(line 3\): 'Asia/Tokio' is not an IANA time zone"):
        load_kit(path)


# ---------------------------------------------------------------- store and restart


def test_sessions_are_stored_logged_and_restored(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    kit = make_kit(**KIT_OPTIONS)
    with Store(db) as store:
        engine = RulesEngine(kit, RulesConfig(), T0)
        out = engine.session_command(cmd("hiyoko", "start", "hoikushi-1"), T0)
        store.record_sessions(out.sessions, {"hiyoko": "2026-01-01T12:30"})
        out = engine.session_command(cmd("kirin", "start", "hoikushi-2"), T0 + 60_000)
        store.record_sessions(out.sessions)
        out = engine.session_command(cmd("kirin", "stop", "hoikushi-2"), T0 + 120_000)
        store.record_sessions(out.sessions)
        states, windows = store.sessions()
    assert [(s.room, s.active) for s in states] == [("hiyoko", True), ("kirin", False)]
    assert windows == {"hiyoko": "2026-01-01T12:30"}
    reader = StoreReader(db)
    assert [(s.room, s.active) for s in reader.sessions()] == [("hiyoko", True), ("kirin", False)]
    log = reader.session_log()
    assert [(s.room, s.active, s.started_by, s.stopped_by) for s in log] == [
        ("hiyoko", True, "hoikushi-1", None),
        ("kirin", True, "hoikushi-2", None),
        ("kirin", False, "hoikushi-2", "hoikushi-2"),
    ]
    assert [s.room for s in reader.session_log("kirin", since_ts=T0 + 100_000)] == ["kirin"]
    assert reader.session_log(until_ts=T0) == []
    # restarted: the session is still on, so its rules still run
    restored = RulesEngine(kit, RulesConfig(), T0 + 600_000, sessions=states, schedule_windows=windows)
    assert restored.sessions.active("hiyoko") is not None and restored.sessions.active("kirin") is None
    assert restored.sessions.schedule_windows == {"hiyoko": "2026-01-01T12:30"}


def test_restart_during_a_session_is_not_silence() -> None:
    # The gateway restarts 1 h into a nap: devices that report again within 10 s raise nothing;
    # silence counts from the restart, not from the session start an hour earlier.
    kit = make_kit(**KIT_OPTIONS)
    before = RulesEngine(kit, RulesConfig(), T0)
    before.session_command(cmd("hiyoko", "start"), T0)
    state = before.sessions.active("hiyoko")
    restart_s = 3600.0
    engine = RulesEngine(kit, RulesConfig(notify=QUIET), T0 + 3_600_000, sessions=[state])  # type: ignore[list-item]
    events = [
        breathing("mat-0", restart_s + 2, restart_s + 60),
        breathing("mat-1", restart_s + 2, restart_s + 60),
        posture("clip-0", restart_s + 0.5, restart_s + 30, "supine"),  # goes silent at 30 s
    ]
    r = replay(events, restart_s + 60, rules=RulesConfig(notify=QUIET), engine=engine, start_s=restart_s)
    # last reading at +29.5 s; the 200 ms tick grid from the restart notices it at +39.6 s
    assert r.rows() == [(restart_s + 39.6, Change.RAISED, "sensor_lost", Severity.CRITICAL, "clip-0")]


def test_a_device_that_never_reported_during_the_nap_is_a_warning_until_it_does() -> None:
    # A clip switched off (or its child absent today): "check power and fit" — a warning, not a
    # critical alarm every nap. Once it has reported and goes silent again, it is critical.
    background = [Session(0, "hiyoko"), breathing("mat-0", 0, 120), breathing("mat-1", 0, 120)]
    # switched on at 40 s and steady for 5 s: resolved; silent again from 45 s: a new, critical alert
    r = replay([*background, posture("clip-0", 40, 45, "supine")], 120, rules=RulesConfig(notify=QUIET))
    assert r.rows() == [
        (10.0, Change.RAISED, "sensor_lost", Severity.WARNING, "clip-0"),
        (45.0, Change.RESOLVED, "sensor_lost", Severity.WARNING, "clip-0"),
        (54.0, Change.RAISED, "sensor_lost", Severity.CRITICAL, "clip-0"),
    ]
    first = r.seen[0].transition.alert
    assert first.message_en == "Nap session running but no data from this sensor (check power and fit)"
    assert r.seen[2].transition.alert.message == "センサーからの受信が10秒以上途絶えています"
    # two readings and silent again before it counted as back: the same alert becomes critical
    r = replay([*background, posture("clip-0", 40, 42, "supine")], 120, rules=RulesConfig(notify=QUIET))
    assert r.rows() == [
        (10.0, Change.RAISED, "sensor_lost", Severity.WARNING, "clip-0"),
        (51.0, Change.UPDATED, "sensor_lost", Severity.CRITICAL, "clip-0"),
    ]
