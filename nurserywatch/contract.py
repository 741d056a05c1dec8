"""The MQTT contract v1: topics and payload models shared by edge, gateway and dashboard.

This module is the single source of truth for what travels over MQTT (documented in
docs/contract.md). It is pure: no I/O, no clock.

Topic layout, root ``nurserywatch/v1/{site}``::

    reading/{device}/{stream}   QoS 1, not retained   a Reading* payload
    status/{device}             QoS 1, retained       DeviceStatus
    edge/{agent}                QoS 1, retained       EdgeStatus (+ last will {"online": false})
    alert/{alert_id}            QoS 1, retained while not (resolved and acknowledged)   Alert
    escalation/{alert_id}       QoS 1, retained while escalated, active and unacknowledged   Alert
    session/{room}              QoS 1, retained       SessionState (nap session of a room)
    command/ack                 QoS 1, not retained   AckCommand
    command/session             QoS 1, not retained   SessionCommand
    command/record              QoS 1, not retained   RecordCommand (confirm / correct a nap-check record)
    gateway                     QoS 1, retained       GatewayStatus: heartbeat ~1 s (+ last will {"online": false})
    assignment/{device}         QoS 1, retained       DeviceAssignment (which child a mat or clip watches today)
    command/assign              QoS 1, not retained   AssignCommand (staff assign a child to a mat / clip for today)
    records/head                QoS 1, retained       RecordsHead: the nap-check records' latest signed day head
    room_alerts/{room}          QoS 1, retained       RoomAlerts: a room's open alerts summed up (Home Assistant bridge)
    bridge/{name}               QoS 1, retained       BridgeStatus: a bridge to another system (+ last will)
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

VERSION = "v1"
ROOT = "nurserywatch"
IDENT_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
#: Largest payload any part accepts; bigger ones are rejected before JSON parsing.
MAX_PAYLOAD_BYTES = 64 * 1024

Ident = Annotated[str, Field(pattern=IDENT_RE.pattern)]
UnixMs = Annotated[int, Field(ge=0, le=32503680000000)]  # up to year 3000


class ContractError(ValueError):
    """A topic or payload that does not follow the contract. ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_ident(value: str, what: str = "identifier") -> str:
    if not IDENT_RE.fullmatch(value):
        raise ContractError("bad_identifier", f"{what} {value!r} must match [a-z0-9_-]{{1,64}}")
    return value


# ---------------------------------------------------------------- topics


class Stream(StrEnum):
    BREATHING = "breathing"
    POSTURE = "posture"
    BODY_TEMP = "body_temp"
    AIR = "air"
    WAVEFORM = "waveform"


