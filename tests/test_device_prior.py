"""A restored learner state is a prior: as strong as ``resume_weight`` says when it was learnt
through this broker with this edge, weaker when it was learnt elsewhere."""

import json
from types import SimpleNamespace

import numpy as np

from device_app.learner.policy import Feedback
from device_app.learner_store import FOREIGN_WEIGHT
from device_app.runtime import make_device
from device_app.settings import DeviceSettings
from lab.local_broker import free_port
from mqtt.connection import MqttSettings


def hear(device, topic: str, payload: bytes) -> None:
    """A message as the broker would deliver it (paho's thread), taken in by the frame thread."""
    device.link._on_message(None, None, SimpleNamespace(topic=topic, payload=payload))
    device._take_events()


def _device(bundle, state_dir, port):
    return make_device(DeviceSettings(bundle=str(bundle), id="cam-p", connect_timeout_s=0, state_dir=str(state_dir),
                                      mqtt=MqttSettings(broker=f"mqtt://127.0.0.1:{port}")))


def test_state_from_another_broker_or_edge_is_a_weaker_prior(demo_bundle, tmp_path):
    port = free_port()
    first = _device(demo_bundle / "bundle", tmp_path, port)
    rng = np.random.default_rng(0)
    arms = first.policy.bank.arms
    for _ in range(200):  # something learnt (a linear world, 2% noise), through this broker, with edge-a
        split = int(rng.integers(0, first.model.device_only))
        net, edge = (0.002 + 0.001 * arms[0, split, 1], 0.001 + 0.0005 * arms[1, split, 1:].sum()) * (
            1 + 0.02 * rng.standard_normal(2))
        first.policy.update(Feedback(split, net + edge, net, edge))
    assert min(first.policy.bank.n) > 50  # past the cold start's change alarms
    hear(first, "ans/v1/edge/edge-a/status", b"online")
    first.save_learner()
    saved = json.loads((tmp_path / "learner.json").read_text())
    assert saved["context"] == {"broker": f"127.0.0.1:{port}", "edges": ["edge-a"]}

    same = _device(demo_bundle / "bundle", tmp_path, port)
    other_broker = _device(demo_bundle / "bundle", tmp_path, free_port())
    np.testing.assert_allclose(other_broker.policy.estimate(), same.policy.estimate())
    wider = other_broker.policy._width_s[:-1] / same.policy._width_s[:-1]
    assert wider.min() >= 1.0 and wider.max() > 1.5

    # Same broker, but the edge that comes online is another one: weakened then, once.
    before = same.policy._width_s.copy()
    hear(same, "ans/v1/edge/edge-b/status", b"online")  # (no broker: what it offloads goes nowhere)
    same.process(0, np.zeros((240, 320, 3), np.uint8))
    assert np.all(same.policy._width_s[:-1] >= before[:-1]) and np.any(same.policy._width_s > 1.5 * before)
    np.testing.assert_allclose(same.policy._width_s[:-1], other_broker.policy._width_s[:-1], rtol=0.05)
    assert 0 < FOREIGN_WEIGHT < 1

    # A newcomer given that state (initial_state) while it has none of its own: the same weak prior.
    newcomer = make_device(DeviceSettings(bundle=str(demo_bundle / "bundle"), id="cam-new", connect_timeout_s=0,
                                          state_dir=str(tmp_path / "new"), initial_state=str(tmp_path / "learner.json"),
                                          mqtt=MqttSettings(broker=f"mqtt://127.0.0.1:{port}")))
    np.testing.assert_allclose(newcomer.policy._width_s, other_broker.policy._width_s)

    # The same edge again: kept as strong as resume_weight says.
    again = _device(demo_bundle / "bundle", tmp_path, port)
    kept = again.policy._width_s.copy()
    hear(again, "ans/v1/edge/edge-a/status", b"online")
    again.process(0, np.zeros((240, 320, 3), np.uint8))
    assert np.all(again.policy._width_s[:-1] <= kept[:-1] * 1.0001)


def test_a_newcomer_starts_from_the_edges_compute_table_of_its_own_bundle_only(demo_bundle, tmp_path, caplog):
    from mqtt.protocol import ComputeTable, encode_compute_table

    device = _device(demo_bundle / "bundle", tmp_path, free_port())
    n = len(device.model.bundle.splits)
    arms = device.policy.bank.arms[1]  # a table the edge model can express: linear in its features
    times = [None if k == device.model.device_only else 0.001 + 0.002 * float(arms[k, 1:].mean()) for k in range(n)]
    other = ComputeTable("0" * 64, "edge-x", times)
    for _ in range(3):
        hear(device, "ans/v1/edge/edge-x/compute", encode_compute_table(other))
    assert device.view.table is None
    assert sum("compute table of edge 'edge-x'" in r.getMessage() for r in caplog.records) == 1
    hear(device, "ans/v1/edge/edge-y/compute", b"{garbage")
    assert device.view.table is None  # malformed: counted as a malformed message, never raised

    mine = ComputeTable(device.model.bundle.content_hash, "edge-y", times)
    hear(device, "ans/v1/edge/edge-y/compute", encode_compute_table(mine))
    hear(device, "ans/v1/edge/edge-y/status", b"online")
    device.process(0, np.zeros((240, 320, 3), np.uint8))
    offload = [k for k in range(n) if k != device.model.device_only]
    np.testing.assert_allclose(device.policy.edge.pred[offload], [times[k] for k in offload], rtol=0.1)

    # A learner that already knows the edge keeps what it learnt.
    learnt = device.policy.bank.theta.copy()
    hear(device, "ans/v1/edge/edge-y/compute", encode_compute_table(mine))
    device.process(1, np.zeros((240, 320, 3), np.uint8))
    np.testing.assert_array_equal(device.policy.bank.theta, learnt)
