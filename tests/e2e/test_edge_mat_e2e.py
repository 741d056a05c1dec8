"""A simulated nap mat end to end on real parts: firmware_sim on a real pty → run_edge → the real
Mosquitto → a subscriber that validates every breathing payload with the contract."""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
from pathlib import Path

import pytest

from edge.agent.runner import run_edge
from firmware_sim.io.runner import run_sim
from firmware_sim.scenario import parse_scenario
from nurserywatch.contract import BreathingReading, decode, reading_topic
from nurserywatch.mqtt import BrokerURL
from tests.support.clock import ShiftedClock
from tests.support.edge_recorder import AGENT, is_status, record, site_id
from tests.support.kits import mat_kit
from tests.support.tasks import stop

RATE = 40
LEAVES_AT_S = 20


async def test_mat_breathing_reaches_the_broker(
    mosquitto: BrokerURL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge")
    site = site_id()
    kit = mat_kit(tmp_path, "mat-01", site=site)
    scenario = parse_scenario(
        {
            "devices": {
                "mat-01": {
                    "timeline": [
                        {"at_s": 0, "present": True, "rate_bpm": RATE},
                        {"at_s": LEAVES_AT_S, "present": False},
                    ],
                    "options": {"seed": 3},
                }
            },
            "faults": {"bad_checksum_every": 50},
        }
    )
    clock = ShiftedClock()
    topic = reading_topic(site, "mat-01", "breathing")

    def breathing() -> list[BreathingReading]:
        return [decode(BreathingReading, m.payload) for m in rec.on(topic)]

    async with record(mosquitto, site) as rec:
        sim = asyncio.create_task(run_sim(kit, scenario))
        edge = asyncio.create_task(run_edge(kit, AGENT, mosquitto, clock))
        try:
            await rec.wait_for(is_status(site, "mat-01", True))
            t_start = clock.now_ms()
            # A rate needs the weight step to settle and 8 s of breathing.
            await rec.wait_for(
                lambda m: m.topic == topic and decode(BreathingReading, m.payload).rate_bpm is not None, timeout=16
            )
            await asyncio.sleep(4)
            during = breathing()
            await rec.wait_for(
                lambda m: m.topic == topic and decode(BreathingReading, m.payload).present is False,
                timeout=LEAVES_AT_S + 8 - (clock.now_ms() - t_start) / 1000,
            )
            t_left = clock.now_ms()
        finally:
            await stop(edge)
            await stop(sim)

    rated = [r for r in during if r.rate_bpm is not None]
    assert len(rated) >= 4
    assert all(r.present is True and r.rate_bpm == pytest.approx(RATE, abs=3) for r in rated)
    assert all(r.quality is not None and r.quality > 0.5 and (r.motion or 0) < 0.3 for r in rated)
    assert all(r.last_breath_ts is not None and r.ts - 3000 <= r.last_breath_ts <= r.ts for r in rated)
    readings = breathing()
    assert all(ShiftedClock.START_MS <= r.ts <= t_left for r in readings), "times from the injected clock"
    # Once a second; ts is the newest sample's time, so it moves in 200 ms sentence steps.
    spacing = [b.ts - a.ts for a, b in zip(readings, readings[1:], strict=False)]
    assert all(400 <= d <= 1600 for d in spacing) and 900 <= statistics.median(spacing) <= 1100
    left = [r for r in readings if r.present is False]
    assert left[0].ts - t_start >= (LEAVES_AT_S - 1) * 1000, "present until the child is picked up"
    assert all(r.rate_bpm is None for r in left)
    # Every 50th sentence had a bad checksum: counted and logged, the breathing carried on.
    assert re.search(r"WARNING .* mat-01: rejected \d+ sentence\(s\) \(bad_checksum=\d+\)", caplog.text)
