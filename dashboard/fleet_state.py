"""The fleet board's copy of the cross-site state: every ``fleet.state.SiteState`` of the
``FleetLayout.state_bucket`` key-value bucket on the central NATS cluster, kept live by one watch.

Why a watch rather than a read per request: the fleet workers rewrite a site's key whenever its state
changes, so one watch (an ordered consumer of the bucket's last value per key, then every update) keeps
the board current at the cost of the changes only, and a page or API call reads memory — a read per
request would be one KV get per site, 10,000 of them for a whole fleet, on every refresh of every
board. A lost connection or watch is re-established and re-read from the start (last value per key),
so the copy converges again; ``synced`` says whether it holds the bucket's current contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import nats
import nats.errors
import nats.js.errors
from pydantic import ValidationError

from fleet.state import SiteState
from nurserywatch.clock import Clock, SystemClock
from nurserywatch.fleet_layout import FleetLayout

log = logging.getLogger(__name__)

KEY_PREFIX = "site."
#: Seconds between attempts while the cluster or the bucket is not there yet (workers create it).
RETRY_S = 2.0


class FleetStateCopy:
    """``sites``: site → its latest SiteState. Bad entries are counted in ``rejected`` and logged, never
    raised: one site's unreadable state must not blank the board for the others."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.sites: dict[str, SiteState] = {}
        self.rejected: Counter[str] = Counter()
        #: Connected to NATS and watching the bucket.
        self.connected = False
        #: The initial values have all arrived since the (last) watch started.
        self.synced = False
        #: When the copy last changed (the board's clock, ms).
        self.changed_ms: int | None = None

    def apply(self, key: str, value: bytes | None, deleted: bool = False) -> None:
        """One entry of the bucket: a site's new state, or its key deleted (the site left the fleet)."""
        if not key.startswith(KEY_PREFIX):
            self._reject("bad_key", f"key {key[:80]!r} is not site.<site>")
            return
        site = key[len(KEY_PREFIX) :]
        if deleted or not value:
            if self.sites.pop(site, None) is not None:
                self.changed_ms = self.clock.now_ms()
            return
        try:
            state = SiteState.model_validate_json(value)
        except ValidationError as exc:
            self._reject("bad_state", f"state of {site!r} unreadable: {exc.error_count()} problem(s), first: "
                         f"{exc.errors()[0]['msg']}")  # fmt: skip
            return
        if state.site != site:
            self._reject("site_mismatch", f"key {key!r} holds the state of {state.site!r}")
            return
        self.sites[site] = state
        self.changed_ms = self.clock.now_ms()

    def _reject(self, reason: str, message: str) -> None:
        self.rejected[reason] += 1
        if self.rejected[reason] in (1, 10, 100) or self.rejected[reason] % 1000 == 0:  # bounded log
            log.warning("fleet state: %s (%d so far)", message, self.rejected[reason])


def connect_options(servers: Sequence[str], user: str | None, password: str | None) -> dict[str, Any]:
    """nats.connect's user and password: given, else a ``user:password@`` of a server URL (given as
    options so that the nodes the cluster announces get them too)."""
    if user is not None:
        return {"user": user, "password": password or ""}
    for url in servers:
        parts = urlsplit(url)
        if parts.username is not None and parts.password is not None:
            return {"user": unquote(parts.username), "password": unquote(parts.password)}
    return {}


async def watch_fleet_state(
    copy: FleetStateCopy,
    servers: Sequence[str],
    *,
    domain: str | None = None,
    user: str | None = None,
    password: str | None = None,
    bucket: str = FleetLayout.state_bucket,
) -> None:
    """Keep ``copy`` equal to the bucket until cancelled: connect (retrying), watch every key, and start
    again from the bucket's current contents after any loss. ``domain``: the central JetStream domain
    when the board reaches it through a leaf node (None: the cluster it connects to)."""
    plain = [s.split("@", 1)[-1] if "@" in s else s for s in servers]
    shown = ", ".join(p.split("//", 1)[-1] for p in plain)
    auth = connect_options(servers, user, password)
    said: set[str] = set()

    def once(what: str, message: str) -> None:  # one line per kind of trouble until it clears
        if what not in said:
            said.add(what)
            log.warning(message)

    while True:
        nc = None
        lost = asyncio.Event()

        async def on_disconnect(lost: asyncio.Event = lost) -> None:
            lost.set()

        async def on_error(exc: Exception) -> None:
            once("nats-error", f"fleet state: NATS error {exc!r}")

        try:
            nc = await nats.connect(servers=plain, name="nurserywatch-fleet-board", connect_timeout=2,
                                    allow_reconnect=False, disconnected_cb=on_disconnect, error_cb=on_error,
                                    **auth)  # fmt: skip
            kv = await nc.jetstream(domain=domain).key_value(bucket)
            watcher = await kv.watch(f"{KEY_PREFIX}>")
            copy.connected, copy.synced = True, False
            seen: set[str] = set()
            said.clear()
            log.info("fleet board watching %s on %s", bucket, shown)
            while not lost.is_set():
                try:
                    entry = await watcher.updates(timeout=RETRY_S)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    continue
                if entry is None:  # the initial values are all in: drop sites no longer in the bucket
                    for gone in set(copy.sites) - seen:
                        copy.apply(KEY_PREFIX + gone, None, deleted=True)
                    copy.synced = True
                    continue
                deleted = entry.operation in ("DEL", "PURGE")
                if not copy.synced:
                    seen.add(entry.key[len(KEY_PREFIX) :])
                copy.apply(entry.key, entry.value, deleted)
            once("lost", f"fleet state: connection to {shown} lost; reconnecting")
        except nats.js.errors.BucketNotFoundError:
            once("bucket", f"fleet state: no bucket {bucket!r} on {shown} yet (the fleet workers create it)")
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            once("connect", f"fleet state: cannot read {bucket!r} from {shown} ({exc!r}); retrying")
        finally:
            copy.connected = False
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()
        await asyncio.sleep(RETRY_S)
