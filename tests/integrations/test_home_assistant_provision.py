"""The Home Assistant bridge's own broker user from `nurserywatch kit provision` (docs/integrations.md,
"Deploying the bridge"): the ACL gives it exactly what the bridge subscribes to and publishes; on a
REAL Mosquitto started from the provisioned files, the real bridge with that user's credentials file
publishes its configs, room summaries and status, while that user's publishes of a reading, an alert, a
device status, the gateway's heartbeat, a command, another site's config and a room outside the kit are
dropped, and it reads no reading. A NATS kit gets the same as NATS permissions and the part's env file,
and three real nats-server nodes started from its files enforce them on the real bridge."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from paho.mqtt.client import topic_matches_sub
from typer.testing import CliRunner

from gateway.integrations.home_assistant import BRIDGE_NAME, discovery_configs
from gateway.integrations.home_assistant_bridge import BridgeStats, HomeAssistantBridge, run_home_assistant_bridge
from nurserywatch import __version__
from nurserywatch.cli.main import app
from nurserywatch.cli.provision import (
    HOME_ASSISTANT_BRIDGE_USER,
    Access,
    Role,
    acl_rules,
    mqtt_users,
)
from nurserywatch.cli.provision_nats import broker_urls, permissions
from nurserywatch.clock import ManualClock
from nurserywatch.contract import (
    Alert,
    AlertState,
    GatewayStatus,
    Severity,
    Stream,
    TopicKind,
    ack_topic,
    alert_topic,
    bridge_topic,
    edge_topic,
    gateway_topic,
    reading_topic,
    room_alerts_topic,
    status_topic,
    subscription,
)
from nurserywatch.kit import Kit, load_kit
from nurserywatch.mqtt import BrokerURL, load_credentials
from nurserywatch.nats_local import warm_mqtt
from nurserywatch.ports import free_port
from tests.support.mosquitto import running_provisioned
from tests.support.mqtt_messages import Received, collect_until
from tests.support.nats_files import NodeFile, started_nodes
from tests.support.processes import print_logs, spawn, stop
from tests.support.tasks import running
from tests.support.waiting import wait_until

SITE = "hasec"
PREFIX = "homeassistant"
T = 1_767_225_600_000
KIT = f"""\
site: {SITE}
name: Home Assistant access test
rooms: [{{id: hiyoko, name: ひよこ組}}, {{id: risu, name: りす組}}]
agents: [{{id: pi-1}}]
devices:
  - {{id: clip-01, kind: posture_clip, room: hiyoko, agent: pi-1, child: c1,
     transport: {{type: serial, port: ttys/clip}}}}
  - {{id: co2-01, kind: mhz19b, room: risu, agent: pi-1, transport: {{type: serial, port: ttys/co2}}}}
children: [{{id: c1, age_band: "0", room: hiyoko}}]
home_assistant:
  enabled: true
