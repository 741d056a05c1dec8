"""The MQTT contract: topics built and parsed, payloads validated and rejected."""

from __future__ import annotations

import json

import pytest

from nurserywatch.contract import (
    MAX_PAYLOAD_BYTES,
    AckCommand,
    AirReading,
    Alert,
    AlertState,
    AssignCommand,
    BodyTempReading,
    BreathingReading,
    BridgeStatus,
    ContractError,
    DeviceAssignment,
    DeviceStatus,
    EdgeStatus,
    GatewayStatus,
    Position,
    PostureReading,
    RecordCommand,
    RecordsHead,
    RoomAlerts,
    SessionAction,
    SessionCommand,
    SessionSource,
    SessionState,
    Severity,
    Stream,
    Topic,
    TopicKind,
    WaveformReading,
    _Payload,
    ack_topic,
    alert_topic,
    bridge_topic,
    decode,
    edge_topic,
    escalation_topic,
    parse_reading,
    parse_topic,
    reading_topic,
    room_alerts_topic,
    session_command_topic,
    session_topic,
    status_topic,
    subscription,
)

R = "nurserywatch/v1/himawari"
T = 1_767_225_600_000


@pytest.mark.parametrize(
    ("built", "expected_topic", "parsed"),
    [
        (
            reading_topic("himawari", "clip-01", Stream.POSTURE),
            f"{R}/reading/clip-01/posture",
            Topic("himawari", TopicKind.READING, device="clip-01", stream=Stream.POSTURE),
        ),
        (
            reading_topic("himawari", "mat_7", "breathing"),
            f"{R}/reading/mat_7/breathing",
            Topic("himawari", TopicKind.READING, device="mat_7", stream=Stream.BREATHING),
        ),
        (status_topic("himawari", "air1"), f"{R}/status/air1", Topic("himawari", TopicKind.STATUS, device="air1")),
        (edge_topic("himawari", "pi-1"), f"{R}/edge/pi-1", Topic("himawari", TopicKind.EDGE, agent="pi-1")),
        (alert_topic("himawari", "a1b2"), f"{R}/alert/a1b2", Topic("himawari", TopicKind.ALERT, alert_id="a1b2")),
        (ack_topic("himawari"), f"{R}/command/ack", Topic("himawari", TopicKind.COMMAND_ACK)),
        (
            escalation_topic("himawari", "apnea-1f"),
            f"{R}/escalation/apnea-1f",
            Topic("himawari", TopicKind.ESCALATION, alert_id="apnea-1f"),
        ),
        (
            session_topic("himawari", "hiyoko"),
            f"{R}/session/hiyoko",
            Topic("himawari", TopicKind.SESSION, room="hiyoko"),
        ),
        (session_command_topic("himawari"), f"{R}/command/session", Topic("himawari", TopicKind.COMMAND_SESSION)),
        (
            room_alerts_topic("himawari", "hiyoko"),
            f"{R}/room_alerts/hiyoko",
            Topic("himawari", TopicKind.ROOM_ALERTS, room="hiyoko"),
        ),
        (
            bridge_topic("himawari", "home_assistant"),
            f"{R}/bridge/home_assistant",
            Topic("himawari", TopicKind.BRIDGE, bridge="home_assistant"),
        ),
    ],
)
def test_topics_build_and_parse(built: str, expected_topic: str, parsed: Topic) -> None:
    assert built == expected_topic
    assert parse_topic(built) == parsed


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("nurserywatch/v2/himawari/status/x", "bad_topic"),
        ("other/v1/himawari/status/x", "bad_topic"),
        (f"{R}/reading/clip-01/heartbeat", "bad_topic"),
        (f"{R}/reading/clip-01", "bad_topic"),
        (f"{R}/status/Clip01", "bad_identifier"),
        (f"{R}/status/", "bad_identifier"),
        (f"{R}/alert/{'a' * 65}", "bad_identifier"),
        ("nurserywatch/v1/HIMAWARI/status/x", "bad_identifier"),
        (f"{R}/command/reboot", "bad_topic"),
        (f"{R}/session/Hiyoko", "bad_identifier"),
        (f"{R}/escalation", "bad_topic"),
        ("nurserywatch/v1", "bad_topic"),
    ],
)
def test_bad_topics_rejected(topic: str, reason: str) -> None:
    with pytest.raises(ContractError) as exc:
        parse_topic(topic)
    assert exc.value.reason == reason


