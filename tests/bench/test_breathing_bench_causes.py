"""The breathing bench's tracing of each miss to a cause (bench/breathing_accuracy.py ``why_false``,
``why_off_time``): a fast sample of the whole-night run — 900 s of the first tuning night without
normalisation — in which every false alarm and every pause alerted off time gets exactly one cause,
and the size the bench measures a breath by is the breathing that reaches the mat."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from firmware_sim.models.mat import AMPLITUDE_JITTER, MatModel, MatOptions, MatStep

BENCH = Path(__file__).resolve().parents[2] / "bench" / "breathing_accuracy.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("breathing_accuracy", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["breathing_accuracy"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_breaths_size_is_its_band_passed_rise_on_the_mat(bench: ModuleType) -> None:
    quiet = MatOptions(noise_counts=0, drift_counts=0, heart_counts=0, movement_counts=0, breath_counts=60)
    model = MatModel([MatStep(at_s=0, present=True, rate_bpm=30)], quiet, seed="size")
    breaths = np.array(model.reference_breaths(30, 60))
    sizes = bench.swings_on_mat(model, breaths[2:-2], breaths)
    # ±60 counts of sin φ + 0.2 sin 2φ: a rise of about 2 × 60, times the simulator's amplitude jitter.
    low, high = 2 * 60 * (1 - AMPLITUDE_JITTER), 2 * 60 * (1 + AMPLITUDE_JITTER)
    assert np.all((sizes > 0.85 * low) & (sizes < 1.1 * high)), sizes
    halved = MatModel([MatStep(at_s=0, present=True, rate_bpm=30, gain=0.5)], quiet, seed="size")
    assert np.allclose(bench.swings_on_mat(halved, breaths[2:-2], breaths), sizes / 2, rtol=0.02)


def test_every_miss_of_a_night_sample_has_one_cause(bench: ModuleType) -> None:
    deg = next(d for d in bench.DEGRADATIONS if d.name == "no normalisation")
    path = bench.recordings(bench.NIGHTS_DIR, bench.NIGHT_SETS["tuning"])[0]
    figures = bench.NightFigures()
    bench.night(path, deg, True, 0, figures)
    t = figures.main
    assert sum(t.why_false.values()) == t.false_alarms
    hit = [d for d in t.long_pauses() if d is not None]
    off_time = sum(not (bench.ON_TIME_S[0] <= d <= bench.ON_TIME_S[1]) for d in hit)
    assert sum(t.why_off_time.values()) == off_time + (len(t.long_pauses()) - len(hit))
    line = bench.night_summary("tuning", deg, figures)
    assert "false alarms by cause:" in line and "off time by cause:" in line
