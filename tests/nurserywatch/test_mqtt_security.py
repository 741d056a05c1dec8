"""MQTT security (docs/deploy.md §6): `nurserywatch kit provision` generates a Mosquitto config, passwords,
ACLs and a site CA; a REAL Mosquitto is started from exactly those files on free loopback ports (a
plain and a TLS listener) and the tests try what an attacker on the nursery network would: publish
another agent's device topics, forge alerts, connect anonymously or with a wrong password, talk TLS
to the broker without the site CA. The edge and gateway run as real processes with credentials
files through their broker URLs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from typer.testing import CliRunner

from edge.agent.doctor import check_broker
from nurserywatch.cli.main import app
from nurserywatch.cli.provision import (
    DASHBOARD_ACCESS,
    GATEWAY_ACCESS,
    Access,
    BrokerOptions,
    ProvisionError,
    Role,
    acl_rules,
    acl_text,
    mosquitto_conf,
    mqtt_users,
    server_names,
)
from nurserywatch.command_auth import CommandSigner
from nurserywatch.contract import (
    MAX_PAYLOAD_BYTES,
    AckCommand,
    Alert,
    DeviceStatus,
    EdgeStatus,
    GatewayStatus,
    PostureReading,
    Stream,
    TopicKind,
    ack_topic,
    alert_topic,
    edge_topic,
    gateway_topic,
    parse_topic,
    reading_topic,
    status_topic,
    subscription,
)
from nurserywatch.keys import load_private_key
from nurserywatch.kit import STREAMS_BY_KIND, load_kit
from nurserywatch.mqtt import BrokerURL, load_credentials
from nurserywatch.ports import free_port
from tests.support.commands import publish_command
from tests.support.mosquitto import running_provisioned
from tests.support.mqtt_messages import collect_until
from tests.support.processes import print_logs, spawn, stop

KIT = """\
site: sec
name: security test
rooms: [{id: r1, name: Room 1}, {id: r2, name: Room 2}]
agents: [{id: pi-a}, {id: pi-b}]
devices:
  - {id: clip-a, kind: posture_clip, room: r1, agent: pi-a, child: c1, transport: {type: serial, port: ttys/clip-a}}
  - {id: mat-a, kind: nap_mat, room: r1, agent: pi-a, child: c1, transport: {type: serial, port: ttys/mat-a}}
  - {id: co2-b, kind: mhz19b, room: r2, agent: pi-b, transport: {type: serial, port: ttys/co2-b}}
