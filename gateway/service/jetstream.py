"""The gateway's JetStream shell (docs/deploy.md, "NATS cluster"): the site's input — the MQTT messages
nats-server stored before acknowledging them (nurserywatch/jetstream.py ``MQTT_STREAM``) — through a
durable pull consumer into the site engine (gateway/engine/site.py), its outbox out over MQTT to the
cluster's MQTT listener — and, with ``instance`` set, one of several instances of the gateway: the
active one holds the lease (gateway/ha/lease.py) and journals every commit (gateway/ha/journal.py),
a standby applies the journal to its own file and takes over when the lease expires.

Order of one flush, so that nothing is acknowledged or published on state another instance cannot
have: the engine commits → (journal) the commit's statements are appended to the journal, fenced by
its last sequence → the messages that wrote them are acknowledged → the outbox is published. An
instance that lost the lease stops before any of it and exits (``LeaseLost``/``Fenced``).

Flow control: messages are pulled ``FETCH_BATCH`` at a time (plus any that arrived for an earlier,
expired pull), the next batch asked for before this one is handled, and acknowledged after each
flush, so a backlog stays in the stream; the consumer's ``max_ack_pending`` bounds what is in flight,
on the server. The pull is the shell's own (``_pull``), not nats-py's ``fetch``, which waited for
every message with a timer of its own (bench/README.md, issue 17). One
consumer, messages handled in stream order: a device's readings stay in order through redeliveries,
and a redelivered message already stored is refused by the engine as a duplicate (and acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError

from gateway.config import RulesConfig
from gateway.engine.site import SUBSCRIPTIONS, RateLimitedLog, SiteEngine
from gateway.ha.journal import (
    ROLE,
    Fenced,
    Journal,
    JournalTail,
    StatementRecorder,
    ensure_state_stream,
    read_state,
    write_state,
)
from gateway.ha.lease import Lease, lease_bucket
from gateway.service.engine_host import EngineOptions, running_engine
from gateway.service.mqtt import gateway_will, publish_outbox
from gateway.service.site_out import ensure_site_out_stream
from nurserywatch.cancellation import raise_if_cancel_was_swallowed
from nurserywatch.clock import Clock
from nurserywatch.contract import subscription
from nurserywatch.jetstream import INPUT_KINDS, REPLICAS, SiteLayout, delivery_sequences, subject_to_topic
from nurserywatch.kit import Kit
from nurserywatch.mqtt import Brokers, MqttCredentials, run_session
from nurserywatch.systemd import Notifier

log = logging.getLogger(__name__)

#: JetStream API requests (stream info, consumer reset, key-value) time out after this and are retried:
#: a request sent just before a stream's new leader was elected gets no answer, and waiting 5 s for it
#: added 5 s to takeovers after a node's loss (bench/failover.py); answers take milliseconds.
JS_REQUEST_TIMEOUT_S = 1.0
#: Messages fetched at a time (well under the consumer's max_ack_pending: acknowledged every flush).
FETCH_BATCH = 200
#: How long after its ``expires`` a pull still waits for the server's answer.
PULL_GRACE_S = 0.05
#: A fetch waits at least this long (shorter pull requests only add round trips; a tick is late by it at most).
MIN_FETCH_WAIT_S = 0.02
#: What the MQTT session subscribes to: the retained alerts and escalations to reconcile on connect
#: (everything else comes from the input stream).
OUTPUT_KINDS = tuple(k for k in SUBSCRIPTIONS if k not in INPUT_KINDS)


#: The oldest nats-server the gateway runs on: consumer reset (ADR-60) came with 2.14.
MIN_SERVER = (2, 14)


class ServerTooOld(Exception):
    """The NATS server lacks what the gateway relies on (a consumer reset, ``MIN_SERVER``)."""


class LeaseLost(Exception):
    """This instance is not the active one any more: it must stop acting at once."""


@dataclass
class JetStreamStats:
    """The shell's own counters (the engine's are in GatewayStats)."""

    fetched: int = 0
    acked: int = 0
    #: Acknowledgements sent (one per commit covers everything up to its message: ack policy ``all``).
    ack_messages: int = 0
    #: Times a gap in the delivery sequence (a delivery lost on the way) made the loop reset the consumer.
    resyncs: int = 0
    flushes: int = 0
    max_in_flight: int = 0
    journal_appends: int = 0
    #: Seconds from acquiring the lease to consuming input (catch-up, engine start, takeover entry).
    takeover_s: float | None = None
    active: bool = False
    events: list[str] = field(default_factory=list)


async def ensure_input(
    js: JetStreamContext, layout: SiteLayout, touch: Callable[[], Awaitable[None]] | None = None
) -> JetStreamContext.PullSubscription:
    """The gateway's durable consumer of the input stream (created if missing, else used as it is: kit
    provisioning may have made it) and a pull subscription on it. The stream is nats-server's own
    (``MQTT_STREAM``), made when the account's first MQTT client connects: ``touch`` connects one.
    Where a gateway before this one left its legacy consumer, that keeps the input until the active
    gateway migrates it (``take_over_input``): a standby must not move what the active one consumes."""
    try:
        await js.stream_info(layout.input_stream)
    except APIError as exc:
        if exc.code != 404 or touch is None:
            raise
        await touch()
        await js.stream_info(layout.input_stream)  # still missing: APIError, retried by the caller
    if not await _consumer_exists(js, layout.input_stream, layout.consumer) and not await _consumer_exists(
        js, layout.input_stream, layout.legacy_consumer
    ):
        await _add_consumer(js, layout, layout.consumer_config())
    return await _bind(js, layout)


async def _bind(js: JetStreamContext, layout: SiteLayout) -> JetStreamContext.PullSubscription:
    return await js.pull_subscribe_bind(durable=layout.consumer, stream=layout.input_stream)


async def _consumer_exists(js: JetStreamContext, stream: str, name: str) -> bool:
    try:
        await js.consumer_info(stream, name)
    except APIError as exc:
        if exc.code != 404:
            raise
        return False
    return True


async def _add_consumer(js: JetStreamContext, layout: SiteLayout, config: dict[str, object]) -> None:
    await js.add_consumer(layout.input_stream, api.ConsumerConfig.from_response(config))


async def migrate_legacy_consumer(js: JetStreamContext, layout: SiteLayout) -> None:
    """The legacy consumer (one ack per message) replaced by ``layout.consumer`` (one per commit),
    delivering from the legacy one's ack floor on, then deleted. The new one exists before the old one
    goes, so the interest stream keeps every message neither acknowledged; what the legacy consumer
    acknowledged above its floor comes again and is refused as a duplicate. Safe to repeat after a
    crash at any step; only the active gateway calls it."""
    if not await _consumer_exists(js, layout.input_stream, layout.legacy_consumer):
        return
    if not await _consumer_exists(js, layout.input_stream, layout.consumer):
        info = await js.consumer_info(layout.input_stream, layout.legacy_consumer)
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        await _add_consumer(js, layout, layout.consumer_config(after_stream_seq=floor))
        log.warning("input consumer %s replaced by %s (one acknowledgement per commit), from stream sequence %d on",
                    layout.legacy_consumer, layout.consumer, floor + 1)  # fmt: skip
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_consumer(layout.input_stream, layout.legacy_consumer)


async def touch_mqtt(brokers: Brokers, identifier: str) -> None:
    """Connect to the MQTT listener once (and leave): nats-server then creates its MQTT streams."""

    async def leave(_client: aiomqtt.Client) -> None:
        return None

    await run_session(brokers, identifier, leave)


async def take_over_input(js: JetStreamContext, layout: SiteLayout) -> None:
    """Make the input consumer this instance's: the legacy consumer migrated, and a consumer reset
    (nats-server 2.14+), so that messages a gateway before this one fetched and never acknowledged (it
    died) are delivered again now, in stream order, rather than after the consumer's ack wait — and
    the delivery sequence restarts at 1, which the message loop checks (``JetStreamGateway``). Without
    the reset one commit's acknowledgement could cover a message still out with a dead gateway: it
    fails, and the caller retries."""
    await migrate_legacy_consumer(js, layout)
    await js.reset_consumer(layout.input_stream, layout.consumer)


async def reset_input(js: JetStreamContext, layout: SiteLayout) -> None:
    """The input consumer reset to its ack floor (after a gap in the delivery sequence; retried while
    the cluster elects a leader)."""
    await _retrying(lambda: js.reset_consumer(layout.input_stream, layout.consumer), "the input consumer")


class JetStreamGateway:
    """A site engine fed from the input stream, publishing over MQTT; optionally journaled and leased."""

    def __init__(
        self,
        engine: SiteEngine,
        psub: JetStreamContext.PullSubscription,
        *,
        journal: Journal | None = None,
        recorder: StatementRecorder | None = None,
        lease: Lease | None = None,
        stats: JetStreamStats | None = None,
        notifier: Notifier | None = None,
        fetch_batch: int = FETCH_BATCH,
        resync: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.engine = engine
        self.psub = psub
        self.resync = resync
        #: The delivery sequence the next message must have: 1 after a consumer reset (take_over_input).
        self._next_delivery = 1
        self.journal = journal
        self.recorder = recorder
        self.lease = lease
        self.stats = stats or JetStreamStats()
        self.notifier = notifier or Notifier(None)
        self.fetch_batch = fetch_batch
        self._client: aiomqtt.Client | None = None
        self._inbox: list[tuple[str, bytes, bool] | None] = []  # None: an MQTT session (re)connected
        self._committed: list[tuple[int, Msg]] = []  # (stream sequence, message)
        self._in_flight = 0
        self._log = RateLimitedLog(log)

    def _check_lease(self) -> None:
        if self.lease is not None and not self.lease.held:
            raise LeaseLost(f"instance {self.lease.instance} does not hold the lease any more")

    async def mqtt_session(self, client: aiomqtt.Client) -> None:
        """The MQTT side: subscribe the retained kinds the engine reconciles, hand their messages to the
        message loop (which alone drives the engine), publish from ``_flush`` while connected."""
        site = self.engine.kit.site
        await client.subscribe([(subscription(site, kind), 1) for kind in OUTPUT_KINDS])
        raise_if_cancel_was_swallowed()
        self._inbox.append(None)
        self._client = client
        try:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                self._inbox.append((message.topic.value, payload, message.retain))
        finally:
            self._client = None

    async def run(self) -> None:
        """The message loop (never returns; raises LeaseLost or Fenced when this instance must stop)."""
        interval_s = self.engine.rules.tick_ms / 1000
        next_tick = time.monotonic() + interval_s
        self.engine.connected()  # batch writes from now on; the retained state goes out with the first flush
        # The next batch is asked for before this one is handled (one fetch ahead, within
        # max_ack_pending): nats-server reads it from its store while the engine works. Fetched one
        # after the other, the batches keep stream order.
        fetching: asyncio.Task[list[Msg]] | None = None
        try:
            while True:
                raise_if_cancel_was_swallowed()  # by the last flush's requests
                self._check_lease()
                wait = max(MIN_FETCH_WAIT_S, next_tick - time.monotonic())
                if fetching is None and self._in_flight < self.fetch_batch:
                    fetching = asyncio.create_task(self._fetch(wait), name="jetstream-fetch")
                msgs: list[Msg] = []
                if fetching is not None:
                    msgs = await fetching
                    fetching = None
                raise_if_cancel_was_swallowed()
                self._check_lease()
                if msgs and self._in_flight < 2 * self.fetch_batch:
                    wait = max(MIN_FETCH_WAIT_S, next_tick - time.monotonic())
                    fetching = asyncio.create_task(self._fetch(wait), name="jetstream-fetch")
                    # The pull request out now, before this batch is handled: one round for the task to
                    # queue it, one for nats-py's flusher task to write it.
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                for item in self._drain_inbox():
                    if item is None:
                        self.engine.connected()
                    else:
                        self.engine.handle(*item)
                in_sequence = self._in_sequence(msgs)
                for msg, stream_seq in in_sequence:
                    self.engine.handle(subject_to_topic(msg.subject), msg.data, False,
                                       _Acker(self._committed, msg, stream_seq))  # fmt: skip
                if time.monotonic() >= next_tick:
                    next_tick = max(next_tick + interval_s, time.monotonic())
                    self.engine.tick()
                    self.notifier.alive()
                await self._flush()
                if len(in_sequence) < len(msgs):
                    if fetching is not None:  # its pull ended (not cancelled): no request of ours is left waiting
                        with contextlib.suppress(Exception):
                            await fetching
                        fetching = None
                    await self._resync(msgs[len(in_sequence)])
        finally:
            if fetching is not None:
                fetching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetching

    def _in_sequence(self, msgs: list[Msg]) -> list[tuple[Msg, int]]:
        """The messages up to the first whose delivery sequence is not the next one, each with its
        stream sequence. One acknowledgement covers every message before it in the stream: it may only
        be sent while every delivery since the consumer's reset has been handled — a delivery lost on
        the way (a connection dropped mid-batch, a gateway that lost its lease still pulling) breaks
        the sequence."""
        out: list[tuple[Msg, int]] = []
        for msg in msgs:
            stream_seq, delivery = delivery_sequences(msg.reply)
            if delivery != self._next_delivery:
                break
            self._next_delivery += 1
            out.append((msg, stream_seq))
        return out

    async def _resync(self, first_out_of_sequence: Msg) -> None:
        """After a gap, with what was handled committed and acknowledged (``_flush``) and no pull of
        ours waiting: the consumer reset to its ack floor, so everything after it comes again in stream
        order from delivery 1. What was delivered before the reset is dropped: the server sent it before
        its answer to the reset (one connection, in order), so it is queued by now."""
        self._log(logging.WARNING, "gap",
                  f"input delivery {delivery_sequences(first_out_of_sequence.reply)[1]} came where "
                  f"{self._next_delivery} was due: resetting the consumer (what was missed comes again)")  # fmt: skip
        if self.resync is None:
            raise RuntimeError("a gap in the input's delivery sequence, and no way to reset the consumer")
        await self.resync()
        sub = self.psub._sub
        while not sub._pending_queue.empty():
            sub._pending_size -= len(sub._pending_queue.get_nowait().data)
        self._next_delivery = 1
        self._in_flight = 0  # everything fetched and not acknowledged comes again
        self.stats.resyncs += 1

    def _drain_inbox(self) -> list[tuple[str, bytes, bool] | None]:
        items, self._inbox = self._inbox, []
        return items

    async def _fetch(self, timeout_s: float) -> list[Msg]:
        try:
            msgs = await self._pull(self.fetch_batch, timeout_s)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except (nats.errors.Error, APIError) as exc:  # no responders while the cluster elects a leader, …
            self._log(logging.WARNING, "fetch", f"fetching from the input stream failed: {exc}")
            await asyncio.sleep(min(timeout_s, 0.5))
            return []
        self.stats.fetched += len(msgs)
        self._in_flight += len(msgs)
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        return msgs

    async def _flush(self) -> None:
        """Commit → journal → acknowledge → publish (module docstring)."""
        self.engine.commit()
        if self.recorder is not None and self.journal is not None:
            txns = self.recorder.collect()
            if txns:
                self._check_lease()
                await self.journal.append(txns, check=self._check_lease)
                self.stats.journal_appends += 1
        self._check_lease()
        acks, self._committed = self._committed, []
        if acks:
            # The commit's message furthest in the stream: everything before it with it (ack policy all;
            # every first delivery since the reset came in stream order and was handled: _in_sequence).
            last = max(acks, key=_stream_seq)[1]
            try:
                await last.ack()
                self.stats.ack_messages += 1
            except nats.errors.Error as exc:  # not acknowledged: delivered again, and refused as a duplicate
                self._log(logging.WARNING, "ack", f"acknowledging to JetStream failed: {exc!r}")
        self._in_flight -= len(acks)
        self.stats.acked += len(acks)
        self.stats.flushes += 1
        client = self._client
        if client is not None and self.engine.outbox_depth:
            try:
                await publish_outbox(self.engine, client, self._check_lease)
            except aiomqtt.MqttError as exc:  # the MQTT session notices and reconnects
                self._log(logging.WARNING, "publish", f"publishing failed: {exc}")

    async def _pull(self, batch: int, timeout_s: float) -> list[Msg]:
        """Up to ``batch`` messages of the consumer, waiting about ``timeout_s`` at most.

        nats-py's ``fetch`` waits for each message of a batch with its own ``wait_for`` (a task and a
        timer per message): as much CPU as the gateway's judging of it (bench/README.md, issue 17).
        Here one pull request (``batch``, ``expires``) is sent on the pull subscription's inbox and what
        the server delivers is taken from the subscription's queue as it is, waiting only while it is
        empty. Messages of an earlier pull that arrived after it gave up come first (stream order: one
        pull at a time); a status (no messages, request timeout, …) ends a pull."""
        psub = self.psub
        sub = psub._sub
        queue: asyncio.Queue[Msg] = sub._pending_queue
        msgs: list[Msg] = []
        ended = False

        def take(msg: Msg) -> None:
            nonlocal ended
            sub._pending_size -= len(msg.data)
            if msg.headers is None or not msg.headers.get(api.Header.STATUS):
                msgs.append(msg)
            elif msg.headers.get(api.Header.STATUS) != api.StatusCode.CONTROL_MESSAGE:
                ended = True  # 404 no messages, 408 request timeout, 409 …: this pull is over

        while not queue.empty() and len(msgs) < batch:  # what came late for an earlier pull
            take(queue.get_nowait())
        if len(msgs) >= batch:
            return msgs
        ended = False  # a status left by an earlier pull says nothing about this one
        request = {"batch": batch - len(msgs), "expires": int(timeout_s * 1e9)}
        if msgs:
            request["no_wait"] = True  # something to hand over already: only what is there now
        await self._nc_publish(psub._nms, json.dumps(request).encode(), psub._deliver)
        raise_if_cancel_was_swallowed()
        deadline = time.monotonic() + timeout_s + PULL_GRACE_S
        while len(msgs) < batch and not ended:
            if queue.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    take(await asyncio.wait_for(queue.get(), left))
                except TimeoutError:
                    break
                raise_if_cancel_was_swallowed()
            else:
                take(queue.get_nowait())
        return msgs

    async def _nc_publish(self, subject: str, payload: bytes, reply: str) -> None:
        await self.psub._nc.publish(subject, payload, reply)


class _Acker:
    """The engine's ack of a message: once its batch committed, it joins the list acknowledged by the
    next flush (after the journal append)."""

    __slots__ = ("_into", "_item")

    def __init__(self, into: list[tuple[int, Msg]], msg: Msg, stream_seq: int) -> None:
        self._into, self._item = into, (stream_seq, msg)

    def __call__(self) -> None:
        self._into.append(self._item)


def _stream_seq(item: tuple[int, Msg]) -> int:
    return item[0]


def nats_auth_options(servers: Sequence[str], credentials: MqttCredentials | None = None) -> dict[str, Any]:
    """nats.connect's user, password and TLS options: from ``credentials`` (the provisioned gateway's
    credentials file: user, password, the site CA, a client certificate), else a ``user:password@`` in
    a server URL — given as options, so that the nodes a server announces get them too. ``tls://``
    without a CA file trusts the system's store (nats-py's default)."""
    opts: dict[str, Any] = {}
    if credentials is not None:
        opts.update(user=credentials.username, password=credentials.password)
        if credentials.ca_file or credentials.cert_file:
            tls = ssl.create_default_context(cafile=credentials.ca_file)
            if credentials.cert_file:
                tls.load_cert_chain(credentials.cert_file, credentials.key_file)
            opts["tls"] = tls
        return opts
    for url in servers:
        parts = urlsplit(url)
        if parts.username is not None and parts.password is not None:
            return dict(user=unquote(parts.username), password=unquote(parts.password))
    return opts


async def connect_nats(servers: Sequence[str], name: str, credentials: MqttCredentials | None = None) -> NatsClient:
    """A NATS connection to any of ``servers`` (and the nodes they announce), waited for at start and
    kept reconnecting: like the MQTT gateway waiting for its broker, a gateway started before the
    cluster comes up waits. Connection trouble is logged in one line, not as tracebacks. ``credentials``:
    who to connect as (nats_auth_options)."""
    said = RateLimitedLog(log)
    auth = nats_auth_options(servers, credentials)

    async def error_cb(exc: Exception) -> None:
        said(logging.WARNING, "nats", f"NATS: {exc!r}")

    client: list[NatsClient] = []

    async def disconnected_cb() -> None:
        if client and not client[0].is_closed:  # not our own close
            said(logging.WARNING, "nats-lost", "NATS connection lost; reconnecting")

    delay = 0.2
    while True:
        raise_if_cancel_was_swallowed()
        try:
            client[:] = [await nats.connect(servers=list(servers), name=name, max_reconnect_attempts=-1,
                                      reconnect_time_wait=0.5, connect_timeout=2, allow_reconnect=True,
                                      error_cb=error_cb, disconnected_cb=disconnected_cb, **auth)]  # fmt: skip
            return client[0]
        except (OSError, nats.errors.Error) as exc:
            said(logging.WARNING, "nats-connect", f"cannot reach NATS at {', '.join(servers)} ({exc}); retrying")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def cluster_replicas(nc: NatsClient) -> int:
    """Replicas for the site's streams: REPLICAS on a cluster, 1 on a single node."""
    return min(REPLICAS, max(1, len(nc.servers)))


