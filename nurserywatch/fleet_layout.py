"""The JetStream layout of the fleet tier (docs/fleet.md): what a site keeps for the centre, the central
streams that *source* it across the leaf node link, the partitions the fleet workers share, and the
key-value buckets of the cross-site state — plain data, no nats import (like nurserywatch/jetstream.py),
so provisioning, the fleet workers, the board and the tests read one definition.

Store-and-forward is JetStream's own: the site keeps ``SiteOutLayout.stream`` in its own JetStream
domain; a central partition stream lists it as a *source* (``external.api = $JS.<domain>.API``), so
while the WAN is down the site's stream keeps everything and the central stream catches up, in order,
when the link returns. A site that keeps Mosquitto bridges ``SiteOutLayout.mqtt_topics`` to the central
MQTT listener instead; the partition stream then sources them from nats-server's own MQTT stream
``$MQTT_msgs``, where the listener stores a QoS 1 message *before* its PUBACK (a stream capturing the
subjects is filled after it: measured, 448 of 1354 acknowledged messages lost while that stream's leader
was re-elected after kill -9 of its node; sourced from ``$MQTT_msgs``, 0 of 450 and 0 of 471).

Partitions: site → ``partition_of(site)`` (CRC-32 mod ``partitions``), one central stream per partition
(``FLEET_P{k}``), one durable consumer of each, owned by one fleet worker at a time through a lease in
``FleetLayout.lease_bucket`` (gateway/ha/lease.py, the gateway's own lease).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from nurserywatch.contract import TopicKind, check_ident, subscription
from nurserywatch.jetstream import MQTT_STREAM, MQTT_SUBJECT_PREFIX, mqtt_filter_to_subject

#: What a site sends to the centre. Not sessions, assignments or commands: they carry staff names and
#: which child lies where; the centre sees pseudonymous child ids in alerts only (nicknames live in the
#: site's kit file and never travel at all).
SITE_OUT_KINDS = (
    TopicKind.READING,
    TopicKind.STATUS,
    TopicKind.EDGE,
    TopicKind.ALERT,
    TopicKind.GATEWAY,
    TopicKind.RECORDS_HEAD,
)

#: The central JetStream domain; every site's cluster has its own (``SiteOutLayout.domain``).
HUB_DOMAIN = "hub"
#: How long a site keeps what it sends the centre: the longest WAN outage it rides through.
SITE_OUT_MAX_AGE_S = 7 * 24 * 3600
#: How long the centre keeps a partition's messages once the fleet workers acknowledged them.
FLEET_MAX_AGE_S = 24 * 3600
#: Default number of partitions (central streams); sites are spread over them by CRC-32.
PARTITIONS = 4


def partition_of(site: str, partitions: int) -> int:
    """The partition a site's messages go to: stable across processes and releases (not ``hash``)."""
    return zlib.crc32(check_ident(site, "site").encode()) % partitions


@dataclass(frozen=True, slots=True)
class SiteOutLayout:
    """What one site keeps for the centre, in its own JetStream domain."""

    site: str
    #: Copies on the site's cluster (1 on a single-node site).
    replicas: int = 3

    def __post_init__(self) -> None:
        check_ident(self.site, "site")

    @property
    def domain(self) -> str:
        """The site cluster's JetStream domain (``jetstream { domain }`` on each of its nodes)."""
        return f"site-{self.site}"

    @property
    def api_prefix(self) -> str:
        """The site's JetStream API as the centre reaches it over the leaf node link."""
        return f"$JS.{self.domain}.API"

    @property
    def stream(self) -> str:
        return f"NW_OUT_{self.site.replace('-', '_').upper()}"

    @property
    def deliver_prefix(self) -> str:
        """Where the site delivers its sourced messages at the centre (``external.deliver``): one prefix
        per site, the only delivery subjects its credentials may publish (nurserywatch/fleet_nats.py)."""
        return f"nwsrc.{self.site}"

    @property
    def mqtt_topics(self) -> list[str]:
        """The contract filters a Mosquitto site bridges to the centre (``topic ... out 1``)."""
        return [subscription(self.site, kind) for kind in SITE_OUT_KINDS]

    @property
    def subjects(self) -> list[str]:
        return [mqtt_filter_to_subject(t) for t in self.mqtt_topics]

    @property
    def prefix_subject(self) -> str:
        """Every subject of the site: what its credentials may publish at the centre, and no more."""
        return mqtt_filter_to_subject(f"{subscription(self.site, TopicKind.GATEWAY).rsplit('/', 1)[0]}/#")

    def stream_config(self) -> dict[str, object]:
        return {
            "name": self.stream,
            "subjects": self.subjects,
            "retention": "limits",
            "storage": "file",
            "num_replicas": self.replicas,
            "discard": "old",
            "max_age": int(SITE_OUT_MAX_AGE_S * 1e9),
        }


