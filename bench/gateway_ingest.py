"""Sustained readings/s through the real gateway with nothing lost, as a ratio to a bare aiomqtt
subscriber receiving the same stream on the same machine (bench/README.md; target ≥ 0.8).

    .venv/bin/python bench/gateway_ingest.py [--readings 100000] [--scale 1] [--runs 3] [--transport mqtt|jetstream]

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
subscriber's in the same run, and the figure is the median of the runs' ratios (this host's speed
moves by up to 2× between runs, within a run much less; best-of-each across runs mixed two runs).
Anything not stored (rejected, lost) fails the run. The last line is the figure.

Also printed: the gateway process's peak RSS (``VmHWM``, start-up and drain: the backlog must not land
in its memory), and a second reference, a bare subscriber on the gateway's own receive path
(gateway/service/inbox.py: what the gateway's MQTT reading costs without the gateway's work).

``--transport jetstream``: a one-node nats-server (JetStream, its MQTT listener) instead of Mosquitto;
the readings are published over MQTT (QoS 1) into nats-server's own stream (``$MQTT_msgs``), kept
there for two durable pull consumers made before publishing: the gateway's
(``nurserywatch gateway --transport jetstream``) and the bare one — nats-py fetching 200 at a time
(the gateway's ``FETCH_BATCH``) and acknowledging each message, timed from its first fetch to its
last ack.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import aiomqtt
import nats
from nats.js import api as nats_api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import (  # noqa: E402
    Nursery,
    air,
    breathing,
    cpu_s,
    metrics,
    peak_rss_mb,
    posture,
    spawn,
    start_mosquitto,
    stop,
)
from gateway.service.inbox import Inbox  # noqa: E402
from nurserywatch.contract import Stream, TopicKind, reading_topic, subscription  # noqa: E402
from nurserywatch.jetstream import SiteLayout  # noqa: E402
from nurserywatch.nats_local import NATS_SERVER, NatsCluster  # noqa: E402
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
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=f"bench-pub-{i}", max_inflight_messages=100, logger=QUIET
        ) as c:
            mine = shares[i]
            for j in range(0, len(mine), 100):
                # gather starts the publishes in order and paho sends them in order: no reordering
                await asyncio.gather(*(c.publish(t, p, qos=1) for t, p in mine[j : j + 100]))

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    return len(messages) / (time.perf_counter() - t)


async def forget_session(port: int, ident: str) -> None:
    """End a persistent session (and its queue) at the broker: connect with a clean session."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=ident, clean_session=True):
        pass


