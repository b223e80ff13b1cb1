"""The shipped production broker config, for real: the dynamic security plugin (roles made by
``mqtt.access``) and TLS with certificates made in the test. A device reaches only its own
topics, cannot join the edges' shared subscription, the monitor writes nothing, a wrong CA is
refused, and a device's certificate opens only that device's topics."""

import queue
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from contextlib import contextmanager

import pytest

mqtt = pytest.importorskip("paho.mqtt.client")
pytest.importorskip("trustme")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from .broker import ADMIN, MOSQUITTO, PLUGIN, Certificates, production_config, running_broker, started  # noqa: E402
from .running import ENV, device_args, records, start_edge  # noqa: E402

pytestmark = pytest.mark.skipif(not shutil.which(MOSQUITTO) or PLUGIN is None,
                                reason="mosquitto with its dynamic security plugin is not installed")

CLIENTS = [("device", "cam-a", "pw-a"), ("device", "cam-b", "pw-b"), ("edge", "edge-1", "pw-e"),
           ("monitor", "monitor", "pw-m"), ("homeassistant", "hass", "pw-h")]
PASSWORDS = {name: pw for _, name, pw in CLIENTS}


class Client:
    """A paho 2.x MQTT v5 client that records what it receives and how the broker answered."""

    def __init__(self, port: int, user: str | None, password: str | None = None, tls: tuple | None = None):
        self.messages: queue.Queue = queue.Queue()
        self.connack: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5)
        if user is not None:
            self.c.username_pw_set(user, password if password is not None else PASSWORDS.get(user))
        if tls is not None:
            ca, cert, key = tls
            self.c.tls_set(ca_certs=str(ca), certfile=cert and str(cert), keyfile=key and str(key))
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_disconnect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.refused_at_connect = False
        try:
            self.c.connect("127.0.0.1", port)
        except (ssl.SSLError, OSError):  # a TLS handshake the broker refused
            self.refused_at_connect = True
        self.c.loop_start()

    def connected(self) -> bool:
        """The broker's verdict: True for a CONNACK that accepts; False for one that refuses, or a
        connection that the broker closes before any CONNACK (a refused certificate)."""
        return not self.refused_at_connect and not self.connack.get(timeout=10).is_failure

    def subscribe(self, topic: str):
        self.c.subscribe(topic, qos=1)
        return self.subacks.get(timeout=5)[0]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


@contextmanager
def logged_in(tmp_path, *users: str):
    """The shipped production config with CLIENTS in a real Mosquitto, and ``users`` logged in (each
    checked accepted), closed afterwards."""
    with running_broker(production_config(tmp_path, CLIENTS).config, tmp_path) as port:
        clients = [Client(port, user) for user in users]
        try:
            assert all(c.connected() for c in clients)
            yield clients
        finally:
            for c in clients:
                c.close()


def test_devices_reach_only_their_own_topics_and_subscriptions_are_refused_at_subscribe(tmp_path):
    with logged_in(tmp_path, "edge-1", "cam-a", "cam-b") as (edge, a, b):
        assert not edge.subscribe("$share/ans-edges/ans/v1/device/+/request").is_failure
        assert not a.subscribe("ans/v1/device/cam-a/result").is_failure
        assert not a.subscribe("ans/v1/edge/+/status").is_failure
        # Refused at SUBSCRIBE, not filtered at delivery: another device's results, every request.
        assert str(b.subscribe("ans/v1/device/cam-a/result")) == "Not authorized"
        assert str(b.subscribe("ans/v1/device/+/request")) == "Not authorized"
        assert str(b.subscribe("#")) == "Not authorized"

        b.publish("ans/v1/device/cam-a/request", b"forged by cam-b")  # dropped: not cam-b's topic
        a.publish("ans/v1/device/cam-a/request", b"from cam-a")
        assert edge.messages.get(timeout=5) == ("ans/v1/device/cam-a/request", b"from cam-a")
        edge.publish("ans/v1/device/cam-a/result", b"result")
        assert a.messages.get(timeout=5) == ("ans/v1/device/cam-a/result", b"result")
        a.publish("ans/v1/device/cam-a/request", b"second")  # ordered after the forged one
        assert edge.messages.get(timeout=5) == ("ans/v1/device/cam-a/request", b"second")
        assert edge.messages.empty() and b.messages.empty()


