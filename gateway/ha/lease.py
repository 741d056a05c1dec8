"""The lease that makes one gateway instance of a site the active one: key ``active`` of a JetStream
key-value bucket (``SiteLayout.lease_bucket``) whose messages expire after ``LEASE_TTL_S``.

* acquire: ``kv.create`` — succeeds only while the key is absent (never set, or expired);
* renew: ``kv.update(last=revision)`` every ``LEASE_RENEW_S`` — a wrong revision or a key gone means
  another instance holds it now, or could: the lease is lost;
* held: only until ``LEASE_TTL_S`` after the last renew *was sent*, on this process's monotonic clock
  (injectable): the key expires on the server no sooner, so an instance that was paused (SIGSTOP)
  knows on waking, before it sends anything, that it may not act as the active one any more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from nurserywatch.cancellation import raise_if_cancel_was_swallowed
from nurserywatch.jetstream import LEASE_RENEW_S, LEASE_TTL_S, SiteLayout

log = logging.getLogger(__name__)


async def lease_bucket(js: JetStreamContext, layout: SiteLayout, replicas: int, ttl_s: float = LEASE_TTL_S) -> KeyValue:
    """The site's lease bucket, created if missing."""
    try:
        return await js.key_value(layout.lease_bucket)
    except NotFoundError:  # BucketNotFoundError
        pass
    return await js.create_key_value(bucket=layout.lease_bucket, ttl=ttl_s, history=1, replicas=replicas)


class Lease:
    """This instance's claim on the ``active`` key."""

    def __init__(
        self,
        kv: KeyValue,
        instance: str,
        *,
        key: str = SiteLayout.lease_key,
        ttl_s: float = LEASE_TTL_S,
        renew_s: float = LEASE_RENEW_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kv = kv
        self.instance = instance
        self.key = key
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self._monotonic = monotonic
        self.revision: int | None = None
        self._valid_until = 0.0
        self.lost = asyncio.Event()

    @property
    def held(self) -> bool:
        """Held now: acquired or renewed less than ``ttl_s`` ago (by when it was sent), not lost since."""
        return self.revision is not None and self._monotonic() < self._valid_until

    async def holder(self) -> str | None:
        """The instance holding the lease now (None: nobody)."""
        try:
            entry = await self.kv.get(self.key)
        except KeyNotFoundError:
            return None
        return None if entry.value is None else entry.value.decode()

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it."""
        sent = self._monotonic()
        try:
            self.revision = await self.kv.create(self.key, self.instance.encode())
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            # KeyNotFound: nats-py's create re-reads a key it found present; it expired in between.
            return False
        self._valid_until = sent + self.ttl_s
        self.lost.clear()
        log.info("lease %s taken by %s (revision %d)", self.key, self.instance, self.revision)
        return True

    async def renew(self) -> bool:
        """Renew the lease; False (and ``lost`` set) when it was lost."""
        if self.revision is None:
            return False
        if not self.held:
            return self._lose("not renewed within its TTL (paused, or JetStream unreachable)")
        sent = self._monotonic()
        try:
            self.revision = await self.kv.update(self.key, self.instance.encode(), last=self.revision)
        except KeyWrongLastSequenceError:
            return self._lose("taken over, or expired, since the last renewal")
        self._valid_until = sent + self.ttl_s
        return True

    def _lose(self, why: str) -> bool:
        if self.revision is not None:
            log.error("lease %s LOST by %s: %s", self.key, self.instance, why)
        self.revision = None
        self.lost.set()
        return False

    async def wait_acquired(self, poll_s: float | None = None) -> None:
        """As a standby: try every ``poll_s`` (the renew period) until the lease is ours."""
        poll = self.renew_s if poll_s is None else poll_s
        while not await self.try_acquire():
            raise_if_cancel_was_swallowed()
            await asyncio.sleep(poll)

    async def try_acquire(self) -> bool:
        """``acquire``, a cluster that does not answer (electing leaders) taken as a no."""
        try:
            return await self.acquire()
        except (TimeoutError, nats.errors.Error) as exc:  # a cluster electing leaders: no responders, timeouts
            log.warning("lease: cannot reach the bucket (%s); retrying", exc)
            return False

    async def keep(self) -> None:
        """As the active one: renew every ``renew_s`` until lost (returns then)."""
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                renewed = await self.renew()
            except Exception as exc:  # a timeout: try again while the lease still holds locally
                log.warning("lease: renewal failed (%s)", exc)
                if not self.held:
                    self._lose("not renewed within its TTL")
                    return
                continue
            raise_if_cancel_was_swallowed()  # a renewal request answered as the keeper was cancelled
            if not renewed:
                return

    async def release(self) -> None:
        """Give the lease up (a clean stop): the standby need not wait for it to expire."""
        if self.revision is None:
            return
        rev, self.revision = self.revision, None
        try:
            await self.kv.delete(self.key, last=rev)
        except Exception as exc:
            log.warning("lease: could not release (%s); it expires in %.0f s", exc, self.ttl_s)
