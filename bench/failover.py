"""Gateway failover on a NATS cluster, repeated (bench/README.md; target: takeover ≤ 10 s at worst, 0
readings lost, 0 duplicate alerts).

    .venv/bin/python bench/failover.py [--kills 10] [--dir D]

What runs, all real processes on loopback (tests/support/ha_site.py): 3 nats-server nodes with
JetStream and MQTT; two gateway instances of one site (``nurserywatch gateway --transport jetstream
--instance a|b``); two edges publishing a breathing reading every 0.25 s over MQTT QoS 1 (mat-1 through
node 1, mat-2 through node 2; a reading the broker did not confirm is sent again, through the next
node if the connection is lost, as the edge agent's spool would); and an independent auditor, an MQTT
subscriber on node 3 counting every reading seq and every alert message the broker carried.

The kills alternate: every third one is ``kill -9`` of a NATS node (nodes 1, 2, 3 in turn; restarted
once the site's traffic flows again, and the next kill waits until every stream's replicas are
current), the others ``kill -9`` of the active gateway (restarted at once as a standby, as systemd
would). Every other gateway kill happens during an apnea of mat-1: its alert is open across the
takeover and resolved by the new active gateway. The takeover time is from the kill to the standby's
"is the ACTIVE gateway" log line (its timestamp).

At the end, against the final active gateway's SQLite: readings lost (seqs the edges got confirmed or
the auditor saw that it lacks; each one looked up in the input stream, to tell a loss in the broker
from one in the gateway), readings stored twice, duplicate alerts (more than one alert id per apnea
episode, or an alert raised twice) and ``nurserywatch records verify``. The last line is the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import APIError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nurserywatch.contract import (  # noqa: E402
    AlertState,
    BreathingReading,
    ContractError,
    SessionAction,
    TopicKind,
    decode,
    parse_topic,
    subscription,
)
from nurserywatch.jetstream import (  # noqa: E402
    MQTT_SUBJECT_PREFIX,
    SiteLayout,
    mqtt_filter_to_subject,
    subject_to_topic,
)
from tests.support.ha_site import Auditor, Edge, Site, background, rows, site  # noqa: E402
from tests.support.nats_cluster import NatsCluster  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

INSTANCES = ("a", "b")
#: Readings (both mats) that must flow after a NATS node's loss before it is restarted: 5 s of traffic.
FLOW_AFTER_NODE_KILL = 40


def say(text: str) -> None:
    print(text, flush=True)


@dataclass
class Episode:
    """An apnea of mat-1: breathing stopped at ``stop_ms`` (the alert's started_ts), across a kill."""

    stop_ms: int
    kill: int
    ids: set[str] = field(default_factory=set)


@dataclass
class Outage:
    """A kill: what, when (monotonic), and until when its effects were waited for."""

    what: str
    at: float
    until: float = 0.0


@dataclass
class Bench:
    s: Site
    cluster: NatsCluster
    js: JetStreamContext
    edges: list[Edge]
    auditor: Auditor
    takeovers: list[float] = field(default_factory=list)
    #: Takeovers nobody asked for: the lease lost while a NATS node was down (kill index, s after the kill).
    unplanned: list[tuple[int, float]] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)

    @property
    def mat1(self) -> Edge:
        return self.edges[0]

    def actives(self) -> list[str]:
        """The instances whose running process says it is the active gateway."""
        return [n for n in INSTANCES if self.s.procs[n].poll() is None and self.s.is_active(n)]

    def active(self) -> str:
        live = self.actives()
        if len(live) != 1:
            raise RuntimeError(f"expected one active gateway, found {live or 'none'}")
        return live[0]

    async def one_active(self, what: str) -> str:
        """Until exactly one instance is the active one (a lease moving: none for a while, or the one that
        lost it not exited yet)."""
        await wait_until(lambda: len(self.actives()) == 1, f"one active gateway ({what})", 60, every_s=0.05)
        return self.active()

    async def restart_dead(self) -> list[str]:
        """Start again, as standbys, the instances that exited (killed, or having lost the lease)."""
        dead = [n for n in INSTANCES if self.s.procs[n].poll() is not None]
        for name in dead:
            self.s.start(name)
        for name in dead:
            await wait_until(partial(self.s.is_standing_by, name), f"{name} to stand by", 60, every_s=0.05)
        return dead

    async def flowing(self, what: str) -> None:
        """Until the active gateway stored mat-1's reading the edge had confirmed last, at the call."""
        seq = max(self.mat1.acked, default=0)
        db = self.s.db(await self.one_active(what))
        await wait_until(lambda: rows(db, "SELECT COALESCE(MAX(seq), 0) FROM readings WHERE device = 'mat-1'")[0][0]
                         >= seq, f"readings stored by the active gateway ({what})", 60, every_s=0.1)  # fmt: skip

    def open_apnea(self, episode: Episode) -> list[str]:
        """The ids of the active apnea alerts of ``episode`` the auditor saw (its older ones come again
        retained, resolved, after a takeover or a reconnect)."""
        return [a.id for a in self.auditor.alerts("apnea")
                if a.started_ts >= episode.stop_ms - 2000 and a.state is AlertState.ACTIVE]  # fmt: skip

    async def kill_gateway(self, k: int, apnea: bool) -> str:
        dead = self.active()
        heir = next(n for n in INSTANCES if n != dead)
        episode = None
        if apnea:
            episode = Episode(int(time.time() * 1000), k)
            self.episodes.append(episode)
            self.mat1.stopped_ms = episode.stop_ms
            await wait_until(lambda: bool(self.open_apnea(episode)), "the apnea alert", 40, every_s=0.05)
            alert_id = self.open_apnea(episode)[0]
        seen = self.s.active_count(heir)
        outage = Outage(f"gateway {dead}", time.monotonic())
        self.outages.append(outage)
        killed_at = time.time()
        self.s.signal(dead, signal.SIGKILL)
        await wait_until(lambda: self.s.active_count(heir) > seen, f"{heir} to take over", 60, every_s=0.02)
        took = self.s.active_at(heir) - killed_at
        self.takeovers.append(took)
        await wait_until(lambda: self.s.procs[dead].poll() is not None, f"{dead} to exit", 10)
        await self.restart_dead()
        text = f"{heir} active {took:.2f} s after the kill; {dead} back as a standby"
        if episode is not None:
            await wait_until(lambda: any(a.id == alert_id for a in self.auditor.alerts("apnea", outage.at)),
                             f"the apnea alert republished by {heir}", 30, every_s=0.05)  # fmt: skip
            self.mat1.stopped_ms = None
            await wait_until(lambda: any(a.id == alert_id and a.state is AlertState.RESOLVED
                                         for a in self.auditor.alerts("apnea", outage.at)),
                             f"the apnea resolved by {heir}", 60, every_s=0.05)  # fmt: skip
            text += f"; the apnea alert open across it, resolved by {heir}"
        await self.flowing(f"after gateway {dead}'s kill")
        outage.until = time.monotonic()
        return text

    async def kill_node(self, k: int, i: int) -> str:
        was = self.active()
        outage = Outage(f"NATS node {i + 1}", time.monotonic())
        self.outages.append(outage)
        killed_at = time.time()
        self.cluster.kill(i)
        sent = sum(e.sent for e in self.edges)
        await wait_until(lambda: sum(e.sent for e in self.edges) >= sent + FLOW_AFTER_NODE_KILL,
                         f"readings confirmed after node {i + 1}'s loss", 120, every_s=0.05)  # fmt: skip
        await self.restart_dead()  # an active one that could not renew the lease in time exited
        await self.flowing(f"after node {i + 1}'s loss")
        text = f"traffic on without node {i + 1}"
        now = await self.one_active(f"after node {i + 1}'s loss")
        if now != was:
            took = self.s.active_at(now) - killed_at
            self.unplanned.append((k, took))
            text += f"; the lease moved: {now} active {took:.2f} s after the kill, {was} back as a standby"
        await asyncio.to_thread(self.cluster.start, i)
        await wait_until(lambda: streams_current(self.js), "every stream's replicas current", 120, every_s=0.2)
        outage.until = time.monotonic()
        return text + f"; node {i + 1} back, replicas current"


