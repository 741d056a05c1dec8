"""Fan-out of change events to any number of live (SSE) clients.

Each client gets its own bounded queue. Publishing never waits: a client whose queue is full is
dropped (its stream ends), and the browser's EventSource reconnects and starts again from a fresh
snapshot — so one stalled tablet cannot hold up the alerts of every other one."""

from __future__ import annotations

import asyncio
import logging

from dashboard.live.state import Event

log = logging.getLogger(__name__)

#: Enough for a burst of changes at a large site; a client this far behind is better resynced.
DEFAULT_QUEUE_SIZE = 1000


class Subscriber:
    """One client's queue. ``None`` in the queue means: this stream is over."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=size)
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():  # make room for the end marker
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def get(self) -> Event | None:
        return await self.queue.get()

    def get_nowait(self) -> Event | None:
        """The next event if one is queued, else None (also at the end marker: ``closed`` tells)."""
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None


class Fanout:
    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._subscribers: set[Subscriber] = set()
        self._closed = False
        #: How many clients were dropped for falling behind, since start.
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self._queue_size)
        if self._closed:
            sub.close()
        else:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def publish(self, events: list[Event]) -> None:
        for sub in list(self._subscribers):
            for event in events:
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    self.dropped += 1
                    log.warning("dropped a live client %d events behind; it will resync", self._queue_size)
                    self.unsubscribe(sub)
                    sub.close()
                    break

    def close(self) -> None:
        """End every stream (server shutdown) and refuse new ones."""
        self._closed = True
        for sub in list(self._subscribers):
            sub.close()
        self._subscribers.clear()