children: [{id: c1, age_band: "0", room: r1}]
"""
SITE = "sec"


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def kit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("seckit")
    (d / "kit.yaml").write_text(KIT)
    return d / "kit.yaml"


def provision_cli(kit_file: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["kit", "provision", "--config", str(kit_file), "--out", str(out), *extra], env=env
    )
    return result.exit_code, result.output


# ------------------------------------------------------------------ pure generation


def test_acl_gives_each_agent_exactly_its_own_devices(kit_file: Path) -> None:
    kit = load_kit(kit_file)
    for user in mqtt_users(kit):
        if user.role is not Role.EDGE:
            continue
        rules = acl_rules(kit, user)
        assert all(r.access is Access.WRITE and "+" not in r.topic and "#" not in r.topic for r in rules)
        written = {r.topic for r in rules}
        expected = {edge_topic(SITE, str(user.agent))}
        for device in kit.devices_of_agent(str(user.agent)):
            expected.add(status_topic(SITE, device.id))
            expected |= {reading_topic(SITE, device.id, s) for s in STREAMS_BY_KIND[device.kind]}
        assert written == expected
        # Every line is a contract topic about this agent or one of its devices, nothing else.
        for topic in written:
            t = parse_topic(topic)
            assert t.agent == user.agent or (t.device and kit.device(t.device).agent == user.agent)  # type: ignore[union-attr]
    text = acl_text(kit)
    section_a = text.split("user edge-pi-a\n")[1].split("\n\n")[0]
    assert "topic write nurserywatch/v1/sec/reading/mat-a/breathing" in section_a
    assert "co2-b" not in section_a and "pi-b" not in section_a
    before_users = text.split("\nuser ")[0].splitlines()
    assert all(line.startswith("#") for line in before_users if line), "such a line would apply to anonymous clients"
    assert "pattern" not in text


def test_every_topic_kind_has_a_decided_access_for_gateway_and_dashboard() -> None:
    # A new topic in the contract must be given (or refused) to the gateway and the dashboard here.
    for table in (GATEWAY_ACCESS, DASHBOARD_ACCESS):
        assert {k.value for k in TopicKind} <= set(table)
    # The dashboard sends only staff commands; the gateway never publishes what edges or staff send.
    assert all(
        a in (Access.READ, None) or k.startswith("command_") for k, a in DASHBOARD_ACCESS.items()
    )
    for kind in ("reading", "status", "edge", "command_ack", "command_session", "command_record"):
        assert GATEWAY_ACCESS[kind] is Access.READ


def test_the_dashboard_may_read_everything_it_subscribes_to(kit_file: Path) -> None:
    from paho.mqtt.client import topic_matches_sub

    from dashboard.live.link import LiveLink

    kit = load_kit(kit_file)
    dashboard = next(u for u in mqtt_users(kit) if u.role is Role.DASHBOARD)
    readable = [r.topic for r in acl_rules(kit, dashboard) if r.access in (Access.READ, Access.READWRITE)]
    subscribed = LiveLink(kit, BrokerURL("127.0.0.1", 1)).topics()
    assert subscribed
    for topic_filter in subscribed:
        example = topic_filter.replace("+", "x1")  # a topic the filter matches
        assert any(topic_matches_sub(acl, example) for acl in readable), f"the ACL hides {topic_filter}"


def test_config_refuses_bad_options_with_a_message() -> None:
    kit = load_kit(Path(__file__).resolve().parents[2] / "configs" / "kit.example.yaml")
    conf = mosquitto_conf(kit, BrokerOptions("/etc/mosquitto/nw", port=1883, tls_port=8883))
    assert "allow_anonymous false\n" in conf and "listener 1883 127.0.0.1\n" in conf
    assert "password_file /etc/mosquitto/nw/passwd\n" in conf and "acl_file /etc/mosquitto/nw/acl\n" in conf
    bad = [
        (BrokerOptions("relative/dir"), "absolute"),
        (BrokerOptions("/x", port=0, tls_port=0), "both listeners"),
        (BrokerOptions("/x", port=8883, tls_port=8883), "share port"),
        (BrokerOptions("/x", port=70000), "1–65535"),
        (BrokerOptions("/x", bind="not an address"), "listen address"),
        (BrokerOptions("/x", tls_port=0, require_client_cert=True), "TLS"),
    ]
    for opts, words in bad:
        with pytest.raises(ProvisionError, match=words):
            mosquitto_conf(kit, opts)
    with pytest.raises(ProvisionError, match="DNS name"):
        server_names(["bad_name!"])
    assert server_names(["Broker.Local.", "10.0.0.2", "127.0.0.1"]).all == [
        "broker.local", "localhost", "10.0.0.2", "127.0.0.1", "::1"
    ]


def test_broker_url_credentials_file(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    creds = tmp_path / "edge.yaml"
    creds.write_text('username: "edge-pi-a"\npassword: "s3cret"\nca_file: "ca.crt"\n')
    creds.chmod(0o600)
    url = BrokerURL.parse(f"mqtts://broker.local?credentials={creds}")
    assert (url.username, url.password, url.port) == ("edge-pi-a", "s3cret", 8883)
    assert url.ca_file == str(tmp_path / "ca.crt") and url.tls_params() is not None
    assert "s3cret" not in str(url)
    plain = BrokerURL.parse(f"mqtt://127.0.0.1:1883?credentials={creds}")
    assert plain.username == "edge-pi-a" and plain.ca_file is None and plain.tls_params() is None
    for url_text, words in [
        (f"mqtt://u:p@h?credentials={creds}", "not both"),
        (f"mqtt://h?credentials={tmp_path / 'missing.yaml'}", "file not found"),
        ("mqtt://h?cafile=/x", "unknown option 'cafile'"),
        (f"mqtt://h?ca={tmp_path / 'ca.crt'}", "use mqtts"),
        ("mqtts://h?ca=/no/such.crt", "no such file"),
    ]:
        with pytest.raises(ValueError, match=words):
            BrokerURL.parse(url_text)
    creds.write_text('username: "a"\npassword: "b"\ncert_file: "c.crt"\n')
    with pytest.raises(ValueError, match="needs both"):
        BrokerURL.parse(f"mqtts://h?credentials={creds}")
    creds.write_text('username: "a"\npassword: "b"\nca_file: "gone.crt"\n')
    with pytest.raises(ValueError, match="gone.crt is not a file"):
        BrokerURL.parse(f"mqtts://h?credentials={creds}")


def test_provision_without_mosquitto_passwd_fails_clearly(kit_file: Path, tmp_path: Path) -> None:
    code, output = provision_cli(kit_file, tmp_path / "out", env={"PATH": str(tmp_path)})
    assert code == 2
    assert "mosquitto_passwd not found" in output and "apt install mosquitto" in output
    assert not (tmp_path / "out").exists(), "nothing is written when the password file cannot be hashed"


def test_rerun_keeps_secrets_and_follows_the_kit(kit_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert provision_cli(kit_file, out)[0] == 0
    first = {p.name: p.read_bytes() for p in (out / "credentials").iterdir()}
    ca_key = (out / "ca" / "ca.key").read_bytes()
    for p in (out / "credentials" / "edge-pi-a.yaml", out / "ca" / "ca.key", out / "mosquitto" / "server.key",
              out / "mosquitto" / "passwd"):
        assert p.stat().st_mode & 0o777 == 0o600, p
    # A new agent in the kit: its user is added, everyone else keeps the password already deployed.
    kit2 = tmp_path / "kit2.yaml"
    kit2.write_text(KIT.replace("agents: [{id: pi-a}, {id: pi-b}]", "agents: [{id: pi-a}, {id: pi-b}, {id: pi-c}]"))
    code, output = provision_cli(kit2, out)
    assert code == 0, output
    assert "passwords: 1 new, 4 kept" in output and "site CA (kept)" in output
    for name, data in first.items():
        if name.endswith(".yaml"):
            assert load_credentials(out / "credentials" / name).password == load_credentials_bytes(data)
    assert (out / "ca" / "ca.key").read_bytes() == ca_key
    assert "user edge-pi-c\n" in (out / "mosquitto" / "acl").read_text()
    assert "edge-pi-c:$7$" in (out / "mosquitto" / "passwd").read_text()
    # The kit loses pi-c again: its file is reported, its access is gone.
    code, output = provision_cli(kit_file, out)
    assert code == 0 and "edge-pi-c.yaml is for a user the kit no longer has" in output
    assert "edge-pi-c" not in (out / "mosquitto" / "passwd").read_text()


def load_credentials_bytes(data: bytes) -> str:
    import yaml

    return str(yaml.safe_load(data)["password"])


# ------------------------------------------------------------------ a real Mosquitto from the generated files


@dataclass(frozen=True)
class Site:
    kit_file: Path
    out: Path
    port: int
    tls_port: int
    log: Path

    def url(self, user: str, *, tls: bool = False, host: str = "127.0.0.1") -> BrokerURL:
        return BrokerURL.parse(self.url_text(user, tls=tls, host=host))

    def url_text(self, user: str, *, tls: bool = False, host: str = "127.0.0.1") -> str:
        scheme, port = ("mqtts", self.tls_port) if tls else ("mqtt", self.port)
        return f"{scheme}://{host}:{port}?credentials={self.out / 'credentials' / f'{user}.yaml'}"


@contextlib.contextmanager
def provisioned_broker(kit_file: Path, out: Path, *extra: str) -> Iterator[Site]:
    """Provision into ``out`` with free loopback ports and run Mosquitto from the generated files."""
    port, tls_port = free_port(), free_port()
    code, output = provision_cli(
        kit_file, out, "--port", str(port), "--tls-port", str(tls_port), "--tls-bind", "127.0.0.1", *extra
    )
    assert code == 0, output
    log = out / "mosquitto.log"
    with running_provisioned(out, out, log, [port, tls_port]):
        yield Site(kit_file, out, port, tls_port, log)


@pytest.fixture(scope="module")
def site(kit_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with provisioned_broker(kit_file, tmp_path_factory.mktemp("provisioned"), "--hostname", "broker.test") as s:
        yield s


def tls_connack(site: Site, creds: Path, *, with_cert: bool) -> bytes:
    """Send an MQTT CONNECT over TLS (site CA trusted) and return the broker's first bytes."""
    ctx = ssl.create_default_context(cafile=str(creds / "ca.crt"))
    if with_cert:
        ctx.load_cert_chain(creds / "edge-pi-a.crt", creds / "edge-pi-a.key")
    with socket.create_connection(("127.0.0.1", site.tls_port), timeout=3) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(bytes.fromhex("100c00044d5154540402000a0000"))  # CONNECT, MQTT 3.1.1, empty client id
        return tls.recv(4)


