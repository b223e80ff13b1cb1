"""Cost of the SSIM key-frame test per frame, at common camera sizes.

    .venv/bin/python bench/bench_keyframe.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_app.keyframe import KeyFrameDetector  # noqa: E402

SIZES = ((480, 640), (720, 1280), (1080, 1920))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'frame':>10}{'median ms':>11}")
    for h, w in SIZES:
        frames = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(4)]
        detect = KeyFrameDetector()
        times = []
        for i in range(args.repeat):
            start = time.perf_counter()
            detect(frames[i % 4])
            times.append(time.perf_counter() - start)
        print(f"{w}x{h:>5}{statistics.median(times) * 1e3:>11.2f}")


if __name__ == "__main__":
    main()
