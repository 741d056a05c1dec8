"""Signed staff commands (docs/contract.md, "Signed commands"): the dashboard signs every command it
publishes (``command/ack``, ``command/session``, ``command/record``, ``command/assign``) with the site's
command key, an Ed25519 private key only the dashboard holds; the gateway checks it with the public
half (key files: nurserywatch/keys.py). A broker credential — an edge agent's, or the gateway's own —
can then publish on a command topic but cannot make the gateway act, nor name someone else as ``by``.

The signature covers a fixed domain string, the topic, the whole command (canonical JSON), the signing
time and a random id; the gateway refuses a command signed too long ago (or too far ahead) and one
whose id it has already taken (a replay). Pure: bytes, keys and times in.

Wire form: the command's own fields plus ``"auth": {"ts", "id", "key", "sig"}`` (``key``: the key's
id, to tell a wrong key from a forgery in the logs; ``sig``: base64url, no padding).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nurserywatch.contract import MAX_AHEAD_MS, ContractError, load_json_object
from nurserywatch.keys import key_id

#: The field that carries the signature inside a command.
AUTH_FIELD = "auth"
#: What is signed starts with this, so a signature made for something else (another use of an
#: Ed25519 key) can never pass as a command.
DOMAIN = b"nurserywatch command v1\n"
#: A command signed longer ago than this is refused (``expired``): long enough for a gateway restart
#: while the broker holds its queue, short enough that a captured command is soon worthless.
MAX_AGE_MS = 5 * 60_000
#: Clocks of the dashboard's and the gateway's machines may differ this much (the contract's margin).
MAX_SKEW_MS = MAX_AHEAD_MS
#: Random bytes of a command id.
ID_BYTES = 16
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SIG_RE = re.compile(r"^[A-Za-z0-9_-]{86}$")  # 64 bytes, base64url without padding
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")

#: Counter keys of refused commands (docs/contract.md): no ``auth``; a bad or foreign signature; signed
#: outside the time window; an id already taken; a gateway that holds no key refuses every command.
REASONS = ("unsigned", "bad_signature", "expired", "replayed", "no_command_key")


class CommandAuthError(ContractError):
    """A command that is not signed, or not signed right; ``reason`` is one of REASONS."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value that is signed: keys sorted, no spaces, UTF-8 as is. Python
    writes a float as its shortest round-trip form, so a command read back gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def signed_bytes(topic: str, command: Mapping[str, Any], ts: int, command_id: str, kid: str) -> bytes:
    """Exactly what the signature covers."""
    what = {"topic": topic, "command": dict(command), "ts": ts, "id": command_id, "key": kid}
    return DOMAIN + canonical_json(what)


@dataclass(frozen=True, slots=True)
class CommandVerifier:
    """The public half: what the gateway holds."""

    key: Ed25519PublicKey
    id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", key_id(self.key))


@dataclass(frozen=True, slots=True)
class CommandSigner:
    """The private half: what the dashboard holds."""

    key: Ed25519PrivateKey
    verifier: CommandVerifier = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verifier", CommandVerifier(self.key.public_key()))

    @classmethod
    def generate(cls) -> CommandSigner:
        return cls(Ed25519PrivateKey.generate())

    def sign(self, topic: str, command: Mapping[str, Any], now_ms: int, nonce: bytes) -> tuple[bytes, str]:
        """The payload to publish on ``topic`` for ``command`` (its fields as JSON values, e.g.
        ``model.model_dump(mode="json")``), and the command's id. ``nonce``: ID_BYTES random bytes."""
        if AUTH_FIELD in command:
            raise ValueError(f"a command cannot have its own {AUTH_FIELD!r} field")
        command_id = _b64(nonce)
        kid = self.verifier.id
        sig = self.key.sign(signed_bytes(topic, command, now_ms, command_id, kid))
        auth = {"ts": now_ms, "id": command_id, "key": kid, "sig": _b64(sig)}
        return canonical_json({**command, AUTH_FIELD: auth}), command_id