def posture(seq: int) -> bytes:
    return PostureReading(ts=now_ms(), seq=seq, position="supine").to_json()  # type: ignore[arg-type]


async def test_agent_publishes_only_its_own_devices(site: Site) -> None:
    own = reading_topic(SITE, "clip-a", Stream.POSTURE)
    forbidden = [
        reading_topic(SITE, "co2-b", Stream.AIR),  # another agent's device
        reading_topic(SITE, "clip-a", Stream.AIR),  # a stream its device does not have
        status_topic(SITE, "co2-b"),
        edge_topic(SITE, "pi-b"),  # impersonating the other agent
        alert_topic(SITE, "forged-1"),  # forging an alert
        ack_topic(SITE),  # acknowledging an alert
    ]
    async with site.url("gateway").client("t-gw-1") as gw, site.url("edge-pi-a").client("t-pi-a-1") as agent:
        kinds = (TopicKind.READING, TopicKind.STATUS, TopicKind.EDGE, TopicKind.ALERT, TopicKind.COMMAND_ACK)
        await gw.subscribe([(subscription(SITE, k), 1) for k in kinds])
        for i, topic in enumerate(forbidden):
            # Mosquitto acknowledges a denied QoS 1 publish (MQTT 3.1.1 has no way to say no) and drops it.
            await agent.publish(topic, posture(i), qos=1, retain=topic.endswith(("co2-b", "pi-b")))
        await agent.publish(own, posture(99), qos=1)
        got = await collect_until(gw, own)
    # One connection's messages are forwarded in order: anything let through would have come first.
    assert [t for t, _ in got] == [own]

    # Nor was anything retained on the other agent's status topics.
    async with site.url("gateway").client("t-gw-2") as gw, site.url("edge-pi-a").client("t-pi-a-2") as agent:
        await gw.subscribe([(subscription(SITE, TopicKind.STATUS), 1), (subscription(SITE, TopicKind.EDGE), 1)])
        mine = status_topic(SITE, "mat-a")
        await agent.publish(mine, DeviceStatus(ts=now_ms(), online=True).to_json(), qos=1, retain=True)
        got = await collect_until(gw, mine)
    assert [t for t, _ in got] == [mine]


