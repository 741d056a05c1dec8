"""Breathing features (edge/breathing.py) on simulated mats with known truth, and on a short replay
of a real recording. The simulator is only the source of samples; the truth is its timeline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge.breathing import BreathingAnalyzer, BreathingFeatures
from firmware_sim.mat import MatModel, MatOptions, MatStep
from firmware_sim.resp_belt import ReplayMat, ReplayOptions, load_recording
from tests.test_sim_mat import resp_belt_file

FS = 25
T0_MS = 1_767_225_600_000


def run(model: MatModel, seconds: int, *, start_s: int = 0) -> list[BreathingFeatures]:
    """Feed ``seconds`` of the model's samples, one sentence at a time, and take features once a
    second. Feature ``k`` covers data up to ``start_s + k + 1`` s."""
    analyzer = BreathingAnalyzer(FS)
    out = []
    n = model.samples_per_line
    for sec in range(start_s, start_s + seconds):
        for line in range(FS // n):
            index = (sec * FS) // n + line
            analyzer.add(T0_MS + index * n * 1000 / FS, model.samples(index * n, n))
        f = analyzer.features()
        assert f is not None
        out.append(f)
    return out


def at(features: list[BreathingFeatures], t_s: float) -> BreathingFeatures:
    """The features computed at time t_s (data up to t_s)."""
    return next(f for f in features if f.t_ms >= T0_MS + t_s * 1000 - 40)


def mat(*items: dict[str, Any], seed: str = "b", **options: Any) -> MatModel:
    return MatModel([MatStep.model_validate(i) for i in items], MatOptions(**options), seed=seed)


@pytest.mark.parametrize("rate", [20, 30, 45, 60])
def test_rate_of_a_sleeping_child(rate: float) -> None:
    features = run(mat({"at_s": 0, "present": True, "rate_bpm": rate}, seed=f"s{rate}"), 70)
    steady = [f for f in features if f.t_ms >= T0_MS + 20_000]
    rates = [f.rate_bpm for f in steady]
    assert None not in rates
    errors = np.abs(np.array(rates, dtype=float) - rate)
    assert errors.mean() < 0.03 * rate and errors.max() < 0.08 * rate
    assert all(f.present and f.motion < 0.1 and f.quality > 0.7 for f in steady)
    assert all(80 < (f.amplitude or 0) < 170 for f in steady), "≈ 2 × 60 counts peak to peak"
    # A breath every period: the last one is never older than a period plus the ~1 s detection lag.
    ages = [(f.t_ms - (f.last_breath_ms or 0)) / 1000 for f in steady]
    assert max(ages) < 60 / rate + 1.3 and min(ages) >= 0.5


def test_first_reading_needs_eight_seconds() -> None:
    features = run(mat({"at_s": 0, "present": True, "rate_bpm": 40}), 14)
    assert features[0] == BreathingFeatures(
        t_ms=T0_MS + 960, rate_bpm=None, amplitude=None, motion=0.0, present=None, quality=0.0, last_breath_ms=None
    )
    assert at(features, 4).present is True, "the weight arrived at the start"
    assert all(f.rate_bpm is None for f in features[:9]) and features[-1].rate_bpm == pytest.approx(40, abs=2)


def test_empty_mat_then_a_child_then_empty_again() -> None:
    model = mat(
        {"at_s": 0, "present": False},
        {"at_s": 20, "present": True, "rate_bpm": 35},
        {"at_s": 60, "present": False},
        seed="e",
    )
    features = run(model, 90)
    assert [f.present for f in features[:9]] == [None] * 9, "nothing known at start"
    early = [f for f in features if f.t_ms < T0_MS + 20_000]
    assert all(f.present is False and f.rate_bpm is None for f in early[10:])
    assert at(features, 19).present is False and at(features, 24).present is True, "within 4 s of lying down"
    assert at(features, 40).rate_bpm == pytest.approx(35, abs=2)
    assert at(features, 59).present is True and at(features, 64).present is False, "within 4 s of leaving"
    late = [f for f in features if f.t_ms >= T0_MS + 64_000]
    assert all(f.present is False and f.rate_bpm is None and f.quality == 0 for f in late)
    assert len({f.last_breath_ms for f in late}) == 1, "an empty mat has no breaths"


def test_apnea_stops_the_breaths_and_the_rate() -> None:
    model = mat(
        {"at_s": 0, "present": True, "rate_bpm": 30},
        {"at_s": 40, "apnea": True},
        {"at_s": 65, "apnea": False},
        seed="a",
    )
    features = run(model, 95)
    apnea = [f for f in features if T0_MS + 40_000 < f.t_ms <= T0_MS + 65_000]
    last = {f.last_breath_ms for f in apnea}
    assert len(last) == 1, "last_breath_ts stops advancing during the apnea"
    (last_breath,) = last
    assert last_breath is not None and T0_MS + 36_000 <= last_breath <= T0_MS + 41_000, "the last real breath"
    assert all(f.present for f in apnea), "an apnea is not an empty mat"
    assert all(f.rate_bpm is None for f in apnea if f.t_ms >= T0_MS + 48_000), "rate null within 8 s"
    assert all(f.motion < 0.1 for f in apnea)
    assert (at(features, 58).amplitude or 0) < 15, "no breathing amplitude left"
    # Breathing again: breaths within 3 s, the rate within 20 s.
    assert (at(features, 68).last_breath_ms or 0) > T0_MS + 65_000
    assert at(features, 85).rate_bpm == pytest.approx(30, abs=2)


def test_movement_is_reported_as_motion_not_as_a_rate() -> None:
    model = mat(
        {"at_s": 0, "present": True, "rate_bpm": 45},
        {"at_s": 30, "movement": True},
        {"at_s": 36, "movement": False},
        seed="m",
    )
    features = run(model, 60)
    moving = [f for f in features if T0_MS + 31_000 <= f.t_ms <= T0_MS + 36_000]
    assert all(f.motion > 0.8 and f.rate_bpm is None and f.present for f in moving)
    assert at(features, 29).motion < 0.1 and at(features, 40).motion < 0.1
    assert at(features, 50).rate_bpm == pytest.approx(45, abs=3), "back within 14 s of the movement"


def test_gain_change_and_strong_drift() -> None:
    model = mat(
        {"at_s": 0, "present": True, "rate_bpm": 25},
        {"at_s": 40, "gain": 0.5},
        {"at_s": 80, "gain": 1.5},
        seed="g",
        drift_counts=2000,
    )
    features = run(model, 120)
    later = [f for f in features if f.t_ms >= T0_MS + 5_000]
    assert all(f.present for f in later), "a gain step is not the child leaving"
    assert sum(f.motion > 0.5 for f in later) <= 2, "one motion blip per gain step"
    for t in (35, 75, 115):
        assert at(features, t).rate_bpm == pytest.approx(25, abs=2)
    assert at(features, 75).amplitude == pytest.approx(0.5 * (at(features, 35).amplitude or 0), rel=0.3)


def test_edge_restarted_during_a_nap_finds_the_child_by_the_rhythm() -> None:
    model = mat({"at_s": 0, "present": True, "rate_bpm": 40}, {"at_s": 80, "present": False}, seed="r")
    features = run(model, 40, start_s=50)  # the analyzer never saw the empty mat
    assert at(features, 50 + 5).present is None
    assert at(features, 50 + 15).present is True and at(features, 50 + 15).rate_bpm == pytest.approx(40, abs=2)
    assert at(features, 80 + 5).present is False, "leaving is still a weight drop"


def test_gaps_are_bridged_or_restart_the_window() -> None:
    model = mat({"at_s": 0, "present": True, "rate_bpm": 30})
    analyzer = BreathingAnalyzer(FS)
    for sec in range(30):
        if sec in (12, 20, 21, 22):  # 12: a one-second gap; 20–22: three seconds lost
            continue
        analyzer.add(T0_MS + sec * 1000, model.samples(sec * FS, FS))
        f = analyzer.features()
    assert analyzer.restarts == 1
    assert f is not None and f.t_ms == T0_MS + 29_960 and f.rate_bpm is None, "7 s since the restart"
    analyzer.add(T0_MS + 10_000, model.samples(0, FS))  # time going backwards
    assert analyzer.restarts == 2


def test_replay_of_a_real_recording_gives_a_plausible_rate() -> None:
    # 12_20231119 from 30 min into the night, played at ×2: an adult at ~15/min becomes ~30/min.
    recording = load_recording(resp_belt_file())
    model = ReplayMat(
        [MatStep(at_s=0, present=True)],
        ReplayOptions(replay="12_20231119.csv.gz", start_s=1800),
        recording,
        seed="replay",
    )
    features = run(model, 90)
    errors = []
    for f in features[25:]:
        t = (f.t_ms - T0_MS) / 1000
        breaths = model.reference_breaths(t - 20, t)
        reference = 60 * (len(breaths) - 1) / (breaths[-1] - breaths[0])
        assert f.present and f.rate_bpm is not None
        errors.append(abs(f.rate_bpm - reference))
    assert 20 < np.mean([f.rate_bpm for f in features[25:]]) < 45
    assert np.mean(errors) < 2.0, f"mean absolute error {np.mean(errors):.2f}/min against the clean belt"


def test_analyzer_rejects_nonsense_configuration() -> None:
    with pytest.raises(ValueError, match="fs_hz must be positive"):
        BreathingAnalyzer(0)
    assert BreathingAnalyzer(FS).features() is None
