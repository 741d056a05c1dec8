"""The operator's fleet file (docs/fleet.md, "Fleet workers"): the central NATS cluster, the partitions,
every site (its link to the centre, its records public key, its time zone) and the central time-series
store. Validated on load like a kit file (nurserywatch/yaml_files.py): every problem on its own line,
never a traceback. Example: configs/fleet.example.yaml.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from nurserywatch.contract import Ident
from nurserywatch.fleet_layout import PARTITIONS, FleetLayout, partition_of
from nurserywatch.fleet_nats import HubNode, HubTLS
from nurserywatch.keys import KeyFileError, load_public_key
from nurserywatch.kit import Port, StorageConfig
from nurserywatch.yaml_files import load_yaml_model


class FleetError(Exception):
    """A fleet file that cannot be used; the message lists every problem, one per line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CentralNats(_Strict):
    """The central NATS cluster as the fleet workers reach it (any node; they fail over)."""

    urls: Annotated[list[Annotated[str, Field(pattern=r"^(nats|tls)://\S+$")]], Field(min_length=1)]
    #: A credentials file (user, password, CA; as ``--nats-credentials`` of the gateway), relative to the
    #: fleet file's folder; None: the user in the URLs, or none.
    credentials: str | None = None


def _node_path(value: str) -> str:
    if not value.startswith("/") or any(c in value for c in '"\\') or any(c.isspace() for c in value):
        raise ValueError(f"{value!r}: want an absolute path on the node's machine, without quotes or spaces")
    return value


#: An absolute path on a central node's machine (it goes into nats.conf and the systemd unit as is).
NodePath = Annotated[str, AfterValidator(_node_path)]
#: A central node's host name or IPv4 address (its config writes host:port without IPv6 brackets).
CentralHost = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,253}$")]


class CentralNode(_Strict):
    """One node of the central cluster (``nurserywatch fleet-provision``): where the others and the sites
    reach it, and its listeners (nurserywatch/fleet_nats.py ``HubNode``)."""

    name: Ident
    #: The name or address the other nodes and the sites use to reach it.
    host: CentralHost
    #: The address its listeners bind on; None: every interface.
    bind: CentralHost | None = None
    client_port: Port = 4222
    cluster_port: Port = 6222
    leaf_port: Port = 7422
    mqtt_port: Port = 8883
    #: Monitoring (/healthz, /jsz), on the node's loopback only.
    monitor_port: Port = 8222

    def hub_node(self) -> HubNode:
        return HubNode(name=self.name, host=self.host, client_port=self.client_port, cluster_port=self.cluster_port,
                       leaf_port=self.leaf_port, mqtt_port=self.mqtt_port, monitor_port=self.monitor_port)  # fmt: skip


class CentralTLS(_Strict):
    """The central nodes' TLS files (the same paths on every node's machine): leaf nodes, MQTT, routes."""

    cert_file: NodePath
    key_file: NodePath
    ca_file: NodePath

    def hub_tls(self) -> HubTLS:
        return HubTLS(self.cert_file, self.key_file, self.ca_file)


class CentralCluster(_Strict):
    """The central NATS cluster as ``nurserywatch fleet-provision`` writes it: three nodes, JetStream
    domain ``hub`` (docs/fleet.md, "Provisioning the centre")."""

    #: The cluster's name (the nodes refuse routes from another).
    name: Ident = "nurserywatch-fleet"
    nodes: Annotated[list[CentralNode], Field(min_length=3, max_length=3)]
    tls: CentralTLS | None = None
    #: Each node's JetStream store on its machine; None: nats/{node}/jetstream under the output folder.
    store_dir: NodePath | None = None
    #: Where each node's nats.conf is on its machine (the unit's ExecStart); None: nats/{node} under the
    #: output folder.
    files_dir: NodePath | None = None

    @model_validator(mode="after")
    def _check(self) -> CentralCluster:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"nodes: names must be unique (got {', '.join(names)})")
        taken: dict[tuple[str, int], str] = {}
        for n in self.nodes:
            for what in ("client_port", "cluster_port", "leaf_port", "mqtt_port", "monitor_port"):
                port: int = getattr(n, what)
                key = (n.bind or n.host, port)
                if (other := taken.setdefault(key, f"{n.name}.{what}")) != f"{n.name}.{what}":
                    raise ValueError(f"nodes: {n.name}.{what} {port} on {key[0]} is already {other}")
        return self


