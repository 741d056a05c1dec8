"""Sustained readings/s through the real gateway with nothing lost, as a ratio to a bare aiomqtt
subscriber receiving the same stream on the same machine (bench/README.md; target ≥ 0.8).

    .venv/bin/python bench/gateway_ingest.py [--readings 100000] [--scale 1] [--runs 2]

The stream is a nursery's edge traffic (bench/stack.py): per simulated second one breathing reading
per mat, one posture reading per clip, one air reading per air sensor, each with its own seq and ts.
How it is measured — a *drain*, so that the consumer is the only thing timed:

1. the consumer (``nurserywatch gateway`` in its own process, or the bare subscriber) connects once
   with its persistent session (``clean_session=False``, QoS 1, as the gateway always does) and goes
   away;
2. the readings are published (QoS 1) and Mosquitto queues them for the absent session
   (``max_queued_messages 0``: unbounded);
3. the consumer comes back and the clock runs from its first message to its last: the bare
   subscriber counts messages; the gateway is followed through its /metrics (every 50 ms) until
   ``readings_stored_total`` equals the readings sent, and its SQLite is counted after it stops.

Both consumers get the same broker, queue and QoS; the ratio is the gateway's rate over the bare
subscriber's. Anything not stored (rejected, lost) fails the run. The last line is the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
import tempfile
import time
import zlib
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import Nursery, air, breathing, metrics, posture, spawn, start_mosquitto, stop  # noqa: E402
from nurserywatch.contract import Stream, TopicKind, reading_topic, subscription  # noqa: E402
from nurserywatch.ports import free_port  # noqa: E402
from tests.support.mosquitto import MosquittoProcess  # noqa: E402

#: aiomqtt logs a warning per publish waiting for the in-flight window; that is the point here.
QUIET = logging.getLogger("bench.mqtt")
QUIET.setLevel(logging.ERROR)


def stream(n: Nursery, count: int) -> list[tuple[str, bytes]]:
    """``count`` readings in the order the edge would send them, second by second."""
    t0 = int(time.time() * 1000) - (count // (len(n.mats) + len(n.clips) + len(n.air)) + 5) * 1000
    out: list[tuple[str, bytes]] = []
    k = 0
    while len(out) < count:
        ts = t0 + k * 1000
        for m in n.mats:
            out.append((reading_topic(n.site, m, Stream.BREATHING), breathing(k, ts)))
        for c in n.clips:
            out.append((reading_topic(n.site, c, Stream.POSTURE), posture(k, ts)))
        for a in n.air:
            out.append((reading_topic(n.site, a, Stream.AIR), air(k, ts)))
        k += 1
    return out[:count]


async def publish_all(port: int, messages: list[tuple[str, bytes]], clients: int = 4) -> float:
    """Publish every message (QoS 1, PUBACK awaited) from ``clients`` connections; returns msgs/s."""

    # Each device's readings from one connection, in order (as its edge agent sends them): a
    # device split over connections would arrive out of order and be refused as stale.
    shares: list[list[tuple[str, bytes]]] = [[] for _ in range(clients)]
    for topic, payload in messages:
        shares[zlib.crc32(topic.encode()) % clients].append((topic, payload))

    async def one(i: int) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-pub-{i}", max_inflight_messages=100,
                                  logger=QUIET) as c:
            mine = shares[i]
            for j in range(0, len(mine), 100):
                # gather starts the publishes in order and paho sends them in order: no reordering
                await asyncio.gather(*(c.publish(t, p, qos=1) for t, p in mine[j:j + 100]))

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    return len(messages) / (time.perf_counter() - t)


async def forget_session(port: int, ident: str) -> None:
    """End a persistent session (and its queue) at the broker: connect with a clean session."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=ident, clean_session=True):
        pass


async def bare(port: int, site: str, messages: list[tuple[str, bytes]]) -> float:
    ident = "bench-bare-subscriber"
    async with aiomqtt.Client("127.0.0.1", port, identifier=ident, clean_session=False) as c:
        await c.subscribe(subscription(site, TopicKind.READING), qos=1)
    await publish_all(port, messages)
    got = 0
    first = last = 0.0
    async with aiomqtt.Client("127.0.0.1", port, identifier=ident, clean_session=False) as c:
        async for _ in c.messages:
            last = time.perf_counter()
            if got == 0:
                first = last
            got += 1
            if got == len(messages):
                break
    await forget_session(port, ident)  # else it would collect the gateway run's stream
    return (len(messages) - 1) / (last - first)


