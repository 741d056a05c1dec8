"""The on-disk buffer of line-protocol points that could not be written to InfluxDB yet.

A SQLite file with one row per line, in arrival order (INTEGER PRIMARY KEY). Bounded by a number of
lines: at the bound the *oldest* lines are dropped and counted (the newest data is what staff look
at first; the gateway's own SQLite still holds every reading). Drained in order: ``peek`` the oldest
lines, write them, ``ack`` them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path


class WriteBuffer:
    """Not thread-safe: used from the writer's one task."""

    def __init__(self, path: str | Path, max_lines: int = 2_000_000) -> None:
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self.path = Path(path)
        self.max_lines = max_lines
        #: Lines dropped at the bound since this buffer was opened.
        self.dropped = 0
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY, line TEXT NOT NULL)")
        self._count = int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __len__(self) -> int:
        return self._count

    def push(self, lines: Sequence[str]) -> int:
        """Append lines (one transaction); returns how many old lines were dropped to stay bounded."""
        if not lines:
            return 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT INTO pending (line) VALUES (?)", [(ln,) for ln in lines])
            self._count += len(lines)
            over = self._count - self.max_lines
            if over > 0:
                self._db.execute(
                    "DELETE FROM pending WHERE id IN (SELECT id FROM pending ORDER BY id LIMIT ?)", (over,)
                )
                self._count -= over
                self.dropped += over
        except BaseException:
            self._db.execute("ROLLBACK")
            self._count = int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
            raise
        self._db.execute("COMMIT")
        return max(over, 0)

    def peek(self, limit: int) -> tuple[int, list[str]]:
        """The oldest ``limit`` lines and the id of the last one (0 when empty), for ``ack``."""
        rows = self._db.execute("SELECT id, line FROM pending ORDER BY id LIMIT ?", (limit,)).fetchall()
        return (int(rows[-1][0]) if rows else 0), [r[1] for r in rows]

    def ack(self, upto_id: int) -> None:
        """Forget every line up to and including ``upto_id`` (they were written or dead-lettered)."""
        cur = self._db.execute("DELETE FROM pending WHERE id <= ?", (upto_id,))
        self._count -= cur.rowcount
