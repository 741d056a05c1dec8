"""Replay scripted device input through the RulesEngine at full speed on a ManualClock.

A scenario is a list of events (readings generated at a period, status, edge status, session
commands, acknowledgements) with times in seconds from T0. ``replay`` runs the clock from 0 to
``until_s``, ticking the engine every ``tick_ms`` like the gateway's timer, delivers each event at
its time (events first, then the tick), and returns every transition with the clock time (seconds)
at which the engine produced it.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.alert_changes import Change, Transition
from gateway.config import RulesConfig
from gateway.engine.alerts import Subject
from gateway.engine.rules_engine import RulesEngine
from gateway.engine.sessions import SessionChange
from nurserywatch.contract import (
    Alert,
    DeviceStatus,
    EdgeStatus,
    SessionAction,
    SessionCommand,
    Severity,
    Stream,
    parse_reading,
)
from nurserywatch.kit import Kit
from tests.support.clock import T0
from tests.support.kits import make_kit

#: The rules tests' site, as make_kit's options: a mat, a clip and a thermometer on c0 (age 0), a mat on
#: c1 (1-2) in hiyoko, a mat on c3 (3+) in kirin on the second agent, and a BLE air sensor.
KIT_OPTIONS: dict[str, Any] = {
    "site": "rules",
    "rooms": {"hiyoko": "ひよこ組", "kirin": "きりん組"},
    "agents": ("pi-1", "pi-2"),
    "children": {"c0": "0", "c1": "1-2", "c3": {"age_band": "3+", "room": "kirin"}},
    "devices": {
        "mat-0": {"kind": "nap_mat", "child": "c0"},
        "clip-0": "c0",
        "thermo-0": {"kind": "thermometer", "child": "c0"},
        "mat-1": {"kind": "nap_mat", "child": "c1"},
        "mat-3": {"kind": "nap_mat", "room": "kirin", "agent": "pi-2", "child": "c3"},
        "air-1": {"kind": "air_ble", "agent": "pi-2"},
    },
}
KIT = make_kit(**KIT_OPTIONS)


def ms(seconds: float) -> int:
    return round(seconds * 1000)


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """Something that happens at ``at_s``; ``order`` breaks ties (lower first)."""

    at_s: float

    def expand(self) -> Iterable[tuple[float, Event]]:
        yield self.at_s, self


@dataclass(frozen=True)
class Reading(Event):
    device: str
    stream: Stream
    fields: dict[str, Any]
    #: Edge clock minus gateway clock (the reading's ts is stamped by the edge).
    skew_s: float = 0.0


@dataclass(frozen=True)
class Periodic(Event):
    """Readings of one device every ``period_s`` from ``at_s`` up to (excluding) ``end_s``;
    ``fields(t_s)`` gives the payload fields at edge time t_s."""

    end_s: float
    device: str
    stream: Stream
    fields: Callable[[float], dict[str, Any]]
    period_s: float = 1.0
    skew_s: float = 0.0

    def expand(self) -> Iterable[tuple[float, Event]]:
        n = 0
        while (t := self.at_s + n * self.period_s) < self.end_s - 1e-9:
            yield t, Reading(t, self.device, self.stream, self.fields(t + self.skew_s), self.skew_s)
            n += 1


@dataclass(frozen=True)
class Status(Event):
    device: str
    online: bool = True
    battery_pct: float | None = None


@dataclass(frozen=True)
class Edge(Event):
    agent: str
    online: bool


@dataclass(frozen=True)
class Session(Event):
    room: str
    action: SessionAction = SessionAction.START
    by: str = "hoikushi-1"


@dataclass(frozen=True)
class Ack(Event):
    rule: str
    by: str = "hoikushi-1"


# -- generators for the usual streams


def breathing(
    device: str,
    start_s: float,
    end_s: float,
    *,
    rate: float | Callable[[float], float | None] | None = 30.0,
    present: bool | None | Callable[[float], bool | None] = True,
    pauses: tuple[tuple[float, float], ...] = (),
    breath_every_s: float | None = None,
    breath_phase_s: float = 0.0,
    skew_s: float = 0.0,
    motion: float = 0.05,
    quality: float = 0.9,
) -> Periodic:
    """A mat reading once a second (edge time t). Breaths every ``breath_every_s`` (default 60/rate,
    or 2 s) from ``breath_phase_s``, none during ``pauses`` [start, end) and one at each pause's end
    (breathing resumes); rate null during a pause and on an empty mat; ``last_breath_ts`` is the
    newest breath ≤ t."""
    const_rate = rate if isinstance(rate, int | float) else None
    every = breath_every_s or (60.0 / const_rate if const_rate else 2.0)
    breaths = [breath_phase_s + k * every for k in range(int(end_s / every) + 2)]
    breaths = [b for b in breaths if not any(ps <= b < pe for ps, pe in pauses)]
    breaths = sorted({*breaths, *(pe for _ps, pe in pauses)})

    def fields(t: float) -> dict[str, Any]:
        here = present(t) if callable(present) else present
        in_pause = any(ps <= t < pe for ps, pe in pauses)
        i = bisect.bisect_right(breaths, t + 1e-9)
        lb = breaths[i - 1] if i > 0 and here else None
        r = rate(t) if callable(rate) else rate
        return {
            "present": here,
            "rate_bpm": None if in_pause or not here else r,
            "last_breath_ts": None if lb is None else T0 + ms(lb),
            "motion": motion,
            "quality": quality,
        }

    return Periodic(start_s, end_s, device, Stream.BREATHING, fields, skew_s=skew_s)


def posture(device: str, start_s: float, end_s: float, position: str, period_s: float = 1.0) -> Periodic:
    return Periodic(start_s, end_s, device, Stream.POSTURE, lambda t: {"position": position}, period_s)


def air(
    device: str, start_s: float, end_s: float, period_s: float = 10.0, **values: Callable[[float], float]
) -> Periodic:
    return Periodic(start_s, end_s, device, Stream.AIR, lambda t: {k: f(t) for k, f in values.items()}, period_s)


def const(v: float) -> Callable[[float], float]:
    return lambda t: v


def steps(*points: tuple[float, float]) -> Callable[[float], float]:
    """A step function: the value of the last point at or before t."""

    def f(t: float) -> float:
        value = points[0][1]
        for at, v in points:
            if t >= at:
                value = v
        return value

    return f


# ---------------------------------------------------------------- replay


#: (gateway second, change, rule, severity, subject key)
Row = tuple[float, Change, str, Severity, str]


@dataclass(frozen=True)
class Seen:
    """A transition and the gateway-clock second at which the engine produced it."""

    at_s: float
    transition: Transition

    @property
    def row(self) -> Row:
        a = self.transition.alert
        return (self.at_s, self.transition.change, a.rule, a.severity, Subject.of_alert(a).key_for(a.rule))


@dataclass
class Replay:
    engine: RulesEngine
    seen: list[Seen] = field(default_factory=list)
    sessions: list[tuple[float, SessionChange]] = field(default_factory=list)
    rejected: list[tuple[float, str]] = field(default_factory=list)

    def rows(self, rule: str | None = None, *, renotify: bool = True) -> list[Row]:
        return [
            s.row
            for s in self.seen
            if (rule is None or s.transition.alert.rule == rule)
            and (renotify or s.transition.change is not Change.RENOTIFIED)
        ]

    def open_alerts(self, rule: str | None = None) -> list[Alert]:
        return [a for a in self.engine.book.open_alerts() if rule is None or a.rule == rule]


def replay(
    events: Iterable[Event],
    until_s: float,
    *,
    rules: RulesConfig | None = None,
    kit: Kit | None = None,
    engine: RulesEngine | None = None,
    start_s: float = 0.0,
) -> Replay:
    rules = rules or RulesConfig()
    kit = kit or KIT
    eng = engine or RulesEngine(kit, rules, T0 + ms(start_s))
    out = Replay(eng)
    timeline = sorted(
        ((ms(at), i, ev) for i, (at, ev) in enumerate(itertools.chain.from_iterable(e.expand() for e in events))),
        key=lambda x: (x[0], x[1]),
    )
    seq = itertools.count()
    it: Iterator[tuple[int, int, Event]] = iter(timeline)
    nxt = next(it, None)
    tick = rules.tick_ms
    t = ms(start_s)
    end = ms(until_s)
    while t <= end:
        while nxt is not None and nxt[0] <= t:
            _deliver(out, nxt[2], T0 + nxt[0], nxt[0] / 1000, seq)
            nxt = next(it, None)
        outcome = eng.tick(T0 + t)
        out.seen += [Seen(t / 1000, tr) for tr in outcome.transitions]
        out.sessions += [(t / 1000, c) for c in outcome.sessions]
        t += tick
    return out


def _deliver(out: Replay, ev: Event, now: int, at_s: float, seq: itertools.count[int]) -> None:
    eng = out.engine
    if isinstance(ev, Reading):
        payload = {"ts": now + ms(ev.skew_s), "seq": next(seq) % 65536, **ev.fields}
        reading = parse_reading(ev.stream, _json(payload))
        try:
            outcome = eng.reading(ev.device, ev.stream, reading, now)
        except Exception as exc:  # StaleReading
            out.rejected.append((at_s, type(exc).__name__))
            return
    elif isinstance(ev, Status):
        outcome = eng.device_status(ev.device, DeviceStatus(ts=now, online=ev.online, battery_pct=ev.battery_pct), now)
    elif isinstance(ev, Edge):
        status = EdgeStatus(ts=now, online=True, version="1") if ev.online else EdgeStatus(online=False)
        outcome = eng.edge_status(ev.agent, status, now)
    elif isinstance(ev, Session):
        outcome = eng.session_command(SessionCommand(room=ev.room, action=ev.action, by=ev.by), now)
    elif isinstance(ev, Ack):
        [alert] = [a for a in eng.book.open_alerts() if a.rule == ev.rule]
        outcome = eng.acknowledge(alert.id, ev.by, now)
    else:
        raise TypeError(ev)
    out.seen += [Seen(at_s, tr) for tr in outcome.transitions]
    out.sessions += [(at_s, c) for c in outcome.sessions]


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()