@dataclass(frozen=True, slots=True)
class SignedCommand:
    """A command whose signature checked out."""

    #: The command without ``auth``, as JSON bytes for the contract's ``decode``.
    payload: bytes
    #: Its id: named in the gateway's log and in the dashboard's audit log entry for it.
    id: str
    #: When the dashboard signed it (its clock).
    ts: int


def verify(verifier: CommandVerifier, topic: str, payload: bytes, now_ms: int) -> SignedCommand:
    """Check the signature of a command received on ``topic`` and its time against ``now_ms``;
    raises CommandAuthError (or ContractError for a payload that is not even a JSON object). Replays
    are the caller's to refuse (``ReplayGuard``): this function keeps no state."""
    data = load_json_object(payload)
    auth = data.pop(AUTH_FIELD, None)
    if auth is None:
        raise CommandAuthError("unsigned", f"no {AUTH_FIELD!r}: commands must be signed by the dashboard")
    if not isinstance(auth, dict):
        raise CommandAuthError("bad_signature", f"{AUTH_FIELD!r} is not an object")
    ts, command_id, kid, sig = (auth.get(k) for k in ("ts", "id", "key", "sig"))
    if not (
        isinstance(ts, int) and not isinstance(ts, bool) and 0 <= ts < 2**53
        and isinstance(command_id, str) and _ID_RE.match(command_id)
        and isinstance(kid, str) and _KEY_ID_RE.match(kid)
        and isinstance(sig, str) and _SIG_RE.match(sig)
    ):  # fmt: skip
        raise CommandAuthError("bad_signature", f"{AUTH_FIELD!r} needs ts (int), id, key and sig in their forms")
    if kid != verifier.id:
        raise CommandAuthError(
            "bad_signature",
            f"signed with key {kid}, this gateway trusts key {verifier.id} (a forgery, or the dashboard and the "
            "gateway hold keys of different provisioning runs)",
        )
    try:
        verifier.key.verify(_unb64(sig), signed_bytes(topic, data, ts, command_id, kid))
    except (InvalidSignature, binascii.Error, ValueError):
        raise CommandAuthError("bad_signature", f"command {command_id}: the signature does not match") from None
    if not now_ms - MAX_AGE_MS <= ts <= now_ms + MAX_SKEW_MS:
        raise CommandAuthError(
            "expired",
            f"command {command_id} signed at {ts}, {(now_ms - ts) / 1000:+.0f} s from the clock here ({now_ms}); "
            f"accepted: up to {MAX_AGE_MS // 1000} s old, {MAX_SKEW_MS // 1000} s ahead",
        )
    return SignedCommand(canonical_json(data), command_id, ts)


class ReplayGuard:
    """The ids of commands taken within the time window: a command seen again is refused. An id is
    forgotten once its command would be refused as expired anyway, so memory stays bounded by the
    dashboard's own rate (only correctly signed commands are remembered)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}  # id -> when it may be forgotten

    def __len__(self) -> int:
        return len(self._seen)

    def take(self, command: SignedCommand, now_ms: int) -> None:
        """Remember ``command``; raises CommandAuthError('replayed') when it was taken before."""
        self._seen = {k: until for k, until in self._seen.items() if until >= now_ms}
        if command.id in self._seen:
            raise CommandAuthError("replayed", f"command {command.id} (signed at {command.ts}) was already taken")
        self._seen[command.id] = command.ts + MAX_AGE_MS


class CommandGate:
    """What the gateway runs every command through: signature, time window, replay. Without a key
    every command is refused (``no_command_key``): an unsigned command must never act."""

    def __init__(self, verifier: CommandVerifier | None) -> None:
        self.verifier = verifier
        self._replays = ReplayGuard()

    def open(self, topic: str, payload: bytes, now_ms: int) -> SignedCommand:
        if self.verifier is None:
            raise CommandAuthError("no_command_key", "this gateway has no command key: it refuses every command")
        command = verify(self.verifier, topic, payload, now_ms)
        self._replays.take(command, now_ms)
        return command
