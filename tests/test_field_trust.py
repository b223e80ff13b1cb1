"""Trust in the field, with the shipped production broker config for real (dynamic security, TLS,
certificates made in the test): a session cannot be taken over, a disabled device is out whichever
way it logs in, a refused certificate ends clearly; and a device keeps detecting through an
ordinary fault (a full disk, no broker at all)."""

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

mqtt = pytest.importorskip("paho.mqtt.client")
pytest.importorskip("trustme")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.reasoncodes import ReasonCode  # noqa: E402

from mqtt.connection import BrokerRefused, MqttSettings, SessionGuard  # noqa: E402
from mqtt.protocol import FrameRecord  # noqa: E402

from .broker import ADMIN, MOSQUITTO, PLUGIN, Certificates, production_config, started  # noqa: E402
from .running import ENV, device_args, records, spawn, start_edge, stop, wait_for  # noqa: E402
from .test_broker_security import CLIENTS, PASSWORDS, Client, wait_listening  # noqa: E402

broker_needed = pytest.mark.skipif(not shutil.which(MOSQUITTO) or PLUGIN is None,
                                   reason="mosquitto with its dynamic security plugin is not installed")


def password_env(tmp_path: Path, role: str, user: str) -> dict:
    secret = tmp_path / f"{user}.password"
    secret.write_text(PASSWORDS[user] + "\n")
    prefix = f"ANS_{role.upper()}_MQTT__"
    return {f"{prefix}USERNAME": user, f"{prefix}PASSWORD_FILE": str(secret)}


# -- sessions, unit by unit --

class FakeClient:
    def __init__(self):
        self.delays, self.disconnected = [], 0
        self.on_socket_open = None

    def reconnect_delay_set(self, min_delay, max_delay):
        self.delays.append((min_delay, max_delay))

    def disconnect(self):
        self.disconnected += 1

    def subscribe(self, topics):
        return 0, 7


OK = ReasonCode(PacketTypes.CONNACK, "Success")
DROPPED = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")


def test_a_session_taken_over_again_and_again_backs_off_with_one_line(caplog):
    import logging

    client = FakeClient()
    guard = SessionGuard(client, MqttSettings(username="cam-a"), "cam-a", logging.getLogger("test"))
    assert guard.accepted(client, OK)
    for _ in range(SessionGuard.BOUNCES):  # closed, and re-opened at once: someone else logs in as cam-a
        guard._lost(client, None, None, DROPPED, None)
        assert guard.accepted(client, OK)
    assert guard.backing_off and client.delays == [SessionGuard.BACK_OFF_S]
    guard._lost(client, None, None, DROPPED, None)
    assert guard.accepted(client, OK)
    assert sum("another client is logging in as cam-a" in r.getMessage() for r in caplog.records) == 1
    guard.check()  # backing off is not giving up


def test_broker_restarts_are_no_takeover(caplog):
    """A restarting broker closes every session, as a takeover closes one: what differs is that the
    attempts made while it is down find nobody. And a client that does not log in has an id of its
    own, which nobody can take over. Four restarts in a minute: no back-off, no line."""
    import logging

    for settings, refused in ((MqttSettings(username="cam-a"), True), (MqttSettings(), False)):
        client = FakeClient()
        guard = SessionGuard(client, settings, "cam-a", logging.getLogger("test"))
        assert guard.accepted(client, OK)
        for _ in range(SessionGuard.BOUNCES + 1):
            guard._lost(client, None, None, DROPPED, None)
            if refused:
                client.on_connect_fail(client, None)  # the broker is down
            assert guard.accepted(client, OK)
        assert not guard.backing_off and client.delays == []
    assert not any("another client" in r.getMessage() for r in caplog.records)


