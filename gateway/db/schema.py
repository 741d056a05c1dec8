"""The schema of the gateway's SQLite file: every table, index and trigger in it is created here, and
only here, by numbered migrations. ``PRAGMA user_version`` is the number of migrations applied.

Every writer of the file (``Store``, ``RecordStore``, ``AssignmentStore``, ``ChildDataStore``, the
retention job) opens it with ``connect_writer``, which migrates it first; the others' SQL relies on
the latest schema. Readers (``mode=ro``) never migrate: they cope with a file no writer has opened.

A migration is never edited once released — a change of the schema is a new migration at the end.
Migrations 1 and 2 are the schema of the releases before this module (commit 40ae1f1 and earlier):
there ``Store`` set user_version 1 and every other module created its own tables, with
``IF NOT EXISTS``, when it first opened the file. So a file of those releases is at version 1 (or 0)
and may already hold any of the tables of migration 2, and both migrations keep ``IF NOT EXISTS``.
tests/gateway/data/ holds databases written by that release; tests/gateway/test_gateway_schema.py
migrates them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from nurserywatch.sqlite import Synchronous, connect

#: The records' guard against UPDATE. ``RecordStore.erase`` lifts and restores it around a
#: redaction, inside the erasure's transaction (the one sanctioned UPDATE).
RECORD_ENTRIES_NO_UPDATE = """CREATE TRIGGER IF NOT EXISTS record_entries_no_update BEFORE UPDATE ON record_entries
BEGIN SELECT RAISE(ABORT, 'nap-check records are append-only: UPDATE refused'); END;"""

_RECORD_ENTRIES_NO_DELETE = """CREATE TRIGGER IF NOT EXISTS record_entries_no_delete BEFORE DELETE ON record_entries
BEGIN SELECT RAISE(ABORT, 'nap-check records are append-only: DELETE refused'); END;"""
_DATA_REQUESTS_NO_UPDATE = """CREATE TRIGGER IF NOT EXISTS data_requests_no_update BEFORE UPDATE ON data_requests
BEGIN SELECT RAISE(ABORT, 'the data request log is append-only: UPDATE refused'); END;"""
_DATA_REQUESTS_NO_DELETE = """CREATE TRIGGER IF NOT EXISTS data_requests_no_delete BEFORE DELETE ON data_requests
BEGIN SELECT RAISE(ABORT, 'the data request log is append-only: DELETE refused'); END;"""

_RECORD_DAY_HEADS_NO_UPDATE = """CREATE TRIGGER IF NOT EXISTS record_day_heads_no_update
BEFORE UPDATE ON record_day_heads BEGIN SELECT RAISE(ABORT, 'signed day heads are append-only: UPDATE refused'); END;"""
_RECORD_DAY_HEADS_NO_DELETE = """CREATE TRIGGER IF NOT EXISTS record_day_heads_no_delete
BEFORE DELETE ON record_day_heads BEGIN SELECT RAISE(ABORT, 'signed day heads are append-only: DELETE refused'); END;"""

#: The append-only guards: (table, trigger). Besides their migration they are re-created, when
#: missing, on every writer's open: dropping them is the first step of editing the file by hand, and a
#: gateway start has always put them back. (The hash chain, not the triggers, proves the records.)
_GUARDS: tuple[tuple[str, str], ...] = (
    ("record_entries", RECORD_ENTRIES_NO_UPDATE),
    ("record_entries", _RECORD_ENTRIES_NO_DELETE),
    ("data_requests", _DATA_REQUESTS_NO_UPDATE),
    ("data_requests", _DATA_REQUESTS_NO_DELETE),
    ("record_day_heads", _RECORD_DAY_HEADS_NO_UPDATE),
    ("record_day_heads", _RECORD_DAY_HEADS_NO_DELETE),
)

# 1 — the gateway's own tables: readings, alerts and their audit log, nap sessions (Store, f17dc3e
# and 514b4b8; user_version 1 since the first release).
_V1_STORE = """
CREATE TABLE IF NOT EXISTS readings (
    id          INTEGER PRIMARY KEY,
    device      TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    ts          INTEGER NOT NULL,   -- message time, unix ms
    seq         INTEGER NOT NULL,
    payload     TEXT    NOT NULL,   -- the validated reading as JSON
    received_ts INTEGER NOT NULL,   -- gateway clock, unix ms
    UNIQUE (device, stream, seq, ts)
);
CREATE INDEX IF NOT EXISTS readings_by_stream ON readings (stream, device, ts);

