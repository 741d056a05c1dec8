"""Debounced conditions shared by the rules: minimum durations and hysteresis, on message time.

``Debounce`` turns a noisy condition into a steady one: it becomes *active* once ``fire`` has held
continuously for ``on_ms`` and, once active, becomes inactive once ``clear`` has held continuously
for ``off_ms``. Readings that satisfy neither (the hysteresis band between the two thresholds)
break whichever run was in progress, so a value wandering around one threshold neither raises nor
resolves anything. Unknown input (no value) holds everything as it is.

``Graded`` stacks Debounces of rising severity into one alert whose severity follows the highest
active level (fever 37.5 → 38.0, CO2 1000 → 1500): one alert, updated, never two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.config import Threshold
from nurserywatch.contract import Severity


@dataclass(slots=True)
class Debounce:
    on_ms: int
    off_ms: int
    active: bool = False
    #: Start of the current fire run; while active, when the condition began (the alert's start).
    since: int | None = None
    clearing_since: int | None = None

    def update(self, ts: int, fire: bool, clear: bool) -> bool:
        if not self.active:
            if not fire:
                self.since = None
                return False
            if self.since is None:
                self.since = ts
            if ts - self.since >= self.on_ms:
                self.active = True
                self.clearing_since = None
            return self.active
        if not clear:
            self.clearing_since = None
            return True
        if self.clearing_since is None:
            self.clearing_since = ts
        if ts - self.clearing_since >= self.off_ms:
            self.reset()
        return self.active

    def force(self, since: int) -> None:
        """Make it active from ``since`` (a restored alert, or a higher level that implies this one)."""
        if not self.active:
            self.active = True
            self.since = since if self.since is None else min(self.since, since)
            self.clearing_since = None

    def reset(self) -> None:
        self.active = False
        self.since = None
        self.clearing_since = None


Predicate = Callable[[float], bool]
#: (fire, clear) predicates of one level.
Band = tuple[Predicate, Predicate]


@dataclass(frozen=True, slots=True)
class Level:
    severity: Severity
    fire: Predicate
    clear: Predicate
    on_ms: int
    off_ms: int


def above(threshold: float, hysteresis: float, *, inclusive: bool = True) -> Band:
    """fire at ≥ threshold (or > with inclusive=False); clear below threshold − hysteresis
    (at or below, for the exclusive form) — the band in between holds."""
    low = threshold - hysteresis
    if inclusive:
        return (lambda v: v >= threshold), (lambda v: v < low)
    return (lambda v: v > threshold), (lambda v: v <= low)


def below(threshold: float, hysteresis: float) -> Band:
    """fire below threshold; clear at threshold + hysteresis or more."""
    high = threshold + hysteresis
    return (lambda v: v < threshold), (lambda v: v >= high)


def band(thresholds: Sequence[Threshold]) -> Band:
    """One level from thresholds of the same severity (RuleSet.thresholds): it fires when any of
    them is violated and clears when every one is cleared (two sides of a range: "outside")."""
    ts = tuple(thresholds)
    return (lambda v: any(t.violated_by(v) for t in ts)), (lambda v: all(t.cleared_by(v) for t in ts))


def levels(thresholds: Sequence[Threshold], on_ms: Callable[[Severity], int], off_ms: int) -> list[Level]:
    """The levels of a Graded alert, one per severity in the order given (lowest first)."""
    by: dict[Severity, list[Threshold]] = {}
    for t in thresholds:
        by.setdefault(t.severity, []).append(t)
    return [Level(sev, *band(ts), on_ms(sev), off_ms) for sev, ts in by.items()]


def seconds_ms(seconds: float) -> int:
    return round(seconds * 1000)


@dataclass(slots=True)
class Graded:
    """One alert with levels of rising severity (ascending order)."""

    levels: Sequence[Level]
    _db: list[Debounce] = field(default_factory=list)
    #: The last value judged and each level's (fire, clear) for it: a tick judges the last reading's
    #: value again (only time moved), so the predicates run once per new value, not per tick.
    _value: float | None = None
    _conds: list[tuple[bool, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._db = [Debounce(lv.on_ms, lv.off_ms) for lv in self.levels]

    def update(self, ts: int, value: float | None) -> Severity | None:
        if value is None:
            return self.severity
        if value != self._value or not self._conds:
            self._value = value
            self._conds = [(lv.fire(value), lv.clear(value)) for lv in self.levels]
        for db, (fire, clear) in zip(self._db, self._conds, strict=True):
            db.update(ts, fire, clear)
        # A higher level implies the lower ones: critical CO2 is also ≥ 1000 ppm. Forcing them keeps
        # the alert alive at the lower severity when the higher one eases, instead of flapping.
        for i in range(len(self._db) - 1, 0, -1):
            upper = self._db[i]
            if upper.active and upper.since is not None:
                for lower in self._db[:i]:
                    lower.force(upper.since)
        return self.severity

    @property
    def severity(self) -> Severity | None:
        # The highest active level; asked of every quiet level on every tick, so without a list.
        for i in range(len(self._db) - 1, -1, -1):
            if self._db[i].active:
                return self.levels[i].severity
        return None

    @property
    def since(self) -> int | None:
        return min((db.since for db in self._db if db.active and db.since is not None), default=None)

    def force(self, severity: Severity, since: int) -> None:
        """Seed from a restored alert: this level and the ones below are active since ``since``."""
        for lv, db in zip(self.levels, self._db, strict=True):
            db.force(since)
            if lv.severity is severity:
                break

    def reset(self) -> None:
        for db in self._db:
            db.reset()
