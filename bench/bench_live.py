"""The live testbed: the real system (Mosquitto, an edge process, a device with an emulated slow
board) through scripted changes of its environment, every policy and every forced split through
the same schedule. Needs root (network namespace, tc, CPU pinning).

The broker and the edge run in a network namespace behind a veth pair whose rate ``tc tbf`` sets,
pinned to core 1; the device runs here, pinned to core 0, its heads and encodings 30x slower (a
board), and
reaches the broker through a relay that delays every packet (added round-trip time). Every run
starts with ``--warmup`` unscored frames in the baseline conditions (connection, first answers,
a learner's cold start), so what is scored is adaptation. Scenarios, each ``--frames`` scored
frames in three phases (the change at 1/3, back at 2/3):

* ``bandwidth``: 100 -> 4 -> 100 Mbit/s;
* ``narrow``: 100 -> 1 -> 100 Mbit/s (where the input even as a JPEG takes longer than the board's
  whole model);
* ``rtt``: +0 -> +80 ms round trip (the relay) -> +0;
* ``overload``: two CPU hogs beside the edge (its tails about 3x slower), then none;
* ``edge-restart``: the edge is killed at 1/3 and started again at once (back when warm);
* ``broker-restart``: the broker is stopped at 1/3 for 2 s;
* ``steady``: nothing changes (how often the learner raises a change alarm in steady state);
* ``drift``: from frame 100 the link slides 100 -> 40 -> 16 -> 8 -> 4 -> 2 Mbit/s over 64 frames,
  stays at 2 Mbit/s and comes back to 100 Mbit/s at frame 200 (of 300);
* ``outliers``: ``bandwidth`` with 5% of the frames made single outliers (150 ms more round trip
  for one frame, about 4x a frame's delay);
* ``random-SEED`` (``--random N --first-seed S``): the random schedule of that seed
  (``lab/random_schedule.py``: steps and drifts of bandwidth, round trip and edge load, outlier
  frames, an edge or broker restart); edge load maps to 0-3 CPU hogs beside the edge.

Policies (``--policies``): ``ans``, ``mu-linucb-paper``, ``device-only``, ``edge-only``, and the live
oracle: every split forced through the same schedule (every arm, a split with a codec, with
``--codec auto --learn-codec``), the best one per phase (fixed scenarios) or
per stretch between changes of at least 30 frames (drift, random). Per scenario it reports mean and
p95 delay per policy and phase, the ratio to the live oracle, the frames each policy takes after
each change to come back within 1.2x of the new best split's delay (rolling median of 5 frames),
the learner's change alarms (all, and in the baseline: the frames before the first change), and a
plot (``--out``/live-<scenario>.png: chosen split and delay over time, the oracle's split). The
forced splits' frames are kept as a trace (``trace-<scenario>.json.gz`` in the run's folder) that
``bench/replay_live.py`` replays any learner through offline (``lab/live_replay.py``).

    sudo .venv/bin/python bench/bench_live.py [--scenarios bandwidth rtt ...] [--random N --first-seed S]
        [--frames 300] [--warmup 60] [--policies ans ...] [--codec int2 --image-codec jpeg | --codec auto [--learn-codec]]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from lab.live_replay import DEADLINE_S, from_records  # noqa: E402
from lab.testbed import NS, NS_IP, CpuHog, DelayRelay, Link, pin_this_process  # noqa: E402
from mqtt.codec import CODECS, IMAGE_CODECS  # noqa: E402

POLICIES = ("ans", "mu-linucb-paper", "device-only", "edge-only")
HIGH_MBIT, LOW_MBIT, NARROW_MBIT, RTT_ADDED_S = 100.0, 4.0, 1.0, 0.080
DRIFT_MBIT, DRIFT_FROM, DRIFT_BACK = (40.0, 16.0, 8.0, 4.0, 2.0), 100, 200  # steps over 64 frames
OUTLIER_S, OUTLIER_SHARE = 0.150, 0.05  # an outlier frame: this much more round trip
MIN_STRETCH = 30  # frames: the live oracle's shortest stretch between changes (drift, random)
EDGE_CORE, DEVICE_CORE = 1, 0


class System:
    """Broker and edge behind the link, the relay in front; the changes a schedule makes."""

    def __init__(self, work: Path, bundle: Path, link: Link):
        from lab.local_broker import Broker, dev_config

        self.work, self.bundle, self.link = work, bundle, link
        self.wrapper = ("ip", "netns", "exec", NS, "taskset", "-c", str(EDGE_CORE))
        self.broker = Broker(dev_config(), work / "broker", host=NS_IP, wrapper=self.wrapper)
        self.broker.start()
        self.relay = DelayRelay(NS_IP, self.broker.port).__enter__()
        self.hog = CpuHog(EDGE_CORE, 2)
        self.hogs = 0  # how many the random schedules' edge load runs
        self.rtt_added_s = 0.0
        self.edge: subprocess.Popen | None = None
        self.busy: list[threading.Thread] = []
        self.start_edge()

    @property
    def device_broker(self) -> str:
        return f"mqtt://127.0.0.1:{self.relay.port}"

    def start_edge(self) -> None:
        from lab.demo import start_edge

        self.edge = start_edge(self.bundle, self.broker.url, self.work / "edge.log", self.wrapper)

    def stop_edge(self) -> None:
        if self.edge is not None:
            self.edge.kill()
            self.edge.wait(30)
            self.edge = None

    def edge_online(self) -> bool:
        """The edge's retained status says online (it says so only once its tails are warm)."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        said: list[bytes] = []
        got = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"live-probe-{os.getpid()}", protocol=mqtt.MQTTv5)
        client.on_connect = lambda c, u, f, rc, p: c.subscribe("ans/v1/edge/+/status", qos=1)
        client.on_message = lambda c, u, m: (said.append(m.payload), got.set())
        try:
            client.connect(NS_IP, self.broker.port)
        except OSError:
            return False
        client.loop_start()
        got.wait(2.0)
        client.disconnect()
        client.loop_stop()
        return bool(said) and said[-1] == b"online"

    def in_background(self, action) -> None:
        thread = threading.Thread(target=action, daemon=True)
        thread.start()
        self.busy.append(thread)

    def set_rtt(self, added_s: float) -> None:
        self.rtt_added_s = added_s
        self.relay.delay_s = added_s / 2

    def outlier(self, on: bool) -> None:
        """One frame's worth of hiccup: ``OUTLIER_S`` more round trip while ``on``."""
        self.relay.delay_s = (self.rtt_added_s + (OUTLIER_S if on else 0.0)) / 2

    def set_load(self, slowdown: float) -> None:
        """A random schedule's edge slowdown as CPU hogs beside the edge: 0 below 1.5x, 1 below 4x,
        2 below 10x, 3 beyond (two hogs make its tails about 3x slower)."""
        count = 0 if slowdown < 1.5 else 1 if slowdown < 4 else 2 if slowdown < 10 else 3
        if count != self.hogs:
            self.hog.stop()
            self.hog.count, self.hogs = count, count
            if count:
                self.hog.start()

    def restart_broker(self) -> None:
        self.broker.stop()
        time.sleep(2.0)
        self.broker.start()

    def reset(self) -> None:
        """The baseline, before every run: link fast, no added delay, no hogs, broker and a warm edge up."""
        for thread in self.busy:
            thread.join(60)
        self.busy = []
        self.link.shape(HIGH_MBIT)
        self.set_rtt(0.0)
        self.hog.stop()
        self.hog.count, self.hogs = 2, 0
        if self.broker.proc is None:
            self.broker.start()
        if self.edge is None or self.edge.poll() is not None:
            self.start_edge()
        deadline = time.monotonic() + 120
        while not self.edge_online():
            if time.monotonic() > deadline:
                raise OSError("the edge did not come online in 120 s")
            time.sleep(0.5)

    def close(self) -> None:
        self.hog.stop()
        self.stop_edge()
        self.relay.__exit__()
        self.broker.stop()


