"""The Home Assistant bridge (``nurserywatch home-assistant``): a process of its own beside the gateway,
with its own MQTT connection, so the gateway's path from reading to alert does not change and a
problem here cannot delay an alert (docs/integrations.md, "Home Assistant").

Each session:

1. subscribes to Home Assistant's birth topic, the site's ``alert/+``, the site's discovery configs
   already retained (``{prefix}/+/nurserywatch_{site}/+/config``) and its own ``bridge/home_assistant``;
2. publishes its status (retained; the last will says ``{"online": false}``) and takes everything the
   broker hands out before that status comes back to it — the retained configs and alerts (one
   connection's messages arrive in order), or whatever came within ``settle_s``;
3. removes configs the kit no longer makes (empty retained payload), publishes every config retained,
   and each room's ``room_alerts/{room}``;
4. then publishes a room's summary when one of its alerts changes, and every config and summary again
   when Home Assistant's birth message ("online") arrives.

Under systemd (configs/nurserywatch-home-assistant.service, ``Type=notify``) it says ``READY=1`` once it
runs (without waiting for the broker) and pings the watchdog from a timer on its event loop, so a
bridge whose loop hangs is restarted; ``systemctl status`` shows whether it is connected.

Bad input — an alert that does not decode, one for a device or room not in the kit, a birth message
that is neither "online" nor "offline" — is counted in ``BridgeStats.rejected`` and logged
(rate-limited); nothing stops the bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiomqtt

from gateway.engine.site import RateLimitedLog
from gateway.integrations.home_assistant import (
    BRIDGE_NAME,
    Birth,
    DiscoveryConfig,
    classify_birth,
    config_filter,
    discovery_configs,
    stale_topics,
)
from gateway.integrations.room_alerts import RoomAlertBook
from nurserywatch.cancellation import raise_if_cancel_was_swallowed
from nurserywatch.clock import Clock
from nurserywatch.contract import (
    Alert,
    BridgeStatus,
    ContractError,
    RoomAlerts,
    TopicKind,
    bridge_topic,
    decode,
    is_cleared,
    parse_topic,
    room_alerts_topic,
    subscription,
)
from nurserywatch.kit import Kit
from nurserywatch.mqtt import Brokers, publish, run_session
from nurserywatch.systemd import Notifier

log = logging.getLogger(__name__)

#: Wait at most this long for a PUBACK (see gateway/service/mqtt.py): a timeout reconnects, and the
#: next session publishes everything again.
PUBLISH_TIMEOUT_S = 5.0
#: How long step 2 waits for its own status to come back (a broker that does not keep one
#: connection's messages in order would otherwise hold the configs back for ever).
SETTLE_S = 5.0
#: How often the watchdog is offered a ping (Notifier.alive sends one every half interval).
WATCHDOG_TICK_S = 1.0


@dataclass
class BridgeStats:
    """The counters of one run (tests; logged at the end of each session)."""

    sessions: int = 0
    #: Discovery configs published (every round counts each again).
    configs_published: int = 0
    #: Stale configs removed.
    configs_removed: int = 0
    #: Birth messages ("online") answered with every config again.
    births: int = 0
    #: Home Assistant's last will ("offline"): nothing to do, its configs stay retained.
    offline: int = 0
    room_updates: int = 0
    #: Input not taken, by reason: invalid_payload, bad_json, …, unknown_device, unknown_room, no_room, bad_birth.
    rejected: Counter[str] = field(default_factory=Counter)


class HomeAssistantBridge:
    def __init__(
        self, kit: Kit, clock: Clock, version: str, stats: BridgeStats | None = None, notifier: Notifier | None = None
    ) -> None:
        self.kit = kit
        self.notifier = notifier or Notifier(None)
        self.clock = clock
        self.version = version
        self.stats = stats if stats is not None else BridgeStats()
        self.configs: Sequence[DiscoveryConfig] = discovery_configs(kit, version)
        ha = kit.home_assistant
        self.birth_topic = ha.birth_topic
        self.config_filter = config_filter(kit)
        self.own_topic = bridge_topic(kit.site, BRIDGE_NAME)
        self.alerts_filter = subscription(kit.site, TopicKind.ALERT)
        self._log = RateLimitedLog(log)
        self.book = RoomAlertBook(kit)

    def will(self) -> aiomqtt.Will:
        return aiomqtt.Will(self.own_topic, BridgeStatus(online=False).to_json(), qos=1, retain=True)

    async def session(self, client: aiomqtt.Client) -> None:
        try:
            await self._session(client)
        finally:  # lost (run_session reconnects), or stopping
            self.notifier.status("MQTT broker lost; reconnecting")

    async def _session(self, client: aiomqtt.Client) -> None:
        self.stats.sessions += 1
        self.book = RoomAlertBook(self.kit)  # rebuilt from the retained alerts: one closed meanwhile is gone
        await client.subscribe([(self.birth_topic, 1), (self.alerts_filter, 1), (self.config_filter, 1),
                                (self.own_topic, 1)])  # fmt: skip
        raise_if_cancel_was_swallowed()
        marker = BridgeStatus(ts=self.clock.now_ms(), online=True, version=self.version).to_json()
        await publish(client, self.own_topic, marker, retain=True, timeout=PUBLISH_TIMEOUT_S)
        self.notifier.status("connected to the MQTT broker")
        seen: set[str] = set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_S):
                async for message in client.messages:
                    topic, payload = message.topic, _payload_bytes(message.payload)
                    if topic.matches(self.own_topic):
                        if not message.retain and payload == marker:
                            break  # everything retained before it has arrived
                    elif topic.matches(self.config_filter):
                        if message.retain and payload:
                            seen.add(topic.value)
                    else:
                        self._take(topic.value, payload)  # a birth now needs nothing: all is published next
        await client.unsubscribe([self.config_filter, self.own_topic])
        raise_if_cancel_was_swallowed()
        for stale in stale_topics(seen, self.configs):
            await publish(client, stale, b"", retain=True, timeout=PUBLISH_TIMEOUT_S)
            self.stats.configs_removed += 1
            log.info("removed Home Assistant config %s (no longer in the kit)", stale)
        await self._publish_configs(client)
        await self._publish_rooms(client, self.book.changes(self.clock.now_ms()))
        log.info("Home Assistant: %d discovery configs published under %s", len(self.configs),
                 self.kit.home_assistant.discovery_prefix)  # fmt: skip
        async for message in client.messages:
            topic, payload = message.topic, _payload_bytes(message.payload)
            if topic.matches(self.config_filter) or topic.matches(self.own_topic):
                continue  # delivered before the unsubscribe took effect
            if self._take(topic.value, payload) is Birth.ONLINE:
                self.stats.births += 1
                log.info("Home Assistant is online: publishing its configs again")
                await self._publish_configs(client)
                await self._publish_rooms(client, self.book.handed_out())
            else:
                await self._publish_rooms(client, self.book.changes(self.clock.now_ms()))

    def _take(self, topic: str, payload: bytes) -> Birth | None:
        """One message from the birth topic or ``alert/+``: a birth's kind, or None (alerts go to the book)."""
        if topic == self.birth_topic:
            birth = classify_birth(payload)
            if birth is Birth.BAD:
                self._reject("bad_birth", f"{topic}: {payload[:64]!r} is neither 'online' nor 'offline'")
            elif birth is Birth.OFFLINE:
                self.stats.offline += 1
            return birth
        try:
            alert_id = parse_topic(topic).alert_id
            assert alert_id is not None  # the subscription is alert/+
            alert = None if is_cleared(TopicKind.ALERT, payload) else decode(Alert, payload)
        except ContractError as exc:
            self._reject(exc.reason, f"{topic}: {exc.detail}")
            return None
        reason = self.book.apply(alert_id, alert)
        if reason is not None:
            self._reject(reason, f"{topic}: alert of {alert and (alert.room or alert.device)!r}, not in the kit")
        return None

    def _reject(self, reason: str, detail: str) -> None:
        self.stats.rejected[reason] += 1
        self._log(logging.WARNING, reason, f"Home Assistant bridge: {reason}: {detail}")

    async def _publish_configs(self, client: aiomqtt.Client) -> None:
        for config in self.configs:
            await publish(client, config.topic, config.to_json(), retain=True, timeout=PUBLISH_TIMEOUT_S)
            self.stats.configs_published += 1

    async def _publish_rooms(self, client: aiomqtt.Client, summaries: Sequence[RoomAlerts]) -> None:
        for summary in summaries:
            topic = room_alerts_topic(self.kit.site, summary.room)
            await publish(client, topic, summary.to_json(), retain=True, timeout=PUBLISH_TIMEOUT_S)
            self.stats.room_updates += 1


