"""The apps as systemd services: the notify protocol for real (READY, periodic WATCHDOG, STOPPING on
SIGTERM, state flushed), and one clear line plus a distinct exit status for what retrying cannot fix."""

import shutil
import signal
import socket
import subprocess
import time

import pytest

from .broker import MOSQUITTO, PLUGIN, production_config, started
from .running import ANS, ENV, dev_config, device_args, spawn

pytest.importorskip("sdnotify")


class NotifySocket:
    """The socket systemd would own: a datagram socket that collects what the service says."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.said: list[str] = []

    def collect(self, until, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while not until(self.said):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; heard {self.said}")
            try:
                self._take()
            except TimeoutError:
                pass
        return self.said

    def drain(self) -> list[str]:
        """Take in everything queued now, as systemd does all along: a socket left unread holds ten
        datagrams, and a service drops what does not fit rather than wait (STOPPING=1 included)."""
        self.sock.setblocking(False)
        try:
            while True:
                self._take()
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(0.2)
        return self.said

    def _take(self) -> None:
        """One datagram (raises when none comes)."""
        self.said.extend(self.sock.recv(4096).decode().split("\n"))


def test_notify_protocol_ready_watchdog_stopping(demo_bundle, tmp_path):
    tmp = demo_bundle
    dev_sock, edge_sock = NotifySocket(tmp_path / "dev.sock"), NotifySocket(tmp_path / "edge.sock")
    state = tmp_path / "state"
    with started(dev_config(), tmp_path) as broker:
        edge = spawn(ANS + ["edge", "--bundle", str(tmp / "bundle"), "--broker", f"mqtt://127.0.0.1:{broker.port}"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                     env={**ENV, "NOTIFY_SOCKET": edge_sock.path, "WATCHDOG_USEC": "400000"})
        edge_sock.collect(lambda said: "READY=1" in said, 120)
        # A slow board, so it is still running when stopped.
        device = spawn(device_args(tmp, broker.port, "cam-sd", "ans", "--state-dir", str(state),
                                   "--emulate-slowdown", "30"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, env={**ENV, "NOTIFY_SOCKET": dev_sock.path, "WATCHDOG_USEC": "400000"})
        dev_sock.collect(lambda said: "READY=1" in said and said[said.index("READY=1"):].count("WATCHDOG=1") >= 2,
                         120)
        dev_sock.drain()
        device.send_signal(signal.SIGTERM)
        assert device.wait(30) == 0, device.stderr.read()[-3000:]
        dev_sock.collect(lambda said: "STOPPING=1" in said, 5)
        assert (state / "learner.json").is_file()  # flushed on the way out
        heard = edge_sock.drain().count("WATCHDOG=1")  # the edge's watchdog went on while the device ran
        assert edge_sock.collect(lambda said: said.count("WATCHDOG=1") >= heard + 2, 10)
        edge_sock.drain()
        edge.send_signal(signal.SIGTERM)
        assert edge.wait(30) == 0, edge.stderr.read()[-3000:]
        assert "STOPPING=1" in edge_sock.collect(lambda said: "STOPPING=1" in said, 5)


@pytest.mark.skipif(not shutil.which(MOSQUITTO) or PLUGIN is None, reason="no mosquitto with dynamic security")
def test_a_notification_systemd_does_not_take_is_dropped_not_waited_for(tmp_path, monkeypatch):
    """systemd's socket holds a few datagrams (ten by default); a service must not stop when they are
    not read: its main loop, its watchdog and its orderly stop would stop with it."""
    import threading

    from common.service import Notifier

    unread = NotifySocket(tmp_path / "unread.sock")  # bound, never read
    monkeypatch.setenv("NOTIFY_SOCKET", unread.path)
    notifier = Notifier()
    done = threading.Event()

    def say():
        for k in range(200):
            notifier.status(f"frame {k}")
        notifier.stopping()
        done.set()

    threading.Thread(target=say, daemon=True).start()
    assert done.wait(60), "a notification blocked the service"
    assert len(unread.collect(lambda said: len(said) >= 5, 5)) >= 5  # what fitted was delivered


def test_refused_credentials_give_one_clear_line_and_exit_status_3(demo_bundle, tmp_path):
    tmp = demo_bundle
    (tmp_path / "pw").write_text("wrong\n")
    with started(production_config(tmp_path, [("device", "cam-a", "right")]).config, tmp_path) as broker:
        start = time.monotonic()
        proc = subprocess.run(device_args(tmp, broker.port, "cam-a", "ans"), capture_output=True, text=True,
                              timeout=120, env={**ENV, "ANS_DEVICE_MQTT__USERNAME": "cam-a",
                                                "ANS_DEVICE_MQTT__PASSWORD_FILE": str(tmp_path / "pw")})
    assert proc.returncode == 3
    assert time.monotonic() - start < 25  # it did not sit out the 30 s connect timeout, nor retry for ever
    lines = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert any("refused cam-a" in line and ("Not authorized" in line or "Bad user name" in line) for line in lines)


@pytest.mark.parametrize("config, message", [
    (None, "cannot read the configuration"),
    ("bundle = 'b'\ndeadline = 3\n", "deadline: Unexpected keyword argument"),
    ("bundle = 'b'\n[mqtt]\nbroker = 'http://x'\n", "expected mqtt://host"),
    ("bundle = 'b'\ndeadline_ms = 'soon'\n", "deadline_ms: Input should be a valid number"),
    ("bundle = \n", "not valid TOML"),
])
def test_a_bad_config_file_is_named_and_exits_2(tmp_path, config, message):
    path = tmp_path / "device.toml"
    if config is not None:
        path.write_text(config)
    proc = subprocess.run(ANS + ["device", "--config", str(path)], capture_output=True,
                          text=True, timeout=60, env=ENV)
    assert proc.returncode == 2
    assert str(path) in proc.stderr and message in proc.stderr, proc.stderr


def test_a_bundle_the_edge_does_not_serve_is_one_clear_line_and_no_frame_lost(demo_bundle, tmp_path):
    """The edge serves another model: every request is refused with an error naming both bundles, the
    device says so once, finishes every frame itself, and the learner stops sending."""
    from converter.bundle import convert

    from .running import Recorder, records, start_edge, wait_for
    from .test_converter import dag_model

    other = tmp_path / "other"
    convert(dag_model(), other / "bundle", log=lambda *_: None)
    with started(dev_config(), tmp_path) as broker:
        start_edge(other, broker.port)
        sent = Recorder(broker.port, "ans/v1/device/cam-mismatch/request")
        wait_for(lambda: sent.c.publish("ans/v1/device/cam-mismatch/request", b"subscribed?").rc == 0
                 and sent.messages.qsize() > 0, 30, "the recorder's subscription")  # then every request is seen
        sent.drain()
        try:
            proc = subprocess.run(device_args(demo_bundle, broker.port, "cam-mismatch", "ans", "--frames", "40"),
                                  capture_output=True, text=True, timeout=300, env=ENV)
        finally:
            requests = [m for m in sent.drain() if m[1].startswith(b"ANS1")]  # not the probes
            sent.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "deploy the same bundle on both sides" in errors[0] and "dag" in errors[0]
    got = records(demo_bundle, "cam-mismatch")
    assert [r.frame for r in got] == list(range(40)) and not any(r.edge for r in got)
    assert len(requests) == 1  # that edge serves another model: nothing more is sent to it


def test_the_config_file_may_be_named_by_the_environment(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text("bundle = 'b'\nmax_batch = 0\n")
    proc = subprocess.run(ANS + ["edge"], capture_output=True, text=True, timeout=60,
                          env={**ENV, "ANS_EDGE_CONFIG": str(path)})
    assert proc.returncode == 2 and str(path) in proc.stderr and "max_batch must be at least 1" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["edge", "--bundle", "/nonexistent"], "/nonexistent/manifest.json: cannot read: No such file or directory"),
    (["demo", "--bundle", "/nonexistent", "--out", "/nonexistent-out"],
     "/nonexistent/manifest.json: cannot read: No such file or directory"),
    (["convert", "--model", "/nonexistent.keras", "--out", "/tmp/x"], "/nonexistent.keras: no such file"),
    (["convert", "--darknet", "/nope.cfg", "/nope.weights", "--out", "/tmp/x"], "/nope.cfg: no such file"),
])
def test_a_missing_input_is_one_line_before_tensorflow_starts(args, message):
    proc = subprocess.run(ANS + args, capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"ans {args[0]}: error: {message}"]


def test_a_corrupt_model_file_is_named_as_corrupt_before_tensorflow_starts(tmp_path):
    import zipfile

    (tmp_path / "junk.keras").write_bytes(b"\x00garbage" * 100)
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("readme.txt", "not a model")
    (tmp_path / "junk.h5").write_bytes(b"PK\x03\x04 not hdf5")
    for name, message in [("junk.keras", "not a .keras archive (corrupt or truncated"),
                          ("other.keras", "a zip without config.json, not a .keras model"),
                          ("junk.h5", "not an HDF5 file")]:
        proc = subprocess.run(ANS + ["convert", "--model", str(tmp_path / name), "--out", str(tmp_path / "b")],
                              capture_output=True, text=True, timeout=120, env=ENV)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"ans convert: error: {tmp_path / name}: {message}"), lines


def test_a_missing_video_is_refused_before_calibrating_or_connecting(demo_bundle, tmp_path):
    state = tmp_path / "state"
    proc = subprocess.run(ANS + ["device", "--bundle", str(demo_bundle / "bundle"), "--source", "/no/clip.avi",
                                 "--state-dir", str(state), "--broker", "mqtt://127.0.0.1:1"],
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 2 and "/no/clip.avi: no such video file" in proc.stderr
    assert not (state / "calibration.json").exists()  # it stopped before measuring anything
