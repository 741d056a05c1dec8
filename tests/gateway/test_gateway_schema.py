"""One owner of the gateway's SQLite schema (gateway/db/schema.py): a database written by the previous
release (tests/gateway/data/, dumped from files that commit 40ae1f1's code wrote) is migrated by
opening it with today's code and read back; a new file gets the latest version with the very schema
the previous release made; a file newer than the code is refused and left as it was; a migration
that fails leaves the old version whole; no other gateway module creates a table."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Protocol

import pytest

from gateway.child_data.selection import DeviceWindow
from gateway.child_data.store import ChildDataStore, ChildDataStoreError
from gateway.db.assignments_store import AssignmentStore
from gateway.db.reader import StoreError, StoreReader
from gateway.db.schema import MIGRATIONS, SCHEMA_VERSION, SchemaError
from gateway.db.store import Store
from gateway.records.reader import RecordReader, RecordStoreError, verify_file
from gateway.records.store import RecordStore
from gateway.retention.store import connect as retention_connect
from nurserywatch.contract import AlertState, AssignmentSource, BreathingReading, DeviceAssignment, Stream

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
#: What the fixtures hold (tests/gateway/data/*.sql).
T0 = 1_767_238_921_234
READINGS = 60  # 20 min, one a minute, of nap_-c01 (breathing), post-c01 (posture), air-hiyoko (air)
RECORD_ENTRIES = 18  # a 10-min nap in room hiyoko, started and stopped
BINDINGS = 24


class Closable(Protocol):
    def close(self) -> None: ...


#: Every writer of the gateway's file: each migrates it on open.
WRITERS: dict[str, Callable[[Path], Closable]] = {
    "Store": Store,
    "RecordStore": RecordStore,
    "AssignmentStore": AssignmentStore,
    "ChildDataStore": ChildDataStore,
    "retention": retention_connect,
}


def load(tmp_path: Path, name: str) -> Path:
    db = tmp_path / "gw.sqlite3"
    with closing(sqlite3.connect(db)) as con:
        con.executescript((DATA / name).read_text())
    return db


def user_version(db: Path) -> int:
    with closing(sqlite3.connect(db)) as con:
        return int(con.execute("PRAGMA user_version").fetchone()[0])


def schema(db: Path) -> list[tuple[str, str, str, str | None]]:
    """Every table, index and trigger of the file with its SQL, in a fixed order."""
    with closing(sqlite3.connect(db)) as con:
        rows = con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name != 'sqlite_sequence'")
        return sorted(rows)


#: Migrations after the previous release's schema (1 and 2): 3, the records' signed day heads.
SINCE_PREVIOUS = MIGRATIONS[2:]


@pytest.fixture
def previous(tmp_path: Path) -> list[tuple[str, str, str, str | None]]:
    """The schema of a file every module of the previous release had opened, plus exactly what the
    migrations since add (each a new table of its own, so it can be made in an empty file)."""
    (tmp_path / "previous").mkdir()
    old = schema(load(tmp_path / "previous", "gateway_40ae1f1_full.sql"))
    since = tmp_path / "previous" / "since.sqlite3"
    with closing(sqlite3.connect(since)) as con:
        for step in SINCE_PREVIOUS:
            assert isinstance(step, str)
            con.executescript(step)
    return sorted(old + schema(since))


# ---------------------------------------------------------------- a file of the previous release


def test_a_previous_release_database_is_migrated_and_read(
    tmp_path: Path, previous: list[tuple[str, str, str, str | None]]
) -> None:
    db = load(tmp_path, "gateway_40ae1f1_full.sql")
    assert user_version(db) == 1
    with Store(db) as store:  # the gateway's start: migrates
        assert user_version(db) == SCHEMA_VERSION
        assert schema(db) == previous, "migrating adds only what the migrations since that release add"
        # the old rows keep their identity: a redelivered reading is still a duplicate, a new one is stored
        assert not store.add_reading("nap_-c01", Stream.BREATHING, BreathingReading(ts=T0, seq=0, rate_bpm=20.0), T0)
        assert store.add_reading("nap_-c01", Stream.BREATHING, BreathingReading(ts=T0 + 20 * 60_000, seq=20), T0)
        assert [a.id for a in store.open_alerts()] == ["prone-x"]  # resolved, not yet acknowledged

    reader = StoreReader(db)
    assert reader.count_readings() == READINGS + 1
    (latest,) = reader.latest_readings(Stream.AIR)
    assert (latest.device, latest.reading.seq) == ("air-hiyoko", 19)
    alert = reader.alert("prone-x")
    assert alert is not None and alert.state is AlertState.RESOLVED and alert.child == "c01"
    assert [t.change.value for t in reader.transitions("prone-x")] == ["raised", "resolved"]
    assert [(s.session_id, s.active) for s in reader.session_log("hiyoko")] == [("s-1", True), ("s-1", False)]

    result = verify_file(db)
    assert result.ok and result.entries == RECORD_ENTRIES, result
    assert RecordReader(db).rooms() == ["hiyoko"]
    with RecordStore(db) as records:
        assert records.open_sessions() == []  # the nap was stopped
        assert records.entry(RECORD_ENTRIES) is not None

    assignments = AssignmentStore(db)
    assert assignments.load("2026-01-01") == [
        DeviceAssignment(device="nap_-c01", child="c02", source=AssignmentSource.STAFF, day="2026-01-01",
                         by="staff", updated_ts=T0 + 60_000)
    ]  # fmt: skip
    assignments.close()
    with ChildDataStore(db) as child_data:
        assert len(child_data.bindings()) == BINDINGS
        assert [(r.action, r.child) for r in child_data.requests()] == [("export", "c05")]
        assert child_data.rollups([DeviceWindow("air-hiyoko", T0, None)]), "retention's rollups are kept"


@pytest.mark.parametrize("writer", WRITERS)
def test_a_previous_release_file_gets_the_tables_other_modules_made_on_first_use(
    tmp_path: Path, previous: list[tuple[str, str, str, str | None]], writer: str
) -> None:
    """That release's Store set user_version 1 without the records', assignments', child-data and
    retention tables (each module made its own when it first opened the file): version 1 is not
    the whole schema, and whichever writer opens the file first completes it."""
    db = load(tmp_path, "gateway_40ae1f1_store_only.sql")
    assert user_version(db) == 1 and "record_entries" not in {name for _t, name, _tb, _s in schema(db)}
    WRITERS[writer](db).close()
    assert user_version(db) == SCHEMA_VERSION
    assert schema(db) == previous
    assert StoreReader(db).count_readings() == READINGS
    assert verify_file(db).entries == 0


# ---------------------------------------------------------------- new, newer and broken files


@pytest.mark.parametrize("writer", WRITERS)
def test_a_new_file_gets_the_latest_version_and_the_previous_release_schema(
    tmp_path: Path, previous: list[tuple[str, str, str, str | None]], writer: str
) -> None:
    db = tmp_path / "gw.sqlite3"
    WRITERS[writer](db).close()
    assert user_version(db) == SCHEMA_VERSION
    assert schema(db) == previous
    with closing(sqlite3.connect(db)) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("writer", "error"),
    [("Store", StoreError), ("RecordStore", RecordStoreError), ("ChildDataStore", ChildDataStoreError),
     ("AssignmentStore", SchemaError), ("retention", SchemaError)],
)  # fmt: skip
def test_a_file_newer_than_the_code_is_refused_and_left_alone(
    tmp_path: Path, writer: str, error: type[Exception]
) -> None:
    db = load(tmp_path, "gateway_40ae1f1_store_only.sql")
    with closing(sqlite3.connect(db)) as con:
        con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    before = schema(db)
    with pytest.raises(error, match=f"schema version {SCHEMA_VERSION + 1} is newer than this gateway"):
        WRITERS[writer](db)
    assert user_version(db) == SCHEMA_VERSION + 1 and schema(db) == before
    assert StoreReader(db).count_readings() == READINGS  # readers still read what they know


def test_a_failed_migration_leaves_the_old_version_whole(tmp_path: Path) -> None:
    db = load(tmp_path, "gateway_40ae1f1_store_only.sql")
    with closing(sqlite3.connect(db)) as con:  # a name migration 2 needs for a table, taken
        con.execute("CREATE INDEX retention_state ON readings (ts)")
    before = schema(db)
    with pytest.raises(StoreError, match="already an index named retention_state"):
        Store(db)
    assert user_version(db) == 1 and schema(db) == before  # not half of migration 2


def test_readers_never_migrate(tmp_path: Path) -> None:
    db = load(tmp_path, "gateway_40ae1f1_store_only.sql")
    before = schema(db)
    assert StoreReader(db).count_readings() == READINGS
    with pytest.raises(RecordStoreError, match="holds no nap-check records"):
        RecordReader(db).rooms()
    assert user_version(db) == 1 and schema(db) == before


def test_a_writer_puts_dropped_append_only_triggers_back(
    tmp_path: Path, previous: list[tuple[str, str, str, str | None]]
) -> None:
    """As each store's own CREATE ... IF NOT EXISTS did at every gateway start before migrations."""
    db = load(tmp_path, "gateway_40ae1f1_full.sql")
    Store(db).close()
    with closing(sqlite3.connect(db)) as con:
        for trigger in ("record_entries_no_update", "record_entries_no_delete", "data_requests_no_delete"):
            con.execute(f"DROP TRIGGER {trigger}")
    Store(db).close()
    assert schema(db) == previous
    with closing(sqlite3.connect(db)) as con, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM record_entries")


