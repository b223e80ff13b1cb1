"""Fleets in simulation: devices that learn on their own must share the edges without herding,
converge near the fleet oracle, and a newcomer may start from the edge's compute table."""

import json
from dataclasses import replace

import numpy as np
import pytest

from device_app.learner.ans import ANS
from device_app.learner.policy import Feedback
from device_app.learner.profile import load_profile
from lab.sim.fleet import (DeviceSpec, FleetError, FleetSpec, fleet_oracle, fleet_policies, load_fleet, make_fleet,
                           simulate_fleet)
from lab.sim.fleet_experiment import newcomer


def _summary(spec, policy, seed, oracle=None):
    return simulate_fleet(spec, fleet_policies(spec, policy, seed), seed=seed, name=policy).summary(20.0, oracle)


def test_two_devices_that_cannot_both_offload_do_not_herd():
    """Each alone is better off offloading the input to a slow edge; both together queue behind each
    other and are worse off than on the device. Best: one offloads, one does not. Learners that
    each see the edge's wait would all leave together and all come back together; ANS prices the
    load it would add and acts on a load report only half the time, so one stays."""
    base = load_profile("tiny-yolov2-tx2")
    board = replace(base, front_delay_s=base.front_delay_s * 1.3)
    devices = tuple(DeviceSpec(f"cam-{k}", board, ((0.0, 400.0),), 5.0, 10.0) for k in range(2))
    spec = FleetSpec(devices, 1, 120.0, edge_rate=4e10)
    assert all(np.argmin(spec.solo_delay(d)) == 0 for d in devices)  # the temptation
    assignment, oracle = fleet_oracle(spec, seed=2)
    assert sorted(assignment.values()) == [0, base.device_only]
    ans = _summary(spec, "ans", 2, oracle)
    assert ans["ratio_to_oracle"] <= 1.05, ans
    assert ans["moves_per_100"] <= 1.0 and ans["switches_per_100"] <= 3.0, ans  # no oscillation; a few probes
    for other in ("mu-linucb-paper", "neurosurgeon"):
        assert ans["fleet_mean_s"] < _summary(spec, other, 2)["fleet_mean_s"]


def test_a_heterogeneous_fleet_with_joins_and_leaves_converges_near_the_oracle():
    spec = make_fleet(8, 1, 40.0, seed=1)
    _, oracle = fleet_oracle(spec, seed=1)
    ans = _summary(spec, "ans", 1, oracle)
    assert ans["ratio_to_oracle"] <= 1.10 and ans["fairness"] >= 0.9 and ans["moves_per_100"] <= 2.0, ans
    assert ans["fleet_mean_s"] < _summary(spec, "mu-linucb-paper", 1)["fleet_mean_s"]
    result = simulate_fleet(spec, fleet_policies(spec, "ans", 1), seed=1)
    for d in spec.devices:  # every device ran frames while it was there, and only then
        t = result.times[d.name]
        assert len(t) > 0 and t.min() >= d.join_s and t.max() < min(d.leave_s, spec.duration_s)


def test_when_links_drop_learning_beats_a_split_fixed_at_the_start():
    """Every other device's uplink falls to a tenth for the middle third (the documented fleet):
    Neurosurgeon keeps the split that was best at the start, `ans` follows the links."""
    spec = make_fleet(16, 1, 60.0, seed=0, drops=True)
    ans, fixed = _summary(spec, "ans", 0), _summary(spec, "neurosurgeon", 0)
    assert ans["fleet_mean_s"] < 0.95 * fixed["fleet_mean_s"] and ans["moves_per_100"] <= 2.0, (ans, fixed)


def test_a_local_device_prices_the_wait_it_would_add_and_an_offloading_one_trusts_its_acks():
    tiny = load_profile("tiny-yolov2-tx2")
    local = ANS(tiny, seed=0)
    for _ in range(50):  # a busy edge (80%), whose requests wait 10 ms and run 40 ms
        local.edge_load(0.8, 0.010, 0.040, frame_rate=10.0)
    assert local.load.wait_s == pytest.approx(0.010 + 0.8 * 0.040 / 2, rel=0.05)
    offloading = ANS(tiny, seed=0)
    for _ in range(50):
        offloading.choose(False)
        offloading.update(Feedback(20, 0.03, 0.02, 0.01, wait_s=0.001))
    before = offloading.load.wait_s
    for _ in range(20):
        offloading.edge_load(0.12, 0.050, 0.010, frame_rate=10.0)  # mostly its own load
    assert offloading.load.wait_s == before
    offloading.edge_load(float("nan"), 0.0, 0.0, 10.0)  # a garbage report changes nothing
    assert offloading.load.wait_s == before


def test_a_newcomer_started_from_the_edges_compute_table_has_less_regret_where_the_edge_matters():
    """At most half the regret of a cold start on tiny-YOLOv2 and VGG16 with a 20x slower edge
    (docs/scaling.md)."""
    rows = {row["profile"]: row for row in newcomer(slowdowns=(20.0,), seeds=5)}
    for row in rows.values():
        assert row["cold_regret_s"] > 0.1 and row["warm_regret_s"] <= 0.5 * row["cold_regret_s"], row


def test_moves_count_held_splits_not_one_frame_excursions():
    from lab.sim.fleet import held_changes

    assert held_changes(np.array([3, 3, 9, 3, 3, 3, 9, 3])) == 0  # two probes
    assert held_changes(np.array([3, 3, 9, 9, 3, 3])) == 2  # away and back
    assert held_changes(np.array([3, 3, 3, 7, 7, 7])) == 1


def test_a_fleet_file_that_does_not_parse_is_refused_naming_the_entry(tmp_path):
    good = {"edges": 2, "duration_s": 30, "devices": [
        {"name": "a", "speed": 2, "bandwidth_mbps": [[0, 50], [10, 5]], "rtt_ms": 10, "fps": 10},
        {"name": "b", "join_s": 5, "leave_s": 20}]}
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(good))
    spec = load_fleet(path)
    assert spec.edges == 2 and spec.devices[0].mbps(12) == 5 and spec.devices[1].join_s == 5
    for bad, says in (({"devices": []}, "non-empty 'devices'"),
                      ({"devices": [{"speed": "fast"}]}, r"devices\[0\].speed"),
                      ({"devices": [{"name": "a"}, {"name": "a"}]}, "unique"),
                      ({"devices": [{"bandwidth_mbps": [[0]]}]}, "bandwidth_mbps"),
                      ({"devices": [{"colour": 1}]}, "unknown field"),
                      ({"edges": 0, "devices": [{}]}, "edges"),
                      ({"devices": [{}], "profile": "nope"}, "profile")):
        path.write_text(json.dumps(bad))
        with pytest.raises(FleetError, match=says):
            load_fleet(path)
    path.write_text("{oops")
    with pytest.raises(FleetError, match="not valid JSON"):
        load_fleet(path)