def schedule(scenario: str, frames: int, system: System) -> dict[int, object]:
    """What happens before which scored frame."""
    from lab.random_schedule import named

    third = frames // 3
    drawn = named(scenario, frames)
    if drawn is not None:
        return random_events(drawn, system)
    if scenario == "steady":
        return {}
    if scenario == "drift":
        steps = {DRIFT_FROM + 16 * k: mbit for k, mbit in enumerate(DRIFT_MBIT)}
        return {**{f: (lambda m=m: system.link.shape(m)) for f, m in steps.items()},
                DRIFT_BACK: lambda: system.link.shape(HIGH_MBIT)}
    if scenario == "outliers":
        events = schedule("bandwidth", frames, system)
        rng = np.random.default_rng(0)
        for f in rng.choice(np.arange(1, frames - 1), size=int(OUTLIER_SHARE * frames), replace=False):
            _then(events, int(f), lambda: system.outlier(True))
            _then(events, int(f) + 1, lambda: system.outlier(False))
        return events
    if scenario in ("bandwidth", "narrow"):
        low = LOW_MBIT if scenario == "bandwidth" else NARROW_MBIT
        return {third: lambda: system.link.shape(low), 2 * third: lambda: system.link.shape(HIGH_MBIT)}
    if scenario == "rtt":
        return {third: lambda: system.set_rtt(RTT_ADDED_S), 2 * third: lambda: system.set_rtt(0.0)}
    if scenario == "overload":
        return {third: system.hog.start, 2 * third: system.hog.stop}
    if scenario == "edge-restart":
        return {third: lambda: (system.stop_edge(), system.in_background(system.start_edge))}
    if scenario == "broker-restart":
        return {third: lambda: system.in_background(system.restart_broker)}
    raise ValueError(scenario)