CREATE TABLE IF NOT EXISTS alerts (
    id           TEXT    PRIMARY KEY,
    rule         TEXT    NOT NULL,
    severity     TEXT    NOT NULL,
    state        TEXT    NOT NULL,  -- active | resolved
    acknowledged INTEGER NOT NULL,  -- 0 | 1
    device       TEXT,
    room         TEXT,
    child        TEXT,
    started_ts   INTEGER NOT NULL,
    updated_ts   INTEGER NOT NULL,
    resolved_ts  INTEGER,
    body         TEXT    NOT NULL   -- the whole contract Alert as JSON
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (state, acknowledged);
CREATE INDEX IF NOT EXISTS alerts_by_start ON alerts (started_ts);

CREATE TABLE IF NOT EXISTS alert_transitions (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- append-only audit order
    alert_id TEXT    NOT NULL,
    change   TEXT    NOT NULL,  -- raised | updated | resolved | acknowledged
    ts       INTEGER NOT NULL,
    body     TEXT    NOT NULL   -- the alert after the change
);
CREATE INDEX IF NOT EXISTS alert_transitions_by_alert ON alert_transitions (alert_id, seq);

CREATE TABLE IF NOT EXISTS sessions (
    room            TEXT PRIMARY KEY,
    body            TEXT,           -- the room's latest SessionState as JSON (NULL: never had one)
    schedule_window TEXT            -- the nap_schedule window the gateway last acted on
);

CREATE TABLE IF NOT EXISTS session_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- append-only
    room       TEXT    NOT NULL,
    change     TEXT    NOT NULL,  -- started | stopped
    ts         INTEGER NOT NULL,  -- gateway clock, unix ms
    session_id TEXT    NOT NULL,
    body       TEXT    NOT NULL   -- the SessionState after the change
);
CREATE INDEX IF NOT EXISTS session_log_by_room ON session_log (room, ts);
"""

# 2 — the tables the other modules created on first use until 40ae1f1, with user_version left at 1:
# the nap-check records (RecordStore), the runtime assignments (AssignmentStore), the device-binding
# and data-request logs (ChildDataStore), retention's rollups and bookkeeping (the retention job).
_V2_MODULES = f"""
CREATE TABLE IF NOT EXISTS record_entries (
    seq       INTEGER PRIMARY KEY,  -- assigned by the chain (1, 2, …), not by SQLite
    kind      TEXT    NOT NULL,     -- session_started | session_stopped | record | confirmation | correction
    ts        INTEGER NOT NULL,     -- unix ms: the check time of a record, else when it happened
    room      TEXT    NOT NULL,
    child     TEXT,
    session   TEXT    NOT NULL,
    refers    INTEGER,              -- the entry a confirmation or correction is about
    body      TEXT    NOT NULL,     -- canonical JSON of the entry, with seq and prev_hash: what is hashed
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL      -- SHA-256 of body
);
CREATE INDEX IF NOT EXISTS record_entries_by_room ON record_entries (room, kind, ts);
CREATE INDEX IF NOT EXISTS record_entries_by_refers ON record_entries (refers);

CREATE TABLE IF NOT EXISTS device_assignments (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    day    TEXT    NOT NULL,   -- local date the assignment holds for
    device TEXT    NOT NULL,
    child  TEXT,               -- null: the device watches nobody that day
    by     TEXT    NOT NULL,
    ts     INTEGER NOT NULL    -- unix ms, gateway clock
);
CREATE INDEX IF NOT EXISTS device_assignments_by_day ON device_assignments (day, device, seq);

CREATE TABLE IF NOT EXISTS device_bindings (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- append-only (an erase blanks the child, keeps the row)
    device   TEXT    NOT NULL,
    child    TEXT,                 -- NULL: bound to nobody
    since_ts INTEGER NOT NULL      -- gateway clock, unix ms: from when the kit said so
);
CREATE INDEX IF NOT EXISTS device_bindings_by_child ON device_bindings (child);

CREATE TABLE IF NOT EXISTS data_requests (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      INTEGER NOT NULL,      -- unix ms
    action  TEXT    NOT NULL,      -- export | erase
    child   TEXT    NOT NULL,
    by      TEXT    NOT NULL,
    outcome TEXT    NOT NULL,      -- done | incomplete
    counts  TEXT    NOT NULL,      -- JSON object: what was exported or erased, per kind
    detail  TEXT    NOT NULL
);

