"""Threshold bands and time-above-threshold for the manager pages. Pure: rules and readings in,
numbers out; no I/O, no clock.

The thresholds are the gateway's own (the rules file, resolved for the room with no age band), with
the comparison each air rule uses (gateway/rules/air.py): CO2 fires *at or above* its levels, PM2.5
*above* them, temperature and humidity *outside* [low, high]. Breathing rate has no room-wide
threshold (it depends on each child's age band), and PM10 has no rule: neither gets bands.

"Time above" is plain time in violation, from the stored readings: each reading stands for its
device from its timestamp until the device's next reading, but for at most ``hold_ms`` (the rules'
``freshness.air_s``: beyond that a silent sensor says nothing). With several sensors in a room, a
moment counts once when any of them is in violation. It is *not* alert time: the rules also need a
minimum duration (and PM2.5 judges a one-hour mean), so it is usually longer than the alerts' time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.config import RuleSet

#: metric → unit shown next to its numbers (the same in both languages).
UNITS: dict[str, str] = {
    "co2": "ppm",
    "pm25": "µg/m³",
    "pm10": "µg/m³",
    "temperature": "°C",
    "humidity": "%",
    "breathing_rate": "/min",
    "body_temp": "°C",
}

#: The room air metrics of the trends page and of the time-above summary, in display order.
ROOM_AIR_METRICS: tuple[str, ...] = ("co2", "pm25", "temperature", "humidity")

Direction = Literal["above", "below"]
Level = Literal["critical", "warning", "info"]


@dataclass(frozen=True, slots=True)
class Threshold:
    metric: str
    level: Level
    direction: Direction
    value: float
    #: True: the value itself is in violation (CO2 ≥ 1000); False: only beyond it (PM2.5 > 35).
    inclusive: bool
    #: Where it comes from in the rules file, e.g. ``co2.warning_ppm``.
    key: str

    def violated_by(self, v: float) -> bool:
        if self.direction == "above":
            return v >= self.value if self.inclusive else v > self.value
        return v <= self.value if self.inclusive else v < self.value


def thresholds(rules: RuleSet, metric: str) -> list[Threshold]:
    """The thresholds of one metric under ``rules`` (a room's effective RuleSet), lowest level first."""
    if metric == "co2":
        c = rules.co2
        return [
            Threshold(metric, "warning", "above", c.warning_ppm, True, "co2.warning_ppm"),
            Threshold(metric, "critical", "above", c.critical_ppm, True, "co2.critical_ppm"),
        ]
    if metric == "pm25":
        p = rules.pm25
        return [
            Threshold(metric, "warning", "above", p.warning_ugm3, False, "pm25.warning_ugm3"),
            Threshold(metric, "critical", "above", p.critical_ugm3, False, "pm25.critical_ugm3"),
        ]
    if metric == "temperature":
        t = rules.temperature
        return [
            Threshold(metric, "warning", "below", t.low_c, False, "temperature.low_c"),
            Threshold(metric, "warning", "above", t.high_c, False, "temperature.high_c"),
        ]
    if metric == "humidity":
        h = rules.humidity
        return [
            Threshold(metric, "info", "below", h.low_pct, False, "humidity.low_pct"),
            Threshold(metric, "info", "above", h.high_pct, False, "humidity.high_pct"),
        ]
    if metric == "body_temp":
        f = rules.fever
        return [
            Threshold(metric, "warning", "above", f.warning_c, True, "fever.warning_c"),
            Threshold(metric, "critical", "above", f.critical_c, True, "fever.critical_c"),
        ]
    return []


def _merged_length(intervals: Iterable[tuple[int, int]]) -> int:
    total, cur_start, cur_end = 0, None, None
    for start, end in sorted(intervals):
        if cur_end is None or start > cur_end:
            if cur_start is not None and cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_start is not None and cur_end is not None:
        total += cur_end - cur_start
    return total


def time_where(
    samples: Sequence[tuple[str, int, float]], pred: Callable[[float], bool], start_ms: int, end_ms: int, hold_ms: int
) -> int:
    """Milliseconds of [start_ms, end_ms) during which any device's current reading satisfies
    ``pred``. ``samples`` are (device, ts, value); a reading holds until the same device's next one
    or ``hold_ms`` after it, whichever is first. Readings before start_ms count from start_ms (pass
    those of the ``hold_ms`` before the window so its first moments are known)."""
    by_device: dict[str, list[tuple[int, float]]] = {}
    for device, ts, value in samples:
        by_device.setdefault(device, []).append((ts, value))
    intervals: list[tuple[int, int]] = []
    for readings in by_device.values():
        readings.sort()
        for i, (ts, value) in enumerate(readings):
            if not pred(value):
                continue
            until = ts + hold_ms
            if i + 1 < len(readings):
                until = min(until, readings[i + 1][0])
            lo, hi = max(ts, start_ms), min(until, end_ms)
            if hi > lo:
                intervals.append((lo, hi))
    return _merged_length(intervals)


def time_in_violation(
    samples: Sequence[tuple[str, int, float]], threshold: Threshold, start_ms: int, end_ms: int, hold_ms: int
) -> int:
    """Milliseconds of [start_ms, end_ms) with ``threshold`` violated by any device (see time_where)."""
    return time_where(samples, threshold.violated_by, start_ms, end_ms, hold_ms)


def time_covered(samples: Sequence[tuple[str, int, float]], start_ms: int, end_ms: int, hold_ms: int) -> int:
    """Milliseconds of [start_ms, end_ms) for which some device had a current reading at all."""
    return time_where(samples, lambda _v: True, start_ms, end_ms, hold_ms)
