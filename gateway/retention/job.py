"""The retention job (I/O shell): every hour of the gateway's injected clock — and at the first tick
after a start — roll readings up, delete what is past the kit's ``retention:`` periods from the
gateway's SQLite, prune the nap-check records behind an anchor entry, and drop stale lines of the
InfluxDB disk buffer; one log line with the counts. The database work runs in a worker thread with
its own connection, in short transactions, so the event loop (alerting) never waits for it.

Also here: applying the retention to InfluxDB when the writer prepares the database — a v1 retention
policy, or, for v2, a warning (a bucket's retention is the bucket's own setting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from gateway.engine.observers import GatewayObserver, ObserverContext
from gateway.influx.buffer import WriteBuffer
from gateway.records.store import prune_records
from gateway.retention.policy import DAY_MS, JOB_INTERVAL_MS, RetentionReport, cutoffs
from gateway.retention.store import connect, prune, roll_up
from gateway.trends.queries import quote_ident
from nurserywatch.kit import Kit

log = logging.getLogger("nurserywatch.gateway.retention")


def run_retention(db_path: str | Path, kit: Kit, now_ms: int) -> RetentionReport:
    """One run on the gateway's database (blocking: call it in a worker thread)."""
    c = cutoffs(kit.retention, now_ms, kit.timezone)
    with closing(connect(db_path)) as db:
        rolled, late, written = roll_up(db, c.rollup_until_ms)
        report = prune(db, c)
    pruned = prune_records(db_path, c.records_before_ms, now_ms)
    return replace(report, rolled_rows=rolled, late_rows=late, rollups_written=written, records_pruned=pruned)


class RetentionRunner:
    """Runs ``run_retention`` from the gateway's timer tick, at most one run at a time."""

    def __init__(
        self, kit: Kit, db_path: str | Path, *, buffer: WriteBuffer | None = None, interval_ms: int = JOB_INTERVAL_MS
    ) -> None:
        self.kit = kit
        self.db_path = Path(db_path)
        self.buffer = buffer
        self.interval_ms = interval_ms
        self.next_due_ms: int | None = None
        self.runs = 0
        self.failures = 0
        self.last_report: RetentionReport | None = None
        self._task: asyncio.Task[None] | None = None

    def observer(self, ctx: ObserverContext) -> GatewayObserver:
        """The ObserverFactory for ``run_gateway``."""
        return _RetentionObserver(self)

    def on_tick(self, now_ms: int) -> None:
        if self._task is not None and not self._task.done():
            return  # the previous run is still going (a first run over a large database)
        if self.next_due_ms is not None and now_ms < self.next_due_ms:
            return
        self.next_due_ms = now_ms + self.interval_ms
        self._task = asyncio.get_running_loop().create_task(self.run(now_ms), name="retention")

    async def run(self, now_ms: int) -> None:
        """One run; never raises (a failed run is logged and retried at the next interval)."""
        try:
            report = await asyncio.to_thread(run_retention, self.db_path, self.kit, now_ms)
            if self.buffer is not None:  # on the loop: the writer task uses the buffer from here too
                dropped = self.buffer.drop_older_than(now_ms - self.kit.retention.influx_buffer_keep_days * DAY_MS)
                report = replace(report, influx_buffer_dropped=dropped)
        except Exception:
            self.failures += 1
            log.exception("retention: the run at %d failed; next try in %d min", now_ms, self.interval_ms // 60_000)
            return
        self.runs += 1
        self.last_report = report
        log.info("retention: %s", report.summary())

    async def wait(self) -> None:
        """Wait for a run in progress (tests, shutdown)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the worker thread finishes its current transaction on its own
        await self.wait()


class _RetentionObserver(GatewayObserver):
    def __init__(self, runner: RetentionRunner) -> None:
        self.runner = runner

    def on_tick(self, now_ms: int) -> None:
        self.runner.on_tick(now_ms)


# ---------------------------------------------------------------- InfluxDB


def shard_duration(days: int) -> str:
    """InfluxDB's own defaults for a retention period: < 2 d → 1 h shards, ≤ 6 months → 1 d, else 7 d."""
    return "1h" if days < 2 else "1d" if days <= 183 else "7d"


def retention_policy_statement(database: str, policy: str, days: int) -> str:
    return (
        f"ALTER RETENTION POLICY {quote_ident(policy)} ON {quote_ident(database)}"
        f" DURATION {days}d SHARD DURATION {shard_duration(days)}"
    )


async def influx_retention(client: httpx.AsyncClient, api: str, database: str, days: int) -> None:
    """v1: set the duration of the database's *default* retention policy (where writes without an
    ``rp`` go, and what trend queries read) to ``days``; InfluxDB then drops whole shards older than
    that. v2: only a warning — a bucket's retention cannot be set through the write API. Raises
    httpx.HTTPError when the server does not answer (the writer retries); other failures (no admin
    rights) are logged and writing goes on."""
    if api != "v1":
        log.warning(
            "InfluxDB v2: set the retention of the bucket yourself to %d days (readings_raw_days), e.g."
            " `influx bucket update --id <bucket id> --retention %dd`; the gateway cannot set it through"
            " the write API", days, days,
        )  # fmt: skip
        return
    r = await client.get("/query", params={"q": f"SHOW RETENTION POLICIES ON {quote_ident(database)}"})
    default = _default_policy(r.json() if r.status_code < 300 else {})
    if default is None:
        log.warning("InfluxDB: cannot read the retention policies of %s (HTTP %d): retention not applied",
                    database, r.status_code)  # fmt: skip
        return
    r = await client.post("/query", data={"q": retention_policy_statement(database, default, days)})
    error = _error(r.json()) if r.status_code < 300 else f"HTTP {r.status_code}"
    if error:
        log.warning("InfluxDB: cannot set retention policy %s of %s to %d days: %s", default, database, days, error)
    else:
        log.info("InfluxDB: retention policy %s of %s keeps %d days", default, database, days)


def _default_policy(answer: dict[str, Any]) -> str | None:
    for result in answer.get("results", []):
        for series in result.get("series", []):
            cols = series.get("columns", [])
            for values in series.get("values", []):
                row = dict(zip(cols, values, strict=False))
                if row.get("default"):
                    return str(row["name"])
    return None


def _error(answer: dict[str, Any]) -> str | None:
    if "error" in answer:
        return str(answer["error"])
    return next((str(r["error"]) for r in answer.get("results", []) if "error" in r), None)
