"""The fleet's transport on real nats-server processes (tests/support/fleet_cluster.py): a 3-node centre
in JetStream domain ``hub``, sites as leaf nodes in their own domains whose out stream the central
partition stream *sources*, and a Mosquitto site bridged to the central MQTT listener. The WAN is a
cuttable TCP link. Nothing of ours copies a message: these prove JetStream's own store-and-forward."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from fleet.streams import (
    Ensured,
    SourceRestarter,
    ensure_partition_streams,
    ensure_site_out_stream,
    partition_links,
)
from nurserywatch.contract import alert_topic, reading_topic
from nurserywatch.fleet_layout import FleetLayout, SiteOutLayout
from tests.support.fleet_cluster import FleetTransport
from tests.support.waiting import wait_until

LAYOUT = FleetLayout(partitions=1)
#: Seconds a site's link stays cut while it keeps publishing.
CUT_S = 10.0


def topic_of(i: int, site: str) -> str:
    return alert_topic(site, f"a{i}") if i % 10 == 9 else reading_topic(site, "mat-1", "breathing")


async def central(js: JetStreamContext, stream: str) -> list[tuple[str, dict[str, object]]]:
    """Every message of a central stream, in order: (subject, payload)."""
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except NotFoundError:
            continue
        assert msg.subject is not None and msg.data is not None
        out.append((msg.subject, json.loads(msg.data)))
    return out


async def count(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def publish_mqtt(fleet_url: object, site: str, start: int, n: int, client_id: str) -> None:
    """``n`` numbered QoS 1 messages (readings, every tenth an alert) over MQTT, each acknowledged."""
    async with fleet_url.client(client_id) as c:  # type: ignore[attr-defined]
        for i in range(start, start + n):
            await c.publish(topic_of(i, site), json.dumps({"n": i}).encode(), qos=1)


def assert_in_order(got: list[tuple[str, dict[str, object]]], site: str, n: int) -> None:
    numbers = [p["n"] for _, p in got]
    assert numbers == list(range(n)), f"{len(numbers)} messages, first gaps/out of order near {_first_bad(numbers)}"
    for i, (subject, _) in enumerate(got):
        assert subject == topic_of(i, site).replace("/", "."), subject


def _first_bad(numbers: list[object]) -> int | None:
    return next((i for i, v in enumerate(numbers) if v != i), None)


async def _setup_leaf(fleet: FleetTransport, site: str) -> tuple[NatsClient, NatsClient, JetStreamContext]:
    import nats

    site_nc = await nats.connect(fleet.sites[site].nats_url)
    assert await ensure_site_out_stream(site_nc.jetstream(), site, replicas=1) is Ensured.CREATED
    hub_nc = await fleet.connect_hub()
    hub_js = hub_nc.jetstream()
    assert await ensure_partition_streams(hub_js, LAYOUT, [site], []) == {0: Ensured.CREATED}
    assert await ensure_partition_streams(hub_js, LAYOUT, [site], []) == {0: Ensured.UNCHANGED}
    return site_nc, hub_nc, hub_js


async def test_leaf_site_mqtt_lands_in_order_in_the_central_stream(
    fleet_transport: Callable[..., FleetTransport],
) -> None:
    fleet = fleet_transport(leaf_sites=["sakura"])
    site_nc, hub_nc, hub_js = await _setup_leaf(fleet, "sakura")
    try:
        n = 300
        await publish_mqtt(fleet.sites["sakura"].mqtt_url, "sakura", 0, n, "edge-1")
        await wait_until(lambda: _at_least(hub_js, LAYOUT.stream(0), n), "the centre sourced every message", 20)
        assert_in_order(await central(hub_js, LAYOUT.stream(0)), "sakura", n)
        links = await partition_links(hub_js, LAYOUT, 0, ["sakura"])
        assert links["sakura"].up and links["sakura"].lag == 0, links
        msg = await hub_js.get_msg(LAYOUT.stream(0), 1)
        # JetStream marks what it sourced (the fleet worker checks the site of the subject against it).
        assert (msg.headers or {}).get("Nats-Stream-Source", "").startswith(SiteOutLayout("sakura").stream)
    finally:
        await site_nc.close()
        await hub_nc.close()


async def _at_least(js: JetStreamContext, stream: str, n: int) -> bool:
    try:
        return await count(js, stream) >= n
    except nats.errors.TimeoutError:  # the stream electing a leader (after a step-down) answers nothing
        return False


async def test_cut_link_catches_up_in_order_nothing_lost(fleet_transport: Callable[..., FleetTransport]) -> None:
    fleet = fleet_transport(leaf_sites=["sakura"])
    site_nc, hub_nc, hub_js = await _setup_leaf(fleet, "sakura")
    site = fleet.sites["sakura"]
    stream = LAYOUT.stream(0)
    sent = 0
    stop = asyncio.Event()

    async def publisher() -> None:
        nonlocal sent
        async with site.mqtt_url.client("edge-1") as c:
            while not stop.is_set():
                await c.publish(topic_of(sent, "sakura"), json.dumps({"n": sent}).encode(), qos=1)
                sent += 1
                await asyncio.sleep(0.01)

    async def link_up(want: bool) -> bool:
        return (await partition_links(hub_js, LAYOUT, 0, ["sakura"]))["sakura"].up is want

    task = asyncio.create_task(publisher())
    try:
        await wait_until(lambda: _at_least(hub_js, stream, 50), "messages flowing before the cut", 15)
        await wait_until(lambda: link_up(True), "the link reported up", 10)
        site.cut()
        loop = asyncio.get_running_loop()
        cut_at = loop.time()
        at_cut = await count(hub_js, stream)
        await wait_until(lambda: link_up(False), "the link reported down while cut", CUT_S + 5, every_s=0.2)
        await asyncio.sleep(max(0.0, CUT_S - (loop.time() - cut_at)))  # the outage itself, not a wait for a condition
        during = await count(hub_js, stream)
        assert during - at_cut < 50, "nothing should cross a cut link (a few in flight at most)"
        site.restore()
        restored_at = loop.time()
        # The server alone resumes a source after its retry back-off (up to ~2.5 min); the fleet
        # worker's restarter resumes it once the site answers again.
        restarter = SourceRestarter(hub_nc, LAYOUT, every_s=1.0)

        async def caught_up() -> bool:
            await restarter.check(0, await partition_links(hub_js, LAYOUT, 0, ["sakura"]))
            return await count(hub_js, stream) >= sent

        await wait_until(caught_up, "the centre caught up", 20, every_s=0.2)
        # Mostly the restarter's step-down; the server's own retry may come first when it falls due then.
        resumed_by = "restarter" if restarter.restarts.get(0, 0) else "server"
        assert loop.time() - restored_at < 15, f"caught up {loop.time() - restored_at:.1f} s after the restore"
        print(f"caught up {loop.time() - restored_at:.1f} s after the restore, resumed by the {resumed_by}")
        stop.set()
        await task
        await wait_until(lambda: _at_least(hub_js, stream, sent), "the last ones sourced", 10)
        assert_in_order(await central(hub_js, stream), "sakura", sent)
        await wait_until(lambda: link_up(True), "the link reported up again", 10)
        assert sent > (at_cut + 100), f"the site kept publishing through the outage ({sent} sent)"
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await site_nc.close()
        await hub_nc.close()


async def test_bridged_mosquitto_site_lands_and_rides_through_an_outage(
    fleet_transport: Callable[..., FleetTransport],
) -> None:
    fleet = fleet_transport(bridged_sites=["kaede"])
    hub_nc = await fleet.connect_hub()
    hub_js = hub_nc.jetstream()
    stream = LAYOUT.stream(0)
    bridged = fleet.bridged["kaede"]
    try:
        assert await ensure_partition_streams(hub_js, LAYOUT, [], ["kaede"]) == {0: Ensured.CREATED}
        await publish_mqtt(bridged.url, "kaede", 0, 100, "edge-1")
        await wait_until(lambda: _at_least(hub_js, stream, 100), "the bridge forwarded every message", 20)
        bridged.cut()
        # Mosquitto accepted these (PUBACK) with the centre unreachable: its bridge queue keeps them.
        await publish_mqtt(bridged.url, "kaede", 100, 100, "edge-1")
        assert await count(hub_js, stream) <= 100 + 20
        bridged.restore()
        await wait_until(lambda: _at_least(hub_js, stream, 200), "the bridge caught up", 25, every_s=0.1)
        got = await central(hub_js, stream)
        # QoS 1 over the bridge is at least once: a message in flight at the cut may come twice.
        dedup = list({p["n"]: (s, p) for s, p in got}.values())
        assert_in_order(sorted(dedup, key=lambda sp: sp[1]["n"]), "kaede", 200)  # type: ignore[arg-type,return-value]
    finally:
        await hub_nc.close()


FORGED = json.dumps({"n": -1, "forged": True}).encode()


async def raw_leaf_publish(port: int, user: str, password: str, subject: str) -> str:
    """A site server that ignores the permissions the centre gave it: the leaf node protocol by hand,
    one message on ``subject``; what the centre answered (its -ERR) before it closed the link."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # INFO
        connect = {"user": user, "pass": password, "name": "rogue", "headers": True, "version": "2.15.1"}
        writer.write(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        await writer.drain()
        while (await reader.readline()).strip() != b"PONG":
            pass
        writer.write(f"LMSG {subject} {len(FORGED)}\r\n".encode() + FORGED + b"\r\nPING\r\n")
        await writer.drain()
        answer = b""
        async with asyncio.timeout(10):
            while line := await reader.readline():
                answer = line if line.startswith(b"-ERR") else answer
        return answer.decode()
    finally:
        writer.close()


def hub_log_has(fleet: FleetTransport, text: str) -> bool:
    return any(text in n.log.read_text(errors="replace") for n in fleet.hub.nodes if n.log.exists())


async def test_forged_messages_for_another_site_never_land(fleet_transport: Callable[..., FleetTransport]) -> None:
    """Site sakura's credentials (and its server) cannot put a message of site kaede into the centre:
    over the leaf node link from a client of sakura's NATS (plain and through its out stream), from a
    server ignoring its permissions, and directly to the centre over NATS and MQTT."""
    import aiomqtt
    import nats

    fleet = fleet_transport(leaf_sites=["sakura"], bridged_sites=["kaede"])
    site_nc = await nats.connect(fleet.sites["sakura"].nats_url)
    site_js = site_nc.jetstream()
    hub_nc = await fleet.connect_hub()
    hub_js = hub_nc.jetstream()
    stream = LAYOUT.stream(0)
    victim = alert_topic("kaede", "forged1").replace("/", ".")
    try:
        await ensure_site_out_stream(site_js, "sakura", replicas=1)
        await ensure_partition_streams(hub_js, LAYOUT, ["sakura"], ["kaede"])
        # The centre has interest in kaede's subjects (its partition stream captures them).
        # 1. A client of sakura's NATS publishes kaede's alert; sakura's out stream was even made to hold it.
        out = SiteOutLayout("sakura", replicas=1).stream_config()
        await site_js.update_stream(
            StreamConfig.from_response({**out, "subjects": [*SiteOutLayout("sakura").subjects, victim]})
        )
        await site_nc.publish(victim, FORGED)
        assert (await site_js.publish(victim, FORGED)).stream == SiteOutLayout("sakura").stream
        await site_js.publish(alert_topic("sakura", "marker").replace("/", "."), json.dumps({"n": 0}).encode())
        await wait_until(lambda: _at_least(hub_js, stream, 1), "sakura's own alert sourced", 20)

        # 2. A server that sends it anyway: the centre refuses it and drops the link.
        answer = await raw_leaf_publish(fleet.hub.nodes[0].leaf_port, "site-sakura", fleet.passwords["sakura"], victim)
        assert "Permissions Violation for Publish" in answer, answer
        await wait_until(lambda: hub_log_has(fleet, f'Publish Violation on "{victim}"'), "the centre logged it", 5)

        # 3. Sakura's credentials directly at the centre: leaf node only, no NATS client, no MQTT.
        try:
            await nats.connect(fleet.hub_urls[0], user="site-sakura", password=fleet.passwords["sakura"],
                               allow_reconnect=False, connect_timeout=5, max_reconnect_attempts=0)  # fmt: skip
            raise AssertionError("a site's leaf node credentials connected as a NATS client")
        except nats.errors.Error as exc:
            assert "authorization" in str(exc).lower(), exc
        creds = fleet.hub.mqtt_urls[0]
        sakura_mqtt = type(creds)(creds.host, creds.port, username="site-sakura", password=fleet.passwords["sakura"])
        try:
            async with sakura_mqtt.client("rogue-1"):
                raise AssertionError("a site's leaf node credentials connected over MQTT")
        except aiomqtt.MqttError:
            pass

        # 4. Kaede's own (bridged) credentials over MQTT may publish kaede's subjects only: sakura's alert
        # is acknowledged (QoS 1), dropped and logged; kaede's own message after it lands.
        kaede_mqtt = type(creds)(creds.host, creds.port, username="site-kaede", password=fleet.passwords["kaede"])
        other = alert_topic("sakura", "forged2")
        async with kaede_mqtt.client("rogue-2") as c:
            await c.publish(other, FORGED, qos=1)
            await c.publish(alert_topic("kaede", "marker"), json.dumps({"n": 1}).encode(), qos=1)
        await wait_until(lambda: _at_least(hub_js, stream, 2), "kaede's own alert captured", 20)
        await wait_until(lambda: hub_log_has(fleet, f'Publish Violation - Subject "{other.replace("/", ".")}"'),
                         "the centre logged the MQTT one", 5)  # fmt: skip

        got = await central(hub_js, stream)
        assert not [s for s, p in got if p.get("forged")], got
        assert [(s, p["n"]) for s, p in got] == [
            (alert_topic("sakura", "marker").replace("/", "."), 0),
            (alert_topic("kaede", "marker").replace("/", "."), 1),
        ]
    finally:
        await site_nc.close()
        await hub_nc.close()


#: A one-node centre: both sites' leaf node connections land on the same server, where names collide.
ONE_NODE = FleetLayout(partitions=1, replicas=1)
#: What nats-server logs when it takes a leaf node connection for the same server reconnecting.
REPLACED = "Replacing connection from same server"


async def hub_leafs(fleet: FleetTransport) -> list[dict[str, object]]:
    """The leaf node connections of the first central node (its monitoring /leafz)."""
    import urllib.request

    def get() -> list[dict[str, object]]:
        url = f"http://127.0.0.1:{fleet.hub.nodes[0].monitor_port}/leafz"
        with urllib.request.urlopen(url, timeout=5) as r:
            return list(json.load(r).get("leafs") or [])

    return await asyncio.to_thread(get)


async def test_two_leaf_sites_stay_linked_at_once(fleet_transport: Callable[..., FleetTransport]) -> None:
    """Each site's node is named after its site (as `nurserywatch kit provision` names a fleet site's
    nodes): two sites linked to one central server both stay connected while both publish."""
    import nats

    sites = ["sakura", "momiji"]
    fleet = fleet_transport(leaf_sites=sites, hub_size=1)
    names = {f"{s}-n1" for s in sites}
    assert {fleet.sites[s].nats.nodes[0].name for s in sites} == names
    hub_nc = await fleet.connect_hub()
    hub_js = hub_nc.jetstream()
    stream = ONE_NODE.stream(0)
    try:
        for s in sites:
            site_nc = await nats.connect(fleet.sites[s].nats_url)
            await ensure_site_out_stream(site_nc.jetstream(), s, replicas=1)
            await site_nc.close()
        await ensure_partition_streams(hub_js, ONE_NODE, sites, [])

        async def linked() -> set[tuple[object, object, object]]:
            return {(lf.get("name"), lf.get("ip"), lf.get("port")) for lf in await hub_leafs(fleet)}

        await wait_until(lambda: _names_are(linked, names), "both sites linked to the central server", 15,
                         every_s=0.1)  # fmt: skip
        before = await linked()
        sent = dict.fromkeys(sites, 0)

        async def publish(s: str, for_s: float) -> None:
            loop = asyncio.get_running_loop()
            end = loop.time() + for_s
            async with fleet.sites[s].mqtt_url.client(f"edge-{s}") as c:
                while loop.time() < end:
                    await c.publish(topic_of(sent[s], s), json.dumps({"n": sent[s]}).encode(), qos=1)
                    sent[s] += 1
                    await asyncio.sleep(0.02)

        await asyncio.gather(*(publish(s, 4.0) for s in sites))
        total = sum(sent.values())
        await wait_until(lambda: _at_least(hub_js, stream, total), "both sites' messages at the centre", 20)
        got = await central(hub_js, stream)
        for s in sites:
            assert_in_order([m for m in got if m[0].split(".")[2] == s], s, sent[s])
        # The same two connections throughout: neither site was knocked off and came back.
        assert await linked() == before, (before, await linked())
        assert not hub_log_has(fleet, REPLACED), fleet.logs()
    finally:
        await hub_nc.close()


async def _names_are(linked: Callable[[], Awaitable[set[tuple[object, object, object]]]], names: set[str]) -> bool:
    got = await linked()
    return len(got) == len(names) and {name for name, _, _ in got} == names


async def test_two_leaf_sites_of_one_server_name_knock_each_other_off(
    fleet_transport: Callable[..., FleetTransport],
) -> None:
    """Without the site in the name (both nodes ``n1``), the central server takes the second site's
    connection for the first one reconnecting and drops the first (nats-server#1607): what the test
    above guards against."""
    fleet = fleet_transport(leaf_sites=["sakura", "momiji"], hub_size=1, leaf_node_prefix="")
    assert {leaf.nats.nodes[0].name for leaf in fleet.sites.values()} == {"n1"}
    await wait_until(lambda: hub_log_has(fleet, REPLACED), "the centre dropped one site's link for the other", 15)


async def test_a_partition_restarting_its_sources_loses_no_bridged_message(
    fleet_transport: Callable[..., FleetTransport],
) -> None:
    """A leader step-down (the SourceRestarter's, after a leaf site's outage) restarts every source of the
    partition stream, the bridged sites' one of $MQTT_msgs too: its consumer there is gone for a moment.
    nats-server's own $MQTT_msgs is an interest stream and dropped what arrived meanwhile (a fresh-clone
    CI run lost 21 readings of a bridged site); kept by limits, the source resumes where it stopped."""
    fleet = fleet_transport(bridged_sites=["kaede"])
    hub_nc = await fleet.connect_hub()
    hub_js = hub_nc.jetstream()
    stream = LAYOUT.stream(0)
    try:
        assert await ensure_partition_streams(hub_js, LAYOUT, [], ["kaede"]) == {0: Ensured.CREATED}
        assert (await hub_js.stream_info("$MQTT_msgs")).config.retention == "limits"
        rounds, per_round = 3, 120
        n = rounds * per_round
        restarter = SourceRestarter(hub_nc, LAYOUT)
        for r in range(rounds):  # each round: a step-down while the round's messages flow
            publishing = asyncio.create_task(
                publish_mqtt(fleet.bridged["kaede"].url, "kaede", r * per_round, per_round, f"edge-{r}")
            )
            await asyncio.sleep(0.2)
            await wait_until(lambda: _has_leader(hub_js, stream), "the partition stream's leader", 20)
            assert await restarter._step_down(0, "test")
            await publishing
        assert restarter.restarts == {0: rounds}
        await wait_until(lambda: _at_least(hub_js, stream, n), "every acknowledged message at the centre", 30,
                         every_s=0.2)  # fmt: skip
        got = await central(hub_js, stream)
        dedup = list({p["n"]: (s, p) for s, p in got}.values())  # the bridge is at least once
        assert_in_order(sorted(dedup, key=lambda sp: sp[1]["n"]), "kaede", n)  # type: ignore[arg-type,return-value]
    finally:
        await hub_nc.close()


async def _has_leader(js: JetStreamContext, stream: str) -> bool:
    try:
        return bool((await js.stream_info(stream)).cluster.leader)  # type: ignore[union-attr]
    except Exception:  # no leader yet: the request times out or is refused
        return False
