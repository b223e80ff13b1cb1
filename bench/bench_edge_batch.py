"""The edge's tail runner alone: time per tail call and requests/s against batch size, per split,
with and without XLA, on whatever TensorFlow sees (a GPU if there is one, else the CPU).

    .venv/bin/python bench/bench_edge_batch.py --bundle BUNDLE [--batches 1 2 4 ... 64] [--splits 0 8 15]

Prints one Markdown table; bench/bench_edge_gpu.sh installs, converts tiny-YOLOv2 and runs this.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--splits", type=int, nargs="+", help="default: the first, a middle and the last tail")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per cell (median)")
    parser.add_argument("--no-xla", action="store_true", help="only the plain traced tails")
    args = parser.parse_args()

    from ans.quiet_tensorflow import import_tensorflow

    tf = import_tensorflow()
    from edge_app.server import TailRunner

    gpus = tf.config.list_physical_devices("GPU")
    where = f"GPU: {', '.join(g.name for g in gpus)}" if gpus else "CPU only (no GPU visible to TensorFlow)"
    print(f"TensorFlow {tf.__version__}, {where}", flush=True)
    modes = [False] if args.no_xla else [False, True]
    runners = {xla: TailRunner(args.bundle, xla=xla, max_batch=max(args.batches)) for xla in modes}
    splits = runners[False].manifest.splits
    with_tail = [k for k, s in enumerate(splits) if s.tail is not None]
    chosen = args.splits or sorted({with_tail[0], with_tail[len(with_tail) // 2], with_tail[-1]})
    print("\n| split | batch | XLA | per call (median) | per request | requests/s |")
    print("|---|---|---|---|---|---|")
    for split in chosen:
        shapes = [shape[1:] for shape in splits[split].shapes]
        for batch in args.batches:
            x = [np.random.default_rng(0).random((batch, *shape), dtype=np.float32) for shape in shapes]
            for xla, runner in runners.items():
                for _ in range(2):  # trace / compile, warm
                    runner.run(split, x)
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    runner.run(split, x)
                    times.append(time.perf_counter() - start)
                t = float(np.median(times))
                print(f"| {split} | {batch} | {'on' if xla else 'off'} | {t * 1e3:.2f} ms | {t / batch * 1e3:.2f} ms | "
                      f"{batch / t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