async def run_jetstream_gateway(
    kit: Kit,
    nats_servers: Sequence[str],
    brokers: Brokers,
    db_path: Path,
    rules: RulesConfig,
    clock: Clock,
    options: EngineOptions | None = None,
    *,
    instance: str | None = None,
    js_stats: JetStreamStats | None = None,
    notifier: Notifier | None = None,
    lease_monotonic: Callable[[], float] = time.monotonic,
    nats_credentials: MqttCredentials | None = None,
) -> None:
    """Run the gateway on JetStream until cancelled, or until it lost the lease (LeaseLost, Fenced).
    ``instance`` None: the only gateway of the site (no lease, no journal); else this instance's name,
    unique among the site's gateways. ``options``: the engine's (gateway/service/engine_host.py);
    ``js_stats``: the shell's counters (for tests); ``nats_credentials``: who to connect to NATS as."""
    notifier = notifier or Notifier(None)
    js_stats = js_stats if js_stats is not None else JetStreamStats()
    layout = SiteLayout(kit.site)
    nc = await connect_nats(nats_servers, f"nurserywatch-gateway-{kit.site}-{instance or 'single'}", nats_credentials)
    try:
        version = nc.connected_server_version
        if (version.major, version.minor) < MIN_SERVER:
            raise ServerTooOld(f"nats-server {version} at {nc.connected_url.netloc if nc.connected_url else '?'}: the "
                               f"gateway needs {'.'.join(map(str, MIN_SERVER))} or newer (consumer reset)")  # fmt: skip
        js = nc.jetstream(timeout=JS_REQUEST_TIMEOUT_S)
        replicas = cluster_replicas(nc)
        client_id = f"nurserywatch-gateway-{kit.site}" + (f"-{instance}" if instance else "")
        touch = functools.partial(touch_mqtt, brokers, f"{client_id}-start")
        psub = await _retrying(lambda: ensure_input(js, layout, touch), "the input stream")
        if kit.nats is not None and kit.nats.fleet is not None:  # what the fleet's centre sources (docs/fleet.md)
            await _retrying(lambda: ensure_site_out_stream(js, kit.site, replicas), "the fleet out stream")
        if instance is None:
            await _retrying(lambda: take_over_input(js, layout), "the input consumer")
            notifier.ready("consuming the input stream")
            async with running_engine(kit, db_path, rules, clock, options) as engine:
                gw = JetStreamGateway(engine, psub, stats=js_stats, notifier=notifier,
                                      resync=functools.partial(reset_input, js, layout))
                await _serve(gw, brokers, client_id, kit)
            return
        await _retrying(lambda: ensure_state_stream(js, layout, replicas), "the journal stream")
        kv = await _retrying(lambda: lease_bucket(js, layout, replicas), "the lease bucket")
        lease = Lease(kv, instance, monotonic=lease_monotonic)
        jdb, applied = _open_standby_file(db_path)
        try:
            tail = JournalTail(js, layout, jdb, applied)
            # Up to date before competing for the lease: a takeover then applies only the last entries.
            applied = await _retrying(tail.catch_up, "the journal", timeout_s=3600)
            notifier.ready("standing by")
            js_stats.events.append("standby")
            log.info("instance %s standing by (journal applied up to %d)", instance, applied)
            while not await lease.try_acquire():
                raise_if_cancel_was_swallowed()
                deadline = time.monotonic() + lease.renew_s
                while (left := deadline - time.monotonic()) > 0:
                    await _step_tail(tail, left)
                    raise_if_cancel_was_swallowed()
                notifier.alive()  # a standby is alive too (systemd's watchdog)
            started = time.monotonic()
            # Renewed from now on, also while catching up and starting: a slow takeover must not lose it.
            keeper = asyncio.create_task(lease.keep(), name="lease")
            try:
                await _take_over(kit, js, layout, lease, tail, jdb, db_path, rules, clock, options, psub,
                                 brokers, client_id, js_stats, notifier, started)  # fmt: skip
            except asyncio.CancelledError:
                # A clean stop (SIGTERM: an upgrade, a reboot): the engine has stopped, so hand the lease
                # over at once instead of leaving the site unjudged until it expires.
                keeper.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(lease.release(), 2)
                    log.warning("instance %s stopped: lease released for a standby", instance)
                raise
            finally:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
        finally:
            jdb.close()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 2)


