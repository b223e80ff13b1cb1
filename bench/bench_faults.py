"""Faults and hostile clients against the real system (Mosquitto, edge and device processes on
one machine, loopback only; every loop bounded in count and time):

* load: N devices offloading every frame at once, nothing lost, delays per device;
* edge killed (-9) mid-stream and replaced;
* broker killed (-9) for 2 s and for 10 s: how soon offloading resumes after it is back;
* a flood from one client (junk, and valid requests) while a victim device runs;
* 200,000 distinct malformed requests: the edge's memory and log lines;
* 100,000 fuzzed topics and payloads: the edge never exits, every message answered or counted;
* an attacker inside the fleet, on the shipped production broker config: a session takeover
  storm (and the same without client ids bound to users), 30 MB packets and retained junk, and
  1,000 connections of one user flooding.

    .venv/bin/python bench/bench_faults.py [--out bench-faults] [--quick] [--only NAME...]

Prints a table, writes OUT/faults.json and OUT/faults.png; docs/reliability.md quotes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from lab.local_broker import Broker, dev_config  # noqa: E402
from mqtt.protocol import FrameRecord  # noqa: E402

ANS = [sys.executable, "-m", "ans.cli"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "ANS_EDGE_STATS_INTERVAL_S": "1"}
# The broker holds a flood for the edge instead of dropping it, so that what the edge does with
# every message can be counted (the shipped 100 drops part of a flood before the edge).
CONFIG = dev_config().replace("max_queued_messages 100", "max_queued_messages 1000000")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Edge:
    def __init__(self, bundle: Path, port: int, work: Path, name: str = "edge-1", env: dict | None = None):
        self.log = work / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.proc = subprocess.Popen(ANS + ["edge", "--bundle", str(bundle), "--broker", f"mqtt://127.0.0.1:{port}",
                                            "--id", name], stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     env={**ENV, **(env or {})})
        deadline = time.monotonic() + 120
        while "serving" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the edge did not come up: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def lines(self) -> list[str]:
        return [x for x in self.log.read_text().splitlines() if " WARNING " in x or " ERROR " in x]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        return self.proc.returncode


class Device:
    """A device process whose per-frame records are timestamped (wall clock) as they appear."""

    def __init__(self, bundle: Path, clip: Path, port: int, work: Path, name: str, *extra: str,
                 env: dict | None = None, device_id: str | None = None):
        self.out = work / f"{name}.jsonl"
        self.seen: list[tuple[float, dict]] = []
        self.proc = subprocess.Popen(ANS + ["device", "--bundle", str(bundle), "--source", str(clip), "--broker",
                                            f"mqtt://127.0.0.1:{port}", "--id", device_id or name,
                                            "--out", str(self.out),
                                            "--state-dir", str(work / f"state-{name}"), *extra],
                                     stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "w"),
                                     env={**ENV, **(env or {})})
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        offset = 0
        while not self._done.is_set():
            if self.out.exists():
                text = self.out.read_text()
                complete = text[:text.rfind("\n") + 1]
                now = time.monotonic()
                for line in complete[offset:].splitlines():
                    self.seen.append((now, FrameRecord.from_json(line)))
                offset = len(complete)
            if self.proc.poll() is not None and offset == len(self.out.read_text() if self.out.exists() else ""):
                break
            time.sleep(0.01)

    def wait_frames(self, n: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < n:
            if time.monotonic() > deadline or (self.proc.poll() is not None and len(self.seen) < n):
                raise RuntimeError(f"device stopped at {len(self.seen)} of {n} frames")
            time.sleep(0.02)

    def stop_when_done(self) -> list[FrameRecord]:
        self.proc.wait(600)
        return self.stop()

    def stop(self) -> list[FrameRecord]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        time.sleep(0.1)
        self._done.set()
        self._thread.join(10)
        return [r for _, r in self.seen]


def summary(records: list[FrameRecord]) -> dict:
    delays = np.array([r.delay_s for r in records]) * 1e3 if records else np.zeros(1)
    return {"frames": len(records), "contiguous": [r.frame for r in records] == list(range(len(records))),
            "by_edge": sum(r.edge is not None for r in records), "fallbacks": sum(r.fallback for r in records),
            "p50_ms": round(float(np.median(delays)), 1), "p99_ms": round(float(np.percentile(delays, 99)), 1)}


def publisher(port: int, user: tuple[str, str] | None = None, client_id: str | None = None, wait: bool = False,
              loop: bool = True):
    """A paho client (as ``user``, with ``client_id``); ``wait``: until the broker has answered;
    without ``loop`` it only sends its CONNECT."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"bench-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.max_queued_messages_set(0)
    if user is not None:
        client.username_pw_set(*user)
    answered = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: answered.set()
    client.connect("127.0.0.1", port)
    if not loop:
        return client
    client.loop_start()
    if wait and not answered.wait(10):
        raise RuntimeError("the broker did not answer")
    return client