async def streams_current(js: JetStreamContext) -> bool:
    """Every stream (the site's, the lease bucket's, the MQTT listener's) has a leader and 2 current replicas."""
    try:
        infos = await js.streams_info()
    except (nats.errors.Error, APIError, TimeoutError):
        return False
    for info in infos:
        c = info.cluster
        if c is None or not c.leader or len(c.replicas or []) != 2:
            return False
        if not all(p.current and not p.offline for p in c.replicas or []):
            return False
    return True


async def stream_readings(js: JetStreamContext, layout: SiteLayout) -> set[tuple[str, int]]:
    """(device, seq) of every reading in the site's input stream."""
    subject = MQTT_SUBJECT_PREFIX + mqtt_filter_to_subject(subscription(layout.site, TopicKind.READING))
    psub = await js.pull_subscribe(subject, stream=layout.input_stream)
    out: set[tuple[str, int]] = set()
    try:
        while True:
            try:
                msgs = await psub.fetch(500, timeout=2)
            except (TimeoutError, nats.errors.TimeoutError):
                return out
            for msg in msgs:
                try:
                    device = parse_topic(subject_to_topic(msg.subject)).device or "?"
                    out.add((device, decode(BreathingReading, msg.data).seq))
                except ContractError:
                    pass
    finally:
        await psub.unsubscribe()


