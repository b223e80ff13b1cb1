"""``ans demo``: the whole system on one machine, on the embedded defaults.

Converts the trained demo detector into a bundle, starts a private Mosquitto, an edge process
and a device on the generated demo clip. Half-way through, the edge is stopped and started
again, so the run shows the device finishing frames itself and offloading again on its own.
Prints a live line and a summary; writes the annotated video, the per-frame results and a plot.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from device_app.app import run_device
from device_app.settings import DeviceSettings
from mqtt.connection import MqttSettings
from mqtt.protocol import FrameRecord

from .local_broker import Broker, dev_config

ANS = [sys.executable, "-m", "ans.cli"]


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def start_edge(bundle: Path, broker: str, log: Path, wrapper: tuple[str, ...] = ()) -> subprocess.Popen:
    """An edge process (``wrapper``: a command prefix such as ``ip netns exec NS``); returns once it
    serves (its log says so)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(log, "w") as out:
        proc = subprocess.Popen([*wrapper, *ANS, "edge", "--bundle", str(bundle), "--broker", broker], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OSError(f"the edge exited ({proc.returncode}); see {log}")
        if "serving" in log.read_text(errors="replace"):
            return proc
        time.sleep(0.2)
    proc.kill()
    raise OSError(f"the edge did not come up in 180 s; see {log}")


def _outage(edge: list, bundle: Path, broker: str, log: Path, at: threading.Event, cancel: threading.Event) -> None:
    """Stop the edge when ``at`` is set, and start a new one (it takes a few seconds to load)."""
    at.wait()
    if cancel.is_set():
        return
    print("\n   (demo: stopping the edge; frames finish on the device until it is back)", flush=True)
    edge[0].terminate()
    edge[0].wait(30)
    edge[0] = start_edge(bundle, broker, log.with_name("edge-restarted.log"))
    print("\n   (demo: the edge is back)", flush=True)


def run_system_demo(out: Path, frames: int = 300, slowdown: float = 30.0, outage: bool = True,
                    bundle: Path | None = None, source: str = "demo") -> int:
    """``bundle``: a user's converted model instead of the demo detector; ``source``: a video file
    (or camera:N) instead of the demo clip."""
    if bundle is not None:
        from common.bundle import read_manifest

        manifest = read_manifest(bundle)  # one clear line, before a broker and an edge are started for nothing
    out.mkdir(parents=True, exist_ok=True)
    if bundle is None:
        bundle = out / "bundle"
        _step("1/4 converting the trained demo detector into per-split heads and tails (cached after the first run)")
        subprocess.run(ANS + ["convert", "--zoo", "demo", "--out", str(bundle)], check=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    else:
        _step(f"1/4 your bundle: {bundle} ({manifest.model.name}, {len(manifest.splits)} splits)")
    _step("2/4 starting a private Mosquitto (the shipped development config) on a free port")
    broker = Broker(dev_config(), out / "broker")
    broker.start()
    print(f"   {broker.url}")
    edge: list = []
    trigger, cancel = threading.Event(), threading.Event()
    outage_thread = threading.Thread(target=_outage, args=(edge, bundle, broker.url, out / "edge.log", trigger, cancel),
                                     daemon=True)
    try:
        _step("3/4 starting the edge (TensorFlow tails)")
        edge.append(start_edge(bundle, broker.url, out / "edge.log"))
        print(f"   serving; log in {out / 'edge.log'}")
        _step(f"4/4 the device on {'the demo clip' if source == 'demo' else source} ({frames} frames; heads slowed "
              f"{slowdown:g}x to stand in for a board slower than this machine)")
        settings = DeviceSettings(bundle=str(bundle), id="demo-cam", source=source, frames=frames,
                                  loop=source != "demo",
                                  state_dir=str(out / "state"), results_out=str(out / "results.jsonl"),
                                  video_out=str(out / "annotated.avi"), emulate_slowdown=slowdown,
                                  stats_interval_s=2.0, mqtt=MqttSettings(broker=broker.url))
        if outage:
            outage_thread.start()
        summary = run_device(settings, live=True, on_frame=lambda record: record.frame == frames // 2
                             and trigger.set())
    finally:
        cancel.set()
        trigger.set()
        if outage_thread.is_alive():
            outage_thread.join()  # a replacement edge still starting is stopped too
        for proc in edge:
            proc.terminate()
            proc.wait(30)
        broker.stop()
    print(f"\n{summary}")
    _plot(out, bundle)
    print(f"annotated video: {out / 'annotated.avi'}\nper-frame results: {out / 'results.jsonl'}\n"
          f"plot: {out / 'demo.png'}")
    return 0


def _plot(out: Path, bundle: Path) -> None:
    """Chosen split and delay per frame, coloured by where the frame was finished."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from common.bundle import read_manifest

    records = [FrameRecord.from_json(line) for line in (out / "results.jsonl").read_text().splitlines()]
    device_only = read_manifest(bundle).device_only
    frames = [r.frame for r in records]
    colours = ["tab:blue" if r.edge else "tab:red" if r.fallback else "tab:gray" for r in records]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    top.scatter(frames, [r.split for r in records], c=colours, s=8)
    top.set_ylabel("chosen split")
    step = max(1, device_only // 6)
    ticks = [t for t in range(0, device_only, step) if device_only - t > step // 2] + [device_only]
    top.set_yticks(ticks, [str(t) if t != device_only else "device" for t in ticks])
    top.set_ylim(-0.5, device_only + 0.5)
    # The edge outage (stopped half-way): from the first frame without an edge after the middle
    # to the first one answered again.
    half = len(records) // 2
    gone = next((i for i in range(half, len(records)) if records[i].edge is None), None)
    back = next((i for i in range(gone, len(records)) if records[i].edge), len(records)) if gone else None
    if gone is not None:
        for axis in (top, bottom):
            axis.axvspan(frames[gone] - 0.5, frames[back - 1] + 0.5, color="0.9", zorder=0)
        top.text(frames[gone], device_only * 0.5, " edge stopped", fontsize=8, color="0.4")
    top.set_title("ans demo: blue = answered by the edge, red = meant for the edge but finished on the device, "
                  "grey = device-only", fontsize=9)
    bottom.scatter(frames, [r.delay_s * 1e3 for r in records], c=colours, s=8)
    bottom.set_ylabel("end-to-end delay (ms)")
    bottom.set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=110)
    plt.close(fig)