async def _take_over(kit: Kit, js: JetStreamContext, layout: SiteLayout, lease: Lease, tail: JournalTail,
                     jdb: Any, db_path: Path, rules: RulesConfig, clock: Clock, options: EngineOptions | None,
                     psub: JetStreamContext.PullSubscription, brokers: Brokers, client_id: str,
                     js_stats: JetStreamStats, notifier: Notifier, started: float) -> None:  # fmt: skip
    """Holding the lease: apply the journal to its end, take the input over, start the engine on the
    file, fence the instance before with a ``takeover`` entry, and serve until the lease is lost."""

    def check() -> None:
        if not lease.held:
            raise LeaseLost(f"instance {lease.instance} lost the lease while taking over")

    applied = await _retrying(tail.catch_up, "the journal")
    await tail.close()
    check()
    await _retrying(lambda: take_over_input(js, layout), "the input consumer")
    write_state(jdb, **{ROLE: "active"})  # before any write of our own: a crash from here on rebuilds
    recorder = StatementRecorder(db_path)
    recorder.install()
    try:
        async with running_engine(kit, db_path, rules, clock, options) as engine:
            journal = Journal(js, layout, lease.instance, applied)
            await journal.append(recorder.collect(), kind="takeover", check=check)  # fences whoever wrote before
            js_stats.takeover_s = time.monotonic() - started
            js_stats.active = True
            js_stats.events.append("active")
            log.warning("instance %s is the ACTIVE gateway of site %s (journal seq %d; %.2f s to take over)",
                        lease.instance, kit.site, journal.last_seq, js_stats.takeover_s)  # fmt: skip
            gw = JetStreamGateway(engine, psub, journal=journal, recorder=recorder, lease=lease, stats=js_stats,
                                  notifier=notifier, resync=functools.partial(reset_input, js, layout))  # fmt: skip
            await _serve(gw, brokers, client_id, kit, stop=lease.lost)
    finally:
        recorder.uninstall()


