"""Signed day heads (docs/records.md, "Signed day heads"): records written through the real keeper
with an injected clock across a day boundary, the gateway's key in a file outside the database,
then the database rewritten the way its holder could — triggers dropped, the tail edited and the
chain re-hashed consistently — and `nurserywatch records verify` run as a separate process."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.records.entries import ChainHead, RecordsConfig
from gateway.records.export import read_csv
from gateway.records.keeper import RecordKeeper, RecordsSigning
from gateway.records.reader import RecordReader, read_head_log
from gateway.records.signing import DaySigner, SignedHead, local_day
from gateway.records.store import RecordStore
from nurserywatch.cli.records_signing import KEY_ENV, heads_log_path, open_signing
from nurserywatch.keys import KeyFileError, create_private_key, key_id, load_private_key, public_key_path
from tests.support.clock import MIN
from tests.support.clock import T0 as CLOCK_T0
from tests.support.nap_records import KIT, ROOM, T0, nap

REPO = Path(__file__).resolve().parents[2]
DAY = 24 * 60 * MIN
#: 2026-01-02 00:00:01 JST (15:00:01 UTC on the 1st): the gateway's first tick of the second day.
MIDNIGHT = CLOCK_T0 + 15 * 60 * MIN + 1_000
DAY1_ENTRIES = 46  # a 30-min nap: start, 24 + 12 + 8 records, stop


def test_midnight_is_the_start_of_the_second_local_day() -> None:
    tz = ZoneInfo(KIT.timezone)
    assert str(local_day(T0, tz)) == "2026-01-01" and str(local_day(MIDNIGHT, tz)) == "2026-01-02"
    assert str(local_day(MIDNIGHT - 2_000, tz)) == "2026-01-01"


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path]:
    """(database, key): two naps a day apart, the gateway's keeper signing, ticking over midnight.
    The key lives in its own folder, not beside the database."""
    db = tmp_path / "data" / "gw.sqlite3"
    db.parent.mkdir()
    key = tmp_path / "credentials" / "records-signing.key"
    signing = open_signing(key)
    nap(db, signing=signing)  # day 1: entries 1-46
    with RecordStore(db) as store:  # the gateway, still running at midnight
        RecordKeeper(KIT, store, RecordsConfig(), signing=open_signing(key)).tick(MIDNIGHT)
    nap(db, start=T0 + DAY, signing=open_signing(key))  # day 2 (a restarted gateway): entries 47-92
    return db, key


def verify(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    return subprocess.run(
        [sys.executable, "-m", "nurserywatch", "records", "verify", "--db", str(db), *args],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=False,
    )  # fmt: skip


def canonical(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def rewrite_tail(db: Path, first: int, change: dict[str, object]) -> None:
    """The attack: with plain sqlite3, drop the append-only trigger, change entry ``first`` and
    re-hash it and every entry after it, so the chain is consistent again."""
    with closing(sqlite3.connect(db, isolation_level=None)) as con:
        con.execute("DROP TRIGGER record_entries_no_update")
        (prev,) = con.execute("SELECT hash FROM record_entries WHERE seq = ?", (first - 1,)).fetchone()
        rows = con.execute("SELECT seq, body FROM record_entries WHERE seq >= ? ORDER BY seq", (first,)).fetchall()
        for seq, body in rows:
            data = json.loads(body)
            if seq == first:
                data.update(change)
            data["prev_hash"] = prev
            text = canonical(data)
            digest = hashlib.sha256(text.encode()).hexdigest()
            con.execute("UPDATE record_entries SET body = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                        (text, prev, digest, seq))  # fmt: skip
            prev = digest


def prone_record(db: Path) -> int:
    """The day-1 record that says child c03 was seen face down (what someone would want gone)."""
    with closing(sqlite3.connect(db)) as con:
        seqs = [seq for seq, body in con.execute("SELECT seq, body FROM record_entries WHERE kind = 'record'")
                if json.loads(body).get("prone_seen") is True]  # fmt: skip
    assert seqs and min(seqs) < DAY1_ENTRIES
    return min(seqs)


def test_the_day_head_is_signed_at_midnight_into_the_database_and_the_log(site: tuple[Path, Path]) -> None:
    db, key = site
    (stored,) = [h for h in RecordReader(db).signed_heads() if not isinstance(h, int)]
    assert (stored.head.day, stored.head.seq, stored.head.signed_ts) == ("2026-01-01", DAY1_ENTRIES, MIDNIGHT)
    assert stored.head.hash == RecordReader(db).hash_at(DAY1_ENTRIES)
    assert stored.head.key_id == key_id(load_private_key(key).public_key())
    assert read_head_log(heads_log_path(key)) == [stored]  # the copy beside the key
    assert RecordReader(db).verify().head.seq == 2 * DAY1_ENTRIES  # the restarted gateway did not sign day 2


def test_untouched_records_pass_with_their_signatures(site: tuple[Path, Path]) -> None:
    db, key = site
    done = verify(db, "--public-key", str(public_key_path(key)), "--heads", str(heads_log_path(key)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{db}: OK — {2 * DAY1_ENTRIES} entries, chain intact")
    assert lines[1].startswith(f"signed day heads: 1 hold; last: 2026-01-01, entry {DAY1_ENTRIES}")
    assert lines[2].startswith(f"not yet signed: entries {DAY1_ENTRIES + 1}–{2 * DAY1_ENTRIES}")


def test_a_tail_rewritten_and_rehashed_by_the_holder_of_the_database_is_found(site: tuple[Path, Path]) -> None:
    db, key = site
    signed = RecordReader(db).hash_at(DAY1_ENTRIES)
    target = prone_record(db)
    rewrite_tail(db, target, {"prone_seen": False, "posture": "supine"})
    assert RecordReader(db).verify().ok, "the chain alone cannot tell: that is the attack"
    now = RecordReader(db).hash_at(DAY1_ENTRIES)
    done = verify(db, "--public-key", str(public_key_path(key)))
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"entry {DAY1_ENTRIES}: head of 2026-01-01 signed as {signed}, chain now {now} — an entry from 1 to "
        f"{DAY1_ENTRIES} was rewritten" in done.stderr
    ), done.stderr


def test_a_rewrite_of_the_unsigned_day_is_not_found_and_says_so(site: tuple[Path, Path]) -> None:
    """Today's entries are protected by the chain only until the day's head is signed: verify
    passes and names them as not yet signed (docs/records.md)."""
    db, key = site
    rewrite_tail(db, DAY1_ENTRIES + 5, {"by": "someone"})
    done = verify(db, "--public-key", str(public_key_path(key)))
    assert done.returncode == 0 and f"not yet signed: entries {DAY1_ENTRIES + 1}–" in done.stdout


def test_a_wrong_public_key_fails(site: tuple[Path, Path], tmp_path: Path) -> None:
    db, key = site
    other = create_private_key(tmp_path / "other" / "records-signing.key")
    done = verify(db, "--public-key", str(tmp_path / "other" / "records-signing.pub"))
    assert done.returncode == 1
    mine = key_id(load_private_key(key).public_key())
    assert (
        f"signed head of 2026-01-01 (entry {DAY1_ENTRIES}): signed with key {mine}, which is not the public key "
        f"given ({key_id(other.public_key())})" in done.stderr
    ), done.stderr


def test_a_forged_signature_fails(site: tuple[Path, Path]) -> None:
    """The holder of the database re-signs nothing (no key), but may edit the stored head to match."""
    db, key = site
    target = prone_record(db)
    rewrite_tail(db, target, {"prone_seen": False})
    with closing(sqlite3.connect(db, isolation_level=None)) as con:
        con.execute("DROP TRIGGER record_day_heads_no_update")
        (body,) = con.execute("SELECT body FROM record_day_heads").fetchone()
        (now,) = con.execute("SELECT hash FROM record_entries WHERE seq = ?", (DAY1_ENTRIES,)).fetchone()
        con.execute("UPDATE record_day_heads SET body = ?", (canonical({**json.loads(body), "hash": now}),))
    done = verify(db, "--public-key", str(public_key_path(key)))
    assert done.returncode == 1
    assert f"signed head of 2026-01-01 (entry {DAY1_ENTRIES}): its signature does not match" in done.stderr


def test_heads_removed_from_the_database_are_found_through_the_log_beside_the_key(site: tuple[Path, Path]) -> None:
    db, key = site
    rewrite_tail(db, prone_record(db), {"prone_seen": False})
    with closing(sqlite3.connect(db, isolation_level=None)) as con:
        con.execute("DROP TRIGGER record_day_heads_no_delete")
        con.execute("DELETE FROM record_day_heads")
    pub = str(public_key_path(key))
    assert verify(db, "--public-key", pub).returncode == 0  # the database alone: nothing left to check
    done = verify(db, "--public-key", pub, "--heads", str(heads_log_path(key)))
    assert done.returncode == 1 and f"entry {DAY1_ENTRIES}: head of 2026-01-01 signed as" in done.stderr


def test_cutting_signed_entries_off_the_end_is_found(site: tuple[Path, Path]) -> None:
    db, key = site
    with closing(sqlite3.connect(db, isolation_level=None)) as con:
        con.execute("DROP TRIGGER record_entries_no_delete")
        con.execute("DELETE FROM record_entries WHERE seq >= 40")
    assert RecordReader(db).verify().ok
    done = verify(db, "--public-key", str(public_key_path(key)))
    assert done.returncode == 1 and "but the chain now ends at entry 39 — entries were cut off its end" in done.stderr


def test_without_a_public_key_verify_says_the_heads_were_not_checked(site: tuple[Path, Path]) -> None:
    db, _key = site
    done = verify(db)
    assert done.returncode == 0
    assert "signed day heads: 1 in the database, NOT checked — no public key" in done.stdout


def test_the_public_key_beside_the_database_is_found_by_default(tmp_path: Path) -> None:
    """A gateway started without --records-key makes its key beside the database; verify finds it."""
    db = tmp_path / "gw.sqlite3"
    key = tmp_path / "records-signing.key"
    nap(db, signing=open_signing(key))
    with RecordStore(db) as store:
        RecordKeeper(KIT, store, RecordsConfig(), signing=open_signing(key)).tick(MIDNIGHT)
    rewrite_tail(db, prone_record(db), {"prone_seen": False})
    done = verify(db)
    assert done.returncode == 1 and "head of 2026-01-01 signed as" in done.stderr


# ---------------------------------------------------------------- when the gateway signs


def test_signing_once_a_day_and_after_a_stop_over_midnight(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    key = tmp_path / "k" / "records-signing.key"
    nap(db, signing=open_signing(key), stop=True)

    def heads() -> list[SignedHead]:
        return [h for h in RecordReader(db).signed_heads() if not isinstance(h, int)]

    assert heads() == []  # nothing from an earlier day yet
    # Stopped over midnight, started again on the afternoon of the 3rd: signs at once, as the day that ended.
    at = MIDNIGHT + DAY + 14 * 60 * MIN
    with RecordStore(db) as store:
        keeper = RecordKeeper(KIT, store, RecordsConfig(), signing=open_signing(key))
        keeper.tick(at)
        keeper.tick(at + 1000)
        keeper.session_started(ROOM, at + 2000, by="保育士A")
        keeper.tick(at + 3000)
    (h,) = heads()
    assert (h.head.day, h.head.seq) == ("2026-01-02", DAY1_ENTRIES)
    # Restarted the same day: nothing new to sign (the new entry is from today).
    with RecordStore(db) as store:
        RecordKeeper(KIT, store, RecordsConfig(), signing=open_signing(key)).tick(at + 60_000)
    assert len(heads()) == 1


def test_a_failed_heads_log_is_logged_and_counted_not_lost(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "gw.sqlite3"
    nap(db)
    key = create_private_key(tmp_path / "k.key")

    def broken(_signed: object) -> None:
        raise OSError(28, "No space left on device")

    with RecordStore(db) as store, caplog.at_level(logging.ERROR):
        keeper = RecordKeeper(KIT, store, RecordsConfig(), signing=RecordsSigning(key, broken))
        keeper.tick(MIDNIGHT)
        assert keeper.stats["signed"] == 1 and keeper.stats["sign_error"] == 1
    assert "not in the heads file: [Errno 28] No space left on device" in caplog.text
    assert len(RecordReader(db).signed_heads()) == 1


def test_day_signer_labels_the_day_that_ended() -> None:
    signer = DaySigner(Ed25519PrivateKey.generate(), "s1", ZoneInfo("Asia/Tokyo"), None)
    head = ChainHead(5, "a" * 64)
    assert signer.due(MIDNIGHT - 2_000, lambda: head, lambda _s: T0) is None  # still day 1: nothing ended
    signed = signer.due(MIDNIGHT, lambda: head, lambda _s: T0)
    assert signed is not None and signed.head.day == "2026-01-01"


# ---------------------------------------------------------------- the key file


def test_the_key_is_made_on_first_start_with_a_clear_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = tmp_path / "credentials" / "records-signing.key"
    with caplog.at_level(logging.INFO):
        first = open_signing(key)
    assert "made a new site key for signing the nap-check records' day heads" in caplog.text
    assert str(key) in caplog.text and str(public_key_path(key)) in caplog.text
    assert oct(key.stat().st_mode & 0o777) == "0o600" and oct(public_key_path(key).stat().st_mode & 0o777) == "0o644"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = open_signing(key)  # the same key on the next start
    assert "made a new" not in caplog.text
    assert key_id(first.key.public_key()) == key_id(again.key.public_key())


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "records-signing.key"
    create_private_key(key)
    key.chmod(0o644)
    with pytest.raises(KeyFileError, match="mode 0644 lets others read the signing key"):
        open_signing(key)


def test_the_csv_export_carries_the_head_and_reads_back(site: tuple[Path, Path]) -> None:
    db, _key = site
    done = subprocess.run(
        [sys.executable, "-m", "nurserywatch", "records", "export", "--db", str(db), "--room", ROOM,
         "--date", "2026-01-01"], capture_output=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"\xef\xbb\xbf")  # Excel in Japan
    rows, head = read_csv(done.stdout)
    assert len(rows) == 44 and head is not None
    assert (head.seq, head.hash) == (DAY1_ENTRIES - 1, RecordReader(db).hash_at(DAY1_ENTRIES - 1))
    last = done.stdout.decode("utf-8-sig").splitlines()[-1]
    assert last == f"#記録チェーン（改ざん確認用: nurserywatch records verify --expect-head）,{head.seq}:{head.hash}"


def test_kit_provision_makes_the_records_key_once_and_exports_its_public_key(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nurserywatch", "kit", "provision", "--config", "configs/kit.example.yaml",
           "--out", str(out)]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    assert "records-signing.key  the records' site key (new" in first.stdout
    key = out / "credentials" / "records-signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (out / "records-signing.pub").read_bytes() == public_key_path(key).read_bytes()
    kid = key_id(load_private_key(key).public_key())
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert again.returncode == 0 and "records' site key (kept" in again.stdout
    assert key_id(load_private_key(key).public_key()) == kid


def test_records_sign_signs_the_head_on_request(site: tuple[Path, Path]) -> None:
    db, key = site
    done = subprocess.run(
        [sys.executable, "-m", "nurserywatch", "records", "sign", "--db", str(db), "--records-key", str(key),
         "--config", "configs/kit.example.yaml"], capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "signed the head of " in done.stdout and f"entry {2 * DAY1_ENTRIES} " in done.stdout
    checked = verify(db, "--public-key", str(public_key_path(key)), "--heads", str(heads_log_path(key)))
    assert checked.returncode == 0, checked.stderr
    assert "signed day heads: 2 hold; last: " in checked.stdout and "not yet signed" not in checked.stdout
