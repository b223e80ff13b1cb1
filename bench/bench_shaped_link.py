"""The learner on a real, shaped network: broker and edge in their own network namespace behind a
veth pair whose bandwidth ``tc tbf`` sets; the device in the host namespace. The link drops from
--high to --low Mbit/s for the middle third of the run and comes back; each policy runs the same
frames through the same schedule. Needs root and iproute2 (ip, tc); nothing is left behind.

    sudo .venv/bin/python bench/bench_shaped_link.py [--frames 450] [--high 100] [--low 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from lab.testbed import NS, NS_IP, Link  # noqa: E402

def run_policy(policy: str, bundle: Path, broker: str, frames: list, schedule: list[tuple[int, float]],
               slowdown: float, state: Path, link: Link) -> list[dict]:
    from device_app.runtime import make_device
    from device_app.settings import DeviceSettings
    from mqtt.connection import MqttSettings

    device = make_device(DeviceSettings(bundle=str(bundle), id=f"bench-{policy}", policy=policy, deadline_ms=1000,
                                        emulate_slowdown=slowdown, state_dir=str(state),
                                        mqtt=MqttSettings(broker=broker)))
    device.connect()
    records = []
    changes = dict(schedule)
    try:
        for k, frame in enumerate(frames):
            if k in changes:
                link.shape(changes[k])
            records.append(device.process(k, frame))
            if k % 50 == 0:
                print(f"\r  {policy}: {k}/{len(frames)}", end="", file=sys.stderr, flush=True)
    finally:
        device.link.close()
    print(file=sys.stderr)
    return records


def plot(runs: dict, schedule, n_splits: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.1 * len(runs)), sharex=True)
    for ax, (policy, records) in zip(np.atleast_1d(axes), runs.items()):
        frames = [r.frame for r in records]
        colours = ["tab:blue" if r.edge else "tab:red" if r.fallback else "tab:gray" for r in records]
        ax.scatter(frames, [r.delay_s * 1e3 for r in records], c=colours, s=5)
        ax.set_yscale("log")
        ax.set_ylabel(f"{policy}\ndelay (ms)", fontsize=8)
        twin = ax.twinx()
        twin.plot(frames, [r.split for r in records], color="k", lw=0.7)
        twin.set_ylim(-0.5, n_splits - 0.5)
        twin.set_ylabel("split", fontsize=8)
        for frame, _ in schedule[1:]:
            ax.axvline(frame, color="orange", lw=1)
    np.atleast_1d(axes)[0].set_title("Shaped link (orange: bandwidth changes). Dots: delay; blue edge, red fallback, "
                                     "grey device. Line: chosen split.", fontsize=9)
    np.atleast_1d(axes)[-1].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=450)
    parser.add_argument("--high", type=float, default=100.0, help="Mbit/s before and after the drop")
    parser.add_argument("--low", type=float, default=4.0, help="Mbit/s during the middle third")
    parser.add_argument("--slowdown", type=float, default=30.0, help="device heads this many times slower")
    parser.add_argument("--policies", nargs="+", default=["ans", "mu-linucb-paper", "device-only", "edge-only"])
    parser.add_argument("--out", default=str(REPO / "docs" / "img"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and tc)")
    from lab.demo import start_edge
    from device_app.sources import demo_clip, open_source
    from lab.local_broker import Broker, dev_config

    work = Path(tempfile.mkdtemp(prefix="ans-shaped-"))
    bundle = work / "bundle"
    subprocess.run([sys.executable, "-m", "ans.cli", "convert", "--zoo", "demo", "--out", str(bundle)],
                   check=True, stdout=subprocess.DEVNULL)
    clip = list(open_source(str(demo_clip())))
    frames = [clip[k % len(clip)] for k in range(args.frames)]
    third = args.frames // 3
    schedule = [(0, args.high), (third, args.low), (2 * third, args.high)]
    runs, wrapper = {}, ("ip", "netns", "exec", NS)
    with Link(args.high) as link:
        broker = Broker(dev_config(), work / "broker", host=NS_IP, wrapper=wrapper)
        broker.start()
        edge = None
        try:
            edge = start_edge(bundle, broker.url, work / "edge.log", wrapper)  # local inside the namespace
            for policy in args.policies:
                runs[policy] = run_policy(policy, bundle, broker.url, frames, schedule, args.slowdown,
                                          work / f"state-{policy}", link)
        finally:
            if edge is not None:
                edge.terminate()
                edge.wait(30)
            broker.stop()
    phases = [(0, third), (third, 2 * third), (2 * third, args.frames)]
    summary = {}
    for policy, records in runs.items():
        delays = np.array([r.delay_s for r in records]) * 1e3
        summary[policy] = {"mean_ms": round(float(delays.mean()), 1),
                           "phase_mean_ms": [round(float(delays[a:b].mean()), 1) for a, b in phases],
                           "p95_ms": round(float(np.percentile(delays, 95)), 1),
                           "fallbacks": sum(r.fallback for r in records),
                           "top_split_per_phase": [int(np.bincount([r.split for r in records[a:b]]).argmax())
                                                   for a, b in phases]}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    n_splits = len(json.loads((bundle / "manifest.json").read_text())["splits"])
    plot(runs, schedule, n_splits, Path(args.out) / f"shaped-link-{args.low:g}mbit.png")
    print(f"link {args.high:g} -> {args.low:g} -> {args.high:g} Mbit/s, {args.frames} frames, heads x{args.slowdown:g}")
    print("| policy | mean | high / low / high (mean) | p95 | fallbacks | usual split per phase |")
    print("|---|---|---|---|---|---|")
    for policy, s in summary.items():
        print(f"| {policy} | {s['mean_ms']} ms | {' / '.join(str(v) for v in s['phase_mean_ms'])} ms | "
              f"{s['p95_ms']} ms | {s['fallbacks']} | {', '.join(map(str, s['top_split_per_phase']))} |")
    (work / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
