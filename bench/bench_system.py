"""The running system on this machine, through a real Mosquitto on loopback:

1. every split of the demo detector, forced, N frames each: end-to-end delay, the device's
   head, the offloading delay and the edge's tail (from the timing ack), frames per second;
2. where an offloaded frame's time goes, stage by stage (device encode, publish, broker, edge intake,
   decode, batch formation, the tail, the reply, the device's wake-up), at a few splits;
3. the edge's tail compute per request against the batch size;
4. a 1 MB message round trip: MQTT (QoS 0 and 1, through the broker) against a plain TCP echo;
5. the floor of the software path: a request of 16 or 64 kB to another process and a 300-byte
   reply, both through the broker, each side one thread that drives paho's socket itself (no
   hand-off between threads, no work).

    .venv/bin/python bench/bench_system.py [--frames 40] [--out docs/img]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from common.timing import median_time  # noqa: E402
from lab.local_broker import Broker, dev_config  # noqa: E402


def ms(values) -> float:
    return round(statistics.median(values) * 1e3, 2) if values else float("nan")


@contextlib.contextmanager
def running(bundle: Path, broker: Broker, frames: int, name: str, edge_log: Path, wrapper: tuple[str, ...] = ()):
    """An edge process (under ``wrapper``) and an in-process device, not yet connected, on ``broker``;
    and ``frames`` frames of the demo clip."""
    from lab.demo import start_edge
    from device_app.runtime import make_device
    from device_app.settings import DeviceSettings
    from device_app.sources import demo_clip, open_source
    from mqtt.connection import MqttSettings

    clip = [f for f in open_source(str(demo_clip()), frames)]
    edge = start_edge(bundle, broker.url, edge_log, wrapper=wrapper)
    try:
        device = make_device(DeviceSettings(bundle=str(bundle), id=name, deadline_ms=5000,
                                            mqtt=MqttSettings(broker=broker.url)))
        yield device, clip
        device.link.close()
    finally:
        edge.terminate()
        edge.wait(30)


def forced(device, split: int, clip: list) -> tuple[list, float]:
    """``split`` forced through the clip twice (frames 0 .. 2n-1; the first pass warms up: tail tracing,
    caches): the second pass's records and its wall time."""
    from device_app.learner.policy import FixedSplit

    device.policy = FixedSplit(device.policy.profile, split, f"split-{split}")
    for k, frame in enumerate(clip):
        device.process(k, frame)
    start = time.perf_counter()
    records = [device.process(len(clip) + k, frame) for k, frame in enumerate(clip)]
    return records, time.perf_counter() - start


def per_split(bundle: Path, broker: Broker, frames: int) -> list[dict]:
    rows = []
    with running(bundle, broker, frames, "bench", Path(tempfile.gettempdir()) / "bench-edge.log") as (device, clip):
        device.connect()
        for split in range(len(device.model.bundle.splits)):
            records, wall = forced(device, split, clip)
            t = [r.timing for r in records if r.timing]
            sp = device.model.bundle.splits[split]
            rows.append({"split": split, "cut": sp.cut or "(device only)",
                         "sent_kb": round(float(device.packets.request_bytes[split]) / 1024, 1),
                         "delay_ms": ms([r.delay_s for r in records]), "fps": round(len(records) / wall, 1),
                         "offload_ms": ms([x.offload_s for x in t]), "tail_ms": ms([x.edge_compute_s for x in t]),
                         "front_ms": round(float(device.policy.front_delay_s[split]) * 1e3, 2),
                         "answered": sum(r.edge is not None for r in records)})
            print(f"split {split:>2}: {rows[-1]}", flush=True)
    return rows


#: The stages of an offloaded frame, each from the end of the one before (the first from the start of
#: the device's offloading: before encoding), and what each covers.
STAGES = (
    ("encode", "sent", "device: codec and request framing"),
    ("publish", "published", "device: paho's publish call (it queues the message for paho's network thread)"),
    ("to_edge", "received", "paho's network thread writes it, the broker, the edge's paho thread reads it whole"),
    ("queue", "picked", "edge: paho's thread to the worker thread (queue, GIL)"),
    ("decode", "decoded", "edge: request checks and decoding"),
    ("batch", "tail_start", "edge: batch formation"),
    ("tail", "computed", "edge: the TensorFlow call"),
    ("result", "tail_end", "edge: detections, the reply's encoding, the edge's accounting"),
    ("reply", "replied", "edge: paho's publish call (queued as on the device)"),
    ("to_device", "arrived", "the edge's paho thread writes it, the broker, the device's paho thread decodes it"),
    ("wake_up", "woken", "device: paho's thread to the frame thread"),
)