def test_tls_closed_before_any_answer_and_a_refused_subscription_are_verdicts():
    import logging

    client = FakeClient()
    guard = SessionGuard(client, MqttSettings(broker="mqtts://127.0.0.1:8883"), "cam-a", logging.getLogger("test"))
    for _ in range(SessionGuard.TLS_DROPS):  # a link too slow to answer before the keep-alive: no verdict
        client.on_socket_open(client, None, None)
        guard._lost(client, None, None, ReasonCode(PacketTypes.DISCONNECT, "Keep alive timeout"), None)
    guard.check()
    for _ in range(SessionGuard.TLS_DROPS - 1):
        client.on_socket_open(client, None, None)
        guard._lost(client, None, None, DROPPED, None)
    guard.check()
    client.on_socket_open(client, None, None)
    guard._lost(client, None, None, DROPPED, None)
    with pytest.raises(BrokerRefused, match="certificate"):
        guard.check()
    assert client.disconnected == 1

    refused = SessionGuard(client, MqttSettings(), "cam-a", logging.getLogger("test"))
    refused.subscribe([("ans/v1/device/cam-a/result", 1)])
    refused._subscribed(client, None, 7, [ReasonCode(PacketTypes.SUBACK, "Not authorized")], None)
    with pytest.raises(BrokerRefused, match="disabled"):
        refused.check()


# -- the production broker, for real --

@broker_needed
def test_another_user_cannot_take_over_a_devices_or_an_edges_session(demo_bundle, tmp_path):
    """cam-b, logged in with its own password, connects 10 times as client id cam-a and 10 times as
    edge-1: the broker gives it its own id, and cam-a's frames are all answered by the edge."""
    tmp = demo_bundle
    prod = production_config(tmp_path, CLIENTS)
    with started(prod.config, tmp_path) as broker:
        edge = start_edge(tmp, broker.port, env=password_env(tmp_path, "edge", "edge-1"))
        env = {**ENV, **password_env(tmp_path, "device", "cam-a")}
        device = spawn(device_args(tmp, broker.port, "cam-a", "edge-only", "--loop", "--frames", "100000",
                                   "--deadline-ms", "2000"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, env=env)
        try:
            wait_for(lambda: len(records(tmp, "cam-a")) >= 10, 120, "10 frames", device)
            for victim in ["cam-a"] * 10 + ["edge-1"] * 10:
                attacker = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=victim, protocol=mqtt.MQTTv5)
                attacker.username_pw_set("cam-b", PASSWORDS["cam-b"])
                answered = []
                attacker.on_connect = lambda c, u, f, rc, p: answered.append(rc)
                attacker.connect("127.0.0.1", broker.port)
                attacker.loop_start()
                wait_for(lambda: answered, 10, "the broker's answer to the attacker")
                attacker.disconnect()
                attacker.loop_stop()
            after = len(records(tmp, "cam-a"))
            wait_for(lambda: len(records(tmp, "cam-a")) >= after + 20, 120, "20 frames after the attack", device)
        finally:
            stop(device)
            stop(edge)
        said = device.stderr.read()
    got = records(tmp, "cam-a")
    assert all(r.edge == "edge-1" for r in got), [r.frame for r in got if r.edge is None]
    assert "lost the broker" not in said


@broker_needed
def test_a_disabled_certificate_login_device_is_out_and_says_so(demo_bundle, tmp_path):
    """``ans broker disable`` closes the session of a device that logs in by certificate, and the
    broker refuses everything it then asks: the device exits 3 naming the refusal. ``enable`` lets
    it back in."""
    from ans.cli import main

    tmp = demo_bundle
    certs = Certificates(tmp_path / "certs", ["cam-c"])
    prod = production_config(tmp_path, [("device", "cam-c", None), ("edge", "edge-1", "pw-e")], certs,
                             by_certificate=True)
    admin_pw = tmp_path / "admin.password"
    admin_pw.write_text(ADMIN[1])
    with started(prod.config, tmp_path) as broker:
        wait_listening(prod.tls_port)
        edge = start_edge(tmp, broker.port, env=password_env(tmp_path, "edge", "edge-1"))
        tls = {"ANS_DEVICE_MQTT__CA_FILE": str(certs.ca), "ANS_DEVICE_MQTT__CERT_FILE": str(certs.folder / "cam-c.crt"),
               "ANS_DEVICE_MQTT__KEY_FILE": str(certs.folder / "cam-c.key")}
        args = device_args(tmp, broker.port, "cam-c", "edge-only", "--loop", "--frames", "100000")
        args[args.index("--broker") + 1] = f"mqtts://127.0.0.1:{prod.tls_port}"
        device = spawn(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**ENV, **tls})
        common = ["--broker", f"mqtt://127.0.0.1:{broker.port}", "--admin", ADMIN[0],
                  "--admin-password-file", str(admin_pw)]
        try:
            wait_for(lambda: sum(r.edge == "edge-1" for r in records(tmp, "cam-c")) >= 5, 120,
                     "5 frames answered", device)
            assert main(["broker", "disable", "device", "cam-c", *common]) == 0
            device.wait(120)
            cert = (certs.ca, certs.folder / "cam-c.crt", certs.folder / "cam-c.key")
            disabled = Client(prod.tls_port, None, tls=cert)
            try:  # the TLS login itself goes through (not checked at CONNECT): everything after is refused
                assert disabled.connected()
                assert str(disabled.subscribe("ans/v1/device/cam-c/result")) == "Not authorized"
            finally:
                disabled.close()
            assert main(["broker", "enable", "device", "cam-c", *common]) == 0
            enabled = Client(prod.tls_port, None, tls=cert)
            try:
                assert enabled.connected() and not enabled.subscribe("ans/v1/device/cam-c/result").is_failure
            finally:
                enabled.close()
        finally:
            stop(device)
            stop(edge)
    said = device.stderr.read()
    assert device.returncode == 3, said[-3000:]
    assert "refuses the subscription" in said and "disabled" in said


