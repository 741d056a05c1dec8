"""One message of a site into its ``SiteState`` — pure: no I/O, no clock (the centre's time is passed
in), it changes only the state it is given.

What a site sends (nurserywatch.fleet_layout SITE_OUT_KINDS) arrives in its partition stream; the worker
calls ``apply`` for each message in stream order with the stream sequence. A message at or below the
state's ``last_seq`` was applied before (a redelivery after a worker died before acknowledging): it is
skipped, so at-least-once delivery changes the state once. Anything that does not follow the contract,
or names another site than the one it came from (a forgery), is counted in ``rejected`` by reason and
logged by the caller (``Outcome.problem``), never raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleet.state import DeviceHealth, EdgeHealth, OpenAlert, RecordsHeadState, SiteState
from gateway.records.signing import SignedHead, signature_ok
from gateway.rules.air import RULES as AIR_RULES
from nurserywatch.contract import (
    Alert,
    AlertState,
    ContractError,
    DeviceStatus,
    EdgeStatus,
    GatewayStatus,
    Reading,
    RecordsHead,
    Stream,
    TopicKind,
    decode,
    is_cleared,
    parse_reading,
    parse_topic,
    time_ahead,
)
from nurserywatch.fleet_layout import SITE_OUT_KINDS
from nurserywatch.jetstream import subject_to_topic
from nurserywatch.keys import key_id

#: A gap between two air readings of a device longer than this counts as this much observed time (the
#: sensor was away; its absence is not time the room was watched).
AIR_GAP_MAX_S = 300.0
#: Resolved air alerts remembered as counted (``SiteState.air_counted``).
AIR_COUNTED_KEEP = 500


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """What the reducer knows of a site from the fleet file."""

    site: str
    partition: int
    tz: ZoneInfo
    #: The site's records public key (None: heads cannot be verified).
    public_key: Ed25519PublicKey | None


@dataclass(frozen=True, slots=True)
class Outcome:
    #: The state changed (write it back).
    changed: bool
    #: A reading to write to the time-series store: device, stream, reading.
    reading: tuple[str, Stream, Reading] | None = None
    #: Why the message was refused (the ``rejected`` key), and what was wrong, for the log.
    rejected: str | None = None
    problem: str | None = None
    #: At or below ``last_seq``: applied before.
    replay: bool = False


def new_state(info: SiteInfo) -> SiteState:
    return SiteState(site=info.site, partition=info.partition)


def apply(state: SiteState, info: SiteInfo, subject: str, payload: bytes, seq: int, now_ms: int) -> Outcome:
    """Apply the message ``subject``/``payload`` at partition stream sequence ``seq``, seen by the centre at
    ``now_ms``, to ``state`` (``info``'s site: the one it came from)."""
    if seq <= state.last_seq:
        return Outcome(changed=False, replay=True)
    state.last_seq = seq
    state.last_arrival_ms = now_ms
    try:
        reading = _apply(state, info, subject_to_topic(subject), payload, now_ms)
    except ContractError as exc:
        state.rejected[exc.reason] = state.rejected.get(exc.reason, 0) + 1
        return Outcome(changed=True, rejected=exc.reason, problem=f"{subject}: {exc.detail}")
    return Outcome(changed=True, reading=reading)


def _apply(
    state: SiteState, info: SiteInfo, topic: str, payload: bytes, now_ms: int
) -> tuple[str, Stream, Reading] | None:
    t = parse_topic(topic)
    if t.site != info.site:
        raise ContractError("other_site", f"a message of site {t.site!r} came from site {info.site!r}")
    if t.kind not in SITE_OUT_KINDS:
        raise ContractError("not_sent_to_centre", f"{t.kind.value} messages are not sent to the centre")
    if is_cleared(t.kind, payload):
        _cleared(state, t.kind, t.device or t.agent or t.alert_id)
        return None
    match t.kind:
        case TopicKind.READING:
            assert t.device is not None and t.stream is not None
            reading = parse_reading(t.stream, payload)
            if (why := time_ahead(reading, now_ms)) is not None:
                raise ContractError("future", why)
            _reading(state, info, t.device, t.stream, reading, now_ms)
            return t.device, t.stream, reading
        case TopicKind.STATUS:
            assert t.device is not None
            _status(state, t.device, decode(DeviceStatus, payload), now_ms)
        case TopicKind.EDGE:
            assert t.agent is not None
            edge = decode(EdgeStatus, payload)
            state.edges[t.agent] = EdgeHealth(agent=t.agent, online=edge.online, ts=edge.ts)
            _seen(state, edge.ts, now_ms)
        case TopicKind.ALERT:
            assert t.alert_id is not None
            alert = decode(Alert, payload)
            if alert.id != t.alert_id:
                raise ContractError("invalid_payload", f"alert {alert.id!r} on the topic of {t.alert_id!r}")
            _alert(state, info, alert)
        case TopicKind.GATEWAY:
            beat = decode(GatewayStatus, payload)
            state.gateway_online = beat.online
            if beat.ts is not None:
                state.gateway_ts = max(beat.ts, state.gateway_ts or 0)
            _seen(state, beat.ts, now_ms)
        case TopicKind.RECORDS_HEAD:
            _records_head(state, info, decode(RecordsHead, payload), now_ms)
    return None


def _seen(state: SiteState, ts: int | None, now_ms: int) -> None:
    """A message that carries the site's time: how far behind the centre is."""
    if ts is None:
        return
    state.last_msg_ts = max(ts, state.last_msg_ts or 0)
    state.lag_ms = now_ms - ts


def _device(state: SiteState, device: str) -> DeviceHealth:
    return state.devices.setdefault(device, DeviceHealth(device=device))


def _reading(state: SiteState, info: SiteInfo, device: str, stream: Stream, r: Reading, now_ms: int) -> None:
    state.readings += 1
    dev = _device(state, device)
    before = dev.last_reading_ts
    dev.last_reading_ts = max(r.ts, before or 0)
    _seen(state, r.ts, now_ms)
    if stream is Stream.AIR and before is not None and r.ts > before:
        gap_s = min((r.ts - before) / 1000, AIR_GAP_MAX_S)
        month = _month(r.ts, info.tz)
        rooms = state.air_observed_s.setdefault(month, {})
        room = dev.room or device
        rooms[room] = rooms.get(room, 0.0) + gap_s


def _status(state: SiteState, device: str, status: DeviceStatus, now_ms: int) -> None:
    dev = _device(state, device)
    if dev.status_ts is not None and status.ts < dev.status_ts:
        return  # an older retained status, sent again: the newer one stands
    dev.online, dev.battery_pct, dev.status_ts = status.online, status.battery_pct, status.ts
    if status.room is not None:  # the edge names the kit's room of the device; alerts name it too
        dev.room = status.room
    _seen(state, status.ts, now_ms)


def _cleared(state: SiteState, kind: TopicKind, key: str | None) -> None:
    """The site deleted a retained message (an empty payload)."""
    if key is None:
        if kind is TopicKind.GATEWAY:
            state.gateway_online = None
        return  # a records head is never deleted on purpose: the last one stays
    if kind is TopicKind.ALERT:
        state.alerts.pop(key, None)
    elif kind is TopicKind.EDGE:
        state.edges.pop(key, None)
    elif kind is TopicKind.STATUS and key in state.devices:
        dev = state.devices[key]
        dev.online = dev.battery_pct = dev.status_ts = None


def _alert(state: SiteState, info: SiteInfo, alert: Alert) -> None:
    old = state.alerts.get(alert.id)
    if old is not None and alert.updated_ts < old.updated_ts:
        return  # older than what is known
    if alert.device is not None and alert.room is not None:
        _device(state, alert.device).room = alert.room
    if alert.state is AlertState.RESOLVED and alert.rule in AIR_RULES and alert.room is not None:
        if alert.id not in state.air_counted:
            end = alert.resolved_ts if alert.resolved_ts is not None else alert.updated_ts
            _add_air(state, info.tz, alert.room, alert.rule, alert.started_ts, end)
            state.air_counted = [*state.air_counted, alert.id][-AIR_COUNTED_KEEP:]
    if not alert.retained:
        state.alerts.pop(alert.id, None)
        return
    state.alerts[alert.id] = OpenAlert(
        id=alert.id, rule=alert.rule, severity=alert.severity, active=alert.state is AlertState.ACTIVE,
        acknowledged=alert.acknowledged, escalated=alert.escalated, room=alert.room, device=alert.device,
        child=alert.child, started_ts=alert.started_ts, updated_ts=alert.updated_ts, message=alert.message,
        message_en=alert.message_en,
    )  # fmt: skip


def _month(ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m")


def month_spans(start_ms: int, end_ms: int, tz: ZoneInfo) -> list[tuple[str, float]]:
    """``[start_ms, end_ms)`` split at the local month boundaries of ``tz``: (``YYYY-MM``, seconds) each."""
    out: list[tuple[str, float]] = []
    t = start_ms
    while t < end_ms:
        local = datetime.fromtimestamp(t / 1000, tz)
        first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
        boundary = int(nxt.timestamp() * 1000)
        upto = min(end_ms, boundary)
        out.append((local.strftime("%Y-%m"), (upto - t) / 1000))
        t = upto
    return out


def _add_air(state: SiteState, tz: ZoneInfo, room: str, rule: str, start_ms: int, end_ms: int) -> None:
    for month, seconds in month_spans(start_ms, end_ms, tz):
        rules = state.air_over_s.setdefault(month, {}).setdefault(room, {})
        rules[rule] = rules.get(rule, 0.0) + seconds


def _records_head(state: SiteState, info: SiteInfo, msg: RecordsHead, now_ms: int) -> None:
    signed = SignedHead.from_contract(msg)
    problem = _head_problem(state.records_good, info, signed)
    head = RecordsHeadState(day=msg.day, seq=msg.seq, hash=msg.hash, signed_ts=msg.signed_ts, key_id=msg.key_id,
                            verified=problem is None, problem=problem, received_ms=now_ms)  # fmt: skip
    state.records = head
    if problem is None:
        state.records_good = head


def _head_problem(good: RecordsHeadState | None, info: SiteInfo, signed: SignedHead) -> str | None:
    h = signed.head
    if h.site != info.site:
        return f"the head names site {h.site!r}"
    if info.public_key is None:
        return "no public key for the site in the fleet file"
    if h.key_id != key_id(info.public_key):
        return f"signed with key {h.key_id}, not the site's key {key_id(info.public_key)}"
    if not signature_ok(signed, info.public_key):
        return "its signature does not match its content (altered or forged)"
    if good is None:
        return None
    if h.seq < good.seq:
        return f"entry {h.seq} is behind the head verified before (entry {good.seq}): the chain went back"
    if h.day == good.day and h.hash != good.hash:
        return f"day {h.day} was signed before as {good.hash} (entry {good.seq}), now as {h.hash}"
    if h.seq == good.seq and h.hash != good.hash:
        return f"entry {h.seq} was signed before as {good.hash}, now as {h.hash}"
    return None
