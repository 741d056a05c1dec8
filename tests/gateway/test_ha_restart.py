"""Gateway instances on a REAL 3-node NATS cluster (tests/support/ha_site.py), the stops that are not a
single failure: a clean stop of the active instance (SIGTERM: an upgrade, a reboot) hands the lease
over at once, without a "gateway offline" on the way; a power cut of the whole site (every NATS node
and every gateway killed -9, then started again) loses no confirmed reading and continues the same
open apnea alert, and the records chain verifies."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest
import yaml

from nurserywatch.cancellation import raise_if_cancel_was_swallowed
from nurserywatch.contract import (
    AlertState,
    GatewayStatus,
    Position,
    PostureReading,
    SessionAction,
    decode,
    gateway_topic,
    reading_topic,
)
from nurserywatch.mqtt import BrokerURL
from tests.support.ha_site import ACTIVE_LINE, Auditor, Edge, background, rows, site, stored_once
from tests.support.nats_cluster import NatsCluster
from tests.support.processes import ROOT
from tests.support.waiting import wait_until


@pytest.fixture
def cluster(nats_cluster: NatsCluster) -> NatsCluster:
    return nats_cluster


class Heartbeats:
    """Every live (not retained) status message of the site's gateway: (time.monotonic(), online)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, bool]] = []

    async def run(self, broker: BrokerURL, site_id: str) -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier=f"heartbeats-{site_id}") as c:
            await c.subscribe(gateway_topic(site_id), qos=1)
            async for msg in c.messages:
                if not msg.retain and isinstance(msg.payload, bytes):
                    self.seen.append((time.monotonic(), decode(GatewayStatus, msg.payload).online))

    def longest_gap_s(self, since: float) -> float:
        times = [t for t, online in self.seen if online and t >= since]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


async def test_a_clean_stop_of_the_active_hands_the_lease_over_at_once(cluster: NatsCluster, tmp_path: Path) -> None:
    with site(tmp_path, cluster) as s:
        beats = Heartbeats()
        await s.start_pair()
        edge = Edge(s.kit.site)
        async with background(edge.run(cluster.mqtt_urls[1]), beats.run(cluster.mqtt_urls[2], s.kit.site)):
            await wait_until(lambda: len(beats.seen) >= 2, "heartbeats from a", 10)
            before = time.monotonic()
            s.signal("a", signal.SIGTERM)
            await wait_until(lambda: s.is_active("b"), "instance b to take over", 30, every_s=0.05)
            s.procs["a"].wait(10)
            seen = len(beats.seen)
            await wait_until(lambda: len(beats.seen) >= seen + 2, "heartbeats from b", 10)
        db_b = s.db("b")
        await wait_until(lambda: edge.confirmed_stored(db_b), "every confirmed reading stored by b", 20,
                         every_s=0.1)  # fmt: skip
        log_a = s.log("a")
    assert s.procs["a"].returncode == 0, log_a[-2000:]
    assert "lease released" in log_a
    assert [online for _t, online in beats.seen if not online] == [], "no 'gateway offline' in a handover"
    gap = beats.longest_gap_s(before)
    print(f"\nSIGTERM of the active gateway: longest gap between heartbeats {gap:.2f} s")
    # The dashboard's watchdog calls a gap of 5 s "monitoring lost"; a handover waits for no lease to
    # expire (TTL 4 s), only for the standby's next try (every 1 s).
    assert gap < 5.0
    assert stored_once(db_b, edge) is None, stored_once(db_b, edge)