def test_builders_refuse_bad_identifiers() -> None:
    with pytest.raises(ContractError):
        reading_topic("himawari", "clip/01", Stream.POSTURE)
    with pytest.raises(ContractError):
        alert_topic("himawari", "+")


def test_subscriptions() -> None:
    assert subscription("himawari", TopicKind.READING) == f"{R}/reading/+/+"
    assert subscription("himawari", TopicKind.ALERT) == f"{R}/alert/+"
    assert subscription("himawari", TopicKind.COMMAND_ACK) == f"{R}/command/ack"
    assert subscription("himawari", TopicKind.ESCALATION) == f"{R}/escalation/+"
    assert subscription("himawari", TopicKind.SESSION) == f"{R}/session/+"
    assert subscription("himawari", TopicKind.COMMAND_SESSION) == f"{R}/command/session"


def test_posture_reading_round_trip() -> None:
    r = PostureReading(ts=1_767_225_600_000, seq=65535, position=Position.PRONE, accel_mg=(3, -20, -998))
    back = parse_reading(Stream.POSTURE, r.to_json())
    assert back == r
    assert json.loads(r.to_json())["position"] == "prone"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"[1, 2]", "bad_json"),
        (b'{"ts": NaN, "seq": 1, "position": "prone"}', "bad_json"),
        (b'{"ts": Infinity, "seq": 1, "position": "prone"}', "bad_json"),
        (b"\xff\xfe{}", "bad_utf8"),
        (b'{"ts": 1, "seq": 1}', "invalid_payload"),
        (b'{"ts": "yesterday", "seq": 1, "position": "prone"}', "invalid_payload"),
        (b'{"ts": 1, "seq": -1, "position": "prone"}', "invalid_payload"),
        (b'{"ts": 1, "seq": 1, "position": "face-down"}', "invalid_payload"),
        (b'{"ts": 1, "seq": 1, "position": "prone", "accel_mg": [1, 2]}', "invalid_payload"),
        (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "bad_json"),
        (b'{"pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}', "too_large"),
    ],
)
def test_bad_reading_payloads_rejected(payload: bytes, reason: str) -> None:
    with pytest.raises(ContractError) as exc:
        parse_reading(Stream.POSTURE, payload)
    assert exc.value.reason == reason


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    r = parse_reading(Stream.POSTURE, b'{"ts": 5, "seq": 1, "position": "left", "firmware": "2.0"}')
    assert r == PostureReading(ts=5, seq=1, position=Position.LEFT)


def test_alert_retention_policy() -> None:
    base = dict(
        id="abc123", rule="prone", severity=Severity.CRITICAL, started_ts=1, updated_ts=2,
        message="うつぶせ", message_en="prone",
    )
    assert Alert(state=AlertState.ACTIVE, **base).retained  # type: ignore[arg-type]
    assert Alert(state=AlertState.ACTIVE, acknowledged=True, **base).retained  # type: ignore[arg-type]
    assert Alert(state=AlertState.RESOLVED, **base).retained  # type: ignore[arg-type]
    assert not Alert(state=AlertState.RESOLVED, acknowledged=True, **base).retained  # type: ignore[arg-type]


def test_alert_and_commands_validate() -> None:
    with pytest.raises(ContractError) as exc:
        decode(Alert, b'{"id": "x", "rule": "prone"}')
    assert exc.value.reason == "invalid_payload"
    assert "severity" in exc.value.detail
    assert decode(AckCommand, b'{"alert_id": "abc", "by": "\xe4\xbd\x90\xe8\x97\xa4"}').by == "佐藤"
    with pytest.raises(ContractError):
        decode(AckCommand, b'{"alert_id": "abc", "by": ""}')
    # The last will carries only {"online": false}.
    assert decode(EdgeStatus, b'{"online": false}') == EdgeStatus(online=False)


