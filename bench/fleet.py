"""The fleet tier at scale on one machine (issue 16, bench/README.md "Fleet", docs/scale.md).

    .venv/bin/python bench/fleet.py [--sites 50] [--devices 10] [--seconds 120] [--leaf 3] [--dir D]

What runs, all real processes on loopback: the central cluster (3 nats-server nodes, JetStream domain
``hub``, leaf node and MQTT listeners, the FLEET account with one user per site:
nurserywatch/fleet_nats.py), two fleet workers (``nurserywatch fleet --instance w1|w2``) writing to
InfluxDB 1.6.7, and N sites driven by the light traffic generator (tests/support/site_traffic.py:
readings, statuses, heartbeats, alert lifecycles, signed records heads; one MQTT connection per site,
QoS 1, with its PUBACK audit).

The sites, chosen for one 2-core machine: ``--leaf`` of them (default 3) are real leaf node sites —
each its own nats-server (domain ``site-{site}``, its out stream ``NW_OUT_{SITE}``) whose leaf node
remote reaches the centre through a TCP proxy (tests/support/fleet_cluster.py ``LeafSite``), the
generator publishing to the site's MQTT listener. The others are "bridged" sites, but without a
Mosquitto process each: the generator publishes straight to the central MQTT listener with the
site's own user (``site-{site}``, allowed its own prefix only), as a site's Mosquitto bridge would —
the connection per site, the credentials and the subjects are the bridge's; Mosquitto's own queueing
is not exercised (docs/fleet.md, "Mosquitto sites"). A nats-server per site for hundreds of sites
would need more CPU than this machine has (50 of them took 1.1 cores); ``--leaf N`` sets how many.

During the run, at 30 % of it, ``kill -9`` of the central node leading partition stream FLEET_P0,
restarted 10 s later; at 60 %, ``kill -9`` of worker w1, restarted 5 s later (as systemd would).

Then, once nothing is pending on the partitions' consumers and every site's count is complete (or has
not moved for ``STABLE_S``: what the centre acknowledged and lost never comes), the audit, per site:
every reading the generator got a PUBACK for is counted in the site's ``SiteState.readings`` in
``fleet_state`` (more: a reading sent again after a failover, counted twice — at least once) and is a
point in InfluxDB (per site and device: count of points = distinct acknowledged readings; a point
written twice is stored once).
Alert lag: a KV watch of ``fleet_state`` (what the fleet board watches) notes when each alert id first
appears; the lag is from the alert's time (its scheduled publish time, the site's clock = this
machine's) to then, and from the PUBACK to then. Memory: the peak RSS (VmHWM) of each worker and
central node, divided by sites. CPU: each role's CPU seconds (from /proc) over the run, and readings
per CPU-second — one core's worth of that role. Storage: the partition streams' bytes per message, and
InfluxDB's TSM files per reading after a full compaction (forced within seconds by the bench's config).
The last line is the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
from nats.aio.client import Client as NatsClient
from nats.js.errors import KeyNotFoundError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleet.state import SiteState  # noqa: E402
from fleet.streams import ensure_site_out_stream  # noqa: E402
from nurserywatch.clock import SystemClock  # noqa: E402
from nurserywatch.contract import TopicKind, parse_topic  # noqa: E402
from nurserywatch.fleet_layout import FleetLayout  # noqa: E402
from nurserywatch.fleet_nats import FleetSite, hub_accounts, site_user  # noqa: E402
from nurserywatch.mqtt import BrokerURL  # noqa: E402
from nurserywatch.nats_local import NatsCluster  # noqa: E402
from nurserywatch.ports import free_port  # noqa: E402
from tests.support.fleet_cluster import LeafSite  # noqa: E402
from tests.support.influx_servers import DB, INFLUXD, Server, influx_config  # noqa: E402
from tests.support.processes import spawn, stop  # noqa: E402
from tests.support.site_traffic import Audit, Message, SiteTraffic, TrafficConfig, publish  # noqa: E402

WORKERS = ("w1", "w2")
NODE_DOWN_S = 10.0
WORKER_DOWN_S = 5.0
KILL_WINDOW_MS = 20_000
STABLE_S = 15.0


def say(text: str) -> None:
    print(text, flush=True)


class CountedTraffic(SiteTraffic):
    """The generator, counting each site's bytes (topic + payload) as it hands messages out."""

    def __init__(self, config: TrafficConfig, start_ms: int) -> None:
        super().__init__(config, start_ms)
        self.bytes: Counter[str] = Counter()

    def due(self, now_ms: int) -> list[Message]:
        out = super().due(now_ms)
        for m in out:
            self.bytes[m.site] += len(m.topic) + len(m.payload)
        return out