def _then(events: dict, frame: int, action) -> None:
    """Add ``action`` to what happens before ``frame`` (after what is there already)."""
    before = events.get(frame)
    events[frame] = action if before is None else (lambda: (before(), action()))


def random_events(drawn, system: System) -> dict[int, object]:
    """A random schedule's changes (``lab.random_schedule.Schedule``) as the system's actions."""
    actions = {
        "bandwidth_mbps": system.link.shape,
        "rtt_added_ms": lambda v: system.set_rtt(v / 1e3),
        "edge_slowdown": system.set_load,
        "outlier": lambda v: system.outlier(True),
        "edge-restart": lambda v: (system.stop_edge(), system.in_background(system.start_edge)),
        "broker-restart": lambda v: system.in_background(system.restart_broker),
    }
    events: dict[int, object] = {}
    for change in drawn.changes:
        _then(events, change.frame, lambda c=change: actions[c.kind](c.value))
        if change.kind == "outlier":
            _then(events, change.frame + 1, lambda: system.outlier(False))
    return events


def stretches(scenario: str, frames: int) -> list[tuple[int, int]]:
    """The live oracle's stretches: the phases of a fixed scenario; for drift and random schedules,
    the frames between changes of the conditions, merged to at least ``MIN_STRETCH`` frames."""
    from lab.random_schedule import named

    third = frames // 3
    drawn = named(scenario, frames)
    if scenario == "drift":
        cuts = [DRIFT_FROM + 16 * k for k in range(len(DRIFT_MBIT))] + [DRIFT_BACK]
    elif drawn is not None:
        cuts = sorted({c.frame for c in drawn.changes if c.kind != "outlier"})
    elif scenario == "steady":
        return [(0, frames)]
    else:
        return [(0, third), (third, 2 * third), (2 * third, frames)]
    out: list[tuple[int, int]] = []
    start = 0
    for cut in [*cuts, frames]:
        if cut - start >= MIN_STRETCH and frames - cut >= MIN_STRETCH or cut == frames:
            out.append((start, cut))
            start = cut
    return out