async def test_agent_may_not_read_and_dashboard_may_not_publish_readings(site: Site) -> None:
    # Mosquitto 2.0 grants a wildcard subscription and checks each message at delivery: the agent's
    # own reading reaches the gateway, the agent itself gets nothing (the broker handles both
    # deliveries of one message together, so the gateway's copy is the sync point).
    mine = reading_topic(SITE, "clip-a", Stream.POSTURE)
    async with site.url("edge-pi-a").client("t-pi-a-3") as agent, site.url("gateway").client("t-gw-4") as gw:
        await agent.subscribe(subscription(SITE, TopicKind.READING), qos=1)
        await gw.subscribe(subscription(SITE, TopicKind.READING), qos=1)
        await agent.publish(mine, posture(1), qos=1)
        assert [t for t, _ in await collect_until(gw, mine)] == [mine]
        with pytest.raises(TimeoutError):
            await collect_until(agent, mine, timeout_s=0.3)
    own = ack_topic(SITE)
    async with site.url("gateway").client("t-gw-3") as gw, site.url("dashboard").client("t-dash-3") as dash:
        await gw.subscribe([(subscription(SITE, TopicKind.READING), 1), (own, 1)])
        await dash.publish(reading_topic(SITE, "clip-a", Stream.POSTURE), posture(1), qos=1)
        await dash.publish(own, AckCommand(alert_id="a-1", by="staff").to_json(), qos=1)
        got = await collect_until(gw, own)
    assert [t for t, _ in got] == [own]


async def test_anonymous_and_wrong_password_are_refused(site: Site) -> None:
    for url in (
        BrokerURL("127.0.0.1", site.port),
        BrokerURL("127.0.0.1", site.port, username="edge-pi-a", password="wrong"),
        BrokerURL("127.0.0.1", site.port, username="nobody", password="x"),
    ):
        with pytest.raises(aiomqtt.MqttCodeError) as refused:
            async with url.client("t-refused"):
                pass
        assert "authori" in str(refused.value).lower(), refused.value


