"""A fleet worker (``nurserywatch fleet --instance w1``; docs/fleet.md, "Fleet workers").

It connects to the central NATS cluster (any of its nodes, reconnecting), keeps a heartbeat in
``WORKERS_BUCKET`` and holds its fair share of the partition leases (fleet/shares.py). For each partition
it holds, it fetches from the partition stream's durable consumer ``fleet`` in batches, applies each
message to its site's ``SiteState`` (fleet/reduce.py), and then, in this order:

1. the batch's readings into the time-series store (in the database, or in the writer's on-disk buffer);
2. each changed ``SiteState`` into the ``fleet_state`` bucket, fenced by the key's revision (a worker that
   lost the partition cannot overwrite its successor's state);
3. the messages acknowledged.

A crash anywhere before 3 redelivers the batch: the readings are written again (the same points), the
state skips what it already holds (``last_seq``). Losing the lease stops the partition before the next
write. Times: the centre's clock (``Clock``) for the state, a monotonic clock for the leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from fleet.config import FleetConfig, SiteLink
from fleet.reduce import SiteInfo, apply, new_state
from fleet.shares import WORKERS_BUCKET, beat, fair_share, kv_bucket, leave, live_workers, preferred_order, surplus
from fleet.state import LinkState, SiteState
from fleet.streams import SourceRestarter, ensure_partition_streams
from fleet.streams import link_probe as source_link_probe
from fleet.tsdb import FleetInfluxWriter, fleet_line, fleet_writer
from gateway.engine.site import RateLimitedLog
from gateway.ha.lease import Lease
from gateway.service.jetstream import JS_REQUEST_TIMEOUT_S, cluster_replicas
from nurserywatch.cancellation import raise_if_cancel_was_swallowed
from nurserywatch.clock import Clock
from nurserywatch.contract import ContractError, parse_topic
from nurserywatch.fleet_layout import FleetLayout, SiteOutLayout
from nurserywatch.jetstream import MQTT_STREAM, subject_to_topic
from nurserywatch.mqtt import MqttCredentials

log = logging.getLogger(__name__)

#: Messages fetched at a time (the consumer's max_ack_pending bounds what is in flight on the server).
FETCH_BATCH = 500
#: An unchanged link state is written again after this long (its ``checked_ms``: the check is recent).
LINK_REWRITE_MS = 60_000
#: The header JetStream puts on a message it sourced from another stream: ``<stream>[:<api hash>] <seq> …``.
SOURCE_HEADER = "Nats-Stream-Source"

#: The leaf node links of partition k's sources, per site: (up, messages the site holds not sourced yet);
#: fleet/streams.py ``link_probe`` by default.
LinkProbe = Callable[[JetStreamContext, int], Awaitable[dict[str, tuple[bool, int]]]]


class PartitionLost(Exception):
    """The partition's lease is not ours any more (expired, taken over, or the state was written by another)."""


@dataclass
class WorkerStats:
    applied: int = 0
    replays: int = 0
    rejected: int = 0
    acked: int = 0
    #: Messages of a site the fleet file does not list (or from a stream of none): acknowledged, not applied.
    unknown_site: int = 0
    lines_written: int = 0
    lines_buffered: int = 0
    state_writes: int = 0
    takeovers: int = 0
    #: Rounds of heartbeat and rebalancing done.
    balances: int = 0
    held: list[int] = field(default_factory=list)


@dataclass
class _Cached:
    state: SiteState
    #: The key's revision in the state bucket (None: not there yet).
    revision: int | None


