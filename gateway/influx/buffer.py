"""The on-disk buffer of line-protocol points that could not be written to InfluxDB yet.

A SQLite file with one row per line, in arrival order (INTEGER PRIMARY KEY). Bounded by a number of
lines: at the bound the *oldest* lines are dropped and counted (the newest data is what staff look
at first; the gateway's own SQLite still holds every reading). Drained in order: ``peek`` the oldest
lines, write them, ``ack`` them.

The same file keeps the InfluxDB backfill **mark** (docs/storage.md): the id of the gateway's SQLite
reading up to which every reading is in InfluxDB or in this buffer. It lives here, not in the
gateway's database, so that a crash or power loss that loses the newest buffered lines loses the
newer mark with them (one WAL, written in order) — the mark never claims lines the buffer lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nurserywatch.sqlite import connect


class WriteBuffer:
    """Not thread-safe: used from the writer's one task."""

    def __init__(self, path: str | Path, max_lines: int = 2_000_000) -> None:
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self.path = Path(path)
        self.max_lines = max_lines
        #: Lines dropped at the bound since this buffer was opened.
        self.dropped = 0
        self._db = connect(self.path, busy_timeout_ms=None)  # its own file, not the gateway's database
        self._db.execute("CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY, line TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
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
        if len(rows) < limit:  # that is all of them: `data erase` may have removed lines meanwhile
            self._count = len(rows)
        return (int(rows[-1][0]) if rows else 0), [r[1] for r in rows]

    def ack(self, upto_id: int) -> None:
        """Forget every line up to and including ``upto_id`` (they were written or dead-lettered)."""
        cur = self._db.execute("DELETE FROM pending WHERE id <= ?", (upto_id,))
        self._count -= cur.rowcount

    def mark(self) -> int | None:
        """The backfill mark (None: never set — a buffer file that never served a gateway)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'mark'").fetchone()
        return None if row is None else int(row[0])

    def set_mark(self, reading_id: int) -> None:
        """Record that every reading up to ``reading_id`` is in InfluxDB or in this buffer."""
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('mark', ?)", (reading_id,))

    def drop_older_than(self, cutoff_ms: int, chunk: int = 5000) -> int:
        """Retention (kit ``retention.influx_buffer_days``): drop the run of oldest lines whose
        timestamps (the line's last field, ms) are before ``cutoff_ms`` — InfluxDB would refuse them
        past its retention policy. Stops at the first newer line: the buffer is in arrival order, and
        a few late lines behind it wait to be written. Returns how many were dropped (not counted in
        ``dropped``, which counts the bound)."""
        total = 0
        while True:
            rows = self._db.execute("SELECT id, line FROM pending ORDER BY id LIMIT ?", (chunk,)).fetchall()
            upto = 0
            for row_id, line in rows:
                ts = line.rsplit(" ", 1)[-1]
                if not ts.isdigit() or int(ts) >= cutoff_ms:
                    break
                upto = int(row_id)
            else:
                upto = int(rows[-1][0]) if rows else 0
            if upto:
                n = self._db.execute("DELETE FROM pending WHERE id <= ?", (upto,)).rowcount
                self._count -= n
                total += n
            if not rows or upto != int(rows[-1][0]):
                return total
