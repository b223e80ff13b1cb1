"""The device's two threads share nothing but the link's event queue: paho's network thread turns
every message into an event, the frame thread alone takes them in. Driven here with 10,000
messages from a second thread while frames run, the frame thread's view stays consistent."""

import random
import threading
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("paho.mqtt.client")

from device_app.link import Connected, Lost  # noqa: E402
from device_app.runtime import make_device  # noqa: E402
from device_app.settings import DeviceSettings  # noqa: E402
from lab.local_broker import free_port  # noqa: E402
from mqtt.connection import MqttSettings  # noqa: E402
from mqtt.protocol import (ComputeTable, LoadReport, Result, encode_compute_table, encode_load,  # noqa: E402
                           encode_result)

EDGES = [f"edge-{k}" for k in range(5)]


def test_ten_thousand_messages_interleaved_with_frames_leave_a_consistent_view(demo_bundle):
    device = make_device(DeviceSettings(bundle=str(demo_bundle / "bundle"), id="cam-i", connect_timeout_s=0,
                                        deadline_ms=2.0, policy="ans",
                                        mqtt=MqttSettings(broker=f"mqtt://127.0.0.1:{free_port()}")))
    link, rng = device.link, random.Random(7)
    sent: list[int] = []
    link.send = lambda topic, payload: sent.append(len(sent)) or True
    n = len(device.model.bundle.splits)
    table = encode_compute_table(ComputeTable(device.model.bundle.content_hash, "edge-0", [0.001] * (n - 1) + [None]))
    expected: set[str] = set()  # what the frame thread must believe once it has taken every event in
    done = threading.Event()

    def network_thread():  # plays paho's thread: every message goes through the link's own handler
        for _ in range(10_000):
            roll, edge = rng.random(), rng.choice(EDGES)
            if roll < 0.3:
                online = rng.random() < 0.6
                (expected.add if online else expected.discard)(edge)
                message = (f"ans/v1/edge/{edge}/status", b"online" if online else b"offline")
            elif roll < 0.45:
                message = (f"ans/v1/edge/{edge}/load", encode_load(LoadReport(rng.random(), 0.001, 0.002, 1)))
            elif roll < 0.5:
                message = (f"ans/v1/edge/{edge}/compute", table if rng.random() < 0.5 else b"{junk")
            elif roll < 0.7:
                frame = (sent[-1] if sent else 0) + rng.choice([0, 0, 1, -3, 999])
                message = ("ans/v1/device/cam-i/result", encode_result(Result(frame, 0, "ok", [], 0.001, edge=edge)))
            elif roll < 0.75:
                message = ("ans/v1/device/cam-i/stats", b'{"instance": "someone-else"}')
            elif roll < 0.78:
                link._put(Lost())
                expected.clear()
                continue
            elif roll < 0.8:
                link._put(Connected(None))
                continue
            else:
                message = (rng.choice(["ans/v1/device/cam-i/request", "junk", "ans/v1/edge//status", "#"]),
                           rng.randbytes(rng.randint(0, 40)))
            link._on_message(None, None, SimpleNamespace(topic=message[0], payload=message[1]))
        done.set()

    thread = threading.Thread(target=network_thread)
    thread.start()
    frame, records, epochs = np.zeros((240, 320, 3), np.uint8), [], []
    while not done.is_set() or not link.events.empty():
        records.append(device.process(len(records), frame))
        epochs.append(device.view.epoch)
        assert device.view.edges <= set(EDGES) and len(device.store.seen_edges) <= len(EDGES)
    thread.join()
    device._take_events()
    assert device.view.edges == expected
    assert all(r.detections is not None for r in records) and epochs == sorted(epochs)
    assert [r.frame for r in records] == list(range(len(records)))


def test_a_request_that_could_not_go_teaches_the_learner_nothing(demo_bundle, caplog):
    """The session went between the frame's choice and its send (paho refuses the publish before its
    thread has told the frame thread): the frame is finished here, and the learner is not told that
    the arm took the deadline (which once held the best arm off for 128 frames after a broker
    restart). Paho keeps the request for the broker's return: its late answer is ignored quietly,
    not taken for one never asked for. A request that went and got no answer in time still is a
    lower bound."""
    device = make_device(DeviceSettings(bundle=str(demo_bundle / "bundle"), id="cam-u", connect_timeout_s=0,
                                        deadline_ms=50.0, policy="edge-only",
                                        mqtt=MqttSettings(broker=f"mqtt://127.0.0.1:{free_port()}")))
    told = []
    device.policy.update = told.append
    device.link.send = lambda topic, payload: False
    device.link._on_message(None, None, SimpleNamespace(topic="ans/v1/edge/edge-0/status", payload=b"online"))
    frame = np.zeros((240, 320, 3), np.uint8)
    record = device.process(0, frame)
    assert record.fallback and record.edge is None and record.detections is not None
    assert told == []
    late = encode_result(Result(0, 0, "ok", [], compute_s=0.001, edge="edge-0"))
    device.link._on_message(None, None, SimpleNamespace(topic="ans/v1/device/cam-u/result", payload=late))
    device._take_events()
    assert "never sent" not in caplog.text
    device.link.send = lambda topic, payload: True  # went; nobody answers within the 50 ms deadline
    assert device.process(1, frame).fallback
    assert [f.censored for f in told] == [True]
