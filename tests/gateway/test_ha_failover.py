"""Gateway failover on a REAL 3-node NATS cluster with two REAL gateway processes (`nurserywatch gateway
--transport jetstream --instance …`), an edge publishing over MQTT and an independent MQTT auditor:

* kill -9 of the active one during an apnea: the standby takes over within 10 s, continues the same
  alert (same id, raised once, resolved by the new active), stores every reading once, and the
  records chain it continues verifies;
* SIGSTOP of the active one past the lease's TTL, then SIGCONT: the other took over meanwhile, and
  the woken one publishes nothing, appends nothing to the journal and exits with code 3.

Takeover times are printed (``-s``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiomqtt
import nats
import pytest
import yaml

from gateway.ha.journal import Entry
from nurserywatch.contract import (
    Alert,
    AlertState,
    BreathingReading,
    SessionAction,
    SessionCommand,
    TopicKind,
    decode,
    reading_topic,
    session_command_topic,
    subscription,
)
from nurserywatch.jetstream import SiteLayout
from nurserywatch.mqtt import BrokerURL
from tests.support.commands import command_key_files, publish_command
from tests.support.kits import make_kit
from tests.support.nats_cluster import NatsCluster
from tests.support.processes import print_logs, spawn, stop
from tests.support.waiting import wait_until

_sites = itertools.count()
#: The issue's bound: the standby is the active one this long after the active one died, at worst.
TAKEOVER_MAX_S = 10.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path / "nats", size=3)
    c.start()
    try:
        yield c
    finally:
        c.stop()


class Site:
    """A kit file, the command key, and the gateway instances of one site."""

    def __init__(self, tmp_path: Path, cluster: NatsCluster) -> None:
        self.dir = tmp_path
        self.cluster = cluster
        kit = make_kit(f"ha{next(_sites)}", children={"c001": "0", "c002": "0"},
                       devices={"mat-1": {"kind": "nap_mat", "child": "c001"},
                                "mat-2": {"kind": "nap_mat", "child": "c002"}})  # fmt: skip
        self.kit = kit
        self.kit_file = tmp_path / "kit.yaml"
        self.kit_file.write_text(yaml.safe_dump(kit.model_dump(mode="json", exclude_none=True), allow_unicode=True))
        _private, self.public_key = command_key_files(tmp_path / "keys")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.started: list[str] = []

    def db(self, name: str) -> Path:
        return self.dir / name / "gw.sqlite3"

    def start(self, name: str) -> None:
        """Start instance ``name`` (again: a new log, ``name-2.log``…)."""
        (self.dir / name).mkdir(exist_ok=True)
        brokers = ",".join(f"mqtt://127.0.0.1:{n.mqtt_port}" for n in self.cluster.nodes)
        runs = sum(1 for k in self.started if k == name)
        self.started.append(name)
        self.procs[name], self.logs[name] = spawn(name if not runs else f"{name}-{runs + 1}", [
            "gateway", "--config", str(self.kit_file), "--transport", "jetstream",
            "--nats", ",".join(self.cluster.nats_urls), "--broker", brokers, "--instance", name,
            "--db", str(self.db(name)), "--records-key", str(self.dir / "records-signing.key"),
            "--command-key", str(self.public_key),
        ], self.dir)  # fmt: skip

    def signal(self, name: str, sig: int) -> None:
        os.killpg(self.procs[name].pid, sig)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
            stop(proc)

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def is_active(self, name: str) -> bool:
        return "is the ACTIVE gateway" in self.log(name)

    def takeover_s(self, name: str) -> float:
        line = next(ln for ln in self.log(name).splitlines() if "is the ACTIVE gateway" in ln)
        return float(line.rsplit("; ", 1)[1].split(" s ", 1)[0])


@contextlib.contextmanager
def site(tmp_path: Path, cluster: NatsCluster) -> Iterator[Site]:
    s = Site(tmp_path, cluster)
    try:
        yield s
    except BaseException:
        print_logs(s.logs, 40)
        raise
    finally:
        s.stop_all()


class Auditor:
    """An MQTT subscriber on alert/+ (another node than the edge's): every alert message seen."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, Alert | None, bool]] = []

    async def run(self, broker: BrokerURL, site_id: str) -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier=f"auditor-{site_id}", clean_session=True) as c:
            await c.subscribe(subscription(site_id, TopicKind.ALERT), qos=1)
            async for msg in c.messages:
                payload = msg.payload if isinstance(msg.payload, bytes) else b""
                alert = decode(Alert, payload) if payload else None
                self.seen.append((time.monotonic(), msg.topic.value, alert, msg.retain))

    def alerts(self, rule: str | None = None, since: float = 0.0) -> list[Alert]:
        return [
            a for t, _topic, a, _r in self.seen if a is not None and t >= since and (rule is None or a.rule == rule)
        ]


