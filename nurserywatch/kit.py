"""The kit file: one YAML document describing a site — rooms, edge agents, devices, children and
which device watches which child. Validated on load; the problems become one KitError, a line each
naming the file, the item (a device by its id) and line, and what was expected (the CLI prints it
and exits with code 2)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from nurserywatch.clock import time_zone
from nurserywatch.contract import IDENT_RE, Stream
from nurserywatch.yaml_files import Loc, Problem, Problems, load_yaml_model

Ident = Annotated[str, Field(pattern=IDENT_RE.pattern)]


class KitError(Exception):
    """A kit file that cannot be used. ``str()`` is the one message shown to the integrator."""


class DeviceKind(StrEnum):
    NAP_MAT = "nap_mat"
    POSTURE_CLIP = "posture_clip"
    THERMOMETER = "thermometer"
    AIR_BLE = "air_ble"
    PMS5003 = "pms5003"
    MHZ19B = "mhz19b"
    SENSEAIR_S8 = "senseair_s8"


#: The reading streams each kind of device may publish (the gateway rejects anything else).
STREAMS_BY_KIND: dict[DeviceKind, frozenset[Stream]] = {
    DeviceKind.NAP_MAT: frozenset({Stream.BREATHING, Stream.WAVEFORM}),
    DeviceKind.POSTURE_CLIP: frozenset({Stream.POSTURE}),
    DeviceKind.THERMOMETER: frozenset({Stream.BODY_TEMP}),
    DeviceKind.AIR_BLE: frozenset({Stream.AIR}),
    DeviceKind.PMS5003: frozenset({Stream.AIR}),
    DeviceKind.MHZ19B: frozenset({Stream.AIR}),
    DeviceKind.SENSEAIR_S8: frozenset({Stream.AIR}),
}

#: Serial speed when the kit does not give one. The air sensors only ever talk at 9600 baud.
DEFAULT_BAUD: dict[DeviceKind, int] = {
    DeviceKind.NAP_MAT: 115200,
    DeviceKind.POSTURE_CLIP: 115200,
    DeviceKind.PMS5003: 9600,
    DeviceKind.MHZ19B: 9600,
    DeviceKind.SENSEAIR_S8: 9600,
}
FIXED_BAUD = frozenset({DeviceKind.PMS5003, DeviceKind.MHZ19B, DeviceKind.SENSEAIR_S8})

#: How each kind can be connected (a BLE thermometer has no serial port, a UART sensor no radio).
TRANSPORTS_BY_KIND: dict[DeviceKind, frozenset[str]] = {
    DeviceKind.NAP_MAT: frozenset({"serial", "ble"}),
    DeviceKind.POSTURE_CLIP: frozenset({"serial", "ble"}),
    DeviceKind.THERMOMETER: frozenset({"ble"}),
    DeviceKind.AIR_BLE: frozenset({"ble"}),
    DeviceKind.PMS5003: frozenset({"serial"}),
    DeviceKind.MHZ19B: frozenset({"serial"}),
    DeviceKind.SENSEAIR_S8: frozenset({"serial"}),
}

#: Devices that watch one child and must therefore be bound to one.
CHILD_DEVICES = frozenset({DeviceKind.NAP_MAT, DeviceKind.POSTURE_CLIP, DeviceKind.THERMOMETER})


class AgeBand(StrEnum):
    """Age bands of the nap-check rules: 0 years, 1–2 years, 3 years and older."""

    INFANT = "0"
    TODDLER = "1-2"
    PRESCHOOL = "3+"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SerialTransport(_Strict):
    type: Literal["serial"]
    port: Annotated[str, Field(min_length=1)]
    baud: Annotated[int, Field(gt=0)] = 115200


class BleTransport(_Strict):
    type: Literal["ble"]
    address: Annotated[str, Field(pattern=r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$")]
    #: BTHome encryption key (AES-CCM, 16 bytes as 32 hex digits), for encrypted advertisements.
    bindkey: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{32}$")] | None = None


Transport = Annotated[SerialTransport | BleTransport, Field(discriminator="type")]


_CLOCK_RE = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class NapWindow(_Strict):
    """A daily nap time of a room, in the site's local time. ``end`` before ``start`` crosses midnight."""

    start: Annotated[str, Field(pattern=_CLOCK_RE)]
    end: Annotated[str, Field(pattern=_CLOCK_RE)]

    @field_validator("start", "end", mode="before")
    @classmethod
    def _sexagesimal(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted 12:30 as the base-60 integer 750: take it back as minutes.
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            return f"{value // 60:02d}:{value % 60:02d}"
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> NapWindow:
        if self.start == self.end:
            raise ValueError(f"end: {self.end!r} equals start; a nap window needs a length")
        return self

    @property
    def start_time(self) -> time:
        return time.fromisoformat(self.start)

    @property
    def end_time(self) -> time:
        return time.fromisoformat(self.end)


class Room(_Strict):
    id: Ident
    name: str
    #: Nap sessions the gateway starts and stops by itself (staff can always start/stop by hand).
    nap_schedule: list[NapWindow] = Field(default_factory=list)


class SpoolConfig(_Strict):
    """The edge's on-disk store-and-forward queue: where, and how much to keep while the broker is
    unreachable. At either bound the oldest readings are dropped (and counted)."""

    #: Relative paths are taken relative to the kit file's folder.
    path: Annotated[str, Field(min_length=1)] = "nurserywatch-spool.sqlite3"
    max_bytes: Annotated[int, Field(ge=1 << 20)] = 256 << 20
    max_age_s: Annotated[int, Field(ge=60)] = 7 * 24 * 3600


class Agent(_Strict):
    id: Ident
    spool: SpoolConfig = Field(default_factory=SpoolConfig)


class StorageConfig(_Strict):
    """Where the gateway keeps readings (docs/storage.md). Alerts, sessions and records always stay in
    the gateway's SQLite; with ``readings: influxdb`` readings go to InfluxDB as well."""

    readings: Literal["sqlite", "influxdb"] = "sqlite"
    #: InfluxDB's base URL, e.g. http://127.0.0.1:8086 (required for influxdb).
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")] | None = None
    #: v1: /write (InfluxDB 1.x); v2: /api/v2/write (2.x, 3.x, 1.8+); auto: from /ping's version header.
    api: Literal["v1", "v2", "auto"] = "auto"
    #: v1 database, also what InfluxQL trend queries name (2.x: through a DBRP mapping).
    database: Annotated[str, Field(min_length=1, max_length=64)] = "nurserywatch"
    org: str | None = None
    bucket: str | None = None
    #: The API token is read from this environment variable (tokens do not belong in the kit file).
    token_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "NURSERYWATCH_INFLUX_TOKEN"
    #: The on-disk buffer while InfluxDB is unreachable; relative to the kit file's folder. At the
    #: bound the oldest lines are dropped and counted (the gateway's SQLite keeps every reading).
    buffer_path: Annotated[str, Field(min_length=1)] = "nurserywatch-influx-buffer.sqlite3"
    buffer_max_lines: Annotated[int, Field(ge=1000)] = 2_000_000
    batch_lines: Annotated[int, Field(ge=1, le=100_000)] = 5000
    batch_ms: Annotated[int, Field(ge=10, le=60_000)] = 1000

    @model_validator(mode="after")
    def _check(self) -> StorageConfig:
        if self.readings == "influxdb" and self.url is None:
            raise ValueError("url: readings: influxdb needs the database's URL, e.g. http://127.0.0.1:8086")
        if self.api == "v2" and not (self.org and self.bucket):
            raise ValueError("org, bucket: the v2 write API needs both")
        return self


class RetentionConfig(_Strict):
    """How long the gateway keeps each kind of data, in days (docs/storage.md, "Retention"). Children's
    data is kept no longer than needed; nap-check records are kept long because municipalities audit
    them. Enforced hourly by the gateway (gateway/retention/policy.py) and, for readings, by InfluxDB."""

    #: Raw readings (SQLite; InfluxDB's retention policy). Trends older than this come from rollups.
    readings_raw_days: Annotated[int, Field(ge=1, le=36500)] = 30
    #: 15-minute rollups (count/sum/min/max per device, stream and field): a year of trends, and more.
    readings_downsampled_days: Annotated[int, Field(ge=1, le=36500)] = 400
    #: Alerts and their audit log of transitions, counted from when the alert was resolved.
    alerts_days: Annotated[int, Field(ge=1, le=36500)] = 400
    #: The nap-session log (starts and stops).
    nap_sessions_days: Annotated[int, Field(ge=1, le=36500)] = 400
    #: Nap-check records (午睡チェック表): whole local days, pruned behind a chained anchor entry.
    records_days: Annotated[int, Field(ge=1, le=36500)] = 5 * 366
    #: Lines waiting in the InfluxDB on-disk buffer (InfluxDB would drop them past its retention).
    #: Default: 7, or readings_raw_days when that is shorter.
    influx_buffer_days: Annotated[int, Field(ge=1, le=36500)] | None = None

    @model_validator(mode="after")
    def _check(self) -> RetentionConfig:
        if self.readings_downsampled_days < self.readings_raw_days:
            raise ValueError(
                f"readings_downsampled_days: {self.readings_downsampled_days} is shorter than readings_raw_days "
                f"({self.readings_raw_days}); the rollups must outlive the raw readings they summarise"
            )
        if self.influx_buffer_days is not None and self.influx_buffer_days > self.readings_raw_days:
            raise ValueError(
                f"influx_buffer_days: {self.influx_buffer_days} is longer than readings_raw_days "
                f"({self.readings_raw_days}); InfluxDB would drop such lines anyway"
            )
        return self

    @property
    def influx_buffer_keep_days(self) -> int:
        return self.influx_buffer_days if self.influx_buffer_days is not None else min(7, self.readings_raw_days)


#: A host as a kit names it: a DNS name or an IP address (nurserywatch kit provision checks it further).
HostName = Annotated[str, Field(pattern=r"^[A-Za-z0-9.:_-]{1,253}$")]
Port = Annotated[int, Field(ge=1, le=65535)]


class NatsNode(_Strict):
    """One node of the site's NATS cluster: where the parts reach it and its three listeners."""

    name: Ident
    #: The name or address the other nodes and the parts use to reach it (in its TLS certificate).
    host: HostName
    #: The address its listeners bind on; None: every interface.
    bind: HostName | None = None
    #: NATS clients (the gateway's JetStream consumer, lease and journal).
    client_port: Port = 4222
    #: Routes between the nodes.
    cluster_port: Port = 6222
    #: MQTT over TLS (edge agents, the dashboard, the gateway's alerts).
    mqtt_port: Port = 8883
    #: Monitoring (/healthz, /jsz), on the node's loopback only.
    monitor_port: Port = 8222


class NatsFleetLink(_Strict):
    """The site's link to a fleet's centre (docs/fleet.md, "Transport"): its NATS cluster becomes a leaf
    node of the central cluster, in JetStream domain ``site-{site}``."""

    #: Every central node's leaf node URL (``nats-leaf://host:7422``, or ``tls://`` …), without a user.
    leaf_urls: Annotated[
        list[Annotated[str, Field(pattern=r"^(nats-leaf|tls)://[A-Za-z0-9.:_\[\]-]+$")]], Field(min_length=1)
    ]
    #: The environment variable holding the site's password at the centre when the kit is provisioned
    #: (the centre's operator issues it; never in the kit file).
    password_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]{0,63}$")] = "NURSERYWATCH_FLEET_PASSWORD"
    #: The CA of the central nodes' leaf node certificate, a path on the site's nodes; None: the system's.
    ca_file: Annotated[str, Field(pattern=r"^/[^\"]*$")] | None = None