class TopicKind(StrEnum):
    READING = "reading"
    STATUS = "status"
    EDGE = "edge"
    ALERT = "alert"
    COMMAND_ACK = "command_ack"
    ESCALATION = "escalation"
    SESSION = "session"
    COMMAND_SESSION = "command_session"
    COMMAND_RECORD = "command_record"
    GATEWAY = "gateway"
    ASSIGNMENT = "assignment"
    COMMAND_ASSIGN = "command_assign"
    RECORDS_HEAD = "records_head"
    ROOM_ALERTS = "room_alerts"
    BRIDGE = "bridge"


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic. Fields that the kind does not use are None."""

    site: str
    kind: TopicKind
    device: str | None = None
    stream: Stream | None = None
    agent: str | None = None
    alert_id: str | None = None
    room: str | None = None
    #: BRIDGE: the bridge's name (``home_assistant``).
    bridge: str | None = None


def site_root(site: str) -> str:
    return f"{ROOT}/{VERSION}/{check_ident(site, 'site')}"


def reading_topic(site: str, device: str, stream: Stream | str) -> str:
    return f"{site_root(site)}/reading/{check_ident(device, 'device')}/{Stream(stream).value}"


def status_topic(site: str, device: str) -> str:
    return f"{site_root(site)}/status/{check_ident(device, 'device')}"


def edge_topic(site: str, agent: str) -> str:
    return f"{site_root(site)}/edge/{check_ident(agent, 'agent')}"


def alert_topic(site: str, alert_id: str) -> str:
    return f"{site_root(site)}/alert/{check_ident(alert_id, 'alert id')}"


def ack_topic(site: str) -> str:
    return f"{site_root(site)}/command/ack"


def escalation_topic(site: str, alert_id: str) -> str:
    return f"{site_root(site)}/escalation/{check_ident(alert_id, 'alert id')}"


def session_topic(site: str, room: str) -> str:
    return f"{site_root(site)}/session/{check_ident(room, 'room')}"


def session_command_topic(site: str) -> str:
    return f"{site_root(site)}/command/session"


def record_command_topic(site: str) -> str:
    return f"{site_root(site)}/command/record"


def gateway_topic(site: str) -> str:
    return f"{site_root(site)}/gateway"


def assignment_topic(site: str, device: str) -> str:
    return f"{site_root(site)}/assignment/{check_ident(device, 'device')}"


def assign_command_topic(site: str) -> str:
    return f"{site_root(site)}/command/assign"


def records_head_topic(site: str) -> str:
    return f"{site_root(site)}/records/head"


def room_alerts_topic(site: str, room: str) -> str:
    return f"{site_root(site)}/room_alerts/{check_ident(room, 'room')}"


def bridge_topic(site: str, name: str) -> str:
    return f"{site_root(site)}/bridge/{check_ident(name, 'bridge')}"


def subscription(site: str, kind: TopicKind) -> str:
    """The wildcard filter that matches every topic of one kind at a site."""
    root = site_root(site)
    return {
        TopicKind.READING: f"{root}/reading/+/+",
        TopicKind.STATUS: f"{root}/status/+",
        TopicKind.EDGE: f"{root}/edge/+",
        TopicKind.ALERT: f"{root}/alert/+",
        TopicKind.COMMAND_ACK: f"{root}/command/ack",
        TopicKind.ESCALATION: f"{root}/escalation/+",
        TopicKind.SESSION: f"{root}/session/+",
        TopicKind.COMMAND_SESSION: f"{root}/command/session",
        TopicKind.COMMAND_RECORD: f"{root}/command/record",
        TopicKind.GATEWAY: f"{root}/gateway",
        TopicKind.ASSIGNMENT: f"{root}/assignment/+",
        TopicKind.COMMAND_ASSIGN: f"{root}/command/assign",
        TopicKind.RECORDS_HEAD: f"{root}/records/head",
        TopicKind.ROOM_ALERTS: f"{root}/room_alerts/+",
        TopicKind.BRIDGE: f"{root}/bridge/+",
    }[kind]


def parse_topic(topic: str) -> Topic:
    """Parse a contract topic; raises ContractError(reason='bad_topic'|'bad_identifier')."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != ROOT or parts[1] != VERSION:
        raise ContractError("bad_topic", f"{topic!r} is not under {ROOT}/{VERSION}/{{site}}")
    site = check_ident(parts[2], "site")
    rest = parts[3:]
    match rest:
        case ["reading", device, stream]:
            try:
                st = Stream(stream)
            except ValueError:
                raise ContractError("bad_topic", f"unknown stream {stream!r} in {topic!r}") from None
            return Topic(site, TopicKind.READING, device=check_ident(device, "device"), stream=st)
        case ["status", device]:
            return Topic(site, TopicKind.STATUS, device=check_ident(device, "device"))
        case ["edge", agent]:
            return Topic(site, TopicKind.EDGE, agent=check_ident(agent, "agent"))
        case ["alert", alert_id]:
            return Topic(site, TopicKind.ALERT, alert_id=check_ident(alert_id, "alert id"))
        case ["command", "ack"]:
            return Topic(site, TopicKind.COMMAND_ACK)
        case ["escalation", alert_id]:
            return Topic(site, TopicKind.ESCALATION, alert_id=check_ident(alert_id, "alert id"))
        case ["session", room]:
            return Topic(site, TopicKind.SESSION, room=check_ident(room, "room"))
        case ["command", "session"]:
            return Topic(site, TopicKind.COMMAND_SESSION)
        case ["command", "record"]:
            return Topic(site, TopicKind.COMMAND_RECORD)
        case ["gateway"]:
            return Topic(site, TopicKind.GATEWAY)
        case ["assignment", device]:
            return Topic(site, TopicKind.ASSIGNMENT, device=check_ident(device, "device"))
        case ["command", "assign"]:
            return Topic(site, TopicKind.COMMAND_ASSIGN)
        case ["records", "head"]:
            return Topic(site, TopicKind.RECORDS_HEAD)
        case ["room_alerts", room]:
            return Topic(site, TopicKind.ROOM_ALERTS, room=check_ident(room, "room"))
        case ["bridge", name]:
            return Topic(site, TopicKind.BRIDGE, bridge=check_ident(name, "bridge"))
    raise ContractError("bad_topic", f"{topic!r} is not a v1 topic")