"""
#: A user the tests add to the provisioned broker (not provisioned): it stands in for Home Assistant
#: and watches everything, so that what reaches the broker from the bridge's user can be seen.
OBSERVER, OBSERVER_PW = "observer", "observer-pw"


def write_kit(d: Path, text: str = KIT) -> Path:
    (d / "kit.yaml").write_text(text)
    return d / "kit.yaml"


def provision(kit_file: Path, out: Path, *extra: str) -> str:
    result = CliRunner().invoke(app, ["kit", "provision", "--config", str(kit_file), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def section(acl: str, user: str) -> list[str]:
    """The ``topic`` lines of ``user`` in a Mosquitto ACL file."""
    return acl.split(f"\nuser {user}\n")[1].split("\n\n")[0].strip().splitlines()


# ------------------------------------------------------------------ what provision writes


def test_provision_writes_the_bridge_user_its_acl_and_credentials(tmp_path: Path) -> None:
    out = tmp_path / "out"
    output = provision(write_kit(tmp_path), out)
    assert HOME_ASSISTANT_BRIDGE_USER in output  # listed among the users
    acl = (out / "mosquitto" / "acl").read_text()
    root = f"nurserywatch/v1/{SITE}"
    assert section(acl, HOME_ASSISTANT_BRIDGE_USER) == [
        f"topic read {PREFIX}/status",
        f"topic read {root}/alert/+",
        f"topic readwrite {PREFIX}/+/nurserywatch_{SITE}/+/config",
        f"topic readwrite {root}/bridge/home_assistant",
        f"topic write {root}/room_alerts/hiyoko",
        f"topic write {root}/room_alerts/risu",
    ]
    # Nobody else gets the bridge's topics; the bridge's user is the last section (nothing after it).
    others = acl.split(f"\nuser {HOME_ASSISTANT_BRIDGE_USER}\n")[0]
    assert "room_alerts" not in others and "/bridge/" not in others and PREFIX not in others
    assert f"\n{HOME_ASSISTANT_BRIDGE_USER}:$7$" in "\n" + (out / "mosquitto" / "passwd").read_text()
    creds_file = out / "credentials" / f"{HOME_ASSISTANT_BRIDGE_USER}.yaml"
    assert creds_file.stat().st_mode & 0o777 == 0o600
    creds = load_credentials(creds_file)
    assert creds.username == HOME_ASSISTANT_BRIDGE_USER and len(creds.password) >= 40
    assert "command_key" not in creds_file.read_text()  # it signs and checks no staff command

    # A kit without Home Assistant: no such user, no file, no ACL section.
    off = tmp_path / "off"
    off.mkdir()
    out_off = tmp_path / "out-off"
    provision(write_kit(off, KIT.replace("enabled: true", "enabled: false")), out_off)
    assert HOME_ASSISTANT_BRIDGE_USER not in (out_off / "mosquitto" / "acl").read_text()
    assert not (out_off / "credentials" / f"{HOME_ASSISTANT_BRIDGE_USER}.yaml").exists()


def test_the_acl_covers_exactly_what_the_bridge_subscribes_to_and_publishes(tmp_path: Path) -> None:
    kit = load_kit(write_kit(tmp_path, KIT.replace("enabled: true", "enabled: true\n  discovery_prefix: ha/disc\n"
                                                   "  birth_topic: ha/hass/status")))  # fmt: skip
    user = next(u for u in mqtt_users(kit) if u.role is Role.HOME_ASSISTANT_BRIDGE)
    assert mqtt_users(kit)[-1] == user, "last: enabling it moves no other part's place"
    rules = acl_rules(kit, user)
    readable = [r.topic for r in rules if r.access in (Access.READ, Access.READWRITE)]
    writable = [r.topic for r in rules if r.access in (Access.WRITE, Access.READWRITE)]

    def may(topics: list[str], topic: str) -> bool:
        return any(topic_matches_sub(acl, topic) for acl in topics)

    bridge = HomeAssistantBridge(kit, ManualClock(T), "9.9.9")
    for topic_filter in (bridge.birth_topic, bridge.alerts_filter, bridge.config_filter, bridge.own_topic):
        assert may(readable, topic_filter.replace("+", "x1")), f"the ACL hides {topic_filter}"
    published = [c.topic for c in discovery_configs(kit, "9.9.9")] + [bridge.own_topic, bridge.will().topic]
    published += [room_alerts_topic(SITE, r.id) for r in kit.rooms]
    published.append(f"ha/disc/sensor/nurserywatch_{SITE}/gone-01_co2/config")  # a stale config it removes
    for topic in published:
        assert may(writable, topic), f"the ACL refuses {topic}"
    # Least privilege: nothing of the site's own traffic, another site's configs, or the prefix at large.
    posture = reading_topic(SITE, "clip-01", Stream.POSTURE)
    for topic in (posture, status_topic(SITE, "clip-01"), edge_topic(SITE, "pi-1"), alert_topic(SITE, "a1"),
                  gateway_topic(SITE), ack_topic(SITE), room_alerts_topic(SITE, "kuma"), bridge_topic(SITE, "other"),
                  "ha/disc/sensor/nurserywatch_elsewhere/co2_co2/config", "ha/disc/sensor/x/config",
                  "ha/hass/status"):  # fmt: skip
        assert not may(writable, topic), f"the bridge may publish {topic}"
    for topic in (posture, status_topic(SITE, "clip-01"), ack_topic(SITE), room_alerts_topic(SITE, "hiyoko"),
                  subscription(SITE, TopicKind.ESCALATION).replace("+", "a1")):  # fmt: skip
        assert not may(readable, topic), f"the bridge may read {topic}"


def test_a_nats_kit_gets_the_same_as_permissions_and_an_env_file(tmp_path: Path) -> None:
    ports = [(free_port(), free_port(), free_port(), free_port()) for _ in range(3)]
    nodes = "\n".join(f"    - {{name: n{i + 1}, host: 127.0.0.1, bind: 127.0.0.1, client_port: {c}, "
                      f"cluster_port: {r}, mqtt_port: {m}, monitor_port: {h}}}"
                      for i, (c, r, m, h) in enumerate(ports))  # fmt: skip
    kit_file = write_kit(tmp_path, KIT + f"nats:\n  nodes:\n{nodes}\n")
    kit = load_kit(kit_file)
    off = Kit.model_validate({**kit.model_dump(), "home_assistant": {"enabled": False}})
    for user in mqtt_users(off):  # the other parts' node order does not change
        assert broker_urls(kit, user) == broker_urls(off, user)
    out = tmp_path / "out"
    provision(kit_file, out)
    conf = (out / "nats" / "n1" / "nats.conf").read_text()
    block = conf.split(f'user: "{HOME_ASSISTANT_BRIDGE_USER}"')[1].split("}\n")[0] + "}"
    root = f"nurserywatch.v1.{SITE}"
    publish = [f"{PREFIX}.*.nurserywatch_{SITE}.*.config", f"{root}.bridge.home_assistant",
               f"{root}.room_alerts.hiyoko", f"{root}.room_alerts.risu"]  # fmt: skip
    subscribe = [f"{PREFIX}.status", f"{root}.alert.*", f"{PREFIX}.*.nurserywatch_{SITE}.*.config",
                 f"{root}.bridge.home_assistant"]  # fmt: skip
    user = next(u for u in mqtt_users(kit) if u.role is Role.HOME_ASSISTANT_BRIDGE)
    assert permissions(kit, user) == (publish, subscribe)
    assert 'allowed_connection_types: ["MQTT"]' in block, "MQTT only, no NATS client"
    assert f"publish: {{ allow: {json.dumps(publish)} }}, subscribe: {{ allow: {json.dumps(subscribe)} }}" in block
    env = (out / "credentials" / f"{HOME_ASSISTANT_BRIDGE_USER}.env").read_text()
    assert env.count("mqtts://") == 3 and f"credentials=/etc/nurserywatch/mqtt/{HOME_ASSISTANT_BRIDGE_USER}.yaml" in env
    assert "NURSERYWATCH_TRANSPORT" not in env


# ------------------------------------------------------------------ a real Mosquitto from the provisioned files


@dataclass(frozen=True)
class Broker:
    out: Path
    port: int

    def as_user(self, user: str) -> BrokerURL:
        return BrokerURL.parse(f"mqtt://127.0.0.1:{self.port}?credentials={self.out / 'credentials' / f'{user}.yaml'}")

    @property
    def observer(self) -> BrokerURL:
        return BrokerURL("127.0.0.1", self.port, OBSERVER, OBSERVER_PW)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    d = tmp_path_factory.mktemp("ha-provisioned")
    out = d / "out"
    port = free_port()
    provision(write_kit(d), out, "--port", str(port), "--tls-port", "0")
    # The observer, added by hand as an operator would: its own password line and ACL section.
    subprocess.run(["mosquitto_passwd", "-b", str(out / "mosquitto" / "passwd"), OBSERVER, OBSERVER_PW], check=True)
    with (out / "mosquitto" / "acl").open("a") as acl:
        acl.write(f"\nuser {OBSERVER}\ntopic readwrite #\n")
    with running_provisioned(out, d, d / "mosquitto.log", [port]):
        yield Broker(out, port)


def alert(aid: str) -> bytes:
    return Alert(id=aid, rule="prone", severity=Severity.CRITICAL, state=AlertState.ACTIVE, acknowledged=False,
                 device="clip-01", room=None, started_ts=T, updated_ts=T, message="m",
                 message_en="m").to_json()  # fmt: skip


async def retained_as_observer(broker: Broker, topic_filter: str) -> dict[str, bytes]:
    sentinel = "test/sentinel/retained"
    got: dict[str, bytes] = {}
    async with broker.observer.client("t-ha-retained", clean_session=True) as c:
        await c.subscribe([(topic_filter, 1), (sentinel, 1)])
        await c.publish(sentinel, b"x", qos=1)
        for topic, payload in await collect_until(c, sentinel):
            if topic != sentinel and payload:
                got[topic] = payload
    return got


async def test_the_bridge_user_publishes_only_its_own_topics(broker: Broker) -> None:
    bridge_user = broker.as_user(HOME_ASSISTANT_BRIDGE_USER)
    forbidden = [
        reading_topic(SITE, "clip-01", Stream.POSTURE),  # a reading
        alert_topic(SITE, "forged-1"),  # an alert (only the gateway writes them)
        status_topic(SITE, "clip-01"),
        edge_topic(SITE, "pi-1"),
        gateway_topic(SITE),
        ack_topic(SITE),  # a staff command
        room_alerts_topic(SITE, "kuma"),  # a room not in the kit
        bridge_topic(SITE, "other"),
        f"{PREFIX}/sensor/nurserywatch_elsewhere/co2-09_co2/config",  # another site's config
        f"{PREFIX}/status",  # Home Assistant's own birth topic
    ]
    allowed = [
        f"{PREFIX}/sensor/nurserywatch_{SITE}/co2-01_co2/config",
        room_alerts_topic(SITE, "hiyoko"),
        bridge_topic(SITE, BRIDGE_NAME),
    ]
    payload = GatewayStatus(ts=T, online=True).to_json()
    async with broker.observer.client("t-ha-obs-1", clean_session=True) as obs, \
            bridge_user.client("ignored-the-user-is-the-id", clean_session=True) as bridge:
        await obs.subscribe([("#", 1)])
        await obs.publish("test/sentinel/start", b"x", qos=1)
        await collect_until(obs, "test/sentinel/start")  # whatever was retained before has arrived
        for topic in forbidden:
            # Mosquitto acknowledges a denied QoS 1 publish (MQTT 3.1.1 cannot say no) and drops it.
            await bridge.publish(topic, payload, qos=1, retain=True)
        for topic in allowed:
            await bridge.publish(topic, payload, qos=1, retain=True)
        got = await collect_until(obs, allowed[-1])
    # One connection's messages are forwarded in order: a forbidden one let through would have come first.
    assert [t for t, _ in got] == allowed
    kept = await retained_as_observer(broker, "#")
    assert not set(forbidden) & set(kept), "nothing denied was retained"
    assert set(allowed) <= set(kept)
    async with broker.observer.client("t-ha-obs-clean", clean_session=True) as obs:
        for topic in allowed:
            await obs.publish(topic, b"", qos=1, retain=True)


async def test_the_bridge_user_reads_alerts_but_no_reading(broker: Broker) -> None:
    own = reading_topic(SITE, "co2-01", Stream.AIR)
    async with broker.as_user(HOME_ASSISTANT_BRIDGE_USER).client("x", clean_session=True) as bridge, \
            broker.as_user("edge-pi-1").client("x", clean_session=True) as edge, \
            broker.as_user("gateway").client("x", clean_session=True) as gw:
        await bridge.subscribe([(subscription(SITE, TopicKind.READING), 1), (subscription(SITE, TopicKind.STATUS), 1),
                                (subscription(SITE, TopicKind.ALERT), 1)])  # fmt: skip
        await gw.subscribe(subscription(SITE, TopicKind.READING), qos=1)
        await edge.publish(status_topic(SITE, "co2-01"), b'{"ts": 1, "online": true}', qos=1)
        await edge.publish(own, b'{"ts": 1, "seq": 1}', qos=1)
        assert [t for t, _ in await collect_until(gw, own)] == [own]  # the broker has handled both
        await gw.publish(alert_topic(SITE, "a1"), alert("a1"), qos=1)
        got = await collect_until(bridge, alert_topic(SITE, "a1"))
    assert [t for t, _ in got] == [alert_topic(SITE, "a1")], "the reading and the status never reach the bridge"


async def test_the_real_bridge_works_with_its_provisioned_user(broker: Broker) -> None:
    """The bridge itself under its user: a stale config (retained before) removed, every config, both
    rooms' summaries from the gateway's retained alert, its status; Home Assistant's birth answered."""
    kit = load_kit(broker.out.parent / "kit.yaml")
    configs = discovery_configs(kit, "9.9.9")
    stale = f"{PREFIX}/sensor/nurserywatch_{SITE}/gone-01_co2/config"
    hiyoko, risu = room_alerts_topic(SITE, "hiyoko"), room_alerts_topic(SITE, "risu")
    async with broker.observer.client("t-ha-obs-2", clean_session=True) as obs:
        await obs.publish(stale, b'{"name": "old"}', qos=1, retain=True)
    async with broker.as_user("gateway").client("x", clean_session=True) as gw:
        await gw.publish(alert_topic(SITE, "a2"), alert("a2"), qos=1, retain=True)
    stats = BridgeStats()
    received = Received()
    listen, on = received.listen, received.on

    try:
        async with broker.observer.client("t-ha-obs-3", clean_session=True) as obs:
            await obs.subscribe([(f"{PREFIX}/#", 1), (subscription(SITE, TopicKind.ROOM_ALERTS), 1),
                                 (subscription(SITE, TopicKind.BRIDGE), 1)])  # fmt: skip
            bridge = run_home_assistant_bridge(kit, broker.as_user(HOME_ASSISTANT_BRIDGE_USER), ManualClock(T), "9.9.9",
                                               stats=stats)  # fmt: skip
            async with running(listen(obs)), running(bridge):
                await wait_until(lambda: all(on(c.topic) for c in configs) and bool(on(risu)) and bool(on(stale)[1:]),
                                 "every config, both rooms and the stale one removed", timeout_s=10)  # fmt: skip
                assert on(stale) == [b'{"name": "old"}', b""]  # read (retained) and removed: readwrite works
                assert json.loads(on(hiyoko)[-1])["problem"] is True  # alert/+ read
                assert json.loads(on(risu)[-1])["problem"] is False
                assert json.loads(on(bridge_topic(SITE, BRIDGE_NAME))[-1])["online"] is True
                await obs.publish(kit.home_assistant.birth_topic, b"online", qos=1)
                await wait_until(lambda: stats.births == 1 and all(len(on(c.topic)) == 2 for c in configs),
                                 "the birth message answered", timeout_s=10)  # fmt: skip
                assert stats.sessions == 1 and not stats.rejected
    finally:
        async with broker.as_user("gateway").client("x", clean_session=True) as gw:
            await gw.publish(alert_topic(SITE, "a2"), b"", qos=1, retain=True)


