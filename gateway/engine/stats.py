"""The counters of one gateway run (``GatewayStats``): the site engine and its transport shell
update them, tests read them and /metrics exports them (gateway/service/metrics.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from gateway.influx.stats import WriterStats
from nurserywatch.metrics import Histogram


@dataclass
class GatewayStats:
    """Counters of one gateway run."""

    #: Transport sessions that reached "subscribed" (1 after start, +1 per reconnect).
    sessions: int = 0
    readings_received: int = 0
    readings_stored: int = 0
    alerts_published: int = 0
    #: Retained alert / escalation messages cleared because the engine no longer holds them.
    stale_retained_cleared: int = 0
    #: Empty payloads received on retained-state topics (contract.RETAINED_KINDS), by topic kind:
    #: a retained message deleted — not judged and not a rejection (docs/contract.md).
    cleared: Counter[str] = field(default_factory=Counter)
    #: Timer ticks run (rules, schedules, re-notification).
    ticks: int = 0
    #: Exceptions raised by observers (logged; the gateway carries on).
    observer_errors: int = 0
    #: Input not used, by reason: bad_topic, unknown_device, unexpected_stream, unknown_agent, unknown_alert,
    #: unknown_room, bad_json, invalid_payload, too_large, bad_utf8, duplicate, stale, future (a time more than
    #: contract.MAX_AHEAD_MS ahead of the gateway clock), store_error, internal_error;
    #: command/record: unknown_record, not_a_record, already_confirmed, invalid_command (docs/records.md).
    rejected: Counter[str] = field(default_factory=Counter)
    #: The InfluxDB writer's counters (``readings: influxdb``; None with SQLite only): written,
    #: buffered, dropped, dead_lettered, retries, backfilled, last_error — the same live object.
    influx: WriterStats | None = None
    #: Readings received by stream (valid or not; ``readings_received`` is their sum) — /metrics.
    readings_by_stream: Counter[str] = field(default_factory=Counter)
    #: Alert transitions by (rule, change) — /metrics.
    alert_transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Seconds from a reading handed to the engine to its rules judged (stored, observers run).
    judge_seconds: Histogram = field(default_factory=Histogram)
    #: Seconds from the message (or timer tick) that changed an alert to its publish confirmed by the transport.
    alert_publish_seconds: Histogram = field(default_factory=Histogram)
    #: The port /metrics is served on (None: off), once listening.
    metrics_port: int | None = None
