"""Signed staff commands in the tests (nurserywatch/command_auth.py): the one test command key, the
payload the dashboard would publish for a command, the key files a gateway or dashboard process is
given, and a signed command read back (what a test sees the dashboard send)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from nurserywatch.clock import Clock
from nurserywatch.command_auth import ID_BYTES, CommandSigner, verify
from nurserywatch.contract import P, decode
from nurserywatch.keys import SECRET_MODE, public_key_path, write_public_key

#: Fixed, so that key files written by different fixtures and the in-process gateways all agree.
COMMAND_KEY = CommandSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
#: What the tests' gateways hold.
COMMAND_VERIFIER = COMMAND_KEY.verifier


class _SignsOnClock(CommandSigner):
    def __init__(self, key: Ed25519PrivateKey, clock: Clock) -> None:
        super().__init__(key)
        object.__setattr__(self, "_clock", clock)

    def sign(self, topic: str, command: Mapping[str, Any], now_ms: int, nonce: bytes) -> tuple[bytes, str]:
        clock: Clock = getattr(self, "_clock")  # noqa: B009 - set past the frozen dataclass's __setattr__
        return super().sign(topic, command, clock.now_ms(), nonce)


def signer_on(clock: Clock) -> CommandSigner:
    """The test key signing at ``clock``'s time, whatever the signing dashboard's own clock says. For
    stacks whose gateway runs on a ManualClock while the dashboard runs in real time (its watchdog and
    card ages are tested against real time): at a site both read the same (NTP) time."""
    return _SignsOnClock(COMMAND_KEY.key, clock)


def signed(topic: str, command: BaseModel | dict[str, Any], now_ms: int | None = None,
           key: CommandSigner = COMMAND_KEY) -> bytes:  # fmt: skip
    """The payload the dashboard publishes for ``command`` on ``topic``, signed at ``now_ms`` (the
    receiving gateway's clock; default: the wall clock, for gateways on the system clock)."""
    fields = command.model_dump(mode="json") if isinstance(command, BaseModel) else command
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return key.sign(topic, fields, now, secrets.token_bytes(ID_BYTES))[0]


def command_key_files(folder: Path) -> tuple[Path, Path]:
    """The test command key as files in ``folder``: (private key for a dashboard process, 0600; public
    key for a gateway process). Written once per folder."""
    private = folder / "command-key.pem"
    if not private.exists():
        folder.mkdir(parents=True, exist_ok=True)
        pem = COMMAND_KEY.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        private.touch(mode=SECRET_MODE)
        private.write_bytes(pem)
        write_public_key(public_key_path(private), COMMAND_VERIFIER.key)
    return private, public_key_path(private)


def opened(model: type[P], topic: str, payload: bytes | bytearray | Any, now_ms: int | None = None) -> P:
    """A command the dashboard published, its signature checked with the test key, as ``model``."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return decode(model, verify(COMMAND_VERIFIER, topic, bytes(payload), now).payload)


async def publish_command(
    client: aiomqtt.Client,
    topic: str,
    command: BaseModel | dict[str, Any],
    now_ms: int | None = None,
    *,
    key: CommandSigner = COMMAND_KEY,
    qos: int = 1,
) -> None:
    """Publish ``command`` on ``topic`` as the dashboard does: signed (see ``signed``)."""
    await client.publish(topic, signed(topic, command, now_ms, key), qos=qos)