async def consumed(js: JetStreamContext, layout: SiteLayout) -> bool:
    """The gateway's consumer has nothing pending or unacknowledged (acknowledged = committed)."""
    try:
        info = await js.consumer_info(layout.input_stream, layout.consumer)
    except (nats.errors.Error, APIError, TimeoutError):
        return False
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


def audited(auditor: Auditor, reading: tuple[str, int]) -> bool:
    return reading[1] in auditor.readings.get(reading[0], set())


def near(outages: list[Outage], t: float | None) -> str:
    """The kill during (or just before) which a reading confirmed at ``t`` was lost."""
    if t is None:
        return "a reading only the auditor saw"
    for o in outages:
        if o.at - 1.0 <= t <= o.until:
            return o.what
    return "no kill"


async def run(d: Path, kills: int) -> int:
    t0 = time.monotonic()
    cluster = NatsCluster(d / "nats", size=3)
    cluster.start()
    say(f"3 NATS nodes up (logs in {cluster.dir})")
    nc: NatsClient | None = None
    try:
        await cluster.warm()

        async def quiet(_exc: Exception) -> None:  # the monitoring connection's own errors during node kills
            pass

        nc = await nats.connect(cluster.nats_urls, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                connect_timeout=2, error_cb=quiet)  # fmt: skip
        with site(d, cluster) as s:
            return await _run(s, cluster, nc.jetstream(timeout=5), kills, t0)
    finally:
        if nc is not None:
            await nc.close()
        cluster.stop()


