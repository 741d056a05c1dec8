"""A fleet's transport on loopback for the tests and bench/fleet.py (docs/fleet.md, "Transport"): the
central NATS cluster (JetStream domain ``hub``, leaf node and MQTT listeners, the FLEET account with one
user per site, nurserywatch/fleet_nats.py), leaf node sites (one nats-server each, its own domain, its
leaf node remote going through a cuttable TcpLink per central node) and Mosquitto-bridged sites (their
bridge to the central MQTT listener going through TcpLinks too).

``FleetTransport(d, leaf_sites=[...], bridged_sites=[...]).start()``, then ``hub_urls``,
``await connect_hub()``, ``sites[s].nats_url`` / ``.mqtt_url`` / ``.cut()`` / ``.restore()``,
``bridged[s].url`` / ``.cut()`` / ``.restore()``. Fixture ``fleet_transport``: a factory, everything
stopped after the test.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient

from nurserywatch.fleet_layout import SiteOutLayout
from nurserywatch.fleet_nats import FleetSite, hub_accounts, site_leaf_remote, site_user
from nurserywatch.mqtt import BrokerURL
from nurserywatch.nats_local import NatsCluster
from tests.support.mosquitto import MosquittoProcess
from tests.support.tcp_link import TcpLink


class _Links:
    """One TcpLink per central node: the site's WAN."""

    def __init__(self, target_ports: Sequence[int]) -> None:
        self.links = [TcpLink(p) for p in target_ports]

    def cut(self) -> None:
        for link in self.links:
            link.cut()

    def restore(self) -> None:
        for link in self.links:
            link.restore()

    @property
    def is_cut(self) -> bool:
        return all(link.is_cut for link in self.links)

    def close(self) -> None:
        for link in self.links:
            link.close()


class LeafSite:
    """A site's NATS (one node, domain ``site-{site}``, MQTT listener without auth as in the tests of
    the site cluster) whose leaf node remote reaches every central node through ``links``. Its node is
    named after the site (``{site}-n1``, as `nurserywatch kit provision` names a fleet site's nodes):
    the centre drops the older of two leaf node connections from servers of one name (docs/fleet.md).
    ``node_prefix=""`` gives every site's node the same name ``n1`` (a test of just that)."""

    def __init__(self, d: Path, site: str, password: str, hub: NatsCluster, node_prefix: str | None = None) -> None:
        self.site = site
        self.password = password
        self.links = _Links([n.leaf_port for n in hub.nodes])
        remote = site_leaf_remote(site, [link.url() for link in self.links.links], password)
        self.nats = NatsCluster(d, 1, extra=remote, name=f"site-{site}", domain=SiteOutLayout(site).domain,
                                node_prefix=f"{site}-" if node_prefix is None else node_prefix)  # fmt: skip

    @property
    def nats_url(self) -> str:
        return self.nats.nats_urls[0]

    @property
    def mqtt_url(self) -> BrokerURL:
        return self.nats.mqtt_urls[0]

    def cut(self) -> None:
        self.links.cut()

    def restore(self) -> None:
        self.links.restore()

    def stop(self) -> None:
        self.nats.stop()
        self.links.close()


def bridge_options(site: str, password: str, addresses: Sequence[str]) -> list[str]:
    """Mosquitto config lines bridging a site's out topics (SiteOutLayout.mqtt_topics: not sessions,
    assignments or commands) to the central MQTT listener(s), QoS 1, with a persistent session."""
    return [
        "connection fleet-centre",
        f"address {' '.join(addresses)}",
        f"remote_username {site_user(site)}",
        f"remote_password {password}",
        f"remote_clientid nw-bridge-{site}",
        "bridge_protocol_version mqttv311",
        # The private-bridge flag (a bit in the protocol version) is Mosquitto's own; nats-server refuses it.
        "try_private false",
        # No $SYS/broker/connection notifications: the site's user may publish under its prefix only.
        "notifications false",
        "cleansession false",
        "restart_timeout 1 5",
        "keepalive_interval 5",
        *(f"topic {topic} out 1" for topic in SiteOutLayout(site).mqtt_topics),
    ]


