"""The dashboard's Prometheus metrics at ``GET /metrics`` (docs/metrics.md): live clients, live
(SSE) events sent, the broker link and the gateway's heartbeat age, rejected messages by reason,
acknowledgement requests, alerts shown — and the process's own (CPU, memory, file descriptors,
Python GC), through prometheus_client; OpenMetrics when the scraper's ``Accept`` header asks for it.

Who may scrape: a Prometheus scraper cannot sign in, so /metrics takes no session. It is public to
the *machine*, not to the network: without a token only loopback clients are answered (a scraper on
the same host, or an SSH tunnel); with ``metrics_token`` set (``nurserywatch dashboard
--metrics-token-file``) every scraper, loopback included, must send ``Authorization: Bearer
<token>`` (Prometheus ``authorization: credentials_file``) — so a TLS proxy on the same host cannot
turn it into a public page. Neither answer says anything about the counters (403 / 401 JSON).

Counting is an ASGI wrapper around the app (no route is edited): it counts the ``event:`` records
written on ``/api/events`` and the status of ``POST /api/alerts/{id}/ack`` answers.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from dashboard.deps import ApiError, get_link_of
from nurserywatch.prometheus import by_label, counter, exposition, gauge, labels, scrape_registry

P = "nurserywatch_dashboard_"
_ACK_PATH = re.compile(r"^/api/alerts/[^/]+/ack$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class DashboardCounters:
    #: ``event:`` records written to live clients (snapshot and ticks included).
    sse_events: int = 0
    #: Acknowledgement requests by HTTP status of the answer (202 sent, 404, 503, 401/403 …).
    ack_requests: Counter[int] = field(default_factory=Counter)


class CountingMiddleware:
    """Counts live events and acknowledgement answers; every other request passes untouched."""

    def __init__(self, app: ASGIApp, counters: DashboardCounters) -> None:
        self.app = app
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == "/api/events":
            await self.app(scope, receive, self._count_events(send))
        elif scope.get("method") == "POST" and _ACK_PATH.match(path):
            await self.app(scope, receive, self._count_ack(send))
        else:
            await self.app(scope, receive, send)

    def _count_events(self, send: Send) -> Send:
        async def counting(message: Message) -> None:
            if message["type"] == "http.response.body":
                body = cast(bytes, message.get("body", b""))
                # Each record starts a line with "event: "; JSON data cannot hold a raw newline.
                self.counters.sse_events += body.startswith(b"event: ") + body.count(b"\nevent: ")
            await send(message)

        return counting

    def _count_ack(self, send: Send) -> Send:
        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.counters.ack_requests[int(message["status"])] += 1
            await send(message)

        return counting


def _counters(app: FastAPI) -> DashboardCounters:
    return cast(DashboardCounters, app.state.metrics_counters)


def require_scraper(request: Request) -> None:
    """Loopback clients only, or the configured bearer token from anyone (module docstring)."""
    token = cast(str | None, request.app.state.metrics_token)
    if token:
        sent = request.headers.get("authorization", "")
        scheme, _, given = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "metrics_token_required", "send the metrics token: Authorization: Bearer <token>")
        return
    host = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ApiError(403, "forbidden", "/metrics answers loopback clients only (or set a metrics token)")


ScraperDep = Annotated[None, Depends(require_scraper)]

router = APIRouter()


def dashboard_families(app: FastAPI) -> list[Metric]:
    """The dashboard's families, built at every scrape from its live link and counters."""
    link = get_link_of(app)
    c = _counters(app)
    heartbeat_ms = link.state.gateway_age_ms(link.clock.now_ms())
    alert_states: Counter[str] = Counter()
    for a in link.state.alerts.values():
        alert_states[a.state.value] += 1
        alert_states["acknowledged"] += a.acknowledged
    return [
        gauge(P + "live_clients", "Live (SSE) clients connected now.", len(link.fanout)),
        counter(P + "sse_events_sent_total", "Live events written to clients (snapshots and ticks included).",
                c.sse_events),
        counter(P + "live_clients_dropped_total", "Live clients dropped for falling behind (they resync).",
                link.fanout.dropped),
        gauge(P + "mqtt_connected", "1 while subscribed to the broker.", 1 if link.connected else 0),
        gauge(P + "gateway_heartbeat_age_seconds",
              "Seconds since the gateway's last live heartbeat (+Inf: none yet, or its last will).",
              math.inf if heartbeat_ms is None else heartbeat_ms / 1000),
        counter(P + "rejected_total", "MQTT messages not used, by reason.", by_label("reason", link.state.rejected)),
        counter(P + "retained_cleared_total", "Retained messages deleted (empty payloads), by topic kind.",
                by_label("topic", link.state.cleared)),
        counter(P + "ack_requests_total", "Acknowledgement requests, by HTTP status of the answer.",
                {labels(status=str(code)): n for code, n in sorted(c.ack_requests.items())}),
        gauge(P + "alerts_shown", "Alerts in the dashboard's list, by state (acknowledged overlaps).",
              by_label("state", alert_states)),
    ]  # fmt: skip


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, scraper: ScraperDep) -> Response:
    registry = cast(CollectorRegistry, request.app.state.metrics_registry)
    body, content_type = exposition(registry, request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})


def install_metrics(app: FastAPI, token: str | None) -> None:
    """/metrics and its counting wrapper; ``token``: require it from every scraper (None: loopback only)."""
    app.state.metrics_token = token
    app.state.metrics_counters = DashboardCounters()
    # A registry per app (never prometheus_client's global one): its families and the process's own.
    app.state.metrics_registry = scrape_registry(lambda: dashboard_families(app))
    app.include_router(router)
    app.add_middleware(CountingMiddleware, counters=app.state.metrics_counters)
