"""Prometheus metrics, pure: counters, gauges and histograms rendered as the text exposition format
(version 0.0.4, what every Prometheus, VictoriaMetrics and Telegraf scraper reads).

The gateway and the dashboard each build a list of :class:`Family` from their own counters when
scraped and serve ``render(families)`` at ``/metrics`` (docs/metrics.md). Nothing here reads a
clock or does I/O: a :class:`Histogram` is fed durations measured by the shells.

Names follow Prometheus conventions: ``nurserywatch_<part>_<what>_<unit>``, counters end in
``_total``, durations are seconds. Label values are escaped; names are checked (a bad name is a bug,
so it raises ValueError).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

#: The Content-Type of the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latency buckets (seconds): sub-millisecond handling up to the 10 s a stalled broker can cause.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

Kind = Literal["counter", "gauge", "histogram"]
#: Label name → value, in the order given.
Labels = tuple[tuple[str, str], ...]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


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


@dataclass(frozen=True, slots=True)
class Sample:
    labels: Labels
    value: float


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: name (``_total`` included for counters), help text, type and its samples
    (histograms: one :class:`Histogram` per label set)."""

    name: str
    help: str
    kind: Kind
    samples: tuple[Sample, ...] = ()
    histograms: tuple[tuple[Labels, Histogram], ...] = ()


def labels(**named: str) -> Labels:
    return tuple(named.items())


def _family(name: str, help: str, kind: Kind, values: float | Mapping[Labels, float]) -> Family:
    if isinstance(values, int | float):
        return Family(name, help, kind, (Sample((), float(values)),))
    return Family(name, help, kind, tuple(Sample(lbl, float(v)) for lbl, v in values.items()))


def counter(name: str, help: str, values: float | Mapping[Labels, float]) -> Family:
    """A counter: one value, or one per label set (``{labels(reason="bad_json"): 3}``)."""
    return _family(name, help, "counter", values)


def gauge(name: str, help: str, values: float | Mapping[Labels, float]) -> Family:
    return _family(name, help, "gauge", values)


def histogram(name: str, help: str, hist: Histogram | Mapping[Labels, Histogram]) -> Family:
    if isinstance(hist, Histogram):
        return Family(name, help, "histogram", histograms=(((), hist),))
    return Family(name, help, "histogram", histograms=tuple(hist.items()))


def by_label(name: str, counts: Mapping[str, int]) -> dict[Labels, float]:
    """``Counter({"bad_json": 3})`` → ``{(("reason", "bad_json"),): 3}`` for one label ``name``."""
    return {((name, key),): float(n) for key, n in sorted(counts.items())}


# ---------------------------------------------------------------- rendering


def render(families: Iterable[Family]) -> str:
    """The text exposition format of ``families``, ending with a newline."""
    lines: list[str] = []
    seen: set[str] = set()
    for fam in families:
        _check_name(fam.name)
        if fam.name in seen:
            raise ValueError(f"metric {fam.name!r} rendered twice")
        seen.add(fam.name)
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for s in fam.samples:
            lines.append(f"{fam.name}{_labels(s.labels)} {format_value(s.value)}")
        for lbl, hist in fam.histograms:
            for bound, n in hist.cumulative():
                # le as a float ("1.0", "+Inf"), the way Prometheus' own clients write it
                le = "+Inf" if math.isinf(bound) else repr(float(bound))
                lines.append(f"{fam.name}_bucket{_labels((*lbl, ('le', le)))} {n}")
            lines.append(f"{fam.name}_sum{_labels(lbl)} {format_value(hist.sum)}")
            lines.append(f"{fam.name}_count{_labels(lbl)} {hist.count}")
    return "\n".join(lines) + "\n"


def format_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _labels(lbl: Labels) -> str:
    if not lbl:
        return ""
    for key, _ in lbl:
        if not _LABEL.match(key) or key.startswith("__"):
            raise ValueError(f"bad label name {key!r}")
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in lbl) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"bad metric name {name!r}")