async def test_tls_with_the_site_ca(site: Site) -> None:
    own = reading_topic(SITE, "mat-a", Stream.BREATHING)
    # The edge from the network side (IP in the certificate), the gateway by name (localhost).
    async with site.url("gateway", tls=True, host="localhost").client("t-gw-tls") as gw, \
            site.url("edge-pi-a", tls=True).client("t-pi-a-tls") as agent:
        await gw.subscribe(subscription(SITE, TopicKind.READING), qos=1)
        await agent.publish(reading_topic(SITE, "co2-b", Stream.AIR), b"{}", qos=1)
        await agent.publish(own, b'{"ts": 1, "seq": 1}', qos=1)
        got = await collect_until(gw, own)
    assert [t for t, _ in got] == [own]
    # Without the site CA the broker's certificate is not trusted: no connection, even with a password.
    creds = load_credentials(site.out / "credentials" / "edge-pi-a.yaml")
    untrusted = BrokerURL("127.0.0.1", site.tls_port, creds.username, creds.password, tls=True)
    with pytest.raises(aiomqtt.MqttError, match="(?i)certificate"):
        async with untrusted.client("t-untrusted"):
            pass
    # The agent's doctor checks the broker through the same URL (docs/deploy.md quotes both lines).
    check = await check_broker(site.url("edge-pi-a", tls=True), "t-doctor", 3.0)
    assert check.ok and check.detail == "connected; credentials of 'edge-pi-a' accepted", check
    check = await check_broker(untrusted, "t-doctor-untrusted", 3.0)
    assert not check.ok and check.detail.startswith("TCP connects but MQTT does not answer"), check
    assert "certificate" in check.detail


async def test_client_certificates(kit_file: Path, tmp_path: Path) -> None:
    with provisioned_broker(kit_file, tmp_path, "--client-certs") as site:
        assert "require_certificate true" in (tmp_path / "mosquitto" / "nurserywatch.conf").read_text()
        creds = load_credentials(tmp_path / "credentials" / "edge-pi-a.yaml")
        assert creds.cert_file == str(tmp_path / "credentials" / "edge-pi-a.crt")
        async with site.url("edge-pi-a", tls=True).client("t-cert-ok"):
            pass
        # No client certificate: with TLS 1.3 the client finishes its handshake before the broker
        # checks the certificate, so paho would only time out; raw sockets show the difference.
        assert tls_connack(site, tmp_path / "credentials", with_cert=True)[0] == 0x20  # a CONNACK
        with pytest.raises(ssl.SSLError):
            tls_connack(site, tmp_path / "credentials", with_cert=False)
        # The plain loopback listener (gateway, dashboard) still works with the password alone.
        async with site.url("gateway").client("t-cert-plain"):
            pass


async def test_edge_and_gateway_processes_connect_with_credentials(site: Site, tmp_path: Path) -> None:
    """The real edge and gateway, given only `--broker mqtts://…?credentials=FILE`: the edge announces
    itself (and its last will reaches the dashboard when it is killed), the gateway turns an agent's
    low battery into an alert the dashboard sees, and takes the dashboard's acknowledgement — signed
    with the provisioned command key, which the gateway found through its credentials file — but not
    a forged one in the director's name sent with the dashboard's own broker password."""
    (site.kit_file.parent / "ttys").mkdir(exist_ok=True)
    common = ["--config", str(site.kit_file), "--log-level", "info"]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    edge_state = edge_topic(SITE, "pi-a")
    metrics_port = free_port()
    try:
        async with site.url("dashboard").client("t-dash-proc") as dash:
            await dash.subscribe([(edge_state, 1), (subscription(SITE, TopicKind.ALERT), 1)])
            procs["gateway"], logs["gateway"] = spawn(
                "gateway", ["gateway", *common, "--broker", site.url_text("gateway", tls=True),
                            "--db", str(tmp_path / "gw.sqlite3"), "--metrics-port", str(metrics_port)], tmp_path)
            procs["edge"], logs["edge"] = spawn(
                "edge", ["edge", *common, "--agent", "pi-a", "--broker", site.url_text("edge-pi-a", tls=True)],
                tmp_path)
            status = await first(dash, lambda t, p: t == edge_state and EdgeStatus.from_json(p).online, 20)
            assert EdgeStatus.from_json(status).devices == ["clip-a", "mat-a"]

            alert = await low_battery_alert(site, dash, procs["gateway"])
            forged = AckCommand(alert_id=alert.id, by="院長 (forged)")
            await dash.publish(ack_topic(SITE), forged.to_json(), qos=1)  # unsigned
            await publish_command(dash, ack_topic(SITE), forged, key=CommandSigner.generate())  # another key
            key = CommandSigner(load_private_key(site.out / "credentials" / "command-key.pem"))
            await publish_command(dash, ack_topic(SITE), AckCommand(alert_id=alert.id, by="staff-1"), key=key)
            # One connection's messages are handled in order: a forgery taken would have come back first.
            acked = await first(dash, lambda t, p: t == alert_topic(SITE, alert.id) and Alert.from_json(p).acknowledged)
            assert Alert.from_json(acked).acknowledged_by == "staff-1"
            rejected = gateway_rejections(metrics_port)
            assert (rejected["unsigned"], rejected["bad_signature"]) == (1, 1), rejected

            os.killpg(procs["edge"].pid, signal.SIGKILL)
            will = await first(dash, lambda t, p: t == edge_state and not EdgeStatus.from_json(p).online)
            assert EdgeStatus.from_json(will).online is False
    except BaseException:
        print_logs(logs)
        raise
    finally:
        for proc in procs.values():
            stop(proc)