class BridgedSite:
    """A site that keeps Mosquitto, bridged to the centre's MQTT listener through ``links``."""

    def __init__(self, d: Path, site: str, password: str, hub: NatsCluster) -> None:
        self.site = site
        self.password = password
        self.links = _Links([n.mqtt_port for n in hub.nodes])
        addresses = [f"127.0.0.1:{link.port}" for link in self.links.links]
        # max_queued_messages 0: unbounded, so an outage loses nothing to the default limit of 1,000.
        self.mosquitto = MosquittoProcess(
            d, persistence=True, max_queued_messages=0, log_types=("error", "warning", "notice"),
            options=bridge_options(site, password, addresses),
        )  # fmt: skip

    @property
    def url(self) -> BrokerURL:
        return self.mosquitto.url

    def cut(self) -> None:
        self.links.cut()

    def restore(self) -> None:
        self.links.restore()

    def stop(self) -> None:
        self.mosquitto.stop()
        self.links.close()


class FleetTransport:
    def __init__(
        self,
        d: Path,
        *,
        leaf_sites: Sequence[str] = (),
        bridged_sites: Sequence[str] = (),
        hub_size: int = 3,
        leaf_node_prefix: str | None = None,
    ) -> None:
        self.dir = d
        self.worker_password = secrets.token_urlsafe(12)
        self.passwords = {s: secrets.token_urlsafe(12) for s in (*leaf_sites, *bridged_sites)}
        accounts = hub_accounts(
            [FleetSite(s, self.passwords[s]) for s in leaf_sites]
            + [FleetSite(s, self.passwords[s], bridged=True) for s in bridged_sites],
            self.worker_password,
            secrets.token_urlsafe(12),
        )
        self.hub = NatsCluster(
            d / "hub", hub_size, extra=accounts, name="fleet-hub", domain="hub", leafnode_listen=True
        )
        self.sites = {
            s: LeafSite(d / f"site-{s}", s, self.passwords[s], self.hub, leaf_node_prefix) for s in leaf_sites
        }
        self.bridged = {s: BridgedSite(d / f"bridged-{s}", s, self.passwords[s], self.hub) for s in bridged_sites}

    @property
    def hub_urls(self) -> list[str]:
        return self.hub.nats_urls

    def start(self) -> None:
        try:
            self.hub.start()
            for leaf in self.sites.values():
                leaf.nats.start()
            for bridged in self.bridged.values():
                bridged.mosquitto.start()
        except BaseException:
            self.stop()
            raise

    async def connect_hub(self, **options: object) -> NatsClient:
        """The fleet worker's connection to the centre (user ``fleet``)."""
        return await nats.connect(servers=self.hub_urls, user="fleet", password=self.worker_password, **options)

    def stop(self) -> None:
        for bridged in self.bridged.values():
            bridged.stop()
        for leaf in self.sites.values():
            leaf.stop()
        self.hub.stop()

    def logs(self) -> str:
        """The tail of every server's log (for a failing test's message)."""
        out = []
        for log in sorted(self.dir.rglob("*.log")):
            out.append(f"--- {log.relative_to(self.dir)}\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)


@pytest.fixture
def fleet_transport(tmp_path: Path) -> Iterator[Callable[..., FleetTransport]]:
    """A factory: ``fleet_transport(leaf_sites=[...], bridged_sites=[...], hub_size=3)`` → started
    (``leaf_node_prefix``: LeafSite's ``node_prefix``)."""
    made: list[FleetTransport] = []

    def make(**kwargs: object) -> FleetTransport:
        fleet = FleetTransport(tmp_path / f"fleet{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(fleet)
        fleet.start()
        return fleet

    try:
        yield make
    finally:
        for fleet in made:
            fleet.stop()
