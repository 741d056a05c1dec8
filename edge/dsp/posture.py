"""Posture from one accelerometer sample of a clip worn on the chest/belly (docs/devices.md). Pure.

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

``PostureTracker`` adds what a single sample cannot: hysteresis and dwell, so a child lying near a
boundary or in the middle of a roll does not make the reported position flap:
  * hysteresis: the current position is kept while its own axis still carries ≥ 60 % of |a| (the
    entry threshold is 75 %), as long as |a| is still near 1 g;
  * dwell: a different position is reported only after it has held for ``dwell_ms`` (1 s) —
    except *into* prone, which is reported at once (the prone alert's 30 s count must not start
    late), and *out of* prone, which must hold for ``leave_prone_ms`` (2 s) so a wobble does not
    resolve a prone alert that should stay visible.
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


STAY = 0.60
#: (axis index, sign) of the gravity reaction for each resting position.
_AXIS: dict[Position, tuple[int, int]] = {
    Position.SUPINE: (2, 1),
    Position.PRONE: (2, -1),
    Position.LEFT: (0, -1),
    Position.RIGHT: (0, 1),
    Position.UPRIGHT: (1, 1),
}


def _still_holds(position: Position, sample: tuple[int, int, int]) -> bool:
    """Hysteresis: does ``sample`` still belong to ``position`` by the looser exit threshold?"""
    if position not in _AXIS:
        return False
    magnitude = math.sqrt(sum(v * v for v in sample))
    if not MAGNITUDE_MIN_MG <= magnitude <= MAGNITUDE_MAX_MG:
        return False
    axis, sign = _AXIS[position]
    return sign * sample[axis] >= STAY * magnitude


class PostureTracker:
    """The reported position of one clip, sample by sample (pure; times from the samples)."""

    def __init__(self, dwell_ms: int = 1000, leave_prone_ms: int = 2000) -> None:
        self.dwell_ms = dwell_ms
        self.leave_prone_ms = leave_prone_ms
        self.position: Position | None = None
        self._candidate: Position | None = None
        self._candidate_since = 0

    def update(self, ax_mg: int, ay_mg: int, az_mg: int, ts_ms: int) -> Position:
        sample = (ax_mg, ay_mg, az_mg)
        raw = classify_posture(*sample)
        current = self.position
        if current is None or raw == current or _still_holds(current, sample):
            self.position = reported = current or raw
            self._candidate = None
            return reported
        if raw is Position.PRONE:  # safety: never delay the start of a prone run
            self.position, self._candidate = raw, None
            return raw
        if raw != self._candidate:
            self._candidate, self._candidate_since = raw, ts_ms
        needed = self.leave_prone_ms if current is Position.PRONE else self.dwell_ms
        if ts_ms - self._candidate_since >= needed:
            self.position, self._candidate = raw, None
            return raw
        return current
