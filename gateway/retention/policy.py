"""Retention and downsampling, pure: which data is past the kit's ``retention:`` periods, the 15-minute
rollups of readings, and how a trend window is answered from rollups plus raw rows. The SQL is in
gateway/retention/store.py (``roll_up``, ``prune``, ``trend``: what ``StoreReader.reading_buckets`` in
gateway/db/reader.py runs) and gateway/records/store.py (``prune_records``); gateway/retention/job.py
runs them hourly.

Rollups: per device, stream, trend field (gateway/trends/queries.py's METRICS) and epoch-aligned 15-minute
bucket, the count, sum, min and max. Every trend bucket (15 min, 1 h, 6 h, also epoch-aligned) is a
whole number of rollup buckets, so a trend's mean is exactly sum/count of its rollups. Sums are
``math.fsum`` (correctly rounded, order-independent) both in a rollup and when raw rows are grouped
for a query, so a trend is bit-for-bit the same whether its raw rows are still there or only
rollups remain.

A query reads rollups for the whole rollup buckets before ``rolled_until`` and raw rows for the
rest: the partial head of the window (when its raw rows still exist) and everything from
``rolled_until`` on. Where the raw rows of the head are already deleted, the head's whole rollup
bucket is used (up to 15 min before the window's start; documented in docs/storage.md).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.trends.queries import METRICS, MINUTE_MS, RANGES, Bucket, TrendWindow
from nurserywatch.contract import Stream
from nurserywatch.kit import RetentionConfig

#: The rollup bucket. Every trend bucket size must be a multiple of it (tested).
ROLLUP_MS = 15 * MINUTE_MS
DAY_MS = 24 * 60 * MINUTE_MS
#: The gateway runs the retention job this often (gateway clock), and once at start.
JOB_INTERVAL_MS = 60 * MINUTE_MS

#: The fields kept in rollups, per stream: exactly the trend metrics' fields (the others — mat
#: amplitude, accelerations, … — are not kept past raw retention).
ROLLUP_FIELDS: dict[Stream, tuple[str, ...]] = {}
for _stream, _field in METRICS.values():
    ROLLUP_FIELDS[_stream] = (*ROLLUP_FIELDS.get(_stream, ()), _field)
assert all(bucket % ROLLUP_MS == 0 for _length, bucket in RANGES.values())


def floor_to(ts: int, step: int) -> int:
    return ts // step * step


def ceil_to(ts: int, step: int) -> int:
    return -(-ts // step) * step


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """What is past retention at ``now_ms``: everything strictly before each time."""

    now_ms: int
    #: Roll up the readings of every whole rollup bucket before this.
    rollup_until_ms: int
    #: Delete raw readings before this (a rollup-bucket boundary, never after ``rollup_until_ms``).
    raw_before_ms: int
    #: Delete rollups of buckets that start before this.
    rollups_before_ms: int
    #: Delete alerts resolved (and acknowledged) before this, with their transitions.
    alerts_before_ms: int
    #: Delete nap-session log entries before this.
    sessions_before_ms: int
    #: Prune nap-check records with check times before this: local midnight (whole days).
    records_before_ms: int
    #: Drop lines of the InfluxDB disk buffer with timestamps before this.
    influx_buffer_before_ms: int


def local_midnight_ms(ts_ms: int, tz: str) -> int:
    """The start of the local day (in ``tz``) holding ``ts_ms``."""
    zone = ZoneInfo(tz)
    day = datetime.fromtimestamp(ts_ms / 1000, zone).date()
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp() * 1000)


def cutoffs(policy: RetentionConfig, now_ms: int, tz: str = "Asia/Tokyo") -> Cutoffs:
    rollup_until = floor_to(now_ms, ROLLUP_MS)
    return Cutoffs(
        now_ms=now_ms,
        rollup_until_ms=rollup_until,
        raw_before_ms=min(floor_to(now_ms - policy.readings_raw_days * DAY_MS, ROLLUP_MS), rollup_until),
        rollups_before_ms=floor_to(now_ms - policy.readings_downsampled_days * DAY_MS, ROLLUP_MS),
        alerts_before_ms=now_ms - policy.alerts_days * DAY_MS,
        sessions_before_ms=now_ms - policy.nap_sessions_days * DAY_MS,
        # Whole local days: an audited day is either all there or all pruned.
        records_before_ms=local_midnight_ms(now_ms - policy.records_days * DAY_MS, tz),
        influx_buffer_before_ms=now_ms - policy.influx_buffer_keep_days * DAY_MS,
    )


# ---------------------------------------------------------------- rollups


@dataclass(frozen=True, slots=True)
class Partial:
    """Count, sum, min and max of one field's values (a rollup row, or raw rows grouped alike)."""

    count: int
    sum: float
    min: float
    max: float

    def merge(self, other: Partial) -> Partial:
        """Add values that arrived late to a rollup whose raw rows are gone (the one place where a
        sum is not the fsum of all values at once; documented)."""
        return Partial(self.count + other.count, self.sum + other.sum, min(self.min, other.min),
                       max(self.max, other.max))  # fmt: skip


