"""The gateway's MQTT shell: the broker's messages into the site engine (gateway/engine/site.py), its
outbox back to the broker. All deciding — validation, storage, rules, alerts, records, what to
publish — is the engine's; this file only subscribes, feeds it messages, publishes its outbox with
timeouts, acknowledges messages to the broker after the engine committed them (paho's manual
acknowledgement), runs the timer tick, and serves /metrics. ``run_gateway`` wires it all together,
with the InfluxDB copy and the retention job as observers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.config import RulesConfig
from gateway.engine.site import SUBSCRIPTIONS, RateLimitedLog, SiteEngine
from gateway.service.engine_host import EngineOptions, running_engine
from gateway.service.inbox import INBOX_HIGH, INBOX_LOW, Inbox
from nurserywatch.cancellation import raise_if_cancel_was_swallowed
from nurserywatch.clock import Clock
from nurserywatch.contract import GatewayStatus, gateway_topic, subscription
from nurserywatch.kit import Kit
from nurserywatch.mqtt import Brokers, run_session
from nurserywatch.mqtt import ack as mqtt_ack
from nurserywatch.systemd import Notifier

log = logging.getLogger(__name__)

#: Wait at most this long for a PUBACK. aiomqtt does not wake a pending publish when the connection
#: drops: with its 10 s default a broker that went down mid-publish left the gateway deaf for 10 s
#: (found by tests/e2e/test_chaos.py). On loopback a PUBACK takes milliseconds; a timeout reconnects,
#: and the unsent message stays in the outbox.
PUBLISH_TIMEOUT_S = 2.0
#: While a message waits to be published, the message loop lets the others run at least every this
#: many messages handled (a backlog in the inbox would otherwise hold back the PUBACK it waits for).
YIELD_EVERY = 64


class MqttGateway:
    """A site engine on an MQTT broker: one session at a time (``session``, run by ``run_session``
    across reconnects) and the timer (``tick_forever``, across reconnects too)."""

    def __init__(
        self,
        engine: SiteEngine,
        notifier: Notifier | None = None,
        *,
        inbox_high: int = INBOX_HIGH,
        inbox_low: int = INBOX_LOW,
    ) -> None:
        """``inbox_high`` / ``inbox_low``: messages received but not yet handled at which the socket is
        no longer read, and read again (gateway/service/inbox.py)."""
        self.engine = engine
        self.inbox_high, self.inbox_low = inbox_high, inbox_low
        #: The current (or last) session's inbox (tests: its ``peak``).
        self.inbox: Inbox | None = None
        self.notifier = notifier or Notifier(None)
        self._client: aiomqtt.Client | None = None
        self._flush_lock = asyncio.Lock()
        self._log = RateLimitedLog(log)

    async def session(self, client: aiomqtt.Client) -> None:
        # The inbox reads the socket from now on, bounded once subscribed and the retained state is out
        # (before, a SUBACK or PUBACK may come behind a reconnecting session's redelivery, which nothing
        # would drain while the loop waits for it; gateway/service/inbox.py).
        inbox = Inbox(client, self.inbox_high, self.inbox_low)
        self.inbox = inbox
        engine = self.engine
        try:
            await client.subscribe([(subscription(engine.kit.site, kind), 1) for kind in SUBSCRIPTIONS])
            raise_if_cancel_was_swallowed()
        except BaseException:
            inbox.close()
            raise
        engine.connected()
        self._client = client
        self.notifier.status("connected to the MQTT broker")
        # Publishing has its own task: a PUBACK may sit behind readings in the socket, which only this
        # loop drains (the inbox stops reading the socket while it is full).
        wanted = asyncio.Event()
        publisher = asyncio.create_task(self._publish_when_wanted(client, wanted), name="gateway-publish")
        handle = engine.handle
        kicked = engine.outbox_version
        handled = 0
        try:
            # The retained state first, as subscribed; the inbox is bounded only then (nothing was
            # acknowledged yet: Mosquitto sends no more than its in-flight window, or a redelivery).
            await self._flush(client)
            inbox.bound()
            while True:
                m = inbox.take()
                if m is None:
                    engine.commit()  # nothing waits: commit and acknowledge the batch, publish
                    kicked = engine.outbox_version
                    wanted.set()
                    await _first(inbox.wait(), publisher)
                    raise_if_cancel_was_swallowed()
                    continue
                # Acknowledged only once its batch is committed (manual_ack): a gateway killed before
                # gets it again from the broker, which keeps it for our persistent session.
                handle(m.topic, m.payload, m.retain, partial(mqtt_ack, client, m.mid, m.qos))
                handled += 1
                if engine.flush_due(since=kicked):
                    engine.commit()  # acknowledge; an alert goes out with the state behind it stored
                    kicked = engine.outbox_version
                    wanted.set()
                elif handled % YIELD_EVERY or not engine.outbox_depth:
                    continue
                # Let the publisher, the timer and the socket reader run: also every YIELD_EVERY
                # messages while something waits to be published (its PUBACK is read by the reader).
                await asyncio.sleep(0)
                raise_if_cancel_was_swallowed()
                if publisher.done():
                    publisher.result()
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await publisher
            inbox.close()
            engine.disconnected()
            self._client = None
            self.notifier.status("MQTT broker lost; reconnecting (rules keep running)")

    async def _publish_when_wanted(self, client: aiomqtt.Client, wanted: asyncio.Event) -> None:
        """The session's publisher: the outbox whenever the message loop asks. A PUBACK that does not
        come in time is logged and the message stays in the outbox (the next flush sends it); a lost
        connection ends the message loop, which reconnects."""
        while True:
            await wanted.wait()
            raise_if_cancel_was_swallowed()
            wanted.clear()
            try:
                await self._flush(client)
            except aiomqtt.MqttError as exc:
                self._log(logging.WARNING, "publish", f"publishing failed: {exc}")

    async def tick_forever(self) -> None:
        """The timer: every ``tick_ms`` (real time) judge at the injected clock's now, then publish.
        Runs across reconnects, so rules keep being judged (and stored) while the broker is away.
        Each round that got through tells systemd's watchdog the gateway is alive: a tick that hangs
        or dies (or an engine blocking the event loop) stops the pings, and systemd restarts us."""
        interval_s = self.engine.rules.tick_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            raise_if_cancel_was_swallowed()
            self.engine.tick()
            client = self._client
            if client is not None:
                try:
                    await self._flush(client)
                except aiomqtt.MqttError as exc:  # the message loop notices and reconnects
                    self._log(logging.WARNING, "publish", f"publishing after a tick failed: {exc}")
                except Exception:  # the timer must outlive any bug: a dead timer would silence apnea alerts
                    self.engine.stats.rejected["internal_error"] += 1
                    log.exception("internal error while publishing after a tick")
            self.notifier.alive()

    async def _flush(self, client: aiomqtt.Client) -> None:
        """Publish pending messages in order; an entry leaves the outbox only once sent, so a
        connection lost half-way is made good on the next session. The engine commits before it
        hands out a message: nothing goes out before the state behind it is committed."""
        self.engine.commit()  # acknowledge now, also while the other flush (tick or messages) holds the lock
        async with self._flush_lock:
            await publish_outbox(self.engine, client)


async def publish_outbox(
    engine: SiteEngine, client: aiomqtt.Client, may_publish: Callable[[], object] | None = None
) -> None:
    """Publish the engine's outbox in order (QoS 1, its retain flags), each entry confirmed by the
    broker before it leaves; raises aiomqtt.MqttError when the connection fails half-way. The caller
    makes sure no two run at once on one engine. ``may_publish`` is called before each message (it
    raises to stop: a gateway that lost its lease, gateway/service/jetstream.py)."""
    while (msg := engine.next_outgoing()) is not None:
        if may_publish is not None:
            may_publish()
        await client.publish(msg.topic, msg.payload, qos=1, retain=msg.retain, timeout=PUBLISH_TIMEOUT_S)
        raise_if_cancel_was_swallowed()
        if msg.clear_after:
            await client.publish(msg.topic, b"", qos=1, retain=True, timeout=PUBLISH_TIMEOUT_S)
            raise_if_cancel_was_swallowed()
        engine.published(msg)


async def _first(wait: Awaitable[None], task: asyncio.Task[Any]) -> None:
    """Until ``wait`` is over or ``task`` has ended; raises what either raised."""
    waiting = asyncio.ensure_future(wait)
    try:
        await asyncio.wait((waiting, task), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not waiting.done():
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
    if task.done():
        task.result()
    if waiting.done() and not waiting.cancelled():
        waiting.result()


async def run_gateway(
    kit: Kit,
    broker: Brokers,
    db_path: Path,
    rules: RulesConfig,
    clock: Clock,
    options: EngineOptions | None = None,
    *,
    notifier: Notifier | None = None,
) -> None:
    """Run the gateway until cancelled. ``options``: the engine's (gateway/service/engine_host.py);
    ``notifier``: systemd's (READY once the database and metrics are up, the watchdog from the tick)."""
    async with running_engine(kit, db_path, rules, clock, options) as engine:
        gw = MqttGateway(engine, notifier)
        ticker = asyncio.create_task(gw.tick_forever(), name="gateway-tick")
        try:
            # Ready once it can judge and store, not once the broker answers: systemd's watchdog only
            # runs after READY, and a gateway waiting for a broker that is down must not be killed.
            gw.notifier.ready("waiting for the MQTT broker")
            # A fixed client id with clean_session=False: the broker queues QoS 1 readings while the
            # gateway restarts, and manual acknowledgement: a reading is acknowledged once stored, so
            # one received but not yet stored when the gateway dies is sent again.
            await run_session(broker, f"nurserywatch-gateway-{kit.site}", gw.session, will=gateway_will(kit),
                              manual_ack=True)  # fmt: skip
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker


def gateway_will(kit: Kit) -> aiomqtt.Will:
    """The gateway's last will: its status offline, retained."""
    return aiomqtt.Will(gateway_topic(kit.site), GatewayStatus(online=False).to_json(), qos=1, retain=True)


