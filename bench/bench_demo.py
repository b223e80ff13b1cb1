"""``ans demo`` over and over, as a user runs it: ``--runs`` outage runs in a row in one folder (each
resumes the learner state the run before saved), then ``--pairs`` pairs of runs without the outage,
one fresh (no saved state) and one warm-started (resuming the state the runs before it saved, the
first from a fresh run's), which of the two first alternating from pair to pair.

Per outage run: the median delay before the outage (the frames before it: the edge is stopped at
the middle frame) and over the last 60 frames, and the last 60 frames' median over two
references: the best pre-outage median of all runs, and the run's own best split before the
outage (the lowest median delay of any split it ran at least ``MIN_FRAMES`` frames before the
outage: what the machine delivered in that run, which moves by tens of percent from run to run
on a shared VM). Target: every run within 1.2x. Per pair: the warm run's median over the fresh
one's (target: at most 1.05x). Writes ``--out``/demo-runs.json and demo-runs.png.

    .venv/bin/python bench/bench_demo.py [--runs 20] [--pairs 3] [--out /tmp/ans-demo-bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mqtt.protocol import FrameRecord

REPO = Path(__file__).resolve().parents[1]
ANS = [sys.executable, "-m", "ans.cli"]
LAST = 60
MIN_FRAMES = 10


def demo(folder: Path, outage: bool) -> list[FrameRecord]:
    """One ``ans demo`` in ``folder`` (its bundle and state kept between runs); its per-frame records."""
    results = folder / "results.jsonl"
    results.unlink(missing_ok=True)
    subprocess.run(ANS + ["demo", "--out", str(folder)] + ([] if outage else ["--no-outage"]), check=True,
                   cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [FrameRecord.from_json(line) for line in results.read_text().splitlines()]


def median_ms(records: list[FrameRecord]) -> float:
    return float(np.median([r.delay_s for r in records])) * 1e3


def best_split_ms(records: list[FrameRecord]) -> float:
    """The lowest median delay of any split run at least ``MIN_FRAMES`` times in ``records``."""
    by_split: dict[int, list[FrameRecord]] = {}
    for r in records:
        by_split.setdefault(r.split, []).append(r)
    return min((median_ms(rs) for rs in by_split.values() if len(rs) >= MIN_FRAMES), default=float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ans-demo-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    outage_dir, pair_dir = args.out / "outage", args.out / "pairs"
    runs = []
    for k in range(args.runs):
        records = demo(outage_dir, outage=True)
        half = len(records) // 2
        run = {"before_ms": median_ms(records[:half]), "best_split_before_ms": best_split_ms(records[:half]),
               "last_ms": median_ms(records[-LAST:])}
        run["last_over_best_split_before"] = run["last_ms"] / run["best_split_before_ms"]
        runs.append(run)
        print(f"[{time.monotonic() - started:5.0f} s] outage run {k + 1}/{args.runs}: median before the outage "
              f"{run['before_ms']:.1f} ms (best split {run['best_split_before_ms']:.1f} ms), last {LAST} frames "
              f"{run['last_ms']:.1f} ms ({run['last_over_best_split_before']:.2f}x the best split)", flush=True)
    best = min(r["before_ms"] for r in runs) if runs else float("nan")
    for r in runs:
        r["last_over_best_before"] = r["last_ms"] / best
    pairs = []
    fresh_dir, warm_dir = pair_dir / "fresh", pair_dir / "warm"

    def fresh_run() -> list[FrameRecord]:
        shutil.rmtree(fresh_dir / "state", ignore_errors=True)
        return demo(fresh_dir, outage=False)

    def warm_run() -> list[FrameRecord]:
        if not (warm_dir / "state").exists():  # the first warm run resumes what a fresh one saved
            shutil.copytree(fresh_dir / "state", warm_dir / "state")
        return demo(warm_dir, outage=False)

    for k in range(args.pairs):
        # Which runs first alternates: a machine that slows down (or speeds up) over minutes then
        # favours neither.
        if k % 2 == 0:
            fresh_records, warm_records = fresh_run(), warm_run()
        else:
            warm_records = warm_run()
            fresh_records = fresh_run()
        fresh, warm = median_ms(fresh_records), median_ms(warm_records)
        # Each over its own run's best split: what the learner lost, whatever the machine delivered.
        fresh_own, warm_own = fresh / best_split_ms(fresh_records), warm / best_split_ms(warm_records)
        same = same_split_share(fresh_records, warm_records)
        pairs.append({"fresh_ms": fresh, "warm_ms": warm, "warm_over_fresh": warm / fresh,
                      "fresh_over_best_split": fresh_own, "warm_over_best_split": warm_own, "same_split_share": same})
        print(f"[{time.monotonic() - started:5.0f} s] pair {k + 1}/{args.pairs}: fresh {fresh:.1f} ms "
              f"({fresh_own:.2f}x its best split), warm-started {warm:.1f} ms ({warm_own:.2f}x its best split): "
              f"{warm / fresh:.2f}x; the same split on {same:.0%} of frames", flush=True)
    (args.out / "demo-runs.json").write_text(json.dumps({"runs": runs, "pairs": pairs}, indent=1))
    if runs:
        ratios = [r["last_over_best_before"] for r in runs]
        print(f"\noutage runs: last {LAST} frames over the best pre-outage median ({best:.1f} ms): median "
              f"{np.median(ratios):.2f}x, worst {max(ratios):.2f}x, within 1.2x: {sum(x <= 1.2 for x in ratios)}"
              f"/{len(ratios)}")
        own = [r["last_over_best_split_before"] for r in runs]
        print(f"outage runs: last {LAST} frames over the run's own best split before the outage: median "
              f"{np.median(own):.2f}x, worst {max(own):.2f}x, within 1.2x: {sum(x <= 1.2 for x in own)}/{len(own)}")
    if pairs:
        ratios = ", ".join(f"{p['warm_over_fresh']:.2f}x" for p in pairs)
        print(f"warm-started over fresh: {ratios} (median {np.median([p['warm_over_fresh'] for p in pairs]):.2f}x); "
              f"over their own best split: fresh median {np.median([p['fresh_over_best_split'] for p in pairs]):.2f}x, "
              f"warm-started {np.median([p['warm_over_best_split'] for p in pairs]):.2f}x")
    plot(runs, pairs, best, args.out / "demo-runs.png")
    print(f"wrote {args.out / 'demo-runs.json'} and {args.out / 'demo-runs.png'}")


def same_split_share(a: list[FrameRecord], b: list[FrameRecord]) -> float:
    """The share of frames on which two runs of the same clip chose the same split."""
    return float(np.mean([x.split == y.split for x, y in zip(a, b)]))


def plot(runs: list[dict], pairs: list[dict], best: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(1, len(runs) + 1)
    left.bar(x - 0.2, [r["before_ms"] for r in runs], 0.4, label="before the outage", color="tab:gray")
    left.bar(x + 0.2, [r["last_ms"] for r in runs], 0.4, label=f"last {LAST} frames", color="tab:blue")
    left.axhline(1.2 * best, color="tab:red", lw=1, label="1.2x the best before")
    left.set(xlabel="run (each resumes the last one's state)", ylabel="median delay (ms)", xticks=x)
    left.legend(fontsize=8)
    left.set_title("ans demo, edge stopped and restarted half-way", fontsize=9)
    k = np.arange(1, len(pairs) + 1)
    right.bar(k - 0.2, [p["fresh_ms"] for p in pairs], 0.4, label="fresh", color="tab:gray")
    right.bar(k + 0.2, [p["warm_ms"] for p in pairs], 0.4, label="warm-started", color="tab:green")
    right.set(xlabel="pair", xticks=k)
    right.legend(fontsize=8)
    right.set_title("--no-outage: fresh vs warm", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
