"""Presence on a nap mat (edge/dsp/breathing.py) from evidence the mat really gives: a weight step
on the mat's own scale (the kit's ``counts_per_kg``), and what the gateway's apnea rule makes of it.
Simulated mats (firmware_sim/models/mat.py) are only the source of samples; the truth is their
timeline."""

from __future__ import annotations

from typing import Any

import pytest

from edge.channels.mat import MatChannel
from edge.channels.registry import make_channel
from edge.dsp.breathing import CHILD_STEP_KG, BreathingAnalyzer, BreathingConfig, BreathingFeatures
from firmware_sim.models.mat import MatModel, MatOptions, MatStep
from tests.support.apnea_replay import apnea_alerts, feed_seconds
from tests.support.clock import T0
from tests.support.kits import make_kit

FS = 25
KIT = make_kit("t", name="t", rooms={"r": "r"}, agents=("pi",), children={"c": "0"},
               devices={"mat": {"kind": "nap_mat", "child": "c", "counts_per_kg": 100}})  # fmt: skip


def features_of(model: MatModel, seconds: int, config: BreathingConfig | None) -> list[BreathingFeatures]:
    return feed_seconds(BreathingAnalyzer(FS, config), model.samples(0, seconds * FS), seconds)


def test_the_kit_scale_sets_the_weight_step() -> None:
    device = KIT.device("mat")
    assert device is not None and device.counts_per_kg == 100
    channel = make_channel(device)
    assert isinstance(channel, MatChannel) and channel.config is not None
    assert channel.config.weight_min_counts == CHILD_STEP_KG * 100
    assert BreathingConfig.for_scale(None) == BreathingConfig(), "no scale: the nominal 1 count ≈ 1 g"
    with pytest.raises(ValueError, match="positive"):
        BreathingConfig.for_scale(0.0)


@pytest.mark.parametrize("seed", ["light-a", "light-b"])
def test_an_empty_mat_on_a_light_scale_reads_empty_and_raises_no_apnea(seed: str) -> None:
    """Issue 14: on a mat whose scale puts the child at 900 counts (gain 0.1: 100 counts per kg),
    the fixed 1000-count step never saw the child leave — ``present`` stayed true on the empty mat
    and the apnea rule fired 20 s into every empty stretch. With the kit's ``counts_per_kg`` the
    step is 1 kg on that scale: the empty stretches read empty within 4 s and raise nothing."""
    steps: list[dict[str, Any]] = [
        {"at_s": 0, "present": False}, {"at_s": 20, "present": True, "rate_bpm": 30},
        {"at_s": 80, "present": False}, {"at_s": 140, "present": True}, {"at_s": 200, "present": False},
    ]  # fmt: skip
    model = MatModel([MatStep.model_validate(s) for s in steps], MatOptions(gain=0.1), seed=seed)
    device = KIT.device("mat")
    assert device is not None
    features = features_of(model, 260, BreathingConfig.for_scale(device.counts_per_kg))
    empty = [f for f in features if 84 <= (f.t_ms - T0) / 1000 < 140 or (f.t_ms - T0) / 1000 >= 204]
    assert all(f.present is False for f in empty), "the empty mat reads empty"
    assert all(f.present is True for f in features if 24 <= (f.t_ms - T0) / 1000 < 80)
    apneas = apnea_alerts(KIT, features, rule="apnea")
    assert not [t for t in apneas if 80 <= t < 140 or t >= 200], "no apnea on an empty mat"
