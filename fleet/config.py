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
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from nurserywatch.contract import Ident
from nurserywatch.fleet_layout import PARTITIONS, FleetLayout, partition_of
from nurserywatch.keys import KeyFileError, load_public_key
from nurserywatch.kit import StorageConfig
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


class SiteLink(StrEnum):
    #: The site's NATS is a leaf node of the centre; a partition stream sources its out stream.
    LEAF = "leaf"
    #: The site keeps Mosquitto, bridged to the central MQTT listener; the partition stream captures it.
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
