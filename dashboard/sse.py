"""Server-Sent Events framing and the per-client stream: a snapshot first, then every change,
with a comment line as keep-alive so proxies and the browser notice a dead connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from dashboard.fanout import Subscriber
from dashboard.live_state import Event

#: Seconds between keep-alive comments while nothing changes.
KEEPALIVE_S = 15.0
#: How soon (ms) the browser's EventSource reconnects after the stream ends.
RETRY_MS = 1000


def format_event(event: Event) -> str:
    # json.dumps never emits a raw newline, so one data: line always holds the whole record.
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event.kind.value}\ndata: {data}\n\n"


async def event_stream(snapshot: Event, sub: Subscriber, keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[str]:
    """The stream of one client. ``sub`` must be subscribed *before* the snapshot is taken, so no
    change falls between the two (a change seen twice is harmless: events are idempotent)."""
    yield f"retry: {RETRY_MS}\n\n"
    yield format_event(snapshot)
    while True:
        try:
            event = await asyncio.wait_for(sub.get(), timeout=keepalive_s)
        except TimeoutError:
            yield ": keep-alive\n\n"
            continue
        if event is None:  # dropped for falling behind, or the server is stopping
            return
        yield format_event(event)
