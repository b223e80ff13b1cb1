"""``ans monitor`` shows every device and edge on a real broker, from their status and stats topics."""

import json
import subprocess
import time

import pytest

pytest.importorskip("rich")
mqtt = pytest.importorskip("paho.mqtt.client")

from device_app.learner.profile import load_profile  # noqa: E402
from device_app.learner.registry import make_policy  # noqa: E402
from device_app.telemetry import DeviceStats  # noqa: E402
from edge_app.server import EdgeStats  # noqa: E402

from .broker import dev_config, started  # noqa: E402
from .running import ANS, ENV  # noqa: E402


def test_monitor_lists_devices_and_edges(tmp_path):
    profile = load_profile("tiny-yolov2-tx2")
    stats = DeviceStats(profile.n_splits)
    for frame in range(30):
        stats.record({"delay_s": 0.04, "split": 3, "fallback": frame == 7}, explored=frame % 10 == 0)
    device_stats = stats.report(make_policy("ans", profile), device="cam-1")
    edge = EdgeStats()
    edge.batch(3, 0.012, [0.001, 0.002, 0.002])
    edge_stats = edge.report(edge="edge-1", queue_depth=2)
    with started(dev_config(), tmp_path) as broker:
        from paho.mqtt.enums import CallbackAPIVersion

        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        for topic, payload, retain in [("ans/v1/device/cam-1/status", b"online", True),
                                       ("ans/v1/device/cam-2/status", b"offline", True),
                                       ("ans/v1/edge/edge-1/status", b"online", True)]:
            pub.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
        monitor = subprocess.Popen(ANS + ["monitor", "--broker", broker.url, "--seconds", "3"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**ENV, "COLUMNS": "200"})
        time.sleep(1.5)  # stats are not retained: they reach only those listening
        pub.publish("ans/v1/device/cam-1/stats", json.dumps(device_stats), qos=1).wait_for_publish(5)
        pub.publish("ans/v1/edge/edge-1/stats", json.dumps(edge_stats), qos=1).wait_for_publish(5)
        pub.publish("ans/v1/device/cam-2/stats", b"{not json", qos=1).wait_for_publish(5)
        out, err = monitor.communicate(timeout=30)
        pub.loop_stop()
    assert monitor.returncode == 0, err
    rows = {line.split("│")[2].strip(): line for line in out.splitlines() if line.count("│") > 5}
    assert set(rows) == {"cam-1", "cam-2", "edge-1"}
    assert "online" in rows["cam-1"] and "25.0" not in rows["cam-1"] and " 3 " in rows["cam-1"]
    assert "40.0 / 40.0" in rows["cam-1"]
    assert "offline" in rows["cam-2"] and "unreadable stats" in rows["cam-2"]
    assert "online" in rows["edge-1"] and "12.0 ms tail" in rows["edge-1"] and "3.0" in rows["edge-1"]