async def test_a_power_cut_of_the_whole_site_loses_nothing_and_continues_the_alert(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    with site(tmp_path, cluster) as s:
        auditor = Auditor()
        await s.start_pair()
        await s.nap_session(cluster.mqtt_urls[1], SessionAction.START)
        edge = Edge(s.kit.site, stopped_ms=int(time.time() * 1000) - 18_000)  # an apnea in ~2 s
        urls = cluster.mqtt_urls
        async with background(edge.run(urls[1], urls[0], urls[2]), auditor.run(urls[2], urls[0], site_id=s.kit.site)):
            await wait_until(lambda: bool(auditor.alerts("apnea")), "the apnea alert", 15, every_s=0.05)
            (alert_id,) = {a.id for a in auditor.alerts("apnea")}
            for name in ("a", "b"):
                s.signal(name, signal.SIGKILL)
                s.procs[name].wait()
            for i in range(len(cluster.nodes)):
                cluster.kill(i)
            sent_at_cut = edge.sent
            cluster.start()
            s.start("a")
            s.start("b")
            back = time.monotonic()
            await wait_until(lambda: s.is_active("a") or s.is_active("b"), "an instance to become active", 60,
                             every_s=0.1)  # fmt: skip
            await wait_until(lambda: edge.sent >= sent_at_cut + 12, "readings confirmed after the restart", 30)
            edge.stopped_ms = None
            await wait_until(
                lambda: any(a.state is AlertState.RESOLVED for a in auditor.alerts("apnea", since=back)),
                "the apnea resolved after the restart", 30,
            )  # fmt: skip
            await s.nap_session(urls[0], SessionAction.STOP)
        active = "a" if s.is_active("a") else "b"
        db = s.db(active)
        await wait_until(lambda: edge.confirmed_stored(db), f"every confirmed reading stored by {active}", 30,
                         every_s=0.1)  # fmt: skip
        await wait_until(lambda: rows(db, "SELECT COUNT(*) FROM session_log WHERE change = 'stopped'")[0][0] == 1,
                         "the session stopped", 10, every_s=0.1)  # fmt: skip
        verify = subprocess.run([sys.executable, "-m", "nurserywatch", "records", "verify", "--db", str(db)],
                                capture_output=True, text=True)  # fmt: skip
        both_active = s.is_active("a") and s.is_active("b")
    assert not both_active, "one active instance after the restart"
    assert {a.id for a in auditor.alerts("apnea")} == {alert_id}, "the same apnea alert across the restart"
    changes = [c for (c,) in rows(db, "SELECT change FROM alert_transitions WHERE alert_id = ?", alert_id)]
    assert changes.count("raised") == 1 and "resolved" in changes, changes
    assert stored_once(db, edge) is None, stored_once(db, edge)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    print(f"\npower cut: {sent_at_cut} readings confirmed before, {edge.sent} in all, all stored by {active} "
          f"({ACTIVE_LINE!r}: {s.active_line(active)[-60:]})")  # fmt: skip


async def test_an_apnea_that_falls_due_while_nobody_is_active_is_raised_at_the_takeover(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    with site(tmp_path, cluster) as s:
        auditor = Auditor()
        await s.start_pair()
        stopped_ms = int(time.time() * 1000) - 17_000  # the apnea falls due in ~3 s
        edge = Edge(s.kit.site, stopped_ms=stopped_ms)
        async with background(edge.run(cluster.mqtt_urls[1]), auditor.run(cluster.mqtt_urls[2], site_id=s.kit.site)):
            await wait_until(lambda: rows_or_none(s.db("a")) > 0, "a's first reading stored", 10, every_s=0.05)
            s.signal("a", signal.SIGKILL)
            killed = time.monotonic()
            raised_by_a = auditor.alerts("apnea")
            await wait_until(lambda: s.is_active("b"), "instance b to take over", 30, every_s=0.05)
            await wait_until(lambda: bool(auditor.alerts("apnea")), "the apnea alert from b", 15, every_s=0.05)
            alert_after_s = time.monotonic() - killed
            edge.stopped_ms = None
            await wait_until(lambda: any(a.state is AlertState.RESOLVED for a in auditor.alerts("apnea")),
                             "the apnea resolved by b", 15)  # fmt: skip
        await wait_until(lambda: edge.confirmed_stored(s.db("b")), "every confirmed reading stored by b", 20,
                         every_s=0.1)  # fmt: skip
    assert raised_by_a == [], "a died before the apnea fell due"
    alerts = auditor.alerts("apnea")
    assert len({a.id for a in alerts}) == 1, alerts
    # On time by the readings' clock: the alert dates from the last breath, not from the takeover.
    assert alerts[0].started_ts == stopped_ms
    assert stored_once(s.db("b"), edge) is None, stored_once(s.db("b"), edge)
    print(f"\napnea due 3 s after the active one died: raised by b {alert_after_s:.2f} s after the kill")


def rows_or_none(db: Path) -> int:
    """Readings in ``db`` (0 while the file or its table does not exist yet)."""
    try:
        return int(rows(db, "SELECT COUNT(*) FROM readings")[0][0])
    except sqlite3.Error:
        return 0


class Clip:
    """A posture clip publishing every 0.25 s over MQTT QoS 1 (real time), ``position`` as it is set;
    a reading not confirmed is sent again (the edge's spool)."""

    def __init__(self, site_id: str, device: str = "clip-1") -> None:
        self.site = site_id
        self.device = device
        self.position = Position.SUPINE
        self.seq = itertools.count(1)
        #: The ts of each confirmed reading, by position.
        self.sent: dict[Position, list[int]] = {}

    async def run(self, broker: BrokerURL) -> None:
        reading: PostureReading | None = None
        while True:
            try:
                async with aiomqtt.Client(broker.host, broker.port, identifier=f"clip-{self.site}", timeout=3) as c:
                    while True:
                        reading = reading or PostureReading(ts=int(time.time() * 1000), seq=next(self.seq),
                                                            position=self.position)  # fmt: skip
                        await c.publish(reading_topic(self.site, self.device, "posture"), reading.to_json(), qos=1)
                        raise_if_cancel_was_swallowed()  # as Edge.run does
                        self.sent.setdefault(reading.position, []).append(reading.ts)
                        reading = None
                        await asyncio.sleep(0.25)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)


async def test_a_prone_child_during_the_takeover_is_alerted_on_time_by_the_readings(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    """The child turns prone 2 s before the active instance dies; the rule (5 s here) falls due while
    nobody is active: the new active one raises it from the readings that waited in the stream, dated
    from the first prone reading and fired by the first one 5 s later — as if nothing had happened."""
    rules = yaml.safe_load((ROOT / "configs" / "rules.yaml").read_text())
    rules["prone"]["min_duration_s"] = 5
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules))
    with site(tmp_path, cluster, rules_file) as s:
        auditor = Auditor()
        await s.start_pair()
        clip = Clip(s.kit.site)
        async with background(clip.run(cluster.mqtt_urls[1]), auditor.run(cluster.mqtt_urls[2], site_id=s.kit.site)):
            await wait_until(lambda: rows_or_none(s.db("a")) > 0, "a's first reading stored", 10, every_s=0.05)
            clip.position = Position.PRONE
            await wait_until(lambda: len(clip.sent.get(Position.PRONE, [])) >= 8, "2 s of prone readings", 10)
            s.signal("a", signal.SIGKILL)
            await wait_until(lambda: s.is_active("b"), "instance b to take over", 30, every_s=0.05)
            await wait_until(lambda: bool(auditor.alerts("prone")), "the prone alert from b", 15, every_s=0.05)
            clip.position = Position.SUPINE
            await wait_until(lambda: any(a.state is AlertState.RESOLVED for a in auditor.alerts("prone")),
                             "the prone alert resolved", 15)  # fmt: skip
    alerts = auditor.alerts("prone")
    assert len({a.id for a in alerts}) == 1, alerts
    first_prone = clip.sent[Position.PRONE][0]
    fired_by = next(ts for ts in clip.sent[Position.PRONE] if ts - first_prone >= 5000)
    assert alerts[0].started_ts == first_prone
    assert alerts[0].updated_ts == fired_by, (alerts[0], "fired by the first reading 5 s into the prone run")