async def _run(s: Site, cluster: NatsCluster, js: JetStreamContext, kills: int, t0: float) -> int:
    layout = SiteLayout(s.kit.site)
    urls = cluster.mqtt_urls
    edges = [Edge(s.kit.site, "mat-1"), Edge(s.kit.site, "mat-2")]
    auditor = Auditor()
    b = Bench(s, cluster, js, edges, auditor)
    await s.start_pair(timeout_s=60)
    await s.nap_session(urls[1], SessionAction.START)  # a nap: the records chain gets entries
    say("gateway a active, b standing by; nap session started")
    async with background(auditor.run(urls[2], urls[0], urls[1], site_id=s.kit.site)):
        await wait_until(lambda: auditor.subscribed, "the auditor to subscribe", 30)
        async with background(edges[0].run(urls[0], urls[1], urls[2]), edges[1].run(urls[1], urls[2], urls[0])):
            await b.flowing("at the start")
            gateway_kills = node_kills = 0
            for k in range(kills):
                started = time.monotonic()
                await b.restart_dead()  # one that lost the lease during the last phase exits after it
                if k % 3 == 2:
                    what = f"kill -9 NATS node {node_kills % 3 + 1}"
                    text = await b.kill_node(k, node_kills % 3)
                    node_kills += 1
                else:
                    what = f"kill -9 active gateway {b.active()}"
                    text = await b.kill_gateway(k, apnea=gateway_kills % 2 == 0)
                    gateway_kills += 1
                say(f"[{k + 1}/{kills}] {what}: {text} ({time.monotonic() - started:.0f} s)")
        # The edges stopped: the auditor gets what is still on its way, the gateway its backlog.
        for e in edges:
            last = (e.device, max(e.acked, default=0))
            try:
                await wait_until(partial(audited, auditor, last), f"the auditor to see {e.device}'s last reading", 30,
                                 every_s=0.05)  # fmt: skip
            except TimeoutError as exc:
                say(f"{exc} (counted below)")
    await s.nap_session(urls[1], SessionAction.STOP)
    await wait_until(lambda: consumed(js, layout), "the gateway to consume the input stream", 60, every_s=0.2)
    final = b.active()
    db = s.db(final)
    await wait_until(lambda: bool(rows(db, "SELECT 1 FROM session_log WHERE change = 'stopped'")),
                     f"the nap session stopped by {final}", 30, every_s=0.1)  # fmt: skip
    in_stream = await stream_readings(js, layout)
    verify = subprocess.run([sys.executable, "-m", "nurserywatch", "records", "verify", "--db", str(db)],
                            capture_output=True, text=True)  # fmt: skip
    return report(b, final, db, in_stream, verify, time.monotonic() - t0)


