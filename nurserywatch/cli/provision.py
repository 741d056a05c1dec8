"""MQTT security for a site, generated from the kit (docs/deploy.md §6): who may connect to the broker and
what each may publish and read. Pure: kit and options in, text out. The files, keys, certificates
and the hashing of the password file are done by ``nurserywatch/cli/provision_files.py``.

Users: one per edge agent (``edge-{agent}``), ``gateway`` and ``dashboard``, and ``home-assistant-bridge``
when the kit enables Home Assistant. Every topic in the ACL is built by the contract's topic functions
(the bridge's discovery topics by the bridge's own, gateway/integrations/home_assistant.py), so the
ACL follows the contract when a topic changes.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

from gateway.integrations.home_assistant import BRIDGE_NAME, config_filter
from nurserywatch.contract import (
    MAX_PAYLOAD_BYTES,
    TopicKind,
    bridge_topic,
    edge_topic,
    reading_topic,
    room_alerts_topic,
    status_topic,
    subscription,
)
from nurserywatch.kit import STREAMS_BY_KIND, Kit

EDGE_USER_PREFIX = "edge-"
GATEWAY_USER = "gateway"
DASHBOARD_USER = "dashboard"
#: The Home Assistant bridge (``nurserywatch home-assistant``), when the kit enables it. Not Home
#: Assistant itself, which needs a user of its own (docs/integrations.md, "MQTT access").
HOME_ASSISTANT_BRIDGE_USER = "home-assistant-bridge"

#: File names inside the broker's folder (--broker-dir) and the credentials folder.
CONF_FILE = "nurserywatch.conf"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
CA_CERT = "ca.crt"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
#: The command key (docs/contract.md, "Signed commands"): the private key goes with the dashboard's
#: credentials, its public half (command-key.pub, nurserywatch.keys.public_key_path) with the gateway's.
COMMAND_KEY = "command-key.pem"

#: The broker refuses a larger publish payload (message_size_limit): the contract's own limit, so
#: nothing a part would refuse anyway reaches it. The QoS flow completes, so a publisher is not stuck
#: resending it.
MESSAGE_SIZE_LIMIT = MAX_PAYLOAD_BYTES
#: A larger MQTT packet of any kind cuts the client off (max_packet_size) before the broker buffers it:
#: the payload limit plus room for the topic (ours are under 300 bytes) and the headers.
MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 4096

#: Names the server certificate always carries, so the gateway and dashboard on the broker's own
#: machine can use mqtts://localhost or mqtts://127.0.0.1.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")

_DNS_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_RE = re.compile(rf"^(?=.{{1,253}}$){_DNS_LABEL}(\.{_DNS_LABEL})*\.?$")
# Mosquitto's config parser splits on whitespace; paths and addresses must not contain any.
_NO_SPACE_RE = re.compile(r"^\S+$")


class ProvisionError(Exception):
    """Options or files that cannot be provisioned; ``str()`` is the one message shown."""


class Role(StrEnum):
    EDGE = "edge"
    GATEWAY = "gateway"
    DASHBOARD = "dashboard"
    HOME_ASSISTANT_BRIDGE = "home-assistant-bridge"


class Access(StrEnum):
    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"


@dataclass(frozen=True, slots=True)
class MqttUser:
    name: str
    role: Role
    #: The agent id, for Role.EDGE.
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class AclRule:
    access: Access
    topic: str


def edge_user(agent_id: str) -> str:
    return f"{EDGE_USER_PREFIX}{agent_id}"


def mqtt_users(kit: Kit) -> list[MqttUser]:
    """Everyone who connects to the site's broker: the gateway, the dashboard, each edge agent, and the
    Home Assistant bridge when the kit enables it. The bridge comes last, so that enabling it moves no
    other part's place (a NATS cluster's URL order, provision_nats.broker_urls, follows this order)."""
    users = [MqttUser(GATEWAY_USER, Role.GATEWAY), MqttUser(DASHBOARD_USER, Role.DASHBOARD)]
    users += [MqttUser(edge_user(a.id), Role.EDGE, agent=a.id) for a in kit.agents]
    if kit.home_assistant.enabled:
        users.append(MqttUser(HOME_ASSISTANT_BRIDGE_USER, Role.HOME_ASSISTANT_BRIDGE))
    return users


#: Per topic kind (TopicKind's value), what the gateway and the dashboard may do; None: nothing.
#: Every kind of the contract must be decided here (tests/nurserywatch/test_mqtt_security.py checks it), so a new
#: topic cannot silently end up unusable or open. Keys are plain strings so that a kind this table
#: knows before the contract has it is simply not emitted.
#:
#: The gateway (gateway/service/mqtt.py) reads what the edges and the dashboard send and writes alerts,
#: escalations, sessions, assignments, its heartbeat (+ last will) and the signed records head; it re-reads
#: its own retained alerts, escalations and assignments on reconnect to reconcile them.
GATEWAY_ACCESS: dict[str, Access | None] = {
    "reading": Access.READ,
    "status": Access.READ,
    "edge": Access.READ,
    "command_ack": Access.READ,
    "command_session": Access.READ,
    "command_record": Access.READ,
    "command_assign": Access.READ,
    "alert": Access.READWRITE,
    "escalation": Access.READWRITE,
    "assignment": Access.READWRITE,
    "session": Access.WRITE,
    "gateway": Access.WRITE,
    "records_head": Access.WRITE,
    # The Home Assistant bridge's (docs/integrations.md): its own user (home_assistant_bridge_rules).
    "room_alerts": None,
    "bridge": None,
}

#: The dashboard reads what it shows and writes only staff commands; the gateway owns alert, session
#: and assignment state.
DASHBOARD_ACCESS: dict[str, Access | None] = {
    "reading": Access.READ,
    "status": Access.READ,
    "edge": Access.READ,
    "alert": Access.READ,
    "escalation": Access.READ,
    "session": Access.READ,
    "assignment": Access.READ,
    "gateway": Access.READ,
    "command_ack": Access.WRITE,
    "command_session": Access.WRITE,
    "command_record": Access.WRITE,
    "command_assign": Access.WRITE,
    "records_head": None,  # for the centre (the fleet tier); the site's dashboard does not show it
    "room_alerts": None,  # for Home Assistant; the dashboard has the alerts themselves
    "bridge": None,
}


def home_assistant_bridge_rules(kit: Kit) -> list[AclRule]:
    """What the Home Assistant bridge (gateway/integrations/home_assistant_bridge.py) subscribes to and
    publishes, nothing more:

    - read Home Assistant's birth topic and the gateway's retained ``alert/+`` (it writes no alert);
    - read and write this site's discovery configs, ``{prefix}/+/nurserywatch_{site}/+/config``: it reads
      the retained ones to find stale configs, and writes every config and the empty payloads that
      remove stale ones (whose topics are no longer in the kit, so no list of exact topics can cover
      them) — not another site's configs, nor anything else under the prefix;
    - read and write its own status ``bridge/home_assistant`` (also its last will; it reads its own
      status back to know the retained messages have all arrived);
    - write ``room_alerts/{room}`` for each room of the kit, one line each.

    No reading, status, edge, command, escalation, session or assignment topic: Home Assistant reads
    those itself, with its own user."""
    site = kit.site
    ha = kit.home_assistant
    return [
        AclRule(Access.READ, ha.birth_topic),
        AclRule(Access.READ, subscription(site, TopicKind.ALERT)),
        AclRule(Access.READWRITE, config_filter(kit)),
        AclRule(Access.READWRITE, bridge_topic(site, BRIDGE_NAME)),
        *(AclRule(Access.WRITE, room_alerts_topic(site, room.id)) for room in kit.rooms),
    ]


def acl_rules(kit: Kit, user: MqttUser) -> list[AclRule]:
    """The topics ``user`` may use. An edge agent may only write: one line per reading stream and one
    status line per device it owns in the kit, and its own edge status (also its last will's topic)."""
    site = kit.site
    if user.role is Role.HOME_ASSISTANT_BRIDGE:
        return home_assistant_bridge_rules(kit)
    if user.role is Role.EDGE:
        assert user.agent is not None
        rules: list[AclRule] = []
        for device in kit.devices_of_agent(user.agent):
            rules += [
                AclRule(Access.WRITE, reading_topic(site, device.id, stream))
                for stream in sorted(STREAMS_BY_KIND[device.kind])
            ]
            rules.append(AclRule(Access.WRITE, status_topic(site, device.id)))
        rules.append(AclRule(Access.WRITE, edge_topic(site, user.agent)))
        return rules
    table = GATEWAY_ACCESS if user.role is Role.GATEWAY else DASHBOARD_ACCESS
    undecided = [kind.value for kind in TopicKind if kind.value not in table]
    if undecided:
        raise ProvisionError(f"no {user.role.value} access decided for topic kind(s) {', '.join(undecided)}")
    return [
        AclRule(access, subscription(site, kind)) for kind in TopicKind if (access := table[kind.value]) is not None
    ]


def acl_text(kit: Kit) -> str:
    """Mosquitto's acl_file. No line precedes the first ``user``, so anonymous clients get nothing,
    and no ``pattern`` line, so nothing applies to everyone."""
    out = [
        f"# MQTT access of site {kit.site!r}, generated by `nurserywatch kit provision` from the kit file.",
        "# Regenerate it after changing agents or devices instead of editing it.",
    ]
    for user in mqtt_users(kit):
        out += ["", f"user {user.name}"]
        out += [f"topic {rule.access.value} {rule.topic}" for rule in acl_rules(kit, user)]
    return "\n".join(out) + "\n"


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """Where the broker listens and where its files live on the broker's machine."""

    #: Absolute folder holding passwd, acl, ca.crt, server.crt and server.key on the broker's machine.
    files_dir: str
    #: Plain MQTT listener (for the gateway and dashboard on the same machine); port 0: none.
    bind: str = "127.0.0.1"
    port: int = 1883
    #: TLS listener (for edge agents on other machines); None: every interface; port 0: none.
    tls_bind: str | None = None
    tls_port: int = 8883
    #: Require a client certificate signed by the site CA on the TLS listener (besides the password).
    require_client_cert: bool = False

    def check(self) -> None:
        if not PurePosixPath(self.files_dir).is_absolute() or not _NO_SPACE_RE.match(self.files_dir):
            raise ProvisionError(
                f"broker folder {self.files_dir!r}: must be an absolute path without spaces (Mosquitto reads it "
                "from its config file, whatever folder it was started in)"
            )
        for name, port in (("port", self.port), ("TLS port", self.tls_port)):
            if not 0 <= port <= 65535:
                raise ProvisionError(f"{name} {port}: expected 1–65535, or 0 for no such listener")
        if self.port == 0 and self.tls_port == 0:
            raise ProvisionError("both listeners are switched off (port 0 and TLS port 0); keep at least one")
        if self.port and self.port == self.tls_port:
            raise ProvisionError(f"the plain and the TLS listener cannot share port {self.port}")
        if self.require_client_cert and self.tls_port == 0:
            raise ProvisionError("client certificates need the TLS listener (TLS port is 0)")
        for address in (self.bind, self.tls_bind):
            if address is not None:
                check_host(address, "listen address")


def check_host(name: str, what: str = "host name") -> str:
    """A DNS name or an IP address, as a server certificate or a listener can carry it."""
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    if not _DNS_RE.match(name):
        raise ProvisionError(f"{what} {name!r}: expected a DNS name such as broker.local or an IP address")
    return name


@dataclass(frozen=True, slots=True)
class ServerNames:
    """The subject alternative names of the broker's certificate."""

    dns: tuple[str, ...]
    ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]

    @property
    def all(self) -> list[str]:
        return [*self.dns, *(str(ip) for ip in self.ips)]


