"""Every rule of docs/gateway.md through the RulesEngine, replayed at full speed on the injected clock.

One row per rule (or severity path) gives five scripts: ``fire`` (the condition starts and holds:
the alert is raised at ``fires_at``), ``below`` (just below the threshold: nothing), ``flap``
(values wandering around the thresholds: exactly ``flap_rows``), ``resolve`` (fires, then clears:
resolved at ``resolved_at``). From ``fire`` the generic tests also check re-notification,
escalation and acknowledgement for every rule. Times are seconds of the gateway clock from T0;
readings are stamped with the same clock unless a script skews them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from gateway.alert_changes import Change
from gateway.config import NotifyConfig, RulesConfig
from gateway.rules.levels import band
from nurserywatch.contract import AlertState, SessionAction, Severity, Stream
from tests.support.gateway_rules_harness import (
    T0,
    Ack,
    Event,
    Periodic,
    Row,
    Session,
    Status,
    air,
    breathing,
    const,
    ms,
    posture,
    replay,
    steps,
)

C, W, INFO = Severity.CRITICAL, Severity.WARNING, Severity.INFO
RAISED, UPDATED, RESOLVED = Change.RAISED, Change.UPDATED, Change.RESOLVED
RENOTIFIED, ESCALATED, ACKED = Change.RENOTIFIED, Change.ESCALATED, Change.ACKNOWLEDGED

#: The table's default: no re-notification, so the rows show the rule alone.
QUIET = NotifyConfig(critical_renotify_s=0, warning_renotify_s=0, info_renotify_s=0)
#: Every severity re-notified every 30 s, escalated at the 3rd re-notification.
LOUD = NotifyConfig(critical_renotify_s=30, warning_renotify_s=30, info_renotify_s=30, escalate_after=3)
SLOW_TICK = 1000  # air rules run for up to 40 minutes of message time: tick once a second


def alternating(a: float, b: float, period_s: float = 1.0) -> Callable[[float], float]:
    return lambda t: a if int(round(t / period_s)) % 2 == 0 else b


def temp(at_s: float, celsius: float) -> Event:
    return Periodic(at_s, at_s + 0.5, "thermo-0", Stream.BODY_TEMP, lambda t: {"celsius": celsius})


def temps(*points: tuple[float, float]) -> list[Event]:
    """Thermometer readings: (at_s, celsius)."""
    return [temp(at, c) for at, c in points]


def batteries(*points: tuple[float, float]) -> list[Event]:
    return [Status(at, "clip-0", True, pct) for at, pct in points]


def session_background(until: float, *, skip: tuple[str, ...] = ()) -> list[Event]:
    """A nap session in hiyoko from t=0 with its other monitored devices reporting normally."""
    ev: list[Event] = [Session(0.0, "hiyoko")]
    if "mat-0" not in skip:
        ev.append(breathing("mat-0", 0, until))
    if "mat-1" not in skip:
        ev.append(breathing("mat-1", 0, until))
    if "clip-0" not in skip:
        ev.append(posture("clip-0", 0, until, "supine"))
    return ev


@dataclass(frozen=True)
class RuleCase:
    name: str
    rule: str
    subject: str
    severity: Severity
    #: The condition starts and holds for at least 200 s past fires_at.
    fire: list[Event]
    fires_at: float
    below: list[Event]
    below_until: float
    flap: list[Event]
    flap_until: float
    flap_rows: list[tuple[float, Change, Severity]]
    resolve: list[Event]
    resolved_at: float
    #: For a higher level, "just below" still raises the lower one.
    below_rows: list[tuple[float, Change, Severity]] = field(default_factory=list)
    #: When resolving passes through another severity (a mean falling slowly): the whole list.
    resolve_rows: list[tuple[float, Change, Severity]] | None = None
    tick_ms: int = 200
    extra_rules: dict[str, object] = field(default_factory=dict)

    def rules(self, notify: NotifyConfig = QUIET) -> RulesConfig:
        return RulesConfig.model_validate({"tick_ms": self.tick_ms, "notify": notify.model_dump(), **self.extra_rules})


CASES: list[RuleCase] = [
    RuleCase(
        "apnea", "apnea", "c0", C,
        # breaths every 2 s; the last one at 10 s, then none: 20.0 s later
        fire=[breathing("mat-0", 0, 400, pauses=((10.5, 400),))], fires_at=30.0,
        # pauses of 19.5 s, again and again
        below=[breathing("mat-0", 0, 200, pauses=((10.5, 29.5), (40.5, 59.5), (70.5, 89.5), (100.5, 120)))],
        below_until=200,
        # one gasp between two pauses keeps the one alert; 3 breaths + 5 s resolve it
        flap=[breathing("mat-0", 0, 120, pauses=((10.5, 35), (35.5, 62)))], flap_until=120,
        flap_rows=[(30.0, RAISED, C), (71.0, RESOLVED, C)],
        resolve=[breathing("mat-0", 0, 100, pauses=((10.5, 40),))], resolved_at=49.0,
    ),
    RuleCase(
        "breathing low", "breathing_rate_low", "c0", C,
        fire=[breathing("mat-0", 0, 300, rate=8, breath_every_s=2)], fires_at=15.0,
        # 9/min for 14 s, then 10 for 1 s, again and again: every run is broken before 15 s
        below=[breathing("mat-0", 0, 200, rate=lambda t: 10 if t % 15 == 14 else 9, breath_every_s=2)],
        below_until=200,
        # 9 ↔ 10.5 never lasts 15 s; 8 fires (the run began with the 9 at 59 s); 9.5 ↔ 11.5 stays in
        # the band (clears at ≥ 12); 12.5 clears
        flap=[breathing("mat-0", 0, 150, breath_every_s=2,
                        rate=lambda t: (9 if int(t) % 2 else 10.5) if t < 60 else 8 if t < 80
                        else (9.5 if int(t) % 2 else 11.5) if t < 120 else 12.5)],
        flap_until=150, flap_rows=[(74.0, RAISED, C), (130.0, RESOLVED, C)],
        resolve=[breathing("mat-0", 0, 100, rate=steps((0, 8), (30, 13)), breath_every_s=2)], resolved_at=40.0,
    ),
    RuleCase(
        "breathing high, 0 y (> 60/min)", "breathing_rate_high", "c0", W,
        fire=[breathing("mat-0", 0, 400, rate=65)], fires_at=60.0,
        below=[breathing("mat-0", 0, 200, rate=60)], below_until=200,
        # 62 ↔ 58 never lasts; 65 fires (run from the 62 at 119 s); 62 ↔ 57 stays (clears at ≤ 55); 50 clears after 30 s
        flap=[breathing("mat-0", 0, 320, breath_every_s=1,
                        rate=lambda t: (62 if int(t) % 2 else 58) if t < 120 else 65 if t < 200
                        else (62 if int(t) % 2 else 57) if t < 260 else 50)],
        flap_until=320, flap_rows=[(179.0, RAISED, W), (290.0, RESOLVED, W)],
        resolve=[breathing("mat-0", 0, 200, rate=steps((0, 65), (80, 50)), breath_every_s=1)], resolved_at=110.0,
    ),
    RuleCase(
        "breathing high, 1-2 y (> 50/min)", "breathing_rate_high", "c1", W,
        fire=[breathing("mat-1", 0, 400, rate=55)], fires_at=60.0,
        below=[breathing("mat-1", 0, 200, rate=50)], below_until=200,
        flap=[breathing("mat-1", 0, 200, rate=lambda t: 52 if int(t) % 2 else 48, breath_every_s=1)],
        flap_until=200, flap_rows=[],
        resolve=[breathing("mat-1", 0, 200, rate=steps((0, 55), (80, 44)), breath_every_s=1)], resolved_at=110.0,
    ),
    RuleCase(
        "breathing high, 3+ y (> 40/min)", "breathing_rate_high", "c3", W,
        fire=[breathing("mat-3", 0, 400, rate=45)], fires_at=60.0,
        below=[breathing("mat-3", 0, 200, rate=40)], below_until=200,
        flap=[breathing("mat-3", 0, 200, rate=lambda t: 42 if int(t) % 2 else 38, breath_every_s=1)],
        flap_until=200, flap_rows=[],
        resolve=[breathing("mat-3", 0, 200, rate=steps((0, 45), (80, 30)), breath_every_s=1)], resolved_at=110.0,
    ),
    RuleCase(
        "prone", "prone", "c0", C,
        fire=[posture("clip-0", 0, 300, "prone")], fires_at=30.0,
        # prone 29 s, on the back 1 s, again and again
        below=[Periodic(0, 200, "clip-0", Stream.POSTURE,
                        lambda t: {"position": "supine" if t % 30 == 29 else "prone"})],
        below_until=200,
        # "unknown" (the clip cannot tell) neither resolves nor restarts the run
        flap=[Periodic(0, 80, "clip-0", Stream.POSTURE,
                       lambda t: {"position": "supine" if t >= 60 else "unknown" if 40 <= t and int(t) % 2
                                  else "prone"})],
        flap_until=80, flap_rows=[(30.0, RAISED, C), (60.0, RESOLVED, C)],
        resolve=[posture("clip-0", 0, 35, "prone"), posture("clip-0", 35, 60, "left")], resolved_at=35.0,
    ),
    RuleCase(
        "fever warning", "fever", "c0", W,
        fire=temps(*((t, 37.6) for t in range(0, 400, 60))), fires_at=0.0,
        below=temps(*((t, 37.4) for t in range(0, 400, 60))), below_until=400,
        # one alert whose severity follows the temperature, with 0.2 °C hysteresis on each level
        flap=temps((0, 37.4), (60, 37.5), (120, 37.4), (180, 37.3), (240, 37.6), (300, 38.0), (360, 37.9),
                   (420, 37.8), (480, 37.7), (540, 37.2)),
        flap_until=600, flap_rows=[(60, RAISED, W), (300, UPDATED, C), (480, UPDATED, W), (540, RESOLVED, W)],
        resolve=temps((0, 37.8), (60, 37.2)), resolved_at=60.0,
    ),
    RuleCase(
        "fever critical", "fever", "c0", C,
        fire=temps(*((t, 38.2) for t in range(0, 400, 60))), fires_at=0.0,
        below=temps(*((t, 37.9) for t in range(0, 400, 60))), below_until=400, below_rows=[(0, RAISED, W)],
        flap=temps((0, 38.0), (60, 37.9), (120, 37.8), (180, 38.1), (240, 37.7)), flap_until=300,
        flap_rows=[(0, RAISED, C), (240, UPDATED, W)],
        resolve=temps((0, 38.5), (60, 36.8)), resolved_at=60.0,
    ),
    RuleCase(
        "sensor lost (a clip goes silent during a nap)", "sensor_lost", "clip-0", C,
        fire=[*session_background(400, skip=("clip-0",)), posture("clip-0", 0, 5, "supine")], fires_at=14.0,
        # a reading every 9.5 s is slow but not lost
        below=[*session_background(200, skip=("clip-0",)), posture("clip-0", 0, 200, "supine", period_s=9.5)],
        below_until=200,
        # stuttering back (2 s on, 5 s off) is not "back": one alert, resolved 5 s into steady data
        flap=[*session_background(120, skip=("clip-0",)), posture("clip-0", 0, 5, "supine"),
              *(posture("clip-0", s, s + 2, "supine") for s in range(30, 70, 7)),
              posture("clip-0", 80, 120, "supine")],
        flap_until=120, flap_rows=[(14.0, RAISED, C), (85.0, RESOLVED, C)],
        resolve=[*session_background(100, skip=("clip-0",)), posture("clip-0", 0, 5, "supine"),
                 posture("clip-0", 30, 100, "supine")],
        resolved_at=35.0,
    ),
    RuleCase(
        "child off the mat during a nap", "child_off_mat", "c0", W,
        fire=[*session_background(400, skip=("mat-0",)), breathing("mat-0", 0, 400, present=lambda t: t < 20)],
        fires_at=50.0,
        # off for 29 s, back for 2 s, again and again
        below=[*session_background(200, skip=("mat-0",)),
               breathing("mat-0", 0, 200, present=lambda t: t < 10 or (t - 10) % 31 >= 29)],
        below_until=200,
        # back for 2 s in the middle of a long absence does not resolve it (5 s needed)
        flap=[*session_background(150, skip=("mat-0",)),
              breathing("mat-0", 0, 150, present=lambda t: t < 20 or 60 <= t < 62 or t >= 100)],
        flap_until=150, flap_rows=[(50.0, RAISED, W), (105.0, RESOLVED, W)],
        resolve=[*session_background(100, skip=("mat-0",)),
                 breathing("mat-0", 0, 100, present=lambda t: t < 20 or t >= 60)],
        resolved_at=65.0,
    ),
    RuleCase(
        "battery low", "battery_low", "clip-0", W,
        fire=batteries(*((t, 14) for t in range(0, 400, 60))), fires_at=0.0,
        below=batteries(*((t, 15) for t in range(0, 400, 60))), below_until=400,
        # 15–19 % is the band: no flap; 20 % (a new battery) resolves
        flap=batteries((0, 16), (60, 14), (120, 15), (180, 16), (240, 19), (300, 14), (360, 20)), flap_until=400,
        flap_rows=[(60, RAISED, W), (360, RESOLVED, W)],
        resolve=batteries((0, 12), (60, 100)), resolved_at=60.0,
    ),
    RuleCase(
        "CO2 warning (≥ 1000 ppm for 5 min)", "co2", "air-1", W,
        fire=[air("air-1", 0, 800, co2_ppm=const(1100))], fires_at=300.0,
        below=[air("air-1", 0, 1200, co2_ppm=const(999))], below_until=1200,
        # 990 ↔ 1010 never holds 5 min; 1100 fires; 880 ↔ 950 never holds 60 s below 900; 880, 850 … resolve
        flap=[air("air-1", 0, 2000, co2_ppm=lambda t: (990 if int(t / 10) % 2 else 1010) if t < 600
                  else 1100 if t < 1000 else (880 if int(t / 10) % 2 else 950) if t < 1500 else 850)],
        flap_until=2000, flap_rows=[(900.0, RAISED, W), (1550.0, RESOLVED, W)],
        resolve=[air("air-1", 0, 800, co2_ppm=steps((0, 1100), (400, 800)))], resolved_at=460.0,
        tick_ms=SLOW_TICK,
    ),
    RuleCase(
        "CO2 critical (≥ 1500 ppm)", "co2", "air-1", C,
        fire=[air("air-1", 0, 800, co2_ppm=const(1600))], fires_at=60.0,
        below=[air("air-1", 0, 800, co2_ppm=const(1499))], below_until=800, below_rows=[(300, RAISED, W)],
        # one alert: warning, critical, eased back to warning (below 1400 for 60 s), resolved
        flap=[air("air-1", 0, 1000, co2_ppm=steps((0, 1100), (400, 1600), (500, 1450), (600, 1300), (700, 800)))],
        flap_until=1000, flap_rows=[(300, RAISED, W), (460, UPDATED, C), (660, UPDATED, W), (760, RESOLVED, W)],
        resolve=[air("air-1", 0, 800, co2_ppm=steps((0, 1600), (100, 850)))], resolved_at=160.0,
        tick_ms=SLOW_TICK,
    ),
    RuleCase(
        "room temperature high (> 28 °C for 10 min)", "temperature", "air-1", W,
        fire=[air("air-1", 0, 1000, temp_c=const(29))], fires_at=600.0,
        below=[air("air-1", 0, 1000, temp_c=const(28))], below_until=1000,
        flap=[air("air-1", 0, 2400, temp_c=lambda t: (27.9 if int(t / 10) % 2 else 28.1) if t < 700
                  else 29 if t < 1400 else 27.8 if t < 1800 else 25)],
        flap_until=2400, flap_rows=[(1300.0, RAISED, W), (2100.0, RESOLVED, W)],
        resolve=[air("air-1", 0, 1200, temp_c=steps((0, 29), (700, 25)))], resolved_at=1000.0,
        tick_ms=SLOW_TICK,
    ),
    RuleCase(
        "room temperature low (< 18 °C for 10 min)", "temperature", "air-1", W,
        fire=[air("air-1", 0, 1000, temp_c=const(17))], fires_at=600.0,
        below=[air("air-1", 0, 1000, temp_c=const(18))], below_until=1000,
        flap=[air("air-1", 0, 1000, temp_c=alternating(17.9, 18.1, 10))], flap_until=1000, flap_rows=[],
        resolve=[air("air-1", 0, 1200, temp_c=steps((0, 17), (700, 20)))], resolved_at=1000.0,
        tick_ms=SLOW_TICK,
    ),
    RuleCase(
        "humidity (outside 40–70 % for 30 min)", "humidity", "air-1", INFO,
        fire=[air("air-1", 0, 2200, rh_pct=const(75))], fires_at=1800.0,
        below=[air("air-1", 0, 2200, rh_pct=const(70))], below_until=2200,
        # 69 ↔ 71 never holds 30 min; 35 fires; 41 stays in the band (resolves at ≥ 42); 50 resolves
        flap=[air("air-1", 0, 5000, rh_pct=lambda t: (69 if int(t / 10) % 2 else 71) if t < 2000
                  else 35 if t < 3900 else 41 if t < 4200 else 50)],
        flap_until=5000, flap_rows=[(3800.0, RAISED, INFO), (4800.0, RESOLVED, INFO)],
        resolve=[air("air-1", 0, 3000, rh_pct=steps((0, 75), (1900, 55)))], resolved_at=2500.0,
        tick_ms=SLOW_TICK,
    ),
    RuleCase(
        "PM2.5 1-hour mean > 35", "pm25", "air-1", W,
        # the mean is judged once the readings span 15 min
        fire=[air("air-1", 0, 1300, pm25_ugm3=const(40))], fires_at=900.0,
        below=[air("air-1", 0, 4000, pm25_ugm3=const(35))], below_until=4000,
        # a one-minute spike of 200 in a full hour of 30 moves the mean to ~32.8: nothing
        flap=[air("air-1", 0, 4500, pm25_ugm3=lambda t: 200 if 3700 <= t < 3760 else 30)], flap_until=4500,
        flap_rows=[],
        # 40 for 1000 s, then 0: the hour's mean falls to 30 when 134 readings are in it
        resolve=[air("air-1", 0, 2000, pm25_ugm3=steps((0, 40), (1000, 0)))], resolved_at=1330.0,
        tick_ms=SLOW_TICK,
    ),
    RuleCase(
        "PM2.5 1-hour mean > 70", "pm25", "air-1", C,
        fire=[air("air-1", 0, 1300, pm25_ugm3=const(100))], fires_at=900.0,
        below=[air("air-1", 0, 1300, pm25_ugm3=const(70))], below_until=1300, below_rows=[(900, RAISED, W)],
        # 75 then 68 for hours: the mean sinks below 70 but not to 65 — critical holds, no flap
        flap=[air("air-1", 0, 4500, pm25_ugm3=steps((0, 75), (900, 68)))], flap_until=4500,
        flap_rows=[(900.0, RAISED, C)],
        # 100 for 1000 s, then 0: eases to warning at a mean ≤ 65 (154 readings), resolves at ≤ 30 (334)
        resolve=[air("air-1", 0, 3500, pm25_ugm3=steps((0, 100), (1000, 0)))], resolved_at=3330.0,
        resolve_rows=[(900.0, RAISED, C), (1530.0, UPDATED, W), (3330.0, RESOLVED, W)],
        tick_ms=SLOW_TICK,
    ),
]  # fmt: skip

IDS = [c.name for c in CASES]


def _rows(case: RuleCase, events: list[Event], until: float, notify: NotifyConfig = QUIET) -> list[Row]:
    return replay(events, until, rules=case.rules(notify)).rows()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fires(case: RuleCase) -> None:
    rows = _rows(case, case.fire, case.fires_at + 1)
    assert rows == [(case.fires_at, RAISED, case.rule, case.severity, case.subject)]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_does_not_fire_just_below(case: RuleCase) -> None:
    rows = _rows(case, case.below, case.below_until)
    assert rows == [(t, ch, case.rule, sev, case.subject) for t, ch, sev in case.below_rows]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_does_not_flap(case: RuleCase) -> None:
    rows = _rows(case, case.flap, case.flap_until)
    assert rows == [(t, ch, case.rule, sev, case.subject) for t, ch, sev in case.flap_rows]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_resolves(case: RuleCase) -> None:
    r = replay(case.resolve, case.resolved_at + 1, rules=case.rules())
    expected = case.resolve_rows or [
        (case.fires_at, RAISED, case.severity),
        (case.resolved_at, RESOLVED, case.severity),
    ]
    assert r.rows() == [(t, ch, case.rule, sev, case.subject) for t, ch, sev in expected]
    # resolved but nobody acknowledged it: it stays open for staff to see
    [alert] = r.open_alerts()
    assert (alert.state, alert.acknowledged, alert.resolved_ts) == (
        AlertState.RESOLVED,
        False,
        T0 + ms(case.resolved_at),
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_renotifies_and_escalates(case: RuleCase) -> None:
    r = replay(case.fire, case.fires_at + 100, rules=case.rules(LOUD))
    f = case.fires_at
    assert [(t, ch) for t, ch, *_ in r.rows()] == [(f, RAISED), (f + 30, RENOTIFIED), (f + 60, RENOTIFIED),
                                                  (f + 90, ESCALATED)]  # fmt: skip
    [alert] = r.open_alerts()
    assert (alert.state, alert.notify_count, alert.escalated, alert.escalated_ts, alert.notified_ts) == (
        AlertState.ACTIVE,
        3,
        True,
        T0 + ms(f + 90),
        T0 + ms(f + 90),
    )
    assert alert.updated_ts >= T0 + ms(f + 90)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_default_notification_by_severity(case: RuleCase) -> None:
    # Defaults: critical every 30 s (escalated at the 3rd), warning and info once.
    rows = replay(case.fire, case.fires_at + 65, rules=case.rules(NotifyConfig())).rows()
    expected = [(case.fires_at, RAISED)]
    if case.severity is C:
        expected += [(case.fires_at + 30, RENOTIFIED), (case.fires_at + 60, RENOTIFIED)]
    assert [(t, ch) for t, ch, *_ in rows] == expected


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_acknowledge_stops_renotification_not_the_alert(case: RuleCase) -> None:
    f = case.fires_at
    r = replay([*case.fire, Ack(f + 10, case.rule, "hoikushi-2")], f + 100, rules=case.rules(LOUD))
    assert [(t, ch) for t, ch, *_ in r.rows()] == [(f, RAISED), (f + 10, ACKED)]
    [alert] = r.open_alerts()
    assert (alert.state, alert.acknowledged, alert.acknowledged_by, alert.acknowledged_ts, alert.notify_count) == (
        AlertState.ACTIVE,
        True,
        "hoikushi-2",
        T0 + ms(f + 10),
        0,
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_acknowledged_and_resolved_alert_is_closed(case: RuleCase) -> None:
    f = case.fires_at
    r = replay([*case.resolve, Ack(f + 0.5, case.rule)], case.resolved_at + 1, rules=case.rules(LOUD))
    changes = [ch for _t, ch, *_ in r.rows(renotify=False)]
    assert changes[0] == RAISED and changes[1] == ACKED and changes[-1] == RESOLVED
    assert r.open_alerts() == []  # resolved and acknowledged: closed


# ---------------------------------------------------------------- rule specifics beyond the table


def test_empty_mat_is_not_an_apnea_and_resolves_one() -> None:
    # The child is picked up at 15 s (no breaths, mat empty): no apnea, however long.
    r = replay([breathing("mat-0", 0, 15), breathing("mat-0", 15, 200, present=False)], 200)
    assert r.rows() == []
    # An apnea in progress ends at once when the mat is empty (staff picked the child up).
    r = replay([breathing("mat-0", 0, 40, pauses=((10.5, 40),)), breathing("mat-0", 40, 60, present=False)], 60)
    assert r.rows() == [(30.0, RAISED, "apnea", C, "c0"), (40.0, RESOLVED, "apnea", C, "c0")]


def test_apnea_counts_from_lying_down_not_from_a_breath_before_it() -> None:
    # Empty mat until 50 s (the last breath the edge saw was at 10 s, before the child left), child
    # lies down at 50 s and does not breathe: the pause counts from 50 s, not from 10 s.
    r = replay(
        [
            breathing("mat-0", 0, 15, pauses=((10.5, 15),)),
            Periodic(15, 50, "mat-0", Stream.BREATHING, lambda t: {"present": False, "last_breath_ts": T0 + 10_000}),
            Periodic(50, 100, "mat-0", Stream.BREATHING, lambda t: {"present": True, "last_breath_ts": T0 + 10_000}),
        ],
        100,
        rules=RulesConfig(notify=QUIET),
    )
    assert r.rows() == [(70.0, RAISED, "apnea", C, "c0")]


def test_breathing_rules_ignore_unusable_rates() -> None:
    # A null rate (the edge cannot tell) neither starts nor breaks a low-rate run; low quality and
    # a moving child are not judged when configured so.
    rules = RulesConfig.model_validate(
        {
            "notify": QUIET.model_dump(),
            "breathing_rate_low": {"min_quality": 0.5},
            "breathing_rate_high": {"max_motion": 0.3},
        }
    )
    low_q = breathing("mat-0", 0, 100, rate=5, breath_every_s=2, quality=0.2)
    moving = breathing("mat-1", 0, 100, rate=70, motion=0.8)
    null_in_run = breathing("mat-3", 0, 100, rate=lambda t: None if 5 <= t < 10 else 8, breath_every_s=2)
    rows = replay([low_q, moving, null_in_run], 100, rules=rules).rows()
    assert rows == [(15.0, RAISED, "breathing_rate_low", C, "c3")]


def test_session_stop_resolves_child_off_mat_and_silence() -> None:
    events = [
        *session_background(100, skip=("mat-0", "clip-0")),
        breathing("mat-0", 0, 100, present=lambda t: t < 5),
        posture("clip-0", 0, 2, "supine"),
        Session(60, "hiyoko", SessionAction.STOP),
    ]
    rows = replay(events, 100, rules=RulesConfig(notify=QUIET)).rows()
    assert rows == [
        (11.0, RAISED, "sensor_lost", C, "clip-0"),
        (35.0, RAISED, "child_off_mat", W, "c0"),
        (60.0, RESOLVED, "child_off_mat", W, "c0"),
        (60.0, RESOLVED, "sensor_lost", C, "clip-0"),
    ]


def test_outside_a_session_absence_and_silence_are_not_alerts_except_a_child_on_a_silent_mat() -> None:
    events = [
        breathing("mat-0", 0, 100, present=lambda t: t < 5),  # leaves the mat: no nap, no alert
        posture("clip-0", 0, 2, "supine"),  # a clip switched off after the nap: no alert
        breathing("mat-1", 0, 20),  # a mat with a child on it goes silent: warning
    ]
    rows = replay(events, 100, rules=RulesConfig(notify=QUIET)).rows()
    assert rows == [(29.0, RAISED, "sensor_lost", W, "mat-1")]


def test_threshold_table_bands_match_each_rules_comparison() -> None:
    """RuleSet.thresholds is the one table the air and fever rules build their bands from (and the
    dashboard draws): on a grid of values each band fires and clears exactly as the comparison the
    rule states — CO2 and body temperature at or above, PM2.5 above, room temperature and humidity
    outside [low, high], each clearing back inside its hysteresis."""
    rules = RulesConfig().resolve(None, None)
    expected: dict[str, list[tuple[Callable[[float], bool], Callable[[float], bool]]]] = {
        "co2": [(lambda v: v >= 1000, lambda v: v < 900), (lambda v: v >= 1500, lambda v: v < 1400)],
        "pm25": [(lambda v: v > 35, lambda v: v <= 30), (lambda v: v > 70, lambda v: v <= 65)],
        "temperature": [(lambda v: v < 18 or v > 28, lambda v: 18.5 <= v <= 27.5)],
        "humidity": [(lambda v: v < 40 or v > 70, lambda v: 42 <= v <= 68)],
        "body_temp": [(lambda v: v >= 37.5, lambda v: v < 37.3), (lambda v: v >= 38.0, lambda v: v < 37.8)],
    }
    for metric, bands in expected.items():
        levels = {sev: band([t for t in rules.thresholds(metric) if t.severity is sev])
                  for sev in dict.fromkeys(t.severity for t in rules.thresholds(metric))}  # fmt: skip
        assert len(levels) == len(bands), metric
        for (fire, clear), (want_fire, want_clear) in zip(levels.values(), bands, strict=True):
            for v in [x / 10 for x in range(0, 20000)]:
                assert fire(v) == want_fire(v) and clear(v) == want_clear(v), (metric, v)