class PartitionWorker:
    """Consumes one partition while its lease holds."""

    def __init__(self, worker: FleetWorker, k: int, lease: Lease) -> None:
        self.w = worker
        self.k = k
        self.lease = lease
        self._states: dict[str, _Cached] = {}
        self._next_link_poll = 0.0

    def _check(self) -> None:
        if not self.lease.held:
            raise PartitionLost(f"partition {self.k}: lease not held by {self.lease.instance} any more")

    async def run(self) -> None:
        keep = asyncio.create_task(self.lease.keep(), name=f"lease-p{self.k}")
        try:
            psub = await self._subscribe()
            try:
                while True:
                    raise_if_cancel_was_swallowed()
                    self._check()
                    msgs = await self._fetch(psub)
                    self._check()
                    if msgs:
                        await self._handle(msgs)
                    await self._poll_links()
            finally:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()
        except PartitionLost as exc:
            log.warning("%s; stopped consuming it", exc)
        finally:
            keep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        js, layout, stream = self.w.js, self.w.layout, self.w.layout.stream(self.k)
        while True:
            raise_if_cancel_was_swallowed()
            self._check()
            try:
                try:
                    await js.consumer_info(stream, layout.consumer)
                except APIError as exc:
                    if exc.code != 404 or exc.err_code == 10059:  # 10059: no such stream (yet)
                        raise
                    await js.add_consumer(stream, api.ConsumerConfig.from_response(layout.consumer_config()))
                # What a worker before this one fetched and never acknowledged comes again now, in order.
                with contextlib.suppress(APIError):
                    await js.reset_consumer(stream, layout.consumer)
                return await js.pull_subscribe_bind(durable=layout.consumer, stream=stream)
            except (APIError, TimeoutError, nats.errors.Error) as exc:
                self.w.said(
                    logging.WARNING, f"sub-{self.k}", f"partition {self.k}: stream {stream} not ready ({exc}); retrying"
                )
                await asyncio.sleep(self.w.cfg.lease_renew_s / 2)

    async def _fetch(self, psub: JetStreamContext.PullSubscription) -> list[Msg]:
        wait = min(1.0, self.w.cfg.lease_renew_s / 2)
        try:
            return await psub.fetch(self.w.fetch_batch, timeout=wait)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except (nats.errors.Error, APIError) as exc:  # no responders while the cluster elects a leader, …
            self.w.said(logging.WARNING, f"fetch-{self.k}", f"partition {self.k}: fetch failed: {exc}")
            await asyncio.sleep(0.2)
            return []

    def _origin(self, msg: Msg) -> str | None:
        """The site a message came from: the leaf node site whose out stream it was sourced from; for one
        sourced from the central MQTT stream (a bridged site's), its subject's site — which the centre's
        permissions tie to its sender — if that site is a bridged one."""
        source = (msg.headers or {}).get(SOURCE_HEADER, "")
        stream = source.split(" ", 1)[0].split(":", 1)[0]
        if stream != MQTT_STREAM:
            return self.w.stream_sites.get(stream)
        try:
            site = parse_topic(subject_to_topic(msg.subject)).site
        except ContractError:
            return None
        return site if site in self.w.bridged_sites else None

    async def _state(self, site: str) -> _Cached:
        cached = self._states.get(site)
        if cached is not None:
            return cached
        info = self.w.sites[site]
        try:
            entry = await self.w.state_kv.get(self.w.layout.state_key(site))
        except KeyNotFoundError:
            cached = _Cached(new_state(info), None)
        else:
            try:
                state = SiteState.model_validate_json(entry.value or b"")
            except ValidationError as exc:
                log.error("state of site %s in the bucket is unreadable (%s); starting it afresh", site, exc)
                state = new_state(info)
            cached = _Cached(state, entry.revision)
        self._states[site] = cached
        return cached

    async def _handle(self, msgs: list[Msg]) -> None:
        try:
            await self._apply_and_write(msgs)
        except PartitionLost:
            raise
        except (TimeoutError, nats.errors.Error, APIError) as exc:
            # Not acknowledged: delivered again at once; the state is read back from the bucket.
            self.w.said(logging.WARNING, f"write-{self.k}", f"partition {self.k}: batch not stored ({exc!r}); again")
            self._states.clear()
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.nak()

    async def _apply_and_write(self, msgs: list[Msg]) -> None:
        now = self.w.clock.now_ms()
        changed: set[str] = set()
        lines: list[str] = []
        stats = self.w.stats
        for msg in msgs:
            site = self._origin(msg)
            info = self.w.sites.get(site) if site is not None else None
            if info is None:
                stats.unknown_site += 1
                self.w.said(
                    logging.WARNING, "unknown-site", f"{msg.subject}: from a site not in the fleet file ({site})"
                )
                continue
            cached = await self._state(info.site)
            out = apply(cached.state, info, msg.subject, msg.data, msg.metadata.sequence.stream, now)
            if out.replay:
                stats.replays += 1
                continue
            stats.applied += 1
            changed.add(info.site)
            if out.rejected is not None:
                stats.rejected += 1
                self.w.said(logging.WARNING, f"rejected-{out.rejected}", f"site {info.site}: refused: {out.problem}")
            if out.reading is not None:
                device, stream, reading = out.reading
                dev = cached.state.devices.get(device)
                line = fleet_line(info.site, dev.room if dev else None, device, stream, reading)
                if line is not None:
                    lines.append(line)
        self._check()
        if lines and self.w.writer is not None:
            if await self.w.writer.write_now(lines):
                stats.lines_written += len(lines)
            else:
                stats.lines_buffered += len(lines)
        await self._write_states(changed)
        self._check()
        for msg in msgs:
            await msg.ack()
        stats.acked += len(msgs)

    async def _write_states(self, sites: set[str]) -> None:
        for site in sorted(sites):
            self._check()
            cached = self._states[site]
            key, value = self.w.layout.state_key(site), cached.state.model_dump_json().encode()
            try:
                if cached.revision is None:
                    cached.revision = await self.w.state_kv.create(key, value)
                else:
                    cached.revision = await self.w.state_kv.update(key, value, last=cached.revision)
            except KeyWrongLastSequenceError:
                self._states.clear()
                raise PartitionLost(f"partition {self.k}: site {site}'s state was written by another worker") from None
            self.w.stats.state_writes += 1

    async def _poll_links(self) -> None:
        probe = self.w.link_probe
        loop = asyncio.get_running_loop()
        if probe is None or loop.time() < self._next_link_poll:
            return
        self._next_link_poll = loop.time() + self.w.cfg.link_poll_s
        try:
            links = await probe(self.w.js, self.k)
        except (TimeoutError, nats.errors.Error, APIError) as exc:
            self.w.said(logging.WARNING, f"link-{self.k}", f"partition {self.k}: link state not read ({exc})")
            return
        now = self.w.clock.now_ms()
        changed: set[str] = set()
        for site, (up, pending) in links.items():
            if site not in self.w.sites:
                continue
            state = (await self._state(site)).state
            old = state.link
            down_since = None if up else (old.down_since_ms if not old.up and old.down_since_ms else now)
            new = LinkState(up=up, down_since_ms=down_since, pending=pending, checked_ms=now)
            # Written when it changed, or now and then so the board sees the check is recent.
            if (old.up, old.down_since_ms, old.pending) != (up, down_since, pending) or (
                now - (old.checked_ms or 0) >= LINK_REWRITE_MS
            ):
                changed.add(site)
            state.link = new
        await self._write_states(changed)