def gateway_rejections(port: int) -> dict[str, float]:
    """The gateway's rejected-message counters by reason, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return defaultdict(float, {
        s.labels["reason"]: s.value for f in text_string_to_metric_families(text)
        if f.name == "nurserywatch_gateway_rejected" for s in f.samples if s.name.endswith("_total")
    })  # fmt: skip


async def low_battery_alert(site: Site, dash: aiomqtt.Client, gateway: subprocess.Popen[bytes]) -> Alert:
    """Report a flat battery for the other agent's CO2 sensor (retained, so the gateway gets it whenever
    it has subscribed) until the gateway's alert arrives. As the other agent: client ids are the user
    names, so a second connection as edge-pi-a would take the running edge's place."""
    async with site.url("edge-pi-b", tls=True).client("t-pi-b-battery") as agent:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert gateway.poll() is None, "the gateway exited"
            status = DeviceStatus(ts=now_ms(), online=True, battery_pct=5)
            await agent.publish(status_topic(SITE, "co2-b"), status.to_json(), qos=1, retain=True)
            try:
                # Other alerts may come first (the edge reports its unopened ports' devices offline).
                payload = await first(dash, lambda t, p: parse_topic(t).kind is TopicKind.ALERT
                                      and Alert.from_json(p).rule == "battery_low", 1.0)
            except TimeoutError:
                continue
            alert = Alert.from_json(payload)
            assert alert.device == "co2-b" and alert.value == 5
            return alert
    raise AssertionError("the gateway raised no battery alert within 20 s")


async def first(client: aiomqtt.Client, match: object, timeout_s: float = 10.0) -> bytes:
    assert callable(match)
    async with asyncio.timeout(timeout_s):
        async for message in client.messages:
            payload = bytes(message.payload)
            if match(message.topic.value, payload):
                return payload
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ client ids tied to users, message size


def clean_client(site: Site, user: str, identifier: str) -> aiomqtt.Client:
    """A client of ``user`` (plain listener) asking for ``identifier``, leaving no session behind."""
    url = site.url(user)
    return aiomqtt.Client(url.host, url.port, identifier=identifier, username=url.username, password=url.password,
                          clean_session=True)  # fmt: skip


def test_the_config_ties_client_ids_to_users_and_limits_message_size(kit_file: Path) -> None:
    conf = mosquitto_conf(load_kit(kit_file), BrokerOptions("/etc/mosquitto/nw"))
    # On each listener (a listener option: before the first one, Mosquitto would open 1883 for it).
    assert conf.count("use_username_as_clientid true\n") == 2
    assert "use_username_as_clientid" not in conf.split("\nlistener ")[0]
    # Sized from the contract: the largest payload any part takes, and a packet of it with its topic.
    assert f"message_size_limit {MAX_PAYLOAD_BYTES}\n" in conf
    assert f"max_packet_size {MAX_PAYLOAD_BYTES + 4096}\n" in conf