def _payload_bytes(payload: bytes | bytearray | str | int | float | None) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


async def run_home_assistant_bridge(
    kit: Kit,
    broker: Brokers,
    clock: Clock,
    version: str,
    *,
    stats: BridgeStats | None = None,
    notifier: Notifier | None = None,
) -> None:
    """Run the bridge until cancelled (reconnecting as the other parts do). The kit must enable it.
    ``notifier``: systemd's (READY at once, the watchdog from a timer on the event loop)."""
    if not kit.home_assistant.enabled:
        raise ValueError("home_assistant.enabled is false in the kit: nothing to publish")
    notifier = notifier or Notifier(None)
    bridge = HomeAssistantBridge(kit, clock, version, stats, notifier)
    watchdog = asyncio.create_task(_watchdog(notifier), name="home-assistant-watchdog")
    notifier.ready("waiting for the MQTT broker")
    try:
        # A persistent session: alerts published while the bridge reconnects are queued for it.
        await run_session(broker, f"nurserywatch-home-assistant-{kit.site}", bridge.session, will=bridge.will())
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog


async def _watchdog(notifier: Notifier) -> None:
    """Ping systemd's watchdog while the event loop runs: a loop that hangs stops the pings."""
    if notifier.watchdog_s is None:
        return
    while True:
        notifier.alive()
        await asyncio.sleep(min(WATCHDOG_TICK_S, notifier.watchdog_s / 4))
