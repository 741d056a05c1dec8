"""Observers: where other gateway parts (the nap-check record scheduler, metrics) subscribe to what the
gateway decided, without reaching into the MQTT shell or the rules.

Register a factory with ``run_gateway(..., observers=[factory])`` (or ``Gateway(..., observers=...)``).
Each factory is called once with the running ``Gateway`` — use ``gateway.db.store``, ``gateway.kit``,
``gateway.clock``, ``gateway.engine.rules_engine.sessions`` and ``gateway.enqueue(Outgoing(...))`` to publish — and
returns an object with any of these methods (subclass ``GatewayObserver``, whose methods do nothing):

* ``on_session(change)`` — a nap session started or stopped (``SessionChange``: kind, state, ts);
  right after construction, once per session that was active in the store (kind ``restored``).
* ``on_stored(accepted)`` — every reading that is not a duplicate, *before* the rules judge it, also
  one the rules refuse as older than the device's newest (an out-of-order replay): what storage
  copies such as the InfluxDB writer need.
* ``on_reading(accepted)`` — a reading that was validated, is not a duplicate and is not older
  than the device's newest one (``AcceptedReading``); called *after* the rules judged it.
* ``on_alert(transition)`` — every alert transition (raised, updated, resolved, acknowledged,
  renotified, escalated), after it was stored.
* ``on_tick(now_ms)`` — every timer tick (``tick_ms``, gateway clock), after the rules' own tick.

Calls are synchronous on the gateway's event loop, in this order per input: rules → store →
observers → MQTT. Keep them fast (no blocking I/O beyond the gateway's SQLite). An exception is
logged and counted in ``GatewayStats.observer_errors``; it never stops the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.engine.alerts import Transition
from gateway.engine.sessions import SessionChange
from nurserywatch.contract import Reading, Stream

if TYPE_CHECKING:
    from gateway.service.mqtt import Gateway


@dataclass(frozen=True, slots=True)
class AcceptedReading:
    device: str
    #: The child the device is bound to in the kit (None: a room device such as an air sensor).
    child: str | None
    room: str
    stream: Stream
    reading: Reading
    #: Gateway clock when it arrived.
    received_ts: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An MQTT message for the gateway to publish (kept until the broker has it)."""

    topic: str
    payload: bytes
    retain: bool = False


class GatewayObserver:
    """Base class with no-op callbacks; override the ones you need."""

    def on_session(self, change: SessionChange) -> None:
        return None

    def on_stored(self, accepted: AcceptedReading) -> None:
        return None

    def on_reading(self, accepted: AcceptedReading) -> None:
        return None

    def on_alert(self, transition: Transition) -> None:
        return None

    def on_tick(self, now_ms: int) -> None:
        return None


ObserverFactory = Callable[["Gateway"], GatewayObserver]
