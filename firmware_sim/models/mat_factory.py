"""Which mat model a ``nap_mat`` scenario entry gets: a replayed recording when its options name one,
else the synthetic breather. Kept apart from both models so that the replay can build on the
synthetic mat without the synthetic mat knowing about replays."""

from __future__ import annotations

from firmware_sim.models.mat import MatModel, make_synthetic_mat
from firmware_sim.models.resp_belt import make_replay_mat
from firmware_sim.scenario import DeviceScenario, SimContext


def make_mat(spec: DeviceScenario, ctx: SimContext) -> MatModel:
    """The model of a ``nap_mat`` scenario entry: synthetic, or a replay when options name one."""
    if "replay" in spec.options:
        return make_replay_mat(spec, ctx)
    return make_synthetic_mat(spec, ctx)
