"""Issue 16's "done when": a 3-site fleet on loopback, one site's WAN link cut for 60 s and restored.

Real processes throughout: a 3-node central cluster (domain ``hub``), two leaf node sites (a nats-server
each, own JetStream domain, the WAN a cuttable TCP proxy) and a Mosquitto site bridged to the central
MQTT listener; a `nurserywatch fleet` worker process; the fleet board (the dashboard app in fleet mode)
read over HTTP by a signed-in operator. The sites publish what sites publish (tests/support/site_traffic.py:
readings, statuses, heartbeats, alerts, signed records heads) over MQTT QoS 1 all along.

What is proved: while the link is cut, the other sites go on reaching the board and the board shows the
cut site's link down (since when); after the restore the centre catches up — every message the site's
broker acknowledged is in the central partition stream, in order, once, and every reading is counted
once in the fleet state — the link shows up again, and every site's records head verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from dashboard.auth.deps import open_store
from dashboard.auth.models import Role
from dashboard.fleet_app import serve_fleet_dashboard
from dashboard.routes.fleet import FleetHeader
from fleet.streams import ensure_site_out_stream
from nurserywatch.clock import SystemClock
from nurserywatch.contract import TopicKind, parse_topic
from nurserywatch.fleet_layout import FleetLayout, partition_of
from nurserywatch.mqtt import Brokers
from nurserywatch.ports import free_port
from tests.support.dashboard_login import ACCOUNTS, FAST, add_accounts, login
from tests.support.fleet_cluster import FleetTransport
from tests.support.processes import print_logs, spawn, stop
from tests.support.site_traffic import Audit, SiteTraffic, TrafficConfig, message_key, publish
from tests.support.waiting import wait_until

CUT_S = 60.0
PARTITIONS = 2
OPERATOR = ACCOUNTS[Role.OPERATOR][0]


def fleet_file(d: Path, fleet: FleetTransport, traffic: SiteTraffic, leaf: list[str], bridged: list[str]) -> Path:
    keys = traffic.write_public_keys(d)
    (d / "fleet-credentials.yaml").write_text(f"username: fleet\npassword: {fleet.worker_password}\n")
    (d / "fleet-credentials.yaml").chmod(0o600)
    body = {
        "nats": {"urls": fleet.hub_urls, "credentials": "fleet-credentials.yaml"},
        "partitions": PARTITIONS,
        "link_poll_s": 1,
        "sites": [{"id": s, "name": s, "link": "leaf" if s in leaf else "mqtt_bridge", "timezone": "Asia/Tokyo",
                   "records_key": keys[s].name} for s in (*leaf, *bridged)],
    }  # fmt: skip
    path = d / "fleet.yaml"
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


@contextlib.asynccontextmanager
async def board(fleet: FleetTransport) -> AsyncIterator[httpx.AsyncClient]:
    """The fleet board on a free port (real time), an operator allowed every site signed in."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nw-fleet-board-") as tmp:
        data = Path(tmp)
        now = SystemClock().now_ms()
        add_accounts(data, now)
        store = open_store(data, FAST)
        try:
            store.set_sites(OPERATOR, ["*"], now)
        finally:
            store.close()
        task = asyncio.create_task(serve_fleet_dashboard(
            fleet.hub_urls, "127.0.0.1", port, header=FleetHeader("テスト運営"), data_dir=data, auth_policy=FAST,
            clock=SystemClock(), refresh_s=1, nats_user="fleet", nats_password=fleet.worker_password,
        ))  # fmt: skip
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

                async def up() -> bool:
                    with contextlib.suppress(httpx.TransportError):
                        return (await http.get("/healthz")).status_code == 200
                    return False

                await wait_until(up, "the fleet board to answer", 15)
                await login(http, Role.OPERATOR)
                yield http
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def sites_on_board(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    r = await http.get("/api/fleet/sites")
    r.raise_for_status()
    return {s["site"]: s for s in r.json()["sites"]}


async def central_copy(fleet: FleetTransport, sites: list[str]) -> dict[str, list[tuple[str, bytes]]]:
    """Every message of the partition streams, per site, in stream order (an ordered consumer)."""
    nc = await fleet.connect_hub()
    out: dict[str, list[tuple[str, bytes]]] = {s: [] for s in sites}
    try:
        js = nc.jetstream()
        for k in range(PARTITIONS):
            stream = FleetLayout(PARTITIONS).stream(k)
            last = (await js.stream_info(stream)).state.last_seq
            if last == 0:
                continue
            sub = await js.subscribe(">", stream=stream, ordered_consumer=True,
                                     config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))  # fmt: skip
            while True:
                msg = await sub.next_msg(timeout=10)
                out[parse_topic(msg.subject.replace(".", "/")).site].append((msg.subject, msg.data))
                if msg.metadata.sequence.stream >= last:
                    break
            await sub.unsubscribe()
    finally:
        await nc.close()
    return out


