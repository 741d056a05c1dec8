"""The records chain head on the printed nap-check sheet and in the dashboard's CSV (docs/records.md,
"The hash chain"): the seq and hash of the last entry the sheet is made of, which `records verify
--expect-head` checks later — in Japanese and in English."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from dashboard.app import create_app
from dashboard.auth.models import Role
from dashboard.i18n import LANGS, catalogue
from gateway.records.export import read_csv
from gateway.records.reader import RecordReader
from nurserywatch.clock import ManualClock
from nurserywatch.mqtt import BrokerURL
from tests.support.dashboard_login import FAST, add_accounts, login
from tests.support.nap_records import KIT, ROOM, T0, nap

DAY = "2026-01-01"
LAST = 45  # the nap's last record (entry 46 stops the session: not on the sheet)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "gw.sqlite3"
    nap(path)
    return path


@pytest.fixture
async def http(tmp_path: Path, db: Path) -> AsyncIterator[httpx.AsyncClient]:
    data = tmp_path / "dash"
    add_accounts(data, T0)
    app = create_app(KIT, BrokerURL.parse("mqtt://127.0.0.1:1"), clock=ManualClock(T0 + 3_600_000), gateway_db=db,
                     data_dir=data, auth_policy=FAST)  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as client:
        yield client
    shutil.rmtree(data, ignore_errors=True)


@pytest.mark.parametrize("lang", LANGS)
async def test_the_printed_sheet_shows_the_chain_head(http: httpx.AsyncClient, db: Path, lang: str) -> None:
    await login(http, Role.STAFF)
    r = await http.get("/records/print", params={"room": ROOM, "date": DAY, "lang": lang})
    assert r.status_code == 200, r.text
    digest = RecordReader(db).hash_at(LAST)
    block = re.search(r'<p class="chain-head" data-testid="print-chain-head">(.*?)</p>', r.text, re.S)
    assert block is not None, r.text
    t = catalogue(lang)  # type: ignore[arg-type]
    assert t["records.chain_head"] in block.group(1) and f"{LAST}:{digest}" in block.group(1)
    assert "--expect-head" in block.group(1)


async def test_an_empty_day_prints_no_head(http: httpx.AsyncClient) -> None:
    await login(http, Role.STAFF)
    r = await http.get("/records/print", params={"room": ROOM, "date": "2026-01-05"})
    assert r.status_code == 200 and "print-chain-head" not in r.text


@pytest.mark.parametrize("lang", LANGS)
async def test_the_csv_ends_with_the_chain_head(http: httpx.AsyncClient, db: Path, lang: str) -> None:
    await login(http, Role.MANAGER)
    r = await http.get("/records.csv", params={"room": ROOM, "date": DAY, "lang": lang})
    assert r.status_code == 200 and r.content.startswith(b"\xef\xbb\xbf")
    rows, head = read_csv(r.content)
    assert len(rows) == 44 and head is not None
    assert (head.seq, head.hash) == (LAST, RecordReader(db).hash_at(LAST))