def stages(bundle: Path, broker: Broker, frames: int, splits=(0, 8, 10, 13)) -> list[dict]:
    """Per split, the median time of each stage of an offloaded frame, from timestamps on the one clock
    the device (this process) and a traced edge process share."""
    work = Path(tempfile.mkdtemp(prefix="ans-trace-"))
    marks: dict[tuple[int, int], dict] = {}
    rows = []
    tracer = (sys.executable, str(REPO / "bench" / "edge_trace.py"), str(work / "edge.jsonl"))
    with running(bundle, broker, frames, "bench-trace", work / "edge.log", tracer) as (device, clip):
        encode, offload, send, take = device._encode, device._offload, device.link.send, device._take_events

        def traced_encode(arm, cut, head_s):
            device._mark = {"start": time.monotonic()}
            return encode(arm, cut, head_s)

        def traced_offload(frame_id, arm, cut, encoded):
            marks[(arm, frame_id)] = device._mark
            return offload(frame_id, arm, cut, encoded)

        def traced_send(topic, payload):
            device._mark["sent"] = time.monotonic()
            ok = send(topic, payload)
            device._mark["published"] = time.monotonic()
            return ok

        def traced_take(wait_s=0.0, frame_id=None):
            got = take(wait_s, frame_id)
            if got is not None and frame_id is not None:
                device._mark.update(arrived=got.received, woken=time.monotonic(), compute=got.result.compute_s)
            return got

        device._encode, device._offload = traced_encode, traced_offload
        device.link.send, device._take_events = traced_send, traced_take
        device.connect()
        for split in splits:
            forced(device, split, clip)  # the warm-up pass's marks are left out below
    print("stages of an offloaded frame (ms):\n" + "\n".join(f"  {name}: {what}" for name, _, what in STAGES))
    for line in (work / "edge.jsonl").read_text().splitlines():
        trace = json.loads(line)
        mark = marks.get((trace["split"], trace["frame"]))
        if mark is not None and "woken" in mark:
            mark.update(trace)
    for split in splits:
        traced = [m for (s, k), m in marks.items() if s == split and k >= len(clip) and "replied" in m and "woken" in m]
        row = {"split": split, "kb": round(float(device.packets.request_bytes[split]) / 1024, 1), "frames": len(traced)}
        begin = "start"
        for name, end, _ in STAGES:
            row[name] = ms([m[end] - m[begin] for m in traced])
            begin = end
        row["offload"] = ms([m["woken"] - m["start"] for m in traced])
        row["edge_tail"] = ms([m["compute"] for m in traced])
        row["over_tail"] = ms([m["woken"] - m["start"] - m["compute"] for m in traced])
        rows.append(row)
        print(f"stages: {row}", flush=True)
    return rows


def batching(bundle: Path, splits=(0, 8), repeat: int = 15) -> list[dict]:
    from edge_app.server import TailRunner

    tails = TailRunner(bundle)
    rows = []
    for split in splits:
        shapes = tails.manifest.splits[split].shapes
        for size in (1, 2, 4, 8):
            x = [np.random.default_rng(0).random((size, *shape[1:]), dtype=np.float32) for shape in shapes]
            batch_ms = round(median_time(lambda: tails.run(split, x), repeat) * 1e3, 2)
            rows.append({"split": split, "batch": size, "batch_ms": batch_ms, "per_request_ms": batch_ms / size})
            print(f"batch: {rows[-1]}", flush=True)
    return rows


