import numpy as np
import pytest

from lab.sim.simulator import build_world
from lab.sim.trace import make_trace

from .conftest import simulate


def test_seeded_runs_are_reproducible_bit_for_bit():
    a = simulate("tiny-yolov2-tx2", "flapping", "ans", seed=3, frames=1200)
    b = simulate("tiny-yolov2-tx2", "flapping", "ans", seed=3, frames=1200)
    c = simulate("tiny-yolov2-tx2", "flapping", "ans", seed=4, frames=1200)
    assert np.array_equal(a.delay_s, b.delay_s) and np.array_equal(a.splits, b.splits)
    assert a.summary() == b.summary()
    assert not np.array_equal(a.delay_s, c.delay_s)


def test_ground_truth_follows_the_documented_formula(tiny):
    trace = make_trace([(0, 50.0, 20.0, 2.0)])
    w = build_world(tiny, trace, 3, seed=0, noise=0.0, edge_rate=1e11, layer_overhead_s=2e-4)
    p = 20
    expected = (tiny.front_delay_s[p] + 0.020 + tiny.transfer_bits[p] / 50e6
                + 2.0 * (tiny.backend_macs[p] / 1e11 + tiny.backend_layers[p] * 2e-4))
    assert w.total_s[1, p] == pytest.approx(expected)
    assert w.net_s[0, tiny.device_only] == 0 and w.edge_s[0, tiny.device_only] == 0


def test_noise_multiplies_the_offloading_delay_and_never_makes_it_negative(tiny):
    w = build_world(tiny, make_trace([(0, 100.0, 10.0, 1.0)]), 3000, seed=1, noise=2.0)
    assert np.all(w.net_s >= 0) and np.all(w.edge_s >= 0)
    w = build_world(tiny, make_trace([(0, 100.0, 10.0, 1.0)]), 3000, seed=1, noise=0.1)
    mean_offload = w.mean_total_s - tiny.front_delay_s
    rel = (w.net_s + w.edge_s)[:, :-1] / mean_offload[:, :-1] - 1
    assert abs(rel.std() - 0.1) < 0.005


def test_oracle_has_no_regret_and_fixed_policies_pay_their_front_delay(tiny):
    assert simulate("tiny-yolov2-tx2", "bandwidth-drop", "oracle", frames=900).regret_s == 0
    r = simulate("tiny-yolov2-tx2", "steady", "device-only", frames=100)
    assert np.all(r.delay_s == tiny.front_delay_s[-1]) and r.summary()["offload_fraction"] == 0


def test_key_frame_probability_is_honoured(tiny):
    w = build_world(tiny, make_trace([(0, 100.0, 10.0, 1.0)]), 20000, seed=2, key_frame_prob=0.1)
    assert abs(w.key_frame.mean() - 0.1) < 0.01


def test_neurosurgeon_profiles_once_then_stays(tiny):
    r = simulate("tiny-yolov2-tx2", "bandwidth-drop", "neurosurgeon", frames=900)
    assert len(set(r.splits.tolist())) == 1 and r.splits[0] == r.oracle_splits[0]