def partial(values: Iterable[float]) -> Partial:
    vs = list(values)
    return Partial(len(vs), math.fsum(vs), min(vs), max(vs))


#: (stream, field, device, rollup bucket start)
RollupKey = tuple[str, str, str, int]


RawRow = tuple[str, int, tuple[float | int | None, ...]]


def rollups(stream: Stream, rows: Iterable[RawRow]) -> dict[RollupKey, Partial]:
    """Rollups of raw rows of one stream: ``(device, ts, values of ROLLUP_FIELDS[stream])``; null
    values are skipped (as InfluxQL's mean skips missing fields)."""
    fields = ROLLUP_FIELDS.get(stream, ())
    groups: dict[RollupKey, list[float]] = defaultdict(list)
    for device, ts, values in rows:
        bucket = floor_to(ts, ROLLUP_MS)
        for name, v in zip(fields, values, strict=True):
            if v is not None:
                groups[(stream.value, name, device, bucket)].append(float(v))
    return {k: partial(vs) for k, vs in groups.items()}


# ---------------------------------------------------------------- trend queries from rollups + raw


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Rollup buckets ``[rollups_from, rollups_until)`` and raw rows in each of ``raw`` (half-open)."""

    rollups_from: int
    rollups_until: int
    raw: tuple[tuple[int, int], ...]


def read_plan(w: TrendWindow, rolled_until: int, raw_from: int) -> ReadPlan:
    """How to answer ``w`` when rollups cover every bucket before ``rolled_until`` and raw rows exist
    from ``raw_from`` on (both rollup-bucket boundaries, ``raw_from <= rolled_until``)."""
    head_raw = w.start_ms >= raw_from
    first = ceil_to(w.start_ms, ROLLUP_MS) if head_raw else floor_to(w.start_ms, ROLLUP_MS)
    until = max(first, min(rolled_until, floor_to(w.end_ms, ROLLUP_MS)))
    raw = [(w.start_ms, first)] if head_raw else []
    raw.append((until, w.end_ms))
    return ReadPlan(first, until, tuple((a, b) for a, b in raw if a < b))


def trend_buckets(bucket_ms: int, parts: Iterable[tuple[int, Partial]]) -> list[Bucket]:
    """Trend buckets from rollup-bucket partials ``(start of its rollup bucket or row time, Partial)``:
    mean = fsum of the sums / total count, so the grouping order never changes the answer."""
    if bucket_ms % ROLLUP_MS:
        raise ValueError(f"a trend bucket ({bucket_ms} ms) must be a multiple of the rollup bucket ({ROLLUP_MS} ms)")
    groups: dict[int, list[Partial]] = defaultdict(list)
    for ts, p in parts:
        groups[floor_to(ts, bucket_ms)].append(p)
    out = []
    for start in sorted(groups):
        ps = groups[start]
        count = sum(p.count for p in ps)
        out.append(Bucket(start, math.fsum(p.sum for p in ps) / count, min(p.min for p in ps),
                          max(p.max for p in ps)))  # fmt: skip
    return out


def raw_partials(rows: Iterable[tuple[str, int, float | int | None]]) -> list[tuple[int, Partial]]:
    """Raw rows ``(device, ts, value)`` grouped per device and rollup bucket, as rollups are."""
    groups: dict[tuple[str, int], list[float]] = defaultdict(list)
    for device, ts, v in rows:
        if v is not None:
            groups[(device, floor_to(ts, ROLLUP_MS))].append(float(v))
    return [(bucket, partial(vs)) for (_device, bucket), vs in groups.items()]


# ---------------------------------------------------------------- the job's report


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one run of the retention job did (logged as one line)."""

    rolled_rows: int = 0
    late_rows: int = 0
    rollups_written: int = 0
    raw_deleted: int = 0
    rollups_deleted: int = 0
    alerts_deleted: int = 0
    transitions_deleted: int = 0
    session_log_deleted: int = 0
    records_pruned: int = 0
    influx_buffer_dropped: int = 0

    def summary(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in _fields(self).items())


def _fields(r: RetentionReport) -> Mapping[str, int]:
    return {name: getattr(r, name) for name in r.__slots__}
