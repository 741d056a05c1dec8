"""Which partitions a fleet worker should hold: every live worker keeps a heartbeat key in the
``WORKERS_BUCKET`` key-value bucket (TTL: a dead worker's key expires), and takes at most its fair share
of the partitions — ceil(partitions / live workers) — through the partition leases (gateway/ha/lease.py).
A worker holding more than its share releases the surplus, so a newcomer gets some; a dead worker's
leases expire and the others take them. The arithmetic is pure; the buckets are the worker's.
"""

from __future__ import annotations

import math

from nats.js import JetStreamContext
from nats.js.errors import NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from nurserywatch.contract import check_ident

#: Heartbeat keys of the live workers, one per ``--instance``.
WORKERS_BUCKET = "fleet_workers"


def fair_share(partitions: int, live: int) -> int:
    return math.ceil(partitions / max(1, live))


def preferred_order(partitions: int, instance: str, live: list[str]) -> list[int]:
    """The partitions in the order this worker tries them: starting at its own slice (its rank among the
    live workers), so that workers starting together do not all race for partition 0."""
    rank = sorted(live).index(instance) if instance in live else 0
    start = rank * fair_share(partitions, len(live))
    return [(start + i) % partitions for i in range(partitions)]


def surplus(held: list[int], share: int) -> list[int]:
    """The partitions to release when holding more than ``share``: the highest numbers."""
    return sorted(held)[share:] if len(held) > share else []


async def kv_bucket(js: JetStreamContext, name: str, replicas: int, ttl_s: float | None = None) -> KeyValue:
    """A key-value bucket, created if missing (an existing one is used as it is)."""
    try:
        return await js.key_value(name)
    except NotFoundError:
        pass
    return await js.create_key_value(bucket=name, ttl=ttl_s, history=1, replicas=replicas)


async def beat(kv: KeyValue, instance: str) -> None:
    await kv.put(check_ident(instance, "instance"), b"alive")


async def live_workers(kv: KeyValue) -> list[str]:
    """Instances whose heartbeat has not expired."""
    try:
        return sorted(await kv.keys())
    except NoKeysError:
        return []


async def leave(kv: KeyValue, instance: str) -> None:
    """A clean stop: the others need not wait for the heartbeat to expire."""
    await kv.delete(instance)