#: Topics that carry retained state. An empty payload on one is how MQTT deletes the retained message
#: (the broker passes it on to subscribers too): "state cleared", never a payload to judge or reject.
RETAINED_KINDS = frozenset({TopicKind.STATUS, TopicKind.EDGE, TopicKind.ALERT, TopicKind.ESCALATION,
                            TopicKind.SESSION, TopicKind.GATEWAY, TopicKind.ASSIGNMENT,
                            TopicKind.RECORDS_HEAD, TopicKind.ROOM_ALERTS, TopicKind.BRIDGE})  # fmt: skip


def is_cleared(kind: TopicKind, payload: bytes | str) -> bool:
    """Whether this message deletes the retained state of its topic (an empty payload on one of
    RETAINED_KINDS). An empty payload anywhere else (a reading, a command) is ``bad_json``."""
    return not payload and kind in RETAINED_KINDS


# ---------------------------------------------------------------- payloads


#: Payloads this long at most are first validated by pydantic alone (``_Payload.from_json``).
_FAST_MAX_BYTES = 4000


def _non_finite(payload: bytes | str) -> bool:
    """Whether ``payload`` may hold NaN / Infinity, which json.loads is told to refuse and pydantic's
    parser takes."""
    if isinstance(payload, str):
        return "NaN" in payload or "Infinity" in payload
    return b"NaN" in payload or b"Infinity" in payload


class _Payload(BaseModel):
    # Unknown fields are ignored (forward compatible); wrong types and NaN are rejected.
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False, strict=False)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Self:
        """Decode and validate what arrived over MQTT; raises ContractError (size, UTF-8, JSON: the
        reasons of ``_load_json``) or ValidationError (``decode`` makes it ``invalid_payload``).

        Strict JSON types (docs/contract.md): pydantic's strict mode on the JSON itself, so no
        coercion — ``"ts": "1767225600000"``, ``"co2_ppm": "500"``, ``"seq": true``, ``"present": 1``
        or ``"ts": 1.7e12`` are refused — while a JSON int is taken for a float field, an enum from
        its string value and a fixed-length tuple from an array (what JSON can say). Python code
        building models stays lax: strictness is about the wire."""
        if len(payload) <= _FAST_MAX_BYTES and not _non_finite(payload):
            # pydantic's JSON parser accepts what json.loads accepts, but NaN / Infinity (ruled out just
            # above) and integers of more than 4300 digits (a shorter payload has none): a payload it
            # takes passes the contract's checks too, which cost four times the validation
            # (bench/README.md, issue 17). What it refuses goes through those checks for their reason.
            with contextlib.suppress(ValidationError):
                return cls.model_validate_json(payload, strict=True)
        _load_json(payload)  # the contract's own checks first: its reasons, and NaN/Infinity refused
        return cls.model_validate_json(payload, strict=True)


#: SQLite's INTEGER is 64-bit signed: a larger seq or record entry could not even be looked up.
SQLITE_INT_MAX = 2**63 - 1


class _Reading(_Payload):
    ts: UnixMs
    seq: Annotated[int, Field(ge=0, le=SQLITE_INT_MAX)]