def edge_totals(edge: Edge, port: int, timeout: float = 5) -> dict:
    """The edge's latest cumulative counters (its stats topic)."""
    got = {}
    client = publisher(port)
    client.on_message = lambda c, u, m: got.update(json.loads(m.payload)["totals"])
    client.subscribe("ans/v1/edge/+/stats")
    deadline = time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    return got


# -- scenarios --

def load(ctx, devices: int, frames: int) -> dict:
    with ctx.broker() as port:
        edge = Edge(ctx.bundle, port, ctx.work)
        runs = [Device(ctx.bundle, ctx.clip, port, ctx.work, f"load-{k}", "--policy", "edge-only", "--frames",
                       str(frames), "--loop", "--emulate-slowdown", "5") for k in range(devices)]
        for d in runs:
            d.proc.wait(600)
        results = [d.stop() for d in runs]
        edge.stop()
    per = [summary(r) for r in results]
    return {"devices": devices, "frames_expected": devices * frames, "frames_answered": sum(p["frames"] for p in per),
            "by_edge": sum(p["by_edge"] for p in per), "lost": devices * frames - sum(p["frames"] for p in per),
            "p50_ms": [p["p50_ms"] for p in per], "p99_ms": [p["p99_ms"] for p in per]}


def edge_kill(ctx) -> dict:
    with ctx.broker() as port:
        edge = Edge(ctx.bundle, port, ctx.work)
        dev = Device(ctx.bundle, ctx.clip, port, ctx.work, "kill", "--policy", "edge-only", "--loop",
                     "--emulate-slowdown", "10", "--deadline-ms", "1000")
        dev.wait_frames(30)
        edge.proc.kill()
        killed = time.monotonic()
        edge = Edge(ctx.bundle, port, ctx.work, "edge-2")
        back = time.monotonic()
        resumed = _first_after(dev, back, "edge-2", 120)
        records = dev.stop()
        edge.stop()
    return {**summary(records), "edge_restart_s": round(back - killed, 2), "resumed_after_edge_up_s": resumed}


