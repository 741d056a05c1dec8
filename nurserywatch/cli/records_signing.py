"""The records' site key on disk, for the commands (docs/records.md, "Signed day heads"): where the
key, its public half and the heads log live, the gateway's signing set-up, ``records sign`` and the
signature part of ``records verify``. The signing itself is gateway/records/signing.py (pure); key
files are nurserywatch/keys.py.

Files, for a key at ``K`` (default: ``records-signing.key`` beside the gateway's database):
``K`` the private key (0600), ``K.pub`` its public key (for auditors), ``K.heads`` every signed head,
one JSON line each, appended — a copy out of reach of whoever holds only the database file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.records.entries import VerifyResult
from gateway.records.keeper import RecordsSigning
from gateway.records.reader import RecordReader, RecordStoreError, read_head_log
from gateway.records.signing import KEY_FILE, DaySigner, HeadsCheck, SignedHead, check_heads, local_day
from gateway.records.store import RecordStore, append_head_log
from nurserywatch.keys import KeyFileError, key_id, load_or_create_private_key, load_private_key, public_key_path

log = logging.getLogger(__name__)

#: The key's path when ``--records-key`` is not given.
KEY_ENV = "NURSERYWATCH_RECORDS_KEY"


def key_path(option: Path | None, db: Path) -> Path:
    """``--records-key``, else $NURSERYWATCH_RECORDS_KEY, else ``records-signing.key`` beside the database."""
    if option is not None:
        return option
    env = os.environ.get(KEY_ENV)
    return Path(env) if env else db.parent / KEY_FILE


def heads_log_path(key: Path) -> Path:
    return key.with_suffix(".heads")


def open_signing(key: Path) -> RecordsSigning:
    """The gateway's signing set-up: the key at ``key`` — made there on first start, said in the log
    — and its heads log beside it. Raises KeyFileError."""
    private, created = load_or_create_private_key(key)
    kid = key_id(private.public_key())
    if created:
        log.warning(
            "records: made a new site key for signing the nap-check records' day heads: %s (key %s); "
            "give its public key %s to whoever audits the records, and keep the key itself out of reach "
            "of anyone who can copy the database (docs/records.md, \"Signed day heads\")",
            key, kid, public_key_path(key),
        )  # fmt: skip
    else:
        log.info("records: day heads are signed with key %s (%s)", kid, key)
    logfile = heads_log_path(key)
    return RecordsSigning(private, lambda signed: append_head_log(logfile, signed))


def sign_now(db: Path, key: Path, now_ms: int, tz: ZoneInfo, site: str) -> SignedHead:
    """``records sign``: sign the chain's head now, labelled with today's local date, into the
    database and the heads log. Raises KeyFileError, RecordStoreError, OSError."""
    private = load_private_key(key)
    with RecordStore(db) as store:
        head = store.head()
        if head.seq == 0:
            raise RecordStoreError(f"{db}: holds no nap-check records to sign")
        signed = DaySigner(private, site, tz, None).sign(now_ms, head, local_day(now_ms, tz))
        store.add_signed_head(signed)
    append_head_log(heads_log_path(key), signed)
    return signed


@dataclass(frozen=True, slots=True)
class SignatureReport:
    """The signature part of ``records verify``."""

    check: HeadsCheck | None  # None: not checked (no public key)
    #: Heads stored in the database (readable ones).
    stored: int
    #: The first entry after the last signed head (None: every entry is signed).
    unsigned_from: int | None


def check_signatures(db: Path, chain: VerifyResult, keys: list[Ed25519PublicKey], heads_file: Path | None
                     ) -> SignatureReport:  # fmt: skip
    """Every signed day head of ``db`` (and of ``heads_file``) against ``keys`` and the intact ``chain``.
    Raises RecordStoreError (an unreadable file)."""
    reader = RecordReader(db)
    rows = reader.signed_heads()
    heads = [h for h in rows if isinstance(h, SignedHead)]
    if not keys:
        signed_upto = max((h.head.seq for h in heads), default=0)
        return SignatureReport(None, len(heads), _unsigned_from(signed_upto, chain))
    broken = [r for r in rows if isinstance(r, int)]
    if broken:
        check = HeadsCheck(0, None, f"signed head row {broken[0]} of the database is unreadable — edited")
        return SignatureReport(check, len(heads), None)
    logged = read_head_log(heads_file) if heads_file is not None else []
    anchor = reader.pruned_anchor()

    def hash_at(seq: int) -> str | None:
        return anchor.hash if anchor is not None and seq == anchor.seq else reader.hash_at(seq)

    first = anchor.seq if anchor is not None else (reader.first_seq() or 1)
    check = check_heads(heads, keys, chain, first, hash_at, logged=logged, log_name=str(heads_file))
    signed_upto = check.last.seq if check.last is not None else 0
    return SignatureReport(check, len(heads), _unsigned_from(signed_upto, chain))


def _unsigned_from(signed_upto: int, chain: VerifyResult) -> int | None:
    return signed_upto + 1 if chain.head.seq > signed_upto else None


def default_public_key(db: Path) -> Path | None:
    """The public key beside the gateway's key ($NURSERYWATCH_RECORDS_KEY or beside the database), if there."""
    found = public_key_path(key_path(None, db))
    return found if found.is_file() else None


__all__ = ["KEY_ENV", "KeyFileError", "check_signatures", "heads_log_path", "key_path", "open_signing", "sign_now"]