def server_names(hostnames: Sequence[str]) -> ServerNames:
    """The names clients use to reach the broker (``--hostname``), plus LOCAL_NAMES; duplicates dropped."""
    dns: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for name in [*hostnames, *LOCAL_NAMES]:
        check_host(name)
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            name = name.rstrip(".").lower()
            if name not in dns:
                dns.append(name)
            continue
        if ip not in ips:
            ips.append(ip)
    return ServerNames(tuple(dns), tuple(ips))


#: How long the gateway may be away (restart, crash, upgrade) before the broker starts dropping the
#: readings it keeps for it.
GATEWAY_OUTAGE_MIN = 60


def message_rate(kit: Kit) -> int:
    """At most this many messages a second reach the gateway: one per device and stream."""
    return sum(len(STREAMS_BY_KIND[d.kind]) for d in kit.devices)


def broker_queue_limits(kit: Kit, outage_min: int = GATEWAY_OUTAGE_MIN) -> tuple[int, int]:
    """(max_queued_messages, max_inflight_messages) for the kit's broker.

    The edge publishes at most one message per device and stream each second, so the gateway's
    persistent session gathers ``rate = Σ streams per device`` messages/s while it is away: the queue
    holds ``rate × 60 × outage_min`` (rounded up to a thousand, at least Mosquitto's 1000). Mosquitto
    drops a QoS 1 message silently for a queue that is full — also for an online gateway whose
    in-flight window is full while it catches up. The in-flight window is about one second of the kit's
    traffic (20 … 200): the gateway acknowledges a reading only once it is committed (batched), and a
    window much larger only puts more readings ahead of the PUBACKs and PINGRESPs it waits for."""
    rate = message_rate(kit)
    queued = max(1000, -(-rate * 60 * outage_min // 1000) * 1000)
    return queued, min(200, max(20, rate))


def mosquitto_conf(kit: Kit, opts: BrokerOptions) -> str:
    """A Mosquitto 2.x config (a whole file, or a conf.d snippet on Debian): no anonymous access,
    the password and ACL files, a plain listener and a TLS listener."""
    opts.check()
    d = PurePosixPath(opts.files_dir)
    out = [
        f"# Mosquitto settings for nurserywatch site {kit.site!r} ({kit.name}), generated by",
        "# `nurserywatch kit provision`. Regenerate it instead of editing it (docs/deploy.md, Securing MQTT).",
        "# Debian / Raspberry Pi OS: copy it to /etc/mosquitto/conf.d/; the main mosquitto.conf keeps",
        "# persistence and logging. No other file may define listeners or per_listener_settings.",
        "",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {d / PASSWORD_FILE}",
        f"acl_file {d / ACL_FILE}",
        "",
        "# Payloads over the contract's limit are dropped (never forwarded); bigger packets end the connection.",
        f"message_size_limit {MESSAGE_SIZE_LIMIT}",
        f"max_packet_size {MAX_PACKET_BYTES}",
    ]
    queued, inflight = broker_queue_limits(kit)
    rate = message_rate(kit)
    out += [
        "",
        f"# The gateway's queue while it is away: {rate} messages/s (devices × streams, one a second) for",
        f"# {GATEWAY_OUTAGE_MIN} min (nurserywatch.cli.provision.broker_queue_limits); a full queue drops readings.",
        f"max_queued_messages {queued}",
        "# About one second of the kit's traffic unacknowledged at a time (the gateway acknowledges once stored).",
        f"max_inflight_messages {inflight}",
        "# Nagle off on the broker's sockets: the gateway acknowledges a reading once stored, a moment after",
        "# it arrived, and Nagle then held the next small message for the delayed ACK (~40 ms; bench/README.md).",
        "set_tcp_nodelay true",
    ]
    # Each listener: a client's id is its user name, whatever it asks for, so one login cannot take over
    # (and knock off) another's connection — an edge agent the gateway's. Each part keeps one fixed id,
    # so the gateway's persistent session (its queue while it restarts) stays its own. A listener
    # option in Mosquitto 2.0: given before any listener it would open a default one on port 1883.
    ids = [
        "# The client id is the user name (one login cannot knock another off the broker).",
        "use_username_as_clientid true",
    ]
    if opts.port:
        out += [
            "",
            "# Plain MQTT (mqtt://), for the gateway and the dashboard on this machine.",
            f"listener {opts.port} {opts.bind}",
            *ids,
        ]
    if opts.tls_port:
        where = f" {opts.tls_bind}" if opts.tls_bind else ""
        out += [
            "",
            "# MQTT over TLS (mqtts://), for edge agents on other machines; the certificate is signed by the",
            "# site CA generated with it.",
            f"listener {opts.tls_port}{where}",
            *ids,
            f"cafile {d / CA_CERT}",
            f"certfile {d / SERVER_CERT}",
            f"keyfile {d / SERVER_KEY}",
            "tls_version tlsv1.2",
            f"require_certificate {'true' if opts.require_client_cert else 'false'}",
        ]
    return "\n".join(out) + "\n"


def password_lines(passwords: Mapping[str, str]) -> str:
    """``user:password`` lines, the input of ``mosquitto_passwd -U`` (which replaces each password by
    its hash in place)."""
    lines = []
    for user, password in passwords.items():
        for what, value in (("user", user), ("password", password)):
            if not value or ":" in value or any(c.isspace() for c in value):
                raise ProvisionError(f"{what} of {user!r}: must be non-empty, without ':' or spaces")
        lines.append(f"{user}:{password}")
    return "\n".join(lines) + "\n"


def credentials_yaml(
    kit: Kit,
    user: MqttUser,
    password: str,
    *,
    ca_file: str | None,
    cert_file: str | None = None,
    key_file: str | None = None,
    command_key: str | None = None,
) -> str:
    """The credentials file a part reads through ``--broker mqtts://host:8883?credentials=FILE``
    (nurserywatch.mqtt.MqttCredentials). Values are JSON strings, which YAML reads verbatim."""
    who = f"edge agent {user.agent!r}" if user.role is Role.EDGE else f"the {user.role.value.replace('-', ' ')}"
    out = [
        f"# MQTT credentials of {who} at site {kit.site!r}, generated by `nurserywatch kit provision`.",
        "# Secret: keep it readable by root only (chmod 600). Relative paths are relative to this file.",
        f"username: {json.dumps(user.name)}",
        f"password: {json.dumps(password)}",
    ]
    files = (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file), ("command_key", command_key))
    for key, value in files:
        if value is not None:
            out.append(f"{key}: {json.dumps(value)}")
    return "\n".join(out) + "\n"
