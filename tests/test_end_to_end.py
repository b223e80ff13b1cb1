"""Device and edge processes through a real Mosquitto: every frame answered, results as on the
device, no frame lost when the edge dies, offloading back when it returns, a broker restart
survived, oversized requests never sent, stats and discovery on their topics."""

import json
import shutil
import subprocess
import time

import numpy as np
import pytest

from mqtt.connection import SessionGuard
from mqtt.protocol import FrameRecord

from .broker import started
from .fake_link import FakeLink
from .running import (ENV, Recorder, dev_config, device_args, records, run_device, spawn, start_edge, stop,
                      wait_for)


def same_detections(a, b):
    a, b = np.array(a).reshape(-1, 6), np.array(b).reshape(-1, 6)
    return a.shape == b.shape and np.allclose(a, b, atol=2e-3)


def test_every_frame_is_answered_as_on_the_device(demo_bundle, tmp_path):
    tmp = demo_bundle
    with started(dev_config(), tmp_path) as broker:
        edge = start_edge(tmp, broker.port)
        try:
            offloaded = run_device(tmp, broker.port, "cam-edge", "edge-only", "--frames", "20")
            quantised = run_device(tmp, broker.port, "cam-int8", "edge-only", "--frames", "20", "--codec", "int8")
        finally:
            stop(edge)
        local = run_device(tmp, broker.port, "cam-local", "device-only", "--frames", "20")
    assert [r.frame for r in offloaded] == list(range(20))
    assert all(r.edge == "edge-1" and r.split == 0 and not r.fallback for r in offloaded)
    assert sum(len(r.detections) for r in local) > 0
    for o, d in zip(offloaded, local):
        assert same_detections(o.detections, d.detections), (o, d)
    # what users read: the label, the score, the box in pixels of the 320x240 source frame
    for r in local:
        assert len(r.objects) == len(r.detections)
        for thing, (x1, y1, x2, y2, score, cls) in zip(r.objects, r.detections):
            assert thing["label"] == ["disc", "square", "triangle"][int(cls)] and thing["score"] == round(score, 3)
            assert thing["box"] == [round(x1 * 320), round(y1 * 240), round(x2 * 320), round(y2 * 240)]
    # int8 on the wire: every frame answered by the edge, the same objects found
    assert all(r.edge == "edge-1" for r in quantised)
    assert [len(r.detections) for r in quantised] == [len(r.detections) for r in local]


