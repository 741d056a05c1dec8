"""`nurserywatch records export`: a room's day as CSV (UTF-8 with BOM, Japanese or English headers)
or JSON, corrections and confirmations applied, the CSV read back equal to what was exported."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from typer.testing import CliRunner

from gateway.records.entries import RecordsConfig, canonical_json
from gateway.records.export import SheetRow, build_sheet, day_bounds, from_csv, rows_from_json, to_csv
from gateway.records.keeper import RecordKeeper
from gateway.records.reader import RecordReader
from gateway.records.store import RecordStore
from nurserywatch.cli.main import app
from nurserywatch.contract import Position, Stream
from nurserywatch.kit import AgeBand
from tests.support.clock import MIN
from tests.support.nap_records import KIT, ROOM, T0, nap, tamper

runner = CliRunner()
DAY = "2026-01-01"  # T0 is 12:42 JST that day
TZ = ZoneInfo("Asia/Tokyo")
BOM = b"\xef\xbb\xbf"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("records") / "gw.sqlite3"
    nap(path)
    with RecordStore(path) as store:
        keeper = RecordKeeper(KIT, store, RecordsConfig())
        keeper.confirm(2, "保育士B", T0 + 31 * MIN)  # c01's first record
        fix = keeper.correct(
            2, "保育士B", T0 + 32 * MIN, {"body_temp_c": 36.8, "note": "額で測定, 再検温"}, "体温計の電池切れ"
        )
        keeper.confirm(fix.seq, "保育士C", T0 + 33 * MIN)
        keeper.correct(2, "保育士C", T0 + 34 * MIN, {"body_temp_c": 36.9})
    return path


def export(db: Path, *args: str) -> tuple[int, bytes, str]:
    result = runner.invoke(app, ["records", "export", "--db", str(db), "--room", ROOM, *args])
    return result.exit_code, result.stdout_bytes, result.stderr


def test_csv_for_excel_in_japanese(db: Path) -> None:
    code, data, err = export(db, "--date", DAY)
    assert code == 0, err
    assert data.startswith(BOM), "UTF-8 with BOM, so Excel in Japan reads it as UTF-8"
    text = data[len(BOM) :].decode("utf-8")
    lines = text.split("\r\n")
    assert lines[0].startswith("記録番号,確認時刻,部屋,園児ID,名前,年齢区分,間隔(分),途中終了,姿勢,うつぶせ検知")
    assert lines[-1] == "" and len(lines) == 1 + 44 + 1 + 1, "a header, one CRLF line per record, the chain head"
    label = "#記録チェーン（改ざん確認用: nurserywatch records verify --expect-head）"
    assert re.fullmatch(label + r",\d+:[0-9a-f]{64}", lines[-2])
    assert lines[1].startswith("2,2026-01-01 12:47:01.234,hiyoko,c01,,0歳,5,なし,仰向け,なし,あり,20,20,○,36.9,")
    assert "自動,保育士B; 保育士C,2026-01-01 13:13:01.234," in lines[1]
    assert "chain intact: 50 entries, head 50:" in err


def test_csv_in_english(db: Path) -> None:
    code, data, _ = export(db, "--date", DAY, "--lang", "en")
    assert code == 0
    header, first = data[len(BOM) :].decode().split("\r\n")[:2]
    assert header.startswith("seq,check_time,room,child,name,age_band,interval_min,partial,posture,prone_seen")
    assert first.startswith("2,2026-01-01 12:47:01.234,hiyoko,c01,,0,5,no,supine,no,yes,20,20,ok,36.9,")


def test_corrections_and_confirmations_on_the_row(db: Path) -> None:
    records, followups = RecordReader(db).records(ROOM, *day_bounds(date.fromisoformat(DAY), TZ))
    rows = build_sheet(records, followups, TZ)
    first = rows[0]
    assert (first.seq, first.child, first.body_temp_c, first.note) == (2, "c01", 36.9, "額で測定, 再検温")
    assert first.confirmed_by == ("保育士B", "保育士C") and first.confirmed_at == T0 + 31 * MIN
    assert first.corrections == (
        "#48 保育士B 2026-01-01 13:14:01.234: body_temp_c null→36.8, note →額で測定, 再検温 (体温計の電池切れ)"
        " / #50 保育士C 2026-01-01 13:16:01.234: body_temp_c 36.8→36.9"
    )
    assert first.recorded_by == "auto" and all(r.confirmed_by == () for r in rows[1:])
    prone = [r for r in rows if r.child == "c03" and r.time == T0 + 15 * MIN]
    assert prone[0].prone_seen is True and prone[0].alerts == (("prone", "prone-x"),)


def test_csv_and_json_round_trip(db: Path, tmp_path: Path) -> None:
    records, followups = RecordReader(db).records(ROOM, *day_bounds(date.fromisoformat(DAY), TZ))
    rows = build_sheet(records, followups, TZ)
    for lang in ("ja", "en"):
        out = tmp_path / f"sheet-{lang}.csv"
        code, _, err = export(db, "--date", DAY, "--lang", lang, "--out", str(out))
        assert code == 0 and f"{out}: 44 records of room 'hiyoko' on 2026-01-01" in err
        assert from_csv(out.read_bytes()) == rows
    code, data, _ = export(db, "--date", DAY, "--format", "json")
    assert code == 0 and rows_from_json(data.decode()) == rows


def test_round_trip_of_every_kind_of_value() -> None:
    tricky = SheetRow(seq=7, time=T0, room=ROOM, child="c05", name="山田 花子", age_band=AgeBand.TODDLER,
                      interval_min=7.5, partial=True, posture=Position.UPRIGHT, prone_seen=None, on_mat=False,
                      breathing_rate_bpm=33.333333333, breathing_rate_mean_bpm=None, breathing_ok=False,
                      body_temp_c=None, alerts=(("apnea", "apnea-00ff"), ("sensor_lost", "sensor_lost-1")),
                      data_missing=True, missing=(Stream.BREATHING, Stream.POSTURE), recorded_by="auto",
                      confirmed_by=("A", "B"), confirmed_at=None, corrections='say "x", then\nnewline',
                      note="")  # fmt: skip
    for lang in ("ja", "en"):
        assert from_csv(to_csv([tricky], lang)) == [tricky]  # type: ignore[arg-type]


def test_json_export_carries_verifiable_entries(db: Path) -> None:
    code, data, _ = export(db, "--date", DAY, "--format", "json")
    doc = json.loads(data)
    assert doc["chain"]["ok"] is True and doc["chain"]["entries"] == 50 and doc["timezone"] == "Asia/Tokyo"
    assert len(doc["entries"]) == 44 + 4, "the records and their confirmations and corrections"
    for e in doc["entries"]:
        assert hashlib.sha256(canonical_json(e["body"]).encode()).hexdigest() == e["hash"]


def test_names_from_the_kit(db: Path, tmp_path: Path) -> None:
    kit = KIT.model_dump(mode="json")
    kit["children"][0]["nickname"] = "あおい"
    (tmp_path / "kit.yaml").write_text(yaml.safe_dump(kit, allow_unicode=True), encoding="utf-8")
    code, data, _ = export(db, "--date", DAY, "--config", str(tmp_path / "kit.yaml"))
    assert code == 0 and ",c01,あおい,0歳," in data.decode("utf-8-sig")


def test_other_days_and_midnight(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    midnight = 1_767_279_600_000  # 2026-01-02 00:00 JST
    with RecordStore(path) as store:
        keeper = RecordKeeper(KIT, store, RecordsConfig())
        keeper.session_started("risu", midnight - 10 * MIN, by="x")
        keeper.session_stopped("risu", midnight + 10 * MIN, by="x")
    # records at 23:55 | 00:00, 00:05 and 00:10 (the stop, on a boundary)
    for day, n in (("2026-01-01", 1), ("2026-01-02", 3), ("2026-01-03", 0)):
        code, data, err = export(path, "--date", day, "--room", "risu")
        assert code == 0, err
        assert len(from_csv(data)) == n, day
    code, data, _ = export(path, "--date", "2026-01-01", "--room", "risu", "--tz", "UTC")
    assert len(from_csv(data)) == 4, "in UTC the whole nap is on Jan 1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--date", "2026-13-01"], "--date '2026-13-01': expected YYYY-MM-DD"),
        (["--date", DAY, "--format", "pdf"], "--format must be csv or json"),
        (["--date", DAY, "--lang", "fr"], "--lang ja or en (got 'fr')"),
        (["--date", DAY, "--tz", "Mars/Olympus"], "--tz 'Mars/Olympus': unknown time zone"),
        (["--date", DAY, "--tz", "Asia"], "--tz 'Asia': unknown time zone"),  # was IsADirectoryError
        (["--date", DAY, "--tz", "x" * 300], "unknown time zone"),  # was OSError (file name too long)
        (["--date", "9999-12-31"], "--date 9999-12-31: out of range (the last day with records is 9999-12-30)"),
        (["--date", DAY, "--room", "nope"], "no nap-check records for room 'nope' (rooms: hiyoko)"),
    ],
)
def test_bad_arguments_exit_2(db: Path, args: list[str], message: str) -> None:
    code, _, err = export(db, *args)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("seq", ["9" * 5000, "9" * 19, "٣"])  # past int()'s 4,300 digits; 64 bits; not ASCII
def test_verify_refuses_an_anchor_out_of_range(db: Path, seq: str) -> None:
    result = runner.invoke(app, ["records", "verify", "--db", str(db), "--expect-head", f"{seq}:{'a' * 64}"])
    assert result.exit_code == 2 and "expected SEQ:HASH (a number, a colon and 64 hex digits)" in result.stderr


def test_a_broken_chain_still_exports_but_says_so(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.sqlite3"
    copy.write_bytes(db.read_bytes())
    tamper(copy, ("DELETE FROM record_entries WHERE seq = 20", ()))
    code, data, err = export(copy, "--date", DAY)
    assert code == 1
    assert "the record chain is broken — entry 20: deleted" in err and "may hold altered records" in err
    assert len(from_csv(data)) == 43