Unit = Annotated[float, Field(ge=0.0, le=1.0)]
#: How far a reading's times may be ahead of the receiver's clock. Clocks differ a little; a time
#: far ahead is a wrong clock or a forgery, and would do harm: the rules take a reading older than
#: the newest as stale, and time an apnea from the latest last_breath_ts (see ``time_ahead``).
MAX_AHEAD_MS = 60_000


class BreathingReading(_Reading):
    rate_bpm: Annotated[float, Field(ge=0, le=200)] | None = None
    amplitude: float | None = None
    motion: Unit | None = None
    present: bool | None = None
    quality: Unit | None = None
    last_breath_ts: UnixMs | None = None


class Position(StrEnum):
    SUPINE = "supine"
    PRONE = "prone"
    LEFT = "left"
    RIGHT = "right"
    UPRIGHT = "upright"
    UNKNOWN = "unknown"


class PostureReading(_Reading):
    position: Position
    accel_mg: tuple[int, int, int] | None = None


class BodyTempReading(_Reading):
    celsius: Annotated[float, Field(ge=20, le=45)]


class AirReading(_Reading):
    co2_ppm: Annotated[float, Field(ge=0, le=100000)] | None = None
    pm25_ugm3: Annotated[float, Field(ge=0, le=10000)] | None = None
    pm10_ugm3: Annotated[float, Field(ge=0, le=10000)] | None = None
    temp_c: Annotated[float, Field(ge=-40, le=85)] | None = None
    rh_pct: Annotated[float, Field(ge=0, le=100)] | None = None


class WaveformReading(_Reading):
    fs_hz: Annotated[float, Field(gt=0, le=10000)]
    t0: UnixMs
    samples: list[int]


Reading = BreathingReading | PostureReading | BodyTempReading | AirReading | WaveformReading

READING_MODELS: dict[Stream, type[_Reading]] = {
    Stream.BREATHING: BreathingReading,
    Stream.POSTURE: PostureReading,
    Stream.BODY_TEMP: BodyTempReading,
    Stream.AIR: AirReading,
    Stream.WAVEFORM: WaveformReading,
}


def parse_reading(stream: Stream, payload: bytes | str) -> Reading:
    """Validate a reading payload for ``stream``; every failure becomes a ContractError."""
    return decode(READING_MODELS[stream], payload)  # type: ignore[return-value]


class DeviceStatus(_Payload):
    ts: UnixMs
    online: bool
    battery_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    rssi_dbm: Annotated[float, Field(ge=-150, le=20)] | None = None
    #: The device's room in the kit, filled in by the edge (added in v1, optional for readers): the
    #: centre, which has no kit, needs it for per-room figures; the site's parts go by their kit.
    room: Ident | None = None


class EdgeStatus(_Payload):
    # ts and version are absent in the last will, which the broker sends for a dead agent.
    ts: UnixMs | None = None
    online: bool
    version: str | None = None
    devices: list[Ident] = Field(default_factory=list)
    #: False while the agent's wall clock is not yet plausible (no RTC, no NTP sync yet): it then
    #: holds readings instead of publishing wrong timestamps. None: not reported.
    clock_ok: bool | None = None


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class AlertState(StrEnum):
    ACTIVE = "active"
    RESOLVED = "resolved"


class Alert(_Payload):
    id: Ident
    rule: Ident
    severity: Severity
    state: AlertState
    acknowledged: bool = False
    acknowledged_by: str | None = None
    acknowledged_ts: UnixMs | None = None
    escalated: bool = False
    device: Ident | None = None
    room: Ident | None = None
    child: Ident | None = None
    started_ts: UnixMs
    updated_ts: UnixMs
    resolved_ts: UnixMs | None = None
    value: float | str | None = None
    message: str
    message_en: str
    #: Re-notifications so far (a critical alert is re-published every 30 s while active and
    #: unacknowledged); 0 for the first notification.
    notify_count: Annotated[int, Field(ge=0)] = 0
    #: Gateway time of the latest (re-)notification; the next one is due a re-notify interval later.
    notified_ts: UnixMs | None = None
    #: Gateway time at which the alert was escalated (``escalated`` became true).
    escalated_ts: UnixMs | None = None

    @property
    def retained(self) -> bool:
        """Whether the broker should keep this alert for late subscribers."""
        return not (self.state is AlertState.RESOLVED and self.acknowledged)