def test_alert_notification_fields_are_optional_for_older_payloads() -> None:
    old = b'{"id": "a1", "rule": "prone", "severity": "critical", "state": "active", "started_ts": 1,'
    old += b' "updated_ts": 2, "message": "m", "message_en": "m"}'
    alert = decode(Alert, old)
    assert (alert.notify_count, alert.notified_ts, alert.escalated, alert.escalated_ts) == (0, None, False, None)
    again = alert.model_copy(update={"notify_count": 3, "notified_ts": 5, "escalated": True, "escalated_ts": 5})
    assert decode(Alert, again.to_json()) == again
    with pytest.raises(ContractError):
        decode(Alert, again.to_json().replace(b'"notify_count":3', b'"notify_count":-1'))


def test_session_command_and_state() -> None:
    cmd = decode(SessionCommand, rb'{"room": "hiyoko", "action": "start", "by": "\u4f50\u85e4"}')
    assert (cmd.room, cmd.action, cmd.by) == ("hiyoko", SessionAction.START, "佐藤")
    for bad in (
        b'{"room": "hiyoko", "action": "pause", "by": "x"}',
        b'{"room": "Hiyoko", "action": "stop", "by": "x"}',
        b'{"room": "hiyoko", "action": "stop", "by": ""}',
        b'{"room": "hiyoko", "by": "x"}',
    ):
        with pytest.raises(ContractError) as exc:
            decode(SessionCommand, bad)
        assert exc.value.reason == "invalid_payload"
    state = SessionState(
        room="hiyoko", active=True, session_id="hiyoko-1767225600000", source=SessionSource.SCHEDULE,
        started_ts=1_767_225_600_000, started_by="schedule", scheduled_end_ts=1_767_232_800_000,
        updated_ts=1_767_225_600_000,
    )  # fmt: skip
    assert decode(SessionState, state.to_json()) == state
    assert decode(SessionState, b'{"room": "risu", "active": false, "updated_ts": 0}').session_id is None


# ---------------------------------------------------------------- strict JSON types (issue 13, item 2)

#: One valid payload per contract model, as JSON values.
VALID: dict[type[_Payload], dict[str, object]] = {
    BreathingReading: {"ts": T, "seq": 1, "rate_bpm": 30.5, "amplitude": 40, "motion": 0.1, "present": True,
                       "quality": 0.9, "last_breath_ts": T - 1000},
    PostureReading: {"ts": T, "seq": 1, "position": "prone", "accel_mg": [3, -20, -998]},
    BodyTempReading: {"ts": T, "seq": 1, "celsius": 36.8},
    AirReading: {"ts": T, "seq": 1, "co2_ppm": 500, "pm25_ugm3": 3.5, "pm10_ugm3": 4, "temp_c": 22.5, "rh_pct": 40},
    WaveformReading: {"ts": T, "seq": 1, "fs_hz": 25, "t0": T - 1000, "samples": [1, -2, 3]},
    DeviceStatus: {"ts": T, "online": True, "battery_pct": 80, "rssi_dbm": -60.5, "room": "hiyoko"},
    EdgeStatus: {"ts": T, "online": True, "version": "1.0", "devices": ["mat-01"], "clock_ok": True},
    Alert: {"id": "a1", "rule": "prone", "severity": "critical", "state": "active", "acknowledged": False,
            "escalated": False, "device": "clip-01", "started_ts": T, "updated_ts": T, "value": 31.5,
            "message": "m", "message_en": "m", "notify_count": 0},
    AckCommand: {"alert_id": "a1", "by": "hoikushi-1"},
    SessionCommand: {"room": "hiyoko", "action": "start", "by": "hoikushi-1"},
    SessionState: {"room": "hiyoko", "active": True, "source": "staff", "started_ts": T, "updated_ts": T},
    RecordCommand: {"entry": 3, "action": "correct", "by": "hoikushi-1", "changes": {"posture": "supine",
                    "breathing_rate_bpm": 30, "on_mat": True, "note": None}},
    GatewayStatus: {"ts": T, "online": True, "heartbeat_s": 1},
    DeviceAssignment: {"device": "mat-01", "child": "c001", "source": "staff", "day": "2026-01-01", "updated_ts": T},
    AssignCommand: {"device": "mat-01", "child": "c001", "by": "hoikushi-1"},
    RecordsHead: {"site": "nursery-a", "day": "2026-01-01", "timezone": "Asia/Tokyo", "seq": 12, "hash": "ab" * 32,
                  "signed_ts": T, "key_id": "0123456789abcdef", "signature": "cd" * 64},
    RoomAlerts: {"room": "hiyoko", "problem": True, "active": 1, "unacknowledged": 2, "severity": "critical",
                 "updated_ts": T},
    BridgeStatus: {"ts": T, "online": True, "version": "0.1.0"},
}  # fmt: skip

