"""Server-Sent Events framing and the per-client stream: a snapshot first, then every change,
with a comment line as keep-alive so proxies and the browser notice a dead connection, and — when
``tick`` is given — a ``tick`` event every second whatever else flows, so the page can tell a silent
feed from a calm one and see the gateway's heartbeat age (its watchdog, docs/dashboard.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from dashboard.live.fanout import Subscriber
from dashboard.live.state import Event

#: Seconds between keep-alive comments while nothing changes.
KEEPALIVE_S = 15.0
#: How soon (ms) the browser's EventSource reconnects after the stream ends.
RETRY_MS = 1000
#: Seconds between ``tick`` events (the page calls the feed lost after 5 s without one).
TICK_S = 1.0
#: Events joined into one write at most (what was queued while the last write went out).
MAX_EVENTS_PER_WRITE = 200


def format_event(event: Event) -> str:
    # json.dumps never emits a raw newline, so one data: line always holds the whole record.
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event.kind.value}\ndata: {data}\n\n"


async def event_stream(
    snapshot: Event,
    sub: Subscriber,
    keepalive_s: float = KEEPALIVE_S,
    tick: Callable[[], Event] | None = None,
    tick_s: float = TICK_S,
) -> AsyncIterator[str]:
    """The stream of one client. ``sub`` must be subscribed *before* the snapshot is taken, so no
    change falls between the two (a change seen twice is harmless: events are idempotent)."""
    yield f"retry: {RETRY_MS}\n\n"
    yield format_event(snapshot)
    loop = asyncio.get_running_loop()
    period = keepalive_s if tick is None else tick_s
    due = loop.time() + period
    while True:
        try:
            event = await asyncio.wait_for(sub.get(), timeout=max(0.0, due - loop.time()))
        except TimeoutError:
            due = loop.time() + period
            yield ": keep-alive\n\n" if tick is None else format_event(tick())
            continue
        if event is None:  # dropped for falling behind, or the server is stopping
            return
        # What queued meanwhile goes in the same write: one send per event was the dashboard's
        # largest cost at 10x load (bench/README.md, "Alert latency").
        chunk = [format_event(event)]
        while len(chunk) < MAX_EVENTS_PER_WRITE and (event := sub.get_nowait()) is not None:
            chunk.append(format_event(event))
        yield "".join(chunk)
        if event is None and sub.closed:
            return
        if tick is not None and loop.time() >= due:  # a busy stream still ticks every second
            due = loop.time() + period
            yield format_event(tick())
