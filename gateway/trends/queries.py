"""Trend queries for managers (``GET /api/trends?room=&metric=&range=``) — pure: query text, time
window and answer parsing; the I/O is in gateway/trends/reader.py (``influx_trend``) and
gateway/db/reader.py (``StoreReader.reading_buckets``), which give the same buckets.

Always time-bounded (InfluxQL without a time bound scans everything), ``fill(none)`` (an empty bucket
is absent, not a zero), bucket size from the range: 24 h → 15 min, 7 d → 1 h, 30 d → 6 h (97, 169
and 121 points with the partial first one: enough for a chart, cheap for a Pi). Buckets are aligned
to the Unix epoch, as InfluxQL's ``GROUP BY time()`` aligns them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nurserywatch.contract import Stream
from nurserywatch.kit import STREAMS_BY_KIND, Kit

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS

#: range name → (length, bucket size), ms
RANGES: dict[str, tuple[int, int]] = {
    "24h": (24 * HOUR_MS, 15 * MINUTE_MS),
    "7d": (7 * 24 * HOUR_MS, HOUR_MS),
    "30d": (30 * 24 * HOUR_MS, 6 * HOUR_MS),
}

#: metric name → (stream/measurement, field)
METRICS: dict[str, tuple[Stream, str]] = {
    "co2": (Stream.AIR, "co2_ppm"),
    "pm25": (Stream.AIR, "pm25_ugm3"),
    "pm10": (Stream.AIR, "pm10_ugm3"),
    "temperature": (Stream.AIR, "temp_c"),
    "humidity": (Stream.AIR, "rh_pct"),
    "breathing_rate": (Stream.BREATHING, "rate_bpm"),
    "body_temp": (Stream.BODY_TEMP, "celsius"),
}


class TrendError(ValueError):
    """An unknown metric or range (the API answers 400 with this message)."""


@dataclass(frozen=True, slots=True)
class TrendWindow:
    metric: str
    stream: Stream
    field: str
    start_ms: int  # inclusive
    end_ms: int  # exclusive
    bucket_ms: int


@dataclass(frozen=True, slots=True)
class Bucket:
    start_ms: int
    mean: float
    min: float
    max: float


def window(metric: str, range_: str, now_ms: int) -> TrendWindow:
    """The window ending now (exclusive of the future) for a metric and range name."""
    if metric not in METRICS:
        raise TrendError(f"metric: {metric!r} is not one of {', '.join(METRICS)}")
    if range_ not in RANGES:
        raise TrendError(f"range: {range_!r} is not one of {', '.join(RANGES)}")
    length, bucket = RANGES[range_]
    stream, field = METRICS[metric]
    return TrendWindow(metric, stream, field, now_ms - length, now_ms + 1, bucket)


def room_devices(kit: Kit, room: str, stream: Stream) -> list[str]:
    """The kit's devices in a room that publish a stream (what the SQLite trend aggregates)."""
    return [d.id for d in kit.devices if d.room == room and stream in STREAMS_BY_KIND[d.kind]]


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influxql(room: str, w: TrendWindow) -> str:
    """One InfluxQL statement: mean/min/max per bucket of one room, time-bounded, ``fill(none)``."""
    f = quote_ident(w.field)
    return (
        f"SELECT mean({f}), min({f}), max({f}) FROM {quote_ident(w.stream.value)}"
        f" WHERE {quote_ident('room')} = {_literal(room)} AND time >= {w.start_ms}ms AND time < {w.end_ms}ms"
        f" GROUP BY time({w.bucket_ms}ms) fill(none)"
    )


def buckets_from_influx(answer: dict[str, Any]) -> list[Bucket]:
    """Buckets from a ``/query?epoch=ms`` JSON answer (raises TrendError on an error answer)."""
    out: list[Bucket] = []
    for result in answer.get("results", []):
        if "error" in result:
            raise TrendError(f"InfluxDB: {result['error']}")
        for series in result.get("series", []):
            for t, mean, lo, hi in series.get("values", []):
                if mean is not None:
                    out.append(Bucket(int(t), float(mean), float(lo), float(hi)))
    if "error" in answer:
        raise TrendError(f"InfluxDB: {answer['error']}")
    return sorted(out, key=lambda b: b.start_ms)