# ---------------------------------------------------------------- one owner


def test_only_the_schema_module_creates_tables_in_the_gateway_file() -> None:
    """Every CREATE of a table, index, trigger or view (and every ALTER) of the gateway's file is in
    gateway/db/schema.py, and every connection goes through nurserywatch/sqlite.py's pragmas."""
    own_files = {"gateway/influx/buffer.py": "the InfluxDB write buffer's own file"}
    ddl = re.compile(r"\b(CREATE\s+(TEMP\s+)?(TABLE|INDEX|UNIQUE\s+INDEX|TRIGGER|VIEW)|ALTER\s+TABLE)\b", re.I)
    found = {}
    for path in sorted((REPO / "gateway").rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        text = path.read_text()
        if name != "gateway/db/schema.py" and name not in own_files and ddl.search(text):
            found[name] = ddl.search(text)
        assert "sqlite3.connect(" not in text, f"{name}: open SQLite through nurserywatch.sqlite.connect"
    assert found == {}


def test_a_version_2_file_gets_the_signed_day_heads_table(
    tmp_path: Path, previous: list[tuple[str, str, str, str | None]]
) -> None:
    """Migration 3 (the records' signed day heads, docs/records.md): a file at version 2 — the schema
    before it, with records in it — is migrated on open; its records and their chain are untouched."""
    db = load(tmp_path, "gateway_40ae1f1_full.sql")
    with closing(sqlite3.connect(db, isolation_level=None)) as con:
        # That release's full file holds every table and trigger of migrations 1 and 2: a version-2 file.
        con.execute("PRAGMA user_version=2")
        before = con.execute("SELECT seq, hash FROM record_entries ORDER BY seq").fetchall()
    assert "record_day_heads" not in {name for _t, name, _tb, _s in schema(db)}
    with RecordStore(db) as records:
        assert user_version(db) == SCHEMA_VERSION >= 3
        assert records.last_signed_head() is None
    assert schema(db) == previous
    with closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT seq, hash FROM record_entries ORDER BY seq").fetchall() == before
        with pytest.raises(sqlite3.DatabaseError, match="signed day heads are append-only"):
            con.execute("INSERT INTO record_day_heads (day, seq, signed_ts, body) VALUES ('d', 1, 1, '{}')")
            con.execute("DELETE FROM record_day_heads")
    assert verify_file(db).entries == RECORD_ENTRIES and RecordReader(db).signed_heads() == []