class FleetWorker:
    def __init__(
        self,
        cfg: FleetConfig,
        instance: str,
        nc: NatsClient,
        clock: Clock,
        *,
        writer: FleetInfluxWriter | None = None,
        infos: Sequence[SiteInfo] = (),
        link_probe: LinkProbe | None = None,
        fetch_batch: int = FETCH_BATCH,
    ) -> None:
        self.cfg = cfg
        self.instance = instance
        self.nc = nc
        self.js = nc.jetstream(timeout=JS_REQUEST_TIMEOUT_S * 5)
        self.clock = clock
        self.writer = writer
        self.layout = FleetLayout(cfg.partitions, replicas=cluster_replicas(nc))
        self.sites = {i.site: i for i in infos}
        self.stream_sites = {SiteOutLayout(s.id).stream: s.id for s in cfg.sites if s.link is SiteLink.LEAF}
        self.bridged_sites = {s.id for s in cfg.sites if s.link is SiteLink.MQTT_BRIDGE}
        self.link_probe = link_probe
        self.fetch_batch = fetch_batch
        self.stats = WorkerStats()
        self.said = RateLimitedLog(log)
        self._tasks: dict[int, tuple[asyncio.Task[None], Lease]] = {}
        self.state_kv: KeyValue
        self._leases: KeyValue
        self._workers: KeyValue
        self.ready = asyncio.Event()

    async def _buckets(self) -> None:
        """The lease, heartbeat and state buckets, and the partition streams as the fleet file has them."""
        replicas = cluster_replicas(self.nc)
        ttl = self.cfg.lease_ttl_s
        while True:
            raise_if_cancel_was_swallowed()
            try:
                self._leases = await kv_bucket(self.js, self.layout.lease_bucket, replicas, ttl)
                self._workers = await kv_bucket(self.js, WORKERS_BUCKET, replicas, ttl)
                self.state_kv = await kv_bucket(self.js, self.layout.state_bucket, replicas)
                await ensure_partition_streams(self.js, self.layout, leaf_sites(self.cfg), bridged_sites(self.cfg))
                return
            except (TimeoutError, nats.errors.Error, APIError) as exc:
                self.said(logging.WARNING, "buckets", f"key-value buckets not reachable ({exc}); retrying")
                await asyncio.sleep(self.cfg.lease_renew_s)

    async def run(self) -> None:
        """Until cancelled: heartbeat, rebalance and consume (every ``lease_renew_s``); on cancel the
        partitions are stopped and their leases released, so the others take them at once."""
        await self._buckets()
        try:
            while True:
                raise_if_cancel_was_swallowed()
                try:
                    await self._balance()
                except (TimeoutError, nats.errors.Error, APIError) as exc:
                    self.said(logging.WARNING, "balance", f"cannot reach the lease buckets ({exc}); retrying")
                self.ready.set()
                await asyncio.sleep(self.cfg.lease_renew_s)
        finally:
            await self._stop_all()

    async def _balance(self) -> None:
        for k, (task, lease) in list(self._tasks.items()):
            if task.done():  # the lease was lost, or the partition failed
                del self._tasks[k]
                if not task.cancelled() and (exc := task.exception()) is not None:
                    log.error("partition %d stopped: %r; released, to be taken again", k, exc, exc_info=exc)
                    await lease.release()
        await beat(self._workers, self.instance)
        live = await live_workers(self._workers)
        share = fair_share(self.layout.partitions, len(live))
        for k in surplus(list(self._tasks), share):
            await self._stop(k, release=True)
            log.info("partition %d released to balance %d worker(s)", k, len(live))
        for k in preferred_order(self.layout.partitions, self.instance, live):
            if len(self._tasks) >= share:
                break
            if k in self._tasks:
                continue
            lease = Lease(self._leases, self.instance, key=self.layout.lease_key(k), ttl_s=self.cfg.lease_ttl_s,
                          renew_s=self.cfg.lease_renew_s)  # fmt: skip
            if await lease.try_acquire():
                self.stats.takeovers += 1
                task = asyncio.create_task(PartitionWorker(self, k, lease).run(), name=f"partition-{k}")
                self._tasks[k] = (task, lease)
        self.stats.held = sorted(self._tasks)
        self.stats.balances += 1

    async def _stop(self, k: int, *, release: bool) -> None:
        task, lease = self._tasks.pop(k)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if release:
            await lease.release()

    async def _stop_all(self) -> None:
        for k in list(self._tasks):
            with contextlib.suppress(Exception):
                await self._stop(k, release=True)
        with contextlib.suppress(Exception):
            await leave(self._workers, self.instance)
        self.stats.held = []