def test_no_frame_is_lost_when_the_edge_dies_and_offloading_resumes_when_it_returns(demo_bundle, tmp_path):
    tmp = demo_bundle
    with started(dev_config(), tmp_path) as broker:
        edge = start_edge(tmp, broker.port)
        # A slow board (25x this machine) so the stream outlasts the replacement edge's start.
        device = spawn(device_args(tmp, broker.port, "cam-x", "edge-only", "--deadline-ms", "1000",
                                              "--emulate-slowdown", "25"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        wait_for(lambda: len(records(tmp, "cam-x")) >= 10, 120, "10 frames", device)
        edge.kill()  # no goodbye: the device must notice by itself
        died = len(records(tmp, "cam-x"))
        edge = start_edge(tmp, broker.port, "--id", "edge-2")  # a replacement comes up
        out, err = device.communicate(timeout=300)
        stop(edge)
        assert device.returncode == 0, err[-3000:]
    got = records(tmp, "cam-x")
    assert [r.frame for r in got] == list(range(150))  # zero frames lost
    assert all(r.edge == "edge-1" for r in got[:10])
    after = got[died:]
    missed = [r.frame for r in after if r.fallback]
    assert missed, "no frame was finished on the device while the edge was away"
    assert sum(len(r.detections) for r in after if r.fallback) > 0
    resumed = [r.frame for r in after if r.edge == "edge-2"]
    assert resumed and resumed[0] > missed[0] and got[-1].edge == "edge-2"  # back by itself


def test_broker_restarts_are_survived_and_stats_are_published(demo_bundle, tmp_path):
    """Each step waits for the event it checks: frames go on on the device while the broker is
    away, and the device (on a looping clip, so it cannot run out) is stopped only once the edge
    has answered again after the last restart. Three restarts in a row (an upgrade, a crash loop):
    neither side takes them for another client logging in as it, nor backs off for 30 s."""
    tmp = demo_bundle
    env = {**ENV, "ANS_DEVICE_STATS_INTERVAL_S": "0.5", "ANS_DEVICE_HOME_ASSISTANT": "true",
           "ANS_DEVICE_SNAPSHOT_INTERVAL_S": "0.5", "ANS_EDGE_STATS_INTERVAL_S": "0.5"}
    with started(dev_config(), tmp_path) as broker:
        edge = start_edge(tmp, broker.port, env=env)
        monitor = Recorder(broker.port, "ans/v1/#", "homeassistant/#")
        log = open(tmp_path / "device.log", "w")  # a file, not a pipe: a long run must not fill it and block
        device = spawn(device_args(tmp, broker.port, "cam-r", "edge-only", "--deadline-ms", "1000", "--loop",
                                   "--emulate-slowdown", "10"), stdout=log, stderr=log, env=env)
        try:
            wait_for(lambda: len(records(tmp, "cam-r")) >= 10, 120, "10 frames", device)
            before = monitor.drain()
            for _ in range(SessionGuard.BOUNCES):
                broker.stop()
                down = len(records(tmp, "cam-r"))
                wait_for(lambda: any(r.edge is None for r in records(tmp, "cam-r")[down:]), 120,
                         "a frame finished on the device while the broker is away", device)
                broker.start()
                up = len(records(tmp, "cam-r"))
                wait_for(lambda: any(r.edge == "edge-1" for r in records(tmp, "cam-r")[up:]), 120,
                         "the edge answering again after the restart", device)

            def stats_after_restart():
                seen = list(monitor.messages.queue)
                return any(t == "ans/v1/device/cam-r/stats" for t, _, _ in seen) and any(
                    t == "ans/v1/edge/edge-1/stats" and json.loads(p)["served"] for t, p, _ in seen)
            wait_for(stats_after_restart, 60, "device stats, and edge stats of served requests, after the restart",
                     device)
            stop(device)
            assert device.returncode == 0, (tmp_path / "device.log").read_text()[-3000:]
            after = monitor.drain()
        finally:
            stop(edge)
            monitor.close()
            log.close()
    said = edge.stdout.read() + (tmp_path / "device.log").read_text()
    assert said.count("lost the broker") >= 2 * SessionGuard.BOUNCES and "another client" not in said
    got = records(tmp, "cam-r")
    assert [r.frame for r in got] == list(range(len(got)))  # no frame lost, none twice
    # Both reconnected and re-subscribed: requests answered again after the restart.
    assert any(t.endswith("/device/cam-r/detections") and FrameRecord.from_json(p).edge for t, p, _ in after)
    stats = [json.loads(p) for t, p, _ in before + after if t == "ans/v1/device/cam-r/stats"]
    assert stats and {"fps", "delay_mean_ms", "delay_p95_ms", "split_histogram", "fallbacks", "exploration_rate",
                      "learner", "fused_heads"} <= set(stats[-1])
    assert stats[-1]["learner"]["front_ms"][-1] > 0
    edge_stats = [json.loads(p) for t, p, _ in before + after if t == "ans/v1/edge/edge-1/stats"]
    assert edge_stats and sum(s["served"] for s in edge_stats) > 0 and "queue_depth" in edge_stats[-1]
    discovery = {t: json.loads(p) for t, p, retain in before + after if t.startswith("homeassistant/")}
    config = discovery["homeassistant/device/ans_cam-r/config"]
    assert config["availability_topic"].endswith("cam-r/status")
    assert config["cmps"]["ans_cam-r_fps"]["state_topic"] == "ans/v1/device/cam-r/stats"
    assert config["cmps"]["ans_cam-r_disc_present"]["state_topic"] == "ans/v1/device/cam-r/objects"
    tallies = [json.loads(p) for t, p, _ in before + after if t == "ans/v1/device/cam-r/objects"]
    assert tallies and all(set(c) == {"disc", "square", "triangle"} for c in tallies)
    assert len(tallies) < len(got)  # on change (and after each reconnect), not every frame
    camera = config["cmps"]["ans_cam-r_snapshot"]
    snapshots = [p for t, p, retain in before + after if t == camera["topic"]]
    assert snapshots and len(snapshots) < len(got) and all(p[:2] == b"\xff\xd8" for p in snapshots)  # JPEGs


def test_requests_over_the_brokers_packet_limit_are_never_sent(demo_bundle, tmp_path):
    tmp = demo_bundle
    # The input itself (split 0) travels as its 8-bit image: 197 kB (786 kB as float32).
    config = dev_config().replace("max_packet_size 33554432", "max_packet_size 150000")
    with started(config, tmp_path) as broker:
        edge = start_edge(tmp, broker.port)
        monitor = Recorder(broker.port, "ans/v1/device/+/request")
        try:
            proc = subprocess.run(device_args(tmp, broker.port, "cam-big", "edge-only", "--frames", "10"),
                                  capture_output=True, text=True, timeout=300, env=ENV)
        finally:
            stop(edge)
            sent = monitor.drain()
            monitor.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "over the broker's maximum packet size 150000" in proc.stderr
    got = records(tmp, "cam-big")
    assert len(got) == 10 and all(r.edge is None and not r.fallback for r in got)
    assert sent == []


@pytest.mark.parametrize("policy", ["ans", "mu-linucb-paper"])
def test_the_learners_run_for_real(demo_bundle, tmp_path, policy):
    tmp = demo_bundle
    state = tmp_path / "state"
    with started(dev_config(), tmp_path) as broker:
        edge = start_edge(tmp, broker.port)
        try:
            got = run_device(tmp, broker.port, f"cam-{policy}", policy, "--frames", "60", "--state-dir", str(state))
        finally:
            stop(edge)
    assert [r.frame for r in got] == list(range(60))
    assert any(r.edge for r in got)  # it tried the edge
    assert (state / "calibration.json").is_file() and (state / "learner.json").is_file()


def test_publishes_beyond_the_outage_queue_are_counted_not_dropped_in_silence(demo_bundle, caplog):
    from device_app.runtime import make_device
    from device_app.settings import DeviceSettings
    from mqtt.connection import MqttSettings
    from lab.local_broker import free_port

    # Nobody listens on this port: the client stays disconnected, as in a broker outage.
    device = make_device(DeviceSettings(bundle=str(demo_bundle / "bundle"), id="cam-q", connect_timeout_s=0,
                                        mqtt=MqttSettings(broker=f"mqtt://127.0.0.1:{free_port()}")))
    for k in range(105):
        device.link.publish(device.topics.detections("cam-q"), json.dumps({"frame": k}))
    assert device.stats.totals["unsent"] == 5  # paho holds 100 for the reconnect
    assert sum("outgoing queue is full" in r.getMessage() for r in caplog.records) == 1  # said, not per message


def test_a_miss_while_the_edge_left_is_not_taught_but_a_slow_edge_is(demo_bundle):
    """While no edge is there nothing about offloading is learnt: a request that was in flight
    when its edge went offline (or the broker went away) is finished on the device and not fed
    to the learner, at once; a miss with the edge still online is ("at least the deadline")."""
    import numpy as np

    from device_app.link import EdgeStatus
    from device_app.runtime import make_device
    from device_app.settings import DeviceSettings

    link = FakeLink()
    device = make_device(DeviceSettings(bundle=str(demo_bundle / "bundle"), id="cam-m", policy="edge-only",
                                        deadline_ms=1000), link=link)
    taught = []
    device.policy.update = taught.append
    frame = np.zeros((240, 320, 3), np.uint8)
    for edge_left in (True, False):
        link.events.put(EdgeStatus("edge-1", True))
        # The edge leaves while the request is in flight (its status turns offline), or stays and never answers.
        link.answer = lambda topic, payload, edge_left=edge_left: [EdgeStatus("edge-1", False)] if edge_left else []
        record = device.process(0, frame)
        assert record.fallback and record.edge is None and record.detections is not None
        if edge_left:  # no edge is left to answer: finished at once, not after the deadline
            assert record.delay_s < device.settings.deadline_ms / 1e3
    assert [(f.offload_s, f.censored) for f in taught] == [(device.settings.deadline_ms / 1e3, True)]
    assert len(link.sent) == 2


def test_an_emulated_board_finishes_a_late_frame_whatever_its_calibration(demo_bundle):
    """Calibrated heads need not grow with the split (device-only may run fused, a head chained): a
    frame finished on an emulated slow board from such a split's cut still finishes."""
    import numpy as np

    from device_app.runtime import make_device
    from device_app.settings import DeviceSettings

    device = make_device(DeviceSettings(bundle=str(demo_bundle / "bundle"), id="cam-f", emulate_slowdown=2.0,
                                        deadline_ms=100), link=FakeLink(edges=("edge-1",)))  # it never answers
    split = 8
    device.model.measured = device.model.measured.copy()
    device.model.measured[split] = 2 * device.model.measured[-1]  # this head costs more than the whole model
    device.policy.choose = lambda key_frame: split
    record = device.process(0, np.zeros((240, 320, 3), np.uint8))
    assert record.fallback and record.split == split and record.detections is not None


def test_garbage_timings_and_results_for_frames_never_sent_are_not_learnt(demo_bundle, caplog):
    """An edge that answers with timings longer than the round trip, or a result for a frame this
    device never sent: the frame is answered, one warning each, and nothing reaches the learner."""
    import numpy as np

    from device_app.link import ResultIn
    from device_app.runtime import make_device
    from device_app.settings import DeviceSettings
    from mqtt.protocol import Result

    link = FakeLink(edges=("edge-x",))
    device = make_device(DeviceSettings(bundle=str(demo_bundle / "bundle"), id="cam-g", policy="edge-only"), link=link)
    taught = []
    device.policy.update = taught.append
    frame = np.zeros((240, 320, 3), np.uint8)
    for k in range(3):
        # What comes back for the request: a stray result, then its own (with a timing longer than the round trip).
        link.answer = lambda topic, payload, k=k: [
            ResultIn(Result(777 + k, 0, "ok", edge="edge-x"), time.monotonic()),
            ResultIn(Result(k, 0, "ok", [[0.1, 0.1, 0.2, 0.2, 0.9, 1.0]], compute_s=1e6, edge="edge-x"),
                     time.monotonic())]
        record = device.process(k, frame)
        assert record.edge == "edge-x" and record.detections == [[0.1, 0.1, 0.2, 0.2, 0.9, 1.0]]
    assert taught == []
    said = [r.getMessage() for r in caplog.records if r.name == "ans.device"]
    assert sum("never sent" in m for m in said) == 1 and sum("within a" in m for m in said) == 1


def test_three_devices_on_two_edges_every_frame_answered(demo_bundle, tmp_path):
    """Both edges sit on one MQTT v5 shared subscription: the broker hands each request to one of
    them, and every frame of every device is answered by an edge. Each edge publishes its compute
    table (retained, for the bundle it serves) and its load about once a second."""
    from mqtt.protocol import decode_compute_table, decode_load

    tmp = demo_bundle
    with started(dev_config(), tmp_path) as broker:
        start_edge(tmp, broker.port, "--id", "edge-a")
        start_edge(tmp, broker.port, "--id", "edge-b")
        monitor = Recorder(broker.port, "ans/v1/edge/+/compute", "ans/v1/edge/+/load")
        try:
            devices = [spawn(device_args(tmp, broker.port, f"cam-{k}", "edge-only", "--frames", "40"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV) for k in range(3)]
            for proc in devices:
                assert proc.wait(300) == 0, proc.stderr.read()[-3000:]
            seen = {}
            wait_for(lambda: seen.update({(t.split("/")[-2], t.split("/")[-1]): p for t, p, _ in monitor.drain()})
                     or len(seen) == 4, 30, "both edges' compute tables and load reports")
        finally:
            monitor.close()
    answered = [r.edge for k in range(3) for r in records(tmp, f"cam-{k}")]
    assert len(answered) == 120 and None not in answered
    assert {"edge-a", "edge-b"} == set(answered)  # each served some
    n_splits = len(json.loads((tmp / "bundle" / "manifest.json").read_text())["splits"])
    for edge in ("edge-a", "edge-b"):
        table = decode_compute_table(seen[(edge, "compute")], n_splits)
        assert table.edge == edge and all(v is not None and v > 0 for v in table.compute_s[:-1])
        assert 0 <= decode_load(seen[(edge, "load")]).utilisation <= 1


def test_two_devices_with_one_id_are_reported_not_a_silent_tug_of_war(demo_bundle, tmp_path):
    tmp = demo_bundle
    env = {**ENV, "ANS_DEVICE_STATS_INTERVAL_S": "0.2"}
    with started(dev_config(), tmp_path) as broker:
        logs = [tmp_path / f"twin-{k}.log" for k in range(2)]
        twins = [spawn(device_args(tmp, broker.port, "cam-twin", "device-only", "--loop"),
                       stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env) for log in logs]
        said = "another device is running with id 'cam-twin'"
        wait_for(lambda: all(said in log.read_text() for log in logs), 120, "both twins to report the other")
        for proc in twins:
            proc.terminate()
            proc.wait(30)


def test_low_bit_tensors_and_a_jpeg_input_travel_through_the_real_broker_and_edge(demo_bundle, tmp_path):
    """The demo bundle's calibrated ranges, on both sides, with ``codec = "auto"``, ``learn_codec`` and
    a codec report that allows int2 and JPEG: split 0 as a JPEG or its 8-bit image, splits 4, 8 and
    10 as int2 symbols or float16, each one of the learner's arms; every frame answered by the edge,
    finding what the device finds on its own."""
    from common.bundle import CODEC_REPORT
    from common.detect import detections
    from device_app.learner.policy import FixedSplit
    from device_app.runtime import make_device
    from device_app.settings import DeviceSettings
    from device_app.sources import open_source, preprocess
    from mqtt.connection import MqttSettings

    shutil.copytree(demo_bundle / "bundle", tmp_path / "bundle")
    rows = [{"split": k, "codec": c, "map50_vs_float32": 1.0} for k in (0, 4, 8, 10) for c in ("jpeg", "int2")]
    (tmp_path / "bundle" / CODEC_REPORT).write_text(json.dumps({"rows": rows}))
    frames = list(open_source(str(demo_bundle / "clip.avi"), limit=12))
    with started(dev_config(), tmp_path) as broker:
        edge = start_edge(tmp_path, broker.port)
        device = make_device(DeviceSettings(bundle=str(tmp_path / "bundle"), id="cam-low", policy="device-only",
                                            codec="auto", learn_codec=True, deadline_ms=5000,
                                            mqtt=MqttSettings(broker=f"mqtt://127.0.0.1:{broker.port}")))
        arms = device.model.arms
        assert [arms.label(a) for a in arms.of_split(0)] == ["0/jpeg", "0/uint8"]
        assert [arms.label(a) for a in arms.of_split(4)] == ["4/int2", "4/float16"]
        assert [arms.label(a) for a in arms.of_split(5)] == ["5/float16"]  # int2 not measured there
        assert np.all(device.policy.front_delay_s[:-1] > 0)  # every arm's encoding counts, split 0's too
        try:
            device.connect()
            wait_for(lambda: device._take_events() or device.view.edges, 60, "the edge's retained status")
            got = {}
            for arm in (a for k in (0, 4, 8, 10) for a in arms.of_split(k)):
                device.policy = FixedSplit(device.policy.profile, arm, f"arm {arms.label(arm)}")
                got[arm] = [device.process(k, frame) for k, frame in enumerate(frames)]
            model = device.model
            local = [detections(model.runner.run(model.device_only, preprocess(f, model.input_size, model.input_scale)),
                                model.decoding, model.input_size) for f in frames]
        finally:
            device.link.close()
            stop(edge)
    for arm, records in got.items():
        assert all(r.edge == "edge-1" and r.split == arms.split[arm] and r.codec == arms.codec[arm]
                   and not r.fallback for r in records), (arm, records)
        same = sum(len(r.detections) == len(mine) for r, mine in zip(records, local))
        assert same >= len(frames) - 2, (arm, [len(r.detections) for r in records], [len(m) for m in local])
    assert sum(len(m) for m in local) > 0