def test_a_device_cannot_join_the_edges_shared_subscription_and_black_hole_requests(tmp_path):
    with logged_in(tmp_path, "edge-1", "cam-a", "cam-b") as (edge, victim, attacker):
        assert not edge.subscribe("$share/ans-edges/ans/v1/device/+/request").is_failure
        assert str(attacker.subscribe("$share/ans-edges/ans/v1/device/+/request")) == "Not authorized"
        for k in range(50):
            victim.publish("ans/v1/device/cam-a/request", b"%d" % k)
        got = [edge.messages.get(timeout=5)[1] for _ in range(50)]
        assert got == [b"%d" % k for k in range(50)]  # every request reached the edge, none the attacker
        assert attacker.messages.empty()


def test_observers_read_status_stats_and_objects_never_frames_or_tensors(tmp_path):
    """The monitor and Home Assistant read what a dashboard shows; requests (camera frames, cut
    tensors) and results are refused at SUBSCRIBE, and snapshots need the opt-in role."""
    with logged_in(tmp_path, "monitor", "hass", "cam-a") as (monitor, hass, device):
        for observer in (monitor, hass):
            for allowed in ("ans/v1/device/+/status", "ans/v1/device/+/stats", "ans/v1/edge/+/stats",
                            "ans/v1/device/cam-a/objects",
                            "ans/v1/device/+/detections"):
                assert not observer.subscribe(allowed).is_failure, allowed
            for refused in ("ans/v1/#", "ans/v1/device/+/request", "ans/v1/device/cam-a/request",
                            "ans/v1/device/+/result", "ans/v1/+/+/status", "ans/v1/device/+/snapshot", "#"):
                assert str(observer.subscribe(refused)) == "Not authorized", refused
        assert not hass.subscribe("homeassistant/#").is_failure
        monitor.publish("homeassistant/device/ans_monitor/config", b"{}", retain=True)  # refused
        monitor.publish("ans/v1/device/cam-a/request", b"forged by the monitor")  # refused
        device.publish("ans/v1/device/cam-a/request", b"a camera frame")  # reaches no observer
        device.publish("homeassistant/device/ans_cam-a/config", b'{"o": {"name": "ANS"}}', retain=True)
        device.publish("ans/v1/device/cam-a/status", b"online", retain=True)
        device.publish("ans/v1/device/cam-a/stats", b"{}")
        assert monitor.messages.get(timeout=5) == ("ans/v1/device/cam-a/status", b"online")
        heard = {hass.messages.get(timeout=5) for _ in range(3)}
        assert heard == {("homeassistant/device/ans_cam-a/config", b'{"o": {"name": "ANS"}}'),
                         ("ans/v1/device/cam-a/status", b"online"), ("ans/v1/device/cam-a/stats", b"{}")}
        assert str(monitor.subscribe("homeassistant/#")) == "Not authorized"
        assert not monitor.messages.qsize() > 1 and hass.messages.empty()


def test_discovery_is_one_exact_topic_per_device_and_names_no_other(tmp_path):
    """A device stores one retained discovery config, on its own topic: not a config claiming
    another device, and not any number of retained messages under the discovery prefix."""
    with logged_in(tmp_path, "hass", "cam-a", "cam-b") as (hass, a, b):
        assert not hass.subscribe("homeassistant/#").is_failure
        b.publish("homeassistant/device/ans_cam-a/config", b'{"claims": "cam-a"}', retain=True)
        for k in range(5):  # the old per-entity wildcard let a device store any number of these
            b.publish(f"homeassistant/sensor/ans_cam-b/junk{k}/config", b"x" * 1000, retain=True)
        b.publish("homeassistant/device/ans_cam-b/config", b'{"o": {"name": "ANS"}}', retain=True)
        a.publish("homeassistant/device/ans_cam-a/config", b'{"o": {"name": "ANS"}, "from": "cam-a"}', retain=True)
        heard = [hass.messages.get(timeout=5) for _ in range(2)]
        assert heard == [("homeassistant/device/ans_cam-b/config", b'{"o": {"name": "ANS"}}'),
                         ("homeassistant/device/ans_cam-a/config", b'{"o": {"name": "ANS"}, "from": "cam-a"}')]
        assert hass.messages.empty()


