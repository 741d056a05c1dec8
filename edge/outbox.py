"""Bounded in-memory queue of readings waiting for the broker.

Skeleton limitation: while the broker is unreachable readings wait here, and when the queue is
full the OLDEST are dropped (counted, logged by the agent); everything queued is lost if the edge
stops. The next issue replaces this with an on-disk store-and-forward queue (DESIGN.md §9) behind
the same put / peek / pop interface.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

#: About 80 minutes of 1 Hz readings for two clips.
MAX_MESSAGES = 10_000


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes


class Outbox:
    def __init__(self, max_messages: int = MAX_MESSAGES) -> None:
        self._queue: deque[Message] = deque()
        self.max_messages = max_messages
        self.dropped = 0
        self.ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, message: Message) -> bool:
        """Queue a message; returns False if the oldest one had to be dropped to make room."""
        dropped = len(self._queue) >= self.max_messages
        if dropped:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(message)
        self.ready.set()
        return not dropped

    def peek(self) -> Message | None:
        return self._queue[0] if self._queue else None

    def pop(self, message: Message) -> None:
        """Remove ``message`` (from peek()) once the broker has acknowledged it — unless it was
        already dropped to make room while its publish was in flight."""
        if self._queue and self._queue[0] is message:
            self._queue.popleft()
