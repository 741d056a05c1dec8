"""The records' hash chain and append-only store: a real SQLite file written by the RecordKeeper,
then tampered with directly (as someone holding the file would), and `nurserywatch records verify`
must exit 1 naming the FIRST bad entry. Also: triggers, restart, confirmations and corrections."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest
from typer.testing import CliRunner

from gateway.config import RulesConfig
from gateway.db.store import Store
from gateway.engine.site import SiteEngine
from gateway.engine.stats import GatewayStats
from gateway.records.entries import (
    GENESIS,
    ChainedEntry,
    CheckRecord,
    Confirmation,
    Correction,
    RecordCommandError,
    RecordsConfig,
    SessionStarted,
    SessionStopped,
    StoredEntry,
    canonical_json,
    chain,
    decode_stored,
)
from gateway.records.keeper import RecordKeeper
from gateway.records.reader import RecordReader, RecordStoreError
from gateway.records.store import RecordStore
from gateway.service.engine_host import EngineOptions
from gateway.service.mqtt import run_gateway
from nurserywatch.cli.main import app
from nurserywatch.clock import ManualClock
from nurserywatch.command_auth import CommandSigner
from nurserywatch.contract import (
    BreathingReading,
    Position,
    PostureReading,
    RecordAction,
    RecordCommand,
    SessionAction,
    SessionCommand,
    Stream,
    reading_topic,
    record_command_topic,
    session_command_topic,
)
from nurserywatch.mqtt import BrokerURL
from tests.support.clock import MIN
from tests.support.commands import COMMAND_VERIFIER, publish_command
from tests.support.nap_records import CHILDREN, KIT, ROOM, T0, nap, tamper

runner = CliRunner()
#: A 30-min nap: start, 4 × 6 + 4 × 3 + 4 × 2 records, stop.
N_ENTRIES = 46


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "gw.sqlite3"
    nap(path)
    return path


def verify(db: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["records", "verify", "--db", str(db)])
    return result.exit_code, result.output.strip()


# ---------------------------------------------------------------- the chain itself


def test_a_nap_writes_a_linked_chain(db: Path) -> None:
    rows = list(RecordReader(db).stored())
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0].prev_hash == GENESIS.hash
    for prev, row in zip(rows, rows[1:], strict=False):
        assert row.prev_hash == prev.hash
        assert row.hash == hashlib.sha256(row.body.encode()).hexdigest()
        assert json.loads(row.body)["prev_hash"] == prev.hash, "the link is inside the hashed content"
    kinds = Counter(json.loads(r.body)["kind"] for r in rows)
    assert kinds == {"session_started": 1, "session_stopped": 1, "record": 4 * 6 + 4 * 3 + 4 * 2}
    code, out = verify(db)
    assert code == 0, out
    assert out == f"{db}: OK — {len(rows)} entries, chain intact; head {len(rows)}:{rows[-1].hash}"


def test_canonical_json_is_stable_and_the_hash_covers_seq_and_prev() -> None:
    assert canonical_json({"b": 1, "a": "保育", "c": [1.5, None]}) == '{"a":"保育","b":1,"c":[1.5,null]}'
    start = SessionStarted(session="s", room=ROOM, ts=T0, by="x", children=())
    (one,) = chain(GENESIS, [start])
    (other,) = chain(GENESIS.__class__(7, "ab" * 32), [start])
    assert one.hash != other.hash and json.loads(other.body)["seq"] == 8


def test_an_empty_database_is_intact(tmp_path: Path) -> None:
    RecordStore(tmp_path / "empty.sqlite3").close()
    assert verify(tmp_path / "empty.sqlite3") == (
        0,
        f"{tmp_path / 'empty.sqlite3'}: OK — 0 entries, chain intact; head 0:{'0' * 64}",
    )


def test_triggers_refuse_update_and_delete(db: Path) -> None:
    con = sqlite3.connect(db)
    for sql in ("UPDATE record_entries SET room = 'x' WHERE seq = 3", "DELETE FROM record_entries WHERE seq = 3"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute(sql)
    con.close()
    assert verify(db)[0] == 0


# ---------------------------------------------------------------- tampering, through the CLI


def row(db: Path, seq: int) -> dict[str, object]:
    con = sqlite3.connect(db)
    r = con.execute("SELECT body, prev_hash, hash FROM record_entries WHERE seq = ?", (seq,)).fetchone()
    con.close()
    return {"body": json.loads(r[0]), "prev_hash": r[1], "hash": r[2]}


def edited_body(db: Path, seq: int, **changes: object) -> str:
    body = dict(row(db, seq)["body"])  # type: ignore[call-overload]
    assert any(body[k] != v for k, v in changes.items()), "a real change"
    body.update(changes)
    return canonical_json(body)


def edit(db: Path) -> None:  # change a value after the fact
    tamper(db, ("UPDATE record_entries SET body = ? WHERE seq = 10", (edited_body(db, 10, breathing_ok=False),)))


def edit_and_rehash(db: Path) -> None:
    body = edited_body(db, 10, breathing_ok=False)
    tamper(
        db,
        (
            "UPDATE record_entries SET body = ?, hash = ? WHERE seq = 10",
            (body, hashlib.sha256(body.encode()).hexdigest()),
        ),
    )


def edit_column(db: Path) -> None:  # move a record to another room's sheet
    tamper(db, ("UPDATE record_entries SET room = 'risu' WHERE seq = 10", ()))


def delete(db: Path) -> None:
    tamper(db, ("DELETE FROM record_entries WHERE seq = 10", ()))


def delete_three(db: Path) -> None:
    tamper(db, ("DELETE FROM record_entries WHERE seq IN (10, 11, 12)", ()))


def delete_first(db: Path) -> None:
    tamper(db, ("DELETE FROM record_entries WHERE seq = 1", ()))


def delete_and_renumber(db: Path) -> None:
    tamper(
        db,
        ("DELETE FROM record_entries WHERE seq = 10", ()),
        ("UPDATE record_entries SET seq = -seq WHERE seq > 10", ()),
        ("UPDATE record_entries SET seq = -seq - 1 WHERE seq < 0", ()),
    )


def insert(db: Path) -> None:
    """A forged record slipped in as entry 10, perfectly linked to entry 9, the rest renumbered."""
    nine = row(db, 9)
    body = dict(row(db, 10)["body"])  # type: ignore[call-overload]
    body.update(seq=10, prev_hash=nine["hash"], child="c04", breathing_ok=True)
    text = canonical_json(body)
    cols = (10, "record", body["ts"], ROOM, "c04", body["session"], None, text, nine["hash"])
    tamper(
        db,
        ("UPDATE record_entries SET seq = -seq WHERE seq >= 10", ()),
        ("UPDATE record_entries SET seq = -seq + 1 WHERE seq < 0", ()),
        (
            "INSERT INTO record_entries (seq, kind, ts, room, child, session, refers, body, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*cols, hashlib.sha256(text.encode()).hexdigest()),
        ),
    )


def append_forged(db: Path) -> None:  # added at the end by hand, with a made-up hash
    last = row(db, N_ENTRIES)
    body = dict(last["body"])  # type: ignore[call-overload]
    body.update(seq=N_ENTRIES + 1, prev_hash=last["hash"])
    tamper(
        db,
        (
            "INSERT INTO record_entries (seq, kind, ts, room, child, session, refers, body, prev_hash, hash)"
            " VALUES (?, 'session_stopped', ?, ?, NULL, ?, NULL, ?, ?, ?)",
            (N_ENTRIES + 1, body["ts"], ROOM, body["session"], canonical_json(body), last["hash"], "f" * 64),
        ),
    )


def garbage(db: Path) -> None:
    tamper(db, ("UPDATE record_entries SET body = 'not json' WHERE seq = 5", ()))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        (edit, r"entry 10 \(record, hiyoko, c\d\d\): edited or forged — its content does not match its hash"),
        (edit_and_rehash, r"entry 10: replaced — entry 11 links to a different entry 10"),
        (edit_column, r"entry 10: edited — column room is 'risu' but its hashed content says 'hiyoko'"),
        (delete, r"entry 10: deleted — entry 10 is missing \(entry 11 follows entry 9\)$"),
        (delete_three, r"entry 10: deleted — entries 10–12 are missing \(entry 13 follows entry 9\)"),
        (delete_first, r"entry 1: deleted — entry 1 is missing \(the chain starts at entry 2\)"),
        (
            delete_and_renumber,
            r"entry 10: deleted — entry 10 is missing \(entry 11 follows entry 9\) — stored as 10",
        ),
        (insert, r"entry 10: inserted — the entry stored as 11 links to entry 9, so entry 10 was added in between"),
        (append_forged, rf"entry {N_ENTRIES + 1} \(session_stopped, hiyoko\): edited or forged"),
        (garbage, r"entry 5: edited — its content is not a valid entry"),
    ],
    ids=lambda v: v.__name__ if callable(v) else "",
)
def test_verify_names_the_first_bad_entry(db: Path, how: Callable[[Path], None], message: str) -> None:
    assert len(list(RecordReader(db).stored())) == N_ENTRIES, "the scenario the table was written for"
    how(db)
    code, out = verify(db)
    assert code == 1, out
    assert len(out.splitlines()) == 1, "one line"
    assert out.startswith(f"error: {db}: ")
    assert re.search(message, out), out


def test_the_real_command_exits_non_zero(db: Path) -> None:
    delete(db)
    proc = subprocess.run(
        [sys.executable, "-m", "nurserywatch", "records", "verify", "--db", str(db)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "entry 10: deleted" in proc.stderr and proc.stdout == ""


def test_an_anchor_catches_a_cut_tail_and_a_full_rewrite(db: Path) -> None:
    head = RecordReader(db).verify().head
    anchor = f"{head.seq}:{head.hash}"
    ok = runner.invoke(app, ["records", "verify", "--db", str(db), "--expect-head", anchor])
    assert ok.exit_code == 0, ok.output
    tamper(db, (f"DELETE FROM record_entries WHERE seq >= {head.seq - 2}", ()))  # the last entries, cleanly cut
    assert verify(db)[0] == 0, "a cut tail leaves a valid (shorter) chain: only the anchor shows it"
    cut = runner.invoke(app, ["records", "verify", "--db", str(db), "--expect-head", anchor])
    assert cut.exit_code == 1 and f"entry {head.seq}: not the entry noted as {anchor}" in cut.output
    bad = runner.invoke(app, ["records", "verify", "--db", str(db), "--expect-head", "12:xyz"])
    assert bad.exit_code == 2 and "expected SEQ:HASH" in bad.output


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b"this is not sqlite" * 100), "cannot read the nap-check records"),
        (lambda p: sqlite3.connect(p).execute("CREATE TABLE t (x)").connection.commit(), "holds no nap-check records"),
    ],
)
def test_unreadable_files_exit_2(tmp_path: Path, setup: Callable[[Path], object], message: str) -> None:
    path = tmp_path / "x.sqlite3"
    setup(path)
    code, out = verify(path)
    assert code == 2 and message in out and "Traceback" not in out


# ---------------------------------------------------------------- the keeper: restart, confirmations, corrections


def test_a_restart_mid_session_continues_without_gaps_or_doubles(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    nap(path, minutes=12, stop=False)  # the gateway dies 12 min in ...
    with RecordStore(path) as store:  # ... and comes back at 31 min
        keeper = RecordKeeper(KIT, store, RecordsConfig())
        assert keeper.scheduler.session(ROOM) == f"{ROOM}-{T0}"
        assert keeper.session_started(ROOM, T0 + 31 * MIN, by="x") == [], "the open session is continued"
        keeper.tick(T0 + 31 * MIN)
        keeper.session_stopped(ROOM, T0 + 60 * MIN, by="x")
    recs = [e.entry for e in map(_decode, RecordReader(path).stored()) if isinstance(e.entry, CheckRecord)]
    per_child = Counter(r.child for r in recs)
    assert per_child == {c: {"0": 12, "1-2": 6, "3+": 4}[KIT.child(c).age_band.value] for c in CHILDREN}  # type: ignore[union-attr]
    assert len({(r.child, r.ts) for r in recs}) == len(recs), "none doubled"
    down = [r for r in recs if T0 + 12 * MIN < r.ts <= T0 + 31 * MIN]
    assert down and all(r.data_missing and r.posture is None for r in down), "the gateway's silence is visible"
    assert verify(path)[0] == 0


def _decode(s: StoredEntry) -> ChainedEntry:
    return decode_stored(s)


def test_confirmations_and_corrections_are_new_entries(db: Path) -> None:
    with RecordStore(db) as store:
        keeper = RecordKeeper(KIT, store, RecordsConfig())
        rec = next(e for e in map(_decode, RecordReader(db).stored()) if isinstance(e.entry, CheckRecord))
        conf = keeper.confirm(rec.seq, "保育士B", T0 + 40 * MIN)
        assert isinstance(conf.entry, Confirmation) and conf.entry.refers == rec.seq and conf.seq == N_ENTRIES + 1
        assert conf.entry.child == rec.entry.child and conf.entry.ts == T0 + 40 * MIN  # type: ignore[union-attr]
        with pytest.raises(RecordCommandError) as again:
            keeper.confirm(rec.seq, "保育士B", T0 + 41 * MIN)
        assert again.value.reason == "already_confirmed"
        keeper.confirm(rec.seq, "保育士C", T0 + 41 * MIN)  # a second person may confirm too
        fix = keeper.correct(rec.seq, "保育士B", T0 + 42 * MIN, {"body_temp_c": 36.8, "note": "額で測定"}, "再検温")
        assert isinstance(fix.entry, Correction) and fix.entry.changes == {"body_temp_c": 36.8, "note": "額で測定"}
        keeper.confirm(fix.seq, "保育士C", T0 + 43 * MIN)  # confirming the corrected values
        for seq, kwargs, reason in [
            (999, {}, "unknown_record"),
            (1, {}, "not_a_record"),  # the session start
            (rec.seq, {"changes": {"alerts": []}}, "invalid_command"),  # not correctable
            (rec.seq, {"changes": {"body_temp_c": 50}}, "invalid_command"),
            (rec.seq, {"changes": {}}, "invalid_command"),
            (fix.seq, {"changes": {"note": "x"}}, "not_a_record"),  # correct the record, not the correction
        ]:
            with pytest.raises(RecordCommandError) as exc:
                if kwargs:
                    keeper.correct(seq, "x", T0, kwargs["changes"])
                else:
                    keeper.confirm(seq, "x", T0)
            assert exc.value.reason == reason, (seq, kwargs)
    assert RecordReader(db).entry(rec.seq) == rec, "the record itself is untouched"
    assert verify(db)[0] == 0


def test_entries_wait_in_memory_while_the_database_refuses_writes(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with RecordStore(db) as store:
        keeper = RecordKeeper(KIT, store, RecordsConfig())
        keeper.session_started("risu", T0 + 60 * MIN, by="x")
        real = store.append

        def broken(entries: object) -> list[ChainedEntry]:
            raise RecordStoreError("disk I/O error")

        monkeypatch.setattr(store, "append", broken)
        assert keeper.tick(T0 + 66 * MIN) == []
        assert keeper.stats["store_error"] == 1
        monkeypatch.setattr(store, "append", real)
        written = keeper.tick(T0 + 71 * MIN)
        assert [e.entry.ts for e in written] == [T0 + 65 * MIN, T0 + 70 * MIN], "in order, nothing lost"
    assert verify(db)[0] == 0


# ---------------------------------------------------------------- in the running gateway, through a real Mosquitto


async def test_records_in_the_running_gateway(mosquitto: BrokerURL, tmp_path: Path) -> None:
    """Session start (MQTT command) → readings → the records appear when the interval ends on the
    injected clock; a confirmation over command/record becomes a new chained entry; stop → partial."""
    kit = KIT.model_copy(update={"site": "records-shell"})
    site, db, clock = kit.site, tmp_path / "gw.sqlite3", ManualClock(T0)
    stats = GatewayStats()
    task = asyncio.create_task(
        run_gateway(kit, mosquitto, db, RulesConfig(tick_ms=50), clock,
            EngineOptions(stats=stats, command_key=COMMAND_VERIFIER))
    )

    def entries() -> list[ChainedEntry]:
        return [decode_stored(s) for s in RecordReader(db).stored()] if db.exists() else []

    async def until(pred: Callable[[], bool], what: str) -> None:
        async with asyncio.timeout(5):
            while not pred():
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)

    try:
        await until(lambda: stats.sessions >= 1, "the gateway to subscribe")
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="records-shell-test") as c:
            start = SessionCommand(room=ROOM, action=SessionAction.START, by="保育士A")
            await publish_command(c, session_command_topic(site), start, clock.now_ms())
            await until(lambda: any(isinstance(e.entry, SessionStarted) for e in entries()), "the session start")
            for seq, (t_s, pos) in enumerate([(60, Position.SUPINE), (120, Position.PRONE), (170, Position.PRONE)]):
                clock.set(T0 + t_s * 1000)
                reading = PostureReading(ts=T0 + t_s * 1000, seq=seq, position=pos)
                await c.publish(reading_topic(site, "post-c01", Stream.POSTURE), reading.to_json(), qos=1)
                breath = BreathingReading(ts=T0 + t_s * 1000, seq=seq, rate_bpm=31.0 + seq, present=True)
                await c.publish(reading_topic(site, "nap_-c01", Stream.BREATHING), breath.to_json(), qos=1)
            await until(lambda: stats.readings_stored == 6, "the readings")
            clock.set(T0 + 5 * MIN + 1000)  # the interval has ended, the grace (2 s) has not
            await asyncio.sleep(0.3)  # several ticks
            assert not any(isinstance(e.entry, CheckRecord) for e in entries())
            clock.set(T0 + 5 * MIN + 2000)
            await until(lambda: sum(isinstance(e.entry, CheckRecord) for e in entries()) == 4, "4 infants' records")
            recs = {e.entry.child: e for e in entries() if isinstance(e.entry, CheckRecord)}
            assert sorted(recs) == ["c01", "c02", "c03", "c04"]
            c01 = recs["c01"].entry
            assert isinstance(c01, CheckRecord) and c01.ts == T0 + 5 * MIN
            assert (c01.posture, c01.prone_seen, c01.breathing_rate_bpm, c01.breathing_rate_mean_bpm) == (
                Position.PRONE, True, 33.0, 32.0)  # fmt: skip
            assert "prone" in {a.rule for a in c01.alerts}, "the prone alert the rules raised at 150 s"
            assert recs["c02"].entry.data_missing  # type: ignore[union-attr]

            # What outside testing did: a correction in the director's name, not signed by the dashboard
            # (and one signed with another key). Refused and counted; the chain gets nothing from them.
            forged = RecordCommand(entry=recs["c01"].seq, action=RecordAction.CORRECT, by="院長 (forged)",
                                   changes={"posture": "supine"}, reason="forged")  # fmt: skip
            before = len(entries())
            await c.publish(record_command_topic(site), forged.to_json(), qos=1)
            await publish_command(c, record_command_topic(site), forged, clock.now_ms(), key=CommandSigner.generate())
            await until(lambda: stats.rejected["unsigned"] == 1 and stats.rejected["bad_signature"] == 1, "forgeries")
            confirm = RecordCommand(entry=recs["c01"].seq, by="保育士B")
            await publish_command(c, record_command_topic(site), confirm, clock.now_ms())
            await publish_command(c, record_command_topic(site), RecordCommand(entry=9999, by="x"), clock.now_ms())
            await publish_command(c, record_command_topic(site), {"entry": 0, "by": "x"}, clock.now_ms())
            await until(lambda: any(isinstance(e.entry, Confirmation) for e in entries()), "the confirmation")
            await until(lambda: stats.rejected["unknown_record"] == 1, "the unknown entry refused")
            await until(lambda: stats.rejected["invalid_payload"] == 1, "entry 0 refused")
            assert len(entries()) == before + 1, "only the confirmation was chained"
            assert not any(isinstance(e.entry, Correction) for e in entries())
            (conf,) = [e.entry for e in entries() if isinstance(e.entry, Confirmation)]
            assert (conf.refers, conf.by, conf.ts) == (recs["c01"].seq, "保育士B", T0 + 5 * MIN + 2000)

            clock.set(T0 + 7 * MIN)
            stop = SessionCommand(room=ROOM, action=SessionAction.STOP, by="保育士A")
            await publish_command(c, session_command_topic(site), stop, clock.now_ms())
            await until(lambda: any(isinstance(e.entry, SessionStopped) for e in entries()), "the session stop")
        partial = [e.entry for e in entries() if isinstance(e.entry, CheckRecord) and e.entry.partial]
        assert len(partial) == 12 and {r.ts for r in partial} == {T0 + 7 * MIN}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert stats.rejected["internal_error"] == 0 and stats.observer_errors == 0
    assert verify(db)[0] == 0


def test_a_sheet_the_gateway_has_no_session_for_is_closed_on_start(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    nap(path, minutes=12, stop=False)  # the records' stop was lost; the gateway's sessions know none
    with Store(path) as store:
        engine = SiteEngine(KIT, store, RulesConfig(), ManualClock(T0 + 20 * MIN))
        engine.close()
        assert engine.records.keeper.scheduler.open_rooms() == []
    last = [decode_stored(s).entry for s in RecordReader(path).stored()][-1]
    assert isinstance(last, SessionStopped) and last.ts == T0 + 20 * MIN and last.by == "auto"
    assert verify(path)[0] == 0
