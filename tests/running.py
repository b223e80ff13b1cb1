"""Helpers for tests of the running system: the demo bundle and clip, edge and device processes,
and a subscriber that records what crosses the broker."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from lab.local_broker import dev_config  # noqa: F401  (re-exported for the tests)
from mqtt.protocol import FrameRecord

from .broker import REPO

ANS = [sys.executable, "-m", "ans.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}


def make_bundle_and_clip(tmp: Path) -> None:
    from common.scenes import make_clip
    from converter.bundle import convert
    from converter.calibration import demo_scenes
    from converter.zoo import demo_decoding, demo_model

    # As `ans convert --zoo demo` makes it: with the low-bit codecs' ranges measured on generated scenes.
    convert(demo_model(), tmp / "bundle", log=lambda *_: None, decoding=demo_decoding(), samples=demo_scenes(64))
    make_clip(tmp / "clip.avi", frames=150, width=320, height=240)


#: Every process a test started, so that a failing test leaves none behind (see conftest).
SPAWNED: list[subprocess.Popen] = []


def spawn(args: list[str], **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen(args, **kwargs)
    SPAWNED.append(proc)
    return proc


def kill_leftovers() -> None:
    while SPAWNED:
        proc = SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_edge(tmp: Path, port: int, *extra: str, env: dict | None = None) -> subprocess.Popen:
    proc = spawn(ANS + ["edge", "--bundle", str(tmp / "bundle"), "--broker", f"mqtt://127.0.0.1:{port}",
                                   *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**ENV, **(env or {})})
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "serving" in line:
            return proc
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the edge did not come up")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (systemd's stop), and wait for the process to finish cleanly."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def device_args(tmp: Path, port: int, name: str, policy: str, *extra: str) -> list[str]:
    return ANS + ["device", "--bundle", str(tmp / "bundle"), "--source", str(tmp / "clip.avi"),
                  "--broker", f"mqtt://127.0.0.1:{port}", "--id", name, "--policy", policy,
                  "--out", str(tmp / f"{name}.jsonl"), *extra]


def run_device(tmp: Path, port: int, name: str, policy: str, *extra: str) -> list[FrameRecord]:
    proc = subprocess.run(device_args(tmp, port, name, policy, *extra), capture_output=True, text=True,
                          timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return records(tmp, name)


def records(tmp: Path, name: str) -> list[FrameRecord]:
    """The device's per-frame records so far (a line still being written is left for the next look)."""
    path = tmp / f"{name}.jsonl"
    text = path.read_text() if path.exists() else ""
    return [FrameRecord.from_json(line) for line in text[:text.rfind("\n") + 1].splitlines()]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            said = proc.stderr.read()[-3000:] if proc.stderr else ""
            raise AssertionError(f"the process ended while waiting for {what}: {said}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Recorder:
    """An MQTT v5 client that keeps every message on ``topics`` (reconnecting with the broker)."""

    def __init__(self, port: int, *topics: str):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: queue.Queue = queue.Queue()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"rec-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5)
        self.c.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in topics]
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload, m.retain))
        self.c.reconnect_delay_set(1, 2)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def drain(self) -> list[tuple[str, bytes, bool]]:
        out = []
        while not self.messages.empty():
            out.append(self.messages.get())
        return out

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()
