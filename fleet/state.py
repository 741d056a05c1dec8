"""The cross-site state the fleet workers keep and the fleet board shows: one ``SiteState`` per site,
stored as JSON under ``FleetLayout.state_key(site)`` in the ``FleetLayout.state_bucket`` key-value
bucket (written by the worker owning the site's partition, read by the board). Plain models, no I/O.

Children appear by their pseudonymous id only (``OpenAlert.child``); nicknames never leave the site.
Times: ``*_ts`` are the site's clock (from its messages), ``*_ms`` the centre's (when the worker saw it).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from nurserywatch.contract import Severity


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class OpenAlert(_Model):
    """An alert of the site that is active, or resolved but not yet acknowledged."""

    id: str
    rule: str
    severity: Severity
    active: bool
    acknowledged: bool = False
    escalated: bool = False
    room: str | None = None
    device: str | None = None
    #: Pseudonymous child id (never a nickname).
    child: str | None = None
    started_ts: int
    updated_ts: int
    message: str
    message_en: str


class DeviceHealth(_Model):
    device: str
    #: From the retained status (None: no status seen yet).
    online: bool | None = None
    battery_pct: float | None = None
    status_ts: int | None = None
    last_reading_ts: int | None = None
    #: The device's room, learned from the site's alerts naming both (readings do not carry it).
    room: str | None = None


class EdgeHealth(_Model):
    agent: str
    online: bool
    ts: int | None = None


class RecordsHeadState(_Model):
    """The site's latest signed day head as the centre checked it."""

    day: str
    seq: int
    hash: str
    signed_ts: int
    key_id: str
    #: Signature checked against the site's public key, and no step back from the previous head.
    verified: bool
    #: Why not verified (bad signature, unknown key, seq went back, same day re-signed differently).
    problem: str | None = None
    received_ms: int


class LinkState(_Model):
    """The leaf node link as the central stream's source reports it (JetStream's own figures)."""

    up: bool = True
    #: Centre clock when the link was last seen down-going (None: up since the worker started).
    down_since_ms: int | None = None
    #: Messages the site holds that the centre has not sourced yet (``sources[].lag``).
    pending: int = 0
    #: Centre clock of the last check.
    checked_ms: int | None = None


class SiteState(_Model):
    site: str
    partition: int
    #: Sequence in the partition stream of the last message applied (replays at or below it are skipped).
    last_seq: int = 0
    #: Centre clock when the worker last applied a message of this site.
    last_arrival_ms: int | None = None
    #: Site clock of the newest message applied (readings', statuses', heartbeats' ``ts``).
    last_msg_ts: int | None = None
    #: ``last_arrival_ms - ts`` of the last message that carried a time: how far behind the centre is.
    lag_ms: int | None = None
    #: Site time of the last gateway heartbeat, and whether it said online.
    gateway_ts: int | None = None
    gateway_online: bool | None = None
    link: LinkState = Field(default_factory=LinkState)
    alerts: dict[str, OpenAlert] = Field(default_factory=dict)
    devices: dict[str, DeviceHealth] = Field(default_factory=dict)
    edges: dict[str, EdgeHealth] = Field(default_factory=dict)
    records: RecordsHeadState | None = None
    #: The last head that verified: what the next one is compared with (a forged one never becomes it).
    records_good: RecordsHeadState | None = None
    #: Air-quality compliance: month ``YYYY-MM`` (site time zone) → room → rule (co2, pm25,
    #: temperature, humidity) → seconds an alert of that rule was active in that room (resolved ones;
    #: the board adds the running time of active ones).
    air_over_s: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    #: Month → room → seconds of air readings seen (what the over-time is a share of): the gap to the
    #: device's previous air reading, at most ``AIR_GAP_MAX_S``; keyed by the device id until an alert
    #: of the device names its room.
    air_observed_s: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: Ids of the resolved air alerts already added to ``air_over_s`` (the newest few hundred), so a
    #: resolution seen twice (unacknowledged, then acknowledged; a retained copy again) counts once.
    air_counted: list[str] = Field(default_factory=list)
    readings: int = 0
    #: Messages refused (reason → count): bad payload, a subject of another site, …
    rejected: dict[str, int] = Field(default_factory=dict)
