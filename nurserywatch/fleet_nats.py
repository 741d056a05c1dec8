"""nats-server configuration of the fleet tier's transport (docs/fleet.md, "Transport"): the central
("hub") cluster's nodes, and what a site's nodes add to reach it as a leaf node. Pure: names and
passwords in, config text out (the tests, the benchmark and provisioning write it).

Who may do what at the centre is one user per site in the FLEET account. nats-server 2.15 applies a
leaf node user's permissions as for a client of the hub: ``publish`` is what the site may send into the
centre, ``subscribe`` the interest it may register, i.e. what the centre sends it. The hub also hands
them to the site at connect time, and the site's server applies them inverted (its exports and
imports): a stock site server drops a forged message before it leaves; a server that sends one anyway
is cut off by the hub (``Publish Violation``, connection closed). Over MQTT a denied QoS 1 message is
acknowledged, dropped and logged (``Publish Violation - Subject``), the connection stays.

What sourcing over the leaf needs (found with the server's trace, tests/fleet/test_fleet_transport.py):
the centre sends the site ``$JS.{domain}.API.CONSUMER.CREATE.{stream}`` (and ``DELETE``) requests and
``$JS.FC.…`` flow-control replies; the site answers on ``$JSC.R.…`` and delivers the messages on the
source's deliver prefix (``SiteOutLayout.deliver_prefix``, one per site, so a site cannot write into
another site's source). ``allow_responses`` does not cover the leaf's replies, hence ``$JSC.R.>``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from nurserywatch.contract import check_ident
from nurserywatch.fleet_layout import HUB_DOMAIN, SiteOutLayout

#: The central account of the fleet's data (JetStream enabled: the partition streams, the workers'
#: consumers and key-value buckets, the MQTT sessions of bridged sites).
FLEET_ACCOUNT = "FLEET"
#: nats-server's system account (cluster and leaf node events).
SYSTEM_ACCOUNT = "SYS"
SYSTEM_USER = "sys"
#: The fleet workers' (and the board's) user at the centre: all of the FLEET account.
WORKER_USER = "fleet"


def site_user(site: str) -> str:
    """A site's user name at the centre."""
    return f"site-{check_ident(site, 'site')}"


@dataclass(frozen=True, slots=True)
class FleetSite:
    """A site as the centre knows it: its name, its password at the centre, and how it connects
    (``bridged``: its Mosquitto bridges to the MQTT listener; else its NATS is a leaf node)."""

    site: str
    password: str
    bridged: bool = False

    def __post_init__(self) -> None:
        check_ident(self.site, "site")
        if not self.password:
            raise ValueError(f"site {self.site!r}: empty password")


def site_permissions(site: str, bridged: bool) -> tuple[list[str], list[str]]:
    """(publish, subscribe) of a site's user at the centre: its own prefix, and for a leaf node site
    what JetStream sourcing of its out stream needs, no more."""
    out = SiteOutLayout(site)
    publish = [out.prefix_subject]
    subscribe: list[str] = []
    if not bridged:
        api = f"{out.api_prefix}.CONSUMER"
        publish += [f"{out.deliver_prefix}.>", "$JSC.R.>"]
        subscribe += [
            f"{api}.CREATE.{out.stream}",
            f"{api}.CREATE.{out.stream}.>",
            f"{api}.DELETE.{out.stream}.>",
            # Read only: the fleet workers ask whether the site answers (fleet/streams.py, restart_stalled).
            f"{out.api_prefix}.STREAM.INFO.{out.stream}",
            f"$JS.FC.{out.stream}.>",
            f"$JS.FC.{out.domain}.>",
        ]
    return publish, subscribe


def _allowed(subjects: list[str]) -> str:
    # An empty allow list would mean no limit at all: deny everything instead.
    return f"allow: {json.dumps(subjects)}" if subjects else 'deny: [">"]'


def hub_accounts(sites: Sequence[FleetSite], worker_password: str, system_password: str) -> str:
    """The ``accounts`` block (and ``system_account``) of every central node."""
    seen: set[str] = set()
    out = [
        "# One account for the fleet's data; each site its own user, publishing under its own prefix only",
        "# (nurserywatch/fleet_nats.py). A leaf node site connects as a leaf node, a bridged one over MQTT.",
        "accounts {",
        f"  {FLEET_ACCOUNT}: {{",
        "    jetstream: enabled",
        "    users: [",
        f"      {{ user: {json.dumps(WORKER_USER)}, password: {json.dumps(worker_password)} }}",
    ]
    for s in sites:
        if s.site in seen:
            raise ValueError(f"site {s.site!r} is listed twice")
        seen.add(s.site)
        publish, subscribe = site_permissions(s.site, s.bridged)
        kinds = ["MQTT"] if s.bridged else ["LEAFNODE"]
        out += [
            f"      {{ user: {json.dumps(site_user(s.site))}, password: {json.dumps(s.password)},",
            f"        allowed_connection_types: {json.dumps(kinds)},",
            f"        permissions: {{ publish: {{ {_allowed(publish)} }}, subscribe: {{ {_allowed(subscribe)} }} }} }}",
        ]
    out += [
        "    ]",
        "  }",
        f"  {SYSTEM_ACCOUNT}: {{",
        f"    users: [ {{ user: {json.dumps(SYSTEM_USER)}, password: {json.dumps(system_password)} }} ]",
        "  }",
        "}",
        f"system_account: {SYSTEM_ACCOUNT}",
    ]
    return "\n".join(out) + "\n"