CREATE TABLE IF NOT EXISTS reading_rollups (
    stream TEXT    NOT NULL,
    field  TEXT    NOT NULL,
    device TEXT    NOT NULL,
    bucket INTEGER NOT NULL,  -- start of the 15-min bucket, unix ms, epoch-aligned
    count  INTEGER NOT NULL,
    sum    REAL    NOT NULL,  -- math.fsum of the values
    min    REAL    NOT NULL,
    max    REAL    NOT NULL,
    PRIMARY KEY (stream, field, device, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reading_rollups_by_bucket ON reading_rollups (bucket);
CREATE TABLE IF NOT EXISTS retention_state (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
{RECORD_ENTRIES_NO_UPDATE}
{_RECORD_ENTRIES_NO_DELETE}
{_DATA_REQUESTS_NO_UPDATE}
{_DATA_REQUESTS_NO_DELETE}
"""

# 3 — the records' signed day heads (gateway/records/signing.py): one row per head the gateway
# signed with the site key, append-only like the records. The signature, not the triggers, proves them.
_V3_DAY_HEADS = f"""
CREATE TABLE record_day_heads (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    day       TEXT    NOT NULL,   -- the local date that ended (lookup; the body is what is signed)
    seq       INTEGER NOT NULL,   -- the chain head signed: its entry number
    signed_ts INTEGER NOT NULL,   -- gateway clock, unix ms
    body      TEXT    NOT NULL    -- SignedHead.to_json(): the head's fields and the Ed25519 signature
);
CREATE INDEX record_day_heads_by_seq ON record_day_heads (seq);
{_RECORD_DAY_HEADS_NO_UPDATE}
{_RECORD_DAY_HEADS_NO_DELETE}
"""

# 4 — where this file stands in its site's JetStream journal (gateway/ha/journal.py) when the gateway
# runs as one of several instances: the last entry applied, and whether this instance wrote as the
# active one. Instance-local: never journaled itself.
_V4_JOURNAL = """
CREATE TABLE journal_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

#: A step: SQL statements, or a function for what SQL alone cannot do (it runs inside the migration's
#: transaction and must not commit).
Migration = str | Callable[[sqlite3.Connection], None]

#: ``MIGRATIONS[n]`` takes the file from version n to n + 1. Append only.
MIGRATIONS: tuple[Migration, ...] = (_V1_STORE, _V2_MODULES, _V3_DAY_HEADS, _V4_JOURNAL)

#: The version this code writes and reads.
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(sqlite3.DatabaseError):
    """The file's schema is not one this code can use (written by a newer gateway). A sqlite3 error,
    so each store reports it as its own "cannot open" error with the file's name."""


def _statements(script: str) -> Iterator[str]:
    """The statements of a script, one by one (a trigger's body keeps its inner ``;``).
    ``executescript`` is not used: it commits the open transaction first."""
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            yield current.strip()
            current = ""
    if current.strip():
        raise ValueError(f"an incomplete statement at the end of a migration: {current.strip()[:60]!r}")


def _version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _check(found: int) -> None:
    if found > SCHEMA_VERSION:
        raise SchemaError(
            f"schema version {found} is newer than this gateway ({SCHEMA_VERSION}): "
            "it was written by a newer release; run that release, or a newer one"
        )


def migrate(db: sqlite3.Connection) -> int:
    """Bring the file of ``db`` (an autocommit connection) to ``SCHEMA_VERSION``: the missing
    migrations and the new version in one transaction, so a crash leaves the old version whole.
    Returns the version found. Raises SchemaError for a file newer than this code."""
    found = _version(db)
    _check(found)
    if found < SCHEMA_VERSION:
        db.execute("BEGIN IMMEDIATE")
        try:
            found = _version(db)  # another writer may have migrated it while this one waited for the lock
            _check(found)
            for step in MIGRATIONS[found:]:
                if callable(step):
                    step(db)
                    continue
                for sql in _statements(step):
                    db.execute(sql)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    # No write unless one is missing; a table someone dropped is not the gateway's to refuse to start for.
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, sql in _GUARDS:
        if table in tables:
            db.execute(sql)
    return found


def connect_writer(path: str | Path, *, synchronous: Synchronous | None = "NORMAL") -> sqlite3.Connection:
    """A writer's connection to the gateway's file (created if missing), migrated to the latest
    schema. Raises sqlite3.Error (SchemaError for a file newer than this code)."""
    db = connect(path, synchronous=synchronous)
    try:
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db