class SiteLink(StrEnum):
    #: The site's NATS is a leaf node of the centre; a partition stream sources its out stream.
    LEAF = "leaf"
    #: The site keeps Mosquitto, bridged to the central MQTT listener; the partition stream sources it from
    #: the listener's own stream ``$MQTT_msgs``.
    MQTT_BRIDGE = "mqtt_bridge"


class FleetSite(_Strict):
    id: Ident
    name: Annotated[str, Field(min_length=1, max_length=200)]
    link: SiteLink = SiteLink.LEAF
    #: The site's records public key (``records-signing.pub``): a PEM file path (relative to the fleet
    #: file's folder) or the PEM text itself.
    records_key: Annotated[str, Field(min_length=1)]
    timezone: str = "Asia/Tokyo"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone (e.g. Asia/Tokyo)") from None
        return value


class TimeSeriesConfig(StorageConfig):
    """The central time-series store: the gateway's InfluxDB writer settings (nurserywatch/kit.py
    ``StorageConfig``, v1 or v2 write API); readings get the tag ``site``."""

    readings: Literal["influxdb"] = "influxdb"
    buffer_path: Annotated[str, Field(min_length=1)] = "fleet-influx-buffer.sqlite3"


class FleetConfig(_Strict):
    nats: CentralNats
    partitions: Annotated[int, Field(ge=1, le=1024)] = PARTITIONS
    sites: list[FleetSite] = Field(default_factory=list)
    #: None: no time-series store (the workers keep the cross-site state only).
    timeseries: TimeSeriesConfig | None = None
    #: A worker's partition lease expires this long after its last renewal (takeover ≤ TTL + a renew period).
    lease_ttl_s: Annotated[float, Field(ge=1, le=600)] = 10.0
    lease_renew_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    #: How often a worker reads the partition streams' source (leaf node link) state.
    link_poll_s: Annotated[float, Field(ge=0.2, le=600)] = 5.0
    #: The central cluster's nodes, for ``nurserywatch fleet-provision``; None: not provisioned from here.
    central: CentralCluster | None = None

    _base_dir: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> FleetConfig:
        ids = [s.id for s in self.sites]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"sites: {', '.join(twice)} listed more than once")
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError(f"lease_renew_s: {self.lease_renew_s} must be at most half of lease_ttl_s "
                             f"({self.lease_ttl_s}), or a slow renewal loses the lease")  # fmt: skip
        return self

    @property
    def layout(self) -> FleetLayout:
        return FleetLayout(self.partitions)

    def site(self, site_id: str) -> FleetSite | None:
        return next((s for s in self.sites if s.id == site_id), None)

    def sites_of(self, k: int) -> list[FleetSite]:
        return [s for s in self.sites if partition_of(s.id, self.partitions) == k]

    def resolve(self, path: str) -> Path:
        """A path of the file, taken relative to the fleet file's folder."""
        p = Path(path)
        return p if p.is_absolute() or self._base_dir is None else self._base_dir / p

    def public_key(self, site: FleetSite) -> Ed25519PublicKey:
        """The site's records public key; raises FleetError naming the site."""
        text = site.records_key.strip()
        try:
            if text.startswith("-----BEGIN"):
                from cryptography.hazmat.primitives import serialization

                key = serialization.load_pem_public_key(text.encode())
                if not isinstance(key, Ed25519PublicKey):
                    raise KeyFileError(f"not an Ed25519 public key ({type(key).__name__})")
                return key
            return load_public_key(self.resolve(text))
        except (KeyFileError, ValueError, TypeError) as exc:
            raise FleetError(f'site "{site.id}": records_key: {exc}') from None

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every site's key; raises FleetError listing every site whose key cannot be read."""
        keys: dict[str, Ed25519PublicKey] = {}
        problems: list[str] = []
        for s in self.sites:
            try:
                keys[s.id] = self.public_key(s)
            except FleetError as exc:
                problems.append(str(exc))
        if problems:
            raise FleetError("\n".join(problems))
        return keys


#: Error messages name a site by its id: ``site "sakura" (line 12)`` rather than ``sites[3]``.
FLEET_LABELS = {"sites": "site"}


def load_fleet(path: str | Path) -> FleetConfig:
    """Read and validate a fleet file, and every site's records key. Raises FleetError, a problem a line."""
    base_dir = Path(path).resolve().parent
    cfg = load_yaml_model(path, FleetConfig, FleetError, example="configs/fleet.example.yaml", labels=FLEET_LABELS)
    cfg._base_dir = base_dir
    cfg.public_keys()
    return cfg
