"""Runtime child ↔ device assignments and the gateway heartbeat.

Pure: AssignmentBook (moves, refusals, the day rolling over, rows of another day ignored) and the
engine re-binding a clip (its prone alert names the newly assigned child). Shell, on a REAL Mosquitto:
the heartbeat retained about every second, the retained assignments (kit then staff), a refused
command counted, the records following the new child, and the assignment surviving a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.config import RulesConfig
from gateway.engine.assignments import AssignmentBook, AssignmentError, local_day
from gateway.engine.rules_engine import RulesEngine
from gateway.records.entries import CheckRecord
from gateway.records.reader import RecordReader
from nurserywatch.clock import ManualClock
from nurserywatch.contract import (
    AlertState,
    AssignCommand,
    AssignmentSource,
    DeviceAssignment,
    GatewayStatus,
    Position,
    PostureReading,
    SessionAction,
    SessionCommand,
    Stream,
    assign_command_topic,
    decode,
    gateway_topic,
    parse_topic,
    session_command_topic,
    site_root,
)
from nurserywatch.mqtt import BrokerURL
from tests.support.clock import T0
from tests.support.commands import publish_command
from tests.support.gateway_stack import TICKING, Clips, assignment_kit, client, gateway, retained
from tests.support.waiting import wait_until

TZ = ZoneInfo("Asia/Tokyo")


def cmd(device: str, child: str | None, by: str = "田中") -> AssignCommand:
    return AssignCommand(device=device, child=child, by=by)


def test_contract_topics_round_trip() -> None:
    assert parse_topic(gateway_topic("s")).kind.value == "gateway"
    assert parse_topic(f"{site_root('s')}/assignment/mat-1").device == "mat-1"
    assert parse_topic(assign_command_topic("s")).kind.value == "command_assign"
    assert decode(GatewayStatus, b'{"online": false}').ts is None  # the last will


def test_book_moves_a_child_and_refuses_what_it_must() -> None:
    book = AssignmentBook(assignment_kit(), TZ, T0)
    assert book.bindings() == {"clip-01": "c001", "clip-02": "c002", "clip-03": None}
    # c002 onto the spare clip: clip-02 watches nobody today
    changes = book.command(cmd("clip-03", "c002"), T0 + 1000, busy=lambda d: False)
    assert {(c.device, c.child, c.source, c.day, c.by) for c in changes} == {
        ("clip-03", "c002", AssignmentSource.STAFF, "2026-01-01", "田中"),
        ("clip-02", None, AssignmentSource.STAFF, "2026-01-01", "田中"),
    }
    assert book.bindings() == {"clip-01": "c001", "clip-02": None, "clip-03": "c002"}
    assert book.command(cmd("clip-03", "c002"), T0 + 2000, busy=lambda d: False) == []  # already so

    for bad, reason in [
        (cmd("air-1", "c001"), "not_assignable"),
        (cmd("nope", "c001"), "unknown_device"),
        (cmd("clip-01", "c404"), "unknown_child"),
        (cmd("clip-01", "c009"), "wrong_room"),
    ]:
        with pytest.raises(AssignmentError) as err:
            book.command(bad, T0 + 3000, busy=lambda d: False)
        assert err.value.reason == reason
    # moving c001 onto clip-02 would take it off clip-01, which has an active alert: refused, nothing changed
    with pytest.raises(AssignmentError) as err:
        book.command(cmd("clip-02", "c001"), T0 + 3000, busy=lambda d: d == "clip-01")
    assert err.value.reason == "device_alerting"
    assert book.bindings() == {"clip-01": "c001", "clip-02": None, "clip-03": "c002"}

    # 2026-01-02 00:00 in Tokyo: the kit's binding returns, and only the changed devices are reported
    midnight = T0 + 15 * 3600_000
    assert local_day(midnight - 1, TZ) == "2026-01-01" and local_day(midnight, TZ) == "2026-01-02"
    assert book.tick(midnight - 1) == []
    back = book.tick(midnight)
    assert {(c.device, c.child, c.source) for c in back} == {
        ("clip-02", "c002", AssignmentSource.KIT), ("clip-03", None, AssignmentSource.KIT),
    }  # fmt: skip


def test_book_keeps_only_todays_rows() -> None:
    staff = AssignmentSource.STAFF
    rows = [
        DeviceAssignment(device="clip-03", child="c001", source=staff, day="2025-12-31", by="x", updated_ts=T0 - 1),
        DeviceAssignment(device="clip-02", child=None, source=staff, day="2026-01-01", by="x", updated_ts=T0),
    ]
    book = AssignmentBook(assignment_kit(), TZ, T0, rows)
    assert book.bindings() == {"clip-01": "c001", "clip-02": None, "clip-03": None}


def test_engine_rebind_alerts_name_the_new_child() -> None:
    kit = assignment_kit()
    engine = RulesEngine(kit, RulesConfig(), T0)
    engine.session_command(SessionCommand(room="hiyoko", action=SessionAction.START, by="x"), T0)
    engine.rebind("clip-03", "c002", T0)
    raised = []
    for s in range(0, 95, 5):  # prone for 90 s: above the prone limit of every age band
        now = T0 + s * 1000
        r = PostureReading(ts=now, seq=s, position=Position.PRONE)
        raised += [t.alert for t in engine.reading("clip-03", Stream.POSTURE, r, now).transitions]
        raised += [t.alert for t in engine.tick(now).transitions]
    prone = [a for a in raised if a.rule == "prone" and a.state is AlertState.ACTIVE]
    assert prone and {a.child for a in prone} == {"c002"} and {a.device for a in prone} == {"clip-03"}


async def test_gateway_heartbeat_assignments_and_records(mosquitto: BrokerURL, tmp_path: Path) -> None:
    site = "assign-svc"
    kit = assignment_kit(site)
    clock = ManualClock(T0)
    db = tmp_path / "gw.sqlite3"
    root = site_root(site)
    async with gateway(kit, mosquitto, db, clock, rules=TICKING) as stats, client(mosquitto) as pub:
        # Heartbeat: retained, online, and repeated about every second (real time; ticks every 50 ms).
        async with client(mosquitto) as sub:
            await sub.subscribe(gateway_topic(site), qos=1)
            beats: list[float] = []
            async with asyncio.timeout(5):
                async for msg in sub.messages:
                    assert isinstance(msg.payload, bytes)
                    status = decode(GatewayStatus, msg.payload)
                    assert status.online and status.heartbeat_s == 1.0
                    beats.append(asyncio.get_running_loop().time())
                    if len(beats) == 4:
                        break
        gaps = [b - a for a, b in zip(beats[1:], beats[2:], strict=False)]  # the first may be the retained one
        assert all(0.5 < g < 1.6 for g in gaps), gaps

        held = await retained(mosquitto, f"{root}/assignment/+")
        assert {t.rsplit("/", 1)[1]: json.loads(p)["child"] for t, p in held.items()} == {
            "clip-01": "c001", "clip-02": "c002", "clip-03": None,
        }  # fmt: skip
        assert {json.loads(p)["source"] for p in held.values()} == {"kit"}

        start = SessionCommand(room="hiyoko", action=SessionAction.START, by="x")
        await publish_command(pub, session_command_topic(site), start, clock.now_ms())
        await publish_command(pub, assign_command_topic(site), cmd("clip-03", "c002"), clock.now_ms())

        async def assigned() -> dict[str, object]:
            got = await retained(mosquitto, f"{root}/assignment/+")
            return {t.rsplit("/", 1)[1]: json.loads(p)["child"] for t, p in got.items()}

        for _ in range(100):
            if (await assigned())["clip-03"] == "c002":
                break
            await asyncio.sleep(0.05)
        assert await assigned() == {"clip-01": "c001", "clip-02": None, "clip-03": "c002"}

        # A refusal is counted under its reason, and nothing changes.
        await publish_command(pub, assign_command_topic(site), cmd("clip-01", "c009"), clock.now_ms())
        await wait_until(lambda: stats.rejected["wrong_room"] == 1, "the wrong_room refusal")

        # The records follow the assignment: clip-03's posture is c002's on the sheet.
        clips = Clips(pub, site, clock, stats)
        for _ in range(11):  # 11 minutes, a reading a minute: c002 (1–2 y) gets its 10-minute record
            await clips.send("clip-01", "clip-03", position=Position.LEFT)
            clock.advance(60_000)
            await asyncio.sleep(0.06)  # let a tick run at the new time
        reader = RecordReader(db)

        def c002_records() -> list[CheckRecord]:
            records, _ = reader.records("hiyoko", T0, T0 + 3600_000)
            return [r.entry for r in records if isinstance(r.entry, CheckRecord) and r.entry.child == "c002"]

        await wait_until(lambda: bool(c002_records()), "a record of c002")
        rec = c002_records()[0]
        assert rec.posture is Position.LEFT and rec.data_missing is False

    # Restart on the same day: the staff assignment is still in force and retained as such.
    async with gateway(kit, mosquitto, db, clock, rules=TICKING):
        for _ in range(100):
            held = await retained(mosquitto, f"{root}/assignment/clip-03")
            if held and json.loads(next(iter(held.values())))["source"] == "staff":
                break
            await asyncio.sleep(0.05)
        state = decode(DeviceAssignment, next(iter(held.values())))
        assert (state.child, state.source, state.by) == ("c002", AssignmentSource.STAFF, "田中")