async def bare_inbox(port: int, site: str, messages: list[tuple[str, bytes]]) -> float:
    """The bare subscriber on the gateway's receive path (gateway/service/inbox.py, bounded and
    buffered), acknowledging like the aiomqtt one (paho's automatic PUBACK)."""
    ident = "bench-bare-inbox"
    async with aiomqtt.Client("127.0.0.1", port, identifier=ident, clean_session=False) as c:
        await c.subscribe(subscription(site, TopicKind.READING), qos=1)
    await publish_all(port, messages)
    got = 0
    first = last = 0.0
    async with aiomqtt.Client("127.0.0.1", port, identifier=ident, clean_session=False) as c:
        inbox = Inbox(c)
        inbox.bound()
        while got < len(messages):
            if inbox.take() is None:
                await inbox.wait()
                continue
            last = time.perf_counter()
            if got == 0:
                first = last
            got += 1
    await forget_session(port, ident)
    return (len(messages) - 1) / (last - first)


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


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the gateway's process (``--profile``): raw collapsed stacks, 200 samples/s,
    without pausing it (``--nonblocking``: the drain is what is timed)."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    cmd = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--nonblocking", "--function"]
    return subprocess.Popen([*cmd, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise_profile(raw: Path, top: int = 25) -> str:
    """The functions with the most samples of a py-spy raw file: self (innermost frame) and total
    (anywhere on the stack), as shares of all samples taken while the gateway was busy."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.replace(str(Path(__file__).resolve().parent.parent) + "/", "") for f in stack.split(";")]
        if not frames or "select (selectors.py" in frames[-1]:
            continue  # the event loop waiting for the socket: idle
        k = int(count)
        samples += k
        own[frames[-1]] += k
        for f in set(frames):
            total[f] += k
    if not samples:
        return "no busy samples"
    lines = [f"{samples} busy samples; self% (innermost frame):"]
    lines += [f"  {100 * k / samples:5.1f}%  {f}" for f, k in own.most_common(top)]
    lines.append("total% (anywhere on the stack):")
    lines += [f"  {100 * k / samples:5.1f}%  {f}" for f, k in total.most_common(top)]
    return "\n".join(lines)


def gateway(mq: MosquittoProcess, n: Nursery, kit: Path, d: Path, messages: list[tuple[str, bytes]], run: int,
            profile: Path | None = None) -> tuple[float, float]:  # fmt: skip
    """The gateway's drain on Mosquitto: (readings/s, peak RSS in MB)."""
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
    try:
        rate, rss, _cpu = drain(args, url, d, f"gateway-{run}", db, len(messages), profile)
        return rate, rss
    finally:
        # Its persistent session would collect the next run's bare-subscriber stream (same topics).
        asyncio.run(forget_session(mq.port, f"nurserywatch-gateway-{n.site}"))


def drain(args: list[str], url: str, d: Path, name: str, db: Path, want: int,
          profile: Path | None = None) -> tuple[float, float, float]:  # fmt: skip
    """Start the gateway on a waiting backlog of ``want`` readings and follow its /metrics until every one
    is stored: (readings/s from its first received to the last stored, its peak RSS in MB, its CPU
    seconds from start to the last stored)."""
    proc = spawn(name, args, d)
    spy = None if profile is None else start_profile(proc.pid, profile)
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
        rss = peak_rss_mb(proc.pid)
        cpu = cpu_s(proc.pid)
    finally:
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
            spy.wait(timeout=30)
        stop(proc)
    rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    rejected = {k.split("reason=")[1].strip('"}'): int(v) for k, v in m.items() if "rejected" in k and v}
    if rows != want:
        raise SystemExit(f"lost readings: {rows} stored of {want}; rejected {rejected}")
    if rejected:  # redeliveries after a reconnect: refused as duplicate / stale, but each one is stored once
        print(f"  {name}: the broker redelivered after a reconnect; refused {rejected} (see below)")
    return (want - first_n) / (done_t - first_t), rss, cpu


# ---------------------------------------------------------------- --transport jetstream


async def js_consumers(nats_url: str, layout: SiteLayout, names: dict[str, str]) -> None:
    """Durable pull consumers of the site's input in nats-server's MQTT stream (name: ack policy), all
    else as the gateway's (max_ack_pending 1000), made before anything is published: the stream keeps a
    message (interest) until every consumer acknowledged it."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for name, ack_policy in names.items():
            cfg = {**layout.consumer_config(), "durable_name": name, "ack_policy": ack_policy}
            await js.add_consumer(layout.input_stream, nats_api.ConsumerConfig.from_response(cfg))
    finally:
        await nc.close()


async def bare_js(nats_url: str, layout: SiteLayout, name: str, want: int, per_batch: bool) -> float:
    """A bare nats-py consumer draining ``want`` messages: fetch 200, acknowledge each (``per_batch``:
    the batch's last, ack policy all); then removed."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        psub = await js.pull_subscribe_bind(durable=name, stream=layout.input_stream)
        got, first = 0, 0.0
        while got < want:
            try:
                msgs = await psub.fetch(200, timeout=1)
            except nats.errors.TimeoutError:
                continue
            if not first:
                first = time.perf_counter()
            for msg in msgs[-1:] if per_batch else msgs:
                await msg.ack()
            got += len(msgs)
        await nc.flush()
        last = time.perf_counter()
        await js.delete_consumer(layout.input_stream, name)
    finally:
        await nc.close()
    return got / (last - first)


def run_jetstream(args: argparse.Namespace, d: Path, n: Nursery, kit: Path, messages: list[tuple[str, bytes]]) -> None:
    cluster = NatsCluster(d / "nats", size=1)
    cluster.start()
    try:
        asyncio.run(cluster.warm())  # nats-server makes its MQTT streams at the first MQTT client
        layout = SiteLayout(n.site)
        nats_url, mqtt_port = cluster.nats_urls[0], cluster.mqtt_urls[0].port
        bare_rates, batch_rates, gw_rates, rss = [], [], [], []
        for run in range(args.runs):
            bare_name, batch_name = f"bench_bare_{run}", f"bench_batch_{run}"
            asyncio.run(js_consumers(nats_url, layout, {layout.consumer: "all", bare_name: "explicit",
                                                        batch_name: "all"}))  # fmt: skip
            pub = asyncio.run(publish_all(mqtt_port, messages))
            server = cluster.nodes[0].proc
            assert server is not None
            batch_rates.append(asyncio.run(bare_js(nats_url, layout, batch_name, len(messages), per_batch=True)))
            s0, c0 = cpu_s(server.pid), time.process_time()
            bare_rates.append(asyncio.run(bare_js(nats_url, layout, bare_name, len(messages), per_batch=False)))
            s1, c1 = cpu_s(server.pid), time.process_time()
            db = d / f"gw-js-{run}.sqlite3"
            mport = free_port()
            gw_args = ["gateway", "--config", str(kit), "--transport", "jetstream", "--nats", nats_url,
                       "--broker", str(cluster.mqtt_urls[0]), "--db", str(db), "--metrics-port", str(mport),
                       "--log-level", "warning"]  # fmt: skip
            raw = d / f"profile-js-{run}.txt" if args.profile else None
            rate, peak, gw_cpu = drain(gw_args, f"http://127.0.0.1:{mport}/metrics", d, f"gateway-js-{run}", db,
                                       len(messages), raw)  # fmt: skip
            s2 = cpu_s(server.pid)
            gw_rates.append(rate)
            rss.append(peak)
            asyncio.run(delete_consumer(nats_url, layout))  # the next run's gateway starts on a fresh file
            print(f"run {run + 1}: published {pub:,.0f} msg/s over MQTT; bare nats-py consumer {bare_rates[-1]:,.0f} "
                  f"readings/s ({batch_rates[-1]:,.0f} acknowledging once per batch), gateway {rate:,.0f} "
                  f"readings/s (all {len(messages)} stored), peak RSS {peak:.0f} MB")  # fmt: skip
            us = 1e6 / len(messages)
            print(f"  CPU per reading: nats-server {(s1 - s0) * us:.0f} us while the bare consumer drained, "
                  f"{(s2 - s1) * us:.0f} us while the gateway did; the bare consumer {(c1 - c0) * us:.0f} us, "
                  f"the gateway {gw_cpu * us:.0f} us (its start-up included)")  # fmt: skip
            if raw is not None:
                print(summarise_profile(raw))
    finally:
        cluster.stop()
    ratio, runs = per_run(gw_rates, bare_rates)
    batch_ratio, batch_runs = per_run(gw_rates, batch_rates)
    print(
        f"gateway_ingest (jetstream): {statistics.median(gw_rates):,.0f} readings/s sustained (median run), nothing "
        f"lost; bare nats-py pull consumer {statistics.median(bare_rates):,.0f}/s; ratio {ratio:.2f} (median of the "
        f"runs' own: {runs}; target >= 0.8); against a bare one acknowledging once per batch: {batch_ratio:.2f} "
        f"({batch_runs}); gateway peak RSS {max(rss):.0f} MB (target <= 150)"
    )


def per_run(gateway: list[float], bare: list[float]) -> tuple[float, str]:
    """The median of each run's gateway/bare ratio (both drained in the same run: the host's speed,
    which moves between runs, cancels out), and every run's."""
    ratios = [g / b for g, b in zip(gateway, bare, strict=True)]
    return statistics.median(ratios), " / ".join(f"{r:.2f}" for r in ratios)


async def delete_consumer(nats_url: str, layout: SiteLayout) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().delete_consumer(layout.input_stream, layout.consumer)
    finally:
        await nc.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--scale", type=int, default=1, help="nursery size: × (60 mats, 60 clips, 10 air sensors)")
    ap.add_argument("--runs", type=int, default=3, help="the figure is the median of the runs' ratios")
    ap.add_argument("--dir", type=Path, help="keep the logs and databases here (default: a temporary folder)")
    ap.add_argument("--transport", choices=("mqtt", "jetstream"), default="mqtt")
    ap.add_argument(
        "--profile", action="store_true", help="sample the gateway's drain with py-spy and print its top functions"
    )
    args = ap.parse_args()
    if args.readings < 2000:  # the gateway is timed by its /metrics, polled every 50 ms: fewer is not a rate
        ap.error(f"--readings {args.readings}: at least 2000 are needed to time a drain")
    with tempfile.TemporaryDirectory(prefix="nw-ingest-") as tmp:
        d = args.dir or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        n = Nursery(site="bench-ingest", scale=args.scale)
        kit = n.write_kit(d / "kit.yaml")
        messages = stream(n, args.readings)
        if args.transport == "jetstream":
            print(f"{len(messages)} readings of {len(n.mats)} mats, {len(n.clips)} clips, {len(n.air)} air sensors; "
                  f"nats-server {NATS_SERVER}")  # fmt: skip
            run_jetstream(args, d, n, kit, messages)
            return
        mq = start_mosquitto(d)
        try:
            pub = asyncio.run(publish_all(mq.port, messages[: min(20000, len(messages))], clients=4))
            print(f"{len(messages)} readings of {len(n.mats)} mats, {len(n.clips)} clips, {len(n.air)} air sensors; "
                  f"publisher alone {pub:,.0f} msg/s (to no subscriber)")  # fmt: skip
            bare_rates, inbox_rates, gw_rates, rss = [], [], [], []
            for run in range(args.runs):
                bare_rates.append(asyncio.run(bare(mq.port, f"{n.site}", messages)))
                inbox_rates.append(asyncio.run(bare_inbox(mq.port, f"{n.site}", messages)))
                raw = d / f"profile-{run}.txt" if args.profile else None
                rate, peak = gateway(mq, n, kit, d, messages, run, raw)
                gw_rates.append(rate)
                rss.append(peak)
                # the next run's readings must be new to the gateway's fresh database: same stream is fine
                print(f"run {run + 1}: bare aiomqtt subscriber {bare_rates[-1]:,.0f} readings/s, bare subscriber on "
                      f"the gateway's receive path {inbox_rates[-1]:,.0f}/s, gateway {gw_rates[-1]:,.0f} readings/s "
                      f"(all {len(messages)} stored), gateway peak RSS {peak:.0f} MB")  # fmt: skip
                if raw is not None:
                    print(summarise_profile(raw))
        finally:
            mq.stop()
    ratio, runs = per_run(gw_rates, bare_rates)
    inbox_ratio, inbox_runs = per_run(gw_rates, inbox_rates)
    print(
        f"gateway_ingest: {statistics.median(gw_rates):,.0f} readings/s sustained (median run), nothing lost; bare "
        f"aiomqtt subscriber {statistics.median(bare_rates):,.0f}/s; ratio {ratio:.2f} (median of the runs' own: "
        f"{runs}; target >= 0.8); {inbox_ratio:.2f} of a bare subscriber on the gateway's receive path "
        f"({inbox_runs}); gateway peak RSS {max(rss):.0f} MB (target <= 150)"
    )


if __name__ == "__main__":
    main()