@broker_needed
def test_a_refused_certificate_ends_with_exit_3_and_a_few_lines(demo_bundle, tmp_path):
    tmp = demo_bundle
    certs = Certificates(tmp_path / "certs", ["cam-d"])
    prod = production_config(tmp_path, [("device", "cam-d", None)], certs, by_certificate=True)
    with started(prod.config, tmp_path):
        wait_listening(prod.tls_port)
        args = device_args(tmp, 1, "cam-d", "ans", "--loop", "--frames", "100000")
        args[args.index("--broker") + 1] = f"mqtts://127.0.0.1:{prod.tls_port}"
        started_at = time.monotonic()
        done = subprocess.run(args, capture_output=True, text=True, timeout=120,
                              env={**ENV, "ANS_DEVICE_MQTT__CA_FILE": str(certs.ca)})  # no client certificate
        took = time.monotonic() - started_at
    assert done.returncode == 3, done.stderr[-3000:]
    assert "refuses this client's certificate" in done.stderr
    assert len([line for line in done.stderr.splitlines() if "broker" in line]) <= SessionGuard.TLS_DROPS + 2
    assert took < 120


# -- ordinary faults --

def test_json_lines_are_whole_or_absent_when_the_disk_fills(tmp_path, monkeypatch):
    import errno

    from common.disk import JsonLines

    out = JsonLines(tmp_path / "results.jsonl")
    out.write(b'{"frame": 0}')
    real_write = os.write
    calls = []

    def full(fd, data):  # half a line fits, then the disk is full
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        out.write(json.dumps({"frame": 1, "detections": list(range(50))}).encode())
    monkeypatch.setattr(os, "write", real_write)
    out.write(b'{"frame": 2}')
    out.close()
    assert [json.loads(line)["frame"] for line in (tmp_path / "results.jsonl").read_text().splitlines()] == [0, 2]


def test_a_results_path_that_cannot_be_a_file_is_a_configuration_error(tmp_path):
    from common.errors import ConfigurationError, exit_status
    from device_app.app import _results_file

    for bad in (tmp_path / "no-such-folder" / "r.jsonl", tmp_path):
        with pytest.raises(ConfigurationError, match="results_out") as caught:
            _results_file(str(bad))
        assert exit_status(caught.value) == 2
    assert exit_status(OSError(28, "No space left on device")) == 1  # a running fault: restarted


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 kB tmpfs (root only): the state and results of a device on a full disk."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_no_detection_and_cuts_no_line(demo_bundle, tmp_path, tiny_disk):
    from .broker import dev_config

    tmp = demo_bundle
    (tiny_disk / "ballast").write_bytes(bytes(40_000))  # about 24 kB left: full within the first 200 frames
    with started(dev_config(), tmp_path) as broker:
        edge = start_edge(tmp, broker.port)
        try:
            args = device_args(tmp, broker.port, "cam-full", "edge-only", "--loop", "--frames", "300",
                               "--state-dir", str(tiny_disk / "state"))
            args[args.index("--out") + 1] = str(tiny_disk / "results.jsonl")
            done = subprocess.run(args, capture_output=True, text=True, timeout=600,
                                  env={**ENV, "ANS_DEVICE_STATS_INTERVAL_S": "0.2"})
        finally:
            stop(edge)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (tiny_disk / "results.jsonl").read_text().splitlines()
    frames = [FrameRecord.from_json(line).frame for line in lines]  # every line whole
    assert frames == list(range(len(frames))) and len(frames) < 300  # the disk did fill
    assert "No space left on device" in done.stderr and "results.jsonl" in done.stderr
    assert "300 frames: 300 answered by the edge" in done.stdout  # detection and offloading went on