async def test_an_edge_login_cannot_knock_the_gateway_off(kit_file: Path, tmp_path: Path) -> None:
    """What outside testing did: an edge agent's credential, connecting with the gateway's client id,
    knocked the gateway off the broker 3 times in 5 s. Ids are now the user names: the agent gets its
    own. The gateway's persistent session is still its own, across any id it asks for."""
    with provisioned_broker(kit_file, tmp_path / "out") as site:
        gateway, log = spawn("gateway", ["gateway", "--config", str(kit_file), "--broker", site.url_text("gateway"),
                                         "--db", str(tmp_path / "gw.sqlite3")], tmp_path)  # fmt: skip
        try:
            async with clean_client(site, "dashboard", "t-watch") as dash:
                await dash.subscribe(gateway_topic(SITE), qos=1)
                await live_heartbeat(dash)
                for identifier in ("nurserywatch-gateway-sec", "gateway", "nurserywatch-gateway-sec"):
                    async with clean_client(site, "edge-pi-a", identifier):
                        pass
                # Mosquitto closes (and logs) an old connection of the same id before it answers the new
                # one: by now a takeover would be in its log.
                assert "already connected" not in site.log.read_text()
                for _ in range(2):  # and the gateway is still on: live heartbeats, no last will
                    await live_heartbeat(dash)
            assert gateway.poll() is None
            assert log.read_text().count("connected to") == 1, "the gateway reconnected: it was knocked off"
        except BaseException:
            print_logs({"gateway": log, "mosquitto": site.log})
            raise
        finally:
            stop(gateway)

        # The gateway's queue: kept for its user whatever id it asks for (so a restart gets its readings).
        topic = reading_topic(SITE, "clip-a", Stream.POSTURE)
        async with site.url("gateway").client("any-id-1") as gw:
            await gw.subscribe(topic, qos=1)
        async with site.url("edge-pi-a").client("t-pi-a-queue") as agent:
            await agent.publish(topic, posture(7), qos=1)
        async with site.url("gateway").client("any-id-2") as gw:  # no subscribe: the session has it
            assert [t for t, _ in await collect_until(gw, topic)] == [topic]


async def live_heartbeat(client: aiomqtt.Client, timeout_s: float = 20.0) -> GatewayStatus:
    """The gateway's next heartbeat sent now (not a retained one); fails on its last will."""
    async with asyncio.timeout(timeout_s):
        async for message in client.messages:
            status = GatewayStatus.from_json(bytes(message.payload))
            assert status.online, "the gateway's last will: it lost its connection"
            if not message.retain:
                return status
    raise AssertionError("unreachable")


async def test_a_20_mb_publish_never_reaches_the_gateway(kit_file: Path, tmp_path: Path) -> None:
    """What outside testing did: a 20 MB publish reached the gateway and the dashboard."""
    topic = reading_topic(SITE, "clip-a", Stream.POSTURE)
    at_limit = b'{"ts": 1, "seq": 1, "position": "supine", "pad": "' + b"x" * MAX_PAYLOAD_BYTES
    at_limit = at_limit[: MAX_PAYLOAD_BYTES - 2] + b'"}'
    assert len(at_limit) == MAX_PAYLOAD_BYTES
    with provisioned_broker(kit_file, tmp_path / "out") as site:
        async with clean_client(site, "gateway", "t-gw") as gw, clean_client(site, "dashboard", "t-dash") as dash:
            for reader in (gw, dash):
                await reader.subscribe(topic, qos=1)
            async with clean_client(site, "edge-pi-a", "t-big") as agent:
                # One byte over the contract's limit: dropped, but acknowledged (no resending it forever).
                await agent.publish(topic, at_limit + b" ", qos=1, timeout=10)
                await agent.publish(topic, at_limit, qos=1, timeout=10)  # the largest the contract takes
                with pytest.raises((aiomqtt.MqttError, TimeoutError)):
                    # 20 MB: the broker ends the connection at the packet's header.
                    await agent.publish(topic, b"x" * (20 * 2**20), qos=1, timeout=10)
            after = posture(2)
            async with clean_client(site, "edge-pi-a", "t-after") as agent:
                await agent.publish(topic, after, qos=1)
            for reader in (gw, dash):
                got = await collect_until(reader, topic, timeout_s=10)  # the one at the limit
                assert [len(p) for _, p in got] == [MAX_PAYLOAD_BYTES]
                got = await collect_until(reader, topic, timeout_s=10)  # then the one sent after
                assert got == [(topic, after)]
