"""SQLite store: duplicates, restart restore, the read-only reader, and the rules file loader."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.alert_changes import Change
from gateway.config import ProneConfig, RulesConfig, RulesError, load_rules
from gateway.db.reader import StoreError, StoreReader
from gateway.db.store import Store
from gateway.engine.alerts import AlertBook, Subject
from gateway.engine.rules_engine import RulesEngine
from gateway.rules.events import Cleared, Firing
from nurserywatch.contract import AirReading, AlertState, Position, PostureReading, Severity, Stream
from tests.support.clock import T0
from tests.support.kits import make_kit

CHILD = Subject(device="clip-01", room="hiyoko", child="c001")
REPO = Path(__file__).resolve().parents[2]


def posture(seq: int, ts: int, position: Position = Position.PRONE) -> PostureReading:
    return PostureReading(ts=ts, seq=seq, position=position, accel_mg=(0, 0, -1000))


def prone_firing(ts: int) -> Firing:
    return Firing("prone", Severity.CRITICAL, "clip-01", T0, ts, (ts - T0) / 1000, "うつぶせ", "prone")


# ---------------------------------------------------------------- readings


def test_duplicate_reading_is_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    with Store(db) as store:
        assert store.add_reading("clip-01", Stream.POSTURE, posture(1, T0), T0 + 5) is True
        assert store.add_reading("clip-01", Stream.POSTURE, posture(1, T0), T0 + 9) is False  # redelivery
        # the same seq at another time (counter wrapped) or on another stream/device is new data
        assert store.add_reading("clip-01", Stream.POSTURE, posture(1, T0 + 65_536_000), T0 + 9) is True
        assert store.add_reading("clip-02", Stream.POSTURE, posture(1, T0), T0 + 9) is True
        assert store.add_reading("clip-01", Stream.AIR, AirReading(ts=T0, seq=1, co2_ppm=800), T0 + 9) is True
    reader = StoreReader(db)
    assert reader.count_readings() == 4
    assert reader.count_readings("clip-01") == 3


def test_latest_readings_per_device_by_message_time(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    with Store(db) as store:
        store.add_reading("clip-01", Stream.POSTURE, posture(2, T0 + 2000, Position.SUPINE), T0 + 2001)
        store.add_reading("clip-01", Stream.POSTURE, posture(1, T0 + 1000), T0 + 3000)  # late arrival, older
        store.add_reading("clip-02", Stream.POSTURE, posture(7, T0 + 500, Position.LEFT), T0 + 501)
        store.add_reading("air-01", Stream.AIR, AirReading(ts=T0, seq=1, co2_ppm=900.5), T0 + 1)
        latest = StoreReader(db).latest_readings("posture")
    assert [(r.device, r.stream, r.reading, r.received_ts) for r in latest] == [
        ("clip-01", Stream.POSTURE, posture(2, T0 + 2000, Position.SUPINE), T0 + 2001),
        ("clip-02", Stream.POSTURE, posture(7, T0 + 500, Position.LEFT), T0 + 501),
    ]
    [air] = StoreReader(db).latest_readings(Stream.AIR)
    assert air.reading == AirReading(ts=T0, seq=1, co2_ppm=900.5)


# ---------------------------------------------------------------- alerts


def test_reader_sees_what_the_writer_wrote_while_it_is_open(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    book = AlertBook()
    with Store(db) as store:
        reader = StoreReader(db)
        alert, raised = book.fire(prone_firing(T0 + 30_000), CHILD)
        store.record(raised)
        assert reader.alerts() == [alert]
        assert reader.alerts("active") == [alert]
        assert reader.alerts("resolved") == []
        acked = book.acknowledge(alert.id, "hoikushi-1", T0 + 31_000)
        store.record(acked)
        resolved = book.resolve(Cleared("prone", "clip-01", T0 + 40_000), CHILD)
        store.record(resolved)
        final = resolved[0].alert
        assert reader.alert(alert.id) == final
        assert reader.alert("prone-missing") is None
        assert reader.alerts("active") == []
        assert reader.alerts("resolved") == [final]
        assert reader.open_alerts() == []  # resolved and acknowledged: history only
        assert reader.transitions(alert.id) == raised + acked + resolved
        assert [t.change for t in reader.transitions(alert.id)] == [
            Change.RAISED,
            Change.ACKNOWLEDGED,
            Change.RESOLVED,
        ]


def test_restart_restores_open_alerts(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    book = AlertBook()
    other = Subject(device="clip-02", room="hiyoko", child="c002")
    with Store(db) as store:
        active, t1 = book.fire(prone_firing(T0 + 30_000), CHILD)
        store.record(t1)
        _, t2 = book.fire(prone_firing(T0 + 30_000), other)
        store.record(t2)
        t3 = book.resolve(Cleared("prone", "clip-02", T0 + 35_000), other)  # resolved, not acknowledged
        store.record(t3)
    with Store(db) as store:  # a new process on the same file
        restored = AlertBook(store.open_alerts())
    assert restored.open_alerts() == book.open_alerts()
    assert restored.active("prone", CHILD) == active
    assert {a.state for a in restored.open_alerts()} == {AlertState.ACTIVE, AlertState.RESOLVED}


def test_record_is_atomic(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    book = AlertBook()
    with Store(db) as store:
        _, raised = book.fire(prone_firing(T0 + 30_000), CHILD)
        bad = raised[0].alert.model_copy(update={"started_ts": None})  # violates NOT NULL
        with pytest.raises(StoreError, match="cannot record"):
            store.record([raised[0], raised[0].__class__(Change.UPDATED, bad, T0)])
        assert StoreReader(db).transitions(raised[0].alert.id) == []
        assert StoreReader(db).alerts() == []


def test_reader_is_read_only(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    Store(db).close()
    reader = StoreReader(db)
    with reader._connect() as conn, pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM alerts")


def test_reader_on_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot read the gateway database"):
        StoreReader(tmp_path / "nope.sqlite3").alerts()
    assert not (tmp_path / "nope.sqlite3").exists()  # a reader never creates the database


def test_store_uses_wal(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    Store(db).close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="newer than this gateway"):
        Store(db)


# ---------------------------------------------------------------- rules file


def test_shipped_rules_file_loads() -> None:
    assert load_rules(REPO / "configs" / "rules.yaml") == RulesConfig(prone=ProneConfig(min_duration_s=30))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", RulesConfig()),
        ("prone: {min_duration_s: 0}\n", RulesConfig(prone=ProneConfig(min_duration_s=0))),
        ("prone: {min_duration_s: 12.5}\n", RulesConfig(prone=ProneConfig(min_duration_s=12.5))),
        ("prone: {}\n", RulesConfig()),
    ],
)
def test_rules_file_values(tmp_path: Path, text: str, expected: RulesConfig) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    assert load_rules(path) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prone: {min_duration_s: -5}\n", "prone.min_duration_s (line 1): expected a number ≥ 0 (got -5)"),
        ("prone: {min_duration_s: 7200}\n", "prone.min_duration_s (line 1): expected a number ≤ 3600 (got 7200)"),
        ("prone: {min_duration_s: soon}\n", "prone.min_duration_s (line 1): expected a number (got 'soon')"),
        ("prone: {min_duration_s: .nan}\n", "prone.min_duration_s (line 1): must be a finite number (got nan)"),
        ("prone: {min_duraton_s: 30}\n", "prone.min_duraton_s (line 1): unknown key (check the spelling"),
        ("apnoea: {min_duration_s: 20}\n", "apnoea (line 1): unknown key"),
        ("prone: 30\n", "prone (line 1): expected a mapping of settings (got 30)"),
        ("prone: {min_duration_s: 5}\nprone: {}\n", "prone (line 2): 'prone' appears twice in the same mapping (first"),
        ("- prone\n", "expected a mapping with keys apnea, breathing_rate_low, breathing_rate_high, prone"),
        ("prone: {min_duration_s: [\n", "not valid YAML"),
    ],
)
def test_rules_file_errors_are_clear(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as exc:
        load_rules(path)
    assert str(exc.value).startswith(f"{path}: ") or str(exc.value).startswith(f"{path} (line")
    assert message in str(exc.value)


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"rules\.yaml: file not found"):
        load_rules(tmp_path / "rules.yaml")


def test_a_prone_run_under_way_goes_on_across_a_restart(tmp_path: Path) -> None:
    """Prone from 0 s, the gateway restarted at 20 s: the new engine's prone rule, warmed up from the
    stored readings, fires at 30 s with the run's start at 0 s — not 30 s after its first new reading."""
    db = tmp_path / "gw.sqlite3"
    kit = make_kit("s1", devices={"clip-01": "c001"})
    rules = RulesConfig()
    with Store(db) as store:
        for s in range(21):
            prone = PostureReading(ts=T0 + s * 1000, seq=s, position=Position.PRONE)
            store.add_reading("clip-01", Stream.POSTURE, prone, T0 + s * 1000 + 5)
    with Store(db) as store:  # a new process on the same file
        engine = RulesEngine(kit, rules, T0 + 25_000, recent=store.recent_readings)
    raised = []
    for s in range(21, 31):
        prone = PostureReading(ts=T0 + s * 1000, seq=s, position=Position.PRONE)
        out = engine.reading("clip-01", Stream.POSTURE, prone, T0 + 25_000 + s)
        raised += [(s, t.alert.started_ts) for t in out.transitions if t.change is Change.RAISED]
    assert raised == [(30, T0)]
