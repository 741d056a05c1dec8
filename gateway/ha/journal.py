"""The gateway's journal: every committed write to its SQLite file, replicated through a JetStream
stream (``SiteLayout.state_stream``) so that a standby instance holds the same file and can take
over — the same open alerts and ids, sessions, assignments and records chain.

* ``StatementRecorder`` captures, on every writer connection to the file (whichever module opens it:
  the store, the records, the assignments, the child data, the retention job — all go through
  nurserywatch/sqlite.py ``connect``), the statements that succeeded, with their exact parameters
  (``set_trace_callback``'s expanded SQL would round floats to 15 digits and repeat statements that
  fire triggers), grouped by transaction; a rolled-back transaction or savepoint is dropped, and a
  schema migration or a guard re-created on opening is not journaled (each instance keeps its own
  file's schema; DDL inside a transaction, as a records erasure's, is). No statement of the
  gateway's is non-deterministic (no ``datetime('now')``/``random()``: the values are bound from
  the injected clock), so replaying them on an equal file gives an equal file.
* ``Journal.append`` publishes one entry per flush with ``Nats-Expected-Last-Sequence``: JetStream
  refuses it if anyone else appended since this instance's last entry — ``Fenced``: another instance
  took over (its ``takeover`` entry moved the sequence on).
* ``apply_entry`` replays an entry on a standby's file in one transaction, with the entry's sequence
  recorded in ``journal_state`` (gateway/db/schema.py, migration 4); ``JournalTail`` follows the
  stream with an ordered consumer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
from nats.js import JetStreamContext, api
from nats.js.errors import APIError

from nurserywatch.cancellation import raise_if_cancel_was_swallowed
from nurserywatch.jetstream import SiteLayout
from nurserywatch.sqlite import set_writer_factory

log = logging.getLogger(__name__)

#: A statement and the parameter rows it ran with (one row for ``execute``, several for ``executemany``).
Statement = tuple[str, list[Any]]
Txn = list[Statement]

#: An entry's payload at most this big (JetStream's default max_payload is 1 MiB); a bigger
#: flush goes out as several messages, the last one without ``more``, applied together.
MAX_ENTRY_BYTES = 512 * 1024
#: JetStream's error code for a publish whose Nats-Expected-Last-Sequence did not hold.
WRONG_LAST_SEQUENCE = 10071

_SKIP = frozenset({"SELECT", "PRAGMA", "BEGIN", "COMMIT", "END", "EXPLAIN", "ANALYZE"})
_DDL = frozenset({"CREATE", "DROP", "ALTER"})


class Fenced(Exception):
    """This instance's append was refused: another one appended since (it took over)."""


def _first_word(sql: str) -> str:
    return sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""


def _savepoint_name(sql: str) -> str:
    words = sql.replace(";", " ").split()
    return words[-1].strip('"').lower() if words else ""


def _encode_value(v: Any) -> Any:
    if isinstance(v, bytes | bytearray | memoryview):
        return {"b": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, bool):
        return int(v)
    return v


def _decode_value(v: Any) -> Any:
    return base64.b64decode(v["b"]) if isinstance(v, dict) else v


def _encode_row(row: Any) -> Any:
    if isinstance(row, dict):
        return {"n": {k: _encode_value(x) for k, x in row.items()}}
    return [_encode_value(x) for x in row]


def _decode_row(row: Any) -> Any:
    if isinstance(row, dict):
        return {k: _decode_value(x) for k, x in row["n"].items()}
    return [_decode_value(x) for x in row]


@dataclass
class _ConnState:
    txn: Txn = field(default_factory=list)
    marks: list[tuple[str, int]] = field(default_factory=list)
    migration: bool = False
    ticket: int | None = None

    def reset(self) -> None:
        self.txn, self.marks, self.migration, self.ticket = [], [], False, None