def test_the_command_takes_the_credentials_file_from_its_environment(broker: Broker, tmp_path: Path) -> None:
    """`nurserywatch home-assistant` as its unit runs it: the broker URL with the provisioned credentials
    file only in $NURSERYWATCH_BROKER (configs/nurserywatch-home-assistant.service's home-assistant.env),
    nothing of it on the command line; its configs reach the broker under its user."""
    kit_file = broker.out.parent / "kit.yaml"
    kit = load_kit(kit_file)
    configs = discovery_configs(kit, __version__)
    creds_file = broker.out / "credentials" / f"{HOME_ASSISTANT_BRIDGE_USER}.yaml"
    url = f"mqtt://127.0.0.1:{broker.port}?credentials={creds_file}"
    proc, log = spawn("home-assistant", ["home-assistant", "--config", str(kit_file)], tmp_path,
                      env={"NURSERYWATCH_BROKER": url})  # fmt: skip
    try:
        want = {c.topic: c.to_json() for c in configs}

        async def published() -> bool:
            kept = await retained_as_observer(broker, f"{PREFIX}/#")
            return all(kept.get(t) == p for t, p in want.items())

        asyncio.run(wait_until(published, "the configs retained", timeout_s=20, every_s=0.2))
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"mqtt://" not in cmdline and b"credentials" not in cmdline
        password = load_credentials(creds_file).password
        assert password.encode() not in cmdline
        assert "connected to mqtt://home-assistant-bridge@127.0.0.1" in log.read_text()
    except BaseException:
        print_logs({"home-assistant": log})
        raise
    finally:
        stop(proc)
    assert "Traceback" not in log.read_text()
    assert "Not authorized" not in log.read_text()



