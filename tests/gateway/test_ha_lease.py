"""The lease (gateway/ha/lease.py) on a REAL nats-server: one holder at a time; a holder that stops
renewing loses it to the other within the TTL and a renew period; one whose own clock says the TTL
passed since its last renewal (a paused process) knows it lost it before it sends anything."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.kv import KeyValue

from gateway.ha.lease import Lease, lease_bucket
from nurserywatch.jetstream import SiteLayout
from tests.support.nats_cluster import NatsCluster
from tests.support.swallowed_cancel import SwallowedCancel
from tests.support.waiting import wait_until

TTL_S, RENEW_S = 2.0, 0.5  # shorter than the site's (4 s, 1 s): the same logic, a quicker test
_sites = itertools.count()


@pytest.fixture
def node(nats_node: NatsCluster) -> NatsCluster:
    return nats_node


@contextlib.asynccontextmanager
async def bucket(cluster: NatsCluster) -> AsyncIterator[KeyValue]:
    nc = await nats.connect(cluster.nats_urls)
    try:
        yield await lease_bucket(nc.jetstream(), SiteLayout(f"lease{next(_sites)}"), replicas=1, ttl_s=TTL_S)
    finally:
        await nc.close()


class FakeMonotonic:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


async def test_one_holder_and_the_other_takes_over_when_it_stops_renewing(node: NatsCluster) -> None:
    async with bucket(node) as kv:
        a, b = Lease(kv, "a", ttl_s=TTL_S, renew_s=RENEW_S), Lease(kv, "b", ttl_s=TTL_S, renew_s=RENEW_S)
        assert await a.acquire() and a.held
        assert not await b.acquire() and not b.held
        keeper = asyncio.create_task(a.keep())
        standby = asyncio.create_task(b.wait_acquired())
        await asyncio.sleep(2 * TTL_S)  # renewed all along: b never gets it (a span, not a wait for a condition)
        assert not standby.done() and await b.holder() == "a" and a.held
        keeper.cancel()  # a stops renewing (dead, or paused)
        stopped = time.monotonic()
        await asyncio.wait_for(standby, TTL_S + 3 * RENEW_S + 5)
        took = time.monotonic() - stopped
        assert b.held and await b.holder() == "b"
        assert not await a.renew() and a.lost.is_set() and not a.held, "a sees it lost the lease"
    print(f"lease taken over {took:.2f} s after the holder stopped renewing (TTL {TTL_S} s, renew {RENEW_S} s)")
    assert took <= TTL_S + RENEW_S + 1.0


async def test_a_holder_paused_past_the_ttl_knows_it_on_waking_without_asking(node: NatsCluster) -> None:
    async with bucket(node) as kv:
        clock = FakeMonotonic()
        a = Lease(kv, "a", ttl_s=TTL_S, renew_s=RENEW_S, monotonic=clock)
        assert await a.acquire()
        clock.offset = TTL_S + 0.01  # woke from a pause longer than the TTL
        assert not a.held
        rev = a.revision
        assert not await a.renew() and a.lost.is_set()
        # It did not renew (the key still has its revision, and expires on its own).
        assert (await kv.get("active")).revision == rev
        b = Lease(kv, "b", ttl_s=TTL_S, renew_s=RENEW_S)
        await wait_until(b.acquire, "b to take the expired lease", TTL_S + 5, every_s=0.1)


async def test_release_hands_over_at_once(node: NatsCluster) -> None:
    async with bucket(node) as kv:
        a, b = Lease(kv, "a", ttl_s=TTL_S, renew_s=RENEW_S), Lease(kv, "b", ttl_s=TTL_S, renew_s=RENEW_S)
        assert await a.acquire()
        await a.release()
        assert await b.acquire() and await b.holder() == "b"


async def test_contenders_racing_the_expiry_get_a_clean_no_and_one_of_them_wins(node: NatsCluster) -> None:
    """nats-py's ``create`` re-reads a key it found present; if the key expires in between, that read
    raises KeyNotFound. A standby polling at the expiry must take that as "not yet", not crash
    (a CI run hit it once at a 0.1 s poll; polling without pause hits it far more often)."""
    async with bucket(node) as kv:
        assert await Lease(kv, "old", ttl_s=TTL_S, renew_s=RENEW_S).acquire()  # never renewed: expires
        contenders = [Lease(kv, name, ttl_s=TTL_S, renew_s=RENEW_S) for name in "bcd"]
        tries = 0

        async def poll(lease: Lease) -> None:
            nonlocal tries
            deadline = time.monotonic() + TTL_S + 5
            while time.monotonic() < deadline:
                tries += 1
                if await lease.acquire():
                    return
                if any(other.held for other in contenders):
                    return
                await asyncio.sleep(0)

        await asyncio.gather(*(poll(lease) for lease in contenders))
        winners = [lease.instance for lease in contenders if lease.held]
        assert len(winners) == 1, winners
        assert await contenders[0].holder() == winners[0]
    print(f"{tries} acquire calls across the expiry, winner {winners[0]}")


async def test_a_keeper_cancelled_as_a_renewal_is_answered_stops(node: NatsCluster) -> None:
    """A SIGTERM landing with a renewal's reply (Python 3.11's wait_for loses it) must not leave the
    keeper renewing: a stopping gateway would hold the lease until it was killed."""
    async with bucket(node) as kv:
        a = Lease(kv, "a", ttl_s=TTL_S, renew_s=0.05)
        assert await a.acquire()
        sc = SwallowedCancel()
        real_renew = a.renew

        async def renew() -> bool:
            return bool(await sc.wait(await real_renew()))

        a.renew = renew  # type: ignore[method-assign]
        keeper = asyncio.create_task(a.keep())
        await sc.complete_and_cancel(keeper)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(keeper, 2)
        assert sc.calls_after == 0, "no renewal after the cancellation"
