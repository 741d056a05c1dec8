"""edge.dsp.posture: accelerometer vector (mg) → Position, as a table (axes in docs/devices.md)."""

from __future__ import annotations

import pytest

from edge.dsp.posture import PostureTracker, classify_posture
from nurserywatch.contract import Position as P

CASES: list[tuple[str, tuple[int, int, int], P]] = [
    # at rest, exactly on an axis
    ("on the back", (0, 0, 1000), P.SUPINE),
    ("on the belly", (0, 0, -1000), P.PRONE),
    ("left side down", (-1000, 0, 0), P.LEFT),
    ("right side down", (1000, 0, 0), P.RIGHT),
    ("sitting up", (0, 1000, 0), P.UPRIGHT),
    ("head down", (0, -1000, 0), P.UNKNOWN),
    # sensor noise and calibration error
    ("noisy supine", (30, -20, 985), P.SUPINE),
    ("noisy prone, tilted", (300, 200, -930), P.PRONE),
    ("supine, 30° towards left", (-500, 0, 866), P.SUPINE),
    ("supine, 40° towards left", (-643, 0, 766), P.SUPINE),
    ("supine, 42° towards left: in the gap", (-669, 0, 743), P.UNKNOWN),
    ("halfway back/side", (-707, 0, 707), P.UNKNOWN),
    ("left, 40° towards back", (-766, 0, 643), P.LEFT),
    ("prone, 40° towards right", (643, 0, -766), P.PRONE),
    ("reclined 40°", (0, 643, 766), P.SUPINE),
    ("all axes equal", (577, 577, 577), P.UNKNOWN),
    # magnitude far from 1 g: moving
    ("0.74 g", (0, 0, 740), P.UNKNOWN),
    ("0.76 g", (0, 0, 760), P.SUPINE),
    ("1.24 g", (0, 0, -1240), P.PRONE),
    ("1.26 g", (0, 0, -1260), P.UNKNOWN),
    ("free fall", (0, 0, 0), P.UNKNOWN),
    ("picked up, 2 g", (0, 0, 2000), P.UNKNOWN),
    ("shaken", (1500, 1500, 0), P.UNKNOWN),
    ("full scale", (32767, -32767, 32767), P.UNKNOWN),
]


@pytest.mark.parametrize(("accel", "expected"), [(a, e) for _, a, e in CASES], ids=[i for i, _, _ in CASES])
def test_classify_posture(accel: tuple[int, int, int], expected: P) -> None:
    assert classify_posture(*accel) is expected


# -- PostureTracker: hysteresis and dwell over a sequence of samples (times in ms)

SUP, PRO, LEFT, RIGHT = (0, 0, 1000), (0, 0, -1000), (-1000, 0, 0), (1000, 0, 0)
NEAR_SIDE_SUPINE = (-700, 0, 714)  # 45.6° towards the left: z still carries 71 % (supine by hysteresis)
MOVING = (0, 0, 300)


def _track(samples: list[tuple[int, tuple[int, int, int]]]) -> list[P]:
    tracker = PostureTracker()
    return [tracker.update(*acc, ts) for ts, acc in samples]


TRACKS: list[tuple[str, list[tuple[int, tuple[int, int, int]]], list[P]]] = [
    ("steady supine", [(0, SUP), (100, SUP)], [P.SUPINE, P.SUPINE]),
    ("into prone at once", [(0, SUP), (100, PRO)], [P.SUPINE, P.PRONE]),
    (
        "a near-boundary supine does not flap to unknown",
        [(0, SUP), (100, NEAR_SIDE_SUPINE), (200, SUP), (300, NEAR_SIDE_SUPINE), (2000, NEAR_SIDE_SUPINE)],
        [P.SUPINE] * 5,
    ),
    (
        "a side roll shorter than the dwell is not reported",
        [(0, SUP), (100, LEFT), (500, LEFT), (900, SUP)],
        [P.SUPINE] * 4,
    ),
    (
        "a side roll held for the dwell is reported",
        [(0, SUP), (100, LEFT), (600, LEFT), (1100, LEFT)],
        [P.SUPINE, P.SUPINE, P.SUPINE, P.LEFT],
    ),
    (
        "leaving prone needs 2 s: a wobble keeps the prone alert visible",
        [(0, PRO), (100, RIGHT), (1500, RIGHT), (1600, PRO), (1700, RIGHT), (3600, RIGHT), (3700, RIGHT)],
        [P.PRONE] * 6 + [P.RIGHT],
    ),
    (
        "moving (not 1 g) is reported only once it lasts",
        [(0, SUP), (100, MOVING), (600, MOVING), (1100, MOVING)],
        [P.SUPINE, P.SUPINE, P.SUPINE, P.UNKNOWN],
    ),
]


@pytest.mark.parametrize(("samples", "expected"), [(s, e) for _, s, e in TRACKS], ids=[n for n, _, _ in TRACKS])
def test_tracker_hysteresis_and_dwell(samples: list[tuple[int, tuple[int, int, int]]], expected: list[P]) -> None:
    assert _track(samples) == expected