# ------------------------------------------------------------------ processes and their cost


def _proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _machine_busy() -> tuple[int, int]:
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


@dataclass
class Meter:
    """CPU seconds and peak RSS per role, sampled from /proc every 0.5 s (a killed process keeps its
    last sample)."""

    pids: dict[int, str] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)
    hwm: dict[int, int] = field(default_factory=dict)
    base: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def add(self, pid: int, role: str) -> None:
        self.pids[pid] = role
        self.sample()

    def sample(self) -> None:
        for pid in list(self.pids):
            cpu, hwm = _proc_cpu_s(pid), _proc_hwm_kb(pid)
            if cpu is not None:
                self.cpu[pid] = cpu
            if hwm is not None:
                self.hwm[pid] = max(hwm, self.hwm.get(pid, 0))

    def mark(self) -> None:
        """From now on: CPU is counted from here."""
        self.sample()
        self.base = dict(self.cpu)

    def run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self.sample()

    def role_cpu(self, role: str) -> float:
        return sum(self.cpu[p] - self.base.get(p, 0.0) for p, r in self.pids.items() if r == role and p in self.cpu)

    def role_hwm_mb(self, role: str) -> list[float]:
        return [self.hwm[p] / 1024 for p, r in self.pids.items() if r == role and p in self.hwm]


# ------------------------------------------------------------------ the fleet


