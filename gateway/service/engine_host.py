"""The site engine with what surrounds it in every transport shell (gateway/service/mqtt.py,
gateway/service/jetstream.py): its SQLite store, the InfluxDB copy and the retention job as
observers, and /metrics — opened together and closed together."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.config import RulesConfig
from gateway.db.store import Store
from gateway.engine.observers import ObserverFactory
from gateway.engine.site import SiteEngine
from gateway.engine.stats import GatewayStats
from gateway.influx.writer import ReadingsSink
from gateway.records.entries import RecordsConfig
from gateway.records.keeper import RecordsSigning
from gateway.retention.job import RetentionRunner
from gateway.service.metrics import gateway_families
from gateway.service.metrics_http import metrics_server
from nurserywatch.clock import Clock
from nurserywatch.command_auth import CommandVerifier
from nurserywatch.kit import Kit
from nurserywatch.prometheus import scrape_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """What a gateway's engine is run with, whichever the transport.

    ``stats`` receives the counters (tests read them); ``observers`` are factories of
    GatewayObservers (gateway/engine/observers.py); ``records`` the nap-check record settings
    (configs/records.yaml; None: built in). ``metrics_port``: Prometheus metrics on ``metrics_host``
    (docs/metrics.md); None: off, 0: a free port (in ``stats.metrics_port``). ``command_key``: the
    dashboard's public command key; None: every staff command is refused (said at start, counted as
    ``no_command_key``). ``records_signing``: the site key that signs each day's records head
    (docs/records.md, "Signed day heads"); None: the heads are not signed."""

    stats: GatewayStats | None = None
    observers: Sequence[ObserverFactory] = ()
    records: RecordsConfig | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    command_key: CommandVerifier | None = None
    records_signing: RecordsSigning | None = None


@contextlib.asynccontextmanager
async def running_engine(
    kit: Kit, db_path: Path, rules: RulesConfig, clock: Clock, options: EngineOptions | None = None
) -> AsyncIterator[SiteEngine]:
    """A site engine on ``db_path`` with the InfluxDB copy, the retention job and /metrics, for any
    transport shell; all closed when the block ends."""
    o = options or EngineOptions()
    if o.command_key is None:
        log.error(
            "no command key (--command-key, or command_key in the credentials file): every staff command — "
            "acknowledging an alert too — is refused (docs/deploy.md, \"Securing MQTT\")"
        )
    else:
        log.info("staff commands must be signed by command key %s", o.command_key.id)
    sink = ReadingsSink(kit)  # readings: influxdb → an observer feeding a writer task (docs/storage.md)
    # Retention and downsampling, hourly on the gateway clock (docs/storage.md "Retention").
    retention = RetentionRunner(kit, db_path, buffer=None if sink.writer is None else sink.writer.buffer)
    with Store(db_path, background_checkpoint=True) as store:  # the WAL checkpoints off the event loop
        engine = SiteEngine(kit, store, rules, clock, o.stats, [*o.observers, *sink.observers, retention.observer],
                            o.records, command_key=o.command_key, records_signing=o.records_signing)  # fmt: skip
        if sink.writer is not None:
            engine.stats.influx = sink.writer.stats
        metrics = contextlib.AsyncExitStack()
        try:
            if o.metrics_port is not None:
                registry = scrape_registry(  # the families at every scrape, and the process's own metrics
                    lambda: gateway_families(engine.stats, engine.open_alerts(), engine.outbox_depth, sink.writer)
                )
                engine.stats.metrics_port = await metrics.enter_async_context(
                    metrics_server(o.metrics_host, o.metrics_port, registry))  # fmt: skip
            yield engine
        finally:
            await metrics.aclose()
            engine.close()
            await retention.aclose()
            await sink.aclose()
