"""Small firmware_sim scenarios built in code."""

from __future__ import annotations

from firmware_sim.scenario import Scenario, parse_scenario


def clip_scenario(rate_hz: float, *steps: tuple[float, str], **extra: object) -> Scenario:
    timeline = [{"at_s": at, "posture": p} for at, p in steps]
    return parse_scenario({"devices": {"clip-01": {"rate_hz": rate_hz, "timeline": timeline}}, **extra})