class AckCommand(_Payload):
    alert_id: Ident
    by: Annotated[str, Field(min_length=1, max_length=128)]


class SessionAction(StrEnum):
    START = "start"
    STOP = "stop"


class SessionCommand(_Payload):
    """Staff start or stop the nap session of a room (published by the dashboard)."""

    room: Ident
    action: SessionAction
    by: Annotated[str, Field(min_length=1, max_length=128)]


class SessionSource(StrEnum):
    STAFF = "staff"
    SCHEDULE = "schedule"


class SessionState(_Payload):
    """The nap session of one room, retained on ``session/{room}`` by the gateway. ``active`` false
    with the ``started_*``/``stopped_*`` fields set describes the last session that ended."""

    room: Ident
    active: bool
    #: Unique per session: ``{room}-{started_ts}``.
    session_id: str | None = None
    source: SessionSource | None = None
    started_ts: UnixMs | None = None
    started_by: str | None = None
    #: When the kit's schedule will end this session (schedule-started sessions only).
    scheduled_end_ts: UnixMs | None = None
    stopped_ts: UnixMs | None = None
    stopped_by: str | None = None
    updated_ts: UnixMs


class RecordAction(StrEnum):
    CONFIRM = "confirm"
    CORRECT = "correct"


class RecordCommand(_Payload):
    """Staff confirm a nap-check record with one tap, or correct it (published by the dashboard).
    The gateway applies it as a NEW chained entry referring to ``entry``; the record never changes
    (docs/records.md). ``entry`` is the record's ``seq`` (to confirm a correction, its ``seq``)."""

    entry: Annotated[int, Field(ge=1, le=SQLITE_INT_MAX)]
    action: RecordAction = RecordAction.CONFIRM
    by: Annotated[str, Field(min_length=1, max_length=128)]
    #: ``correct`` only: the changed fields (posture, prone_seen, on_mat, breathing_rate_bpm,
    #: breathing_ok, body_temp_c, note); null clears one. Checked by the gateway.
    changes: dict[str, str | bool | float | None] | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None


class GatewayStatus(_Payload):
    """The gateway's heartbeat, retained on ``gateway``: published every ``heartbeat_s`` from its rules
    timer (so it also stops when the timer does); the last will is ``{"online": false}``. A reader
    judges liveness by when it last *received* one, not by ``ts`` (clocks differ)."""

    # ts is absent in the last will, which the broker sends for a dead gateway.
    ts: UnixMs | None = None
    online: bool
    #: Seconds between heartbeats; a reader should call the gateway lost after a few missed ones.
    heartbeat_s: Annotated[float, Field(gt=0, le=60)] | None = None


class AssignmentSource(StrEnum):
    KIT = "kit"
    STAFF = "staff"


class DeviceAssignment(_Payload):
    """Which child a mat or posture clip watches, retained on ``assignment/{device}`` by the gateway.
    ``source: kit`` is the kit file's binding; ``staff`` an assignment for the local ``day`` only
    (the kit's binding returns the next day). ``child`` null: the device watches nobody today."""

    device: Ident
    child: Ident | None = None
    source: AssignmentSource
    #: Local date (kit time zone) a staff assignment holds for, ``YYYY-MM-DD``.
    day: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None
    by: str | None = None
    updated_ts: UnixMs


class AssignCommand(_Payload):
    """Staff put a child on a mat (or clip) for today, or take the device off (``child`` null).
    A child already on another device of the same kind is moved (that device watches nobody)."""

    device: Ident
    child: Ident | None = None
    by: Annotated[str, Field(min_length=1, max_length=128)]