def _first_after(dev: Device, since: float, edge: str | None, timeout: float) -> float | None:
    """Seconds from ``since`` to the first frame answered by ``edge`` (any edge for None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t, r in list(dev.seen):
            if t >= since and r.edge and (edge is None or r.edge == edge):
                return round(t - since, 2)
        time.sleep(0.02)
    return None


def broker_outage(ctx, seconds: float) -> dict:
    broker = Broker(CONFIG, ctx.work / f"outage-{seconds}")
    broker.start()
    try:
        edge = Edge(ctx.bundle, broker.port, ctx.work)
        dev = Device(ctx.bundle, ctx.clip, broker.port, ctx.work, f"outage-{seconds:g}", "--policy", "edge-only",
                     "--loop", "--emulate-slowdown", "10", "--deadline-ms", "1000")
        dev.wait_frames(20)
        broker.proc.kill()
        broker.proc.wait()
        time.sleep(seconds)
        broker.start()
        resumed = _first_after(dev, time.monotonic(), None, 60)
        dev.wait_frames(len(dev.seen) + 10)
        records = dev.stop()
        edge.stop()
    finally:
        broker.stop()
    return {**summary(records), "outage_s": seconds, "resumed_after_broker_back_s": resumed}


def flood(ctx, kind: str, rate: int, frames: int) -> dict:
    """A victim's delays alone, then while one client floods its own request topic with ``rate``
    messages per second (junk, or valid requests the edge must run), through the shipped broker
    config."""
    from common.bundle import read_manifest
    from lab.local_broker import started
    from mqtt.codec import encode
    from mqtt.protocol import Request, bundle_hash_bytes, encode_request

    manifest = read_manifest(ctx.bundle)
    split = manifest.splits[len(manifest.splits) // 2]
    xs = [np.zeros(shape, np.float32) for shape in split.shapes]
    valid = encode_request(Request(1, split.index, bundle_hash_bytes(manifest.model.content_hash),
                                   tuple(x.shape for x in xs)), [encode(x, "float32")[0] for x in xs])
    out = {"kind": kind, "rate_per_s": rate}
    with started(dev_config(), ctx.work / f"flood-{kind}-{rate}") as broker:
        edge = Edge(ctx.bundle, broker.port, ctx.work)
        for phase in ("alone", "flooded"):
            stop, sent = threading.Event(), [0]
            if phase == "flooded":
                client = publisher(broker.port)

                def spam():
                    tick = time.monotonic()
                    while not stop.is_set():  # rate/100 messages every 10 ms
                        for _ in range(max(1, rate // 100)):
                            client.publish("ans/v1/device/flooder/request",
                                           valid if kind == "valid" else os.urandom(random.randint(1, 200)), qos=0)
                            sent[0] += 1
                        tick += 0.01
                        time.sleep(max(0.0, tick - time.monotonic()))
                threading.Thread(target=spam, daemon=True).start()
            dev = Device(ctx.bundle, ctx.clip, broker.port, ctx.work, f"victim-{kind}-{rate}-{phase}", "--policy",
                         "edge-only", "--frames", str(frames), "--emulate-slowdown", "5", "--deadline-ms", "1000")
            dev.proc.wait(600)
            stop.set()
            out[phase] = summary(dev.stop())
            if phase == "flooded":
                client.loop_stop()
                client.disconnect()
                out["flood_messages"] = sent[0]
        out["edge_exit"] = edge.stop()
        out["edge_warning_lines"] = len(edge.lines())
    out["p99_ratio"] = round(out["flooded"]["p99_ms"] / out["alone"]["p99_ms"], 2)
    return out


def malformed(ctx, count: int) -> dict:
    """Two bursts of ``count`` distinct malformed requests: memory after the first (allocator
    arenas, buffers) and what the second adds (what a flood would keep)."""
    with ctx.broker() as port:
        edge = Edge(ctx.bundle, port, ctx.work)
        client = publisher(port)
        time.sleep(2)  # the edge's idle warm-up (tracing tails) is over
        rss = [rss_mb(edge.proc.pid)]
        took = []
        for burst in range(2):
            started = time.monotonic()
            for k in range(burst * count, (burst + 1) * count):  # every message different: length and content
                client.publish(f"ans/v1/device/junk-{k % 1000}/request",
                               b"ANS1" + k.to_bytes(8, "little") * (1 + k % 7), qos=0)
                if k % 500 == 0:
                    time.sleep(0.002)
            deadline, totals = time.monotonic() + 300, {}
            while time.monotonic() < deadline and totals.get("errors", 0) < (burst + 1) * count:
                totals = edge_totals(edge, port)
            took.append(time.monotonic() - started)
            rss.append(rss_mb(edge.proc.pid))
        lines = edge.lines()
        client.loop_stop()
        client.disconnect()
        code = edge.stop()
    return {"messages": 2 * count, "counted_errors": totals.get("errors", 0), "rss_mb": [round(r, 1) for r in rss],
            "growth_first_mb": round(rss[1] - rss[0], 1), "growth_second_mb": round(rss[2] - rss[1], 1),
            "handled_per_s": round(count / took[1]), "log_lines": len(lines), "edge_exit": code}


def fuzz(ctx, count: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    alphabet = "abcXYZ019-_ é漢🙂+#/"  # no control characters: the broker disconnects a client that sends them
    with ctx.broker() as port:
        edge = Edge(ctx.bundle, port, ctx.work)
        client = publisher(port)
        matching = 0
        for k in range(count):
            level = "".join(rng.choice(alphabet) for _ in range(rng.choice((0, 1, 8, 64, 65, 200))))
            topic = f"ans/v1/device/{level}/request"
            if "+" in level or "#" in level:  # not a valid PUBLISH topic: the client library refuses it
                level = level.replace("+", "p").replace("#", "h")
                topic = f"ans/v1/device/{level}/request"
            matching += "/" not in level
            client.publish(topic, rng.randbytes(rng.choice((0, 4, 60, 300))), qos=0)
            if k % 500 == 0:
                time.sleep(0.002)
        deadline = time.monotonic() + 120
        totals = {}
        while time.monotonic() < deadline and totals.get("errors", 0) + totals.get("unanswerable", 0) < matching:
            totals = edge_totals(edge, port)
        alive = edge.proc.poll() is None
        client.loop_stop()
        client.disconnect()
        code = edge.stop()
    return {"messages": count, "reaching_the_edge": matching, "errors": totals.get("errors", 0),
            "unanswerable": totals.get("unanswerable", 0), "alive_after": alive, "edge_exit": code,
            "log_lines": len(edge.lines())}


# -- an attacker inside the fleet: the shipped production broker config, password logins --

USERS = [("device", "victim", "pw-victim"), ("device", "attacker", "pw-attacker"), ("edge", "edge-1", "pw-edge")]


@contextlib.contextmanager
def production(ctx, name: str, bind_ids: bool = True):
    """The production broker (``bind_ids=False``: without ``use_username_as_clientid``, as it was
    shipped before), an edge and the user files; yields (broker, env of the victim device)."""
    from lab.local_broker import Broker
    from lab.production_broker import production_config

    work = ctx.work / name
    config = production_config(work, USERS).config
    if not bind_ids:
        config = config.replace("use_username_as_clientid true", "")
    for _, user, pw in USERS:
        (work / f"{user}.pw").write_text(pw + "\n")
    broker = Broker(config, work)
    broker.start()
    edge = Edge(ctx.bundle, broker.port, ctx.work, env={"ANS_EDGE_MQTT__USERNAME": "edge-1",
                                                        "ANS_EDGE_MQTT__PASSWORD_FILE": str(work / "edge-1.pw")})
    try:
        yield broker, {"ANS_DEVICE_MQTT__USERNAME": "victim", "ANS_DEVICE_MQTT__PASSWORD_FILE": str(work / "victim.pw")}
    finally:
        edge.stop()
        broker.stop()


def victim(ctx, broker, env: dict, name: str, frames: int) -> Device:
    return Device(ctx.bundle, ctx.clip, broker.port, ctx.work, name, "--policy", "edge-only", "--frames", str(frames),
                  "--loop", "--emulate-slowdown", "5", "--deadline-ms", "1000", env=env, device_id="victim")


def takeover(ctx, bind_ids: bool) -> dict:
    """Another logged-in device connects 10 times in 10 s with the victim's client id, then 8 times
    in 10 s with the edge's."""
    import re

    with production(ctx, f"takeover-{bind_ids}", bind_ids) as (broker, env):
        dev = victim(ctx, broker, env, f"takeover-{bind_ids}", 100_000)
        dev.wait_frames(20)
        # The ids the broker knows them by (its log says them; an attacker on the network learns
        # them as easily): the user name when ids are bound, else the app's id with a random suffix.
        ids = dict((user, cid) for cid, user in re.findall(r"as (\S+) \(p\d, c\d, k\d+, u'([^']+)'\)",
                                                          broker.log.read_text()))
        for user, count in (("victim", 10), ("edge-1", 8)):
            for _ in range(count):
                c = publisher(broker.port, ("attacker", "pw-attacker"), client_id=ids[user], wait=True)
                time.sleep(10 / count)
                c.loop_stop()
                c.disconnect()
        dev.wait_frames(len(dev.seen) + 20)
        records = dev.stop()
        closed = broker.log.read_text().count("already connected, closing old connection")
    return {"client_ids_bound": bind_ids, **summary(records), "sessions_closed_by_the_broker": closed}


