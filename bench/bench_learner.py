"""Decision + update cost of each learning policy, per frame, on the paper's 32-split profile.

    .venv/bin/python bench/bench_learner.py [--frames 3000] [--repeat 7] [--profile tiny-yolov2-tx2+codecs]

Runs each policy through a steady simulated world, timing the choose() and update() calls
of every frame (not the simulation around them) after a warm-up, and prints the median and 10th percentile in microseconds with a
reference numpy call (a 7-element dot product) measured in the same run, since per-call
overhead is what these timings are made of.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_app.learner.policy import Feedback  # noqa: E402
from device_app.learner.registry import make_policy  # noqa: E402
from lab.sim.codec_arms import sim_profile  # noqa: E402
from lab.sim.scenarios import steady  # noqa: E402
from lab.sim.simulator import build_world  # noqa: E402

POLICIES = ("ans", "mu-linucb-paper", "linucb")


def frame_times(name: str, frames: int, profile_name: str) -> list[float]:
    profile = sim_profile(profile_name)
    world = build_world(profile, steady(frames), frames, seed=0)
    policy = make_policy(name, profile)
    clock = time.perf_counter
    times = []
    key = world.key_frame.tolist()
    for t in range(frames):
        start = clock()
        split = policy.choose(key[t])
        spent = clock() - start
        if split != profile.device_only:  # looking up the simulated delays is not timed
            net, edge = float(world.net_s[t, split]), float(world.edge_s[t, split])
            feedback = Feedback(split, net + edge, net, edge)
            start = clock()
            policy.update(feedback)
            spent += clock() - start
        times.append(spent)
    return times[frames // 5:]  # after learning settles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--profile", default="tiny-yolov2-tx2",
                        help="a built-in profile or a bundle folder (a YOLOv8-style bundle has 40 splits); "
                             "NAME+codecs: every offloading split also with a second codec (63 arms from the 32 splits)")
    args = parser.parse_args()
    splits = sim_profile(args.profile).n_splits
    x = np.ones(7)
    ref = min(timeit.repeat(lambda: x @ x, number=20000, repeat=5)) / 20000 * 1e6
    print(f"reference: one 7-element numpy dot = {ref:.2f} us")
    print(f"{'policy':<18}{'median us':>10}{'p10 us':>9}   (choose + update per frame, {splits} arms)")
    for name in POLICIES:
        samples = []
        for _ in range(args.repeat):
            samples += frame_times(name, args.frames, args.profile)
        us = np.asarray(samples) * 1e6
        print(f"{name:<18}{statistics.median(us):>10.1f}{np.percentile(us, 10):>9.1f}")


if __name__ == "__main__":
    main()
