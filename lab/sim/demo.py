"""``ans demo`` (learner part): watch ANS find the split, lose the link, and recover.

Runs in a simulated world on the paper's tiny-YOLOv2/TX2 profile, with the link
dropping from 100 to 8 Mbit/s for the middle third. Prints a live line as it goes,
then a comparison with the paper's algorithm and the baselines, and writes a PNG.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from device_app.learner.profile import load_profile
from device_app.learner.registry import make_policy

from .experiment import plot_runs
from .scenarios import bandwidth_drop
from .simulator import build_world, run

PROFILE = "tiny-yolov2-tx2"
COMPARED = ("ans", "mu-linucb-paper", "linucb", "neurosurgeon", "device-only", "edge-only", "oracle")


def run_demo(out: Path, frames: int = 4500, pace_s: float = 0.05) -> int:
    profile = load_profile(PROFILE)
    world = build_world(profile, bandwidth_drop(frames), frames, seed=0)
    oracle = np.argmin(world.mean_total_s, axis=1)
    rows = np.arange(frames)
    total = world.total_s
    print(f"ANS learner demo: {PROFILE} ({profile.n_splits} splits), link 100 -> 8 -> 100 Mbit/s, {frames} frames")
    print(f"{'frame':>6} {'Mbit/s':>7} {'split':>5} {'oracle':>6} {'delay ms':>9} {'oracle ms':>9} {'ratio':>6}")
    window = max(frames // 30, 1)

    def live(done: int, splits: np.ndarray) -> None:
        lo = done - window
        mine = total[rows[lo:done], splits[lo:done]].mean()
        best = total[rows[lo:done], oracle[lo:done]].mean()
        print(f"{done:>6} {world.conditions['bandwidth_mbps'][done - 1]:>7.0f} {splits[-1]:>5} {oracle[done - 1]:>6} "
              f"{mine * 1e3:>9.1f} {best * 1e3:>9.1f} {mine / best:>6.2f}", flush=True)
        time.sleep(pace_s)

    results = {"ans": run(make_policy("ans", profile), world, live, every=window)}
    for name in COMPARED[1:]:
        results[name] = run(make_policy(name, profile, world.mean_total_s), world)
    print("\npolicy            mean delay   p95 delay   ratio to oracle")
    for name, r in results.items():
        s = r.summary()
        print(f"{name:<16} {s['mean_delay_s'] * 1e3:>8.1f} ms {s['p95_delay_s'] * 1e3:>8.1f} ms {s['ratio_to_oracle']:>10.3f}")
    out.mkdir(parents=True, exist_ok=True)
    png = out / "ans-demo.png"
    plot_runs(png, PROFILE, "bandwidth-drop",
          {name: [(0, None, r.delay_s, r.oracle_delay_s, r.splits)] for name, r in results.items()})
    print(f"\nplot: {png}")
    return 0
