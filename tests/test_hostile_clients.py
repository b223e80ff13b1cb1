"""Hostile or careless clients against a real edge process through a real Mosquitto: messages on
request topics that name no valid device, and a flood of junk, leave the edge serving."""

import json
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .broker import started
from .running import Recorder, dev_config, run_device, start_edge, wait_for


def publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hostile-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def test_messages_that_name_no_device_are_dropped_and_the_edge_serves_on(demo_bundle, tmp_path):
    tmp = demo_bundle
    # The broker holds the whole flood for the edge (the shipped 100 would drop part of it before the
    # edge sees it, and the test counts what the edge does with every message).
    with started(dev_config().replace("max_queued_messages 100", "max_queued_messages 10000"), tmp_path) as broker:
        edge = start_edge(tmp, broker.port, env={"ANS_EDGE_STATS_INTERVAL_S": "0.5"})
        stats = Recorder(broker.port, "ans/v1/edge/+/stats")
        hostile = publisher(broker.port)
        try:
            # Each matches the edges' subscription (device/+/request) but names no valid device.
            topics = ["ans/v1/device//request", f"ans/v1/device/{'x' * 65}/request",
                      f"ans/v1/device/{'é' * 33}/request"]
            for topic in topics:
                for payload in (b"", b"junk", b"ANS1" + bytes(200)):
                    hostile.publish(topic, payload, qos=1).wait_for_publish(5)
            flood = [hostile.publish("ans/v1/device/flooder/request", bytes([k % 256]) * (k % 300), qos=1)
                     for k in range(2000)]
            for info in flood:
                info.wait_for_publish(10)

            def counted():
                seen = [json.loads(p)["totals"] for _, p, _ in list(stats.messages.queue)]
                return bool(seen) and seen[-1].get("unanswerable") == 3 * len(topics) and \
                    seen[-1].get("errors") == len(flood)
            wait_for(counted, 60, "the edge to count every hostile message", edge)
            got = run_device(tmp, broker.port, "cam-ok", "edge-only", "--frames", "20")
            assert edge.poll() is None, "the edge ended"
        finally:
            hostile.loop_stop()
            hostile.disconnect()
            stats.close()
            edge.terminate()
            out, _ = edge.communicate(timeout=30)
    assert [r.edge for r in got] == ["edge-1"] * 20
    assert edge.returncode == 0
    warnings = [line for line in out.splitlines() if " WARNING " in line or " ERROR " in line]
    assert len(warnings) <= 4, warnings  # one line per kind of problem, not one per message