def test_without_a_broker_frames_start_at_once(demo_bundle):
    from device_app.runtime import make_device
    from device_app.settings import DeviceSettings
    from lab.local_broker import free_port

    device = make_device(DeviceSettings(bundle=str(demo_bundle / "bundle"), id=f"cam-{uuid.uuid4().hex[:4]}",
                                        connect_timeout_s=300, policy="edge-only",
                                        mqtt=MqttSettings(broker=f"mqtt://127.0.0.1:{free_port()}")))
    first = []
    frames = (first.append(time.monotonic()) or f for f in [np.zeros((240, 320, 3), np.uint8)] * 3)
    began = time.monotonic()
    assert device.run(frames) == 3
    assert first[0] - began < 150  # not the 300 s connect timeout: nothing answers, so nothing is waited for


@broker_needed
def test_an_edge_whose_id_is_not_its_users_says_its_publishes_are_refused(demo_bundle, tmp_path):
    tmp = demo_bundle
    prod = production_config(tmp_path, CLIENTS)
    with started(prod.config, tmp_path) as broker:
        edge = start_edge(tmp, broker.port, "--id", "edge-9", env=password_env(tmp_path, "edge", "edge-1"))
        try:
            said = []
            wait_for(lambda: said.append(edge.stdout.readline()) or "refused a publish" in said[-1], 60,
                     "a line about the refused publishes", edge)
        finally:
            stop(edge)
    assert "Not authorized" in said[-1] and "edge-9" in said[-1]


@broker_needed
def test_two_devices_with_one_users_credentials_say_so_and_stop_fighting(demo_bundle, tmp_path):
    """A copied password: the broker hands the session to whichever logged in last. Each side sees
    its session closed and re-opened at once, says so in one line, and backs off; frames go on."""
    tmp = demo_bundle
    prod = production_config(tmp_path, CLIENTS)
    env = {**ENV, **password_env(tmp_path, "device", "cam-a")}
    with started(prod.config, tmp_path) as broker:
        logs = [open(tmp_path / f"twin-{k}.log", "w") for k in range(2)]
        twins = [spawn(device_args(tmp, broker.port, "cam-a", "ans", "--loop", "--frames", "100000",
                                   "--out", str(tmp_path / f"twin-{k}.jsonl")), stdout=log, stderr=log, env=env)
                 for k, log in enumerate(logs)]
        said = lambda: [(tmp_path / f"twin-{k}.log").read_text() for k in range(2)]  # noqa: E731
        try:
            wait_for(lambda: any("another client is logging in as cam-a" in s for s in said()), 120,
                     "a twin saying that another client logs in as it")
        finally:
            for twin in twins:
                stop(twin)
            for log in logs:
                log.close()
    assert all(twin.returncode == 0 for twin in twins), said()
    assert all(s.count("another client is logging in as cam-a") <= 1 for s in said())


@broker_needed
def test_broker_limits_fit_the_largest_request_and_the_broker_takes_them(demo_bundle, tmp_path):
    import re

    from ans.broker import limits
    from ans.cli import main
    from common.bundle import read_manifest
    from mqtt.protocol import request_size

    largest = max(request_size(s.shapes, "float32") for s in read_manifest(demo_bundle / "bundle").splits
                  if s.tensors)
    lines = limits([str(demo_bundle / "bundle")])
    packet = int(re.search(r"^max_packet_size (\d+)$", lines, re.M)[1])
    assert largest < packet <= largest + 2**17
    config = production_config(tmp_path, CLIENTS).config
    for line in lines.splitlines():
        if not line.startswith("#"):
            config = re.sub(rf"^{line.split()[0]} .*$", line, config, flags=re.M)
    assert f"max_packet_size {packet}" in config
    with started(config, tmp_path) as broker:  # the broker starts with them
        assert broker.proc.poll() is None
    assert main(["broker", "limits"]) == 2  # which bundles, said in one line
