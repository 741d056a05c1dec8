"""Reading what an MQTT client receives, in arrival order (tests that check what a broker let through)."""

from __future__ import annotations

import asyncio

import aiomqtt


async def collect_until(client: aiomqtt.Client, last_topic: str, timeout_s: float = 5.0) -> list[tuple[str, bytes]]:
    """Messages in arrival order up to and including the first on ``last_topic``."""
    got: list[tuple[str, bytes]] = []
    async with asyncio.timeout(timeout_s):
        async for message in client.messages:
            got.append((message.topic.value, bytes(message.payload)))
            if message.topic.value == last_topic:
                return got
    raise AssertionError("unreachable")


class Received:
    """Everything a client receives while ``listen`` runs (as a task), as (topic, payload)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []

    async def listen(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            self.got.append((m.topic.value, bytes(m.payload)))

    def on(self, topic: str) -> list[bytes]:
        """The payloads received on ``topic``, in order."""
        return [p for t, p in self.got if t == topic]
