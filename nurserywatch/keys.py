"""Ed25519 key files: the one loader and writer for the site's signing keys (the records' day-head
key, docs/records.md "Signed day heads"; any other signing key of the stack belongs here too).

A private key is a PKCS#8 PEM file with mode 0600, written atomically so it is never readable by
others, not even for a moment; its public key is a SubjectPublicKeyInfo PEM beside it (0644), the
file auditors keep. A key file that is readable by group or others is refused: a signing key anyone
on the machine can copy proves nothing.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


class KeyFileError(Exception):
    """A key file that is missing, unreadable, not an Ed25519 key, or too open. The message names the file."""


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name of a public key: the first 16 hex digits of SHA-256 of its raw 32 bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_path(private_path: Path) -> Path:
    """Where the public key of ``private_path`` is written: the same name with ``.pub``."""
    return private_path.with_suffix(".pub")


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file with mode 0600 (or stricter); raises KeyFileError."""
    try:
        info = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key: {exc.strerror or exc}") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise KeyFileError(
            f"{path}: mode {stat.S_IMODE(info.st_mode):04o} lets others read the signing key; "
            f"chmod 600 it (and consider it exposed: replace it if others could read it)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM private key without a passphrase ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; raises KeyFileError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the public key: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def create_private_key(path: Path) -> Ed25519PrivateKey:
    """Generate a key and write it to ``path`` (0600; its folder is created 0700) and its public key
    beside it (``public_key_path``, 0644). Refuses to overwrite an existing key: replacing a signing
    key is a decision, not a side effect. Raises KeyFileError."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_new_file(path, pem, SECRET_MODE)
    except FileExistsError:
        raise KeyFileError(f"{path}: a key is already there; it is kept (delete it to make a new one)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write the key: {exc.strerror or exc}") from None
    write_public_key(public_key_path(path), key.public_key())
    return key


def write_public_key(path: Path, public: Ed25519PublicKey) -> None:
    """(Re)write a public key file atomically, mode 0644. Raises KeyFileError."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        write_new_file(tmp, public_pem(public), PUBLIC_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyFileError(f"{path}: cannot write the public key: {exc.strerror or exc}") from None


def load_or_create_private_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key at ``path``, or a new one written there when the file does not exist (True: created).
    Its public key file is re-written when missing. Raises KeyFileError."""
    if not path.exists():
        return create_private_key(path), True
    key = load_private_key(path)
    if not public_key_path(path).exists():
        write_public_key(public_key_path(path), key.public_key())
    return key, False


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (never an existing one) with ``mode`` from its first byte, write and fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits of PUBLIC_MODE
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
