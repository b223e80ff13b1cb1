"""The shipped production broker config, for real: authentication and per-device ACL."""

import queue
import shutil
import uuid

import pytest

mqtt = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from .broker import MOSQUITTO, production_config, running_broker  # noqa: E402

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto_passwd") or not shutil.which(MOSQUITTO),
                                reason="mosquitto is not installed (bash setup.sh installs it)")

USERS = {"cam-a": "pw-a", "cam-b": "pw-b", "edge-1": "pw-e"}


class Client:
    """A paho 2.x MQTT v5 client that records what it receives and how the broker answered."""

    def __init__(self, port: int, user: str, password: str):
        self.messages: queue.Queue = queue.Queue()
        self.connack: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, password)
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def connected(self) -> bool:
        return not self.connack.get(timeout=5).is_failure

    def subscribe(self, topic: str):
        self.c.subscribe(topic, qos=1)
        return self.subacks.get(timeout=5)[0]

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_devices_reach_only_their_own_topics(tmp_path):
    with running_broker(production_config(tmp_path, USERS), tmp_path) as port:
        clients = {u: Client(port, u, p) for u, p in USERS.items()}
        try:
            assert all(c.connected() for c in clients.values())
            edge, a, b = clients["edge-1"], clients["cam-a"], clients["cam-b"]
            assert not edge.subscribe("ans/v1/device/+/request").is_failure
            assert not a.subscribe("ans/v1/device/cam-a/result").is_failure
            # Mosquitto 2.0 grants the subscription but checks the ACL on delivery: cam-b gets nothing.
            b.subscribe("ans/v1/device/cam-a/result")

            b.publish("ans/v1/device/cam-a/request", b"forged by cam-b")  # dropped by the ACL
            a.publish("ans/v1/device/cam-a/request", b"from cam-a")
            assert edge.messages.get(timeout=5) == ("ans/v1/device/cam-a/request", b"from cam-a")

            edge.publish("ans/v1/device/cam-a/result", b"result")
            assert a.messages.get(timeout=5) == ("ans/v1/device/cam-a/result", b"result")
            a.publish("ans/v1/device/cam-a/request", b"second")  # ordered after the forged one
            assert edge.messages.get(timeout=5) == ("ans/v1/device/cam-a/request", b"second")
            assert edge.messages.empty() and b.messages.empty()
        finally:
            for c in clients.values():
                c.close()


def test_wrong_credentials_are_refused(tmp_path):
    with running_broker(production_config(tmp_path, USERS), tmp_path) as port:
        intruder = Client(port, "cam-a", "wrong")
        try:
            assert not intruder.connected()
        finally:
            intruder.close()


def test_the_development_config_starts_and_lets_anyone_publish(tmp_path):
    """The dev broker config loads as shipped; without the ACL a forged request does get through
    (which is what the production test above proves is blocked)."""
    from .broker import dev_config

    with running_broker(dev_config(), tmp_path) as port:
        edge, b = Client(port, "edge-1", ""), Client(port, "cam-b", "")
        try:
            assert edge.connected() and b.connected()
            edge.subscribe("ans/v1/device/+/request")
            b.publish("ans/v1/device/cam-a/request", b"forged by cam-b")
            assert edge.messages.get(timeout=5) == ("ans/v1/device/cam-a/request", b"forged by cam-b")
        finally:
            edge.close()
            b.close()
