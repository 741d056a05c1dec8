"""Threshold bands and time-above-threshold for the manager pages. Pure: rules and readings in,
numbers out; no I/O, no clock.

The thresholds are the gateway's own: ``RuleSet.thresholds`` (gateway/config.py, the rules file
resolved for the room with no age band) is the one table the air rules build their bands from, with
each level's side and whether the value itself counts. Breathing rate has no room-wide threshold (it
depends on each child's age band), and PM10 has no rule: neither gets bands.

"Time above" is plain time in violation, from the stored readings: each reading stands for its
device from its timestamp until the device's next reading, but for at most ``hold_ms`` (the rules'
``freshness.air_s``: beyond that a silent sensor says nothing). With several sensors in a room, a
moment counts once when any of them is in violation. It is *not* alert time: the rules also need a
minimum duration (and PM2.5 judges a one-hour mean), so it is usually longer than the alerts' time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from gateway.read import Threshold

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
