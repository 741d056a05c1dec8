"""One way to open a SQLite file, so every part sets the same pragmas: the gateway's database (its
writers and its ``mode=ro`` readers), the InfluxDB write buffer and the dashboard's user store.
What each file holds stays with its owner (the gateway's schema: gateway/db/schema.py).

Connections are in autocommit mode (``isolation_level=None``): every caller issues its own
``BEGIN IMMEDIATE``/``COMMIT``, so no transaction is opened behind its back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

#: How long a connection waits for another one's write lock before "database is locked".
BUSY_TIMEOUT_MS = 5000

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

#: Connection classes for writers of given files (resolved paths): gateway/ha/journal.py records every
#: write to the gateway's file this way, whichever module opens it. Empty unless a gateway runs there.
_WRITER_FACTORIES: dict[Path, type[sqlite3.Connection]] = {}


def set_writer_factory(path: str | Path, factory: type[sqlite3.Connection] | None) -> None:
    """Open every later writer connection to ``path`` (in this process) with ``factory``; None: undo."""
    key = Path(path).resolve()
    if factory is None:
        _WRITER_FACTORIES.pop(key, None)
    else:
        _WRITER_FACTORIES[key] = factory


def connect(
    path: str | Path,
    *,
    readonly: bool = False,
    synchronous: Synchronous | None = "NORMAL",
    busy_timeout_ms: int | None = BUSY_TIMEOUT_MS,
    foreign_keys: bool = False,
    check_same_thread: bool = True,
    recorded: bool = True,
) -> sqlite3.Connection:
    """Open ``path``. A writer puts the file in WAL mode (readers never block the writer) with
    ``synchronous`` (WAL + NORMAL is durable across application crashes; None keeps SQLite's default,
    FULL). ``readonly`` opens an existing file with ``mode=ro``: it never creates the file, never
    writes, and leaves the journal mode and sync level to the writer. ``busy_timeout_ms`` None: fail
    at once on a lock. ``recorded`` False: not through a writer factory set for the file (a connection
    that writes none of the data, e.g. a WAL checkpointer, is no journaled writer). The caller closes
    the connection; on an error here it is already closed."""
    if readonly:
        db = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None,
                             check_same_thread=check_same_thread)  # fmt: skip
    else:
        factories = _WRITER_FACTORIES if recorded else None
        factory = factories.get(Path(path).resolve(), sqlite3.Connection) if factories else None
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread,
                             factory=factory or sqlite3.Connection)  # fmt: skip
    try:
        if busy_timeout_ms is not None:
            db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if not readonly:
            db.execute("PRAGMA journal_mode=WAL")
            if synchronous is not None:
                db.execute(f"PRAGMA synchronous={synchronous}")
        if foreign_keys:
            db.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        db.close()
        raise
    return db