@dataclass(frozen=True, slots=True)
class HubNode:
    """One central node: its name, the host the others and the sites reach it at, its ports."""

    name: str
    host: str
    client_port: int = 4222
    cluster_port: int = 6222
    leaf_port: int = 7422
    mqtt_port: int = 8883
    monitor_port: int = 8222

    @property
    def leaf_url(self) -> str:
        return f"nats-leaf://{self.host}:{self.leaf_port}"


@dataclass(frozen=True, slots=True)
class HubTLS:
    """TLS files of a central node (absolute paths on its machine): leaf nodes, MQTT and routes."""

    cert_file: str
    key_file: str
    ca_file: str

    def block(self, verify: bool = False) -> str:
        pairs = (("cert_file", self.cert_file), ("key_file", self.key_file), ("ca_file", self.ca_file))
        files = ", ".join(f"{k}: {json.dumps(v)}" for k, v in pairs)
        return f"tls {{ {files}, timeout: 2, verify: {str(verify).lower()} }}"


def hub_node_config(
    node: HubNode,
    nodes: Sequence[HubNode],
    store_dir: str,
    accounts: str,
    *,
    cluster_name: str = "nurserywatch-fleet",
    tls: HubTLS | None = None,
    bind: str = "0.0.0.0",
) -> str:
    """A central node's whole nats-server config: JetStream in domain ``hub``, routes to the other
    nodes, a leaf node listener for the sites' NATS, an MQTT listener for the bridged sites, and
    ``accounts`` (``hub_accounts``)."""
    if node not in nodes:
        raise ValueError(f"node {node.name!r} is not one of the cluster's nodes")
    routes = [f"nats-route://{n.host}:{n.cluster_port}" for n in nodes if n.name != node.name]
    t = f", {tls.block()}" if tls else ""
    out = [
        f"# nats-server config of central node {node.name!r} of the nurserywatch fleet (docs/fleet.md).",
        f"server_name: {json.dumps(node.name)}",
        f"listen: {json.dumps(f'{bind}:{node.client_port}')}",
        f"http: {json.dumps(f'127.0.0.1:{node.monitor_port}')}",
        "# The centre's JetStream domain; each site's cluster has its own (site-{site}), so the centre's",
        "# streams reach a site's stream as an external source over the leaf node link.",
        f"jetstream {{ store_dir: {json.dumps(store_dir)}, domain: {HUB_DOMAIN} }}",
    ]
    if len(nodes) > 1:
        out += [
            "cluster {",
            f"  name: {json.dumps(cluster_name)}",
            f"  listen: {json.dumps(f'{bind}:{node.cluster_port}')}",
            *([f"  {tls.block(verify=True)}"] if tls else []),
            f"  routes: {json.dumps(routes)}",
            "}",
        ]
    out += [
        "# The sites' NATS clusters connect here as leaf nodes (their users below).",
        f"leafnodes {{ listen: {json.dumps(f'{bind}:{node.leaf_port}')}{t} }}",
        "# Sites that keep Mosquitto bridge it here (MQTT 3.1.1, QoS 1, their users below).",
        f"mqtt {{ listen: {json.dumps(f'{bind}:{node.mqtt_port}')}{t}, stream_replicas: {min(3, len(nodes))} }}",
        "",
        accounts,
    ]
    return "\n".join(out)


def site_leaf_remote(
    site: str,
    hub_leaf_urls: Sequence[str],
    password: str,
    *,
    local_account: str | None = None,
    ca_file: str | None = None,
) -> str:
    """What a site's nodes add to reach the centre: a leaf node remote to every central node's leaf
    URL with the site's credentials, binding ``local_account`` (the site's account; None: the global
    one). The site's ``jetstream`` block also needs ``domain: SiteOutLayout(site).domain``."""
    if not hub_leaf_urls:
        raise ValueError("no central leaf node URL")
    user = quote(site_user(site), safe="")
    secret = quote(password, safe="")
    urls = []
    for url in hub_leaf_urls:
        parts = urlsplit(url)
        if parts.scheme not in ("nats-leaf", "tls") or not parts.hostname or parts.username:
            raise ValueError(f"central leaf URL {url!r}: want nats-leaf://host:port (without a user)")
        urls.append(f"{parts.scheme}://{user}:{secret}@{parts.netloc}")
    fields = [f"urls: {json.dumps(urls)}"]
    if local_account:
        fields.append(f"account: {json.dumps(local_account)}")
    if ca_file:
        fields.append(f"tls: {{ ca_file: {json.dumps(ca_file)} }}")
    return "\n".join([
        "# The site's link to the fleet's centre (docs/fleet.md): a leaf node in JetStream domain",
        f"# {SiteOutLayout(site).domain!r}; the centre sources {SiteOutLayout(site).stream} over it.",
        f"leafnodes {{ remotes: [ {{ {', '.join(fields)} }} ] }}",
    ]) + "\n"  # fmt: skip


def hub_configs(
    nodes: Sequence[HubNode],
    sites: Sequence[FleetSite],
    worker_password: str,
    system_password: str,
    store_dir: str,
    *,
    cluster_name: str = "nurserywatch-fleet",
    tls: HubTLS | None = None,
) -> dict[str, str]:
    """Every central node's config (node name → text), for ``nurserywatch fleet provision``: the same
    accounts on each node, the sites' passwords issued by the centre's operator."""
    names = [n.name for n in nodes]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"central nodes: names must be unique and at least one (got {', '.join(names) or 'none'})")
    accounts = hub_accounts(sites, worker_password, system_password)
    return {n.name: hub_node_config(n, nodes, store_dir, accounts, cluster_name=cluster_name, tls=tls) for n in nodes}
