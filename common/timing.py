"""Timing a call the way every measurement here does: one warm-up run, then the median of repeats."""

from __future__ import annotations

import time

import numpy as np


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn()``, after one warm-up call (allocation, caches)."""
    fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return float(np.median(runs))
