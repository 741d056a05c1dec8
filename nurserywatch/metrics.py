"""Latency histograms for Prometheus metrics, pure: a :class:`Histogram` counts durations (seconds)
per bucket. The gateway's engine feeds them (``GatewayStats``); nothing here reads a clock or does
I/O. Exporting them — and every other counter — at ``/metrics`` is ``nurserywatch/prometheus.py``'s
job (prometheus_client; docs/metrics.md).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

#: Latency buckets (seconds): sub-millisecond handling up to the 10 s a stalled broker can cause.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Histogram:
    """Counts of observations per bucket (upper bounds, seconds), their sum and count. Mutable:
    one per measured path, fed by the shell (``observe``), read when scraped."""

    def __init__(self, buckets: Iterable[float] = LATENCY_BUCKETS_S) -> None:
        self.bounds: tuple[float, ...] = tuple(sorted(set(buckets)))
        if not self.bounds or any(math.isnan(b) or math.isinf(b) for b in self.bounds):
            raise ValueError("histogram buckets must be finite numbers")
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": bisect_left puts v == bound in that bucket.
        self._counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations ≤ bound) for every bucket, +Inf last."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding quantile ``q`` (a coarse estimate; +Inf past the last)."""
        if self.count == 0:
            return math.nan
        rank = q * self.count
        for bound, n in self.cumulative():
            if n >= rank:
                return bound
        return math.inf