class StatementRecorder:
    """Records the committed writes to one SQLite file made in this process, from ``install()`` on.
    ``collect()`` hands out the transactions committed since the last call, in commit order."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._tickets = 0
        self._done: list[tuple[int, Txn]] = []
        self._open: dict[int, tuple[sqlite3.Connection, _ConnState]] = {}
        recorder = self

        class RecordingConnection(sqlite3.Connection):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                recorder._register(self)
                # `with db:` commits and rolls back without execute(): the trace sees those.
                self.set_trace_callback(lambda sql: recorder._traced(self, sql))

            def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
                cur = super().execute(sql, parameters)
                recorder._note(self, sql, [parameters])
                return cur

            def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
                rows = list(parameters)
                cur = super().executemany(sql, rows)
                recorder._note(self, sql, rows)
                return cur

            def close(self) -> None:
                recorder._sweep(self)
                recorder._unregister(self)
                super().close()

        self.connection_class: type[sqlite3.Connection] = RecordingConnection

    def install(self) -> None:
        set_writer_factory(self.path, self.connection_class)

    def uninstall(self) -> None:
        set_writer_factory(self.path, None)

    # -------------------------------------------------------------- called by the connections

    def _register(self, db: sqlite3.Connection) -> None:
        with self._lock:
            self._open[id(db)] = (db, _ConnState())

    def _unregister(self, db: sqlite3.Connection) -> None:
        with self._lock:
            self._open.pop(id(db), None)

    def _traced(self, db: sqlite3.Connection, sql: str) -> None:
        if sql.strip().upper().rstrip(";").strip() == "ROLLBACK":
            with self._lock:
                entry = self._open.get(id(db))
                if entry is not None:
                    entry[1].reset()

    def _note(self, db: sqlite3.Connection, sql: str, rows: list[Any]) -> None:
        word = _first_word(sql)
        with self._lock:
            entry = self._open.get(id(db))
            if entry is None:
                return
            st = entry[1]
            upper = " ".join(sql.upper().split())
            if word == "PRAGMA" and "USER_VERSION" in upper and "=" in upper:
                st.migration = True
            elif word == "SAVEPOINT":
                st.marks.append((_savepoint_name(sql), len(st.txn)))
            elif word == "RELEASE":
                name = _savepoint_name(sql)
                while st.marks and st.marks.pop()[0] != name:
                    pass
            elif word == "ROLLBACK" and " TO " in f" {upper} ":
                name = _savepoint_name(sql)
                for mark_name, length in reversed(st.marks):
                    if mark_name == name:
                        del st.txn[length:]
                        break
            elif word == "ROLLBACK":
                st.reset()
            elif word in _DDL and not db.in_transaction:
                pass  # a writer's schema upkeep on opening the file (its guards): each instance does its own
            elif word not in _SKIP:
                if st.ticket is None:
                    self._tickets += 1
                    st.ticket = self._tickets
                st.txn.append((sql, [_encode_row(r) for r in rows]))
            if not db.in_transaction:
                self._finish(st)

    def _finish(self, st: _ConnState) -> None:
        if st.txn and not st.migration and st.ticket is not None:
            self._done.append((st.ticket, st.txn))
        st.reset()

    def _sweep(self, db: sqlite3.Connection | None = None) -> None:
        """Transactions committed without execute() (``with db:``) are done once out of the transaction."""
        with self._lock:
            for conn, st in list(self._open.values()):
                if db is not None and conn is not db:
                    continue
                try:
                    busy = conn.in_transaction
                except sqlite3.ProgrammingError:  # closed
                    busy = False
                if st.txn and not busy:
                    self._finish(st)

    def collect(self) -> list[Txn]:
        """The transactions committed since the last call, in commit order."""
        self._sweep()
        with self._lock:
            done, self._done = self._done, []
        return [txn for _ticket, txn in sorted(done, key=lambda d: d[0])]


# ------------------------------------------------------------------ entries


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal message: ``commit`` (transactions to replay) or ``takeover`` (an instance became
    the active one: nothing to replay, but it moves the sequence on and so fences the one before)."""

    kind: str
    instance: str
    txns: list[Txn]
    #: More messages of the same flush follow: apply them together.
    more: bool = False

    def to_bytes(self) -> bytes:
        body = {"v": 1, "kind": self.kind, "instance": self.instance, "txns": self.txns, "more": self.more}
        return zlib.compress(json.dumps(body, separators=(",", ":")).encode())

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        body = json.loads(zlib.decompress(data))
        return cls(body["kind"], body["instance"], body["txns"], bool(body.get("more")))


