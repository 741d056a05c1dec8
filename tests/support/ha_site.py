"""Gateway failover on a REAL NATS cluster (tests/support/nats_cluster.py): a site's REAL gateway
processes (`nurserywatch gateway --transport jetstream --instance …`), an edge publishing breathing
readings over MQTT QoS 1 and an independent MQTT auditor — shared by tests/gateway/test_ha_failover.py
and bench/failover.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import nats
import yaml

from gateway.ha.journal import Entry
from nurserywatch.cancellation import raise_if_cancel_was_swallowed
from nurserywatch.contract import (
    Alert,
    BreathingReading,
    ContractError,
    SessionAction,
    SessionCommand,
    TopicKind,
    decode,
    parse_topic,
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
#: What an instance logs once it is the active gateway (gateway/service/jetstream.py).
ACTIVE_LINE = "is the ACTIVE gateway"
STANDBY_LINE = "standing by"


class Site:
    """A kit file, the command key, and the gateway instances of one site: two children with a nap mat
    each, and a posture clip on the first. ``rules``: a rules file for the gateways (else the defaults)."""

    def __init__(self, tmp_path: Path, cluster: NatsCluster, rules: Path | None = None) -> None:
        self.dir = tmp_path
        self.cluster = cluster
        self.rules = rules
        kit = make_kit(f"ha{next(_sites)}", children={"c001": "0", "c002": "0"},
                       devices={"mat-1": {"kind": "nap_mat", "child": "c001"},
                                "mat-2": {"kind": "nap_mat", "child": "c002"},
                                "clip-1": {"kind": "posture_clip", "child": "c001"}})  # fmt: skip
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
            "--command-key", str(self.public_key), *(["--rules", str(self.rules)] if self.rules else []),
        ], self.dir)  # fmt: skip

    async def start_pair(self, timeout_s: float = 30.0) -> None:
        """Instance a, the active one, then b standing by."""
        self.start("a")
        await wait_until(lambda: self.is_active("a"), "instance a to become active", timeout_s, every_s=0.05)
        self.start("b")
        await wait_until(lambda: self.is_standing_by("b"), "instance b to stand by", timeout_s, every_s=0.05)

    async def nap_session(self, broker: BrokerURL, action: SessionAction) -> None:
        """Start or stop the nap session of room hiyoko, as the dashboard does (a signed command)."""
        async with aiomqtt.Client(broker.host, broker.port) as staff:
            await publish_command(staff, session_command_topic(self.kit.site),
                                  SessionCommand(room="hiyoko", action=action, by="田中"))  # fmt: skip

    def signal(self, name: str, sig: int) -> None:
        os.killpg(self.procs[name].pid, sig)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
            stop(proc)

    def log(self, name: str) -> str:
        """The log of the instance's latest run."""
        return self.logs[name].read_text(errors="replace")

    def active_count(self, name: str) -> int:
        """How often the latest run of ``name`` became the active gateway."""
        return self.log(name).count(ACTIVE_LINE)

    def is_active(self, name: str) -> bool:
        return self.active_count(name) > 0

    def is_standing_by(self, name: str) -> bool:
        return STANDBY_LINE in self.log(name)

    def active_line(self, name: str) -> str:
        """The latest run's (last) line saying it is the active gateway."""
        return next(ln for ln in reversed(self.log(name).splitlines()) if ACTIVE_LINE in ln)

    def takeover_s(self, name: str) -> float:
        """The instance's own measure: from acquiring the lease to consuming input."""
        return float(self.active_line(name).rsplit("; ", 1)[1].split(" s ", 1)[0])

    def active_at(self, name: str) -> float:
        """The wall-clock time (time.time()) of that line, from its log timestamp (ms)."""
        stamp = " ".join(self.active_line(name).split(" ", 2)[:2])
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


@contextlib.contextmanager
def site(tmp_path: Path, cluster: NatsCluster, rules: Path | None = None) -> Iterator[Site]:
    """A Site whose instances are stopped afterwards (their log tails printed if the block failed)."""
    s = Site(tmp_path, cluster, rules)
    try:
        yield s
    except BaseException:
        print_logs(s.logs, 40)
        raise
    finally:
        s.stop_all()