def undominated(bundle: Path) -> list[int]:
    """Splits worth forcing: a split whose next split only adds a max-pool (no MACs to speak of) and
    sends no more bytes can never be better than it by more than that pool's time."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    splits, keep = manifest["splits"], []
    for k, split in enumerate(splits):
        nxt = splits[k + 1] if k + 1 < len(splits) else None
        if (nxt is not None and k > 0 and any("pool" in t["name"] for t in nxt["tensors"])
                and nxt["transfer_bytes"] <= split["transfer_bytes"]):
            continue
        keep.append(k)
    return keep


def run_one(name: str, policy, system: System, frames: list, events: dict, state: Path, warmup: int,
            calibration: Path, codecs: tuple[str, str, bool] = ("float32", "uint8", False)) -> list[dict]:
    """One contender through the schedule; the scored records (frames renumbered from 0). Every
    contender starts from the same calibration of the heads and encodings (measured once, in the
    folder ``calibration``): with heads 30x slower, calibrating again per run would give each a
    slightly different board."""
    from device_app.learner.policy import FixedSplit
    from device_app.runtime import make_device
    from device_app.settings import DeviceSettings
    from mqtt.connection import MqttSettings

    system.reset()
    state.mkdir(parents=True, exist_ok=True)
    for cached in ("calibration.json", "encoding.json"):
        shutil.copy(calibration / cached, state / cached)
    # One interpreter thread: the device has one core (more threads on it only fight each other).
    device = make_device(DeviceSettings(
        bundle=str(system.bundle), id=f"live-{name}", deadline_ms=DEADLINE_S * 1e3, emulate_slowdown=30.0, threads=1,
        codec=codecs[0], image_codec=codecs[1], learn_codec=codecs[2],
        policy=policy if isinstance(policy, str) else "device-only", state_dir=str(state),
        mqtt=MqttSettings(broker=system.device_broker)))
    if not isinstance(policy, str):
        device.policy = FixedSplit(device.policy.profile, policy, name)
    device.connect()
    arm_of = {pair: a for a, pair in enumerate(device.model.arms.pairs())}
    records = []
    try:
        for k, frame in enumerate(frames[:warmup] + frames):
            if k - warmup in events:
                events[k - warmup]()
            record = device.process(k, frame)
            if k >= warmup:
                records.append({**asdict(record), "frame": k - warmup,
                                "arm": arm_of.get((record.split, record.codec), len(arm_of) - 1),
                                "alarms": device.policy.stats().get("changes", 0)})
    finally:
        device.link.close()
        device.model.runner = None  # this run's interpreters and their threads go now, not when the GC finds them
        del device
        gc.collect()
    return records


def learner_arms(bundle: Path, codec: str, image_codec: str, learn_codec: bool):
    """The arms a device's learner has with these codecs (``codec_choice.Arms``: a split and a codec
    each, several per split with ``auto``), and their contexts (each priced with its codec's bytes)."""
    from common.bundle import Bundle
    from device_app.codec_choice import wire_arms
    from device_app.learner.profile import load_profile
    from device_app.settings import DeviceSettings

    arms = wire_arms(Bundle(bundle), codec, image_codec, DeviceSettings(bundle=str(bundle)).max_map_loss, learn_codec)
    return arms, load_profile(bundle / "manifest.json", arms=arms.pairs()).contexts


def calibrate_once(bundle: Path, folder: Path, arms) -> Path:
    """The device's calibration of every split's head and every arm's encoding (one interpreter
    thread, on the device's core), in ``folder``."""
    from common.bundle import Bundle
    from common.tflite import SegmentRunner
    from device_app.heads import calibrate, encode_times
    from mqtt.codec import split_ranges

    folder.mkdir(parents=True, exist_ok=True)
    b = Bundle(bundle)
    runner = SegmentRunner(b, None, 1, fused_heads=1)
    calibrate(runner, repeats=21, cache=folder / "calibration.json", log=lambda *_: None)
    encode_times(runner, arms, split_ranges(b), float(b.manifest.model.preprocessing.scale), repeats=21,
                 cache=folder / "encoding.json")
    return folder


def recovery(delays: np.ndarray, start: int, end: int, target: float) -> int | None:
    """Frames after ``start`` until the rolling median of 5 is within 1.2x ``target`` (None: never)."""
    for k in range(start, end - 4):
        if np.median(delays[k:k + 5]) <= 1.2 * target:
            return k - start
    return None


def summarise(runs: dict[str, list[dict]], n_splits: int, phases: list[tuple[int, int]], baseline: int,
              policies=POLICIES) -> dict:
    """``baseline``: scored frames before the first change of the conditions."""
    delays = {name: np.array([r["delay_s"] for r in records]) * 1e3 for name, records in runs.items()}
    forced = {k: delays[f"split-{k}"] for k in range(n_splits) if f"split-{k}" in delays}
    oracle_split = [min(forced, key=lambda k: forced[k][a:b].mean()) for a, b in phases]
    oracle_mean = [float(forced[k][a:b].mean()) for k, (a, b) in zip(oracle_split, phases)]
    oracle_total = float(np.mean(np.concatenate([forced[k][a:b] for k, (a, b) in zip(oracle_split, phases)])))
    out = {"oracle": {"split_per_phase": oracle_split, "phase_mean_ms": oracle_mean, "mean_ms": oracle_total}}
    for name in policies:
        if name not in delays:
            continue
        d = delays[name]
        alarms = [r["alarms"] for r in runs[name]]
        out[name] = {
            "mean_ms": float(d.mean()), "p95_ms": float(np.percentile(d, 95)),
            "ratio_to_oracle": float(d.mean() / oracle_total),
            "phase_mean_ms": [float(d[a:b].mean()) for a, b in phases],
            "phase_p95_ms": [float(np.percentile(d[a:b], 95)) for a, b in phases],
            "frames_to_recover": [recovery(d, a, b, m) for (a, b), m in zip(phases[1:], oracle_mean[1:])],
            "fallbacks": int(sum(r["fallback"] for r in runs[name])),
            "alarms": int(alarms[-1] - alarms[0]),
            "baseline_alarms": int(alarms[max(baseline - 1, 0)] - alarms[0]), "baseline_frames": baseline,
        }
    return out


def plot(scenario: str, runs: dict, summary: dict, phases: list[tuple[int, int]], n_splits: int, path: Path,
         policies=POLICIES, what: str = "split") -> None:
    """``what`` the contenders force: a split, or an arm (a split with a codec)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [p for p in policies if p in runs]
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 2.2 * len(shown) + 0.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    oracle_line = np.concatenate([[s] * (b - a) for s, (a, b) in zip(summary["oracle"]["split_per_phase"], phases)])
    twins = []
    for ax, name in zip(axes, shown):
        records = runs[name]
        x = [r["frame"] for r in records]
        colours = ["tab:blue" if r["edge"] else "tab:red" if r["fallback"] else "tab:gray" for r in records]
        ax.scatter(x, [r["delay_s"] * 1e3 for r in records], c=colours, s=5, zorder=3)
        ax.set_yscale("log")
        ax.set_ylabel(f"{name}\ndelay (ms)", fontsize=8)
        twin = ax.twinx()
        twins.append(twin)
        twin.step(x, oracle_line, where="post", color="green", lw=2.5, alpha=0.45, label=f"live oracle's {what}")
        twin.plot(x, [r["arm"] for r in records], color="k", lw=0.7, label=f"chosen {what}")
        twin.set_ylim(-0.5, n_splits - 0.5)
        twin.set_yticks(range(0, n_splits, 3))
        twin.set_ylabel(what, fontsize=8)
        for change, _ in phases[1:]:
            ax.axvline(change, color="orange", lw=1.5, zorder=0)
        s = summary[name]
        ax.set_title(f"{name}: mean {s['mean_ms']:.1f} ms ({s['ratio_to_oracle']:.2f}x the live oracle)",
                     fontsize=8, loc="left")
    twins[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"live testbed: {scenario} (orange: the changes). Dots: delay; blue edge, red fallback, grey device",
                 fontsize=9)
    axes[-1].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=["bandwidth", "rtt", "overload", "edge-restart",
                                                           "broker-restart"])
    parser.add_argument("--frames", type=int, default=300, help="scored frames per run (three phases)")
    parser.add_argument("--warmup", type=int, default=60, help="unscored frames before them, in the baseline")
    parser.add_argument("--splits", type=int, nargs="+",
                        help="the live oracle's candidates, device-only always among them (default: every split "
                             "that no other split dominates: not a split whose next one only max-pools and sends less)")
    parser.add_argument("--random", type=int, default=0, metavar="N",
                        help="instead of --scenarios, N random schedules, seeds --first-seed on")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--codec", default="float32", choices=(*CODECS, "auto"),
                        help="every contender's cut-tensor codec (auto: per split, as a device with codec = auto "
                             "chooses from the bundle's codec report, made at conversion)")
    parser.add_argument("--learn-codec", action="store_true",
                        help="with --codec auto: a second codec per split (the cheapest to encode), the learner choosing "
                             "between them (learn_codec in a device's settings)")
    parser.add_argument("--image-codec", default="uint8", choices=IMAGE_CODECS,
                        help="every contender's codec for split 0's input image")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args()
    from lab.random_schedule import names

    scenarios = names(args.first_seed, args.random) if args.random else args.scenarios
    if os.geteuid() != 0:
        sys.exit("bench/bench_live.py needs root (network namespace, tc, CPU pinning)")
    pin_this_process(DEVICE_CORE)
    from device_app.sources import demo_clip, open_source

    work = Path(tempfile.mkdtemp(prefix="ans-live-"))
    bundle = work / "bundle"
    subprocess.run([sys.executable, "-m", "ans.cli", "convert", "--zoo", "demo", "--out", str(bundle),
                    *(["--report"] if args.codec == "auto" else [])], check=True, stdout=subprocess.DEVNULL)
    n_splits = len(json.loads((bundle / "manifest.json").read_text())["splits"])
    clip = list(open_source(str(demo_clip())))
    frames = [clip[k % len(clip)] for k in range(args.frames)]
    # Contenders force arms (a split with a codec): split-K is arm K, which is split K with one codec a split.
    arms, contexts = learner_arms(bundle, args.codec, args.image_codec, args.learn_codec)
    splits = {*(args.splits or undominated(bundle)), n_splits - 1}  # device-only always: the oracle's fallback
    forced = [a for a in range(len(arms)) if arms.split[a] in splits]
    contenders = [(p, p) for p in args.policies] + [(f"split-{a}", a) for a in forced]
    arms_are_splits = len(arms) == n_splits
    if not arms_are_splits:
        print("arms: " + ", ".join(f"{a} = split {arms.label(a)}" for a in forced), flush=True)
    n_splits = len(arms)
    calibration = calibrate_once(bundle, work / "calibration", arms)
    results, started = {}, time.monotonic()
    with Link(HIGH_MBIT) as link:
        system = System(work, bundle, link)
        try:
            for scenario in scenarios:
                runs = {}
                phases = stretches(scenario, args.frames)
                for i, (name, policy) in enumerate(contenders):
                    print(f"[{time.monotonic() - started:6.0f} s] {scenario}: {name} ({i + 1}/{len(contenders)})",
                          file=sys.stderr, flush=True)
                    runs[name] = run_one(name, policy, system, frames, schedule(scenario, args.frames, system),
                                         work / f"state-{scenario}-{name}", args.warmup, calibration,
                                         (args.codec, args.image_codec, args.learn_codec))
                summary = summarise(runs, n_splits, phases, phases[1][0] if len(phases) > 1 else args.frames,
                                    args.policies)
                results[scenario] = summary
                args.out.mkdir(parents=True, exist_ok=True)
                plot(scenario, runs, summary, phases, n_splits, args.out / f"live-{scenario}.png", args.policies,
                     "split" if arms_are_splits else "arm")
                (work / f"runs-{scenario}.json").write_text(json.dumps(
                    {name: [{k: r[k] for k in ("frame", "split", "codec", "arm", "delay_s", "edge", "fallback",
                                               "finished_from", "timing", "alarms")}
                            for r in records] for name, records in runs.items()}))
                from_records(f"{work.name}-{scenario}", scenario, runs, lambda splits: contexts[splits], n_splits - 1,
                             phases).save(work / f"trace-{scenario}.json.gz")
                print(report(scenario, summary, args.policies), flush=True)
        finally:
            system.close()
    (work / "live.json").write_text(json.dumps(results, indent=1))
    print(f"results in {work / 'live.json'}; plots in {args.out}")


def report(scenario: str, s: dict, policies=POLICIES) -> str:
    o = s["oracle"]
    lines = [f"\n### {scenario}", "",
             f"Live oracle: splits {' / '.join(map(str, o['split_per_phase']))} per phase, "
             f"{' / '.join(f'{m:.1f}' for m in o['phase_mean_ms'])} ms (mean {o['mean_ms']:.1f} ms).", "",
             "| policy | mean (x oracle) | per phase: mean | per phase: p95 | frames to recover after each change | "
             "fallbacks | change alarms (in the baseline's frames) |", "|---|---|---|---|---|---|---|"]
    for name in policies:
        if name not in s:
            continue
        p = s[name]
        rec = ", ".join("never" if r is None else str(r) for r in p["frames_to_recover"])
        lines.append(f"| {name} | {p['mean_ms']:.1f} ms ({p['ratio_to_oracle']:.2f}x) | "
                     f"{' / '.join(f'{m:.1f}' for m in p['phase_mean_ms'])} | "
                     f"{' / '.join(f'{m:.0f}' for m in p['phase_p95_ms'])} | {rec} | {p['fallbacks']} | "
                     f"{p['alarms']} ({p['baseline_alarms']} in {p['baseline_frames']}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
