"""Posture from one accelerometer sample of a clip worn on the chest/belly (DESIGN.md §4). Pure.

Axes: +z out of the body, +y towards the head, +x towards the child's left; at rest the sensor
reads the reaction to gravity (≈1000 mg):

    dominant axis   +z      −z     −x     +x      +y        −y (head down)
    position        supine  prone  left   right   upright   unknown

Rules, in order:
  1. |a| outside 750–1250 mg → ``unknown``: the child is moving (picked up, rolling), so the vector
     is not gravity.
  2. The largest component must carry ≥ 75 % of |a| (tilt ≤ 41.4° from that axis) → its position;
     otherwise (e.g. halfway between back and side) → ``unknown``. The gap between neighbouring
     cones (45° ± 3.6°) keeps a child lying near a boundary from flipping on every sample.

No dwell time or hysteresis yet: each sample is judged alone. A later issue adds dwell/hysteresis
over a window (the gateway's prone rule already requires ≥ 30 s).
"""

from __future__ import annotations

import math

from nurserywatch.contract import Position

ONE_G_MG = 1000.0
MAGNITUDE_MIN_MG = 750.0
MAGNITUDE_MAX_MG = 1250.0
DOMINANCE = 0.75


def classify_posture(ax_mg: int, ay_mg: int, az_mg: int) -> Position:
    magnitude = math.sqrt(ax_mg * ax_mg + ay_mg * ay_mg + az_mg * az_mg)
    if not MAGNITUDE_MIN_MG <= magnitude <= MAGNITUDE_MAX_MG:
        return Position.UNKNOWN
    axis, value = max((("x", ax_mg), ("y", ay_mg), ("z", az_mg)), key=lambda item: abs(item[1]))
    if abs(value) < DOMINANCE * magnitude:
        return Position.UNKNOWN
    positive = value > 0
    if axis == "z":
        return Position.SUPINE if positive else Position.PRONE
    if axis == "x":
        return Position.RIGHT if positive else Position.LEFT
    return Position.UPRIGHT if positive else Position.UNKNOWN
