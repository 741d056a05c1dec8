"""The demo's embedded MQTT broker (amqtt, MQTT 3.1.1 only). Production uses Mosquitto.

amqtt binds 0.0.0.0 by default; we always bind loopback unless told otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from amqtt.broker import Broker

from nurserywatch.mqtt import BrokerURL

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def embedded_broker(port: int, host: str = "127.0.0.1") -> AsyncIterator[BrokerURL]:
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 500}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    log.info("embedded amqtt broker listening on %s:%d", host, port)
    try:
        yield BrokerURL(host, port)
    finally:
        await broker.shutdown()
