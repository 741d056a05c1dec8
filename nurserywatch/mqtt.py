"""Thin MQTT plumbing shared by edge, gateway and dashboard: broker URLs and a reconnecting session.

Deliberately small: the contract (topics, payloads) lives in contract.py; this file only opens
aiomqtt connections and keeps them open.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """``mqtt://[user:password@]host[:port]`` (1883) or ``mqtts://…`` (8883, TLS)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL {url!r}: expected mqtt://host:port or mqtts://host:port")
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r}: no host name")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"broker URL {url!r}: the port must be a number 1–65535") from None
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def client(self, identifier: str, will: aiomqtt.Will | None = None, keepalive: int = 10) -> aiomqtt.Client:
        # clean_session=False: QoS 1 messages queued by the broker while we reconnect are delivered.
        return aiomqtt.Client(
            hostname=self.host,
            port=self.port,
            identifier=identifier,
            username=self.username,
            password=self.password,
            will=will,
            keepalive=keepalive,
            clean_session=False,
            tls_params=aiomqtt.TLSParameters() if self.tls else None,
        )


Session = Callable[[aiomqtt.Client], Awaitable[None]]


async def run_session(
    broker: BrokerURL,
    identifier: str,
    session: Session,
    *,
    will: aiomqtt.Will | None = None,
    max_backoff_s: float = 5.0,
) -> None:
    """Connect, run ``session(client)``, and reconnect with capped, jittered backoff when the broker
    goes away. Returns when ``session`` returns; cancellation stops it."""
    backoff = 0.2
    while True:
        try:
            async with broker.client(identifier, will=will) as client:
                log.info("connected to %s as %s", broker, identifier)
                backoff = 0.2
                await session(client)
                return
        except aiomqtt.MqttError as exc:
            log.warning("MQTT connection to %s lost (%s); retrying in %.1f s", broker, exc, backoff)
        await asyncio.sleep(backoff * (0.5 + random.random() / 2))
        backoff = min(backoff * 2, max_backoff_s)


def raise_if_cancel_was_swallowed() -> None:
    """Python 3.11's asyncio.wait_for (which aiomqtt's publish/subscribe use) loses a cancellation
    that arrives in the same loop step as the broker's acknowledgement (CPython gh-86296, fixed in
    3.12); a part would then never stop. The task still counts the request, so honour it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def publish(
    client: aiomqtt.Client,
    topic: str,
    payload: bytes,
    *,
    qos: int = 1,
    retain: bool = False,
    timeout: float | None = None,
) -> None:
    """``client.publish`` that cannot swallow a cancellation (see raise_if_cancel_was_swallowed)."""
    await client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)
    raise_if_cancel_was_swallowed()