async def _serve(gw: JetStreamGateway, brokers: Brokers, client_id: str, kit: Kit,
                 stop: asyncio.Event | None = None) -> None:  # fmt: skip
    """The message loop and the MQTT session until either ends (or ``stop`` is set: the lease is lost).

    One of several instances leaves no last will: its death is a takeover, not the site's gateway gone
    (a standby goes on within the lease's TTL); if none takes over, the heartbeat's age is the
    dashboard's watchdog (5 s)."""
    will = gateway_will(kit) if gw.lease is None else None
    tasks = [
        asyncio.create_task(gw.run(), name="jetstream-loop"),
        asyncio.create_task(run_session(brokers, client_id, gw.mqtt_session, will=will), name="mqtt"),
    ]
    if stop is not None:
        tasks.append(asyncio.create_task(_wait(stop), name="lease-lost"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        try:
            for task in done:
                task.result()
        except (LeaseLost, Fenced):
            raise
        except Exception as exc:
            # A request that timed out while this process was paused: the lease decides what it was.
            if gw.lease is not None and not gw.lease.held:
                raise LeaseLost(f"instance {gw.lease.instance} lost the lease ({exc!r})") from exc
            raise
        if stop is not None and stop.is_set():
            raise LeaseLost(f"instance {gw.lease.instance if gw.lease else '?'} lost the lease")
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _wait(event: asyncio.Event) -> None:
    await event.wait()


async def _step_tail(tail: JournalTail, timeout_s: float) -> None:
    try:
        await tail.step(timeout_s)
    except (nats.errors.Error, APIError) as exc:
        log.warning("journal: cannot follow (%s); retrying", exc)
        await tail.close()
        await asyncio.sleep(min(timeout_s, 0.5))


async def _retrying(make: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    """``await make()`` until it succeeds: JetStream answers nothing while a cluster elects leaders."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            result = await make()
            raise_if_cancel_was_swallowed()
            return result
        except (nats.errors.Error, APIError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("JetStream: cannot set up %s yet (%s); retrying", what, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def _open_standby_file(db_path: Path) -> tuple[Any, int]:
    """The file a standby applies the journal to, and the last entry applied. A file this instance
    wrote as the active one may hold a commit that never reached the journal: rebuilt from scratch."""
    from gateway.db.schema import connect_writer

    db_path.parent.mkdir(parents=True, exist_ok=True)
    db = connect_writer(db_path)
    state = read_state(db)
    if state.get(ROLE) == "active":
        db.close()
        log.warning("%s was written by this instance as the active gateway: rebuilding it from the journal", db_path)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{db_path}{suffix}")
        db = connect_writer(db_path)
        state = {}
    return db, int(state.get("applied_seq", 0))


__all__ = ["Fenced", "JetStreamGateway", "JetStreamStats", "LeaseLost", "ServerTooOld", "run_jetstream_gateway"]