def report(b: Bench, final: str, db: Path, in_stream: set[tuple[str, int]],
           verify: subprocess.CompletedProcess[str], run_s: float) -> int:  # fmt: skip
    stored = Counter((dev, seq) for dev, seq in rows(db, "SELECT device, seq FROM readings"))
    expected: set[tuple[str, int]] = set()
    acked_at: dict[tuple[str, int], float] = {}
    for e in b.edges:
        for seq, t in e.acked.items():
            expected.add((e.device, seq))
            acked_at[(e.device, seq)] = t
    audited = {(dev, seq) for dev, seqs in b.auditor.readings.items() for seq in seqs}
    expected |= audited
    lost = sorted(expected - set(stored))
    unaudited = Counter(near(b.outages, acked_at[r]) for r in sorted(set(acked_at) - audited))
    if unaudited:
        say(f"  confirmed but not seen by the auditor (its reconnects: {b.auditor.reconnects}): {dict(unaudited)}")
    twice = sum(n - 1 for n in stored.values())
    say(f"readings: {len(expected)} expected ({sum(e.sent for e in b.edges)} confirmed to the edges, "
        f"{len(audited)} seen by the auditor), {sum(stored.values())} rows in {final}'s SQLite")  # fmt: skip
    by_cause = Counter((near(b.outages, acked_at.get(r)), r in in_stream) for r in lost)
    for (what, streamed), n in sorted(by_cause.items()):
        # The input stream keeps a message until the gateway acknowledged it (interest retention).
        where = (
            "in the input stream, not consumed"
            if streamed
            else "not in the input stream (never stored there, or acknowledged without being stored)"
        )
        say(f"  lost {n} during {what}: {where}")

    apnea = rows(db, "SELECT id, started_ts FROM alerts WHERE rule = 'apnea'")
    raised = Counter(i for (i,) in rows(db, "SELECT alert_id FROM alert_transitions WHERE change = 'raised'"))
    seen = {(a.id, a.started_ts) for a in b.auditor.alerts("apnea")}
    stray: set[str] = set()
    for alert_id, started in {*apnea, *seen}:
        began = [e for e in b.episodes if e.stop_ms - 2000 <= started]
        if began:
            began[-1].ids.add(alert_id)
        else:
            stray.add(alert_id)
    twice_raised = sum(n - 1 for n in raised.values() if n > 1)
    extra_ids = sum(max(0, len(e.ids) - 1) for e in b.episodes)
    missed = sum(1 for e in b.episodes if not e.ids)
    duplicates = extra_ids + twice_raised
    for ep in b.episodes:
        say(f"  apnea episode at kill {ep.kill + 1}: alert ids {sorted(ep.ids)}, raised "
            f"{[raised[i] for i in sorted(ep.ids)]} time(s)")  # fmt: skip
    other = Counter(rule for (rule,) in rows(db, "SELECT rule FROM alerts WHERE rule != 'apnea'"))
    if stray or other:
        say(f"  other alerts: apnea outside an episode {len(stray)}, {dict(other)}")
    verdict = "OK" if verify.returncode == 0 else f"FAILED ({verify.returncode})"
    still_open = rows(db, "SELECT id FROM alerts WHERE state = 'active'")
    if still_open:
        say(f"  alerts still open at the end: {[i for (i,) in still_open]}")
    kinds = Counter(kind for (kind,) in rows(db, "SELECT kind FROM record_entries"))
    say(f"records chain of {final}: {dict(kinds)}")
    said = (verify.stdout + verify.stderr).strip().splitlines()
    say(f"records verify on {final}: {verdict}{': ' + said[-1] if said else ''}")

    took = b.takeovers
    p50, worst = (statistics.median(took), max(took)) if took else (float("nan"), float("nan"))
    unplanned = ", ".join(f"kill {k + 1}: {t:.2f} s" for k, t in b.unplanned) or "none"
    say(f"takeovers after gateway kills: {', '.join(f'{t:.2f}' for t in took)} s; lease moved after a node kill: "
        f"{unplanned}")  # fmt: skip
    nodes = sum(1 for o in b.outages if o.what.startswith("NATS"))
    moved = (
        f"; lease moved after {len(b.unplanned)} node kill(s), active again after max "
        f"{max(t for _k, t in b.unplanned):.2f} s"
        if b.unplanned
        else ""
    )
    worst_gap = max([worst, *(t for _k, t in b.unplanned)])
    ok = bool(took) and worst_gap <= 10.0 and not (lost or twice or duplicates or missed or still_open)
    ok = ok and verify.returncode == 0
    say(f"failover: {len(b.outages)} kills ({len(b.outages) - nodes} gateway, {nodes} NATS node) in "
        f"{run_s / 60:.1f} min; takeover p50 {p50:.2f} s, max {worst:.2f} s{moved}; readings {len(expected)}, "
        f"lost {len(lost)}, stored twice {twice}; apnea episodes {len(b.episodes)}, duplicate alerts {duplicates}"
        f"{f', missed {missed}' if missed else ''}{f', open at the end {len(still_open)}' if still_open else ''}; "
        f"records verify {verdict}")  # fmt: skip
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10, help="kills in all; every third one a NATS node's (default 10)")
    p.add_argument("--dir", type=Path, help="keep the nodes' and gateways' logs and files here (default: a temp dir)")
    a = p.parse_args(argv)
    if a.kills < 1:
        p.error("--kills must be at least 1")
    if a.dir is not None:
        if a.dir.exists() and any(a.dir.iterdir()):
            p.error(f"--dir {a.dir}: not empty")
        a.dir.mkdir(parents=True, exist_ok=True)
        code = asyncio.run(run(a.dir.resolve(), a.kills))
    else:
        with tempfile.TemporaryDirectory(prefix="nw-failover-") as tmp:
            code = asyncio.run(run(Path(tmp), a.kills))
    sys.exit(code)


if __name__ == "__main__":
    main()