def big_packets(ctx, frames: int) -> dict:
    """The victim alone, then while another device publishes 30 MB of junk about 10 times a second
    on its own request topic, and stores 20 retained 8 MB messages under the discovery prefix
    (and as big as it may on its own retained topics); the broker's memory throughout."""
    out = {}
    with production(ctx, "big-packets") as (broker, env):
        base = rss_mb(broker.proc.pid)
        out["alone"] = summary(victim(ctx, broker, env, "big-alone", frames).stop_when_done())
        stop, flooding, peak, sent = threading.Event(), threading.Event(), [base], [0]

        def attack():
            """Retained messages as big as its own topics take, 20 of 8 MB under the discovery prefix,
            then 30 MB of junk about 10 times a second; a fresh connection whenever the broker
            closes one (it does at every packet over its limit)."""
            c = None
            near_limit, retained, junk = (os.urandom(4 * 2**20 - 64 * 2**10), os.urandom(8 * 2**20),
                                          os.urandom(30 * 2**20))
            plan = [(f"ans/v1/device/attacker/{t}", near_limit, True) for t in ("status", "objects", "snapshot")] + \
                [("homeassistant/device/ans_attacker/config", near_limit, True)] + \
                [(f"homeassistant/sensor/ans_attacker/junk{k}/config", retained, True) for k in range(20)]
            while not stop.is_set():
                if not plan:
                    flooding.set()
                topic, payload, retain = plan.pop(0) if plan else ("ans/v1/device/attacker/request", junk, False)
                if c is None or not c.is_connected():
                    if c is not None:
                        c.loop_stop()
                    c = publisher(broker.port, ("attacker", "pw-attacker"), wait=True)
                c.publish(topic, payload, qos=0, retain=retain)
                sent[0] += not retain
                time.sleep(0.1)
            c.loop_stop()
            c.disconnect()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb(broker.proc.pid))
                time.sleep(0.05)
        for target in (attack, watch):
            threading.Thread(target=target, daemon=True).start()
        if not flooding.wait(300):
            raise RuntimeError("the attacker did not get through its retained messages")
        out["attacked"] = summary(victim(ctx, broker, env, "big-attacked", frames).stop_when_done())
        stop.set()
        time.sleep(0.5)
        out.update(broker_rss_mb_before=round(base, 1), broker_rss_mb_peak=round(peak[0], 1),
                   broker_rss_mb_after=round(rss_mb(broker.proc.pid), 1), packets_of_30mb_tried=sent[0])
    out["p99_ratio"] = round(out["attacked"]["p99_ms"] / out["alone"]["p99_ms"], 2)
    return out