def split_entries(kind: str, instance: str, txns: Sequence[Txn], max_bytes: int = MAX_ENTRY_BYTES) -> list[Entry]:
    """``txns`` as entries of at most about ``max_bytes`` each (a transaction is never split unless it
    alone is bigger: then its statements are, and the ``more`` flag keeps them one unit)."""
    units: list[Txn] = []
    for txn in txns:
        units.extend(_chunks(txn, max_bytes) if _size(txn) > max_bytes else [txn])
    entries: list[list[Txn]] = [[]]
    size = 0
    for unit in units:
        n = _size(unit)
        if entries[-1] and size + n > max_bytes:
            entries.append([])
            size = 0
        entries[-1].append(unit)
        size += n
    last = len(entries) - 1
    return [Entry(kind, instance, e, more=i < last) for i, e in enumerate(entries)]


def _size(txn: Txn) -> int:
    return len(json.dumps(txn, separators=(",", ":")))


def _chunks(txn: Txn, max_bytes: int) -> Iterator[Txn]:
    chunk: Txn = []
    size = 0
    for sql, rows in txn:
        for row in rows:
            n = len(sql) + len(json.dumps(row))
            if chunk and size + n > max_bytes:
                yield chunk
                chunk, size = [], 0
            chunk.append((sql, [row]))
            size += n
    if chunk:
        yield chunk


# ------------------------------------------------------------------ the local file's place in the journal

APPLIED_SEQ = "applied_seq"
#: "active": this file took writes of its own (as the active instance); whether the last of them
#: reached the journal is unknown after a crash, so it is rebuilt from the journal before it stands by.
ROLE = "role"


def read_state(db: sqlite3.Connection) -> dict[str, str]:
    return {k: v for k, v in db.execute("SELECT key, value FROM journal_state")}


def write_state(db: sqlite3.Connection, **values: str | int) -> None:
    db.executemany(
        "INSERT INTO journal_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [(k, str(v)) for k, v in values.items()],
    )


def apply_entries(db: sqlite3.Connection, seq: int, entries: Sequence[Entry]) -> int:
    """Replay ``entries`` (one flush; the last has sequence ``seq``) in one transaction and record
    ``seq`` as applied. Returns the statements that failed (0 unless the file diverged)."""
    failed = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        for entry in entries:
            for txn in entry.txns:
                for sql, rows in txn:
                    for row in rows:
                        try:
                            db.execute(sql, _decode_row(row))
                        except sqlite3.IntegrityError as exc:
                            failed += 1
                            log.error("journal entry %d: %s failed on this file: %s", seq, sql.split("(")[0], exc)
        write_state(db, **{APPLIED_SEQ: seq})
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return failed


# ------------------------------------------------------------------ JetStream


async def ensure_state_stream(js: JetStreamContext, layout: SiteLayout, replicas: int) -> None:
    """Create the journal stream if it is missing (kit provisioning may have made it)."""
    try:
        await js.stream_info(layout.state_stream)
    except APIError as exc:
        if exc.code != 404 and exc.err_code != 10059:
            raise
        cfg = api.StreamConfig.from_response(dict(layout.state_stream_config(), num_replicas=replicas))
        await js.add_stream(cfg)


