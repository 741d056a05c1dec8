"""Signed staff commands (nurserywatch/command_auth.py, docs/contract.md "Signed commands"): a table of
what the gateway's gate takes and what it refuses, with the reason it counts."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from nurserywatch.command_auth import (
    MAX_AGE_MS,
    MAX_SKEW_MS,
    REASONS,
    CommandGate,
    CommandSigner,
    canonical_json,
)
from nurserywatch.contract import (
    AckCommand,
    AssignCommand,
    ContractError,
    RecordAction,
    RecordCommand,
    SessionAction,
    SessionCommand,
    ack_topic,
    assign_command_topic,
    decode,
    record_command_topic,
    session_command_topic,
)
from tests.support.clock import T0
from tests.support.commands import COMMAND_KEY, COMMAND_VERIFIER, signed

SITE = "s1"
TOPIC = record_command_topic(SITE)
CORRECTION = RecordCommand(entry=7, action=RecordAction.CORRECT, by="田中", changes={"posture": "supine"},
                           reason="見間違い")  # fmt: skip


def edit(payload: bytes, change: Callable[[dict[str, object]], None]) -> bytes:
    data = json.loads(payload)
    change(data)
    return json.dumps(data, ensure_ascii=False).encode()


def set_field(key: str, value: object) -> Callable[[dict[str, object]], None]:
    return lambda d: d.__setitem__(key, value)


def set_auth(key: str, value: object) -> Callable[[dict[str, object]], None]:
    return lambda d: d["auth"].__setitem__(key, value)  # type: ignore[attr-defined]


OTHER_KEY = CommandSigner.generate()
GOOD = signed(TOPIC, CORRECTION, T0)

# (case, topic received on, payload, gateway clock, expected reason or None: taken)
CASES: list[tuple[str, str, bytes, int, str | None]] = [
    ("valid", TOPIC, GOOD, T0, None),
    ("valid, received 5 min later", TOPIC, signed(TOPIC, CORRECTION, T0), T0 + MAX_AGE_MS, None),
    ("valid, signer's clock 60 s ahead", TOPIC, signed(TOPIC, CORRECTION, T0 + MAX_SKEW_MS), T0, None),
    ("unsigned", TOPIC, CORRECTION.to_json(), T0, "unsigned"),
    ("wrong key", TOPIC, signed(TOPIC, CORRECTION, T0, key=OTHER_KEY), T0, "bad_signature"),
    ("wrong key, claiming the right key id", TOPIC,
     edit(signed(TOPIC, CORRECTION, T0, key=OTHER_KEY), set_auth("key", COMMAND_VERIFIER.id)), T0, "bad_signature"),
    ("altered by (the forgery outside testing made)", TOPIC, edit(GOOD, set_field("by", "院長 (forged)")), T0,
     "bad_signature"),
    ("altered change", TOPIC, edit(GOOD, lambda d: d.__setitem__("changes", {"posture": "prone"})), T0,
     "bad_signature"),
    ("field added", TOPIC, edit(GOOD, set_field("note", "x")), T0, "bad_signature"),
    ("field removed", TOPIC, edit(GOOD, lambda d: d.pop("reason")), T0, "bad_signature"),
    ("altered topic: a record command replayed as an ack", ack_topic(SITE), GOOD, T0, "bad_signature"),
    ("altered topic: another site", record_command_topic("s2"), GOOD, T0, "bad_signature"),
    ("altered time", TOPIC, edit(GOOD, set_auth("ts", T0 + 1)), T0, "bad_signature"),
    ("altered id", TOPIC, edit(GOOD, set_auth("id", "A" * 22)), T0, "bad_signature"),
    ("signature cut", TOPIC, edit(GOOD, lambda d: d["auth"].__setitem__("sig", d["auth"]["sig"][:-2])), T0,  # type: ignore[index]
     "bad_signature"),
    ("auth not an object", TOPIC, edit(GOOD, set_field("auth", "signed")), T0, "bad_signature"),
    ("ts a string", TOPIC, edit(GOOD, set_auth("ts", str(T0))), T0, "bad_signature"),
    ("ts true", TOPIC, edit(GOOD, set_auth("ts", True)), T0, "bad_signature"),
    ("expired", TOPIC, GOOD, T0 + MAX_AGE_MS + 1, "expired"),
    ("signed too far ahead", TOPIC, GOOD, T0 - MAX_SKEW_MS - 1, "expired"),
    ("not JSON", TOPIC, b"{", T0, "bad_json"),
]


@pytest.mark.parametrize(("case", "topic", "payload", "now", "reason"), CASES, ids=[c[0] for c in CASES])
def test_gate(case: str, topic: str, payload: bytes, now: int, reason: str | None) -> None:
    gate = CommandGate(COMMAND_VERIFIER)
    if reason is None:
        command = decode(RecordCommand, gate.open(topic, payload, now).payload)
        assert command == CORRECTION
        return
    with pytest.raises(ContractError) as refused:
        gate.open(topic, payload, now)
    assert refused.value.reason == reason, refused.value.detail
    assert reason in (*REASONS, "bad_json")


def test_replayed_within_the_window_and_forgotten_after() -> None:
    gate = CommandGate(COMMAND_VERIFIER)
    payload = signed(TOPIC, CORRECTION, T0)
    gate.open(TOPIC, payload, T0)
    for later in (T0, T0 + 1000, T0 + MAX_AGE_MS):
        with pytest.raises(ContractError) as again:
            gate.open(TOPIC, payload, later)
        assert again.value.reason == "replayed"
    # Once the window has passed it is refused as expired — and no longer held in memory.
    with pytest.raises(ContractError) as late:
        gate.open(TOPIC, payload, T0 + MAX_AGE_MS + 1)
    assert late.value.reason == "expired"
    gate.open(TOPIC, signed(TOPIC, CORRECTION, T0 + MAX_AGE_MS + 1), T0 + MAX_AGE_MS + 1)
    assert len(gate._replays) == 1  # the memory is bounded by the window
    # A refused forgery is not remembered: it cannot block the real command carrying its id.
    real = signed(TOPIC, CORRECTION, T0 + MAX_AGE_MS + 2)
    forged = edit(real, set_field("by", "院長 (forged)"))
    with pytest.raises(ContractError):
        gate.open(TOPIC, forged, T0 + MAX_AGE_MS + 2)
    gate.open(TOPIC, real, T0 + MAX_AGE_MS + 2)


def test_a_gateway_without_a_key_refuses_every_command() -> None:
    with pytest.raises(ContractError) as refused:
        CommandGate(None).open(TOPIC, GOOD, T0)
    assert refused.value.reason == "no_command_key"


@pytest.mark.parametrize(
    ("topic", "command"),
    [
        (ack_topic(SITE), AckCommand(alert_id="prone-1", by="田中")),
        (session_command_topic(SITE), SessionCommand(room="hiyoko", action=SessionAction.START, by="田中")),
        (assign_command_topic(SITE), AssignCommand(device="mat-01", child=None, by="田中")),
        (TOPIC, RecordCommand(entry=3, by="田中")),
        (TOPIC, RecordCommand(entry=3, action=RecordAction.CORRECT, by="田中",
                              changes={"breathing_rate_bpm": 31.25, "note": "ok 🙂", "on_mat": None})),  # fmt: skip
    ],
)
def test_every_command_kind_round_trips(topic: str, command: AckCommand | SessionCommand | AssignCommand
                                        | RecordCommand) -> None:  # fmt: skip
    payload, command_id = COMMAND_KEY.sign(topic, command.model_dump(mode="json"), T0, bytes(16))
    opened = CommandGate(COMMAND_VERIFIER).open(topic, payload, T0)
    assert decode(type(command), opened.payload) == command
    assert opened.id == command_id and opened.ts == T0
    # The wire form is the command's own fields plus `auth`: readable, and canonical.
    assert json.loads(payload)["by"] == "田中" and payload == canonical_json(json.loads(payload))


def test_a_command_cannot_carry_its_own_auth() -> None:
    with pytest.raises(ValueError, match="auth"):
        COMMAND_KEY.sign(TOPIC, {"entry": 1, "by": "x", "auth": {}}, T0, bytes(16))