# ------------------------------------------------------------------ three real NATS nodes from the provisioned files


async def test_the_bridge_user_on_a_provisioned_nats_cluster(tmp_path: Path) -> None:
    """The same on nats-server's MQTT: the permissions let the real bridge (on node 2) find and remove a
    stale config, publish every config, both rooms' summaries from the gateway's retained alert and its
    status, and answer a birth message; its user's publishes of a reading, an alert, the gateway's
    heartbeat and another site's config are dropped, and its subscription to readings is refused."""
    ports = [(free_port(), free_port(), free_port(), free_port()) for _ in range(3)]
    nodes = "\n".join(f"    - {{name: n{i + 1}, host: 127.0.0.1, bind: 127.0.0.1, client_port: {c}, "
                      f"cluster_port: {r}, mqtt_port: {m}, monitor_port: {h}}}"
                      for i, (c, r, m, h) in enumerate(ports))  # fmt: skip
    kit = load_kit(write_kit(tmp_path, KIT + f"nats:\n  nodes:\n{nodes}\n"))
    assert kit.nats is not None
    out = tmp_path / "out"
    provision(tmp_path / "kit.yaml", out)
    files = []
    for n in kit.nats.nodes:
        conf = out / "nats" / n.name / "nats.conf"
        # The observer (not provisioned, no permissions: everything), as for Mosquitto above.
        entry = f'      {{ user: "{OBSERVER}", password: "{OBSERVER_PW}", allowed_connection_types: ["MQTT"] }}\n'
        conf.write_text(conf.read_text().replace("    users: [\n", "    users: [\n" + entry, 1))
        files.append(NodeFile(conf, (n.client_port, n.mqtt_port), n.monitor_port))

    def url(user: str, node: int) -> BrokerURL:
        assert kit.nats is not None
        port = kit.nats.nodes[node].mqtt_port
        return BrokerURL.parse(f"mqtts://127.0.0.1:{port}?credentials={out / 'credentials' / f'{user}.yaml'}")

    def observer(node: int) -> BrokerURL:
        assert kit.nats is not None
        ca = str(out / "credentials" / "ca.crt")
        return BrokerURL("127.0.0.1", kit.nats.nodes[node].mqtt_port, OBSERVER, OBSERVER_PW, tls=True, ca_file=ca)

    stale = f"{PREFIX}/sensor/nurserywatch_{SITE}/gone-01_co2/config"
    configs = discovery_configs(kit, "9.9.9")
    hiyoko, risu = room_alerts_topic(SITE, "hiyoko"), room_alerts_topic(SITE, "risu")
    received = Received()
    listen, on = received.listen, received.on

    with started_nodes(files):
        await warm_mqtt([url("gateway", i) for i in range(3)], timeout_s=30)
        async with observer(0).client("t-obs-seed", clean_session=True) as obs:
            await obs.publish(stale, b'{"name": "old"}', qos=1, retain=True, timeout=10)
        async with url("gateway", 0).client("t-gw", clean_session=True) as gw:
            await gw.publish(alert_topic(SITE, "a1"), alert("a1"), qos=1, retain=True, timeout=10)
        stats = BridgeStats()
        async with observer(2).client("t-obs", clean_session=True) as obs:
            await obs.subscribe([(f"{PREFIX}/#", 1), ("nurserywatch/#", 1)], timeout=10)
            bridge = run_home_assistant_bridge(kit, url(HOME_ASSISTANT_BRIDGE_USER, 1), ManualClock(T), "9.9.9",
                                               stats=stats)  # fmt: skip
            async with running(listen(obs)):
                async with running(bridge):
                    await wait_until(lambda: all(on(c.topic) for c in configs) and bool(on(risu))
                                     and bool(on(stale)[1:]), "every config, both rooms, the stale one removed",
                                     timeout_s=30)  # fmt: skip
                    assert on(stale)[-1] == b""
                    assert json.loads(on(hiyoko)[-1])["problem"] is True
                    assert json.loads(on(risu)[-1])["problem"] is False
                    assert json.loads(on(bridge_topic(SITE, BRIDGE_NAME))[-1])["online"] is True
                    await obs.publish(kit.home_assistant.birth_topic, b"online", qos=1, timeout=10)
                    await wait_until(lambda: stats.births == 1 and all(len(on(c.topic)) == 2 for c in configs),
                                     "the birth message answered", timeout_s=30)  # fmt: skip
                    assert stats.sessions == 1 and not stats.rejected
                # The bridge stopped; its user directly, on node 1.
                forbidden = [reading_topic(SITE, "clip-01", Stream.POSTURE), alert_topic(SITE, "forged-1"),
                             gateway_topic(SITE),
                             f"{PREFIX}/sensor/nurserywatch_elsewhere/co2-09_co2/config"]  # fmt: skip
                async with url(HOME_ASSISTANT_BRIDGE_USER, 0).client("t-bridge", clean_session=True) as b:
                    refused = await b.subscribe(subscription(SITE, TopicKind.READING), qos=1, timeout=10)
                    assert [c if isinstance(c, int) else c.value for c in refused] == [0x80]
                    for topic in forbidden:
                        # Acknowledged (MQTT 3.1.1 cannot say no) and dropped, as on Mosquitto.
                        await b.publish(topic, b"{}", qos=1, timeout=10)
                    await b.publish(hiyoko, b'{"last": true}', qos=1, timeout=10)
                    await wait_until(lambda: b'{"last": true}' in on(hiyoko), "the allowed publish", timeout_s=10)
        assert not {t for t, _ in received.got} & set(forbidden)
