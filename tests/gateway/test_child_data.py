"""`nurserywatch data export/erase --child`: a gateway database with a nap's records, readings and
alerts of several children (one device re-bound to another child midway), exported and erased
through the real CLI; the records' chain verified after the erase and tampered with afterwards;
InfluxDB 1.6.7 and its disk buffer on a real server."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from gateway.alert_changes import Change, Transition
from gateway.child_data.selection import (
    Binding,
    DayAssignment,
    DeviceWindow,
    changed_bindings,
    child_windows,
    line_child,
    time_chunks,
)
from gateway.child_data.store import ChildDataStore
from gateway.db.store import Store
from gateway.influx.buffer import WriteBuffer
from gateway.influx.line_protocol import encode_line
from gateway.records.entries import canonical_json
from gateway.records.reader import RecordReader
from gateway.retention.store import connect as retention_connect
from gateway.retention.store import roll_up
from nurserywatch.cli.main import app
from nurserywatch.contract import AlertState, BreathingReading, Position, PostureReading, Stream
from nurserywatch.kit import Kit
from tests.support.clock import MIN
from tests.support.influx_servers import Server
from tests.support.nap_records import KIT, T0, alert, nap, tamper

runner = CliRunner()
SWITCH = T0 + 40 * MIN  # post-c03 watches "other" from here on (a kit change, noted by the gateway)
OTHERS = [f"c{i:02d}" for i in range(1, 13) if i != 3] + ["other"]


def rebound_kit() -> Kit:
    data = KIT.model_dump(mode="json")
    for d in data["devices"]:
        if d["id"] == "post-c03":
            d["child"] = "other"
    return Kit.model_validate(data)


def write_kit(path: Path, kit: Kit, **storage: object) -> Path:
    data = kit.model_dump(mode="json", exclude_none=True)
    data["storage"] = {**data["storage"], **storage}
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path]:
    """The gateway's database: a 30-min nap's records of 12 children, readings of c03 / c04 /
    "other" around a re-binding, alerts of c03 and c04; and the kit file after the re-binding."""
    db = tmp_path / "gw.sqlite3"
    nap(db)
    with ChildDataStore(db) as cds:
        assert cds.note_bindings(KIT, T0 - 60 * MIN) == len(KIT.devices)
        assert cds.note_bindings(KIT, T0) == 0  # a restart with the same kit notes nothing
        assert cds.note_bindings(rebound_kit(), SWITCH) == 1
    with Store(db) as store:
        for i in range(60):  # one reading a minute for an hour
            ts = T0 + i * MIN
            store.add_reading("post-c03", Stream.POSTURE, PostureReading(ts=ts, seq=i, position=Position.SUPINE), ts)
            store.add_reading("nap_-c03", Stream.BREATHING, BreathingReading(ts=ts, seq=i, rate_bpm=22.0), ts)
            store.add_reading("post-c04", Stream.POSTURE, PostureReading(ts=ts, seq=i, position=Position.LEFT), ts)
        for aid, child in (("prone-c03a", "c03"), ("apnea-c03b", "c03"), ("prone-c04a", "c04")):
            raised = alert(aid, child, "prone", AlertState.ACTIVE, T0)
            done = alert(aid, child, "prone", AlertState.RESOLVED, T0 + MIN).model_copy(update={"acknowledged": True})
            store.record([Transition(Change.RAISED, raised, T0), Transition(Change.RESOLVED, done, T0 + MIN)])
    con = retention_connect(db)  # retention's 15-min rollups (breathing rate: the mat's)
    assert roll_up(con, T0 + 120 * MIN)[2] > 0
    con.close()
    return db, write_kit(tmp_path / "kit.yaml", rebound_kit())


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.output


def mentions(text: str, child: str) -> bool:
    return re.search(rf"\b{re.escape(child)}\b", text) is not None


# ---------------------------------------------------------------- pure


def test_windows_follow_the_binding_log_and_the_days_assignments() -> None:
    log = [Binding("mat-1", "a", 1000), Binding("mat-1", "b", 5000), Binding("mat-2", None, 1000)]
    assert child_windows(log, "a") == [DeviceWindow("mat-1", 0, 5000)]  # the first binding from the beginning
    assert child_windows(log, "b") == [DeviceWindow("mat-1", 5000, None)]
    # a staff assignment holds from when it was made to the end of its (UTC here) day
    day = 86_400_000
    staff = [DayAssignment("mat-2", "a", "1970-01-02", day + 3000)]
    from zoneinfo import ZoneInfo

    assert child_windows(log, "a", staff, ZoneInfo("UTC")) == [
        DeviceWindow("mat-1", 0, 5000),
        DeviceWindow("mat-2", day + 3000, 2 * day),
    ]
    noted = [Binding(d.id, d.child, 0) for d in KIT.devices]
    assert changed_bindings(noted, rebound_kit(), 9) == [Binding("post-c03", "other", 9)]  # only what changed


def test_line_child_reads_the_tag_with_escapes() -> None:
    assert line_child(encode_line("posture", {"child": "c03", "room": "a b,c"}, {"seq": 1}, 5)) == "c03"
    assert line_child(encode_line("air", {"room": "child=c03"}, {"seq": 1}, 5)) is None
    assert line_child('m,device=x\\ child=c03 child="c03" 1') is None  # an escaped space inside a tag value
    assert time_chunks(10, 25, 10) == [(10, 20), (20, 30)]


# ---------------------------------------------------------------- export


def test_export_holds_exactly_the_childs_data(site: tuple[Path, Path], tmp_path: Path) -> None:
    db, kit = site
    out = tmp_path / "export"
    code, output = run("data", "export", "--child", "c03", "--out", str(out), "-c", str(kit), "--db", str(db),
                       "--by", "園長")  # fmt: skip
    assert code == 0, output
    readings = json.loads((out / "readings.json").read_text())
    # the mat for the whole hour, the clip only before the switch (afterwards it watched "other")
    expected = {("nap_-c03", T0 + i * MIN) for i in range(60)} | {("post-c03", T0 + i * MIN) for i in range(40)}
    assert {(r["device"], r["ts"]) for r in readings} == expected and len(readings) == len(expected)
    alerts = json.loads((out / "alerts.json").read_text())
    assert sorted(a["alert"]["id"] for a in alerts) == ["apnea-c03b", "prone-c03a"]
    assert all(len(a["transitions"]) == 2 for a in alerts)
    records = json.loads((out / "records.json").read_text())
    in_chain = [s for s in RecordReader(db).stored() if s.columns["child"] == "c03"]
    assert len(in_chain) == 6  # a 30-min nap, a 0-year-old checked every 5 min
    assert sorted(e["seq"] for e in records["entries"]) == [s.seq for s in in_chain]
    assert [p["interval_s"] for p in records["sessions"]] == [300] and records["chain"]["ok"] is True
    for e in records["entries"]:  # anyone can re-check an exported entry against its hash
        assert hashlib.sha256(canonical_json(e["body"]).encode()).hexdigest() == e["hash"]
    csvs = sorted(p.name for p in out.glob("*.csv"))
    assert csvs == ["alert_transitions.csv", "alerts.csv", "readings_breathing.csv", "readings_posture.csv",
                    "records.csv", "rollups_breathing.csv"]  # fmt: skip
    assert len((out / "readings_posture.csv").read_text(encoding="utf-8-sig").splitlines()) == 41
    everything = "\n".join(p.read_text(encoding="utf-8-sig") for p in out.iterdir())
    assert [c for c in OTHERS if mentions(everything, c)] == []  # nobody else's data, not even their ids
    rollups = json.loads((out / "rollups.json").read_text())
    assert rollups and {r["device"] for r in rollups} == {"nap_-c03"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["readings"] == 100 and manifest["counts"]["records"] == 6
    with ChildDataStore(db) as cds:
        (req,) = cds.requests("c03")
    assert (req.action, req.by, req.outcome, req.counts["alerts"]) == ("export", "園長", "done", 2)

    other = tmp_path / "other"
    assert run("data", "export", "--child", "other", "--out", str(other), "-c", str(kit), "--db", str(db),
               "--format", "json")[0] == 0  # fmt: skip
    got = json.loads((other / "readings.json").read_text())
    assert {(r["device"], r["ts"]) for r in got} == {("post-c03", T0 + i * MIN) for i in range(40, 60)}
    assert not list(other.glob("*.csv"))


# ---------------------------------------------------------------- erase


def test_erase_removes_the_child_everywhere_and_the_chain_still_verifies(site: tuple[Path, Path]) -> None:
    db, kit = site
    before = {s.seq: s.hash for s in RecordReader(db).stored()}
    kept = {s.seq: s.body for s in RecordReader(db).stored() if s.columns["child"] not in (None, "c03")}
    code, output = run("data", "erase", "--child", "c03", "-c", str(kit), "--db", str(db), "--yes", "--by", "園長")
    assert code == 0, output
    assert "erase of child c03 by 園長: done" in output
    con = sqlite3.connect(db)
    devices = dict(con.execute("SELECT device, COUNT(*) FROM readings GROUP BY device").fetchall())
    assert devices == {"post-c03": 20, "post-c04": 60}  # "other"'s 20 and c04's 60 untouched
    assert [r[0] for r in con.execute("SELECT id FROM alerts")] == ["prone-c04a"]
    assert con.execute("SELECT COUNT(*) FROM alert_transitions").fetchone()[0] == 2
    bodies = [r[0] for r in con.execute("SELECT body || ' ' || coalesce(child, '') FROM record_entries")]
    assert not any(mentions(b, "c03") for b in bodies)
    assert not con.execute("SELECT 1 FROM device_bindings WHERE child = 'c03'").fetchall()
    (erase_row,) = con.execute("SELECT action, child, by, outcome, counts FROM data_requests").fetchall()
    con.close()
    assert erase_row[:4] == ("erase", "c03", "園長", "done")
    counts = json.loads(erase_row[4])
    # 6 records + the session start that listed c03 among the children checked
    assert counts.pop("reading_rollups") > 0
    assert counts == {"record_entries_redacted": 7, "alerts": 2, "alert_transitions": 4, "readings": 100,
                      "binding_rows": 2, "assignment_rows": 0}  # fmt: skip
    assert not sqlite3.connect(db).execute("SELECT 1 FROM reading_rollups WHERE device = 'nap_-c03'").fetchall()

    code, output = run("records", "verify", "--db", str(db))
    assert code == 0 and "(7 redacted by `data erase`)" in output, output
    after = {s.seq: s for s in RecordReader(db).stored()}
    assert {seq: after[seq].hash for seq in before} == before  # every old hash kept: noted anchors still hold
    assert {seq: after[seq].body for seq in kept} == kept  # the other children's entries unchanged
    assert max(after) == max(before) + 1 and json.loads(after[max(after)].body)["kind"] == "erasure"

    # nothing left to erase or export; the request log keeps both requests
    assert run("data", "erase", "--child", "c03", "-c", str(kit), "--db", str(db), "--yes")[0] == 0
    with ChildDataStore(db) as cds:
        assert [r.action for r in cds.requests("c03")] == ["erase", "erase"]


def _erased(site: tuple[Path, Path]) -> tuple[Path, list[int], int]:
    db, kit = site
    assert run("data", "erase", "--child", "c03", "-c", str(kit), "--db", str(db), "--yes")[0] == 0
    rows = list(RecordReader(db).stored())
    redacted = [r.seq for r in rows if r.columns["kind"] == "redacted"]
    return db, redacted, rows[-1].seq


def test_tampering_after_an_erase_is_still_caught(site: tuple[Path, Path]) -> None:
    db, redacted, erasure = _erased(site)
    victim = next(r for r in RecordReader(db).stored() if r.columns["child"] == "c04")
    marker = canonical_json({"prev_hash": victim.prev_hash, "redacted_by": erasure, "seq": victim.seq})
    snapshot = db.read_bytes()

    def check(expected: str, *statements: tuple[str, tuple[object, ...]]) -> None:
        db.write_bytes(snapshot)
        for suffix in ("-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        tamper(db, *statements)
        code, output = run("records", "verify", "--db", str(db))
        assert code == 1 and re.search(expected, output), output

    # content removed by hand, made to look like a redaction: no erasure entry lists it
    check(rf"entry {victim.seq}: its content was removed, but no erasure entry lists it",
          ("UPDATE record_entries SET body = ?, kind = 'redacted', ts = 0, room = '', child = NULL, session = ''"
           " WHERE seq = ?", (marker, victim.seq)))  # fmt: skip
    # the erasure entry edited (e.g. to vouch for more)
    check(
        rf"entry {erasure} .*edited or forged",
        ('UPDATE record_entries SET body = replace(body, \'"by":"\', \'"by":"x\') WHERE seq = ?', (erasure,)),
    )
    # a redacted entry deleted
    check(rf"entry {redacted[2]}: deleted", ("DELETE FROM record_entries WHERE seq = ?", (redacted[2],)))
    # the entry before a redacted one edited and re-hashed, and the redacted row's link changed to match
    before = redacted[2] - 1
    (body,) = sqlite3.connect(db).execute("SELECT body FROM record_entries WHERE seq = ?", (before,)).fetchone()
    forged = body.replace('"by":"auto"', '"by":"someone"')
    assert forged != body
    new_hash = hashlib.sha256(forged.encode()).hexdigest()
    check(rf"entry {redacted[2]}: replaced — its links differ from those erasure entry {erasure} recorded",
          ("UPDATE record_entries SET body = ?, hash = ? WHERE seq = ?", (forged, new_hash, before)),
          ("UPDATE record_entries SET prev_hash = ?, body = ? WHERE seq = ?",
           (new_hash, canonical_json({"prev_hash": new_hash, "redacted_by": erasure, "seq": redacted[2]}),
            redacted[2])))  # fmt: skip


# ---------------------------------------------------------------- refusals and errors


def test_cli_refuses_what_it_must_not_do(site: tuple[Path, Path], tmp_path: Path) -> None:
    db, kit = site
    base = ["-c", str(kit), "--db", str(db)]
    code, out = run("data", "erase", "--child", "zz9", *base, "--yes")
    assert code == 2 and "child 'zz9' is not in the kit and the database holds nothing about them" in out
    code, out = run("data", "erase", "--child", "C03!", *base, "--yes")
    assert code == 2 and "not a child id" in out
    code, out = run("data", "export", "--child", "c03", "--out", str(tmp_path / "x"), *base, "--format", "xml")
    assert code == 2 and "--format must be json, csv or both" in out
    code, out = run("data", "export", "--child", "c03", "--out", str(tmp_path / "x"), "-c", str(kit),
                    "--db", str(tmp_path / "missing.sqlite3"))  # fmt: skip
    assert code == 2 and "file not found" in out
    code, out = run("data", "erase", "--child", "c03", *base, input="n\n")  # asked, declined
    assert code == 2 and "erase all data about child c03" in out and "nothing erased" in out
    with Store(db) as store:  # an alert nobody acknowledged yet
        store.record([Transition(Change.RAISED, alert("prone-open", "c03", "prone", AlertState.ACTIVE, T0), T0)])
    code, out = run("data", "erase", "--child", "c03", *base, "--yes")
    assert code == 2 and "1 open alert(s) (prone-open)" in out
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 180  # nothing erased
    assert "traceback" not in out.lower()


def test_an_open_nap_session_listing_the_child_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    nap(db, stop=False)
    kit = write_kit(tmp_path / "kit.yaml", KIT)
    code, out = run("data", "erase", "--child", "c05", "-c", str(kit), "--db", str(db), "--yes")
    assert code == 2 and "is in the nap session running in room hiyoko" in out
    assert run("records", "verify", "--db", str(db))[0] == 0


# ---------------------------------------------------------------- InfluxDB 1.6.7 and its disk buffer


def test_influxdb_export_and_erase_on_a_real_server(site: tuple[Path, Path], influxdb: Server, tmp_path: Path) -> None:
    db, _kit = site
    kit = write_kit(tmp_path / "kit-influx.yaml", rebound_kit(), readings="influxdb", url=influxdb.url, api="v1",
                    buffer_path="buffer.sqlite3")  # fmt: skip
    httpx.post(influxdb.url + "/query", data={"q": "CREATE DATABASE nurserywatch"}).raise_for_status()
    lines = []
    for i in range(300):  # 300 points 5 min apart: 25 h, so the export takes several 6-h chunks
        ts = T0 + i * 5 * MIN
        for child, dev in (("c03", "post-c03"), ("c04", "post-c04")):
            tags = {"site": "s1", "room": "hiyoko", "device": dev, "child": child}
            lines.append(encode_line("posture", tags, {"position": "supine", "seq": i}, ts))
        lines.append(encode_line("breathing", {"device": "nap_-c03", "child": "c03"}, {"rate_bpm": 20.0, "seq": i}, ts))
    r = httpx.post(influxdb.url + "/write", params={"db": "nurserywatch", "precision": "ms"},
                   content="\n".join(lines).encode())  # fmt: skip
    assert r.status_code == 204, r.text
    buffer = WriteBuffer(tmp_path / "buffer.sqlite3")
    buffer.push([lines[0], lines[1], lines[2]])  # c03, c04, c03 waiting for the database
    buffer.close()

    out = tmp_path / "export"
    code, output = run("data", "export", "--child", "c03", "--out", str(out), "-c", str(kit), "--db", str(db))
    assert code == 0, output
    points = json.loads((out / "influx.json").read_text())
    assert len(points) == 600 and {p["child"] for p in points} == {"c03"}
    assert {p["measurement"] for p in points} == {"posture", "breathing"}
    assert sorted(p["time"] for p in points if p["measurement"] == "posture") == [T0 + i * 5 * MIN for i in range(300)]
    assert sorted(p.name for p in out.glob("influx_*.csv")) == ["influx_breathing.csv", "influx_posture.csv"]

    code, output = run("data", "erase", "--child", "c03", "-c", str(kit), "--db", str(db), "--yes")
    assert code == 0, output

    def series() -> list[str]:
        r = httpx.get(influxdb.url + "/query", params={"db": "nurserywatch", "q": "SHOW SERIES"})
        return [v[0] for s in r.json()["results"][0].get("series", []) for v in s["values"]]

    assert series() and all("child=c04" in s for s in series())
    r = httpx.get(influxdb.url + "/query", params={"db": "nurserywatch", "q": 'SELECT count("seq") FROM "posture"'})
    assert r.json()["results"][0]["series"][0]["values"][0][1] == 300  # c04's points all there
    left = sqlite3.connect(tmp_path / "buffer.sqlite3").execute("SELECT line FROM pending").fetchall()
    assert [line_child(x[0]) for x in left] == ["c04"]
    with ChildDataStore(db) as cds:
        (req,) = [r for r in cds.requests("c03") if r.action == "erase"]
    assert (req.counts["influx_points"], req.counts["influx_buffer_lines"]) == (600, 2)


def test_an_unreachable_influxdb_leaves_the_erase_incomplete_and_a_rerun_finishes(
    site: tuple[Path, Path], tmp_path: Path
) -> None:
    from nurserywatch.ports import free_port

    db, _kit = site
    kit = write_kit(tmp_path / "kit-down.yaml", rebound_kit(), readings="influxdb",
                    url=f"http://127.0.0.1:{free_port()}", api="v1")  # fmt: skip
    code, out = run("data", "erase", "--child", "c03", "-c", str(kit), "--db", str(db), "--yes")
    assert code == 1 and "not everything was erased" in out and "not reachable" in out
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM readings WHERE device = 'nap_-c03'").fetchone()[0] == 0
    with ChildDataStore(db) as cds:
        assert [r.outcome for r in cds.requests("c03")] == ["incomplete"]
        assert "c03" in {b.child for b in cds.bindings()}  # kept, so a rerun still finds the child
    assert run("records", "verify", "--db", str(db))[0] == 0
