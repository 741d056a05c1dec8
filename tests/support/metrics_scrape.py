"""Scraping /metrics in tests: a gateway run with its /metrics on a free loopback port, and the
scraped text parsed by prometheus_client's own parsers (text format and OpenMetrics)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import RulesConfig
from gateway.engine.stats import GatewayStats
from gateway.service.engine_host import EngineOptions
from gateway.service.mqtt import run_gateway
from nurserywatch.clock import ManualClock
from nurserywatch.kit import Kit
from nurserywatch.mqtt import BrokerURL
from tests.support.commands import COMMAND_VERIFIER
from tests.support.waiting import wait_until

#: Every sample by (name, labels).
Scraped = dict[tuple[str, frozenset[tuple[str, str]]], float]
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def parse(text: str, openmetrics: bool = False) -> Scraped:
    """Every sample of ``text``; prometheus_client raises on malformed text (OpenMetrics: also on a
    missing ``# EOF``)."""
    out: Scraped = {}
    if openmetrics:
        families = openmetrics_families(text)  # type: ignore[no-untyped-call]
    else:
        families = text_string_to_metric_families(text)
    for fam in families:
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"sample {key} twice"
            out[key] = s.value
    return out


def value(m: Scraped, name: str, **lbl: str) -> float:
    return m.get((name, frozenset(lbl.items())), 0.0)


def names(m: Scraped) -> set[str]:
    return {name for name, _ in m}


async def scrape(http: httpx.AsyncClient, url: str, openmetrics: bool = False) -> Scraped:
    r = await http.get(url, headers={"Accept": OPENMETRICS} if openmetrics else None)
    assert r.status_code == 200, r.text
    want = "application/openmetrics-text; version=1.0.0" if openmetrics else "text/plain; version=0.0.4"
    assert r.headers["content-type"].startswith(want), r.headers["content-type"]
    return parse(r.text, openmetrics)


@contextlib.asynccontextmanager
async def gateway_with_metrics(
    kit: Kit, broker: BrokerURL, db: Path, clock: ManualClock
) -> AsyncIterator[tuple[GatewayStats, str]]:
    """The gateway on ``broker`` (subscribed) and the URL of its /metrics."""
    stats = GatewayStats()
    task = asyncio.create_task(
        run_gateway(kit, broker, db, RulesConfig(), clock,
            EngineOptions(stats=stats, metrics_port=0, command_key=COMMAND_VERIFIER))
    )
    try:
        await wait_until(lambda: (stats.sessions >= 1 and stats.metrics_port is not None) or task.done(), "gateway")
        if task.done():
            task.result()
        yield stats, f"http://127.0.0.1:{stats.metrics_port}/metrics"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