@dataclass(frozen=True, slots=True)
class FleetLayout:
    """The centre's streams, consumers and buckets for a set of partitions."""

    partitions: int = PARTITIONS
    #: Copies on the central cluster.
    replicas: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= 1024:
            raise ValueError(f"partitions must be 1..1024, not {self.partitions}")

    def stream(self, k: int) -> str:
        return f"FLEET_P{k}"

    #: The fleet workers' durable consumer of each partition stream.
    consumer = "fleet"
    #: Leases ``p{k}``: which worker consumes partition k now.
    lease_bucket = "fleet_leases"
    #: Cross-site state, one key per site: ``site.{site}`` → ``fleet.state.SiteState`` JSON.
    state_bucket = "fleet_state"

    @staticmethod
    def lease_key(k: int) -> str:
        return f"p{k}"

    @staticmethod
    def state_key(site: str) -> str:
        return f"site.{check_ident(site, 'site')}"

    def stream_config(self, k: int, leaf_sites: list[str], bridged_sites: list[str]) -> dict[str, object]:
        """Partition k's stream: sources each leaf-node site's out stream from its domain, and each
        bridged (Mosquitto) site's messages from the central ``$MQTT_msgs`` (as their plain subjects).
        Raises ValueError for a site of another partition."""
        for site in (*leaf_sites, *bridged_sites):
            if partition_of(site, self.partitions) != k:
                raise ValueError(f"site {site!r} belongs to partition {partition_of(site, self.partitions)}, not {k}")
        sources = [self._source(site) for site in sorted(leaf_sites)]
        if bridged_sites:
            # One source (a stream sources another once), a transform per site: each is also its filter.
            sources.append({"name": MQTT_STREAM, "subject_transforms": [
                {"src": MQTT_SUBJECT_PREFIX + SiteOutLayout(site).prefix_subject,
                 "dest": SiteOutLayout(site).prefix_subject} for site in sorted(bridged_sites)]})  # fmt: skip
        return {
            "name": self.stream(k),
            "subjects": [],
            "sources": sources,
            "retention": "limits",
            "storage": "file",
            "num_replicas": self.replicas,
            "discard": "old",
            "max_age": int(FLEET_MAX_AGE_S * 1e9),
        }

    @staticmethod
    def _source(site: str) -> dict[str, object]:
        # The filter: the site's server sends only its own prefix, whatever its stream was made to hold.
        out = SiteOutLayout(site)
        return {
            "name": out.stream,
            "filter_subject": out.prefix_subject,
            "external": {"api": out.api_prefix, "deliver": out.deliver_prefix},
        }

    def mqtt_stream_config(self) -> dict[str, object]:
        """nats-server's own ``$MQTT_msgs``, made (or updated) by the workers: nats-server uses it as it
        finds it (checked with 2.15). nats-server's own is an *interest* stream, which drops what no
        consumer wants — and a partition stream's source consumer is gone for a moment whenever the
        stream's sources restart (a leader step-down after a leaf site's outage: a bench run lost 1,887
        bridged readings, and a fresh-clone CI run 21). Kept by *limits* for ``FLEET_MAX_AGE_S``, a
        restarted source resumes from the last sequence it stored: nothing lost, nothing twice."""
        return {
            "name": MQTT_STREAM,
            "subjects": [MQTT_SUBJECT_PREFIX + ">"],
            "retention": "limits",
            "max_age": int(FLEET_MAX_AGE_S * 1e9),
            "storage": "file",
            "num_replicas": self.replicas,
            "discard": "old",
        }

    def consumer_config(self) -> dict[str, object]:
        """Durable pull consumer of a partition stream: acked after the state and the time-series
        writes are done; a bounded number in flight."""
        return {
            "durable_name": self.consumer,
            "ack_policy": "explicit",
            "deliver_policy": "all",
            "ack_wait": int(30 * 1e9),
            "max_ack_pending": 2000,
            "max_deliver": -1,
        }