class RecordsHead(_Payload):
    """The nap-check records' latest signed day head (gateway/records/signing.py ``SignedHead``),
    retained on ``records/head`` by the gateway when it signs one and on start. Whoever holds the
    site's public key can check it without the records: the fleet tier does, per site."""

    site: Ident
    day: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    timezone: Annotated[str, Field(min_length=1, max_length=64)]
    seq: Annotated[int, Field(ge=0, le=SQLITE_INT_MAX)]
    hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    signed_ts: UnixMs
    key_id: Annotated[str, Field(min_length=1, max_length=128)]
    #: Ed25519 signature of the head's canonical message, hex.
    signature: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]


class RoomAlerts(_Payload):
    """A room's open alerts summed up, retained on ``room_alerts/{room}`` by the Home Assistant bridge
    (gateway/integrations/ha_bridge.py, from the retained ``alert/+``): what a system that only shows a
    room's state needs. Counts and the highest severity only — no rule, device or child, so it says
    nothing about which child needs attention."""

    room: Ident
    #: An alert of the room is active (acknowledged or not).
    problem: bool
    #: Alerts of the room that are active.
    active: Annotated[int, Field(ge=0)]
    #: Alerts of the room not yet acknowledged, active or resolved (staff must see the latter too).
    unacknowledged: Annotated[int, Field(ge=0)]
    #: The highest severity among the active alerts; None when none is active.
    severity: Severity | None = None
    #: When this summary last changed (the bridge's clock).
    updated_ts: UnixMs


class BridgeStatus(_Payload):
    """A bridge to another system (``bridge/home_assistant``), retained; its last will is
    ``{"online": false}``. What it derives (``room_alerts/{room}``) is current only while it is online."""

    # ts and version are absent in the last will.
    ts: UnixMs | None = None
    online: bool
    version: str | None = None


# ---------------------------------------------------------------- helpers


def _reject_constant(name: str) -> Any:
    raise ContractError("bad_json", f"{name} is not valid JSON")


def _load_json(payload: bytes | str) -> Any:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError("too_large", f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    except UnicodeDecodeError as exc:
        raise ContractError("bad_utf8", str(exc)) from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ContractError("bad_json", "nesting too deep") from None
    except ContractError:  # NaN / Infinity (_reject_constant)
        raise
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        raise ContractError("bad_json", str(exc)) from None
    if not isinstance(data, dict):
        raise ContractError("bad_json", f"expected a JSON object, got {type(data).__name__}")
    return data


def load_json_object(payload: bytes | str) -> dict[str, Any]:
    """The payload as a JSON object after the checks every payload gets before its model (size,
    UTF-8, JSON, an object); raises ContractError. For envelopes: signed commands (command_auth.py)."""
    data: dict[str, Any] = _load_json(payload)
    return data


def time_ahead(reading: Reading, now_ms: int) -> str | None:
    """Why ``reading`` cannot be taken as of ``now_ms`` (receiver clock): one of its unix-ms times
    is more than MAX_AHEAD_MS ahead (reason ``future`` for the counters); None if it can. One
    reading from the year 3000 would otherwise make every later one stale, or silence a mat's
    apnea alert (its last breath would never be 20 s ago) until the gateway restarts."""
    fields = reading.__dict__  # not getattr: a field the model lacks costs pydantic's __getattr__ and an exception
    for name in ("ts", "last_breath_ts", "t0"):
        value = fields.get(name)
        if isinstance(value, int) and value > now_ms + MAX_AHEAD_MS:
            return f"{name} {value} is {value - now_ms} ms ahead of the clock here ({now_ms})"
    return None


def validation_reason(exc: ValidationError) -> str:
    """A one-line summary of a pydantic error, for logs and dead letters."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


P = TypeVar("P", bound=_Payload)


def decode(model: type[P], payload: bytes | str) -> P:
    """Validate ``payload`` against ``model``; every failure becomes a ContractError."""
    try:
        return model.from_json(payload)
    except ValidationError as exc:
        raise ContractError("invalid_payload", validation_reason(exc)) from None
