"""The fleet tier's streams (docs/fleet.md, "Transport"), created or brought up to date from
nurserywatch/fleet_layout.py: the site's out stream in its own JetStream domain, the central partition
streams that source it over the leaf node link, and the link state JetStream reports for each source.
JetStream does the store-and-forward; nothing here copies a message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StreamConfig, StreamInfo
from nats.js.errors import BadRequestError, NotFoundError
from nats.nuid import NUID

from gateway.service.site_out import Ensured as Ensured
from gateway.service.site_out import ensure_site_out_stream as ensure_site_out_stream
from gateway.service.site_out import ensure_stream
from nurserywatch.fleet_layout import FleetLayout, SiteOutLayout, partition_of
from nurserywatch.jetstream import MQTT_STREAM

#: Reply subjects of our requests to a site's JetStream over the leaf node: a site may answer on
#: ``$JSC.R.>`` only (nurserywatch/fleet_nats.py), never on a client's ``_INBOX``.
SITE_REPLY_PREFIX = "$JSC.R.fleet"
log = logging.getLogger(__name__)

#: Least time between two restarts of a partition's sources. Short: a restart right after the link returns
#: can itself fail (the site's interest not yet known on every central node) and leave the server's back-off
#: in charge again; the next poll after this retries while the site answers and its source is still silent.
RESTART_EVERY_S = 5.0
#: A source silent for longer than this is reported down. The centre hears from a healthy source at
#: least every idle heartbeat (about 1 s with nats-server 2.15); a cut link leaves it growing.
LINK_DOWN_AFTER_S = 5.0
#: JetStream's "stream name already in use" (JSStreamNameExistErr).
STREAM_NAME_IN_USE = 10058


async def ensure_partition_streams(
    hub_js: JetStreamContext,
    layout: FleetLayout,
    leaf_sites: Sequence[str],
    bridged_sites: Sequence[str],
) -> dict[int, Ensured]:
    """Every partition stream of ``layout`` on the centre, sourcing its leaf node sites' out streams
    and its bridged sites' messages from ``$MQTT_msgs`` (made or updated first: kept by limits, so a
    bridged site's messages wait there for the sources, whenever those start). A site listed twice is
    a ValueError."""
    both = set(leaf_sites) & set(bridged_sites)
    if both:
        raise ValueError(f"sites both leaf node and bridged: {', '.join(sorted(both))}")
    out: dict[int, Ensured] = {}
    if bridged_sites:
        await _ensure_mqtt_stream(hub_js, layout)
    for k in range(layout.partitions):
        leaf = [s for s in leaf_sites if partition_of(s, layout.partitions) == k]
        bridged = [s for s in bridged_sites if partition_of(s, layout.partitions) == k]
        out[k] = await ensure_stream(hub_js, layout.stream_config(k, leaf, bridged))
    return out


async def _ensure_mqtt_stream(hub_js: JetStreamContext, layout: FleetLayout) -> None:
    """``$MQTT_msgs`` as ``FleetLayout.mqtt_stream_config`` has it: made now if no MQTT client has made
    it yet, else updated (nats-server makes it an interest stream; it keeps the retention it finds)."""
    want = StreamConfig.from_response(layout.mqtt_stream_config())
    try:
        have = (await hub_js.stream_info(MQTT_STREAM)).config
    except NotFoundError:
        try:
            await hub_js.add_stream(want)
            return
        except BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise  # else: nats-server made it meanwhile, for an MQTT client
        have = (await hub_js.stream_info(MQTT_STREAM)).config
    if have.retention != want.retention or have.max_age != want.max_age:
        was = f"{have.retention}, max_age {have.max_age or 0:.0f} s"
        have.retention, have.max_age = want.retention, want.max_age
        await hub_js.update_stream(have)
        log.warning("%s now kept by %s for %.0f s (was %s)", MQTT_STREAM, want.retention, want.max_age or 0, was)


@dataclass(frozen=True, slots=True)
class SourceLink:
    """One leaf node site's link as its partition stream's source reports it."""

    site: str
    up: bool
    #: Messages the site's stream holds beyond what the centre sourced (as last reported by the site).
    lag: int
    #: Seconds since the centre last heard from the source (None: never).
    silent_s: float | None
    error: str | None


def source_links(
    info: StreamInfo, leaf_sites: Iterable[str], down_after_s: float = LINK_DOWN_AFTER_S
) -> dict[str, SourceLink]:
    """The link of each of ``leaf_sites`` that ``info`` (a partition stream's info) sources."""
    by_stream = {SiteOutLayout(site).stream: site for site in leaf_sites}
    out: dict[str, SourceLink] = {}
    for src in info.sources or []:
        site = by_stream.get(src.name)
        if site is None:
            continue
        # ``active`` is nanoseconds since the last message or heartbeat; -1 (or absent): none yet.
        silent = src.active / 1e9 if src.active is not None and src.active >= 0 else None
        error = None
        if src.error:
            error = str(src.error.get("description") or src.error)
        up = error is None and silent is not None and silent < down_after_s
        out[site] = SourceLink(site, up, int(src.lag or 0), silent, error)
    return out


async def partition_links(
    hub_js: JetStreamContext,
    layout: FleetLayout,
    k: int,
    leaf_sites: Iterable[str],
    down_after_s: float = LINK_DOWN_AFTER_S,
) -> dict[str, SourceLink]:
    """The links of partition k's leaf node sites, from its stream's info."""
    info = await hub_js.stream_info(layout.stream(k))
    return source_links(info, leaf_sites, down_after_s)


async def site_answers(nc: NatsClient, site: str, timeout_s: float = 2.0) -> bool:
    """Whether the site's JetStream answers over its leaf node link (its out stream's info)."""
    out = SiteOutLayout(site)
    inbox = f"{SITE_REPLY_PREFIX}.{NUID().next().decode()}"
    sub = await nc.subscribe(inbox, max_msgs=1)
    try:
        await nc.publish(f"{out.api_prefix}.STREAM.INFO.{out.stream}", b"", reply=inbox)
        msg = await sub.next_msg(timeout_s)
    except TimeoutError:
        return False
    finally:
        await sub.unsubscribe()
    try:
        answer = json.loads(msg.data)
    except ValueError:
        return False  # a status (503: no responders, the link is down)
    return isinstance(answer, dict) and "error" not in answer


@dataclass
class SourceRestarter:
    """Brings a partition's sources back as soon as a site's link is.

    nats-server retries a source that went silent with a growing back-off: its consumer request over a
    dead link times out after 30 s, then it waits 10 s per failure, up to 2 min (measured: a 60 s outage
    resumed 50 s after the link returned). When a site whose source is down answers over the leaf node,
    a leader step-down of the partition stream makes the new leader set its sources up at once; it
    resumes each from the last sequence it stored (nothing lost, nothing twice)."""

    nc: NatsClient
    layout: FleetLayout
    every_s: float = RESTART_EVERY_S
    _last: dict[int, float] = field(default_factory=dict)
    #: Step-downs done (partition → count).
    restarts: dict[int, int] = field(default_factory=dict)

    async def check(self, k: int, links: Mapping[str, SourceLink]) -> str | None:
        """Restart partition k's sources if a site that is down answers; the site, or None."""
        now = time.monotonic()
        if now - self._last.get(k, -self.every_s) < self.every_s:
            return None
        for site, link in sorted(links.items()):
            if link.up or not await site_answers(self.nc, site):
                continue
            self._last[k] = now
            return site if await self._step_down(k, f"site {site} answers again") else None
        return None

    async def _step_down(self, k: int, why: str) -> bool:
        stream = self.layout.stream(k)
        reply = await self.nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
        answer = json.loads(reply.data)
        if answer.get("success"):
            self.restarts[k] = self.restarts.get(k, 0) + 1
            log.info("%s: %s's leader stepped down to source it at once", why, stream)
            return True
        log.warning("%s, but %s's leader did not step down: %s", why, stream, answer)
        return False


def link_probe(
    layout: FleetLayout,
    leaf_sites: Iterable[str],
    down_after_s: float = LINK_DOWN_AFTER_S,
    restarter: SourceRestarter | None = None,
) -> Callable[[JetStreamContext, int], Awaitable[dict[str, tuple[bool, int]]]]:
    """The fleet worker's link hook (fleet/worker.py ``LinkProbe``): partition k → site → (up, lag).
    With a ``restarter``, a site back from an outage is sourced again at once (not after the server's
    back-off)."""
    sites = list(leaf_sites)

    async def probe(hub_js: JetStreamContext, k: int) -> dict[str, tuple[bool, int]]:
        info = await hub_js.stream_info(layout.stream(k))
        links = source_links(info, sites, down_after_s)
        if restarter is not None:
            # Decided on the leaf sites' links; a step-down restarts every source of the partition, the
            # bridged sites' one of $MQTT_msgs too — which loses nothing since that stream is kept by
            # limits (FleetLayout.mqtt_stream_config), not by interest.
            await restarter.check(k, links)
        return {site: (link.up, link.lag) for site, link in links.items()}

    return probe
