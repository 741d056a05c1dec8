"""The dashboard's MQTT side: one subscriber task that keeps a :class:`LiveState` up to date and fans
its changes out to live clients, and the acknowledgement command going the other way.

The dashboard never touches the gateway's alert state: an acknowledgement is an ``AckCommand`` on
``command/ack``; the gateway decides, and the new alert state comes back on ``alert/{id}``."""

from __future__ import annotations

import asyncio
import logging
import os

import aiomqtt

from dashboard.live.fanout import Fanout
from dashboard.live.state import Event, EventKind, LiveState
from nurserywatch.clock import Clock, SystemClock
from nurserywatch.contract import (
    AckCommand,
    AssignCommand,
    ContractError,
    RecordCommand,
    SessionCommand,
    Stream,
    TopicKind,
    ack_topic,
    assign_command_topic,
    record_command_topic,
    session_command_topic,
    site_root,
    subscription,
)
from nurserywatch.kit import Kit
from nurserywatch.mqtt import BrokerURL, publish, run_session

__all__ = ["LiveLink", "LiveState", "NotConnected"]

log = logging.getLogger(__name__)

#: How long an acknowledgement may wait for the broker's PUBACK before the request fails.
PUBLISH_TIMEOUT_S = 5.0
#: After subscribing, how long to wait for the broker's retained alerts before dropping the ones it
#: no longer holds. Retained messages follow the SUBACK at once; this is a generous margin.
RESYNC_SETTLE_S = 2.0


class NotConnected(RuntimeError):
    """The broker is not reachable right now; the command was not sent."""


class LiveLink:
    def __init__(
        self,
        kit: Kit,
        broker: BrokerURL,
        *,
        clock: Clock | None = None,
        fanout: Fanout | None = None,
        identifier: str | None = None,
    ) -> None:
        self.state = LiveState(kit)
        self.fanout = fanout or Fanout()
        self.clock: Clock = clock or SystemClock()
        self._broker = broker
        # Stable for the life of the process (so a reconnect resumes the session), distinct between
        # processes (so two dashboards do not keep kicking each other off the broker).
        self._identifier = identifier or f"nurserywatch-dashboard-{kit.site}-{os.getpid()}"
        self._client: aiomqtt.Client | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def topics(self) -> list[str]:
        site = self.state.site
        return [
            subscription(site, TopicKind.ALERT),
            f"{site_root(site)}/reading/+/{Stream.POSTURE.value}",
            subscription(site, TopicKind.STATUS),
            subscription(site, TopicKind.EDGE),
            f"{site_root(site)}/reading/+/{Stream.BREATHING.value}",
            subscription(site, TopicKind.GATEWAY),
            subscription(site, TopicKind.SESSION),
            subscription(site, TopicKind.ASSIGNMENT),
        ]

    async def run(self) -> None:
        """Follow the broker until cancelled, reconnecting whenever it goes away."""
        await run_session(self._broker, self._identifier, self._session)

    async def _session(self, client: aiomqtt.Client) -> None:
        sweep: asyncio.TimerHandle | None = None
        try:
            self.state.begin_resync()
            await client.subscribe([(t, 1) for t in self.topics()])
            self._client = client
            self._emit(self.state.set_connected(True))
            sweep = asyncio.get_running_loop().call_later(RESYNC_SETTLE_S, lambda: self._emit(self.state.end_resync()))
            async for message in client.messages:
                self.handle(message.topic.value, message.payload, message.retain)
        finally:
            if sweep is not None:
                sweep.cancel()
            self._client = None
            self._emit(self.state.set_connected(False))

    def handle(self, topic: str, payload: object, retained: bool = False) -> None:
        """Apply one message. Never raises: the staff view must outlive any bad input."""
        data = payload if isinstance(payload, bytes) else bytes(payload) if isinstance(payload, bytearray) else b""
        try:
            events = self.state.apply(topic, data, self.clock.now_ms(), retained)
        except Exception:  # a bug in our own code; keep serving what we know
            self.state.rejected["internal_error"] += 1
            log.exception("internal error while applying a message on %s", topic)
            return
        self._emit(events)

    def _emit(self, events: list[Event]) -> None:
        if events:
            self.fanout.publish(events)

    async def acknowledge(self, alert_id: str, by: str) -> AckCommand:
        """Publish an AckCommand (QoS 1) and return once the broker has accepted it."""
        try:
            command = AckCommand(alert_id=alert_id, by=by)
        except ValueError as exc:
            raise ContractError("invalid_payload", str(exc)) from None
        client = self._client
        if client is None:
            raise NotConnected(f"not connected to the MQTT broker at {self._broker}")
        try:
            await publish(client, ack_topic(self.state.site), command.to_json(), qos=1, timeout=PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise NotConnected(f"could not publish the acknowledgement: {exc}") from None
        log.info("acknowledgement of %s by %r sent", alert_id, by)
        return command

    async def send_command(self, topic: str, command: SessionCommand | AssignCommand | RecordCommand) -> None:
        """Publish a staff command (QoS 1) and return once the broker has accepted it; the gateway
        decides, and its answer comes back retained (session/{room}, assignment/{device}) or in the
        records. Raises NotConnected."""
        client = self._client
        if client is None:
            raise NotConnected(f"not connected to the MQTT broker at {self._broker}")
        try:
            await publish(client, topic, command.to_json(), qos=1, timeout=PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise NotConnected(f"could not publish the command: {exc}") from None
        log.info("command on %s sent: %s", topic.rsplit("/", 1)[-1], command.model_dump_json())

    async def session_command(self, command: SessionCommand) -> None:
        await self.send_command(session_command_topic(self.state.site), command)

    async def assign_command(self, command: AssignCommand) -> None:
        await self.send_command(assign_command_topic(self.state.site), command)

    async def record_command(self, command: RecordCommand) -> None:
        await self.send_command(record_command_topic(self.state.site), command)

    def tick_event(self) -> Event:
        """The live stream's once-a-second liveness record (dashboard/live/sse.py)."""
        return Event(EventKind.TICK, self.state.tick_data(self.clock.now_ms()))
