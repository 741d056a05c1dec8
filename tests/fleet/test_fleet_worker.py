"""Fleet workers (fleet/worker.py) on REAL processes: nats-server (one node, or a cluster of three for the
kill test), InfluxDB 1.6.7, and `nurserywatch fleet` workers. The partition streams capture the sites'
subjects directly (as for Mosquitto-bridged sites), and the test publishes what sites send into them.

What is proved: every published reading is counted once in the site's state in the ``fleet_state``
bucket and is a point in InfluxDB (tag ``site``), forgeries and bad payloads are counted, not applied;
two workers split the partitions; after kill -9 of one, the other holds every partition within the
lease TTL and a renew period, and still nothing is lost or applied twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from fleet.config import load_fleet
from fleet.state import SiteState
from fleet.streams import ensure_partition_streams, ensure_site_out_stream
from fleet.worker import WorkerStats, run_fleet
from gateway.ha.lease import Lease
from gateway.records.signing import DayHead, sign
from gateway.service.jetstream import touch_mqtt
from nurserywatch.clock import SystemClock
from nurserywatch.fleet_layout import FleetLayout, partition_of
from nurserywatch.jetstream import MQTT_STREAM, MQTT_SUBJECT_PREFIX
from nurserywatch.keys import key_id, public_pem
from tests.support.fleet_cluster import FleetTransport
from tests.support.influx_servers import Server, influx_query
from tests.support.nats_cluster import NatsCluster
from tests.support.processes import print_logs, spawn, stop
from tests.support.waiting import wait_until

KEYS = {s: Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i, s in enumerate(["sakura", "tanpopo", "fuji"])}
TTL_S, RENEW_S = 3.0, 1.0


def fleet_file(d: Path, nats_urls: list[str], influx_url: str | None, partitions: int, sites: list[str]) -> Path:
    body: dict[str, object] = {
        "nats": {"urls": nats_urls},
        "partitions": partitions,
        "timeseries": {"url": influx_url, "api": "v1", "database": "nurserywatch", "buffer_path": "buffer.sqlite3",
                       "batch_ms": 50},
        "lease_ttl_s": TTL_S,
        "lease_renew_s": RENEW_S,
        "link_poll_s": 1,
        "sites": [{"id": s, "name": s.title(), "link": "mqtt_bridge", "timezone": "Asia/Tokyo",
                   "records_key": public_pem(KEYS[s].public_key()).decode()} for s in sites],
    }  # fmt: skip
    if influx_url is None:
        del body["timeseries"]
    path = d / "fleet.yaml"
    path.write_text(json.dumps(body, ensure_ascii=False))  # JSON is YAML
    return path


def subject(site: str, rest: str) -> str:
    return f"nurserywatch.v1.{site}.{rest}"


def bridged(site: str, rest: str) -> str:
    """Where the central MQTT listener stores a bridged site's QoS 1 message (``$MQTT_msgs``), which the
    partition stream sources: publishing there is what the listener does for a PUBACKed message."""
    return MQTT_SUBJECT_PREFIX + subject(site, rest)


async def bridged_sourced(cluster: NatsCluster, js: JetStreamContext) -> None:
    """Until ``$MQTT_msgs`` exists (the workers make it, kept by limits: a bridged site's messages wait
    there for the partition streams' sources); an MQTT client connects as a site's bridge would."""
    await touch_mqtt(cluster.mqtt_urls, "fleet-test-touch")

    async def made() -> bool:
        try:
            return (await js.stream_info(MQTT_STREAM)).config.retention == "limits"
        except NotFoundError:
            return False

    await wait_until(made, "$MQTT_msgs, kept by limits", 30, every_s=0.1)


async def ensure_streams(js: JetStreamContext, partitions: int, sites: list[str], replicas: int) -> None:
    """The partition streams and ``$MQTT_msgs`` as a worker makes them (bridged sites)."""
    await ensure_partition_streams(js, FleetLayout(partitions, replicas=replicas), [], sites)


async def states(kv: KeyValue, sites: list[str]) -> dict[str, SiteState]:
    out = {}
    for s in sites:
        try:
            entry = await kv.get(FleetLayout.state_key(s))
        except KeyNotFoundError:
            continue
        out[s] = SiteState.model_validate_json(entry.value or b"")
    return out


async def influx_counts(url: str, sites: list[str]) -> dict[str, int]:
    out = {}
    for s in sites:
        rows = await influx_query(url, f"SELECT count(seq) FROM breathing WHERE site = '{s}'")
        out[s] = int(rows[0][1]) if rows else 0  # type: ignore[call-overload]
    return out


@contextlib.asynccontextmanager
async def central(cluster: NatsCluster) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(cluster.nats_urls)
    try:
        yield nc.jetstream(timeout=5)
    finally:
        await nc.close()


def test_fleet_command_refuses_a_bad_file_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from nurserywatch.cli.main import app

    monkeypatch.delenv("NURSERYWATCH_FLEET", raising=False)
    monkeypatch.delenv("NURSERYWATCH_INSTANCE", raising=False)
    bad = tmp_path / "fleet.yaml"
    bad.write_text("nats: {urls: [http://x]}\nsites:\n  - {id: sakura, name: S, records_key: missing.pub}\n")
    cases = [
        ([], "--config: the fleet file is required"),
        (["--config", str(bad)], "--instance: the worker's name is required"),
        (["--config", str(bad), "--instance", "W 1"], "--instance 'W 1' must match"),
        (["--config", str(bad), "--instance", "w1"], "nats.urls[0] (line 1): expected a string matching"),
        (["--config", str(tmp_path / "none.yaml"), "--instance", "w1"], "none.yaml"),
    ]
    for extra, said in cases:
        r = CliRunner().invoke(app, ["fleet", *extra])
        assert r.exit_code == 2 and r.stderr.startswith("error: ") and said in r.stderr, (extra, r.stderr, r.exception)
    bad.write_text("nats: {urls: [nats://127.0.0.1:1]}\nsites:\n  - {id: sakura, name: S, records_key: missing.pub}\n")
    r = CliRunner().invoke(app, ["fleet", "-c", str(bad), "--instance", "w1"])
    assert r.exit_code == 2 and 'site "sakura": records_key' in r.stderr and "missing.pub" in r.stderr, r.stderr


async def test_worker_applies_a_partition_into_state_and_influxdb(
    tmp_path: Path, nats_node: NatsCluster, influxdb: Server
) -> None:
    sites = ["sakura", "tanpopo"]  # partitions 0 and 1 of 2
    assert {partition_of(s, 2) for s in sites} == {0, 1}
    cfg = load_fleet(fleet_file(tmp_path, nats_node.nats_urls, influxdb.url, 2, sites))
    now = int(time.time() * 1000)
    sent = Counter[str]()
    async with central(nats_node) as js:
        await ensure_streams(js, 2, sites, replicas=1)
        await bridged_sourced(nats_node, js)
        for site in sites:
            for i in range(150):
                await js.publish(bridged(site, f"reading.mat-0{i % 3}.breathing"),
                                 json.dumps({"ts": now - 10_000 + i, "seq": i, "rate_bpm": 30.0}).encode())  # fmt: skip
                sent[site] += 1
        await js.publish(bridged("sakura", "status.mat-00"), json.dumps({"ts": now, "online": True,
                                                                         "battery_pct": 12.0}).encode())  # fmt: skip
        apnea = {
            "id": "apnea-1",
            "rule": "apnea",
            "severity": "critical",
            "state": "active",
            "device": "mat-00",
            "room": "hiyoko",
            "started_ts": now,
            "updated_ts": now,
            "message": "無呼吸",
            "message_en": "apnea",
        }
        await js.publish(bridged("sakura", "alert.apnea-1"), json.dumps(apnea).encode())
        signed = sign(KEYS["tanpopo"], DayHead("tanpopo", "2030-01-01", "Asia/Tokyo", 7, "c" * 64, now,
                                               key_id(KEYS["tanpopo"].public_key())))  # fmt: skip
        await js.publish(bridged("tanpopo", "records.head"), signed.to_json().encode())
        # A bridged site's subject is its own at the centre; these two are refused by the reducer:
        await js.publish(bridged("sakura", "reading.mat-00.breathing"), b"{oops")
        await js.publish(bridged("tanpopo", "gateway"), json.dumps({"ts": "soon", "online": True}).encode())
        stats = WorkerStats()
        worker = asyncio.create_task(run_fleet(cfg, "w1", SystemClock(), stats=stats))
        try:
            await wait_until(lambda: stats.acked == sum(sent.values()) + 5, "every message acknowledged", 20)
            assert sorted(stats.held) == [0, 1]
            kv = await js.key_value(FleetLayout.state_bucket)
            got = await states(kv, sites)
            assert {s: got[s].readings for s in sites} == dict(sent)
            sakura, tanpopo = got["sakura"], got["tanpopo"]
            assert sakura.devices["mat-00"].online is True and sakura.devices["mat-00"].battery_pct == 12.0
            assert sakura.devices["mat-00"].room == "hiyoko" and list(sakura.alerts) == ["apnea-1"]
            assert sakura.rejected == {"bad_json": 1} and tanpopo.rejected == {"invalid_payload": 1}
            assert tanpopo.records is not None and tanpopo.records.verified and tanpopo.records.seq == 7
            assert sakura.partition == 0 and tanpopo.partition == 1 and sakura.last_seq == 153
            await wait_until(lambda: influx_has(influxdb.url, dict(sent)), "every reading in InfluxDB", 20)
            assert stats.replays == 0 and stats.unknown_site == 0
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        # A clean stop released the leases and the heartbeat: nothing held.
        assert not await _keys(await js.key_value(FleetLayout.lease_bucket))


async def test_a_worker_that_lost_a_partition_lease_writes_and_acknowledges_nothing_more(
    tmp_path: Path, nats_node: NatsCluster
) -> None:
    sites = ["sakura", "tanpopo"]  # partitions 0 and 1 of 2
    cfg = load_fleet(fleet_file(tmp_path, nats_node.nats_urls, None, 2, sites))
    now = int(time.time() * 1000)

    async def publish(js: JetStreamContext, n: int, first: int) -> None:
        for i in range(first, first + n):
            body = json.dumps({"ts": now + i, "seq": i, "rate_bpm": 30.0}).encode()
            await js.publish(bridged("sakura", "reading.mat-01.breathing"), body)

    async with central(nats_node) as js:
        stats = WorkerStats()
        worker = asyncio.create_task(run_fleet(cfg, "w1", SystemClock(), stats=stats))
        try:
            await wait_until(lambda: stats.held == [0, 1], "w1 holding both partitions", 20)
            await bridged_sourced(nats_node, js)
            await publish(js, 10, 0)
            await wait_until(lambda: stats.acked == 10, "the first 10 applied", 20)
            kv = await js.key_value(FleetLayout.state_bucket)
            # Another instance holds partition 0 now (w1's key gone, as after an expiry it did not notice).
            leases = await js.key_value(FleetLayout.lease_bucket)
            await leases.delete(FleetLayout.lease_key(0))
            other = Lease(leases, "w9", key=FleetLayout.lease_key(0), ttl_s=TTL_S, renew_s=RENEW_S)
            assert await other.acquire()
            keeper = asyncio.create_task(other.keep())
            await wait_until(lambda: 0 not in stats.held, "w1 noticing it lost partition 0", 10)
            rounds = stats.balances
            await publish(js, 5, 10)
            await wait_until(lambda: stats.balances >= rounds + 2, "two more rounds of w1", 10)
            info = await js.consumer_info(FleetLayout(2).stream(0), FleetLayout.consumer)
            assert (info.num_pending, info.num_ack_pending) == (5, 0)  # not fetched: not applied, not acked
            assert (await states(kv, ["sakura"]))["sakura"].readings == 10 and stats.acked == 10
            assert stats.held == [1]  # its share is both, but w9 holds partition 0
            # w9 gives it up: w1 takes it again and applies the rest, once.
            keeper.cancel()
            await other.release()
            await wait_until(lambda: stats.acked == 15, "the last 5 applied after w1 took partition 0 back", 20)
            assert (await states(kv, ["sakura"]))["sakura"].readings == 15
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker


async def test_a_leaf_site_is_known_by_its_source_and_its_link_outage_shows(
    tmp_path: Path, fleet_transport: Callable[..., FleetTransport]
) -> None:
    """A leaf node site's messages, sourced by the partition stream (header ``Nats-Stream-Source``),
    counted in its state; its link cut: the state says down since when, the site keeps what it sends;
    restored: caught up, up again."""
    fleet = fleet_transport(leaf_sites=["sakura"], hub_size=1)
    urls = [u.replace("nats://", f"nats://fleet:{fleet.worker_password}@") for u in fleet.hub_urls]
    body = json.loads(fleet_file(tmp_path, urls, None, 1, ["sakura"]).read_text())
    body["sites"][0]["link"], body["link_poll_s"] = "leaf", 0.5
    (tmp_path / "fleet.yaml").write_text(json.dumps(body))
    cfg = load_fleet(tmp_path / "fleet.yaml")
    site_nc = await nats.connect(fleet.sites["sakura"].nats_url)
    site_js = site_nc.jetstream()
    await ensure_site_out_stream(site_js, "sakura", replicas=1)
    stats = WorkerStats()
    worker = asyncio.create_task(run_fleet(cfg, "w1", SystemClock(), stats=stats))
    hub_nc = await fleet.connect_hub()
    sent = 0

    async def publish(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            body = json.dumps({"ts": int(time.time() * 1000), "seq": sent, "rate_bpm": 30.0}).encode()
            await site_js.publish(subject("sakura", "reading.mat-01.breathing"), body)
            sent += 1

    async def state() -> SiteState | None:
        try:
            kv = await hub_nc.jetstream().key_value(FleetLayout.state_bucket)
        except NotFoundError:
            return None
        return (await states(kv, ["sakura"])).get("sakura")

    async def holds(cond: Callable[[SiteState], bool]) -> bool:
        s = await state()
        return s is not None and cond(s)

    try:
        await publish(20)
        await wait_until(lambda: holds(lambda s: s.readings == 20 and s.link.up and s.link.checked_ms is not None),
                         "20 readings counted, link up", 20, every_s=0.1)  # fmt: skip
        assert stats.unknown_site == 0
        fleet.sites["sakura"].cut()
        cut_ms = int(time.time() * 1000)
        await publish(10)  # kept in the site's out stream meanwhile
        await wait_until(lambda: holds(lambda s: not s.link.up), "the link shown down", 15, every_s=0.1)
        down = await state()
        assert down is not None and down.link.down_since_ms is not None and down.link.down_since_ms >= cut_ms
        assert down.readings == 20
        fleet.sites["sakura"].restore()
        await wait_until(lambda: holds(lambda s: s.readings == 30 and s.link.up and s.link.down_since_ms is None),
                         "caught up and the link up again", 25, every_s=0.1)  # fmt: skip
        assert stats.replays == 0 and stats.unknown_site == 0
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        await site_nc.close()
        await hub_nc.close()


async def influx_has(url: str, want: dict[str, int]) -> bool:
    return await influx_counts(url, list(want)) == want


async def _keys(kv: KeyValue) -> dict[str, str]:
    try:
        keys = await kv.keys()
    except NoKeysError:
        return {}
    out = {}
    for k in keys:
        with contextlib.suppress(KeyNotFoundError):
            entry = await kv.get(k)
            out[k] = (entry.value or b"").decode()
    return out


@pytest.mark.e2e
async def test_two_workers_split_partitions_and_one_takes_over_after_kill_9(
    tmp_path: Path, nats_cluster: NatsCluster, influxdb: Server
) -> None:
    sites = ["sakura", "tanpopo", "fuji"]  # partitions 2, 3, 1 of 4
    partitions = 4
    path = fleet_file(tmp_path, nats_cluster.nats_urls, influxdb.url, partitions, sites)
    logs: dict[str, Path] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    sent = Counter[str]()
    try:
        async with central(nats_cluster) as js:
            await ensure_streams(js, partitions, sites, replicas=3)
            await bridged_sourced(nats_cluster, js)
            for name in ("w1", "w2"):
                procs[name], logs[name] = spawn(
                    f"fleet-{name}", ["fleet", "-c", str(path), "--instance", name], tmp_path
                )

            async def leases() -> dict[str, str]:
                try:
                    return await _keys(await js.key_value(FleetLayout.lease_bucket))
                except Exception:  # the bucket is made by the first worker
                    return {}

            async def split() -> bool:
                held = Counter((await leases()).values())
                return held == Counter({"w1": 2, "w2": 2})

            await wait_until(split, "two workers holding two partitions each", 20, every_s=0.1)

            stop_publishing = asyncio.Event()

            async def publish() -> None:
                i = 0
                while not stop_publishing.is_set():
                    for site in sites:
                        ts = int(time.time() * 1000)
                        await js.publish(bridged(site, "reading.mat-01.breathing"),
                                         json.dumps({"ts": ts, "seq": i, "rate_bpm": 30.0}).encode())  # fmt: skip
                        sent[site] += 1
                    i += 1
                    await asyncio.sleep(0.01)

            publisher = asyncio.create_task(publish())
            await wait_until(lambda: influx_all_positive(influxdb.url, sites), "readings of every site written", 20)
            victim_partitions = [k for k, v in (await leases()).items() if v == "w1"]
            procs["w1"].send_signal(signal.SIGKILL)
            killed = time.monotonic()

            async def taken_over() -> bool:
                held = await leases()
                return len(held) == partitions and set(held.values()) == {"w2"}

            await wait_until(taken_over, "w2 holding every partition", 20, every_s=0.1)
            took = time.monotonic() - killed
            await asyncio.sleep(0.5)  # a few readings more, consumed by w2 alone (a span, not a wait)
            stop_publishing.set()
            await publisher
            kv = await js.key_value(FleetLayout.state_bucket)

            async def all_counted() -> bool:
                got = await states(kv, sites)
                return {s: got[s].readings if s in got else 0 for s in sites} == dict(sent)

            await wait_until(all_counted, "every reading counted in the state", 20, every_s=0.1)
            await wait_until(lambda: influx_has(influxdb.url, dict(sent)), "every reading in InfluxDB", 20)
            got = await states(kv, sites)
            # Counted once each: a redelivered message was skipped, not applied again.
            assert {s: got[s].readings for s in sites} == dict(sent)
            assert {s: got[s].rejected for s in sites} == {s: {} for s in sites}
            print(f"kill -9 of w1 (partitions {victim_partitions}): w2 held every partition after {took:.1f} s; "
                  f"{sum(sent.values())} readings, 0 lost, none twice")  # fmt: skip
            # The lease bucket has expired w1's keys (TTL) and w2 renewed them: takeover within TTL + slack.
            assert took <= TTL_S + 2 * RENEW_S + 3, took
            # SIGTERM: w2 stops cleanly (exit 0) and gives its partitions back at once.
            stop(procs["w2"], signal.SIGTERM)
            assert procs["w2"].returncode == 0
            assert await leases() == {}
    except BaseException:
        print_logs(logs)
        raise
    finally:
        for p in procs.values():
            stop(p, signal.SIGTERM)


async def influx_all_positive(url: str, sites: list[str]) -> bool:
    return all(v > 0 for v in (await influx_counts(url, sites)).values())
