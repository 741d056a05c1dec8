"""On-disk store-and-forward queue: every reading waits here until the broker has acknowledged it.

    spool = Spool(path, max_bytes=..., max_age_s=..., clock=clock)
    spool.put(topic, payload)      # the agent's tick, for every reading
    spool.commit()                 # once per tick: one transaction, so kill -9 loses at most ~1 s
    msg = spool.peek()             # the publisher: oldest message (or None), wait on spool.ready
    spool.pop(msg)                 # only after the broker's PUBACK (aiomqtt publish at QoS 1 returned)

Storage is one SQLite file in WAL mode with ``synchronous=FULL``: a committed batch survives a
kill -9 *and* a power cut (the usual way a Pi dies is someone pulling the plug), for one WAL fsync
per second — ~0.1 ms here, a few ms on an SD card (bench/spool_sync.py measures both modes).
``NORMAL`` would survive kill -9 equally well but could roll back minutes of queued readings on a
power cut (WAL is only synced at checkpoints).

Delivery is at-least-once: a message acknowledged by the broker whose delete is not committed yet
(crash within the second) is published again by the next process. That is correct because readings
are replayed byte for byte with their original ``ts`` and ``seq`` and the gateway drops a repeated
``(device, seq, ts)`` (docs/contract.md).

Bounds (kit file, per agent): the queue holds at most ``max_bytes`` (topic + payload + ROW_OVERHEAD
per message) and nothing older than ``max_age_s``; past a bound the OLDEST messages are dropped,
counted in ``dropped`` by reason (``spool_full``, ``spool_expired``) and logged at most once a minute.

Failures never stop collection: a file that is not a usable SQLite database is moved aside
(``*.corrupt-<unix ms>``) and a fresh one created; if the disk cannot be used at all (full, read-only,
I/O error, another agent holds the spool's lock) the spool logs an error and keeps queueing in
memory (bounded by MEMORY_MAX_BYTES), repeating a warning every 10 minutes, until the process is
restarted. Readings still in the file then are replayed after the restart.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nurserywatch.clock import Clock

log = logging.getLogger(__name__)

#: Bytes counted per message on top of topic and payload (SQLite record and index overhead).
ROW_OVERHEAD = 32
#: Messages kept in memory at the head of the queue; the rest is read from disk in batches.
WINDOW = 1000
#: Bound of the memory fallback (the configured max_bytes may be far larger than the Pi's RAM).
MEMORY_MAX_BYTES = 32 * 1024 * 1024
DROP_LOG_INTERVAL_MS = 60_000
MEMORY_WARNING_INTERVAL_MS = 600_000
SCHEMA_VERSION = 1
#: See the module docstring; bench/spool_sync.py compares it with NORMAL.
SYNCHRONOUS = "FULL"


@dataclass(frozen=True, slots=True)
class Message:
    """One queued publish. ``id`` orders the queue (it survives restarts)."""

    id: int
    topic: str
    payload: bytes
    queued_ms: int

    @property
    def size(self) -> int:
        return len(self.topic.encode()) + len(self.payload) + ROW_OVERHEAD


class SpoolUnavailable(Exception):
    """The file cannot be used (the message says why); the spool then works in memory."""


class Spool:
    def __init__(self, path: str | Path | None, *, max_bytes: int, max_age_s: float, clock: Clock) -> None:
        """``path=None`` keeps the queue in memory only (tests, or no writable disk)."""
        if max_bytes <= 0 or max_age_s <= 0:
            raise ValueError("spool bounds must be positive")
        self.path = Path(path) if path is not None else None
        self.max_bytes = max_bytes
        self.max_age_ms = int(max_age_s * 1000)
        self.clock = clock
        #: Set whenever a message is queued: the publisher waits on it.
        self.ready = asyncio.Event()
        #: Messages dropped by a bound, by reason (spool_full, spool_expired).
        self.dropped: Counter[str] = Counter()
        self._dropped_logged: Counter[str] = Counter()
        self._drop_logged_at: int | None = None
        self._memory_warned_at = 0
        self._db: sqlite3.Connection | None = None
        self._lock: IO[bytes] | None = None
        # The queue is: _window (its first messages, in order) + messages with id > _window_last
        # that only the file holds (_spilled). Not-yet-committed puts are in _unwritten too.
        self._window: deque[Message] = deque()
        self._window_last = 0
        self._spilled = False
        self._unwritten: dict[int, Message] = {}
        self._acked: list[int] = []
        self._bytes = 0
        self._count = 0
        self._next_id = 1
        if self.path is not None:
            try:
                self._open(self.path)
            except SpoolUnavailable as exc:
                self._to_memory(str(exc))
        if self._count:
            self.ready.set()

    # -- queue interface

    def __len__(self) -> int:
        return self._count

    @property
    def queued_bytes(self) -> int:
        """Bytes queued, as counted against max_bytes."""
        return self._bytes

    @property
    def on_disk(self) -> bool:
        return self._db is not None

    @property
    def memory_limit(self) -> int:
        return self.max_bytes if self._db is not None else min(self.max_bytes, MEMORY_MAX_BYTES)

    def put(self, topic: str, payload: bytes) -> Message:
        message = Message(self._next_id, topic, payload, self.clock.now_ms())
        self._next_id += 1
        if self._db is not None:
            self._unwritten[message.id] = message
        if not self._spilled and (self._db is None or len(self._window) < WINDOW):
            self._window.append(message)
            self._window_last = message.id
        else:
            self._spilled = True
        self._bytes += message.size
        self._count += 1
        if self._db is None:
            self._trim()  # nothing to commit in memory: enforce the bounds at once
        self.ready.set()
        return message

    def peek(self) -> Message | None:
        """The oldest message not yet acknowledged, or None."""
        if not self._window and self._spilled:
            self._refill()
        return self._window[0] if self._window else None

    def pop(self, message: Message) -> None:
        """Forget ``message`` (from peek()) once the broker has acknowledged it — unless a bound
        dropped it while its publish was in flight. The delete reaches the disk at commit()."""
        if not self._window or self._window[0].id != message.id:
            return
        self._window.popleft()
        self._bytes -= message.size
        self._count -= 1
        if self._unwritten.pop(message.id, None) is None and self._db is not None:
            self._acked.append(message.id)

    def oldest_ms(self) -> int | None:
        """When the oldest queued message was queued (clock ms), or None when empty."""
        head = self.peek()
        return head.queued_ms if head else None

    def commit(self) -> None:
        """Write this tick's puts and acknowledgements in one transaction, then apply the bounds."""
        if self._db is None:
            self._trim()
            self._remind_memory()
            return
        try:
            self._write()
            self._trim()
        except sqlite3.Error as exc:
            self._to_memory(f"cannot write {self.path}: {exc}")

    def close(self) -> None:
        """Commit what is pending and release the file (the queue stays in it for the next start)."""
        self.commit()
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error as exc:
                log.warning("spool %s: error on close: %s", self.path, exc)
            self._db = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- disk

    def _open(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = open(path.with_name(path.name + ".lock"), "ab")  # held until close()
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpoolUnavailable(f"{path} is in use by another edge agent (same agent started twice?)") from None
        except OSError as exc:
            raise SpoolUnavailable(f"cannot create {path}: {exc.strerror or exc}") from None
        try:
            db = _connect(path)
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise SpoolUnavailable(f"cannot open {path}: {exc}") from None
            aside = path.with_name(f"{path.name}.corrupt-{self.clock.now_ms()}")
            log.error("spool %s is damaged (%s); moved it to %s and starting an empty spool", path, exc, aside)
            try:
                for suffix in ("", "-wal", "-shm"):
                    src = Path(str(path) + suffix)
                    if src.exists():
                        os.replace(src, Path(str(aside) + suffix))
                db = _connect(path)
            except (OSError, sqlite3.Error) as exc2:
                raise SpoolUnavailable(f"cannot replace damaged {path}: {exc2}") from None
        self._db = db
        try:
            count, total, last = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0), MAX(id) FROM queue").fetchone()
        except sqlite3.Error as exc:
            self._db = None
            db.close()
            raise SpoolUnavailable(f"cannot read {path}: {exc}") from None
        self._count, self._bytes, self._next_id = count, total, (last or 0) + 1
        self._spilled = count > 0
        if count:
            self._refill()
            log.info(
                "spool %s: resuming %d queued readings (%.1f MiB, oldest from %d ms ago)",
                path,
                count,
                total / 2**20,
                self.clock.now_ms() - self._window[0].queued_ms,
            )
        self._trim()

    def _write(self) -> None:
        assert self._db is not None
        if not self._acked and not self._unwritten:
            return
        with _transaction(self._db):
            if self._acked:
                self._db.executemany("DELETE FROM queue WHERE id = ?", ((i,) for i in self._acked))
            if self._unwritten:
                self._db.executemany(
                    "INSERT INTO queue (id, topic, payload, queued_ms, size) VALUES (?, ?, ?, ?, ?)",
                    ((m.id, m.topic, m.payload, m.queued_ms, m.size) for m in self._unwritten.values()),
                )
        self._acked.clear()
        self._unwritten.clear()
        if self._count == 0:
            self._db.execute("PRAGMA incremental_vacuum")  # queue drained: give the space back

    def _refill(self) -> None:
        """Load the next messages after the window from the file."""
        if self._db is None:
            self._spilled = False
            return
        try:
            self._write()  # the file must hold every put before it is read back
            rows = self._db.execute(
                "SELECT id, topic, payload, queued_ms FROM queue WHERE id > ? ORDER BY id LIMIT ?",
                (self._window_last, WINDOW),
            ).fetchall()
        except sqlite3.Error as exc:
            self._to_memory(f"cannot read {self.path}: {exc}")
            return
        for row in rows:
            self._window.append(Message(*row))
        if rows:
            self._window_last = rows[-1][0]
        self._spilled = len(rows) == WINDOW

    def _to_memory(self, reason: str) -> None:
        # Puts not yet in the file go to memory too; only what the file already holds beyond the
        # window stays behind (and is replayed, late, by the next process).
        for message in self._unwritten.values():
            if message.id > self._window_last:
                self._window.append(message)
                self._window_last = message.id
        remaining = self._count - len(self._window)
        log.error(
            "spool: %s — QUEUEING IN MEMORY ONLY (at most %d MiB): readings are lost if the edge stops "
            "while the broker is unreachable%s. Fix the disk and restart the edge.",
            reason,
            min(self.max_bytes, MEMORY_MAX_BYTES) // 2**20,
            f"; {remaining} older readings stay in the file and are sent after a restart" if remaining else "",
        )
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
        self._count = len(self._window)
        self._bytes = sum(m.size for m in self._window)
        self._spilled = False
        self._unwritten.clear()
        self._acked.clear()
        self._memory_warned_at = self.clock.now_ms()
        self._trim()

    def _remind_memory(self) -> None:
        now = self.clock.now_ms()
        if now - self._memory_warned_at >= MEMORY_WARNING_INTERVAL_MS:
            self._memory_warned_at = now
            log.warning(
                "spool: still queueing in memory only (%d readings queued); readings are lost if the edge stops",
                self._count,
            )

    # -- bounds

    def _trim(self) -> None:
        """Drop the oldest messages while one is older than max_age or the queue exceeds its bytes."""
        cutoff = self.clock.now_ms() - self.max_age_ms
        limit = self.memory_limit
        last_dropped = 0
        dropped: Counter[str] = Counter()
        while self._count:
            head = self.peek()
            if head is None:
                break
            if head.queued_ms < cutoff:
                dropped["spool_expired"] += 1
            elif self._bytes > limit:
                dropped["spool_full"] += 1
            else:
                break
            self._window.popleft()
            self._unwritten.pop(head.id, None)
            self._bytes -= head.size
            self._count -= 1
            last_dropped = head.id
        if not dropped:
            return
        self.dropped += dropped
        if self._db is not None:
            try:
                with _transaction(self._db):
                    self._db.execute("DELETE FROM queue WHERE id <= ?", (last_dropped,))
            except sqlite3.Error as exc:
                self._to_memory(f"cannot delete from {self.path}: {exc}")
        self._log_drops()

    def _log_drops(self) -> None:
        now = self.clock.now_ms()
        if self._drop_logged_at is not None and now - self._drop_logged_at < DROP_LOG_INTERVAL_MS:
            return
        new = self.dropped - self._dropped_logged
        self._drop_logged_at = now
        self._dropped_logged = self.dropped.copy()
        log.warning(
            "spool: dropped the %d oldest queued readings (%s; totals %s) — bounds %d MiB / %g h%s",
            new.total(),
            _fmt(new),
            _fmt(self.dropped),
            self.memory_limit // 2**20,
            self.max_age_ms / 3_600_000,
            "" if self._db is not None else " (memory only)",
        )


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per tick.
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # effective for a new file only
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"journal_mode WAL refused (got {mode})")
        db.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"schema version {version} is not {SCHEMA_VERSION}: file not a spool")
        db.execute(
            "CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, "
            "payload BLOB NOT NULL, queued_ms INTEGER NOT NULL, size INTEGER NOT NULL)"
        )
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("SELECT id, topic, payload, queued_ms, size FROM queue LIMIT 0").fetchall()
    except sqlite3.Error:
        db.close()
        raise
    return db


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """A damaged or foreign file (moved aside) as opposed to an unusable disk (memory fallback)."""
    if isinstance(exc, sqlite3.OperationalError):
        return False  # locked, read-only, I/O error, disk full, ...
    return True  # "file is not a database", "database disk image is malformed", wrong schema


class _transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass


def _fmt(counts: Counter[str]) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in sorted(counts.items()))
