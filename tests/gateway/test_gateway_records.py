"""The nap-check record scheduler, pure, at full speed on an injected clock: a 2-hour nap of a room
with 12 children of mixed ages, checked against an independent oracle computed from the script."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import RulesConfig
from gateway.records.entries import (
    AUTO,
    CheckRecord,
    RecordScheduler,
    RecordsConfig,
    RecordsError,
    SessionStarted,
    SessionStopped,
    load_records_config,
    rules_rate_limits,
)
from nurserywatch.contract import Alert, AlertState, Position, Stream
from nurserywatch.kit import AgeBand
from tests.support.clock import MIN
from tests.support.nap_records import BAND_OF, CHILDREN, KIT, NO_MAT, ROOM, T0, THERMO, alert

INTERVAL_MIN = {"0": 5, "1-2": 10, "3+": 15}


# ---------------------------------------------------------------- the script


@dataclass(frozen=True)
class Obs:
    child: str
    stream: Stream
    ts: int
    value: object  # Position | (rate, present) | celsius


def silent(child: str, stream: Stream, t_min: float) -> bool:
    """Scripted sensor silence (the record must still be written, marked data_missing)."""
    if child == "c05":
        return 40 <= t_min < 70  # everything of c05 silent for 30 min
    if child == "c10" and stream is Stream.BREATHING:
        return 15 <= t_min < 45  # c10's mat silent, its clip still talking
    if child == "c02":
        return t_min >= 100  # c02 silent to the end of the nap
    return False


def position(child: str, t_s: int) -> Position:
    if child == "c03" and 31 * 60 <= t_s < 33 * 60 + 10:
        return Position.PRONE
    if child == "c07" and t_s == 47 * 60:  # one prone sample inside an otherwise supine interval
        return Position.PRONE
    if child == "c11" and t_s % 900 >= 890:
        return Position.LEFT  # the last samples of each 15 min differ from the rest
    return Position.SUPINE if (t_s // 300) % 3 else Position.RIGHT


def rate(child: str, t_s: int) -> float | None:
    i = CHILDREN.index(child)
    if child == "c08" and 20 * 60 <= t_s < 30 * 60:
        return 70.0  # too fast for a 1–2-year-old (limit 50)
    if child == "c04" and 50 * 60 <= t_s < 55 * 60 and t_s % 10:
        return None  # the mat cannot tell every other sample
    return 20.0 + i + (t_s // 35) % 7 * 0.5


def script() -> list[Obs]:
    out = []
    for t_s in range(0, 120 * 60, 5):
        ts = T0 + t_s * 1000
        for c in CHILDREN:
            if not silent(c, Stream.POSTURE, t_s / 60):
                out.append(Obs(c, Stream.POSTURE, ts, position(c, t_s)))  # some exactly on a boundary
            if c != NO_MAT and not silent(c, Stream.BREATHING, t_s / 60):
                out.append(Obs(c, Stream.BREATHING, ts + 300, (rate(c, t_s), True)))
        if t_s in (10 * 60, 62 * 60):
            out.append(Obs(THERMO, Stream.BODY_TEMP, ts + 400, 36.5 if t_s < 3600 else 37.9))
        # readings for a child of another room (no session there) change nothing
        out.append(Obs("other", Stream.POSTURE, ts, Position.PRONE))
    return out


SCRIPT = script()
BY_CHILD: dict[str, list[Obs]] = {}
for _o in SCRIPT:
    BY_CHILD.setdefault(_o.child, []).append(_o)


A, R = AlertState.ACTIVE, AlertState.RESOLVED
#: (alert id, child, rule, raised at min, resolved at min or None)
ALERTS = [
    ("prone-a", "c03", "prone", 31.5, 33.2),  # inside one 5-min interval
    ("apnea-b", "c06", "apnea", 58.0, 61.0),  # across two 10-min intervals
    ("sensor_lost-c", "c09", "sensor_lost", 14.0, 46.0),  # spans 3+ intervals of 15 min
    ("fever-d", "c01", "fever", 62.0, None),  # never resolved: in every interval after
    ("prone-e", "c02", "prone", 10.0, 15.0),  # resolved exactly at an interval start: in [15, 20)
    ("prone-f", "c04", "prone", 20.0, 20.5),  # raised exactly at a boundary: in [20, 25) only
    ("prone-g", "other", "prone", 1.0, None),  # another room's child: on none of these records
]


def alert_events() -> list[tuple[int, Alert]]:
    out = []
    for aid, child, rule, raised, resolved in ALERTS:
        out.append((T0 + round(raised * MIN), alert(aid, child, rule, A, T0 + round(raised * MIN))))
        if resolved is not None:
            out.append((T0 + round(resolved * MIN), alert(aid, child, rule, R, T0 + round(resolved * MIN))))
    return out


def replay(sched: RecordScheduler, tick_ms: int = 1000, stop_at_min: float = 120) -> list[object]:
    """Everything in time order; the clock ticks every ``tick_ms``. Returns all written entries."""
    written: list[object] = sched.start_session(ROOM, T0, by="保育士A")
    events: list[tuple[int, int, object]] = [(o.ts, 1, o) for o in SCRIPT]
    events += [(ts, 0, a) for ts, a in alert_events()]
    stop = T0 + round(stop_at_min * MIN)
    events += [(t, 2, None) for t in range(T0, stop + 1, tick_ms)]
    for ts, kind, ev in sorted(events, key=lambda e: (e[0], e[1])):
        if ts > stop:
            break
        if kind == 2:
            written += sched.tick(ts)
        elif isinstance(ev, Alert):
            sched.observe_alert(ev, ts)
        else:
            assert isinstance(ev, Obs)
            if ev.stream is Stream.POSTURE:
                assert isinstance(ev.value, Position)
                sched.observe_posture(ev.child, ev.value, ev.ts)
            elif ev.stream is Stream.BREATHING:
                r, present = ev.value  # type: ignore[misc]
                sched.observe_breathing(ev.child, r, present, ev.ts)
            else:
                assert isinstance(ev.value, float)
                sched.observe_body_temp(ev.child, ev.value, ev.ts)
    written += sched.stop_session(ROOM, stop, by="保育士A")
    return written


@pytest.fixture(scope="module")
def nap() -> list[object]:
    return replay(RecordScheduler(KIT, RecordsConfig()))


def records(entries: list[object]) -> list[CheckRecord]:
    return [e for e in entries if isinstance(e, CheckRecord)]


# ---------------------------------------------------------------- completeness


def test_exactly_one_record_per_child_per_interval(nap: list[object]) -> None:
    recs = records(nap)
    per_child = Counter(r.child for r in recs)
    assert per_child == {c: 120 // INTERVAL_MIN[BAND_OF[c]] for c in CHILDREN}  # 24 / 12 / 8
    for c in CHILDREN:
        step = INTERVAL_MIN[BAND_OF[c]] * MIN
        times = [r.ts for r in recs if r.child == c]
        assert times == [T0 + k * step for k in range(1, len(times) + 1)], f"{c}: boundaries aligned to the start"
        assert all(r.interval_start_ts == r.ts - step and not r.partial and r.by == AUTO for r in recs if r.child == c)
    assert len({(r.child, r.ts) for r in recs}) == len(recs) == 4 * 24 + 4 * 12 + 4 * 8


def test_session_entries_frame_the_records(nap: list[object]) -> None:
    start, stop = nap[0], nap[-1]
    assert isinstance(start, SessionStarted) and isinstance(stop, SessionStopped)
    assert start.by == stop.by == "保育士A" and start.session == stop.session == f"{ROOM}-{T0}"
    assert [(p.child, p.age_band.value, p.interval_s) for p in start.children] == [
        (c, BAND_OF[c], INTERVAL_MIN[BAND_OF[c]] * 60) for c in CHILDREN
    ], "the plan names every child of the room (and no one else) with its interval"
    assert all(isinstance(e, CheckRecord) for e in nap[1:-1])
    assert [e.ts for e in nap[1:-1]] == sorted(e.ts for e in nap[1:-1]), "written in check-time order"  # type: ignore[attr-defined]


def test_records_are_written_when_the_interval_ends_plus_grace() -> None:
    sched = RecordScheduler(KIT, RecordsConfig(grace_s=2))
    sched.start_session(ROOM, T0)
    assert sched.tick(T0 + 5 * MIN + 1999) == []
    first = sched.tick(T0 + 5 * MIN + 2000)
    assert sorted(r.child for r in records(first)) == CHILDREN[:4], "only the 0-year-olds are due at 5 min"
    assert sched.tick(T0 + 5 * MIN + 2000) == [], "a repeated tick writes nothing twice"
    late = sched.tick(T0 + 31 * MIN)  # a clock that jumped (gateway busy): every missed record, in order
    assert Counter(r.child for r in records(late)) == {c: {"0": 5, "1-2": 3, "3+": 2}[BAND_OF[c]] for c in CHILDREN}
    assert all(r.data_missing and r.posture is None and r.breathing_ok is None for r in records(late))


def test_a_second_start_continues_the_running_session() -> None:
    sched = RecordScheduler(KIT)
    assert len(sched.start_session(ROOM, T0)) == 1
    assert sched.start_session(ROOM, T0 + MIN) == []
    assert sched.session(ROOM) == f"{ROOM}-{T0}"
    assert len(records(sched.tick(T0 + 5 * MIN + 5000))) == 4


def test_stop_between_boundaries_writes_a_partial_record() -> None:
    sched = RecordScheduler(KIT)
    sched.start_session(ROOM, T0)
    sched.observe_posture("c01", Position.SUPINE, T0 + 6 * MIN)
    out = sched.stop_session(ROOM, T0 + 7 * MIN)
    recs = records(out)
    partial = [r for r in recs if r.partial]
    assert len(partial) == 12 and {r.ts for r in partial} == {T0 + 7 * MIN}
    c01 = [r for r in partial if r.child == "c01"][0]
    assert c01.interval_start_ts == T0 + 5 * MIN and c01.posture is Position.SUPINE
    assert sorted((r.child, r.ts) for r in recs if not r.partial) == [(c, T0 + 5 * MIN) for c in CHILDREN[:4]]
    assert isinstance(out[-1], SessionStopped)
    assert sched.stop_session(ROOM, T0 + 8 * MIN) == [] and sched.tick(T0 + 60 * MIN) == []


def test_stop_exactly_on_a_boundary_writes_no_partial_record() -> None:
    sched = RecordScheduler(KIT)
    sched.start_session(ROOM, T0)
    recs = records(sched.stop_session(ROOM, T0 + 30 * MIN))
    assert not any(r.partial for r in recs)
    assert Counter(r.child for r in recs) == {c: 30 // INTERVAL_MIN[BAND_OF[c]] for c in CHILDREN}


# ---------------------------------------------------------------- fields against the script (an independent oracle)


def expected(child: str, start: int, end: int) -> dict[str, object]:
    obs = [o for o in BY_CHILD.get(child, []) if start <= o.ts < end]
    post = [o for o in obs if o.stream is Stream.POSTURE]
    breath = [o for o in obs if o.stream is Stream.BREATHING]
    rates = [o.value[0] for o in breath if o.value[0] is not None]  # type: ignore[index]
    band = BAND_OF[child]
    mean = round(sum(rates) / len(rates), 1) if rates else None  # type: ignore[arg-type]
    latest = rates[-1] if rates else None
    in_alerts = [
        (aid, rule)
        for aid, c, rule, raised, resolved in ALERTS
        if c == child and T0 + raised * MIN < end and (resolved is None or T0 + resolved * MIN >= start)
    ]
    high = {"0": 60, "1-2": 50, "3+": 40}[band]
    if any(rule == "apnea" for _a, rule in in_alerts):
        ok: bool | None = False
    elif latest is None:
        ok = None
    else:
        ok = 10 <= latest <= high and 10 <= mean <= high  # type: ignore[operator]
    exp_streams = {Stream.POSTURE} if child == NO_MAT else {Stream.POSTURE, Stream.BREATHING}
    missing = sorted(s for s in exp_streams if not any(o.stream is s for o in obs))
    temps = [o for o in BY_CHILD[child] if o.stream is Stream.BODY_TEMP and end - 30 * MIN <= o.ts < end]
    return {
        "posture": post[-1].value if post else None,
        "prone_seen": any(o.value is Position.PRONE for o in post) if post else None,
        "on_mat": True if breath else None,
        "breathing_rate_bpm": latest,
        "breathing_rate_mean_bpm": mean,
        "breathing_ok": ok,
        "body_temp_c": temps[-1].value if temps else None,
        "alerts": in_alerts,
        "missing": missing,
        "data_missing": bool(missing),
    }


def actual(r: CheckRecord) -> dict[str, object]:
    return {
        "posture": r.posture,
        "prone_seen": r.prone_seen,
        "on_mat": r.on_mat,
        "breathing_rate_bpm": r.breathing_rate_bpm,
        "breathing_rate_mean_bpm": r.breathing_rate_mean_bpm,
        "breathing_ok": r.breathing_ok,
        "body_temp_c": r.body_temp_c,
        "alerts": [(a.id, a.rule) for a in r.alerts],
        "missing": list(r.missing),
        "data_missing": r.data_missing,
    }


def test_every_field_of_every_record_matches_the_script(nap: list[object]) -> None:
    recs = records(nap)
    for r in recs:
        assert actual(r) == expected(r.child, r.interval_start_ts, r.ts), f"{r.child} at +{(r.ts - T0) / MIN:g} min"


@pytest.mark.parametrize(
    ("child", "at_min", "field", "value"),
    [
        ("c03", 35, "prone_seen", True),  # prone 31:00–33:10
        ("c03", 35, "alerts", [("prone-a", "prone")]),
        ("c03", 40, "prone_seen", False),
        ("c07", 50, "prone_seen", True),  # one prone sample at 47:00 ...
        ("c07", 50, "posture", Position.RIGHT),  # ... but the latest position is on the right side
        ("c11", 15, "posture", Position.LEFT),  # the latest sample, not the most frequent
        ("c06", 60, "breathing_ok", False),  # apnea raised 58:00 ...
        ("c06", 70, "breathing_ok", False),  # ... resolved 61:00: both intervals
        ("c06", 80, "breathing_ok", True),
        ("c08", 30, "breathing_ok", False),  # 70/min for a 1–2-year-old
        ("c09", 15, "alerts", [("sensor_lost-c", "sensor_lost")]),
        ("c09", 45, "alerts", [("sensor_lost-c", "sensor_lost")]),
        ("c09", 60, "alerts", [("sensor_lost-c", "sensor_lost")]),  # resolved 46:00, inside [45, 60)
        ("c09", 75, "alerts", []),
        ("c02", 10, "alerts", []),
        ("c02", 15, "alerts", [("prone-e", "prone")]),  # raised 10:00 is in [10, 15) ...
        ("c02", 20, "alerts", [("prone-e", "prone")]),  # ... resolved exactly at 15:00 still counts in [15, 20)
        ("c04", 20, "alerts", []),  # raised exactly at 20:00 belongs to [20, 25)
        ("c04", 25, "alerts", [("prone-f", "prone")]),
        ("c01", 120, "alerts", [("fever-d", "fever")]),  # never resolved: to the end
        ("c01", 15, "body_temp_c", 36.5),
        ("c01", 45, "body_temp_c", None),  # 35 min old: too old to show
        ("c01", 65, "body_temp_c", 37.9),
        ("c05", 50, "data_missing", True),  # all sensors silent 40–70 min: written anyway, empty
        ("c05", 50, "posture", None),
        ("c05", 50, "breathing_ok", None),  # never "OK" without data
        ("c05", 80, "data_missing", False),
        ("c10", 30, "missing", [Stream.BREATHING]),  # mat silent, clip talking
        ("c10", 30, "posture", Position.SUPINE),
        ("c02", 120, "missing", [Stream.BREATHING, Stream.POSTURE]),  # silent to the end of the nap
        ("c12", 60, "missing", []),  # no mat: breathing is not expected, so not "missing"
        ("c12", 60, "breathing_ok", None),
        ("c04", 55, "breathing_rate_bpm", 23.0 + (54 * 60 + 50) // 35 % 7 * 0.5),  # latest known rate
    ],
)
def test_scripted_moments(nap: list[object], child: str, at_min: int, field: str, value: object) -> None:
    (rec,) = [r for r in records(nap) if r.child == child and r.ts == T0 + at_min * MIN]
    assert actual(rec)[field] == value


def test_prone_record_for_c03_in_words(nap: list[object]) -> None:
    (rec,) = [r for r in records(nap) if r.child == "c03" and r.ts == T0 + 35 * MIN]
    assert rec.prone_seen and rec.posture is Position.RIGHT and rec.breathing_ok is True
    assert rec.age_band is AgeBand.INFANT and rec.interval_s == 300


# ---------------------------------------------------------------- late, early and foreign input


def test_late_readings_are_counted_and_cannot_change_a_written_record() -> None:
    sched = RecordScheduler(KIT)
    sched.start_session(ROOM, T0)
    sched.observe_posture("c01", Position.SUPINE, T0 + MIN)
    (rec,) = [r for r in records(sched.tick(T0 + 5 * MIN + 2000)) if r.child == "c01"]
    sched.observe_posture("c01", Position.PRONE, T0 + 4 * MIN)  # arrives after its record was written
    assert sched.ignored["late"] == 1 and rec.prone_seen is False
    (nxt,) = [r for r in records(sched.tick(T0 + 10 * MIN + 2000)) if r.child == "c01"]
    assert nxt.prone_seen is None, "the late sample did not leak into the next interval"


def test_readings_before_the_session_or_far_ahead_are_not_used() -> None:
    sched = RecordScheduler(KIT)
    sched.observe_posture("c01", Position.PRONE, T0 - 1)  # no session yet
    sched.start_session(ROOM, T0)
    sched.observe_posture("c01", Position.PRONE, T0 - 1)  # before the session start
    sched.observe_posture("c01", Position.PRONE, T0 + 60 * MIN)  # a clock an hour ahead
    assert sched.ignored["ahead"] == 1
    recs = records(sched.stop_session(ROOM, T0 + 120 * MIN))
    assert not any(r.prone_seen for r in recs if r.child == "c01")


def test_alerts_outside_a_nap_are_not_kept() -> None:
    sched = RecordScheduler(KIT)
    sched.observe_alert(alert("fever-z", "c01", "fever", A, T0), T0)
    sched.observe_alert(alert("fever-z", "c01", "fever", R, T0 + MIN), T0 + MIN)
    sched.start_session(ROOM, T0 + 2 * MIN)
    (rec,) = [r for r in records(sched.tick(T0 + 8 * MIN)) if r.child == "c01"]
    assert rec.alerts == () and not sched._alerts, "resolved before the nap: nothing kept, nothing shown"


def test_breathing_with_the_child_off_the_mat() -> None:
    sched = RecordScheduler(KIT)
    sched.start_session(ROOM, T0)
    sched.observe_breathing("c01", 30.0, True, T0 + MIN)
    sched.observe_breathing("c01", None, False, T0 + 2 * MIN)
    (rec,) = [r for r in records(sched.tick(T0 + 6 * MIN)) if r.child == "c01"]
    assert rec.on_mat is False and rec.breathing_rate_bpm == 30.0 and rec.breathing_ok is True


def test_breathing_ok_follows_the_rules_thresholds_per_room_and_age_band() -> None:
    """The same limits as the alerts (configs/rules.yaml), so a record and an alert never disagree."""
    rules = RulesConfig.model_validate(
        {"rooms": {ROOM: {"age_bands": {"0": {"breathing_rate_high": {"above_bpm": 45}}}}}}
    )
    sched = RecordScheduler(KIT, rate_limits=rules_rate_limits(rules))
    sched.start_session(ROOM, T0)
    for child, bpm in [("c01", 46.0), ("c02", 45.0), ("c03", 9.9), ("c04", 10.0), ("c05", 50.0), ("c06", 50.1)]:
        sched.observe_breathing(child, bpm, True, T0 + MIN)
    got = {r.child: r.breathing_ok for r in records(sched.stop_session(ROOM, T0 + 10 * MIN)) if r.ts == T0 + 5 * MIN}
    assert got == {"c01": False, "c02": True, "c03": False, "c04": True}
    default = RecordScheduler(KIT)  # no rules given: the built-in thresholds (60 for 0 y)
    default.start_session(ROOM, T0)
    default.observe_breathing("c01", 46.0, True, T0 + MIN)
    default.observe_breathing("c05", 50.1, True, T0 + MIN)
    first = [r for r in records(default.stop_session(ROOM, T0 + 10 * MIN)) if r.interval_start_ts == T0]
    got = {r.child: r.breathing_ok for r in first if r.child in ("c01", "c05")}
    assert got == {"c01": True, "c05": False}


# ---------------------------------------------------------------- config


def test_room_override_and_the_example_file() -> None:
    cfg = load_records_config(Path(__file__).resolve().parents[2] / "configs" / "records.yaml")
    assert cfg == RecordsConfig(), "the example file states the defaults"
    cfg = RecordsConfig.model_validate({"interval_min": {0: 3}, "rooms": {ROOM: {"interval_min": {"1-2": 5}}}})
    assert cfg.interval_ms(ROOM, AgeBand.INFANT) == 3 * MIN
    assert cfg.interval_ms(ROOM, AgeBand.TODDLER) == 5 * MIN
    assert cfg.interval_ms("risu", AgeBand.TODDLER) == 10 * MIN
    sched = RecordScheduler(KIT, cfg)
    (start,) = sched.start_session(ROOM, T0)
    assert isinstance(start, SessionStarted) and {p.interval_s for p in start.children} == {180, 300, 900}
    cfg.check_kit(KIT)
    with pytest.raises(RecordsError, match=r"rooms\.nope: not a room of the kit"):
        RecordsConfig.model_validate({"rooms": {"nope": {}}}).check_kit(KIT)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("interval_min: {0: 0}\n", "interval_min.0 (line 1): expected a number ≥ 1 (got 0)"),
        ("interval_min: {'2': 5}\n", "interval_min.2 (line 1): unknown key"),
        ("grace: 2\n", "grace (line 1): unknown key"),
        ("grace_s: .nan\n", "grace_s (line 1): must be a finite number"),
        ("breathing_ok: {min_bpm: 10}\n", "breathing_ok (line 1): unknown key"),  # limits live in rules.yaml
    ],
)
def test_bad_records_files_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "records.yaml"
    path.write_text(text)
    with pytest.raises(RecordsError) as exc:
        load_records_config(path)
    assert str(exc.value).startswith(f"{path}: {message}")