def many_connections(ctx, frames: int) -> dict:
    """One device user opens 1,000 connections, then 4 of them flood its request topic with junk at
    5,000 messages a second each, while the victim runs."""
    out = {}
    with production(ctx, "many-connections") as (broker, env):
        out["alone"] = summary(victim(ctx, broker, env, "many-alone", frames).stop_when_done())
        began = time.monotonic()
        opened = [publisher(broker.port, ("attacker", "pw-attacker"), loop=False) for _ in range(1000)]
        out["opening_s"] = round(time.monotonic() - began, 1)
        for c in opened[-4:]:  # these four reconnect whenever they are closed, and flood
            c.loop_start()
        stop = threading.Event()

        def flood(c):
            tick = time.monotonic()
            while not stop.is_set():
                for _ in range(50):
                    c.publish("ans/v1/device/attacker/request", os.urandom(100), qos=0)
                tick += 0.01
                time.sleep(max(0.0, tick - time.monotonic()))
        for c in opened[-4:]:
            threading.Thread(target=flood, args=(c,), daemon=True).start()
        out["attacked"] = summary(victim(ctx, broker, env, "many-attacked", frames).stop_when_done())
        stop.set()
        for c in opened[-4:]:
            c.loop_stop()
        for c in opened:
            c.disconnect()
        out["sessions_closed_by_the_broker"] = broker.log.read_text().count("already connected, closing old")
        out["broker_rss_mb"] = round(rss_mb(broker.proc.pid), 1)
    out["p50_ratio"] = round(out["attacked"]["p50_ms"] / out["alone"]["p50_ms"], 2)
    out["p99_ratio"] = round(out["attacked"]["p99_ms"] / out["alone"]["p99_ms"], 2)
    return out