class Journal:
    """Appends this instance's entries, fenced by the last sequence it knows."""

    def __init__(self, js: JetStreamContext, layout: SiteLayout, instance: str, last_seq: int) -> None:
        self.js = js
        self.layout = layout
        self.instance = instance
        self.last_seq = last_seq
        self.appended = 0

    async def append(
        self, txns: Sequence[Txn], kind: str = "commit", *, check: Callable[[], None] | None = None,
        timeout_s: float = 2.0,
    ) -> int:  # fmt: skip
        """Publish ``txns`` (one message, or several for a big flush); the new last sequence.
        Raises Fenced when another instance appended since ``last_seq``. A request that timed out
        (the cluster electing a leader) is sent again, the same message id making it count once,
        for as long as ``check`` (the lease) does not raise."""
        for entry in split_entries(kind, self.instance, txns):
            headers = {
                api.Header.EXPECTED_LAST_SEQUENCE.value: str(self.last_seq),
                api.Header.MSG_ID.value: f"{self.instance}:{self.last_seq}",
            }
            data = entry.to_bytes()
            while True:
                raise_if_cancel_was_swallowed()
                if check is not None:
                    check()
                try:
                    ack = await self.js.publish(self.layout.state_subject, data, timeout=timeout_s,
                                                stream=self.layout.state_stream, headers=headers)  # fmt: skip
                    seq = int(ack.seq)
                    break
                except APIError as exc:
                    if exc.err_code == WRONG_LAST_SEQUENCE:
                        # Our own earlier try, stored though its answer was lost? (The sequence check
                        # comes before the message id's deduplication in JetStream.)
                        if await self._stored_as_next(headers[api.Header.MSG_ID.value]):
                            seq = self.last_seq + 1
                            break
                        raise Fenced(f"journal append after seq {self.last_seq} refused: {exc.description}") from None
                    if exc.code is not None and exc.code < 500:
                        raise
                    log.warning("journal: append failed (%s); sending it again", exc)
                except (TimeoutError, nats.errors.Error) as exc:  # no answer, no responders, reconnecting
                    log.warning("journal: append got no answer (%r); sending it again", exc)
                await asyncio.sleep(0.1)
            self.last_seq = seq
            self.appended += 1
        return self.last_seq

    async def _stored_as_next(self, msg_id: str) -> bool:
        try:
            msg = await self.js.get_msg(self.layout.state_stream, seq=self.last_seq + 1)
        except APIError:
            return False
        return (msg.headers or {}).get(api.Header.MSG_ID.value) == msg_id

    async def last_stream_seq(self) -> int:
        info = await self.js.stream_info(self.layout.state_stream)
        return int(info.state.last_seq)


class JournalTail:
    """Follows the journal from ``after`` + 1 with an ordered consumer and applies it to ``db``."""

    def __init__(self, js: JetStreamContext, layout: SiteLayout, db: sqlite3.Connection, after: int) -> None:
        self.js = js
        self.layout = layout
        self.db = db
        self.applied = after
        self.failed = 0
        self._pending: list[Entry] = []
        self._sub: Any = None

    async def _subscribe(self) -> None:
        if self._sub is not None:
            return
        cfg = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.applied + 1)
        # Heartbeats: an ordered consumer left on a node that died is noticed and made again.
        self._sub = await self.js.subscribe(self.layout.state_subject, stream=self.layout.state_stream,
                                            ordered_consumer=True, config=cfg, idle_heartbeat=1.0)  # fmt: skip

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def step(self, timeout_s: float) -> bool:
        """Apply the next message if one comes within ``timeout_s``; False if none came."""
        await self._subscribe()
        try:
            msg = await self._sub.next_msg(timeout=timeout_s)
        except TimeoutError:  # nats.errors.TimeoutError too
            raise_if_cancel_was_swallowed()
            return False
        raise_if_cancel_was_swallowed()
        seq = int(msg.metadata.sequence.stream)
        if seq <= self.applied:
            return True  # a redelivery the ordered consumer already gave
        entry = Entry.from_bytes(msg.data)
        self._pending.append(entry)
        if not entry.more:
            self.failed += apply_entries(self.db, seq, self._pending)  # a standby has nothing else to do
            self._pending = []
            self.applied = seq
        return True

    async def catch_up(self, stall_s: float = 10.0) -> int:
        """Apply up to the stream's last sequence (as it is now); the sequence applied. However long
        the journal, as long as it comes: TimeoutError when nothing came for ``stall_s``."""
        last = int((await self.js.stream_info(self.layout.state_stream)).state.last_seq)
        quiet_since = time.monotonic()
        while self.applied < last or self._pending:
            if await self.step(1.0):
                quiet_since = time.monotonic()
                continue
            if time.monotonic() - quiet_since > stall_s:
                raise TimeoutError(f"journal: nothing after seq {self.applied} for {stall_s:g} s (last is {last})")
            await self.close()  # a second without the entries that are there: follow it afresh
            self._pending = []
        return self.applied


__all__ = [
    "Entry",
    "Fenced",
    "Journal",
    "JournalTail",
    "StatementRecorder",
    "apply_entries",
    "ensure_state_stream",
    "read_state",
    "write_state",
]
