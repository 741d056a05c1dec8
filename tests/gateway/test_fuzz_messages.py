"""Fuzzing the MQTT side (a fast, derandomized sample; bench/fuzz.py runs ≥ 100k inputs): the
gateway's ``SiteEngine.handle`` and the dashboard's ``LiveLink.handle`` get hostile topics and payloads —
malformed JSON, wrong types, NaN/Infinity literals, huge and deeply nested payloads, invalid UTF-8,
unknown devices and topics, retained flags, repeated and out-of-order seq, times far past and
future. Properties in tests/fuzz_targets.py; each @example is a bug fuzzing found."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given

from nurserywatch.clock import ManualClock
from nurserywatch.contract import MAX_AHEAD_MS
from tests.support.commands import signed
from tests.support.fuzz_targets import (
    T0,
    TARGETS_BY_NAME,
    _topic,
    fresh_gateway,
    fuzz_settings,
    quiet,
    run_dashboard_messages,
    run_gateway_messages,
)

BIG = "9" * 5000
# Found by fuzzing (each crashed as internal_error before the fix):
REGRESSIONS = [
    # seq beyond SQLite's 64-bit INTEGER: OverflowError in Store.add_reading
    (_topic("reading", "mat-01", "breathing"), b'{"ts": %d, "seq": 9223372036854775808}' % T0),
    # a record entry beyond 64 bits: OverflowError looking it up
    (_topic("command", "record"), b'{"entry": 9223372036854775808, "by": "x"}'),
    # an integer of more than 4300 digits: json.loads raises a ValueError that is not a JSONDecodeError
    (_topic("gateway"), b'{"ts": ' + BIG.encode() + b', "online": true}'),
    (_topic("reading", "clip-01", "posture"), b'{"ts": ' + BIG.encode() + b', "seq": 1, "position": "supine"}'),
]


def _stream(topic: str, payload: bytes) -> list[tuple[tuple[str, bytes, bool], int, bool]]:
    return [((topic, payload, False), 0, True)]


@fuzz_settings()
@given(TARGETS_BY_NAME["gateway"].strategy)
@example(_stream(*REGRESSIONS[0]))
@example(_stream(*REGRESSIONS[1]))
@example(_stream(*REGRESSIONS[3]))
def test_gateway_handle(example_: Any) -> None:
    run_gateway_messages(example_)


@fuzz_settings()
@given(TARGETS_BY_NAME["dashboard"].strategy)
@example(_stream(*REGRESSIONS[2]))
@example(_stream(*REGRESSIONS[3]))
def test_dashboard_handle(example_: Any) -> None:
    run_dashboard_messages(example_)


def breathing(seq: int, ts: int, last_breath_ts: int, rate: float | None) -> bytes:
    return json.dumps({"ts": ts, "seq": seq, "present": True, "rate_bpm": rate, "quality": 0.9, "motion": 0.0,
                       "amplitude": 1.0, "last_breath_ts": last_breath_ts}).encode()  # fmt: skip


def test_a_breath_from_the_future_does_not_silence_the_apnea_alert() -> None:
    """Found by fuzzing far-future times: the apnea rule keeps the latest last_breath_ts, so one reading
    saying the last breath was in the year 3000 kept the mat's apnea alert from ever firing (until a
    gateway restart). Such a reading is now refused as ``future``, and the apnea is still caught."""
    topic = _topic("reading", "mat-01", "breathing")
    with quiet("gateway"), fresh_gateway() as gw:
        clock = gw.clock
        assert isinstance(clock, ManualClock)
        start = _topic("command", "session")
        gw.handle(start, signed(start, {"room": "hiyoko", "action": "start", "by": "t"}, clock.now_ms()))
        t = T0
        for i in range(80):  # breathing for 30 s, then none
            t += 1000
            clock.set(t)
            last = t - 500 if i < 30 else T0 + 30_000
            if i == 10:
                last = 32503680000000
            gw.handle(topic, breathing(i + 1, t, last, 30.0 if i < 30 else None))
            for _ in range(5):
                gw.tick()
        assert gw.stats.rejected == {"future": 1}
        assert "apnea" in {a.rule for a in gw.open_alerts()}


def test_readings_ahead_of_the_clock_are_refused_and_later_ones_judged() -> None:
    topic = _topic("reading", "clip-01", "posture")
    with quiet("gateway"), fresh_gateway() as gw:
        ahead = T0 + MAX_AHEAD_MS + 1
        gw.handle(topic, b'{"ts": %d, "seq": 1, "position": "prone"}' % ahead)
        gw.handle(topic, b'{"ts": %d, "seq": 2, "position": "prone"}' % (T0 + MAX_AHEAD_MS))  # within the margin
        gw.handle(topic, b'{"ts": %d, "seq": 3, "position": "supine"}' % (T0 + 100))  # older: stale, stored
        assert gw.stats.rejected == {"future": 1, "stale": 1}
        assert gw.stats.readings_stored == 2


def test_the_dashboard_refuses_a_posture_from_the_future_and_keeps_following_the_real_ones() -> None:
    from dashboard.live.link import LiveLink
    from nurserywatch.mqtt import BrokerURL
    from tests.support.fuzz_targets import KIT

    clock = ManualClock(T0)
    link = LiveLink(KIT, BrokerURL(host="127.0.0.1", port=1), clock=clock, identifier="t")
    topic = _topic("reading", "clip-01", "posture")
    with quiet("dashboard"):
        link.handle(topic, b'{"ts": 32503680000000, "seq": 1, "position": "prone"}')
        link.handle(topic, b'{"ts": %d, "seq": 2, "position": "supine"}' % T0)
    assert link.state.rejected == {"future": 1}
    assert link.state.postures["clip-01"].position.value == "supine"