def test_wrong_credentials_are_refused(tmp_path):
    with running_broker(production_config(tmp_path, CLIENTS).config, tmp_path) as port:
        intruder, nobody = Client(port, "cam-a", "wrong"), Client(port, None)
        try:
            assert not intruder.connected() and not nobody.connected()
        finally:
            intruder.close()
            nobody.close()


def test_devices_are_added_disabled_and_removed_on_a_running_broker(tmp_path):
    """``ans broker add``, ``disable``, ``enable``, ``remove`` through the plugin's control API, as its
    administrator."""
    from ans.cli import main

    with running_broker(production_config(tmp_path, CLIENTS).config, tmp_path) as port:
        admin_pw = tmp_path / "admin.password"
        admin_pw.write_text(ADMIN[1])
        new_pw = tmp_path / "cam-new.password"
        common = ["--broker", f"mqtt://127.0.0.1:{port}", "--admin", ADMIN[0], "--admin-password-file", str(admin_pw)]
        assert main(["broker", "add", "device", "cam-new", "--password-file", str(new_pw), *common]) == 0
        assert new_pw.stat().st_mode & 0o077 == 0  # a generated password, readable by its owner only
        edge, new = Client(port, "edge-1"), Client(port, "cam-new", new_pw.read_text().strip())
        try:
            assert edge.connected() and new.connected()
            edge.subscribe("$share/ans-edges/ans/v1/device/+/request")
            assert str(new.subscribe("ans/v1/device/cam-a/result")) == "Not authorized"
            new.publish("ans/v1/device/cam-new/request", b"hello")
            assert edge.messages.get(timeout=5) == ("ans/v1/device/cam-new/request", b"hello")
        finally:
            new.close()
            edge.close()
        password = new_pw.read_text().strip()
        for action, admitted in (("disable", False), ("enable", True), ("remove", False)):
            assert main(["broker", action, "device", "cam-new", *common]) == 0
            client = Client(port, "cam-new", password)
            try:
                assert client.connected() == admitted, action
            finally:
                client.close()


def test_the_development_config_starts_and_lets_anyone_publish(tmp_path):
    """The dev broker config loads as shipped; without the plugin a forged request does get through
    (which is what the production tests above prove is blocked)."""
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


# -- TLS --

def test_a_device_certificate_opens_only_that_devices_topics(tmp_path):
    certs = Certificates(tmp_path / "certs", ["cam-a", "cam-b"])
    clients = [("device", "cam-a", None), ("device", "cam-b", None), ("edge", "edge-1", "pw-e")]
    prod = production_config(tmp_path, clients, certs, by_certificate=True)
    with running_broker(prod.config, tmp_path) as port:
        wait_listening(prod.tls_port)
        edge = Client(port, "edge-1", "pw-e")
        a = Client(prod.tls_port, None, tls=(certs.ca, certs.folder / "cam-a.crt", certs.folder / "cam-a.key"))
        # Whoever holds cam-b's certificate is cam-b, whatever user name it claims.
        b = Client(prod.tls_port, "cam-a", "anything",
                   tls=(certs.ca, certs.folder / "cam-b.crt", certs.folder / "cam-b.key"))
        try:
            assert edge.connected() and a.connected() and b.connected()
            edge.subscribe("$share/ans-edges/ans/v1/device/+/request")
            assert not a.subscribe("ans/v1/device/cam-a/result").is_failure
            assert str(b.subscribe("ans/v1/device/cam-a/result")) == "Not authorized"
            b.publish("ans/v1/device/cam-a/request", b"forged with cam-b's certificate")
            a.publish("ans/v1/device/cam-a/request", b"from cam-a over TLS")
            assert edge.messages.get(timeout=5) == ("ans/v1/device/cam-a/request", b"from cam-a over TLS")
            edge.publish("ans/v1/device/cam-a/result", b"result")
            assert a.messages.get(timeout=5) == ("ans/v1/device/cam-a/result", b"result")
            assert b.messages.empty() and edge.messages.empty()
        finally:
            for c in (edge, a, b):
                c.close()
        no_cert = Client(prod.tls_port, "cam-a", "pw", tls=(certs.ca, None, None))
        try:  # the listener requires a certificate: a password alone does not get in
            assert not no_cert.connected()
        finally:
            no_cert.close()


