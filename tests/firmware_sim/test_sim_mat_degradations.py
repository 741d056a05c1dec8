"""The mat degradations the breathing bench runs (bench/breathing_accuracy.py ``DEGRADATIONS``):
the replay's amplitude normalisation (or none), slow swings, the child's weight and the mat's scale.
Fast: synthetic signals, a minute or two of samples, no ptys."""

from __future__ import annotations

import numpy as np

from firmware_sim.models.mat import MatModel, MatOptions, MatStep
from firmware_sim.models.resp_belt import Recording, ReplayMat, ReplayOptions

FS = 25
QUIET = {"noise_counts": 0, "drift_counts": 0, "heart_counts": 0, "movement_counts": 0}


def belt(amplitudes: list[tuple[float, float]], fs: float = 20.0) -> np.ndarray:
    """A 15/min sine belt: (seconds, amplitude) passages one after the other, plus a level."""
    parts = []
    t0 = 0.0
    for seconds, amplitude in amplitudes:
        t = t0 + np.arange(int(seconds * fs)) / fs
        parts.append(amplitude * np.sin(2 * np.pi * 0.25 * t))
        t0 += seconds
    return 5000.0 + np.concatenate(parts)


def peak(x: np.ndarray) -> float:
    return float(np.percentile(np.abs(x), 99))


def test_no_normalisation_keeps_a_shallow_passage_shallow() -> None:
    # 5 min of normal breathing, 2 min at a fifth of the size, 5 min normal (recording seconds).
    rec = Recording(belt([(300, 100.0), (120, 20.0), (300, 100.0)]))
    fs = int(rec.fs_hz)
    normal, shallow = slice(100 * fs, 250 * fs), slice(330 * fs, 390 * fs)
    short = rec.normalised(30.0)
    assert peak(short[shallow]) > 0.8 * peak(short[normal])  # the 30 s normalisation inflates it back
    none = rec.normalised(None)
    assert 0.15 < peak(none[shallow]) / peak(none[normal]) < 0.25  # no normalisation: a fifth, as breathed
    assert 0.9 < peak(none[normal]) < 1.6  # typical breaths at about ±1 (× breath_counts on the mat)
    # The references are found on the 30 s normalisation whatever reaches the mat.
    assert rec.breathing is short
    # Through the replay mat: the breathing that reaches the mat keeps the shallow passage shallow.
    opts = {**QUIET, "replay": "synthetic", "time_scale": 1.0}
    flat = ReplayMat([MatStep(at_s=0, present=True)], ReplayOptions(**opts, envelope_s=None), rec)
    t = np.arange(0.0, 720.0, 1 / FS)
    w = flat.respiration(t)
    assert peak(w[(t > 330) & (t < 390)]) < 0.3 * peak(w[(t > 100) & (t < 250)])
    default = ReplayMat([MatStep(at_s=0, present=True)], ReplayOptions(**opts), rec)
    v = default.respiration(t)
    assert peak(v[(t > 330) & (t < 390)]) > 0.8 * peak(v[(t > 100) & (t < 250)])


def spectrum_share_below(x: np.ndarray, hz: float) -> float:
    x = x - x.mean()
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1.0 / FS)
    return float(power[f < hz].sum() / power.sum())


def moving(**options: float) -> np.ndarray:
    steps = [MatStep(at_s=0, present=True), MatStep(at_s=20, movement=True), MatStep(at_s=80, movement=False)]
    opts = MatOptions(**{**QUIET, "breath_counts": 0, **options})
    return MatModel(steps, opts, seed="swing").samples(30 * FS, 40 * FS).astype(np.float64)


def test_slow_swings_reach_the_mat_as_low_frequency_motion() -> None:
    swing = moving(swing_counts=1500)
    assert np.std(swing) > 200  # a real movement of the load, far beyond a breath (±60)
    assert spectrum_share_below(swing, 0.5) > 0.9  # slow: at and below the breathing band
    jerk = moving(movement_counts=1500)
    assert spectrum_share_below(jerk, 0.5) < 0.5  # the jerk is mostly faster
    # Off by default: the default mat's samples are what they were.
    assert np.array_equal(moving(), moving(swing_counts=0))


def level(options: MatOptions) -> float:
    model = MatModel([MatStep(at_s=0, present=True)], options, seed="scale")
    return float(np.median(model.samples(5 * FS, 10 * FS)))


def breath_size(options: MatOptions) -> float:
    model = MatModel([MatStep(at_s=0, present=True, rate_bpm=30)], options, seed="scale")
    return float(np.std(model.samples(5 * FS, 60 * FS)))


def test_mat_scale_multiplies_the_weight_step_and_the_breathing() -> None:
    quiet = {**QUIET, "breath_counts": 0}
    offset = 500.0
    assert level(MatOptions(**quiet)) == offset + 9000  # nominal: 1000 counts/kg, a 9 kg child
    assert level(MatOptions(**quiet, counts_per_kg=400)) == offset + 3600
    assert level(MatOptions(**quiet, counts_per_kg=4000)) == offset + 36_000
    # The tare offset is the electronics', not load: an empty mat reads it at every scale.
    empty = MatModel([MatStep(at_s=0, present=False)], MatOptions(**quiet, counts_per_kg=400), seed="e")
    assert np.all(empty.samples(0, 10 * FS) == offset)
    nominal = breath_size(MatOptions(**QUIET))
    assert abs(breath_size(MatOptions(**QUIET, counts_per_kg=400)) / nominal - 0.4) < 0.02


def test_lighter_and_heavier_children_scale_weight_and_breathing() -> None:
    quiet = {**QUIET, "breath_counts": 0}
    assert level(MatOptions(**quiet, child_kg=4)) == 500 + 4000
    assert level(MatOptions(**quiet, child_kg=15, counts_per_kg=400)) == 500 + 6000
    nominal = breath_size(MatOptions(**QUIET))
    assert abs(breath_size(MatOptions(**QUIET, child_kg=4.5)) / nominal - 0.5) < 0.02
    assert abs(breath_size(MatOptions(**QUIET, child_kg=18)) / nominal - 2.0) < 0.05