class NatsClusterConfig(_Strict):
    """A NATS cluster of three nodes as the site's broker instead of one Mosquitto (docs/deploy.md,
    "NATS cluster"): JetStream keeps three copies of everything, so any one node may fail."""

    #: The cluster's name (the nodes refuse routes from another); default ``nurserywatch-{site}``.
    name: Ident | None = None
    nodes: Annotated[list[NatsNode], Field(min_length=3, max_length=3)]
    #: None: the site is not part of a fleet.
    fleet: NatsFleetLink | None = None

    @model_validator(mode="after")
    def _check(self) -> NatsClusterConfig:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"nodes: names must be unique (got {', '.join(names)})")
        taken: dict[tuple[str, int], str] = {}
        for n in self.nodes:
            for what, port in (("client_port", n.client_port), ("cluster_port", n.cluster_port),
                               ("mqtt_port", n.mqtt_port), ("monitor_port", n.monitor_port)):  # fmt: skip
                key = (n.bind or n.host, port)
                if (other := taken.setdefault(key, f"{n.name}.{what}")) != f"{n.name}.{what}":
                    raise ValueError(f"nodes: {n.name}.{what} {port} on {key[0]} is already {other}")
        return self


#: An MQTT topic (filter-free) of one or more levels, e.g. ``homeassistant``.
MqttTopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length=128)]


