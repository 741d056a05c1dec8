"""The nap-check records' test room: 12 children of mixed ages in one room, a nap through the record
keeper, and tampering with the stored chain the way someone holding the file could."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.alert_changes import Change, Transition
from gateway.records.entries import ChainedEntry, RecordsConfig
from gateway.records.keeper import RecordKeeper, RecordsSigning
from gateway.records.store import RecordStore
from nurserywatch.contract import (
    Alert,
    AlertState,
    BodyTempReading,
    BreathingReading,
    Position,
    PostureReading,
    Severity,
)
from tests.support.clock import MIN
from tests.support.clock import T0 as CLOCK_T0
from tests.support.kits import make_kit

#: 2026-01-01 12:42:01.234 JST: deliberately not on a round minute (the records' intervals must not
#: assume the session starts on one), so not the tests' usual origin.
T0 = CLOCK_T0 + 3 * 3600_000 + 42 * MIN + 1_234
ROOM = "hiyoko"
BANDS = ["0"] * 4 + ["1-2"] * 4 + ["3+"] * 4
CHILDREN = [f"c{i:02d}" for i in range(1, 13)]
BAND_OF = dict(zip(CHILDREN, BANDS, strict=True))
NO_MAT = "c12"  # watched by a clip only
THERMO = "c01"


def _kinds(child: str) -> list[str]:
    kinds = ["posture_clip"] if child == NO_MAT else ["nap_mat", "posture_clip"]
    return kinds + (["thermometer"] if child == THERMO else [])


#: Every child in ROOM on a mat (but NO_MAT) and a clip, THERMO also on a thermometer; one child in
#: another room. Device ids: the kind's first four letters and the child (``nap_-c01``, ``post-c01``).
KIT = make_kit(
    "s1",
    rooms={ROOM: "ひよこ組", "risu": "りす組"},
    agents=("pi",),
    children={**BAND_OF, "other": {"age_band": "0", "room": "risu"}},
    devices={f"{kind[:4]}-{c}": {"kind": kind, "child": c} for c in CHILDREN for kind in _kinds(c)},
)


def alert(aid: str, child: str, rule: str, state: AlertState, ts: int) -> Alert:
    return Alert(id=aid, rule=rule, severity=Severity.CRITICAL, state=state, child=child, room=ROOM, device=None,
                 started_ts=ts, updated_ts=ts, resolved_ts=ts if state is AlertState.RESOLVED else None,
                 message="m", message_en="m")  # fmt: skip


def nap(
    db: Path, minutes: int = 30, *, stop: bool = True, start: int = T0, signing: RecordsSigning | None = None
) -> list[ChainedEntry]:
    """A short nap through the keeper from ``start``: readings every 10 s, one alert, ticks every
    second; ``signing``: the keeper signs day heads as the gateway's does."""
    out: list[ChainedEntry] = []
    with RecordStore(db) as store:
        keeper = RecordKeeper(KIT, store, RecordsConfig(), signing=signing)
        out += keeper.session_started(ROOM, start, by="保育士A")
        for t_s in range(0, minutes * 60):
            ts = start + t_s * 1000
            if t_s % 10 == 0:
                for i, c in enumerate(CHILDREN):
                    pos = Position.PRONE if c == "c03" and 600 <= t_s < 700 else Position.SUPINE
                    keeper.reading(f"post-{c}", PostureReading(ts=ts, seq=t_s, position=pos))
                    if c != "c12":
                        keeper.reading(f"nap_-{c}", BreathingReading(ts=ts, seq=t_s, rate_bpm=20.0 + i, present=True))
            if t_s == 300:
                keeper.reading("ther-c01", BodyTempReading(ts=ts, seq=1, celsius=36.6))
            if t_s in (630, 700):
                state = AlertState.ACTIVE if t_s == 630 else AlertState.RESOLVED
                change = Change.RAISED if t_s == 630 else Change.RESOLVED
                keeper.transitions([Transition(change, alert("prone-x", "c03", "prone", state, ts), ts)])
            out += keeper.tick(ts)
        if stop:
            out += keeper.session_stopped(ROOM, start + minutes * MIN, by="保育士A")
    return out


def tamper(db: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """What someone with the file can do: drop the triggers, then change rows."""
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("DROP TRIGGER record_entries_no_update")
    con.execute("DROP TRIGGER record_entries_no_delete")
    for sql, args in statements:
        con.execute(sql, args)
    con.close()