class Edge:
    """A nap mat publishing a breathing reading every 0.25 s over MQTT QoS 1 (real time), its last
    breath just now, or ``stopped_ms`` (no breath since: an apnea). The gateway keeps the newest last
    breath it saw: a mat starts in an apnea, or breathes and then stops for good."""

    def __init__(self, site_id: str, device: str = "mat-1", stopped_ms: int | None = None) -> None:
        self.site = site_id
        self.device = device
        self.seq = itertools.count(1)
        self.stopped_ms = stopped_ms
        self.sent = 0

    async def run(self, broker: BrokerURL) -> None:
        """Counts a reading sent once the broker confirmed it; one not confirmed (a node electing its
        streams' leaders) is sent again, as the edge agent's spool would."""
        reading: BreathingReading | None = None
        ident = f"edge-{self.site}-{self.device}"
        while True:
            try:
                client = aiomqtt.Client(broker.host, broker.port, identifier=ident, clean_session=True, timeout=3)
                async with client as c:
                    while True:
                        if reading is None:
                            now = int(time.time() * 1000)
                            last = self.stopped_ms if self.stopped_ms is not None else now - 500
                            breathing = self.stopped_ms is None
                            reading = BreathingReading(ts=now, seq=next(self.seq), present=True,
                                                       rate_bpm=30.0 if breathing else None, last_breath_ts=last,
                                                       motion=0.05, quality=0.9)  # fmt: skip
                        await c.publish(reading_topic(self.site, self.device, "breathing"), reading.to_json(), qos=1)
                        self.sent += 1
                        reading = None
                        await asyncio.sleep(0.25)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def background(*coros: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def journal_entries(cluster: NatsCluster, layout: SiteLayout) -> list[tuple[int, Entry]]:
    nc = await nats.connect(cluster.nats_urls)
    try:
        js = nc.jetstream()
        last = int((await js.stream_info(layout.state_stream)).state.last_seq)
        return [(seq, Entry.from_bytes((await js.get_msg(layout.state_stream, seq)).data or b""))
                for seq in range(1, last + 1)]  # fmt: skip
    finally:
        await nc.close()


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    with closing(sqlite3.connect(db)) as con:
        return con.execute(sql).fetchall()


async def test_kill_9_of_the_active_gateway_during_an_apnea(cluster: NatsCluster, tmp_path: Path) -> None:
    with site(tmp_path, cluster) as s:
        auditor = Auditor()
        s.start("a")
        await wait_until(lambda: s.is_active("a"), "instance a to become active", 30, every_s=0.1)
        s.start("b")
        await wait_until(lambda: "standing by" in s.log("b"), "instance b to stand by", 30, every_s=0.1)
        async with aiomqtt.Client(cluster.mqtt_urls[1].host, cluster.mqtt_urls[1].port) as staff:
            await publish_command(staff, session_command_topic(s.kit.site),
                                  SessionCommand(room="hiyoko", action=SessionAction.START, by="田中"))  # fmt: skip
        edge = Edge(s.kit.site, stopped_ms=int(time.time() * 1000) - 16_000)  # an apnea in ~4 s
        async with background(edge.run(cluster.mqtt_urls[1]), auditor.run(cluster.mqtt_urls[2], s.kit.site)):
            await wait_until(lambda: bool(auditor.alerts("apnea")), "the apnea alert from a", 15, every_s=0.05)
            (alert_id,) = {a.id for a in auditor.alerts("apnea")}
            await asyncio.sleep(0.5)  # the apnea goes on a little under a (a span of readings, not a wait)
            s.signal("a", signal.SIGKILL)
            killed = time.monotonic()
            await wait_until(lambda: s.is_active("b"), "instance b to take over", 30, every_s=0.05)
            active_after = time.monotonic() - killed
            # b republishes the open alert (same id), then resolves it once breathing is back.
            await wait_until(lambda: bool(auditor.alerts("apnea", since=killed)), "the alert republished by b", 10)
            edge.stopped_ms = None
            await wait_until(
                lambda: any(a.state is AlertState.RESOLVED for a in auditor.alerts("apnea", since=killed)),
                "the apnea resolved by b", 15,
            )  # fmt: skip
            async with aiomqtt.Client(cluster.mqtt_urls[1].host, cluster.mqtt_urls[1].port) as staff:
                await publish_command(staff, session_command_topic(s.kit.site),
                                      SessionCommand(room="hiyoko", action=SessionAction.STOP, by="田中"))  # fmt: skip
            sent = edge.sent
        db_b = s.db("b")
        await wait_until(lambda: rows(db_b, "SELECT COUNT(*) FROM readings")[0][0] >= sent,
                         "every reading stored by b", 20, every_s=0.1)  # fmt: skip
        await wait_until(lambda: rows(db_b, "SELECT COUNT(*) FROM session_log WHERE change = 'stopped'")[0][0] == 1,
                         "the session stopped by b", 10, every_s=0.1)  # fmt: skip
        verify = subprocess.run([sys.executable, "-m", "nurserywatch", "records", "verify", "--db", str(db_b)],
                                capture_output=True, text=True)  # fmt: skip
        takeover_b = s.takeover_s("b")
    assert {a.id for a in auditor.alerts("apnea")} == {alert_id}, "one apnea alert, the same id across the takeover"
    transitions = rows(db_b, f"SELECT change FROM alert_transitions WHERE alert_id = '{alert_id}' ORDER BY rowid")
    assert [c for (c,) in transitions][:2] == ["raised", "resolved"], transitions
    assert [c for (c,) in transitions].count("raised") == 1
    assert rows(db_b, "SELECT COUNT(*), COUNT(DISTINCT seq) FROM readings") == [(sent, sent)], "0 lost, 0 twice"
    assert verify.returncode == 0, verify.stdout + verify.stderr
    kinds = [k for (k,) in rows(db_b, "SELECT kind FROM record_entries ORDER BY seq")]
    assert "session_started" in kinds and "session_stopped" in kinds
    print(f"\nkill -9 of the active gateway: b active {active_after:.2f} s after the kill "
          f"(lease TTL 4 s + renew 1 s; catch-up, engine start and takeover entry {takeover_b:.2f} s)")  # fmt: skip
    assert active_after <= TAKEOVER_MAX_S


async def test_a_paused_active_gateway_wakes_fenced(cluster: NatsCluster, tmp_path: Path) -> None:
    layout = None
    with site(tmp_path, cluster) as s:
        layout = SiteLayout(s.kit.site)
        edge, auditor = Edge(s.kit.site), Auditor()
        s.start("a")
        await wait_until(lambda: s.is_active("a"), "instance a to become active", 30, every_s=0.1)
        s.start("b")
        await wait_until(lambda: "standing by" in s.log("b"), "instance b to stand by", 30, every_s=0.1)
        async with background(edge.run(cluster.mqtt_urls[1]), auditor.run(cluster.mqtt_urls[2], s.kit.site)):
            await wait_until(lambda: edge.sent >= 8, "some readings", 10)
            s.signal("a", signal.SIGSTOP)
            paused = time.monotonic()
            await wait_until(lambda: s.is_active("b"), "instance b to take over", 30, every_s=0.05)
            active_after = time.monotonic() - paused
            # While a sleeps, its view goes stale (on waking its timers would call mat-1 lost); b sees an apnea.
            apneic = Edge(s.kit.site, "mat-2", stopped_ms=int(time.time() * 1000) - 17_000)
            async with background(apneic.run(cluster.mqtt_urls[1])):
                await wait_until(lambda: bool(auditor.alerts("apnea")), "the apnea alert from b", 15, every_s=0.05)
            woke = time.monotonic()
            s.signal("a", signal.SIGCONT)
            await wait_until(lambda: s.procs["a"].poll() is not None, "a to stop on waking", 20, every_s=0.05)
            await asyncio.sleep(1.0)  # anything a would still send has reached the auditor (a span, not a wait)
        code_a = s.procs["a"].returncode
        log_a = s.log("a")
        ids_b = {i for (i,) in rows(s.db("b"), "SELECT id FROM alerts")}
        entries = await journal_entries(cluster, layout)
    assert code_a == 3, log_a[-2000:]
    assert "LOST" in log_a or "refused" in log_a
    after = [a for a in auditor.alerts(since=woke)]
    assert all(a.id in ids_b for a in after), f"alerts published that b does not hold: {after}"
    takeover_seq = next(seq for seq, e in entries if e.kind == "takeover" and e.instance == "b")
    assert [seq for seq, e in entries if e.instance == "a" and seq > takeover_seq] == [], "a appended after b took over"
    print(f"\nSIGSTOP of the active gateway: b active {active_after:.2f} s after the pause; "
          f"a woke, appended nothing, exited {code_a}")  # fmt: skip
    assert active_after <= TAKEOVER_MAX_S


async def test_the_instance_that_lost_restarts_as_a_standby_and_takes_over_again(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    """kill -9 a → b; a restarts (its file rebuilt from the journal: it may hold a commit that never
    reached it) and stands by; kill -9 b → a. One apnea alert all along, the records verify on a."""
    took: list[float] = []
    with site(tmp_path, cluster) as s:
        auditor = Auditor()
        s.start("a")
        await wait_until(lambda: s.is_active("a"), "instance a to become active", 30, every_s=0.1)
        s.start("b")
        await wait_until(lambda: "standing by" in s.log("b"), "instance b to stand by", 30, every_s=0.1)
        edge = Edge(s.kit.site, stopped_ms=int(time.time() * 1000) - 18_000)  # an apnea in ~2 s
        async with background(edge.run(cluster.mqtt_urls[0]), auditor.run(cluster.mqtt_urls[2], s.kit.site)):
            await wait_until(lambda: bool(auditor.alerts("apnea")), "the apnea alert from a", 15, every_s=0.05)
            for dead, heir in (("a", "b"), ("b", "a")):
                s.signal(dead, signal.SIGKILL)
                killed = time.monotonic()
                seen = len(s.log(heir).split("is the ACTIVE gateway")) - 1

                def heir_active(heir: str = heir, seen: int = seen) -> bool:
                    return len(s.log(heir).split("is the ACTIVE gateway")) - 1 > seen

                await wait_until(heir_active, f"instance {heir} to take over", 30, every_s=0.05)
                took.append(time.monotonic() - killed)
                s.procs[dead].wait()
                if dead == "a":
                    s.start("a")  # as systemd would: it comes back as a standby, its file rebuilt
                    await wait_until(lambda: "standing by" in s.log("a"), "a to stand by again", 30, every_s=0.1)
                    assert "rebuilding it from the journal" in s.log("a")
            await wait_until(lambda: bool(auditor.alerts("apnea", since=killed)), "the alert republished by a", 10)
            edge.stopped_ms = None
            await wait_until(
                lambda: any(a.state is AlertState.RESOLVED for a in auditor.alerts("apnea")), "the apnea resolved", 15
            )
            sent = edge.sent
        db_a = s.db("a")
        await wait_until(lambda: rows(db_a, "SELECT COUNT(*) FROM readings")[0][0] >= sent,
                         "every reading stored by a", 20, every_s=0.1)  # fmt: skip
        verify = subprocess.run([sys.executable, "-m", "nurserywatch", "records", "verify", "--db", str(db_a)],
                                capture_output=True, text=True)  # fmt: skip
    ids = {a.id for a in auditor.alerts("apnea")}
    assert len(ids) == 1, f"one apnea alert across two takeovers: {ids}"
    (alert_id,) = ids
    changes = [c for (c,) in rows(db_a, f"SELECT change FROM alert_transitions WHERE alert_id = '{alert_id}'")]
    assert changes.count("raised") == 1 and "resolved" in changes, changes
    assert rows(db_a, "SELECT COUNT(*), COUNT(DISTINCT seq) FROM readings") == [(sent, sent)], "0 lost, 0 twice"
    assert verify.returncode == 0, verify.stdout + verify.stderr
    print(f"\ntwo kill -9 takeovers (a → b, b → a after a rebuilt): {', '.join(f'{t:.2f} s' for t in took)}")
    assert max(took) <= TAKEOVER_MAX_S


async def test_kill_9_of_a_nats_node_during_an_apnea(cluster: NatsCluster, tmp_path: Path) -> None:
    """The node every gateway connected to first (and likely a leader of the site's streams) dies
    mid-apnea: the gateways move to the other nodes; whatever reached the input stream is stored
    once, one apnea alert. If the lease bucket's leader was there, the active one may not renew in
    time and the standby takes over (at most one takeover).

    Not asserted, printed: readings the MQTT listener confirmed (PUBACK) that never reached the input
    stream — nats-server hands an MQTT QoS 1 publish to JetStream without waiting for it to be stored,
    so a stream electing its leader loses what arrives meanwhile (upstream of the gateway)."""
    with site(tmp_path, cluster) as s:
        auditor = Auditor()
        s.start("a")
        await wait_until(lambda: s.is_active("a"), "instance a to become active", 30, every_s=0.1)
        s.start("b")
        await wait_until(lambda: "standing by" in s.log("b"), "instance b to stand by", 30, every_s=0.1)
        edge = Edge(s.kit.site, stopped_ms=int(time.time() * 1000) - 18_000)  # an apnea in ~2 s
        async with background(edge.run(cluster.mqtt_urls[1]), auditor.run(cluster.mqtt_urls[2], s.kit.site)):
            await wait_until(lambda: bool(auditor.alerts("apnea")), "the apnea alert", 15, every_s=0.05)
            cluster.kill(0)
            killed = time.monotonic()
            sent_at_kill = edge.sent
            await wait_until(lambda: edge.sent >= sent_at_kill + 40, "10 s of readings after the kill", 30)
            edge.stopped_ms = None
            await wait_until(
                lambda: any(a.state is AlertState.RESOLVED for a in auditor.alerts("apnea", since=killed)),
                "the apnea resolved after the node's loss", 30,
            )  # fmt: skip
            sent = edge.sent
        layout = SiteLayout(s.kit.site)
        nc = await nats.connect(cluster.nats_urls[1:])
        try:
            in_stream = int((await nc.jetstream().stream_info(layout.input_stream)).state.messages)
        finally:
            await nc.close()
        active = "b" if s.is_active("b") else "a"
        db = s.db(active)
        await wait_until(lambda: rows(db, "SELECT COUNT(*) FROM readings")[0][0] >= in_stream,
                         f"every reading in the stream stored by {active}", 30, every_s=0.1)  # fmt: skip
        takeovers = s.log("b").count("is the ACTIVE gateway")
    ids = {a.id for a in auditor.alerts("apnea")}
    assert len(ids) == 1, ids
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT seq) FROM readings") == [(in_stream, in_stream)]
    assert takeovers <= 1
    print(f"\nkill -9 of NATS node 1: active afterwards {active} ({takeovers} takeover(s)); readings confirmed "
          f"over MQTT {sent}, in the input stream {in_stream} (lost upstream of the gateway: {sent - in_stream})")