#: (model, field, value of the wrong JSON type): each refused as invalid_payload, never coerced.
WRONG: list[tuple[type[_Payload], str, object]] = [
    (BreathingReading, "ts", str(T)),  # digits in a string are not a number
    (BreathingReading, "ts", float(T)),  # ints stay ints: 1767225600000.0 is not a time in ms
    (BreathingReading, "ts", True),
    (BreathingReading, "seq", True),  # bool is not an int
    (BreathingReading, "seq", "1"),
    (BreathingReading, "seq", 1.5),
    (BreathingReading, "rate_bpm", "30"),
    (BreathingReading, "rate_bpm", True),
    (BreathingReading, "present", 1),  # an int is not a bool
    (BreathingReading, "present", "true"),
    (BreathingReading, "last_breath_ts", str(T)),
    (PostureReading, "position", 1),
    (PostureReading, "position", ["prone"]),
    (PostureReading, "accel_mg", [3, "-20", -998]),
    (PostureReading, "accel_mg", [3, -20.5, -998]),
    (BodyTempReading, "celsius", "36.8"),
    (AirReading, "co2_ppm", "500"),
    (AirReading, "temp_c", False),
    (WaveformReading, "samples", ["1", 2]),
    (WaveformReading, "samples", [1.5]),
    (WaveformReading, "t0", str(T)),
    (DeviceStatus, "online", "false"),
    (DeviceStatus, "online", 0),
    (DeviceStatus, "battery_pct", "80"),
    (DeviceStatus, "room", 1),
    (EdgeStatus, "online", 1),
    (EdgeStatus, "version", 1),
    (EdgeStatus, "clock_ok", "yes"),
    (Alert, "severity", 2),
    (Alert, "acknowledged", "false"),
    (Alert, "started_ts", str(T)),
    (Alert, "notify_count", True),
    (Alert, "value", True),
    (Alert, "message", 5),
    (AckCommand, "by", 5),
    (AckCommand, "alert_id", ["a1"]),
    (SessionCommand, "action", True),
    (SessionState, "active", "true"),
    (SessionState, "updated_ts", str(T)),
    (RecordCommand, "entry", "3"),
    (RecordCommand, "entry", True),
    (RecordCommand, "changes", {"on_mat": [True]}),
    (GatewayStatus, "online", 1),
    (GatewayStatus, "heartbeat_s", "1"),
    (DeviceAssignment, "source", 0),
    (DeviceAssignment, "updated_ts", float(T)),
    (AssignCommand, "child", 1),
    (RecordsHead, "seq", "12"),
    (RoomAlerts, "problem", 1),
    (RoomAlerts, "active", True),
    (BridgeStatus, "online", "true"),
    (RecordsHead, "hash", "AB" * 32),  # the chain writes lower-case hex; anything else is not its hash
]

#: (model, field, value): the JSON types the contract does take.
RIGHT: list[tuple[type[_Payload], str, object, object]] = [
    (AirReading, "co2_ppm", 500, 500.0),  # a JSON int is fine for a float field
    (AirReading, "co2_ppm", 500.5, 500.5),
    (BreathingReading, "rate_bpm", None, None),
    (BreathingReading, "present", False, False),
    (BreathingReading, "present", None, None),
    (PostureReading, "position", "left", Position.LEFT),  # enums from their string values
    (PostureReading, "accel_mg", [1, 2, 3], (1, 2, 3)),  # a JSON array for a fixed-length tuple
    (Alert, "value", "edge_offline", "edge_offline"),
    (Alert, "value", 3, 3.0),
    (Alert, "severity", "warning", Severity.WARNING),
    (SessionCommand, "action", "stop", SessionAction.STOP),
    (RecordCommand, "changes", {"breathing_ok": False, "body_temp_c": 36}, {"breathing_ok": False, "body_temp_c": 36}),
]