@dataclass
class Fleet:
    d: Path
    traffic: CountedTraffic
    leaf: list[str]
    bridged: list[str]
    partitions: int
    meter: Meter
    hub: NatsCluster = field(init=False)
    leaf_sites: dict[str, LeafSite] = field(default_factory=dict)
    influx: Server | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    worker_password: str = "bench-fleet-password"
    fleet_file: Path = field(init=False)
    restarts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.passwords = {s: f"pw-{s}" for s in (*self.leaf, *self.bridged)}
        accounts = hub_accounts(
            [FleetSite(s, self.passwords[s]) for s in self.leaf]
            + [FleetSite(s, self.passwords[s], bridged=True) for s in self.bridged],
            self.worker_password,
            "bench-sys-password",
        )
        self.hub = NatsCluster(self.d / "hub", 3, extra=accounts, name="fleet-hub", domain="hub",
                               leafnode_listen=True, own_session=True)  # fmt: skip

    def hub_urls(self) -> list[str]:
        return [u.replace("nats://", f"nats://fleet:{self.worker_password}@") for u in self.hub.nats_urls]

    def broker_for(self, site: str) -> list[BrokerURL]:
        """A leaf site publishes to its own NATS; a bridged one to the centre's MQTT listeners, with its
        own user, starting at a different node per site (as provisioning spreads them)."""
        if site in self.leaf_sites:
            return [self.leaf_sites[site].mqtt_url]
        urls = [dataclasses.replace(u, username=site_user(site), password=self.passwords[site])
                for u in self.hub.mqtt_urls]  # fmt: skip
        i = int(site[-4:]) % len(urls)
        return urls[i:] + urls[:i]

    def start(self) -> None:
        self.hub.start()
        for node in self.hub.nodes:
            assert node.proc is not None
            self.meter.add(node.proc.pid, "central nats-server")
        # Each made and started in turn, once the centre listens: a site's proxies bind free ports, which
        # must not be ports the centre or another site has picked and not bound yet.
        for s in self.leaf:
            # LeafSite names its node after the site ({site}-n1): the centre drops a leaf connection when
            # another server of the same name links in the same account (docs/fleet.md, Transport).
            leaf = self.leaf_sites[s] = LeafSite(self.d / f"site-{s}", s, self.passwords[s], self.hub)
            leaf.nats.start()
            for node in leaf.nats.nodes:
                assert node.proc is not None
                self.meter.add(node.proc.pid, "site nats-server")
        port = free_port()
        conf = self.d / "influxdb.conf"
        # Cold shards compacted within seconds, not InfluxDB's 4 h: the bytes per reading are then TSM's.
        text = influx_config(self.d / "influxdb", port, free_port())
        conf.write_text(text.replace("[data]\n", '[data]\n  cache-snapshot-write-cold-duration = "5s"\n'
                                     '  compact-full-write-cold-duration = "10s"\n'))  # fmt: skip
        self.influx = Server(f"http://127.0.0.1:{port}", [str(INFLUXD), "run", "-config", str(conf)], "/ping",
                             self.d / "influxd.log")  # fmt: skip
        self.influx.start()
        assert self.influx.proc is not None
        self.meter.add(self.influx.proc.pid, "influxd")
        self.fleet_file = self._write_fleet_file()
        for w in WORKERS:
            self.start_worker(w)

    def _write_fleet_file(self) -> Path:
        (self.d / "keys").mkdir(exist_ok=True)
        keys = self.traffic.write_public_keys(self.d / "keys")
        body = {
            "nats": {"urls": self.hub_urls()},
            "partitions": self.partitions,
            "timeseries": {"url": self.influx.url if self.influx else None, "api": "v1", "database": DB,
                           "buffer_path": "buffer.sqlite3"},
            "link_poll_s": 2,
            "sites": [{"id": s, "name": s, "link": "leaf" if s in self.leaf_sites else "mqtt_bridge",
                       "timezone": self.traffic.config.timezone,
                       "records_key": str(keys[s].relative_to(self.d))} for s in self.traffic.sites],
        }  # fmt: skip
        path = self.d / "fleet.yaml"
        path.write_text(json.dumps(body))  # JSON is YAML
        return path

    def start_worker(self, name: str) -> None:
        n = self.restarts[name]
        self.restarts[name] += 1
        proc, _log = spawn(f"fleet-{name}-{n}", ["fleet", "-c", str(self.fleet_file), "--instance", name], self.d)
        self.workers[name] = proc
        self.meter.add(proc.pid, "fleet worker")

    def kill_worker(self, name: str) -> None:
        os.killpg(self.workers[name].pid, signal.SIGKILL)
        self.workers[name].wait()

    def restart_node(self, i: int) -> None:
        self.hub.start(i)
        proc = self.hub.nodes[i].proc
        assert proc is not None
        self.meter.add(proc.pid, "central nats-server")

    def stop(self) -> None:
        """Whatever was started (also after a start that failed half-way)."""
        for p in self.workers.values():
            stop(p, signal.SIGTERM)
        for leaf in self.leaf_sites.values():
            leaf.stop()
        if self.influx is not None:
            self.influx.stop()
        self.hub.stop()


# ------------------------------------------------------------------ what the board sees


@dataclass
class AlertWatch:
    """When each alert id first appeared in ``fleet_state`` (a KV watch, as the board's)."""

    seen: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    updates: int = 0
    bytes: int = 0

    async def run(self, nc: NatsClient) -> None:
        kv = await nc.jetstream().key_value(FleetLayout.state_bucket)
        watcher = await kv.watch("site.>")
        async for entry in watcher:
            if entry is None or not entry.value:
                continue
            self.updates += 1
            self.bytes += len(entry.value)
            state = json.loads(entry.value)
            for aid in state.get("alerts", {}):
                key = (state["site"], aid)
                if key not in self.seen:
                    self.seen[key] = (int(time.time() * 1000), time.perf_counter())


async def connect(fleet: Fleet) -> NatsClient:
    return await nats.connect(servers=fleet.hub_urls(), max_reconnect_attempts=-1, reconnect_time_wait=0.5)


