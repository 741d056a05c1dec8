"""The rules engine: the gateway's pure core. It takes validated input with the gateway clock's
``now`` — readings, device and edge status, acknowledgements, session commands, timer ticks — runs
every rule of docs/gateway.md with the thresholds of the device's room and child's age band, keeps nap
sessions, and returns what changed (alert transitions, session changes). No I/O, no clock of its own:
a two-hour nap replays in a second on a ManualClock.

Time: a rule judges on *message time*. Between readings, ``tick(now)`` (every ``tick_ms``) judges
again at the device's time extrapolated from its newest reading by the gateway clock
(``newest.ts + (now − received)``, at most the stream's freshness), so an apnea alert comes 20.0 s
after the last breath even when readings arrive once a second, and a clock offset between edge and
gateway does not shift it. Silence (sensor lost) and nap sessions run on the gateway clock; so do
re-notification and escalation.

Per device the engine runs: a mat → apnea, breathing_rate_low, breathing_rate_high, child_off_mat; a clip →
prone; a thermometer → fever; an air sensor → co2, temperature, humidity, pm25; every device →
sensor_lost, battery_low.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.alert_changes import Transition
from gateway.config import RulesConfig, RuleSet
from gateway.engine.alerts import AlertBook, Subject
from gateway.engine.sessions import NapSessions, SessionChange
from gateway.rules.air import AirMonitor
from gateway.rules.battery import BatteryMonitor
from gateway.rules.breathing import MatMonitor
from gateway.rules.events import RuleEvent, StaleReading
from gateway.rules.fever import FeverMonitor
from gateway.rules.levels import seconds_ms
from gateway.rules.prone import PostureSample, ProneRule
from gateway.rules.sensor_lost import SensorLostMonitor
from nurserywatch.contract import (
    AirReading,
    Alert,
    AlertState,
    BodyTempReading,
    BreathingReading,
    DeviceStatus,
    EdgeStatus,
    PostureReading,
    Reading,
    SessionCommand,
    SessionState,
    Stream,
)
from nurserywatch.kit import STREAMS_BY_KIND, Device, DeviceKind, Kit

#: Bound to a child, their silence during a nap is critical.
_MONITORING_KINDS = frozenset({DeviceKind.NAP_MAT, DeviceKind.POSTURE_CLIP})
_AIR_KINDS = frozenset(k for k, streams in STREAMS_BY_KIND.items() if Stream.AIR in streams)


@dataclass
class Outcome:
    """What one input changed: alert transitions (to store and publish) and session changes."""

    transitions: list[Transition] = field(default_factory=list)
    sessions: list[SessionChange] = field(default_factory=list)

    def __iadd__(self, other: Outcome) -> Outcome:
        self.transitions += other.transitions
        self.sessions += other.sessions
        return self


#: How far back the monitors are fed stored readings on start: the longest default run a rule waits
#: for (a breathing rate out of range 60 s, then 30 s to clear) with a margin. A rule configured
#: longer than this starts its run again after a restart.
WARM_UP_S = 120.0
#: (device, stream, window_ms) → the device's readings of the stream in that window, oldest first,
#: with the gateway time each was received.
RecentReadings = Callable[[str, Stream, int], Sequence[tuple[Reading, int]]]


@dataclass
class _StreamClock:
    newest_ts: int
    received: int
    evaluated: int


class _DeviceRules:
    """The monitors of one device, with its effective thresholds."""

    def __init__(self, device: Device, cfg: RuleSet, created_ts: int) -> None:
        self.device = device
        self.cfg = cfg
        bound = device.child is not None
        self.mat = MatMonitor(device.id, cfg, bound=bound) if device.kind is DeviceKind.NAP_MAT else None
        self.prone = ProneRule(cfg.prone) if device.kind is DeviceKind.POSTURE_CLIP else None
        self.fever = FeverMonitor(device.id, cfg) if device.kind is DeviceKind.THERMOMETER else None
        self.air = AirMonitor(device.id, cfg) if device.kind in _AIR_KINDS else None
        self.battery = BatteryMonitor(device.id, cfg)
        self.lost = SensorLostMonitor(
            device.id,
            device.agent,
            cfg,
            monitoring=bound and device.kind in _MONITORING_KINDS,
            mat=device.kind is DeviceKind.NAP_MAT,
            created_ts=created_ts,
        )
        f = cfg.freshness
        #: The stream the device's rules judge, and how far ticks may extrapolate past its newest reading.
        self.stream, self.hold_ms = {
            DeviceKind.NAP_MAT: (Stream.BREATHING, seconds_ms(f.breathing_s)),
            DeviceKind.POSTURE_CLIP: (Stream.POSTURE, seconds_ms(f.posture_s)),
            DeviceKind.THERMOMETER: (Stream.BODY_TEMP, seconds_ms(f.body_temp_s)),
        }.get(device.kind, (Stream.AIR, seconds_ms(f.air_s)))

    def feed(self, reading: Reading) -> list[RuleEvent]:
        if isinstance(reading, BreathingReading) and self.mat is not None:
            return self.mat.feed(reading)
        if isinstance(reading, PostureReading) and self.prone is not None:
            return self.prone.feed(PostureSample(self.device.id, reading.position, reading.ts))
        if isinstance(reading, BodyTempReading) and self.fever is not None:
            return self.fever.feed(reading)
        if isinstance(reading, AirReading) and self.air is not None:
            return self.air.feed(reading)
        return []  # waveform: kept for review, judged by nothing

    def tick(self, ts: int) -> list[RuleEvent]:
        if self.mat is not None:
            return self.mat.tick(ts)
        if self.prone is not None:
            return self.prone.tick(self.device.id, ts)
        if self.fever is not None:
            return self.fever.tick(ts)
        if self.air is not None:
            return self.air.tick(ts)
        return []

    def restore(self, alert: Alert) -> None:
        for monitor in (self.mat, self.fever, self.air, self.battery):
            if monitor is not None:
                monitor.restore(alert.rule, alert.severity, alert.started_ts)
        self.lost.restore(alert.rule, alert.severity, alert.started_ts, alert.message_en)  # its reason too

    def set_session(self, state: SessionState | None) -> None:
        if self.mat is not None:
            self.mat.set_session(state is not None)
        self.lost.set_session(None if state is None else state.started_ts)


class RulesEngine:
    def __init__(
        self,
        kit: Kit,
        rules: RulesConfig,
        now_ms: int,
        *,
        alerts: Iterable[Alert] = (),
        sessions: Iterable[SessionState] = (),
        schedule_windows: Mapping[str, str] | None = None,
        recent: RecentReadings | None = None,
    ) -> None:
        """``recent(device, stream, window_ms)``: the stored readings to warm the monitors up with
        (``_warm_up``); the gateway's Store.recent_readings."""
        self.kit = kit
        self.rules = rules
        self.book = AlertBook(alerts)
        self.sessions = NapSessions(kit, sessions, schedule_windows)
        self._subjects = {d.id: Subject.of_device(kit, d.id) for d in kit.devices}
        self._devices: dict[str, _DeviceRules] = {}
        for d in kit.devices:
            child = kit.child(d.child) if d.child else None
            self._devices[d.id] = _DeviceRules(d, rules.resolve(d.room, child.age_band if child else None), now_ms)
        self._by_room: dict[str, list[_DeviceRules]] = {r.id: [] for r in kit.rooms}
        for dr in self._devices.values():
            self._by_room[dr.device.room].append(dr)
        self._by_agent: dict[str, list[_DeviceRules]] = {a.id: [] for a in kit.agents}
        for dr in self._devices.values():
            self._by_agent[dr.device.agent].append(dr)
        self._clocks: dict[tuple[str, Stream], _StreamClock] = {}
        if recent is not None:
            self._warm_up(recent)
        for alert in self.book.open_alerts():
            if alert.state is AlertState.ACTIVE and alert.device in self._devices:
                self._devices[alert.device].restore(alert)
        for room in self._by_room:
            self._session_to_monitors(room)

    def _warm_up(self, recent: RecentReadings) -> None:
        """Each device's monitors fed again the readings of its last ``WARM_UP_S`` (their events
        dropped: what they raised is in the alert book), so that a run under way — a child prone
        for 20 of 30 s, a low rate for 40 of 60 s — goes on across a restart or a takeover instead
        of starting again from the next reading."""
        for dr in self._devices.values():
            readings = recent(dr.device.id, dr.stream, seconds_ms(WARM_UP_S))
            for reading, _received in readings:
                with contextlib.suppress(StaleReading):
                    dr.feed(reading)
            if readings:
                newest, received = readings[-1]
                self._clocks[(dr.device.id, dr.stream)] = _StreamClock(newest.ts, received, newest.ts)

    def config_for(self, device: str) -> RuleSet:
        """The effective thresholds of a device (its room and its child's age band)."""
        return self._devices[device].cfg

    # ------------------------------------------------------------ inputs

    def reading(self, device: str, stream: Stream, reading: Reading, now: int) -> Outcome:
        """A validated, non-duplicate reading of a kit device. Raises StaleReading (judged nothing)
        when it is older than the newest reading of the same device and stream."""
        dr = self._devices[device]
        key = (device, stream)
        clock = self._clocks.get(key)
        if clock is not None and reading.ts < clock.newest_ts:
            raise StaleReading(device, reading.ts, clock.newest_ts)
        if clock is None:
            self._clocks[key] = _StreamClock(reading.ts, now, reading.ts)
        else:
            clock.newest_ts, clock.received = reading.ts, now
            clock.evaluated = max(clock.evaluated, reading.ts)
        present = reading.present if isinstance(reading, BreathingReading) else None
        dr.lost.heard(now, present)
        return self._apply(dr.feed(reading), now)

    def device_status(self, device: str, status: DeviceStatus, now: int) -> Outcome:
        dr = self._devices[device]
        dr.lost.device_status(status.online, now)
        return self._apply(dr.battery.feed_status(status) + dr.lost.tick(now), now)

    def edge_status(self, agent: str, status: EdgeStatus, now: int) -> Outcome:
        events: list[RuleEvent] = []
        for dr in self._by_agent.get(agent, []):
            dr.lost.edge_status(status.online, now)
            events += dr.lost.tick(now)
        return self._apply(events, now)

    def acknowledge(self, alert_id: str, by: str, now: int) -> Outcome:
        """Raises UnknownAlertError for an id that is not open."""
        return Outcome(self.book.acknowledge(alert_id, by, now))

    def session_command(self, cmd: SessionCommand, now: int) -> Outcome:
        """Raises UnknownRoomError for a room that is not in the kit."""
        return self._session_changes(self.sessions.command(cmd, now), now)

    def tick(self, now: int) -> Outcome:
        """Timer: schedules, every time-based condition, re-notification and escalation."""
        out = self._session_changes(self.sessions.tick(now), now)
        events: list[RuleEvent] = []
        for dr in self._devices.values():
            ts = self._device_time(dr, now)
            if ts is not None:
                events += dr.tick(ts)
            events += dr.lost.tick(now)
        out += self._apply(events, now)
        out.transitions += self.book.renotify(now, self.rules.notify)
        return out

    def rebind(self, device: str, child: str | None, now: int) -> None:
        """A runtime assignment (gateway/engine/assignments.py): ``device`` now watches ``child`` (None: nobody).
        Its monitors start afresh with the new child's thresholds; alerts still open on the device
        are restored into them (the caller refuses a change while one is active)."""
        old = self._devices[device]
        d = old.device.model_copy(update={"child": child})
        kid = self.kit.child(child) if child else None
        dr = _DeviceRules(d, self.rules.resolve(d.room, kid.age_band if kid else None), now)
        for alert in self.book.open_alerts():
            if alert.state is AlertState.ACTIVE and alert.device == device:
                dr.restore(alert)
        self._devices[device] = dr
        for group in (self._by_room[d.room], self._by_agent[d.agent]):
            group[group.index(old)] = dr
        self._subjects[device] = Subject(device=d.id, room=d.room, child=child)
        self._session_to_monitors(d.room)

    # ------------------------------------------------------------ internals

    def _device_time(self, dr: _DeviceRules, now: int) -> int | None:
        """The device's time now, extrapolated from its newest reading; None once that is older
        than the stream's freshness (a silent device's conditions freeze)."""
        clock = self._clocks.get((dr.device.id, dr.stream))
        if clock is None:
            return None
        age = now - clock.received
        if age > dr.hold_ms:
            return None
        clock.evaluated = max(clock.evaluated, clock.newest_ts + max(age, 0))
        return clock.evaluated

    def _session_changes(self, changes: list[SessionChange], now: int) -> Outcome:
        events: list[RuleEvent] = []
        for change in changes:
            self._session_to_monitors(change.room)
            for dr in self._by_room.get(change.room, []):
                ts = self._device_time(dr, now)
                if ts is not None:
                    events += dr.tick(ts)
                events += dr.lost.tick(now)
        out = self._apply(events, now)
        out.sessions = changes
        return out

    def _session_to_monitors(self, room: str) -> None:
        state = self.sessions.active(room)
        for dr in self._by_room.get(room, []):
            dr.set_session(state)

    def _apply(self, events: list[RuleEvent], now: int) -> Outcome:
        transitions: list[Transition] = []
        for ev in events:
            transitions += self.book.apply(ev, self._subjects[ev.device], now)
        return Outcome(transitions)

    def restored_sessions(self, now: int) -> list[SessionChange]:
        """Active sessions found in the store at start (for observers that keep per-session state)."""
        return self.sessions.restored_changes(now)