def _with(model: type[_Payload], field: str, value: object) -> bytes:
    return json.dumps({**VALID[model], field: value}).encode()


def test_every_contract_model_is_in_the_strict_table() -> None:
    def subclasses(cls: type[_Payload]) -> set[type[_Payload]]:
        return {s for c in cls.__subclasses__() for s in (c, *subclasses(c))}

    assert {m for m in subclasses(_Payload) if not m.__name__.startswith("_")} == set(VALID)
    for model, payload in VALID.items():
        decode(model, json.dumps(payload).encode())


@pytest.mark.parametrize(("model", "field", "value"), WRONG, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_wrong_json_types_are_refused_not_coerced(model: type[_Payload], field: str, value: object) -> None:
    with pytest.raises(ContractError) as exc:
        decode(model, _with(model, field, value))
    assert exc.value.reason == "invalid_payload"
    assert exc.value.detail.startswith(field), exc.value.detail  # the detail names the field


@pytest.mark.parametrize(("model", "field", "value", "taken"), RIGHT, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_right_json_types_are_taken(model: type[_Payload], field: str, value: object, taken: object) -> None:
    got = getattr(decode(model, _with(model, field, value)), field)
    assert got == taken and type(got) is type(taken)


# ---------------------------------------------------------------- the fast path of from_json (issue 17)


def _slow_path(model: type[BreathingReading], payload: bytes) -> tuple[str, object]:
    """What from_json did before its pydantic-first path: the contract's JSON checks, then pydantic."""
    from pydantic import ValidationError

    from nurserywatch.contract import _load_json

    try:
        _load_json(payload)
        return "ok", model.model_validate_json(payload, strict=True)
    except ContractError as exc:
        return exc.reason, None
    except ValidationError:
        return "invalid_payload", None


def _fast_path(model: type[BreathingReading], payload: bytes) -> tuple[str, object]:
    from pydantic import ValidationError

    try:
        return "ok", model.from_json(payload)
    except ContractError as exc:
        return exc.reason, None
    except ValidationError:
        return "invalid_payload", None


_GOOD = b'{"ts":1767225600000,"seq":1,"rate_bpm":30.5,"present":true,"last_breath_ts":1767225599000}'


@pytest.mark.parametrize(
    "payload",
    [
        _GOOD,
        _GOOD.replace(b"30.5", b"NaN"),
        _GOOD.replace(b"30.5", b"-Infinity"),
        _GOOD.replace(b"}", b',"x":NaN}'),  # NaN in an ignored field: refused as before
        _GOOD.replace(b"}", b',"x":"\\ud800"}'),
        _GOOD.replace(b"}", b',"x":"\xff"}'),  # not UTF-8
        _GOOD.replace(b"}", b',"x":"a\x01b"}'),  # a raw control character
        _GOOD.replace(b"}", b',"x":1e999}'),
        _GOOD.replace(b"30.5", b"1e999"),
        _GOOD.replace(b"}", b',"x":' + b"1" * 5000 + b"}"),  # an integer of more than 4300 digits
        _GOOD.replace(b"}", b',"x":' + b"[" * 3000 + b"]" * 3000 + b"}"),
        _GOOD.replace(b"}", b',}'),
        _GOOD.replace(b'"seq":1', b'"seq":"1"'),
        _GOOD.replace(b'"seq":1', b'"seq":1,"seq":2'),
        b"\xef\xbb\xbf" + _GOOD,
        b" " + _GOOD + b"\n",
        b"[" + _GOOD + b"]",
        b"",
        b"null",
        _GOOD + b"x",
    ],
)
def test_from_json_accepts_and_refuses_as_the_contract_checks_did(payload: bytes) -> None:
    """pydantic validates first and the contract's own checks run only for what it refuses: what is
    accepted, and each refusal's reason, must be what the checks-first path gave."""
    assert _fast_path(BreathingReading, payload) == _slow_path(BreathingReading, payload)