async def wait_for_bucket(nc: NatsClient, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await nc.jetstream().key_value(FleetLayout.state_bucket)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def leases(nc: NatsClient) -> dict[str, str]:
    kv = await nc.jetstream().key_value(FleetLayout.lease_bucket)
    out = {}
    with contextlib.suppress(Exception):
        for k in await kv.keys():
            with contextlib.suppress(KeyNotFoundError):
                out[k] = ((await kv.get(k)).value or b"").decode()
    return out


async def consumers_done(nc: NatsClient, partitions: int) -> bool:
    layout = FleetLayout(partitions)
    try:
        for k in range(partitions):
            info = await nc.jetstream(timeout=5).consumer_info(layout.stream(k), layout.consumer)
            if info.num_pending or info.num_ack_pending:
                return False
    except Exception:  # a leader being elected
        return False
    return True


async def site_readings(nc: NatsClient, sites: list[str]) -> dict[str, int]:
    kv = await nc.jetstream(timeout=10).key_value(FleetLayout.state_bucket)
    out = {}
    for s in sites:
        try:
            entry = await kv.get(FleetLayout.state_key(s))
        except KeyNotFoundError:
            out[s] = 0
            continue
        out[s] = SiteState.model_validate_json(entry.value or b"").readings
    return out


async def influx_points(url: str) -> Counter[tuple[str, str]]:
    rows: Counter[tuple[str, str]] = Counter()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.get("/query", params={"db": DB, "q": "SELECT count(seq) FROM breathing, posture, air "
                                                             "GROUP BY site, device"})  # fmt: skip
    r.raise_for_status()
    if not r.json()["results"][0].get("series"):
        say(f"InfluxDB answered no series: {r.text[:300]}")
    for s in r.json()["results"][0].get("series", []):
        rows[(s["tags"]["site"], s["tags"]["device"])] += int(s["values"][0][1])
    return rows


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def du_bytes(path: Path, suffix: str = "") -> int:
    return sum(f.stat().st_size for f in path.rglob(f"*{suffix}") if f.is_file())


async def compacted_bytes(d: Path, timeout_s: float = 60.0) -> int:
    """InfluxDB's data once its WAL is snapshotted into TSM files (the configured cold durations), else
    what there is (TSM + WAL) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while du_bytes(d / "wal", ".wal") > 0 and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
    await asyncio.sleep(12.0)  # a full compaction of the cold shard
    return du_bytes(d / "data", ".tsm") + du_bytes(d / "wal", ".wal")


# ------------------------------------------------------------------ the run


async def run(args: argparse.Namespace, d: Path) -> None:
    cfg = TrafficConfig(sites=args.sites, devices=args.devices, seed=args.seed,
                        incident_mean_ms=args.incident_s * 1000)  # fmt: skip
    clock = SystemClock()
    ids = cfg.site_ids()
    leaf, bridged = ids[: args.leaf], ids[args.leaf :]
    meter = Meter()
    meter.add(os.getpid(), "bench (generator + watch)")
    # The traffic's time base is set when publishing starts (below); this instance only writes the keys.
    fleet = Fleet(d, CountedTraffic(cfg, clock.now_ms()), leaf, bridged, args.partitions, meter)
    say(f"fleet: {cfg.sites} sites ({len(leaf)} leaf node sites, each its own nats-server behind a TCP proxy; "
        f"{len(bridged)} bridged sites publishing to the central MQTT listener with their own user, no "
        f"Mosquitto process), {cfg.devices} devices each = {cfg.sites * cfg.devices} devices; 3 central nodes, "
        f"{args.partitions} partitions, 2 workers, InfluxDB 1.6.7; {args.seconds} s; logs in {d}")  # fmt: skip
    sampler = threading.Thread(target=meter.run, daemon=True)
    sampler.start()
    watch_task: asyncio.Task[None] | None = None
    nc: NatsClient | None = None
    try:
        fleet.start()
        nc = await connect(fleet)
        for s, site in fleet.leaf_sites.items():
            site_nc = await nats.connect(site.nats_url)
            await ensure_site_out_stream(site_nc.jetstream(), s, replicas=1)
            await site_nc.close()
        await wait_for_bucket(nc)
        deadline = time.monotonic() + 60
        while Counter((await leases(nc)).values()) != Counter({w: args.partitions // 2 for w in WORKERS}):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers did not split the partitions: {await leases(nc)}")
            await asyncio.sleep(0.5)
        watch = AlertWatch()
        watch_task = asyncio.create_task(watch.run(nc))

        start = clock.now_ms()
        traffic = CountedTraffic(cfg, start)
        audit = Audit()
        events: list[str] = []
        #: Wall-clock ms of each kill: alerts raised within KILL_WINDOW_MS after one are set apart.
        kills_ms: list[int] = []

        async def chaos() -> None:
            await asyncio.sleep(args.seconds * 0.3)
            info = await nc.jetstream().stream_info(FleetLayout(args.partitions).stream(0))
            leader = info.cluster.leader if info.cluster else "n1"
            i = [n.name for n in fleet.hub.nodes].index(leader or "n1")
            led = []
            for k in range(args.partitions):
                si = await nc.jetstream().stream_info(FleetLayout(args.partitions).stream(k))
                if si.cluster and si.cluster.leader == leader:
                    led.append(k)
            fleet.hub.kill(i)
            kills_ms.append(clock.now_ms())
            t = time.monotonic()
            events.append(f"kill -9 central node {leader} (leader of FLEET_P{led}) at {args.seconds * 0.3:.0f} s")
            say(events[-1])
            await asyncio.sleep(NODE_DOWN_S)
            await asyncio.to_thread(fleet.restart_node, i)
            events.append(f"  restarted after {time.monotonic() - t:.1f} s")
            say(events[-1])
            await asyncio.sleep(max(0.0, args.seconds * 0.6 - (time.monotonic() - started)))
            fleet.kill_worker("w1")
            kills_ms.append(clock.now_ms())
            t = time.monotonic()
            events.append(f"kill -9 worker w1 at {args.seconds * 0.6:.0f} s")
            say(events[-1])
            await asyncio.sleep(WORKER_DOWN_S)
            fleet.start_worker("w1")
            events.append(f"  restarted after {time.monotonic() - t:.1f} s")
            say(events[-1])

        load0 = os.getloadavg()[0]
        busy0 = _machine_busy()
        meter.mark()
        bench_cpu0 = time.process_time()
        started = time.monotonic()
        chaos_task = asyncio.create_task(chaos())
        await publish(traffic, fleet.broker_for, clock, start + args.seconds * 1000, audit=audit, settle_s=60)
        published_s = audit.finished_s - audit.started_s
        await chaos_task
        busy1 = _machine_busy()

        # What the centre owes: every acknowledged reading.
        acked = audit.acked
        readings = [s for s in acked if parse_topic(s.topic).kind is TopicKind.READING]
        want_site = Counter(s.site for s in readings)
        want_dev: Counter[tuple[str, str]] = Counter()
        for site_id, topic, _digest in {(r.site, r.topic, r.digest) for r in readings}:  # distinct readings
            want_dev[(site_id, topic.rsplit("/", 2)[1])] += 1
        drain0 = time.monotonic()
        assert fleet.influx is not None
        # Caught up: every partition's consumer has nothing pending or unacknowledged (a worker acknowledges
        # a batch after its readings are in InfluxDB and its states in the bucket).
        # A leaf node site's messages reach the partition stream by its source: until every site's readings
        # are counted too (or the time is up).
        # Readings the centre acknowledged and lost never come: done once nothing is pending and the counts
        # have not moved for STABLE_S.
        caught_up, counted, moved = False, -1, time.monotonic()
        while time.monotonic() - drain0 < args.drain_s:
            got_site = await site_readings(nc, ids)
            if sum(got_site.values()) != counted:
                counted, moved = sum(got_site.values()), time.monotonic()
            if await consumers_done(nc, args.partitions):
                caught_up = all(got_site.get(s, 0) >= n for s, n in want_site.items())
                if caught_up or time.monotonic() - moved >= STABLE_S:
                    break
            await asyncio.sleep(0.5)
        drain_s = moved - drain0
        got_site = await site_readings(nc, ids)
        got_dev = await influx_points(fleet.influx.url)
        meter.stop()
        bench_cpu = time.process_time() - bench_cpu0
        total_s = published_s + drain_s

        short = {s: (n, got_site.get(s, 0)) for s, n in want_site.items() if got_site.get(s, 0) < n}
        if short:
            say(f"sites short in fleet_state (acknowledged, counted): {dict(list(short.items())[:10])}")
            for k in range(args.partitions):
                si = await nc.jetstream(timeout=10).stream_info(FleetLayout(args.partitions).stream(k))
                for src in si.sources or []:
                    site_of = src.name.removeprefix("NW_OUT_").lower()
                    if site_of in short:
                        say(f"  source {src.name}: lag {src.lag}, active {src.active}, error {src.error}")
        lost_state = sum(max(0, n - got_site.get(s, 0)) for s, n in want_site.items())
        lost_leaf = sum(max(0, n - got_site.get(s, 0)) for s, n in want_site.items() if s in fleet.leaf_sites)
        twice_state = sum(max(0, got_site.get(s, 0) - n) for s, n in want_site.items())
        lost_influx = sum(max(0, n - got_dev[k]) for k, n in want_dev.items())
        extra_influx = sum(max(0, got_dev[k] - n) for k, n in want_dev.items()) + sum(
            v for k, v in got_dev.items() if k not in want_dev
        )

        # Alert lag: each alert's first message (its raise), to its first appearance in the state.
        first: dict[tuple[str, str], tuple[int, float | None]] = {}
        for sent in audit.sent:
            if parse_topic(sent.topic).kind is TopicKind.ALERT and sent.acked:
                first.setdefault((sent.site, sent.topic.rsplit("/", 1)[1]), (sent.ts, sent.acked_s))
        lag_ts, lag_ack, lag_steady = [], [], []
        for alert, (ts, acked_s) in first.items():
            if alert in watch.seen:
                seen_ms, seen_perf = watch.seen[alert]
                lag_ts.append(float(seen_ms - ts))
                if not any(k - KILL_WINDOW_MS // 4 <= ts <= k + KILL_WINDOW_MS for k in kills_ms):
                    lag_steady.append(float(seen_ms - ts))
                if acked_s is not None:
                    lag_ack.append((seen_perf - acked_s) * 1000)
        unseen = len(first) - len(lag_ts)

        # Storage: the partition streams' bytes per message (one replica), InfluxDB's files.
        js = nc.jetstream(timeout=10)
        stream_msgs = stream_bytes = 0
        for k in range(args.partitions):
            si = await js.stream_info(FleetLayout(args.partitions).stream(k))
            stream_msgs += si.state.messages
            stream_bytes += si.state.bytes
        influx_bytes = await compacted_bytes(d / "influxdb")
        leaf_in = leaf_msgs = 0
        for node in fleet.hub.nodes:
            with contextlib.suppress(Exception):
                async with httpx.AsyncClient(timeout=5) as client:
                    r = await client.get(f"http://127.0.0.1:{node.monitor_port}/leafz")
                for lf in r.json().get("leafs", []):
                    leaf_in += int(lf.get("in_bytes", 0))
                    leaf_msgs += int(lf.get("in_msgs", 0))

        n_read = len(readings)
        rate = n_read / published_s
        msg_rate = len(acked) / published_s
        hub_mb, worker_mb = meter.role_hwm_mb("central nats-server"), meter.role_hwm_mb("fleet worker")
        live_hub = [n.proc.pid for n in fleet.hub.nodes if n.proc is not None]
        busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
        app_bytes = sum(traffic.bytes.values())
        cpu = {r: meter.role_cpu(r) for r in ("central nats-server", "fleet worker", "influxd", "site nats-server")}
        cpu["bench (generator + watch)"] = bench_cpu

        say("")
        say(f"sites: {cfg.sites} ({len(leaf)} leaf, {len(bridged)} bridged-direct), devices {cfg.sites * cfg.devices}")
        for e in events:
            say(e)
        say(f"published: {len(acked)} messages acknowledged ({n_read} readings) of {len(audit.sent)} in "
            f"{published_s:.1f} s = {msg_rate:.0f} msg/s, {rate:.0f} readings/s; failovers {audit.failovers}; "
            f"not acknowledged {dict(audit.errors)}")  # fmt: skip
        say(f"{'caught up' if caught_up else 'drained (some never came)'} {max(0.0, drain_s):.1f} s after the "
            "last publish; "
            f"state.readings: lost {lost_state}, counted twice "
            f"{twice_state} (sent again after a failover); InfluxDB points: missing {lost_influx}, extra {extra_influx}"
            f" (per site and device)")  # fmt: skip
        say(f"alerts: {len(first)} raised, {len(lag_ts)} seen in fleet_state ({unseen} never: resolved and "
            f"acknowledged within one batch); lag from the alert's time p50 {percentile(lag_ts, 0.5):.0f} ms, "
            f"p99 {percentile(lag_ts, 0.99):.0f} ms, max {max(lag_ts, default=float('nan')):.0f} ms; from its "
            f"PUBACK p50 {percentile(lag_ack, 0.5):.0f} ms, p99 {percentile(lag_ack, 0.99):.0f} ms; "
            f"{watch.updates} state updates watched ({watch.updates / cfg.sites / total_s:.2f} per site per s, "
            f"{watch.bytes / max(1, watch.updates):.0f} B each); away from the kills (not within "
            f"-{KILL_WINDOW_MS // 4000}…+{KILL_WINDOW_MS // 1000} s of one) {len(lag_steady)} alerts, "
            f"p50 {percentile(lag_steady, 0.5):.0f} ms, p99 {percentile(lag_steady, 0.99):.0f} ms")  # fmt: skip
        say(f"memory (peak RSS): workers {' + '.join(f'{m:.0f}' for m in worker_mb)} MB, central nodes "
            f"{' + '.join(f'{m:.0f}' for m in hub_mb)} MB (restarted node counted twice); per site: worker "
            f"{max(worker_mb) * 1024 / cfg.sites:.0f} kB (largest worker / sites), central "
            f"{sum(hub_mb) / len(hub_mb) * 3 * 1024 / cfg.sites:.0f} kB (3 nodes' mean x 3 / sites); "
            f"live central pids {len(live_hub)}")  # fmt: skip
        say(
            f"CPU over {total_s:.0f} s (machine {os.cpu_count()} cores, {busy:.0%} busy while publishing, load average "
            f"{load0:.1f} before it): " + ", ".join(f"{r} {c:.1f} s" for r, c in cpu.items())
        )
        say("readings per CPU-second (one core's worth): "
            + ", ".join(f"{r} {n_read / c:.0f}" for r, c in cpu.items() if c > 0))  # fmt: skip
        say(f"storage: partition streams {stream_msgs} messages, {stream_bytes} bytes = "
            f"{stream_bytes / max(1, stream_msgs):.0f} B/message (one replica); InfluxDB "
            f"{influx_bytes} bytes = {influx_bytes / max(1, n_read):.1f} B/reading (TSM files after compaction, "
            "WAL if any left; a short run's shard compresses less than a day's)")  # fmt: skip
        say(f"WAN per site: {app_bytes / cfg.sites / published_s:.0f} B/s of topic+payload "
            f"({app_bytes / max(1, len(acked)):.0f} B/message); leaf node links into the centre: "
            f"{leaf_in / max(1, len(leaf)) / published_s:.0f} B/s per leaf site, {leaf_in / max(1, leaf_msgs):.0f} "
            f"B per NATS message (/leafz in_bytes, in_msgs since each connection last began)")  # fmt: skip
        ok = lost_state == 0 and lost_influx == 0 and not audit.errors
        say(f"fleet: {cfg.sites} sites, {cfg.sites * cfg.devices} devices, {rate:.0f} readings/s "
            f"{'with nothing lost' if ok else 'WITH LOSSES'} (lost {lost_state} state / {lost_influx} InfluxDB; of "
            f"leaf node sites {lost_leaf}), "
            f"alert lag p99 {percentile(lag_ts, 0.99):.0f} ms, memory per site {max(worker_mb) * 1024 / cfg.sites:.0f}"
            f" kB worker / {sum(hub_mb) / len(hub_mb) * 3 * 1024 / cfg.sites:.0f} kB central, "
            f"{n_read / max(cpu['fleet worker'], 1e-9):.0f} readings per worker CPU-s, "
            f"{n_read / max(cpu['central nats-server'], 1e-9):.0f} per central CPU-s")  # fmt: skip
    finally:
        if watch_task is not None:
            watch_task.cancel()
            with contextlib.suppress(BaseException):
                await watch_task
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        fleet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--devices", type=int, default=10, help="devices per site (rooms of ten)")
    parser.add_argument("--seconds", type=int, default=120, help="seconds of publishing")
    parser.add_argument("--leaf", type=int, default=3, help="sites that are real leaf node sites")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--incident-s", type=int, default=60, help="mean time between prone incidents per site")
    parser.add_argument("--drain-s", type=float, default=120.0, help="at most this long to catch up at the end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, help="keep logs and data here (default: a temporary folder)")
    args = parser.parse_args()
    if not INFLUXD.exists():
        sys.exit("error: influxd is not installed (apt package influxdb)")
    if args.sites < 1 or args.leaf > args.sites or args.partitions < 2 or args.partitions % 2:
        sys.exit("error: --sites ≥ 1, --leaf ≤ --sites, --partitions even and ≥ 2")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args, args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as d:
            asyncio.run(run(args, Path(d)))


if __name__ == "__main__":
    main()