def test_tls_end_to_end_and_a_wrong_ca_refused_with_one_clear_line(demo_bundle, tmp_path):
    tmp = demo_bundle
    certs = Certificates(tmp_path / "certs", ["cam-tls"])
    other = Certificates(tmp_path / "other-ca")
    clients = [("device", "cam-tls", None), ("edge", "edge-1", "pw-e")]
    prod = production_config(tmp_path, clients, certs, by_certificate=True)
    edge_pw = tmp_path / "edge.password"
    edge_pw.write_text("pw-e\n")
    with started(prod.config, tmp_path) as broker:
        wait_listening(prod.tls_port)
        edge = start_edge(tmp, broker.port, env={"ANS_EDGE_MQTT__USERNAME": "edge-1",
                                                 "ANS_EDGE_MQTT__PASSWORD_FILE": str(edge_pw)})
        tls = {"ANS_DEVICE_MQTT__CA_FILE": str(certs.ca), "ANS_DEVICE_MQTT__CERT_FILE": str(certs.folder / "cam-tls.crt"),
               "ANS_DEVICE_MQTT__KEY_FILE": str(certs.folder / "cam-tls.key")}
        args = device_args(tmp, broker.port, "cam-tls", "edge-only", "--frames", "10")
        args[args.index("--broker") + 1] = f"mqtts://127.0.0.1:{prod.tls_port}"
        try:
            ok = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**ENV, **tls})
            answered = [r.edge for r in records(tmp, "cam-tls")]
            wrong = subprocess.run(args, capture_output=True, text=True, timeout=300,
                                   env={**ENV, **tls, "ANS_DEVICE_MQTT__CA_FILE": str(other.ca)})
        finally:
            edge.terminate()
            edge.wait(30)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert answered == ["edge-1"] * 10
    assert wrong.returncode == 3, wrong.stderr[-3000:]
    failures = [line for line in wrong.stderr.splitlines() if "TLS with broker" in line]
    assert len(failures) == 1 and "certificate verify failed" in failures[0] and "ca_file" in failures[0]


def test_ans_broker_init_writes_a_file_the_broker_starts_from(tmp_path):
    """The administrator and roles that ``ans broker init`` writes before the first start: the broker
    loads them, the administrator adds an edge and a device, they reach each other."""
    from ans.cli import main

    state = tmp_path / "state"
    assert main(["broker", "init", "--out", str(state)]) == 0
    assert (state / "dynamic-security.json").stat().st_mode & 0o077 == 0
    assert (state / "admin.password").stat().st_mode & 0o077 == 0
    assert main(["broker", "init", "--out", str(state)]) == 2  # never overwrites the broker's own file
    config = production_config(tmp_path, []).config.replace(str(tmp_path / "dynamic-security.json"),
                                                           str(state / "dynamic-security.json"))
    with running_broker(config, tmp_path) as port:
        common = ["--broker", f"mqtt://127.0.0.1:{port}", "--admin-password-file", str(state / "admin.password")]
        for kind, name in (("edge", "edge-9"), ("device", "cam-9")):
            assert main(["broker", "add", kind, name, "--password-file", str(tmp_path / f"{name}.pw"), *common]) == 0
        edge = Client(port, "edge-9", (tmp_path / "edge-9.pw").read_text().strip())
        cam = Client(port, "cam-9", (tmp_path / "cam-9.pw").read_text().strip())
        try:
            assert edge.connected() and cam.connected()
            assert not edge.subscribe("$share/ans-edges/ans/v1/device/+/request").is_failure
            cam.publish("ans/v1/device/cam-9/request", b"hi")
            assert edge.messages.get(timeout=5) == ("ans/v1/device/cam-9/request", b"hi")
        finally:
            edge.close()
            cam.close()
