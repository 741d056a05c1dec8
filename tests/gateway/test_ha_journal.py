"""The journal's statement recorder and replay (gateway/ha/journal.py), without NATS: what the engine
writes to its SQLite file — through every connection that writes it — replayed on another file gives
an equal file, exact to the last bit of a float; rolled-back work and schema migrations are left out."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import nats
import pytest

from gateway.config import RulesConfig
from gateway.db.schema import connect_writer
from gateway.db.store import Store
from gateway.engine.site import SiteEngine
from gateway.ha.journal import (
    Entry,
    Fenced,
    Journal,
    JournalTail,
    StatementRecorder,
    apply_entries,
    ensure_state_stream,
    read_state,
    split_entries,
)
from nurserywatch.clock import ManualClock
from nurserywatch.contract import (
    AssignCommand,
    BreathingReading,
    Position,
    PostureReading,
    SessionAction,
    SessionCommand,
    assign_command_topic,
    reading_topic,
    session_command_topic,
)
from nurserywatch.jetstream import SiteLayout
from nurserywatch.sqlite import connect
from tests.support.clock import T0
from tests.support.commands import COMMAND_VERIFIER, signed
from tests.support.kits import make_kit
from tests.support.nats_cluster import NatsCluster

KIT = make_kit(
    "journal",
    children={"c001": "0", "c002": "1-2"},
    devices={"clip-01": "c001", "clip-02": None, "mat-1": {"kind": "nap_mat", "child": "c001"}},
)


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[StatementRecorder]:
    r = StatementRecorder(tmp_path / "active.sqlite3")
    r.install()
    yield r
    r.uninstall()


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with closing(sqlite3.connect(path)) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: db.execute(f"SELECT * FROM {t}").fetchall() for t in tables if t != "journal_state"}


def replay(recorder: StatementRecorder, target: Path, seq: int = 1) -> int:
    txns = recorder.collect()
    entries = [Entry.from_bytes(e.to_bytes()) for e in split_entries("commit", "a", txns, max_bytes=4096)]
    with closing(connect_writer(target)) as db:
        return apply_entries(db, seq, entries)


def test_savepoints_rollbacks_floats_and_blobs(recorder: StatementRecorder, tmp_path: Path) -> None:
    with closing(connect(recorder.path)) as db:
        db.execute("CREATE TABLE t (a, b)")
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?, ?)", (0.1 + 0.2, b"\x00\xff"))
        db.execute("SAVEPOINT tx")
        db.execute("INSERT INTO t VALUES (?, ?)", ("dropped", None))
        db.execute("ROLLBACK TO tx")
        db.execute("RELEASE tx")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(1 / 3, "x"), (2, "it's")])
        db.execute("COMMIT")
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?, ?)", ("rolled back", 1))
        db.execute("ROLLBACK")
        with pytest.raises(sqlite3.OperationalError), db:  # `with db:` rolls back without execute()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?, ?)", ("also rolled back", 1))
            db.execute("INSERT INTO no_such_table VALUES (1)")
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (:a, :b)", {"a": 5, "b": 6})
    target = tmp_path / "standby.sqlite3"
    with closing(sqlite3.connect(target)) as db:
        db.execute("CREATE TABLE t (a, b)")  # schema is each file's own (not journaled outside a transaction)
    assert replay(recorder, target) == 0
    with closing(sqlite3.connect(target)) as db:
        rows = db.execute("SELECT a, b FROM t").fetchall()
    assert rows == [(0.30000000000000004, b"\x00\xff"), (1 / 3, "x"), (2, "it's"), (5, 6)]


def test_a_migration_is_not_journaled(recorder: StatementRecorder) -> None:
    with closing(connect_writer(recorder.path)):
        pass
    assert recorder.collect() == []
    with closing(connect_writer(recorder.path)):  # opened again: the guards re-created, not journaled either
        pass
    assert recorder.collect() == []


def test_the_engine_s_writes_replayed_give_the_same_file(recorder: StatementRecorder, tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with Store(recorder.path) as store:
        engine = SiteEngine(KIT, store, RulesConfig(), clock, command_key=COMMAND_VERIFIER)
        try:
            engine.connected()
            for s in range(1, 61):
                if s == 2:  # a nap (the records' sheet) and an assignment: writes through their own connections
                    topic = session_command_topic(KIT.site)
                    cmd = SessionCommand(room="hiyoko", action=SessionAction.START, by="田中")
                    engine.handle(topic, signed(topic, cmd, clock.now_ms()))
                    topic = assign_command_topic(KIT.site)
                    engine.handle(topic, signed(topic, AssignCommand(device="clip-02", child="c002", by="田中"),
                                                clock.now_ms()))  # fmt: skip
                # a minute: breathing stops after 10 s (apnea), the clip turns prone
                now = T0 + s * 1000
                clock.set(now)
                breath = BreathingReading(ts=now, seq=s, present=True, rate_bpm=None if s > 10 else 30.0,
                                          last_breath_ts=T0 + min(s, 10) * 1000, motion=0.05, quality=0.9)  # fmt: skip
                engine.handle(reading_topic(KIT.site, "mat-1", "breathing"), breath.to_json(), ack=lambda: None)
                pos = Position.PRONE if s > 30 else Position.SUPINE
                engine.handle(reading_topic(KIT.site, "clip-01", "posture"),
                              PostureReading(ts=now, seq=s, position=pos).to_json(), ack=lambda: None)  # fmt: skip
                engine.tick()
                while (msg := engine.next_outgoing()) is not None:
                    engine.published(msg)
            rules = {a.rule for a in engine.open_alerts()}
        finally:
            engine.close()
    assert "apnea" in rules
    tables = dump(recorder.path)
    assert tables["record_entries"] and tables["device_assignments"] and tables["device_bindings"]
    target = tmp_path / "standby.sqlite3"
    with closing(connect_writer(target)):
        pass
    assert replay(recorder, target, seq=7) == 0
    assert dump(target) == dump(recorder.path)
    with closing(connect_writer(target)) as db:
        assert read_state(db)["applied_seq"] == "7"


def test_big_flushes_are_split_and_kept_as_one_unit() -> None:
    txn = [("INSERT INTO t VALUES (?)", [["x" * 100] for _ in range(200)])]
    entries = split_entries("commit", "a", [txn, txn], max_bytes=4096)
    assert len(entries) > 2 and all(e.more for e in entries[:-1]) and not entries[-1].more
    rows = [r for e in entries for t in e.txns for _sql, rs in t for r in rs]
    assert len(rows) == 400


# ---------------------------------------------------------------- through a REAL nats-server


@pytest.fixture
def node(nats_node: NatsCluster) -> NatsCluster:
    return nats_node


async def test_appends_are_fenced_by_the_last_sequence(node: NatsCluster) -> None:
    nc = await nats.connect(node.nats_urls)
    try:
        js = nc.jetstream()
        layout = SiteLayout("fence")
        await ensure_state_stream(js, layout, 1)
        a = Journal(js, layout, "a", 0)
        assert await a.append([[("INSERT INTO t VALUES (?)", [[1]])]]) == 1
        b = Journal(js, layout, "b", await a.last_stream_seq())
        assert await b.append([], kind="takeover") == 2
        with pytest.raises(Fenced):
            await a.append([[("INSERT INTO t VALUES (?)", [[2]])]])
        # An append whose answer was lost is found stored, not taken for another instance's.
        headers = {"Nats-Expected-Last-Sequence": "2", "Nats-Msg-Id": "b:2"}
        await js.publish(layout.state_subject, Entry("commit", "b", []).to_bytes(), headers=headers)
        assert await b.append([]) == 3 and await b.last_stream_seq() == 3
    finally:
        await nc.close()


async def test_a_standby_following_the_journal_holds_the_same_file(node: NatsCluster, tmp_path: Path) -> None:
    active_db, standby_db = tmp_path / "active.sqlite3", tmp_path / "standby.sqlite3"
    recorder = StatementRecorder(active_db)
    recorder.install()
    nc = await nats.connect(node.nats_urls)
    try:
        js = nc.jetstream()
        layout = SiteLayout("follow")
        await ensure_state_stream(js, layout, 1)
        journal = Journal(js, layout, "a", 0)
        clock = ManualClock(T0)
        with Store(active_db) as store:
            engine = SiteEngine(KIT, store, RulesConfig(), clock)
            try:
                engine.connected()
                for s in range(1, 41):
                    now = T0 + s * 1000
                    clock.set(now)
                    breath = BreathingReading(ts=now, seq=s, present=True, rate_bpm=None,
                                              last_breath_ts=T0, motion=0.05, quality=0.9)  # fmt: skip
                    engine.handle(reading_topic(KIT.site, "mat-1", "breathing"), breath.to_json(), ack=lambda: None)
                    engine.tick()
                    engine.commit()
                    if txns := recorder.collect():
                        await journal.append(txns)
            finally:
                engine.close()
        with closing(connect_writer(standby_db)) as db:
            tail = JournalTail(js, layout, db, 0)
            assert await tail.catch_up() == journal.last_seq and tail.failed == 0
            await tail.close()
    finally:
        recorder.uninstall()
        await nc.close()
    assert dump(standby_db) == dump(active_db)
    assert any(row[1] == "apnea" for row in dump(standby_db)["alerts"])
