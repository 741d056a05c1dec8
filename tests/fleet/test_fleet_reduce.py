"""fleet/reduce.py: raw messages (subject, payload) in partition-stream order → the whole SiteState
expected, one table row per behaviour (what a site sends, replays, forgeries, bad payloads, air
compliance across a month boundary in the site's time zone, signed records heads)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.reduce import AIR_GAP_MAX_S, SiteInfo, apply, month_spans, new_state
from fleet.state import DeviceHealth, EdgeHealth, OpenAlert, RecordsHeadState, SiteState
from gateway.records.signing import DayHead, sign
from nurserywatch.contract import Severity
from nurserywatch.keys import key_id

TZ = ZoneInfo("Asia/Tokyo")
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
KID = key_id(KEY.public_key())
SITE = SiteInfo("sakura", 2, TZ, KEY.public_key())


def ms(text: str) -> int:
    """Local Tokyo time ``YYYY-MM-DD HH:MM:SS`` as unix ms."""
    return int(datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp() * 1000)


T0 = ms("2030-01-31 23:50:00")
NOW = T0 + 2_000  # the centre sees every message 2 s after its site time unless a row says otherwise


def subj(rest: str, site: str = "sakura") -> str:
    return f"nurserywatch.v1.{site}.{rest}"


def js(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def alert(id_: str, rule: str, state: str, *, acked: bool = False, started: int = T0, updated: int = T0,
          resolved: int | None = None, room: str | None = "hiyoko", device: str | None = "air-01",
          severity: str = "warning") -> tuple[str, bytes]:  # fmt: skip
    body = dict(id=id_, rule=rule, severity=severity, state=state, acknowledged=acked, started_ts=started,
                updated_ts=updated, resolved_ts=resolved, room=room, device=device, child=None,
                message="二酸化炭素", message_en="CO2")  # fmt: skip
    return subj(f"alert.{id_}"), js(**body)


def head(seq: int, hash_: str, day: str = "2030-01-30", key: Ed25519PrivateKey = KEY, site: str = "sakura",
         tamper: bool = False) -> tuple[str, bytes]:  # fmt: skip
    signed = sign(key, DayHead(site, day, "Asia/Tokyo", seq, hash_, T0, key_id(key.public_key())))
    body = {**json.loads(signed.to_json())}
    if tamper:
        body["seq"] += 1
    return subj("records.head"), js(**body)


H1, H2 = "a" * 64, "b" * 64


@dataclass(frozen=True)
class Case:
    name: str
    #: (subject, payload[, seq][, now_ms]): seq defaults to the row's index + 1, now to NOW.
    messages: list[tuple[Any, ...]]
    expected: dict[str, Any]
    info: SiteInfo = SITE


def reading(device: str, stream: str, ts: int, seq: int = 1, **fields: Any) -> tuple[str, bytes]:
    return subj(f"reading.{device}.{stream}"), js(ts=ts, seq=seq, **fields)


CASES = [
    Case("readings counted, device last reading, lag",
         [reading("mat-01", "breathing", T0 - 1000, rate_bpm=30.0), reading("mat-01", "breathing", T0, 2),
          reading("clip-01", "posture", T0 - 500, position="supine")],
         dict(readings=3, last_seq=3, last_arrival_ms=NOW, last_msg_ts=T0, lag_ms=NOW - (T0 - 500),
              devices={"mat-01": DeviceHealth(device="mat-01", last_reading_ts=T0),
                       "clip-01": DeviceHealth(device="clip-01", last_reading_ts=T0 - 500)})),
    Case("a redelivered message (seq at or below last_seq) is skipped",
         [(*reading("mat-01", "breathing", T0), 5), (*reading("mat-01", "breathing", T0), 5),
          (*reading("mat-01", "breathing", T0 + 1, 2), 4)],
         dict(readings=1, last_seq=5, last_arrival_ms=NOW, last_msg_ts=T0, lag_ms=2000,
              devices={"mat-01": DeviceHealth(device="mat-01", last_reading_ts=T0)})),
    Case("status: online and battery; an older retained status does not win",
         [(subj("status.mat-01"), js(ts=T0, online=True, battery_pct=80.0)),
          (subj("status.mat-01"), js(ts=T0 - 5000, online=False, battery_pct=90.0))],
         dict(last_seq=2, last_arrival_ms=NOW, last_msg_ts=T0, lag_ms=2000,
              devices={"mat-01": DeviceHealth(device="mat-01", online=True, battery_pct=80.0, status_ts=T0)})),
    Case("status names the device's room (the edge's kit): air observed time is the room's from the start",
         [(subj("status.air-01"), js(ts=T0, online=True, room="usagi")),
          reading("air-01", "air", T0, co2_ppm=500.0), reading("air-01", "air", T0 + 60_000, 2, co2_ppm=510.0)],
         dict(readings=2, last_seq=3, last_arrival_ms=NOW, last_msg_ts=T0 + 60_000, lag_ms=NOW - T0 - 60_000,
              air_observed_s={"2030-01": {"usagi": 60.0}},
              devices={"air-01": DeviceHealth(device="air-01", online=True, status_ts=T0, room="usagi",
                                              last_reading_ts=T0 + 60_000)})),
    Case("edge agents: online, then the retained status deleted",
         [(subj("edge.agent-1"), js(ts=T0, online=True, version="1")),
          (subj("edge.agent-2"), js(online=False)), (subj("edge.agent-1"), b"")],
         dict(last_seq=3, last_arrival_ms=NOW, last_msg_ts=T0, lag_ms=2000,
              edges={"agent-2": EdgeHealth(agent="agent-2", online=False)})),
    Case("gateway heartbeat, then its last will",
         [(subj("gateway"), js(ts=T0, online=True, heartbeat_s=1.0)), (subj("gateway"), js(online=False))],
         dict(last_seq=2, last_arrival_ms=NOW, last_msg_ts=T0, lag_ms=2000, gateway_ts=T0, gateway_online=False)),
    Case("alert open while active, and while resolved but unacknowledged; gone once both",
         [alert("apnea-1", "apnea", "active", device="mat-01", room="hiyoko", severity="critical"),
          alert("apnea-2", "apnea", "active", device="mat-02", room=None, severity="critical"),
          alert("apnea-2", "apnea", "resolved", device="mat-02", room=None, resolved=T0 + 10, updated=T0 + 10,
                severity="critical"),
          alert("apnea-1", "apnea", "resolved", acked=True, device="mat-01", updated=T0 + 20, resolved=T0 + 20,
                severity="critical")],
         dict(last_seq=4, last_arrival_ms=NOW,
              alerts={"apnea-2": OpenAlert(id="apnea-2", rule="apnea", severity=Severity.CRITICAL, active=False,
                                           device="mat-02", started_ts=T0, updated_ts=T0 + 10, message="二酸化炭素",
                                           message_en="CO2")},
              devices={"mat-01": DeviceHealth(device="mat-01", room="hiyoko")})),
    Case("an air alert's active time, split at the month boundary (Tokyo), counted once",
         [alert("co2-1", "co2", "active", started=T0),
          alert("co2-1", "co2", "resolved", updated=T0 + 1_800_000, resolved=T0 + 1_800_000),
          alert("co2-1", "co2", "resolved", acked=True, updated=T0 + 1_900_000, resolved=T0 + 1_800_000),
          alert("temperature-1", "temperature", "resolved", acked=True, room="usagi", device="air-02",
                started=T0 - 60_000, updated=T0, resolved=T0)],
         dict(last_seq=4, last_arrival_ms=NOW,
              air_over_s={"2030-01": {"hiyoko": {"co2": 600.0}, "usagi": {"temperature": 60.0}},
                          "2030-02": {"hiyoko": {"co2": 1200.0}}},
              air_counted=["co2-1", "temperature-1"],
              devices={"air-01": DeviceHealth(device="air-01", room="hiyoko"),
                       "air-02": DeviceHealth(device="air-02", room="usagi")})),
    Case("air readings: observed time per room (the device id until an alert names the room), gaps capped",
         [reading("air-01", "air", T0, co2_ppm=500.0), reading("air-01", "air", T0 + 60_000, 2, co2_ppm=510.0),
          alert("co2-9", "co2", "active", started=T0 + 60_000),
          (*reading("air-01", "air", T0 + 60_000 + 3_600_000, 3, co2_ppm=520.0), 4, T0 + 3_700_000)],
         dict(readings=3, last_seq=4, last_arrival_ms=T0 + 3_700_000, last_msg_ts=T0 + 3_660_000,
              lag_ms=40_000,
              air_observed_s={"2030-01": {"air-01": 60.0}, "2030-02": {"hiyoko": AIR_GAP_MAX_S}},
              alerts={"co2-9": OpenAlert(id="co2-9", rule="co2", severity=Severity.WARNING, active=True,
                                         room="hiyoko", device="air-01", started_ts=T0 + 60_000, updated_ts=T0,
                                         message="二酸化炭素", message_en="CO2")},
              devices={"air-01": DeviceHealth(device="air-01", room="hiyoko", last_reading_ts=T0 + 3_660_000)})),
    Case("refused and counted, never raised: another site's subject, bad JSON, bad payload, a command, the future",
         [(subj("reading.mat-01.breathing", site="momo"), js(ts=T0, seq=1)),
          (subj("reading.mat-01.breathing"), b"{not json"),
          (subj("status.mat-01"), js(ts=T0, online="yes")),
          (subj("command.ack"), js(alert_id="x", by="y")),
          (subj("reading.mat-01.weird"), js(ts=T0, seq=1)),
          reading("mat-01", "breathing", NOW + 3_600_000),
          (subj("alert.apnea-1"), alert("apnea-2", "apnea", "active")[1])],
         dict(last_seq=7, last_arrival_ms=NOW,
              rejected={"other_site": 1, "bad_json": 1, "invalid_payload": 2, "not_sent_to_centre": 1,
                        "bad_topic": 1, "future": 1})),
    Case("records head verified; a step back and a day re-signed differently are refused, the good one kept",
         [head(10, H1, "2030-01-29"), head(20, H2, "2030-01-30"), head(15, H1, "2030-01-31"),
          head(25, H1, "2030-01-30")],
         dict(last_seq=4, last_arrival_ms=NOW,
              records=RecordsHeadState(day="2030-01-30", seq=25, hash=H1, signed_ts=T0, key_id=KID, verified=False,
                                       problem=f"day 2030-01-30 was signed before as {H2} (entry 20), now as {H1}",
                                       received_ms=NOW),
              records_good=RecordsHeadState(day="2030-01-30", seq=20, hash=H2, signed_ts=T0, key_id=KID,
                                            verified=True, received_ms=NOW))),
    Case("records head: a tampered head, another key, another site, are not verified",
         [head(10, H1, tamper=True)],
         dict(last_seq=1, last_arrival_ms=NOW,
              records=RecordsHeadState(day="2030-01-30", seq=11, hash=H1, signed_ts=T0, key_id=KID, verified=False,
                                       problem="its signature does not match its content (altered or forged)",
                                       received_ms=NOW))),
    Case("records head signed with another key",
         [head(10, H1, key=OTHER_KEY)],
         dict(last_seq=1, last_arrival_ms=NOW,
              records=RecordsHeadState(day="2030-01-30", seq=10, hash=H1, signed_ts=T0,
                                       key_id=key_id(OTHER_KEY.public_key()), verified=False,
                                       problem=f"signed with key {key_id(OTHER_KEY.public_key())}, not the site's "
                                               f"key {KID}", received_ms=NOW))),
    Case("records head of a site without a key in the fleet file",
         [head(10, H1)],
         dict(last_seq=1, last_arrival_ms=NOW,
              records=RecordsHeadState(day="2030-01-30", seq=10, hash=H1, signed_ts=T0, key_id=KID, verified=False,
                                       problem="no public key for the site in the fleet file", received_ms=NOW)),
         info=SiteInfo("sakura", 2, TZ, None)),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reduce_table(case: Case) -> None:
    state = new_state(case.info)
    for i, message in enumerate(case.messages):
        subject, payload, *rest = message
        seq = rest[0] if rest else i + 1
        now = rest[1] if len(rest) > 1 else NOW
        apply(state, case.info, subject, payload, seq, now)
    expected = SiteState(site="sakura", partition=2, **case.expected)
    assert state.model_dump() == expected.model_dump()
    # What goes to the bucket reads back as the same state.
    assert SiteState.model_validate_json(state.model_dump_json()) == state


def test_outcome_reading_and_rejection() -> None:
    state = new_state(SITE)
    out = apply(state, SITE, *reading("mat-01", "breathing", T0, rate_bpm=31.0), 1, NOW)
    assert out.changed and out.reading is not None and out.reading[0] == "mat-01" and out.rejected is None
    out = apply(state, SITE, subj("reading.mat-01.breathing", site="momo"), js(ts=T0, seq=1), 2, NOW)
    assert out.rejected == "other_site" and out.problem is not None and "momo" in out.problem
    assert apply(state, SITE, subj("gateway"), js(online=True), 2, NOW).replay


def test_month_spans_in_the_site_zone() -> None:
    # 30 min across midnight of 31 Dec in Tokyo (15:00 UTC): two months, two years.
    start = ms("2030-12-31 23:45:00")
    assert month_spans(start, start + 1_800_000, TZ) == [("2030-12", 900.0), ("2031-01", 900.0)]
    assert month_spans(start, start, TZ) == []
    # Three months in one: Jan → Mar.
    spans = month_spans(ms("2030-01-31 12:00:00"), ms("2030-03-01 12:00:00"), TZ)
    assert [m for m, _ in spans] == ["2030-01", "2030-02", "2030-03"]
    assert spans[1][1] == 28 * 86400.0
