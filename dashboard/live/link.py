"""The dashboard's MQTT side: one subscriber task that keeps a :class:`LiveState` up to date and fans
its changes out to live clients, and the staff commands going the other way.

The dashboard never touches the gateway's alert state: an acknowledgement is an ``AckCommand`` on
``command/ack``; the gateway decides, and the new alert state comes back on ``alert/{id}``. Every
command is signed with the site's command key (nurserywatch/command_auth.py): the gateway takes no
other, so the ``by`` it records is the signed-in user the dashboard named."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

import aiomqtt

from dashboard.live.fanout import Fanout
from dashboard.live.state import Event, EventKind, LiveState
from nurserywatch.cancellation import raise_if_cancel_was_swallowed
from nurserywatch.clock import Clock, SystemClock
from nurserywatch.command_auth import ID_BYTES, CommandSigner
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
from nurserywatch.mqtt import Brokers, describe_brokers, publish, run_session

__all__ = ["CommandNotSent", "LiveLink", "LiveState", "NoCommandKey", "NotConnected"]

log = logging.getLogger(__name__)

#: How long an acknowledgement may wait for the broker's PUBACK before the request fails.
PUBLISH_TIMEOUT_S = 5.0
#: After subscribing, how long to wait for the broker's retained alerts before dropping the ones it
#: no longer holds. Retained messages follow the SUBACK at once; this is a generous margin.
RESYNC_SETTLE_S = 2.0


class CommandNotSent(RuntimeError):
    """A staff command that was not sent; ``code`` is the API's error code."""

    code = "mqtt_unavailable"


class NotConnected(CommandNotSent):
    """The broker is not reachable right now; the command was not sent."""


class NoCommandKey(CommandNotSent):
    """The dashboard has no command key: it cannot sign, and the gateway takes no unsigned command."""

    code = "no_command_key"


class LiveLink:
    def __init__(
        self,
        kit: Kit,
        broker: Brokers,
        *,
        clock: Clock | None = None,
        fanout: Fanout | None = None,
        identifier: str | None = None,
        command_key: CommandSigner | None = None,
    ) -> None:
        """``command_key``: signs every staff command; None: commands are refused (NoCommandKey)."""
        self.state = LiveState(kit)
        self.command_key = command_key
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
        return [topic for topic, _ in self.subscriptions()]

    def subscriptions(self) -> list[tuple[str, int]]:
        """What the live view follows, with the QoS. Readings at 0: the next one comes within a second
        and only the newest is shown, so a PUBACK each (the broker's and ours) buys nothing; alerts,
        statuses and the rest at 1."""
        site = self.state.site
        return [
            (subscription(site, TopicKind.ALERT), 1),
            (f"{site_root(site)}/reading/+/{Stream.POSTURE.value}", 0),
            (subscription(site, TopicKind.STATUS), 1),
            (subscription(site, TopicKind.EDGE), 1),
            (f"{site_root(site)}/reading/+/{Stream.BREATHING.value}", 0),
            (subscription(site, TopicKind.GATEWAY), 1),
            (subscription(site, TopicKind.SESSION), 1),
            (subscription(site, TopicKind.ASSIGNMENT), 1),
        ]

    async def run(self) -> None:
        """Follow the broker until cancelled, reconnecting whenever it goes away."""
        await run_session(self._broker, self._identifier, self._session)

    async def _session(self, client: aiomqtt.Client) -> None:
        sweep: asyncio.TimerHandle | None = None
        try:
            self.state.begin_resync()
            await client.subscribe(self.subscriptions())
            raise_if_cancel_was_swallowed()
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

    async def acknowledge(self, alert_id: str, by: str) -> str:
        """Publish a signed AckCommand (QoS 1) and return its id once the broker has accepted it."""
        try:
            command = AckCommand(alert_id=alert_id, by=by)
        except ValueError as exc:
            raise ContractError("invalid_payload", str(exc)) from None
        return await self.send_command(ack_topic(self.state.site), command)

    async def send_command(
        self, topic: str, command: AckCommand | SessionCommand | AssignCommand | RecordCommand
    ) -> str:
        """Sign a staff command, publish it (QoS 1) and return its id (for the audit log) once the
        broker has accepted it; the gateway decides, and its answer comes back retained (alert/{id},
        session/{room}, assignment/{device}) or in the records. Raises CommandNotSent."""
        if self.command_key is None:
            raise NoCommandKey(
                "the dashboard has no command key, so the gateway would refuse the command "
                "(--command-key; docs/deploy.md, Securing MQTT)"
            )
        client = self._client
        if client is None:
            raise NotConnected(f"not connected to the MQTT broker at {describe_brokers(self._broker)}")
        payload, command_id = self.command_key.sign(
            topic, command.model_dump(mode="json"), self.clock.now_ms(), secrets.token_bytes(ID_BYTES)
        )
        try:
            await publish(client, topic, payload, qos=1, timeout=PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise NotConnected(f"could not publish the command: {exc}") from None
        log.info("command %s on %s sent: %s", command_id, topic.rsplit("/", 1)[-1], command.model_dump_json())
        return command_id

    async def session_command(self, command: SessionCommand) -> str:
        return await self.send_command(session_command_topic(self.state.site), command)

    async def assign_command(self, command: AssignCommand) -> str:
        return await self.send_command(assign_command_topic(self.state.site), command)

    async def record_command(self, command: RecordCommand) -> str:
        return await self.send_command(record_command_topic(self.state.site), command)

    def tick_event(self) -> Event:
        """The live stream's once-a-second liveness record (dashboard/live/sse.py)."""
        return Event(EventKind.TICK, self.state.tick_data(self.clock.now_ms()))