async def test_a_site_cut_off_for_60_s_catches_up_and_the_board_showed_it(
    fleet_transport: Callable[..., FleetTransport], tmp_path: Path
) -> None:
    cfg = TrafficConfig(sites=3, devices=10, seed=16, incident_mean_ms=15_000, lifecycle_scale=0.2)
    sites = cfg.site_ids()
    leaf, bridged = sites[:2], sites[2:]
    cut = leaf[0]
    fleet: FleetTransport = fleet_transport(leaf_sites=leaf, bridged_sites=bridged, hub_size=3)
    for s in leaf:
        nc = await nats.connect(fleet.sites[s].nats_url)
        try:
            await ensure_site_out_stream(nc.jetstream(timeout=5), s, replicas=1)
        finally:
            await nc.close()
    clock = SystemClock()
    start = clock.now_ms()
    traffic = SiteTraffic(cfg, start)
    path = fleet_file(tmp_path, fleet, traffic, leaf, bridged)
    worker, log = spawn("fleet-w1", ["fleet", "-c", str(path), "--instance", "w1"], tmp_path)
    brokers: dict[str, Brokers] = {s: fleet.sites[s].mqtt_url for s in leaf}
    brokers.update({s: fleet.bridged[s].url for s in bridged})
    audit = Audit()
    publishing: asyncio.Task[Audit] | None = None
    try:
        async with board(fleet) as http:
            # Until the restore is known: the publisher is told to stop by moving its end below.
            publishing = asyncio.create_task(
                publish(traffic, brokers.__getitem__, clock, start + 3_600_000, audit=audit)
            )

            async def every_site_live() -> bool:
                shown = await sites_on_board(http)
                return set(shown) == set(sites) and all(s["link_up"] and s["readings"] > 0 for s in shown.values())

            await wait_until(every_site_live, "every site on the board, link up, readings counted", 30, every_s=0.5)
            fleet.sites[cut].cut()
            cut_at = time.monotonic()

            async def shown_down() -> bool:
                return not (await sites_on_board(http))[cut]["link_up"]

            await wait_until(shown_down, f"the board to show {cut}'s link down", 20, every_s=0.5)
            seen_down_after = time.monotonic() - cut_at
            others = {s: (await sites_on_board(http))[s]["readings"] for s in sites if s != cut}
            await asyncio.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))  # the outage itself: a span
            during = await sites_on_board(http)
            assert not during[cut]["link_up"], "still shown down at the end of the outage"
            assert during[cut]["link_down_for_ms"] >= (CUT_S - 10) * 1000, during[cut]  # down since the cut
            for s, before in others.items():  # the rest of the fleet kept arriving
                assert during[s]["link_up"] and during[s]["readings"] > before, (s, during[s])
            fleet.sites[cut].restore()
            restored_at = time.monotonic()
            await asyncio.sleep(2)  # a few more seconds of traffic after the restore (a span)
            stop_ms = clock.now_ms()
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
            publishing = None
            # The publisher was cancelled mid-round: judge what its brokers acknowledged.
            acked = audit.acked
            want = {s: [m.key for m in acked if m.site == s] for s in sites}
            want_readings = Counter(m.site for m in acked if parse_topic(m.key[0]).kind is TopicKind.READING)

            async def caught_up() -> bool:
                shown = await sites_on_board(http)
                return all(shown[s]["readings"] >= want_readings[s] for s in sites) and shown[cut]["link_up"]

            try:
                await wait_until(caught_up, "the centre to catch up and the link to show up", 60, every_s=0.5)
            except TimeoutError:
                shown = await sites_on_board(http)
                print({s: (shown[s]["readings"], want_readings[s], shown[s]["link_up"]) for s in sites})
                raise
            caught_up_after = time.monotonic() - restored_at
            shown = await sites_on_board(http)
            got = await central_copy(fleet, sites)
            for s in sites:
                copy = [message_key(subject.replace(".", "/"), data) for subject, data in got[s]]
                present = set(copy)
                lost = [k for k in want[s] if k not in present]
                assert not lost, f"{s}: {len(lost)} acknowledged messages not at the centre, e.g. {lost[:3]}"
                dup = [k for k, n in Counter(copy).items() if n > 1 and parse_topic(k[0]).kind is TopicKind.READING]
                assert not dup, f"{s}: readings twice in the central stream: {dup[:3]}"
                order = [copy.index(k) for k in want[s] if parse_topic(k[0]).kind is TopicKind.READING]
                assert order == sorted(order), f"{s}: readings out of order at the centre"
                readings_at_centre = sum(parse_topic(k[0]).kind is TopicKind.READING for k in copy)
                assert shown[s]["readings"] == readings_at_centre, (s, shown[s]["readings"], readings_at_centre)
                assert shown[s]["records"]["status"] == "verified", (s, shown[s]["records"])
                assert partition_of(s, PARTITIONS) == shown[s]["partition"]
            print(f"{cut} cut {CUT_S:.0f} s: board showed it down after {seen_down_after:.1f} s; caught up "
                  f"{caught_up_after:.1f} s after the restore (2 s of it publishing); {len(acked)} messages "
                  f"acknowledged until {stop_ms - start} ms, 0 lost, readings {dict(want_readings)}")  # fmt: skip
    except BaseException:
        print_logs({"fleet-w1": log})
        print(fleet.logs()[-6000:])
        raise
    finally:
        if publishing is not None:
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
        stop(worker, signal.SIGTERM)
