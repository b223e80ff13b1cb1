import math

import numpy as np

from device_app.learner.mu_linucb import MuLinUCB, plain_linucb
from device_app.learner.policy import Feedback
from lab.sim.trace import make_trace

from .conftest import simulate


def test_alpha_follows_the_paper(tiny):
    policy = MuLinUCB(tiny)
    c_x = max(np.linalg.norm(tiny.contexts, axis=1))
    expected = (1.0 + 0.05 * math.sqrt(7 * math.log((1 + 200 * c_x**2) / 0.1))) / (1 - 0.8)
    assert policy.alpha == expected and policy.forced_every == 4


def _forced_schedule(frames: int) -> int:
    count, horizon = 0, 200
    for t in range(1, frames + 1):
        while t > horizon:
            horizon *= 2
        count += t % math.ceil(horizon**0.25) == 0
    return count


def test_forced_sampling_every_ceil_T_mu_frames_with_doubling_horizon(tiny):
    # At 5 Mbit/s device-only is best by far, so offloads are the forced ones (and exploration).
    frames = 1000
    r = simulate("tiny-yolov2-tx2", make_trace([(0, 5.0, 10.0, 1.0)]), "mu-linucb-paper", frames=frames)
    assert r.policy_stats["forced"] == _forced_schedule(frames)
    horizon_of = lambda t: 200 * 2 ** max(0, math.ceil(math.log2(t / 200))) if t > 200 else 200  # noqa: E731
    for t in range(1, frames + 1):
        if t % math.ceil(horizon_of(t) ** 0.25) == 0:
            assert r.splits[t - 1] != tiny.device_only, f"frame {t} should have been forced to offload"


def test_key_frames_explore_half_as_much(tiny):
    policy = MuLinUCB(tiny)
    for split in (0, 5, 20, 20, 12):
        policy.update(Feedback(split, 0.1))
    greedy = policy.model.mean[0] + policy.front_delay_s
    key_bonus = greedy - policy.indices(key_frame=True)
    other_bonus = greedy - policy.indices(key_frame=False)
    assert np.all(other_bonus >= 0) and other_bonus.max() > 0
    np.testing.assert_allclose(key_bonus, other_bonus * math.sqrt(0.2 / 0.8))


def test_plain_linucb_has_no_forced_sampling_nor_key_frames(tiny):
    policy = plain_linucb(tiny)
    np.testing.assert_array_equal(policy.indices(True), policy.indices(False))
    r = simulate("tiny-yolov2-tx2", make_trace([(0, 5.0, 10.0, 1.0)]), "linucb", frames=400)
    assert r.policy_stats["forced"] == 0


def test_device_only_gives_no_feedback(tiny):
    policy = MuLinUCB(tiny)
    policy.update(Feedback(tiny.device_only, 0.0))
    assert policy.model.n[0] == 0


def test_state_round_trip_resumes_the_same_choices(tiny, vgg):
    import json

    import pytest

    from device_app.learner.persist import StateError

    rng = np.random.default_rng(3)
    trained = MuLinUCB(tiny)
    for _ in range(300):
        split = trained.choose(bool(rng.random() < 0.1))
        if split != tiny.device_only:
            trained.update(Feedback(split, 0.02 + 0.01 * rng.random()))
    resumed = MuLinUCB(tiny)
    resumed.load_state(json.loads(json.dumps(trained.state())))
    assert resumed.t == trained.t and resumed.horizon == trained.horizon
    assert np.allclose(resumed.indices(False), trained.indices(False))
    assert [resumed.choose(False) for _ in range(50)] == [trained.choose(False) for _ in range(50)]
    with pytest.raises(StateError, match="another model"):
        MuLinUCB(vgg).load_state(trained.state())
    with pytest.raises(StateError, match="malformed"):
        MuLinUCB(tiny).load_state({**trained.state(), "t": 10**9})
