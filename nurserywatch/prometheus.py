"""``/metrics`` through prometheus_client (docs/metrics.md): the gateway's and the dashboard's metric
families, the process they run in, and the exposition format the scraper asks for.

Each part builds its families from its own counters when scraped (``gateway/service/metrics.py``,
``dashboard/routes/metrics.py``) with the helpers here, so a scrape costs nothing between scrapes.
:func:`scrape_registry` puts them in a registry of their own beside the process, platform and GC
collectors (``process_cpu_seconds_total``, ``process_resident_memory_bytes``, ``python_info``, …) —
never prometheus_client's global registry, so two parts in one process (the demo, the tests) do not
collide. :func:`exposition` answers the classic text format (0.0.4) or, when the ``Accept`` header
asks for it, OpenMetrics.

Names follow Prometheus conventions: ``nurserywatch_<part>_<what>_<unit>``, counters end in
``_total``, durations are seconds. Names are checked here (a bad one is a bug: ValueError);
prometheus_client escapes label values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from nurserywatch.metrics import Histogram

#: Label name → value, in the order given.
Labels = tuple[tuple[str, str], ...]
#: The classic text format's Content-Type (what a scraper gets unless it asks for OpenMetrics).
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The classic names every scraper reads (prometheus_client also takes UTF-8 names; Prometheus 2 does not).
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def labels(**named: str) -> Labels:
    return tuple(named.items())


def by_label(name: str, counts: Mapping[str, int]) -> dict[Labels, float]:
    """``Counter({"bad_json": 3})`` → ``{(("reason", "bad_json"),): 3}`` for one label ``name``."""
    return {((name, key),): float(n) for key, n in sorted(counts.items())}


def _label_names(name: str, keys: Iterable[Labels]) -> list[str]:
    """The one list of label names of ``name``'s samples; ValueError on a bad name (a bug)."""
    if not _NAME.match(name):
        raise ValueError(f"bad metric name {name!r}")
    found = {tuple(k for k, _ in lbl) for lbl in keys}
    if len(found) > 1:
        raise ValueError(f"metric {name!r}: samples with different label names {sorted(found)}")
    names = list(found.pop()) if found else []
    for key in names:
        if not _LABEL.match(key) or key.startswith("__"):
            raise ValueError(f"metric {name!r}: bad label name {key!r}")
    return names


def counter(name: str, help: str, values: float | Mapping[Labels, float]) -> Metric:
    """A counter (``name`` ends in ``_total``): one value, or one per label set
    (``{labels(reason="bad_json"): 3}``). An empty mapping is a family with no samples yet."""
    if not name.endswith("_total"):
        raise ValueError(f"counter {name!r} must end in _total")
    if isinstance(values, int | float):
        _label_names(name, ())
        return CounterMetricFamily(name, help, value=float(values))
    fam = CounterMetricFamily(name, help, labels=_label_names(name, values))
    for lbl, v in values.items():
        fam.add_metric([v for _, v in lbl], float(v))
    return fam


def gauge(name: str, help: str, values: float | Mapping[Labels, float]) -> Metric:
    if isinstance(values, int | float):
        _label_names(name, ())
        return GaugeMetricFamily(name, help, value=float(values))
    fam = GaugeMetricFamily(name, help, labels=_label_names(name, values))
    for lbl, v in values.items():
        fam.add_metric([v for _, v in lbl], float(v))
    return fam


def histogram(name: str, help: str, hist: Histogram) -> Metric:
    """A latency histogram (cumulative buckets, ``le`` written the way Prometheus' clients write it)."""
    _label_names(name, ())
    fam = HistogramMetricFamily(name, help)
    buckets = [("+Inf" if math.isinf(b) else repr(float(b)), float(n)) for b, n in hist.cumulative()]
    fam.add_metric([], buckets, hist.sum)
    return fam


class _Families(Collector):
    """The part's own families, built by ``build`` at every scrape."""

    def __init__(self, build: Callable[[], Iterable[Metric]]) -> None:
        self._build = build

    def collect(self) -> Iterator[Metric]:
        seen: set[str] = set()
        for fam in self._build():
            if fam.name in seen:  # two families of one name: a bug (the scrape fails, answered 500)
                raise ValueError(f"metric {fam.name!r} built twice")
            seen.add(fam.name)
            yield fam


def scrape_registry(build: Callable[[], Iterable[Metric]]) -> CollectorRegistry:
    """A registry of its own: the process (CPU, memory, file descriptors, start time), the Python
    platform and GC, and the families ``build()`` returns when scraped."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(_Families(build))
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The body and Content-Type for a scraper that sent ``Accept: accept``: OpenMetrics when it
    asks for ``application/openmetrics-text``, otherwise the text format. Raises what a broken
    metric raises (a bug: the caller answers 500)."""
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type
