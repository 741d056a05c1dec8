"""`nurserywatch kit provision` for a kit that names a NATS cluster (nurserywatch/cli/provision_nats.py):
the generated permissions are the Mosquitto ACL, and three real nats-server processes started from the
written files form a cluster that enforces them over TLS, with the provisioned credentials."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import shutil
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import nats
import pytest
from nats.js import api
from typer.testing import CliRunner

from dashboard.live.link import LiveLink
from gateway.service.jetstream import connect_nats, nats_auth_options
from nurserywatch.cli.main import app
from nurserywatch.cli.provision import Access, acl_rules, mqtt_users
from nurserywatch.cli.provision_nats import permissions
from nurserywatch.contract import (
    Position,
    PostureReading,
    Stream,
    TopicKind,
    ack_topic,
    alert_topic,
    edge_topic,
    reading_topic,
    status_topic,
    subscription,
)
from nurserywatch.jetstream import MQTT_STREAM, SiteLayout, mqtt_filter_to_subject
from nurserywatch.kit import Kit, KitError, load_kit
from nurserywatch.mqtt import BrokerURL, MqttCredentials, load_credentials, parse_brokers
from nurserywatch.nats_local import warm_mqtt
from nurserywatch.ports import free_port
from tests.support.nats_cluster import NATS_SERVER, NatsCluster
from tests.support.nats_files import NodeFile, started_nodes
from tests.support.processes import print_logs, spawn, stop
from tests.support.waiting import wait_until

SITE = "nsec"
KIT = f"""
site: {SITE}
name: NATS security test
rooms: [{{id: r1, name: Room 1}}]
agents: [{{id: pi-a}}, {{id: pi-b}}]
devices:
  - {{id: clip-a, kind: posture_clip, room: r1, agent: pi-a, transport: {{type: serial, port: ttys/a}}, child: c1}}
  - {{id: co2-b, kind: mhz19b, room: r1, agent: pi-b, transport: {{type: serial, port: ttys/b}}}}
