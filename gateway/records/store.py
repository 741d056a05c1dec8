"""The nap-check records' SQLite shell: an append-only, hash-chained table in the gateway's database,
its writer and the retention's pruning. The read-only view (dashboard, ``nurserywatch records``) is
gateway/records/reader.py; the running gateway's part (``RecordKeeper``, ``RecordsObserver``) is in
gateway/records/keeper.py.

Append-only at every level: the code only INSERTs; two triggers refuse UPDATE and DELETE on the
table. The triggers stop mistakes and casual edits through the application's connection, not
someone with the file (they can drop the triggers) — that is what the hash chain is for, and
``nurserywatch records verify`` names the first entry that was edited, deleted or inserted.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType

from gateway.child_data.selection import mentions_child
from gateway.db.schema import RECORD_ENTRIES_NO_UPDATE, connect_writer
from gateway.records.entries import (
    GENESIS,
    REDACTED_COLUMNS,
    ChainedEntry,
    ChainHead,
    Entry,
    Erasure,
    RecordsPruned,
    RedactedRef,
    SessionStarted,
    StoredEntry,
    chain,
    decode_stored,
    index_columns,
    redaction_marker,
)
from gateway.records.reader import (
    ENTRY_COLUMNS,
    SELECT_ENTRIES,
    RecordStoreError,
    decoded_entries,
    signed_heads,
    stored_entry,
)
from gateway.records.signing import SignedHead
from nurserywatch.sqlite import connect

log = logging.getLogger(__name__)


class RecordStore:
    """The writer (the gateway's). Not thread-safe: used from the gateway's one event loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = connect_writer(self.path)  # the table and its triggers: gateway/db/schema.py
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot open the records: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def append(self, entries: Sequence[Entry]) -> list[ChainedEntry]:
        """Chain ``entries`` after the current head and insert them, all or none."""
        if not entries:
            return []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT seq, hash FROM record_entries ORDER BY seq DESC LIMIT 1").fetchone()
                chained = chain(GENESIS if row is None else ChainHead(row[0], row[1]), entries)
                for c in chained:
                    cols = index_columns(c.entry)
                    self._db.execute(
                        "INSERT INTO record_entries (seq, body, prev_hash, hash, " + ", ".join(ENTRY_COLUMNS) + ")"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (c.seq, c.body, c.prev_hash, c.hash, *(cols[k] for k in ENTRY_COLUMNS)),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot append nap-check records: {exc}") from None
        return chained

    def head(self) -> ChainHead:
        """The chain's head as stored now (GENESIS when empty)."""
        try:
            row = self._db.execute("SELECT seq, hash FROM record_entries ORDER BY seq DESC LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read the chain's head: {exc}") from None
        return GENESIS if row is None else ChainHead(int(row[0]), str(row[1]))

    def oldest_after(self, seq: int) -> int | None:
        """The earliest time (``ts``) of the entries after ``seq``; None when there are none."""
        try:
            row = self._db.execute("SELECT MIN(ts) FROM record_entries WHERE seq > ?", (seq,)).fetchone()
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read the records: {exc}") from None
        return None if row[0] is None else int(row[0])

    def add_signed_head(self, signed: SignedHead) -> None:
        """Keep a signed day head (gateway/records/signing.py) beside the chain."""
        h = signed.head
        try:
            self._db.execute(
                "INSERT INTO record_day_heads (day, seq, signed_ts, body) VALUES (?, ?, ?, ?)",
                (h.day, h.seq, h.signed_ts, signed.to_json()),
            )
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot store the signed head of {h.day}: {exc}") from None

    def last_signed_head(self) -> SignedHead | None:
        """The signed head with the highest seq (unreadable rows skipped: verify names them)."""
        try:
            readable = [h for h in signed_heads(self._db) if isinstance(h, SignedHead)]
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read the signed heads: {exc}") from None
        return max(readable, key=lambda h: (h.head.seq, h.head.signed_ts), default=None)

    def erase(self, child: str, by: str, ts: int, request: str) -> tuple[ChainedEntry | None, int]:
        """Remove the content of every entry that mentions ``child`` (their records, confirmations,
        corrections, and the session starts listing them) and chain an ``Erasure`` entry naming
        those entries with their links and hashes — one transaction, so ``verify`` never sees a
        redaction without its erasure entry. Returns (the erasure entry or None when nothing
        mentioned the child, entries redacted). Refuses (RecordStoreError) while a session that
        lists the child is open: the running gateway resumes sessions from those entries."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    SELECT_ENTRIES + " WHERE child = ? OR kind = 'session_started' ORDER BY seq", (child,)
                ).fetchall()
                stopped = {r[0] for r in self._db.execute("SELECT session FROM record_entries"
                                                          " WHERE kind = 'session_stopped'")}  # fmt: skip
                targets = []
                for row in rows:
                    try:
                        decoded = decode_stored(stored_entry(row))
                    except ValueError:
                        continue  # unreadable: not ours to judge; verify names it
                    if not mentions_child(decoded.entry, child):
                        continue
                    if isinstance(decoded.entry, SessionStarted) and decoded.entry.session not in stopped:
                        raise RecordStoreError(
                            f"child {child!r} is in the nap session {decoded.entry.session} of room "
                            f"{decoded.entry.room}, which is still open: stop it, then erase"
                        )
                    targets.append(decoded)
                if not targets:
                    self._db.execute("ROLLBACK")
                    return None, 0
                last = self._db.execute("SELECT seq, hash FROM record_entries ORDER BY seq DESC LIMIT 1").fetchone()
                refs = tuple(RedactedRef(seq=t.seq, kind=t.entry.kind, prev_hash=t.prev_hash, hash=t.hash)
                             for t in targets)  # fmt: skip
                (erasure,) = chain(ChainHead(last[0], last[1]), [Erasure(ts=ts, by=by, request=request,
                                                                          redacted=refs)])  # fmt: skip
                cols = index_columns(erasure.entry)
                self._db.execute(
                    "INSERT INTO record_entries (seq, body, prev_hash, hash, " + ", ".join(ENTRY_COLUMNS) + ")"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (erasure.seq, erasure.body, erasure.prev_hash, erasure.hash, *(cols[k] for k in ENTRY_COLUMNS)),
                )
                # The one sanctioned UPDATE: lifted and restored inside this transaction only.
                self._db.execute("DROP TRIGGER IF EXISTS record_entries_no_update")
                blank = [REDACTED_COLUMNS[k] for k in ENTRY_COLUMNS]
                self._db.executemany(
                    "UPDATE record_entries SET body = ?, "
                    + ", ".join(f"{k} = ?" for k in ENTRY_COLUMNS)
                    + " WHERE seq = ?",
                    [(redaction_marker(t.seq, t.prev_hash, erasure.seq), *blank, t.seq) for t in targets],
                )
                self._db.execute(RECORD_ENTRIES_NO_UPDATE)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot erase from the nap-check records: {exc}") from None
        return erasure, len(targets)

    def mentioning(self, child: str) -> list[ChainedEntry]:
        """Every readable entry that mentions ``child`` (for an export), in seq order."""
        try:
            rows = self._db.execute(
                SELECT_ENTRIES + " WHERE child = ? OR kind = 'session_started' ORDER BY seq", (child,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read the nap-check records: {exc}") from None
        return [e for e in decoded_entries(rows) if mentions_child(e.entry, child)]

    def entry(self, seq: int) -> ChainedEntry | None:
        try:
            row = self._db.execute(SELECT_ENTRIES + " WHERE seq = ?", (seq,)).fetchone()
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read entry {seq}: {exc}") from None
        if row is None:
            return None
        try:
            return decode_stored(stored_entry(row))
        except ValueError:
            return None  # unreadable (tampered): not something staff can confirm; verify names it

    def confirmed_by(self, seq: int) -> list[str]:
        try:
            rows = self._db.execute(
                "SELECT body FROM record_entries WHERE kind = 'confirmation' AND refers = ?", (seq,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read confirmations: {exc}") from None
        return [str(e.entry.by) for e in (_decode_body(seq, r[0]) for r in rows) if e is not None]

    def open_sessions(self) -> list[tuple[SessionStarted, dict[str, int]]]:
        """Sessions started and not stopped, with the end of each child's last written record."""
        try:
            rows = self._db.execute(
                SELECT_ENTRIES + " WHERE kind = 'session_started' AND session NOT IN"
                " (SELECT session FROM record_entries WHERE kind = 'session_stopped') ORDER BY seq"
            ).fetchall()
            out: list[tuple[SessionStarted, dict[str, int]]] = []
            for row in rows:
                try:
                    started = decode_stored(stored_entry(row)).entry
                except ValueError:
                    log.error(
                        "records: entry %s (a session start) is unreadable; run `nurserywatch records verify`", row[0]
                    )
                    continue
                assert isinstance(started, SessionStarted)
                written = self._db.execute(
                    "SELECT child, MAX(ts) FROM record_entries WHERE kind = 'record' AND session = ? GROUP BY child",
                    (started.session,),
                ).fetchall()
                out.append((started, {c: int(ts) for c, ts in written}))
        except sqlite3.Error as exc:
            raise RecordStoreError(f"{self.path}: cannot read open sessions: {exc}") from None
        return out


def _decode_body(seq: int, body: str) -> ChainedEntry | None:
    try:
        return decode_stored(StoredEntry(seq, "", "", body, {}))
    except ValueError:
        return None


def prune_records(path: str | Path, before_ts: int, now_ms: int) -> int:
    """Retention (kit ``retention.records_days``): delete the longest run of entries from the start of
    the chain whose times are all before ``before_ts`` (a local midnight: whole days), stopping at
    the first session still open, and chain a ``pruned`` anchor naming the last deleted entry and its
    hash — one transaction, so verify always finds the anchor it starts from. Returns entries deleted.
    Earlier anchors are pruned with the rest (the new one supersedes them); a confirmation or
    correction made within the retention period keeps everything after it (prefix only)."""
    with closing(connect(path, synchronous=None)) as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'record_entries'").fetchone() is None:
            return 0  # no records kept in this file (yet)
        db.execute("BEGIN IMMEDIATE")
        try:
            keep = db.execute(
                "SELECT MIN(seq) FROM record_entries WHERE (ts >= ? AND kind != 'pruned') OR (kind = 'session_started'"
                " AND session NOT IN (SELECT session FROM record_entries WHERE kind = 'session_stopped'))",
                (before_ts,),
            ).fetchone()[0]
            first, last = db.execute("SELECT MIN(seq), MAX(seq) FROM record_entries").fetchone()
            upto = (last if keep is None else int(keep) - 1) if first is not None else 0
            if first is None or upto < first:
                db.execute("ROLLBACK")
                return 0
            hashes = dict(db.execute("SELECT seq, hash FROM record_entries WHERE seq IN (?, ?)", (upto, last)))
            count = upto - int(first) + 1
            pruned = RecordsPruned(ts=now_ms, upto_seq=upto, upto_hash=hashes[upto], before_ts=before_ts, entries=count)
            (anchor,) = chain(ChainHead(int(last), hashes[last]), [pruned])
            cols = index_columns(anchor.entry)
            db.execute(
                "INSERT INTO record_entries (seq, body, prev_hash, hash, " + ", ".join(ENTRY_COLUMNS) + ")"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (anchor.seq, anchor.body, anchor.prev_hash, anchor.hash, *(cols[k] for k in ENTRY_COLUMNS)),
            )
            # The one sanctioned DELETE: the trigger is lifted and restored (as it was) in this transaction.
            trigger = db.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'record_entries_no_delete'"
            ).fetchone()
            db.execute("DROP TRIGGER IF EXISTS record_entries_no_delete")
            db.execute("DELETE FROM record_entries WHERE seq <= ?", (upto,))
            if trigger is not None:
                db.execute(trigger[0])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    log.info("records: pruned entries %d–%d (before %d), anchor entry %d", first, upto, before_ts, anchor.seq)
    return count


def append_head_log(path: str | Path, signed: SignedHead) -> None:
    """Append a signed head to the log file beside the key (one JSON line; created 0600): a copy the
    database's holder cannot reach, so removing heads from the database shows. Raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (signed.to_json() + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