class Auditor:
    """An MQTT subscriber on the site's alerts and readings (another node than the edge's): every alert
    message and every reading seq the broker carried. Moves to the next broker when its node is lost."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, Alert | None, bool]] = []
        #: Reading seqs by device.
        self.readings: dict[str, set[int]] = {}
        self.reconnects = 0
        #: Subscribed now (the broker delivers to it from here on).
        self.subscribed = False

    async def run(self, *brokers: BrokerURL, site_id: str) -> None:
        for broker in itertools.cycle(brokers):
            try:
                async with aiomqtt.Client(broker.host, broker.port, identifier=f"auditor-{site_id}",
                                          clean_session=True, timeout=3) as c:  # fmt: skip
                    await c.subscribe([(subscription(site_id, k), 1) for k in (TopicKind.ALERT, TopicKind.READING)])
                    self.subscribed = True
                    async for msg in c.messages:
                        self._seen(msg)
            except aiomqtt.MqttError:
                self.subscribed = False
                self.reconnects += 1
                await asyncio.sleep(0.2)

    def _seen(self, msg: aiomqtt.Message) -> None:
        payload = msg.payload if isinstance(msg.payload, bytes) else b""
        try:
            topic = parse_topic(msg.topic.value)
            if topic.kind is TopicKind.READING and topic.device is not None:
                self.readings.setdefault(topic.device, set()).add(decode(BreathingReading, payload).seq)
            elif topic.kind is TopicKind.ALERT:
                alert = decode(Alert, payload) if payload else None
                self.seen.append((time.monotonic(), msg.topic.value, alert, msg.retain))
        except ContractError:
            pass  # not the contract: nothing this auditor counts

    def alerts(self, rule: str | None = None, since: float = 0.0) -> list[Alert]:
        return [
            a for t, _topic, a, _r in self.seen if a is not None and t >= since and (rule is None or a.rule == rule)
        ]


class Edge:
    """A nap mat publishing a breathing reading every 0.25 s over MQTT QoS 1 (real time), its last
    breath just now, or ``stopped_ms`` (no breath since: an apnea). The gateway keeps the newest last
    breath it saw: a mat starts in an apnea, or breathes and then stops (for 20 s: an apnea)."""

    def __init__(self, site_id: str, device: str = "mat-1", stopped_ms: int | None = None) -> None:
        self.site = site_id
        self.device = device
        self.seq = itertools.count(1)
        self.stopped_ms = stopped_ms
        #: Seqs the broker confirmed (PUBACK), with the time.monotonic() of the confirmation.
        self.acked: dict[int, float] = {}
        #: Seqs handed to a publish: a superset of ``acked`` (one in flight when the edge stopped may
        #: have reached the broker without its PUBACK reaching us, and be stored: that is not a duplicate).
        self.issued: set[int] = set()
        self.reconnects = 0

    @property
    def sent(self) -> int:
        return len(self.acked)

    def confirmed_stored(self, db: Path) -> bool:
        """Every reading the broker confirmed is in the gateway's file ``db``."""
        return set(self.acked) <= stored(db, self.device)

    async def run(self, *brokers: BrokerURL) -> None:
        """A reading counts as sent once the broker confirmed it; one not confirmed (a node lost, or
        electing its streams' leaders) is sent again, through the next broker if the connection was
        lost, as the edge agent's spool would."""
        reading: BreathingReading | None = None
        ident = f"edge-{self.site}-{self.device}"
        for broker in itertools.cycle(brokers):
            client = aiomqtt.Client(broker.host, broker.port, identifier=ident, clean_session=True, timeout=3)
            try:
                async with client as c:
                    while True:
                        if reading is None:
                            now = int(time.time() * 1000)
                            last = self.stopped_ms if self.stopped_ms is not None else now - 500
                            breathing = self.stopped_ms is None
                            reading = BreathingReading(ts=now, seq=next(self.seq), present=True,
                                                       rate_bpm=30.0 if breathing else None, last_breath_ts=last,
                                                       motion=0.05, quality=0.9)  # fmt: skip
                        self.issued.add(reading.seq)
                        await c.publish(reading_topic(self.site, self.device, "breathing"), reading.to_json(), qos=1)
                        # A cancel that came with the PUBACK is swallowed by wait_for (Python 3.11): without
                        # this the edge publishes on after the test's end, and the test waits for it forever.
                        raise_if_cancel_was_swallowed()
                        self.acked[reading.seq] = time.monotonic()
                        reading = None
                        await asyncio.sleep(0.25)
            except aiomqtt.MqttError:
                # aiomqtt 2.5 leaves a lost connection's error unretrieved in a client that only publishes
                # (asyncio would print "Future exception was never retrieved" at exit).
                lost = client._disconnected
                if lost.done() and not lost.cancelled():
                    lost.exception()
                self.reconnects += 1
                await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def background(*coros: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``coros`` as tasks for the block; cancelled at its end."""
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
    """Every entry of the site's journal stream, with its stream sequence."""
    nc = await nats.connect(cluster.nats_urls)
    try:
        js = nc.jetstream()
        last = int((await js.stream_info(layout.state_stream)).state.last_seq)
        return [(seq, Entry.from_bytes((await js.get_msg(layout.state_stream, seq)).data or b""))
                for seq in range(1, last + 1)]  # fmt: skip
    finally:
        await nc.close()


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as con:
        return con.execute(sql, params).fetchall()


def stored_once(db: Path, edge: Edge) -> str | None:
    """Why ``db`` does not hold the edge's readings once each, or None: every seq the broker confirmed is
    stored (0 lost), none twice, and none the edge never published. Read ``edge.sent`` only after the
    edge stopped: a publish under way when it was read would be stored but not counted."""
    seqs = [s for (s,) in rows(db, "SELECT seq FROM readings WHERE device = ?", edge.device)]
    # (a set of them would hide the duplicates this looks for)
    if len(seqs) != len(set(seqs)):
        return f"stored twice: {sorted(s for s in set(seqs) if seqs.count(s) > 1)}"
    if lost := set(edge.acked) - set(seqs):
        return f"confirmed by the broker but not stored: {sorted(lost)}"
    if unknown := set(seqs) - edge.issued:
        return f"stored but never published: {sorted(unknown)}"
    return None


def stored(db: Path, device: str) -> set[int]:
    """The seqs of ``device``'s readings in the gateway's file ``db``."""
    return {seq for (seq,) in rows(db, "SELECT seq FROM readings WHERE device = ?", device)}
