"""Injected clocks. Logic takes a Clock (or times from messages), never calls time.time() itself,
so a two-hour nap replays in a second and tests are deterministic."""

from __future__ import annotations

import time
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: Seconds on the process's monotonic performance counter, for measuring how long something took
#: (latency metrics, log pacing) — never for logic, whose time is a Clock's.
stopwatch = time.perf_counter


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError for anything else. ZoneInfo itself raises four kinds of
    error, among them IsADirectoryError for "Asia" and OSError for a 300-character name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name[:80]!r} is not an IANA time zone such as Asia/Tokyo") from None


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock time as unix milliseconds."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to (tests, replays)."""

    def __init__(self, start_ms: int = 1_893_456_000_000) -> None:  # 2030-01-01T00:00:00Z, after BUILD_DATE_MS
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> int:
        if ms < 0:
            raise ValueError("a clock does not go backwards")
        self._now += ms
        return self._now

    def set(self, ms: int) -> None:
        self._now = ms