def echo(broker: Broker, size: int = 1 << 20, repeat: int = 30) -> dict:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    payload = os.urandom(size)
    out = {}
    for qos in (0, 1):
        got = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.on_message = lambda *_: got.set()
        c.connect("127.0.0.1", broker.port)
        c.subscribe("bench/echo", qos=qos)
        c.loop_start()
        time.sleep(0.3)
        times = []
        for _ in range(repeat):
            got.clear()
            start = time.perf_counter()
            c.publish("bench/echo", payload, qos=qos)
            got.wait(5)
            times.append(time.perf_counter() - start)
        c.loop_stop()
        c.disconnect()
        out[f"mqtt_qos{qos}_ms"] = ms(times)
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = server.accept()
        with conn:
            while True:
                buf = bytearray()
                while len(buf) < size:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        return
                    buf += chunk
                conn.sendall(buf)

    threading.Thread(target=serve, daemon=True).start()
    sock = socket.create_connection(server.getsockname())
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        sock.sendall(payload)
        left = size
        while left:
            left -= len(sock.recv(min(left, 1 << 20)))
        times.append(time.perf_counter() - start)
    sock.close()
    out["tcp_echo_ms"] = ms(times)
    print(f"echo: {out}", flush=True)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [r["split"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4))
    front = [r["front_ms"] for r in rows]
    offload = [0 if np.isnan(r["offload_ms"]) else r["offload_ms"] for r in rows]
    ax.bar(splits, front, label="device head (measured front-end delay)")
    ax.bar(splits, offload, bottom=front, label="offloading (send, edge tail, result)")
    ax.plot(splits, [r["delay_ms"] for r in rows], "k.-", label="end-to-end median (incl. preprocessing)")
    ax.set_xlabel("split (0 = send the input, last = device only)")
    ax.set_ylabel("ms")
    ax.set_title("Demo detector through Mosquitto on loopback, per forced split (one 2-core machine)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _client(port: int):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from mqtt.connection import _no_delay

    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_socket_open = _no_delay
    c.connect("127.0.0.1", port)
    return c


def responder(port: int) -> None:
    """The far end of ``floor``: answers each request with 300 bytes from inside paho's callback."""
    c = _client(port)
    reply = os.urandom(300)
    c.on_message = lambda client, userdata, msg: client.publish("bench/floor/reply", reply)
    c.on_connect = lambda client, *_: client.subscribe("bench/floor/request")
    c.loop_forever()


def floor(broker: Broker, sizes=(16 << 10, 64 << 10), repeat: int = 300) -> dict:
    """Round trips through the broker with nothing else in the way: what no hand-off, codec or
    detector can go under on this machine."""
    far = subprocess.Popen([sys.executable, __file__, "--responder", str(broker.port)])
    try:
        c = _client(broker.port)
        got = []
        c.on_message = lambda *_: got.append(1)
        c.subscribe("bench/floor/reply")
        while not c.is_connected():
            c.loop(0.01)
        began = time.monotonic()
        while not got:  # until the responder is up and subscribed (a request before that is lost)
            if time.monotonic() - began > 60 or far.poll() is not None:
                raise RuntimeError("the responder did not answer")
            c.publish("bench/floor/request", b"?")
            for _ in range(20):
                c.loop(0.01)
        out = {}
        for size in sizes:
            payload = os.urandom(size)
            times = []
            for i in range(repeat + 20):  # the first 20 warm up
                got.clear()
                start = time.perf_counter()
                c.publish("bench/floor/request", payload)
                deadline = start + 5.0
                while not got and time.perf_counter() < deadline:
                    c.loop(0.01)
                if not got:
                    raise RuntimeError("the responder did not answer")
                if i >= 20:
                    times.append(time.perf_counter() - start)
            out[f"round_trip_{size >> 10}kB_ms"] = ms(times)
        c.disconnect()
    finally:
        far.kill()
        far.wait()
    print(f"floor: {out}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--out", default=str(REPO / "docs" / "img"))
    parser.add_argument("--responder", type=int, help=argparse.SUPPRESS)  # floor's far end, on this port
    args = parser.parse_args()
    if args.responder:
        return responder(args.responder)
    work = Path(tempfile.mkdtemp(prefix="ans-bench-"))
    bundle = work / "bundle"
    subprocess.run([sys.executable, "-m", "ans.cli", "convert", "--zoo", "demo", "--out", str(bundle)],
                   check=True, stdout=subprocess.DEVNULL)
    broker = Broker(dev_config(), work / "broker")
    broker.start()
    try:
        results = {"echo": echo(broker), "floor": floor(broker), "stages": stages(bundle, broker, args.frames),
                   "per_split": per_split(bundle, broker, args.frames), "batching": batching(bundle)}
    finally:
        broker.stop()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    plot(results["per_split"], Path(args.out) / "system-per-split.png")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
