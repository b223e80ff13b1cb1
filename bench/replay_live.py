"""Replay live-testbed traces through a learner, offline: per trace its mean delay against the live
oracle's, and what ``ans`` had in the live run itself (``lab/live_replay.py`` says what a replay can
and cannot show). A few seconds for every shipped trace: try a learner change here first, on the
traces you did not tune it on, then prove it live.

    .venv/bin/python bench/replay_live.py [TRACE.json.gz | FOLDER ...] [--policy ans] [--show SUBSTRING]

Without traces: the ones shipped in ``lab/live_traces`` (``bench/bench_live.py`` writes one per
scenario into its run's folder: ``trace-<scenario>.json.gz``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from device_app.learner.registry import NEEDS_TRUTH, POLICY_NAMES, make_policy  # noqa: E402
from lab.live_replay import LiveTrace, replay, shipped  # noqa: E402


def traces_from(paths: list[str]) -> list[LiveTrace]:
    if not paths:
        return shipped()
    files = [f for p in map(Path, paths) for f in (sorted(p.glob("*.json.gz")) if p.is_dir() else [p])]
    return [LiveTrace.load(f) for f in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", nargs="*", help="trace files or folders (default: the shipped traces)")
    parser.add_argument("--policy", default="ans", choices=[p for p in POLICY_NAMES if p not in NEEDS_TRUTH])
    parser.add_argument("--show", default="", help="print the splits chosen in traces whose name contains this")
    args = parser.parse_args()
    ratios = []
    print(f"{'trace':48s} {'replay':>8s} {'live ans':>9s}")
    for trace in traces_from(args.traces):
        delays, chosen = replay(trace, lambda profile: make_policy(args.policy, profile, seed=0))
        oracle = trace.oracle_s()
        ratios.append(float(np.mean(delays)) / oracle)
        live = f"{trace.live_ans_s / oracle:8.2f}x" if trace.live_ans_s else ""
        print(f"{trace.name:48s} {ratios[-1]:7.2f}x {live}", flush=True)
        if args.show and args.show in trace.name:
            print("   splits:", " ".join(map(str, chosen)))
    r = np.array(ratios)
    print(f"\n{args.policy} over {len(r)} traces, mean delay / the live oracle's: median {np.median(r):.3f}, "
          f"mean {np.mean(r):.3f}, worst {r.max():.2f}; {int((r > 1.1).sum())} above 1.1x")


if __name__ == "__main__":
    main()