class HomeAssistantRoom(_Strict):
    #: Also the children's breathing, presence on the mat, posture and body temperature. Off by
    #: default: children's health data then leaves the nursery's own system (docs/integrations.md).
    children: bool = False


class HomeAssistantConfig(_Strict):
    """Home Assistant MQTT discovery (docs/integrations.md, "Home Assistant"), published by
    ``nurserywatch home-assistant``. Off unless ``enabled``."""

    enabled: bool = False
    #: Home Assistant's discovery prefix (its MQTT setting of the same name).
    discovery_prefix: MqttTopicName = "homeassistant"
    #: Where Home Assistant announces itself ("online"): the configs are published again then.
    birth_topic: MqttTopicName = "homeassistant/status"
    #: Per room: what more than the air, the devices' state and the room's alerts goes to Home Assistant.
    rooms: dict[Ident, HomeAssistantRoom] = Field(default_factory=dict)


class Child(_Strict):
    id: Ident
    #: Shown on the dashboard only; never sent over MQTT.
    nickname: str | None = None
    age_band: AgeBand
    room: Ident


class Device(_Strict):
    id: Ident
    kind: DeviceKind
    room: Ident
    agent: Ident
    transport: Transport
    child: Ident | None = None
    #: A nap mat's scale: ADC counts per kg of load (docs/devices.md). None: the nominal ~1 count per
    #: gram is assumed. The edge derives its weight step (a child lying down) from it.
    counts_per_kg: Annotated[float, Field(gt=0, le=1_000_000)] | None = None

    @model_validator(mode="after")
    def _check_counts_per_kg(self) -> Device:
        if self.counts_per_kg is not None and self.kind is not DeviceKind.NAP_MAT:
            raise ValueError(f"counts_per_kg: only a nap_mat has a weight scale, not a {self.kind.value}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_baud(cls, data: Any) -> Any:
        # The right speed depends on the kind, so a missing baud is filled in from the kind.
        if isinstance(data, dict) and isinstance(data.get("transport"), dict):
            transport = data["transport"]
            if transport.get("type") == "serial" and "baud" not in transport:
                try:
                    default = DEFAULT_BAUD.get(DeviceKind(str(data.get("kind"))), 115200)
                except ValueError:
                    default = 115200  # the kind itself is wrong; that error is reported instead
                data = {**data, "transport": {**transport, "baud": default}}
        return data

    @model_validator(mode="after")
    def _check_transport(self) -> Device:
        allowed = TRANSPORTS_BY_KIND[self.kind]
        if self.transport.type not in allowed:
            raise ValueError(
                f"transport.type: a {self.kind.value} connects over {' or '.join(sorted(allowed))}, "
                f"not {self.transport.type}"
            )
        keyed = isinstance(self.transport, BleTransport) and self.transport.bindkey
        if keyed and self.kind is not DeviceKind.AIR_BLE:
            raise ValueError(f"transport.bindkey: only BTHome air sensors (air_ble) use one, not a {self.kind.value}")
        return self

    @model_validator(mode="after")
    def _check_baud(self) -> Device:
        if isinstance(self.transport, SerialTransport) and self.kind in FIXED_BAUD:
            fixed = DEFAULT_BAUD[self.kind]
            if self.transport.baud != fixed:
                raise ValueError(
                    f"transport.baud: a {self.kind.value} talks at {fixed} baud only (got {self.transport.baud})"
                )
        return self


class Kit(_Strict):
    site: Ident
    name: str
    #: IANA time zone of the site: nap schedules are local times.
    timezone: str = "Asia/Tokyo"
    rooms: Annotated[list[Room], Field(min_length=1)]
    agents: Annotated[list[Agent], Field(min_length=1)]
    devices: list[Device] = Field(default_factory=list)
    children: list[Child] = Field(default_factory=list)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    #: The site's broker is a NATS cluster (None: one Mosquitto, the default).
    nats: NatsClusterConfig | None = None
    home_assistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    _base_dir: Path | None = PrivateAttr(default=None)
    _indexes: dict[str, tuple[list[Any], dict[str, Any]]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_references(self, info: ValidationInfo) -> Kit:
        # Every problem at once (not the first): an integrator fixes a whole kit in one round.
        problems: list[Problem] = []
        try:
            time_zone(self.timezone)
        except ValueError as exc:
            problems.append(Problem(("timezone",), str(exc)))
        room_ids = _unique(self.rooms, "rooms", problems)
        agent_ids = _unique(self.agents, "agents", problems)
        child_ids = _unique(self.children, "children", problems)
        _unique(self.devices, "devices", problems)
        for room_id in self.home_assistant.rooms:
            _ref(room_id, room_ids, ("home_assistant", "rooms", room_id), "a room id", problems)
        for i, c in enumerate(self.children):
            _ref(c.room, room_ids, ("children", i, "room"), "a room id", problems)
        bound: dict[tuple[str, DeviceKind], int] = {}
        for i, d in enumerate(self.devices):
            _ref(d.room, room_ids, ("devices", i, "room"), "a room id", problems)
            _ref(d.agent, agent_ids, ("devices", i, "agent"), "an agent id", problems)
            if d.child is None:
                continue
            where = ("devices", i, "child")
            if d.child not in child_ids:
                _ref(d.child, child_ids, where, "a child id", problems)
            elif d.kind not in CHILD_DEVICES:
                problems.append(Problem(where, f"a {d.kind.value} watches a room, not a child"))
            elif (first := bound.setdefault((d.child, d.kind), i)) != i:
                other = self.devices[first].id
                problems.append(Problem(where, f"child {d.child!r} already has a {d.kind.value} ({other!r})",
                                        also=("devices", first)))  # fmt: skip
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        _shared_transports(self.devices, base if isinstance(base, Path) else None, problems)
        if problems:
            raise Problems(problems)
        return self

    # -- lookups used by every part

    def room(self, room_id: str) -> Room | None:
        return self._by_id("rooms").get(room_id)

    def device(self, device_id: str) -> Device | None:
        return self._by_id("devices").get(device_id)

    def child(self, child_id: str) -> Child | None:
        return self._by_id("children").get(child_id)

    def _by_id(self, field: str) -> dict[str, Any]:
        # A dict built once per list: every reading of every device asks (1,300 devices: the linear
        # search was 16 % of the dashboard's busy time at 10x load, bench/README.md "Alert latency").
        items = getattr(self, field)
        index = self._indexes.get(field)
        if index is None or index[0] is not items or len(index[1]) != len(items):
            index = self._indexes[field] = (items, {item.id: item for item in items})
        return index[1]

    def devices_of_agent(self, agent_id: str) -> list[Device]:
        return [d for d in self.devices if d.agent == agent_id]

    def agent(self, agent_id: str) -> Agent | None:
        return self._by_id("agents").get(agent_id)

    def resolve_port(self, port: str) -> str:
        """Relative paths (serial ports, spool files) are taken relative to the kit file's folder."""
        p = Path(port)
        if p.is_absolute() or self._base_dir is None:
            return str(p)
        return str(self._base_dir / p)


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


def _unique(items: Sequence[_HasId], field: str, problems: list[Problem]) -> set[str]:
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        if (j := first.setdefault(item.id, i)) != i:
            message = f"{item.id!r} is used twice; ids must be unique"
            problems.append(Problem((field, i, "id"), message, also=(field, j)))
    return set(first)


def _ref(value: str, known: set[str], where: Loc, what: str, problems: list[Problem]) -> None:
    if value not in known:
        choices = ", ".join(sorted(known)) or "none defined"
        problems.append(Problem(where, f"{value!r} is not {what} defined in this kit (known: {choices})"))


def _shared_transports(devices: Sequence[Device], base_dir: Path | None, problems: list[Problem]) -> None:
    """Two devices on one serial port of one agent (each would read half the other's bytes), or one
    Bluetooth address twice (one sensor's readings credited to two devices)."""
    taken: dict[tuple[str, ...], int] = {}
    for i, d in enumerate(devices):
        t = d.transport
        if isinstance(t, SerialTransport):
            # Same folder for every relative path, so comparing normalised paths is enough without
            # the file's folder; symlinks (/dev/serial/by-id/…) are the Pi's, not resolvable here.
            port = Path(os.path.normpath(t.port if base_dir is None else base_dir / t.port))
            key: tuple[str, ...] = ("serial", d.agent, str(port))
            what = f"serial port {t.port!r} of agent {d.agent!r}"
            where: Loc = ("devices", i, "transport", "port")
        else:
            key, what = ("ble", t.address.upper()), f"Bluetooth address {t.address.upper()}"
            where = ("devices", i, "transport", "address")
        if (first := taken.setdefault(key, i)) != i:
            problems.append(Problem(where, f"{what} is already device {devices[first].id!r}'s; one device per "
                                           f"{'port' if key[0] == 'serial' else 'address'}", also=("devices", first)))


#: Error messages name a kit's items by id: ``device "mat-06" (line 42)`` rather than ``devices[5]``.
KIT_LABELS = {"rooms": "room", "agents": "agent", "devices": "device", "children": "child"}


def load_kit(path: str | Path) -> Kit:
    """Read and validate a kit file. Raises KitError listing every problem, one per line."""
    base_dir = Path(path).resolve().parent
    kit = load_yaml_model(path, Kit, KitError, example="configs/kit.example.yaml", labels=KIT_LABELS,
                          context={"base_dir": base_dir})  # fmt: skip
    kit._base_dir = base_dir
    return kit
