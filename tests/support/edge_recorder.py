"""Watching an edge agent from outside: a subscriber recording every message of a site, and predicates
on what it saw."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiomqtt

from nurserywatch.contract import (
    DeviceStatus,
    decode,
    status_topic,
)
from nurserywatch.mqtt import BrokerURL

AGENT = "pi-1"


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retain: bool


class Recorder:
    """Every message seen so far, in order of arrival."""

    def __init__(self) -> None:
        self.messages: list[Msg] = []

    def on(self, topic: str) -> list[Msg]:
        return [m for m in self.messages if m.topic == topic]

    async def wait_for(self, pred: Callable[[Msg], bool], timeout: float = 5.0, after: int = 0) -> Msg:
        """The first message (from index ``after``) matching ``pred``."""
        async with asyncio.timeout(timeout):
            while True:
                for m in self.messages[after:]:
                    if pred(m):
                        return m
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def record(broker: BrokerURL, site: str) -> AsyncIterator[Recorder]:
    rec = Recorder()
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"test-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(f"nurserywatch/v1/{site}/#", qos=1)

        async def collect() -> None:
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                rec.messages.append(Msg(m.topic.value, m.payload, m.retain))

        task = asyncio.create_task(collect())
        try:
            yield rec
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def is_status(site: str, device: str, online: bool) -> Callable[[Msg], bool]:
    return lambda m: m.topic == status_topic(site, device) and decode(DeviceStatus, m.payload).online is online


def site_id() -> str:
    return f"t{uuid.uuid4().hex[:10]}"