children: [{{id: c1, age_band: "0", room: r1}}]
"""


def nats_section(ports: list[tuple[int, int, int, int]]) -> str:
    nodes = "\n".join(f"    - {{name: n{i + 1}, host: 127.0.0.1, bind: 127.0.0.1, client_port: {c}, "
                      f"cluster_port: {r}, mqtt_port: {m}, monitor_port: {h}}}"
                      for i, (c, r, m, h) in enumerate(ports))  # fmt: skip
    return f"nats:\n  nodes:\n{nodes}\n"


def write_kit(d: Path) -> Path:
    ports = [(free_port(), free_port(), free_port(), free_port()) for _ in range(3)]
    (d / "kit.yaml").write_text(KIT + nats_section(ports))
    return d / "kit.yaml"


# ------------------------------------------------------------------ pure generation


def test_permissions_are_the_mosquitto_acl_as_subjects(tmp_path: Path) -> None:
    kit = load_kit(write_kit(tmp_path))
    for user in mqtt_users(kit):
        publish, subscribe = permissions(kit, user)
        rules = acl_rules(kit, user)
        writes = [mqtt_filter_to_subject(r.topic) for r in rules if r.access in (Access.WRITE, Access.READWRITE)]
        reads = [mqtt_filter_to_subject(r.topic) for r in rules if r.access in (Access.READ, Access.READWRITE)]
        assert publish[: len(writes)] == writes and subscribe[: len(reads)] == reads
        extra = publish[len(writes):] + subscribe[len(reads):]
        # Only the gateway speaks NATS besides MQTT (its consumer, lease and journal).
        assert bool(extra) == (user.name == "gateway"), (user.name, extra)
    edge_pub, edge_sub = permissions(kit, next(u for u in mqtt_users(kit) if u.name == "edge-pi-a"))
    assert edge_pub == [f"nurserywatch.v1.{SITE}.reading.clip-a.posture", f"nurserywatch.v1.{SITE}.status.clip-a",
                        f"nurserywatch.v1.{SITE}.edge.pi-a"]  # fmt: skip
    assert edge_sub == []


def test_the_kit_checks_its_nats_section(tmp_path: Path) -> None:
    (tmp_path / "kit.yaml").write_text(KIT + nats_section([(4222, 6222, 8883, 8222)] * 3).replace("127.0.0.1", "h", 3)
                                       .replace("n3", "n2"))  # fmt: skip
    with pytest.raises(KitError) as bad:
        load_kit(tmp_path / "kit.yaml")
    assert "names must be unique" in str(bad.value)
    (tmp_path / "kit.yaml").write_text(KIT + nats_section([(4222, 6222, 8883, 8222)] * 2))
    with pytest.raises(KitError, match="at least 3"):
        load_kit(tmp_path / "kit.yaml")
    (tmp_path / "kit.yaml").write_text(KIT + nats_section([(4222, 4222, 8883, 8222), (1, 2, 3, 4), (5, 6, 7, 8)]))
    with pytest.raises(KitError, match="cluster_port 4222 on 127.0.0.1 is already n1.client_port"):
        load_kit(tmp_path / "kit.yaml")


def provision(kit_file: Path, out: Path, *extra: str) -> str:
    result = CliRunner().invoke(app, ["kit", "provision", "--config", str(kit_file), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_provision_writes_each_node_and_the_parts_broker_lists(tmp_path: Path) -> None:
    kit_file = write_kit(tmp_path)
    kit = load_kit(kit_file)
    assert kit.nats is not None
    out = tmp_path / "out"
    output = provision(kit_file, out, "--broker-dir", "/etc/nats/nurserywatch")
    assert "NATS cluster" in output and not (out / "mosquitto").exists()
    for node in kit.nats.nodes:
        d = out / "nats" / node.name
        conf = (d / "nats.conf").read_text()
        assert f'server_name: "{node.name}"' in conf and '"/etc/nats/nurserywatch/server.crt"' in conf
        assert '"/var/lib/nats/jetstream"' in conf and "jetstream: enabled" in conf
        assert (d / "nats.conf").stat().st_mode & 0o077 == 0  # it holds the passwords
        routes = [f"nats-route://127.0.0.1:{n.cluster_port}" for n in kit.nats.nodes if n is not node]
        assert f"routes: {json.dumps(routes)}" in conf
        unit = (d / f"nurserywatch-nats-{node.name}.service").read_text()
        assert "ExecStart=/opt/nurserywatch/bin/nats-server -c /etc/nats/nurserywatch/nats.conf" in unit
    layout = SiteLayout(SITE)
    assert json.loads((out / "nats" / "streams" / f"{layout.consumer}.consumer.json").read_text()) == \
        layout.consumer_config()  # fmt: skip
    # Each part lists every node, starting at a different one (so that every node has clients).
    firsts = set()
    for user in mqtt_users(kit):
        env = (out / "credentials" / f"{user.name}.env").read_text()
        line = next(x for x in env.splitlines() if x.startswith("NURSERYWATCH_BROKER="))
        urls = line.split("=", 1)[1].split(",")
        assert sorted(urls) == sorted(f"mqtts://127.0.0.1:{n.mqtt_port}?credentials=/etc/nurserywatch/mqtt/"
                                      f"{user.name}.yaml" for n in kit.nats.nodes)  # fmt: skip
        firsts.add(urls[0].split("?")[0])
    assert len(firsts) == 3


def test_the_node_units_pass_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (package systemd) is needed to check the units"
    kit_file = write_kit(tmp_path)
    provision(kit_file, tmp_path / "out")
    unit = tmp_path / "out" / "nats" / "n1" / "nurserywatch-nats-n1.service"
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/nurserywatch/bin/nats-server", NATS_SERVER)
                    .replace("User=nats\nGroup=nats\n", ""))  # fmt: skip
    result = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True)
    assert result.stdout + result.stderr == ""


# ------------------------------------------------------------------ three real nodes from the written files


@dataclass(frozen=True)
class Cluster:
    kit: Kit
    out: Path

    def url(self, user: str, node: int = 0) -> BrokerURL:
        assert self.kit.nats is not None
        port = self.kit.nats.nodes[node].mqtt_port
        return BrokerURL.parse(f"mqtts://127.0.0.1:{port}?credentials={self.out / 'credentials' / f'{user}.yaml'}")


@contextlib.contextmanager
def provisioned_cluster(d: Path) -> Iterator[Cluster]:
    kit_file = write_kit(d)
    kit = load_kit(kit_file)
    assert kit.nats is not None
    out = d / "out"
    provision(kit_file, out)
    files = [NodeFile(out / "nats" / n.name / "nats.conf", (n.client_port, n.mqtt_port), n.monitor_port)
             for n in kit.nats.nodes]  # fmt: skip
    with started_nodes(files):
        cluster = Cluster(kit, out)
        # Every node's MQTT set up before the tests time their connections (as NatsCluster.warm does).
        asyncio.run(warm_mqtt([cluster.url("gateway", i) for i in range(len(kit.nats.nodes))], timeout_s=30))
        yield cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with provisioned_cluster(tmp_path_factory.mktemp("nats-provisioned")) as c:
        yield c


async def collect_until(client: aiomqtt.Client, last_topic: str, timeout_s: float = 10.0) -> list[str]:
    got: list[str] = []
    async with asyncio.timeout(timeout_s):
        async for message in client.messages:
            got.append(message.topic.value)
            if message.topic.value == last_topic:
                return got
    raise AssertionError("unreachable")


async def test_each_user_gets_exactly_its_acl_across_nodes(cluster: Cluster) -> None:
    own = reading_topic(SITE, "clip-a", Stream.POSTURE)
    forbidden = [
        reading_topic(SITE, "co2-b", Stream.AIR),  # another agent's device
        status_topic(SITE, "co2-b"),
        edge_topic(SITE, "pi-b"),  # impersonating the other agent
        alert_topic(SITE, "forged-1"),  # forging an alert
        ack_topic(SITE),  # acknowledging an alert
    ]
    # The gateway on node 2, the agent on node 1: what the agent may publish crosses the cluster.
    async with cluster.url("gateway", 1).client("t-gw") as gw, cluster.url("edge-pi-a").client("t-pi-a") as agent:
        kinds = (TopicKind.READING, TopicKind.STATUS, TopicKind.EDGE, TopicKind.ALERT, TopicKind.COMMAND_ACK)
        granted = await gw.subscribe([(subscription(SITE, k), 1) for k in kinds])
        assert all(code.value == 1 for code in granted), granted
        for topic in forbidden:
            # As with Mosquitto: the QoS 1 publish is acknowledged (MQTT 3.1.1 cannot say no) and dropped.
            await agent.publish(topic, b"{}", qos=1, timeout=10)
        await agent.publish(own, b"{}", qos=1, timeout=10)
        assert await collect_until(gw, own) == [own]
        # An agent may not read anything: the subscription is refused (SUBACK 0x80).
        refused = await agent.subscribe(subscription(SITE, TopicKind.READING), qos=1, timeout=10)
        assert [code.value for code in refused] == [0x80]
        # Nor may the gateway subscribe beyond its topics (Mosquitto would grant it and filter).
        refused = await gw.subscribe(f"nurserywatch/v1/{SITE}/#", qos=1, timeout=10)
        assert [code.value for code in refused] == [0x80]


async def test_the_dashboard_reads_what_it_shows_and_writes_only_commands(cluster: Cluster) -> None:
    kit = cluster.kit
    own = ack_topic(SITE)
    async with cluster.url("gateway", 2).client("t-gw-2") as gw, cluster.url("dashboard", 1).client("t-dash") as dash:
        granted = await dash.subscribe([(t, 1) for t in LiveLink(kit, cluster.url("dashboard")).topics()], timeout=10)
        assert all(code.value == 1 for code in granted), granted
        await gw.subscribe([(subscription(SITE, TopicKind.READING), 1), (own, 1)])
        await dash.publish(reading_topic(SITE, "clip-a", Stream.POSTURE), b"{}", qos=1, timeout=10)
        await dash.publish(own, b"{}", qos=1, timeout=10)
        assert await collect_until(gw, own) == [own]


async def test_wrong_password_anonymous_and_untrusted_ca_are_refused(cluster: Cluster) -> None:
    creds = load_credentials(cluster.out / "credentials" / "edge-pi-a.yaml")
    assert cluster.kit.nats is not None
    port = cluster.kit.nats.nodes[0].mqtt_port
    for url in (
        BrokerURL("127.0.0.1", port, tls=True, ca_file=creds.ca_file),
        BrokerURL("127.0.0.1", port, "edge-pi-a", "wrong", tls=True, ca_file=creds.ca_file),
    ):
        with pytest.raises(aiomqtt.MqttCodeError):
            async with url.client("t-refused"):
                pass
    untrusted = BrokerURL("127.0.0.1", port, creds.username, creds.password, tls=True)
    with pytest.raises(aiomqtt.MqttError, match="(?i)certificate"):
        async with untrusted.client("t-untrusted"):
            pass


async def test_the_gateway_user_creates_the_site_streams_over_nats_and_agents_may_not_use_nats(
    cluster: Cluster,
) -> None:
    assert cluster.kit.nats is not None
    servers = [f"tls://127.0.0.1:{n.client_port}" for n in cluster.kit.nats.nodes]
    creds = load_credentials(cluster.out / "credentials" / "gateway.yaml")
    tls = ssl.create_default_context(cafile=creds.ca_file)
    nc = await nats.connect(servers=servers, user=creds.username, password=creds.password, tls=tls,
                            allow_reconnect=False)  # fmt: skip
    try:
        js = nc.jetstream()
        layout = SiteLayout(SITE)
        streams = cluster.out / "nats" / "streams"
        config = json.loads((streams / f"{layout.state_stream}.json").read_text())
        info = await js.add_stream(api.StreamConfig.from_response(config))
        assert info.config.num_replicas == 3
        # The input is nats-server's MQTT stream, made at the account's first MQTT connection.
        async with cluster.url("gateway").client("t-gateway"):
            pass
        config = json.loads((streams / f"{layout.consumer}.consumer.json").read_text())
        consumer = await js.add_consumer(MQTT_STREAM, api.ConsumerConfig.from_response(config))
        assert consumer.config.filter_subjects == layout.input_filters
        assert (await js.stream_info(MQTT_STREAM)).config.num_replicas == 3
        kv = await js.create_key_value(bucket=layout.lease_bucket, history=1, ttl=4, replicas=3)
        assert await kv.create(layout.lease_key, b"instance-1") == 1
    finally:
        await nc.close()
    edge = load_credentials(cluster.out / "credentials" / "edge-pi-a.yaml")
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(servers=servers[:1], user=edge.username, password=edge.password, tls=tls,
                           allow_reconnect=False, max_reconnect_attempts=0)  # fmt: skip


def test_the_env_file_lists_urls_the_parts_parse(cluster: Cluster) -> None:
    env = (cluster.out / "credentials" / "dashboard.env").read_text()
    line = next(x for x in env.splitlines() if x.startswith("NURSERYWATCH_BROKER="))
    local = line.split("=", 1)[1].replace("/etc/nurserywatch/mqtt", str(cluster.out / "credentials"))
    urls = parse_brokers(local)
    assert len(urls) == 3 and all(u.tls and u.username == "dashboard" for u in urls)


# ------------------------------------------------------------------ the gateway as provisioned


def gateway_env(cluster: Cluster) -> dict[str, str]:
    """credentials/gateway.env as the gateway's environment, its paths on this machine."""
    env: dict[str, str] = {}
    for line in (cluster.out / "credentials" / "gateway.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value.replace("/etc/nurserywatch/mqtt", str(cluster.out / "credentials"))
    return env


def readings_stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return int(con.execute("SELECT count(*) FROM readings").fetchone()[0])
    except sqlite3.OperationalError:  # the schema not made yet
        return 0


async def test_the_gateways_run_on_the_cluster_as_provisioned(cluster: Cluster, tmp_path: Path) -> None:
    """Two real gateway processes given only the provisioned gateway.env (and each its instance name):
    they connect over TLS with the gateway user, and everything they do on JetStream — the input
    consumer, the lease bucket, the journal, the standby following it, the takeover — is within that
    user's permissions."""
    env = gateway_env(cluster)
    assert env["NURSERYWATCH_TRANSPORT"] == "jetstream" and env["NURSERYWATCH_NATS"].startswith("tls://")
    assert env["NURSERYWATCH_NATS_CREDENTIALS"].endswith("/gateway.yaml")
    kit_file = cluster.out.parent / "kit.yaml"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}

    def logged(name: str, text: str) -> bool:
        return text in logs[name].read_text()

    def stored(n: int) -> bool:  # in b's file: as the active one, or through a's journal as the standby
        return readings_stored(tmp_path / "b" / "gw.sqlite3") == n

    try:
        for name, role in (("a", "is the ACTIVE gateway"), ("b", "standing by")):  # b after a: a is active
            (tmp_path / name).mkdir()
            procs[name], logs[name] = spawn(f"gateway-{name}", [
                "gateway", "--config", str(kit_file), "--db", str(tmp_path / name / "gw.sqlite3"),
                "--records-key", str(tmp_path / "records-signing.key"),
            ], tmp_path, env={**env, "NURSERYWATCH_INSTANCE": name})  # fmt: skip
            await wait_until(functools.partial(logged, name, role), f"{name}: {role}", 60, 0.1)
        async with cluster.url("edge-pi-a", 2).client("t-provisioned-edge") as agent:
            for seq in (1, 2):
                reading = PostureReading(ts=int(time.time() * 1000), seq=seq, position=Position.SUPINE)
                await agent.publish(reading_topic(SITE, "clip-a", Stream.POSTURE), reading.to_json(), qos=1,
                                    timeout=10)  # fmt: skip
                await wait_until(functools.partial(stored, seq), f"reading {seq} stored", 30, 0.1)
                if seq == 1:
                    stop(procs["a"])  # SIGTERM: a releases the lease, b takes over
                    await wait_until(functools.partial(logged, "b", "is the ACTIVE gateway"), "b's takeover", 30, 0.1)
    finally:
        for proc in procs.values():
            stop(proc)
        print_logs(logs, 20)
    for log in logs.values():
        text = log.read_text().lower()
        assert "permissions violation" not in text and "authorization" not in text