def gateway(mq: MosquittoProcess, n: Nursery, kit: Path, d: Path, messages: list[tuple[str, bytes]], run: int) -> float:
    db = d / f"gw-{run}.sqlite3"
    mport = free_port()
    url = f"http://127.0.0.1:{mport}/metrics"
    args = ["gateway", "--config", str(kit), "--broker", str(mq.url), "--db", str(db),
            "--metrics-port", str(mport), "--log-level", "warning"]  # fmt: skip

    def wait_subscribed(proc: object) -> None:
        for _ in range(400):
            try:
                if metrics(url).get("nurserywatch_gateway_mqtt_sessions_total", 0) >= 1:
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.05)
        raise SystemExit(f"the gateway did not subscribe; see {d}/gateway-{run}.log")

    # 1: the gateway's persistent session exists, then it goes away
    proc = spawn(f"gateway-{run}a", args, d)
    wait_subscribed(proc)
    stop(proc)
    # 2: the stream is queued for it
    asyncio.run(publish_all(mq.port, messages))
    # 3: it comes back and drains the queue
    proc = spawn(f"gateway-{run}", args, d)
    want = len(messages)
    first_t, first_n = 0.0, 0
    stalled_since = time.perf_counter()
    last_n = -1
    try:
        while True:
            try:
                m = metrics(url)
            except Exception:
                time.sleep(0.02)
                continue
            now = time.perf_counter()
            stored = int(m.get("nurserywatch_gateway_readings_stored_total", 0))
            received = int(sum(v for k, v in m.items() if k.startswith("nurserywatch_gateway_readings_received_total")))
            if received and not first_t:
                first_t, first_n = now, received
            if stored >= want:
                done_t = now
                break
            if received != last_n:
                last_n, stalled_since = received, now
            elif now - stalled_since > 40:
                rejected = {k: v for k, v in m.items() if "rejected" in k}
                raise SystemExit(f"gateway stalled at {received} received / {stored} stored of {want}; {rejected}")
            time.sleep(0.05)
    finally:
        stop(proc)
        # Its persistent session would collect the next run's bare-subscriber stream (same topics).
        asyncio.run(forget_session(mq.port, f"nurserywatch-gateway-{n.site}"))
    rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    rejected = {k.split("reason=")[1].strip('"}'): int(v) for k, v in m.items() if "rejected" in k and v}
    if rows != want:
        raise SystemExit(f"lost readings: {rows} stored of {want}; rejected {rejected}")
    if rejected:  # redeliveries after a reconnect: refused as duplicate / stale, but each one is stored once
        print(f"  gateway run {run + 1}: the broker redelivered after a reconnect; refused {rejected} (see below)")
    return (want - first_n) / (done_t - first_t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--scale", type=int, default=1, help="nursery size: × (60 mats, 60 clips, 10 air sensors)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--dir", type=Path, help="keep the logs and databases here (default: a temporary folder)")
    args = ap.parse_args()
    if args.readings < 2000:  # the gateway is timed by its /metrics, polled every 50 ms: fewer is not a rate
        ap.error(f"--readings {args.readings}: at least 2000 are needed to time a drain")
    with tempfile.TemporaryDirectory(prefix="nw-ingest-") as tmp:
        d = args.dir or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        n = Nursery(site="bench-ingest", scale=args.scale)
        kit = n.write_kit(d / "kit.yaml")
        messages = stream(n, args.readings)
        mq = start_mosquitto(d)
        try:
            pub = asyncio.run(publish_all(mq.port, messages[: min(20000, len(messages))], clients=4))
            print(f"{len(messages)} readings of {len(n.mats)} mats, {len(n.clips)} clips, {len(n.air)} air sensors; "
                  f"publisher alone {pub:,.0f} msg/s (to no subscriber)")  # fmt: skip
            bare_rates, gw_rates = [], []
            for run in range(args.runs):
                bare_rates.append(asyncio.run(bare(mq.port, f"{n.site}", messages)))
                gw_rates.append(gateway(mq, n, kit, d, messages, run))
                # the next run's readings must be new to the gateway's fresh database: same stream is fine
                print(f"run {run + 1}: bare aiomqtt subscriber {bare_rates[-1]:,.0f} readings/s, "
                      f"gateway {gw_rates[-1]:,.0f} readings/s (all {len(messages)} stored)")
        finally:
            mq.stop()
    b, g = max(bare_rates), max(gw_rates)
    print(f"gateway_ingest: {g:,.0f} readings/s sustained, nothing lost; bare aiomqtt subscriber {b:,.0f}/s; "
          f"ratio {g / b:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
