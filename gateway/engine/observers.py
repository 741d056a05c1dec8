"""Observers: where other gateway parts (the nap-check records, the assignments, the InfluxDB copy,
retention) subscribe to what the site engine decided, without reaching into the engine, its
transport or the rules.

Register a factory with ``run_gateway(..., EngineOptions(observers=[factory]))`` (or ``SiteEngine(...,
observers=...)``). Each factory is called once with an ``ObserverContext`` — the narrow view of the
running engine an observer may use: the kit, the rules, the database file, the clock, read access to
the open alerts and the nap sessions, ``device(id)``, ``enqueue(Outgoing(...))`` to publish,
``rebind_device`` and a rejection counter — and returns an object with any of these methods
(subclass ``GatewayObserver``, whose methods do nothing):

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

Calls are synchronous on the engine's thread, in this order per input: rules → store → observers →
outbox. Keep them fast (no blocking I/O beyond the gateway's SQLite). An exception is logged and
counted in ``GatewayStats.observer_errors``; it never stops the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.alert_changes import Transition
from gateway.config import RulesConfig
from gateway.engine.sessions import SessionChange
from nurserywatch.clock import Clock
from nurserywatch.contract import Alert, Reading, SessionState, Stream
from nurserywatch.kit import Device, Kit


@dataclass(frozen=True, slots=True)
class AcceptedReading:
    device: str
    #: The child the device is bound to now (None: a room device such as an air sensor).
    child: str | None
    room: str
    stream: Stream
    reading: Reading
    #: Gateway clock when it arrived.
    received_ts: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message for the gateway to publish (QoS 1; kept until the transport confirms it)."""

    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True, slots=True)
class ObserverContext:
    """What an observer may see and do of the running engine — no more (the engine, its store and
    its transport stay private)."""

    kit: Kit
    rules: RulesConfig
    #: The gateway's SQLite file; observers that write it open their own connection.
    db_path: Path
    clock: Clock
    #: The alerts open now (active, or resolved and not yet acknowledged).
    open_alerts: Callable[[], list[Alert]]
    #: A room's latest nap session state (active or the last that ended); None if it never had one.
    session: Callable[[str], SessionState | None]
    #: A kit device as the gateway binds it now (today's assignments included); None: unknown.
    device: Callable[[str], Device | None]
    #: Publish a message as soon as the transport can.
    enqueue: Callable[[Outgoing], None]
    #: A runtime assignment (gateway/engine/assignments.py): ``device`` watches ``child`` from ``now_ms``
    #: on, for the rules and the records.
    rebind_device: Callable[[str, str | None, int], None]
    #: Count one input not used, under ``reason`` (``GatewayStats.rejected``); the caller logs it.
    count_rejected: Callable[[str], None]


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


ObserverFactory = Callable[[ObserverContext], GatewayObserver]
