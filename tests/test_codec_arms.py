"""The learner chooses the codec with the split: a split with two codecs is two arms, one with the
fewer bits, one with the cheaper encoding (a shorter front-end delay). Which is faster depends on the
link; seeded simulations on the paper's Tiny YOLOv2 profile with simulated codec arms (a slow board:
break-even near 300 Mbit/s)."""

import numpy as np
import pytest

from device_app.learner.profile import load_profile
from device_app.learner.registry import make_policy
from lab.sim.codec_arms import with_codec_arms
from lab.sim.simulator import build_world, run
from lab.sim.trace import make_trace


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("policy", ["ans", "mu-linucb-paper"])
def test_the_learner_takes_the_codec_the_link_pays_for(seed, policy):
    profile, small = with_codec_arms(load_profile("tiny-yolov2-tx2"))
    frames = 3000
    trace = make_trace([(0, 1000.0, 5.0, 1.0), (1000, 20.0, 5.0, 1.0), (2000, 1000.0, 5.0, 1.0)])
    world = build_world(profile, trace, frames, seed)
    oracle = np.argmin(world.mean_total_s, axis=1)
    assert not small[oracle[:1000]].any() and small[oracle[1000:2000]].all()  # the scenario means it
    result = run(make_policy(policy, profile, world.mean_total_s, seed=seed), world)
    ratio = result.summary()["ratio_to_oracle"]
    offloaded = result.splits != profile.device_only
    if policy == "ans":
        assert ratio <= 1.10, ratio
        for a, b in ((500, 1000), (1500, 2000), (2500, 3000)):  # the settled half of each phase
            assert np.mean(small[result.splits[a:b]] == small[oracle[a:b]]) >= 0.9, (a, b)
            assert offloaded[a:b].mean() >= 0.9
    else:  # the paper's algorithm is not held to tracking changes, only to running on arms
        assert np.isfinite(ratio)