def leaf_sites(cfg: FleetConfig) -> list[str]:
    return [s.id for s in cfg.sites if s.link is SiteLink.LEAF]


def bridged_sites(cfg: FleetConfig) -> list[str]:
    return [s.id for s in cfg.sites if s.link is SiteLink.MQTT_BRIDGE]


def site_infos(cfg: FleetConfig) -> list[SiteInfo]:
    """What the reducer needs of every site of the fleet file (keys read: raises FleetError)."""
    from nurserywatch.clock import time_zone
    from nurserywatch.fleet_layout import partition_of

    keys = cfg.public_keys()
    return [SiteInfo(s.id, partition_of(s.id, cfg.partitions), time_zone(s.timezone), keys[s.id]) for s in cfg.sites]


async def run_fleet(
    cfg: FleetConfig,
    instance: str,
    clock: Clock,
    *,
    credentials: MqttCredentials | None = None,
    stats: WorkerStats | None = None,
    link_probe: LinkProbe | None = None,
) -> None:
    """``nurserywatch fleet``: one worker until cancelled (SIGTERM: leases released, buffer flushed).
    ``credentials``: the fleet file's ``nats.credentials``, read (``nurserywatch.mqtt.load_credentials``)."""
    from gateway.influx.writer import running_writer
    from gateway.service.jetstream import connect_nats

    infos = site_infos(cfg)
    nc = await connect_nats(cfg.nats.urls, f"nurserywatch-fleet-{instance}", credentials)
    try:
        async with contextlib.AsyncExitStack() as stack:
            writer = None
            if cfg.timeseries is not None:
                writer = fleet_writer(cfg.timeseries, buffer_path(cfg, instance))
                stack.callback(writer.buffer.close)
                await stack.enter_async_context(running_writer(writer))
            # The restarter: a site back from an outage is sourced again at once, not after nats-server's
            # back-off of up to 2 min (fleet/streams.py).
            restarter = SourceRestarter(nc, cfg.layout)
            probe = link_probe or source_link_probe(cfg.layout, leaf_sites(cfg), restarter=restarter)
            worker = FleetWorker(cfg, instance, nc, clock, writer=writer, infos=infos, link_probe=probe)
            if stats is not None:
                worker.stats = stats
            log.info("fleet worker %s: %d site(s), %d partition(s)", instance, len(infos), cfg.partitions)
            await worker.run()
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def buffer_path(cfg: FleetConfig, instance: str) -> Path:
    """The instance's own on-disk buffer (two workers on one machine must not share one), folder made."""
    assert cfg.timeseries is not None
    path = cfg.resolve(cfg.timeseries.buffer_path)
    path = path.with_name(f"{path.stem}-{instance}{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