class Context:
    def __init__(self, work: Path):
        from common.scenes import make_clip
        from converter.bundle import convert
        from converter.zoo import demo_decoding, demo_model

        self.work = work
        self.bundle, self.clip = work / "bundle", work / "clip.avi"
        convert(demo_model(), self.bundle, log=lambda *_: None, decoding=demo_decoding())
        make_clip(self.clip, frames=150, width=320, height=240)

    @contextlib.contextmanager
    def broker(self):
        """A private Mosquitto for one scenario; yields its port."""
        from lab.local_broker import started

        with started(CONFIG, self.work / f"broker-{uuid.uuid4().hex[:6]}") as broker:
            yield broker.port


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = [k for k in results if k.startswith("flood")]
    for i, name in enumerate(names):
        r = results[name]
        axes[0].bar([i * 3, i * 3 + 1], [r["alone"]["p99_ms"], r["flooded"]["p99_ms"]], color=["tab:blue", "tab:red"])
    axes[0].set_xticks([i * 3 + 0.5 for i in range(len(names))], [n.replace("flood ", "").replace(" ", "\n")
                                                                    for n in names], fontsize=8)
    axes[0].set_yscale("log")
    swatches = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("tab:blue", "tab:red")]
    axes[0].legend(handles=swatches,
                   labels=["victim alone", "while one client floods"], fontsize=8)
    axes[0].set_ylabel("victim p99 delay (ms)")
    axes[0].set_title("a flooding client and a victim device")
    outages = [k for k in results if k.startswith("broker")]
    axes[1].bar(range(len(outages)), [results[k]["resumed_after_broker_back_s"] or 0 for k in outages])
    axes[1].set_xticks(range(len(outages)), outages)
    axes[1].set_ylabel("s from its return to the first offloaded frame")
    axes[1].set_title("broker killed (-9) and restarted")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-faults")
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only the scenarios whose names start so")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scale = 10 if args.quick else 1
    results = {}
    work = out / "work"  # logs of every process, kept for a look
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    ctx = Context(work)
    steps = [("load", lambda: load(ctx, 4, 150 // scale)),
             ("edge killed", lambda: edge_kill(ctx)),
             ("broker 2 s", lambda: broker_outage(ctx, 2)),
             ("broker 10 s", lambda: broker_outage(ctx, 10)),
             *[(f"flood junk {r}/s", lambda r=r: flood(ctx, "junk", r, 150 // scale)) for r in (1000, 5000, 20000)],
             *[(f"flood valid {r}/s", lambda r=r: flood(ctx, "valid", r, 150 // scale)) for r in (100, 1000)],
             ("malformed", lambda: malformed(ctx, 200_000 // scale)),
             ("fuzz", lambda: fuzz(ctx, 100_000 // scale)),
             ("takeover", lambda: takeover(ctx, True)),
             ("takeover, ids not bound", lambda: takeover(ctx, False)),
             ("30 MB packets", lambda: big_packets(ctx, 600 // scale)),
             ("1,000 connections", lambda: many_connections(ctx, 150 // scale))]
    if args.only:
        steps = [(name, step) for name, step in steps if any(name.startswith(o) for o in args.only)]
    for k, (name, step) in enumerate(steps, 1):
        started = time.monotonic()
        print(f"[{k}/{len(steps)}] {name} ...", file=sys.stderr, flush=True)
        results[name] = step()
        print(f"    {time.monotonic() - started:.0f} s: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    saved = out / "faults.json"
    if args.only and saved.is_file():  # a partial run updates the scenarios it ran
        results = {**json.loads(saved.read_text()), **results}
    saved.write_text(json.dumps(results, indent=1))
    plot(results, out / "faults.png")
    for name, r in results.items():
        print(f"{name:12s} {json.dumps(r)}")


if __name__ == "__main__":
    main()
