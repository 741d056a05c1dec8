"""The read side of the nap-check records (the writer is ``RecordStore``, gateway/records/store.py):
reading, listing and verifying the hash chain for the dashboard and ``nurserywatch records``. It
loads no engine, rules or service module, so the dashboard's read interface (gateway/read.py) stays
apart from the running gateway. The row layout it reads (``ENTRY_COLUMNS``, ``SELECT_ENTRIES``) is
shared with the writer.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from gateway.records.entries import (
    ChainedEntry,
    ChainHead,
    RecordsPruned,
    StoredEntry,
    VerifyResult,
    decode_stored,
    verify_chain,
)
from gateway.records.signing import SignedHead
from nurserywatch.sqlite import connect

log = logging.getLogger(__name__)

#: The index columns of ``record_entries`` beside seq, hashes and body (entries.index_columns).
ENTRY_COLUMNS = ("kind", "ts", "room", "child", "session", "refers")

SELECT_ENTRIES = "SELECT seq, prev_hash, hash, body, " + ", ".join(ENTRY_COLUMNS) + " FROM record_entries"


class RecordStoreError(Exception):
    """The records could not be opened, read or written."""


def stored_entry(row: Sequence[Any]) -> StoredEntry:
    """One row of ``SELECT_ENTRIES``."""
    return StoredEntry(row[0], row[1], row[2], row[3], dict(zip(ENTRY_COLUMNS, row[4:], strict=True)))


class RecordReader:
    """Read-only view (dashboard, CLI): a fresh ``mode=ro`` connection per call, so it can never
    write and always sees the gateway's latest commits."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self.path.is_file():
            raise RecordStoreError(f"{self.path}: file not found")
        try:
            with closing(connect(self.path, readonly=True)) as db:
                if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'record_entries'").fetchone() is None:
                    raise RecordStoreError(f"{self.path}: holds no nap-check records (not a gateway database?)")
                yield db
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read the nap-check records: {exc}") from None

    def stored(self) -> Iterator[StoredEntry]:
        """Every row in seq order, streamed (verification of a year of records stays small)."""
        with self._connect() as db:
            for row in db.execute(SELECT_ENTRIES + " ORDER BY seq"):
                yield stored_entry(row)

    def verify(self) -> VerifyResult:
        return verify_chain(self.stored(), self.pruned_anchor())

    def pruned_anchor(self) -> ChainHead | None:
        """Where the chain starts after retention pruned its beginning: the last ``pruned`` entry's
        (upto_seq, upto_hash). That entry is itself in the chain, so verify checks it like any other."""
        with self._connect() as db:
            row = db.execute(SELECT_ENTRIES + " WHERE kind = 'pruned' ORDER BY seq DESC LIMIT 1").fetchone()
        try:
            entry = None if row is None else decode_stored(stored_entry(row)).entry
        except ValueError:
            return None  # unreadable: verify names that entry
        return ChainHead(entry.upto_seq, entry.upto_hash) if isinstance(entry, RecordsPruned) else None

    def entry(self, seq: int) -> ChainedEntry | None:
        with self._connect() as db:
            row = db.execute(SELECT_ENTRIES + " WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else decode_stored(stored_entry(row))

    def hash_at(self, seq: int) -> str | None:
        """The stored hash of entry ``seq`` (also of a redacted one), for ``verify --expect-head``."""
        with self._connect() as db:
            row = db.execute("SELECT hash FROM record_entries WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    def signed_heads(self) -> list[SignedHead | int]:
        """Every signed day head in the file, oldest first; an unreadable row as its row id."""
        with self._connect() as db:
            return signed_heads(db)

    def first_seq(self) -> int | None:
        with self._connect() as db:
            row = db.execute("SELECT MIN(seq) FROM record_entries").fetchone()
        return None if row[0] is None else int(row[0])

    def rooms(self) -> list[str]:
        with self._connect() as db:
            # '' is the room of erasure entries and redacted ones (they belong to no room)
            return [r[0] for r in db.execute("SELECT DISTINCT room FROM record_entries WHERE room != '' ORDER BY room")]

    def records(self, room: str, start_ms: int, end_ms: int) -> tuple[list[ChainedEntry], list[ChainedEntry]]:
        """The records of ``room`` with check times in ``[start_ms, end_ms)`` and every confirmation and
        correction about them (whenever they were made). Unreadable rows are skipped — run verify."""
        with self._connect() as db:
            rows = db.execute(
                SELECT_ENTRIES + " WHERE room = ? AND kind = 'record' AND ts >= ? AND ts < ? ORDER BY ts, child, seq",
                (room, start_ms, end_ms),
            ).fetchall()
            records = decoded_entries(rows)
            followups: list[ChainedEntry] = []
            pending = [r.seq for r in records]
            while pending:  # confirmations of corrections refer to the correction
                marks = ",".join("?" * len(pending[:500]))
                found = decoded_entries(
                    db.execute(SELECT_ENTRIES + f" WHERE refers IN ({marks}) ORDER BY seq", pending[:500]).fetchall()
                )
                pending = pending[500:] + [f.seq for f in found if f.entry.kind == "correction"]
                followups += found
        followups.sort(key=lambda e: e.seq)
        return records, followups


def signed_heads(db: sqlite3.Connection) -> list[SignedHead | int]:
    """The rows of ``record_day_heads`` (none in a file older than schema version 3), oldest first;
    an unreadable row as its row id. Raises sqlite3.Error."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'record_day_heads'").fetchone() is None:
        return []
    out: list[SignedHead | int] = []
    for row_id, body in db.execute("SELECT id, body FROM record_day_heads ORDER BY id"):
        try:
            out.append(SignedHead.from_json(body))
        except ValueError:
            out.append(int(row_id))
    return out


def read_head_log(path: str | Path) -> list[SignedHead]:
    """The signed heads of a log file (``append_head_log``). Raises RecordStoreError naming the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordStoreError(f"{path}: cannot read the signed heads: {exc}") from None
    lines = text.split("\n")[:-1]  # a last line without its newline is a write cut short by a crash
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(SignedHead.from_json(line))
        except ValueError as exc:
            raise RecordStoreError(f"{path}:{n}: not a signed head ({exc})") from None
    return out


def decoded_entries(rows: Iterable[Sequence[Any]]) -> list[ChainedEntry]:
    out = []
    for row in rows:
        try:
            out.append(decode_stored(stored_entry(row)))
        except ValueError:
            log.warning("records: entry %s is unreadable and left out; run `nurserywatch records verify`", row[0])
    return out


def verify_file(path: str | Path) -> VerifyResult:
    """Walk the whole chain of a database file. Raises RecordStoreError when it cannot be read."""
    return RecordReader(path).verify()
