"""The gateway's Prometheus metrics (docs/metrics.md): its counters, queues, open alerts and
latencies as prometheus_client metric families, built when scraped. Pure: reads what it is given,
no I/O (the shell serves them beside the process's own metrics: nurserywatch/prometheus.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from gateway.engine.stats import GatewayStats
from nurserywatch.contract import Alert
from nurserywatch.prometheus import Labels, by_label, counter, gauge, histogram, labels

if TYPE_CHECKING:
    from gateway.influx.writer import InfluxWriter

P = "nurserywatch_gateway_"


def gateway_families(
    s: GatewayStats, open_alerts: Iterable[Alert], outbox_depth: int, writer: InfluxWriter | None = None
) -> list[Metric]:
    """``s``: the run's counters; ``open_alerts``: the engine's now; ``outbox_depth``: messages
    waiting to be published; ``writer``: the InfluxDB writer, if readings go there."""
    # Open alerts, by rule and by what staff must still do: active (not resolved), acknowledged,
    # escalated (active, unacknowledged, escalated). One alert can count in more than one state.
    open_by: Counter[tuple[str, str]] = Counter()
    for a in open_alerts:
        open_by[(a.rule, "active")] += a.state.value == "active"
        open_by[(a.rule, "acknowledged")] += a.acknowledged
        open_by[(a.rule, "escalated")] += a.escalated and a.state.value == "active" and not a.acknowledged
    fams = [
        counter(P + "readings_received_total", "Readings received from the broker, by stream (valid or not).",
                by_label("stream", s.readings_by_stream)),
        counter(P + "readings_stored_total", "Readings stored in the gateway's SQLite database.", s.readings_stored),
        counter(P + "rejected_total", "Messages not used, by reason (docs/gateway.md).",
                by_label("reason", s.rejected)),
        counter(P + "retained_cleared_total", "Retained messages deleted (empty payloads), by topic kind.",
                by_label("topic", s.cleared)),
        counter(P + "alerts_published_total", "Alert messages the broker acknowledged.", s.alerts_published),
        counter(P + "alert_transitions_total", "Alert changes, by rule and change.",
                {labels(rule=r, change=c): n for (r, c), n in sorted(s.alert_transitions.items())}),
        gauge(P + "alerts_open", "Open alerts by rule and state (active, acknowledged, escalated; overlapping).",
              {labels(rule=r, state=st): n for (r, st), n in sorted(open_by.items())}),
        counter(P + "ticks_total", "Timer ticks run.", s.ticks),
        counter(P + "mqtt_sessions_total", "MQTT sessions that reached subscribed (1 + reconnects).", s.sessions),
        counter(P + "observer_errors_total", "Exceptions raised by observers.", s.observer_errors),
        gauge(P + "mqtt_outgoing_queue", "Messages waiting to be published to the broker.", outbox_depth),
        histogram(P + "judge_seconds", "From a reading taken off the MQTT queue to its rules judged.", s.judge_seconds),
        histogram(P + "alert_publish_seconds",
                  "From the message or timer tick that changed an alert to its publish acknowledged by the broker.",
                  s.alert_publish_seconds),
    ]  # fmt: skip
    if writer is not None:
        w = writer.stats
        queued: dict[Labels, float] = {
            labels(where="memory"): writer.pending - len(writer.buffer),
            labels(where="disk"): len(writer.buffer),
        }
        fams += [
            counter(P + "influx_written_total", "Lines InfluxDB confirmed (re-sent overlap included).", w.written),
            gauge(P + "influx_pending", "Lines not yet written to InfluxDB, in memory and in the disk buffer.", queued),
            counter(P + "influx_dropped_total", "Lines dropped by the disk buffer at its bound.", w.dropped),
            counter(P + "influx_dead_lettered_total", "Lines InfluxDB refused for good.", w.dead_lettered),
            counter(P + "influx_retries_total", "Failed write attempts that will be retried.", w.retries),
            counter(P + "influx_backfilled_total", "Readings re-sent from SQLite at start.", w.backfilled),
        ]
    return fams