async def test_the_gateways_nats_connection_is_refused_without_its_credentials(cluster: Cluster) -> None:
    servers = gateway_env(cluster)["NURSERYWATCH_NATS"].split(",")
    creds = load_credentials(cluster.out / "credentials" / "gateway.yaml")

    async def connect(credentials: MqttCredentials | None) -> None:
        nc = await nats.connect(servers=servers, allow_reconnect=False, max_reconnect_attempts=0,
                                **nats_auth_options(servers, credentials))  # fmt: skip
        await nc.close()

    await connect(creds)  # as provisioned
    with pytest.raises(Exception, match="(?i)authorization"):
        await connect(creds.model_copy(update={"password": "wrong"}))
    with pytest.raises(Exception, match="(?i)certificate"):  # tls:// without the site CA
        await connect(None)


async def test_the_nats_user_may_be_in_the_url(tmp_path: Path) -> None:
    """nats://user:password@host:port, on a node with one user (plain, no TLS)."""
    node = NatsCluster(tmp_path, 1, extra='authorization { users: [{user: "gw", password: "s3cret"}] }')
    node.start()
    try:
        url = node.nats_urls[0]
        with_user = url.replace("nats://", "nats://gw:s3cret@")
        assert nats_auth_options([with_user]) == {"user": "gw", "password": "s3cret"}
        nc = await asyncio.wait_for(connect_nats([with_user], "t-url-user"), 10)
        await nc.close()
        for refused in (url, url.replace("nats://", "nats://gw:wrong@")):
            with pytest.raises(Exception, match="(?i)authorization"):
                await nats.connect(servers=[refused], allow_reconnect=False, max_reconnect_attempts=0,
                                   **nats_auth_options([refused]))  # fmt: skip
    finally:
        node.stop()
