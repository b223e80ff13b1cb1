"""The device's measured head delays: every split's head timed at first start as the device runs it
once in use (segments 1..p one after another, or fused into one model where that is faster), cached
against the bundle's content hash so that a restart skips it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.disk import write_problem
from common.tflite import SegmentRunner

from .learner.persist import load_state, save_state


def calibrate(runner: SegmentRunner, repeats: int = 5, cache: str | Path | None = None, log=print,
              progress=None) -> np.ndarray:
    """Front-end delay of every split, measured on this device (median of ``repeats`` runs after a
    warm-up), cached in ``cache`` against the bundle's content hash so a restart skips it.
    ``progress(done, of)``: called as the heads are timed."""
    bundle = runner.bundle
    fused = runner.fused_heads > 0  # asked for (the cache stands for what the same settings measured)
    if cache is not None and Path(cache).is_file():
        try:
            state = load_state(cache)
            if (state.get("bundle") == bundle.content_hash and state.get("fused") == fused
                    and len(state.get("front_delay_s", [])) == len(bundle.splits)):
                pays = state.get("fuse_pays")
                if isinstance(pays, list) and len(pays) == len(bundle.splits) - 1:
                    runner.fuse_pays = [bool(p) for p in pays]
                return np.asarray(state["front_delay_s"], dtype=np.float64)
        except ValueError:
            pass  # an unreadable cache is measured again
    image = np.random.default_rng(0).random(bundle.input_shape, dtype=np.float32)
    delays = [0.0, *runner.head_times(image, repeats, progress)]
    how = "fused where faster" if runner.fused_heads else "chained"
    log(f"measured the head of every split on this device: split 1 {delays[1] * 1e3:.2f} ms ... device-only "
        f"{delays[-1] * 1e3:.2f} ms ({len(delays) - 1} segments, {how}, median of {repeats})")
    if cache is not None:
        try:
            save_state(cache, {"bundle": bundle.content_hash, "fused": fused, "fuse_pays": runner.fuse_pays,
                               "front_delay_s": delays})
        except OSError as exc:  # a full disk: used now, measured again at the next start
            log(f"calibration not cached: {write_problem(cache, exc)}")
    return np.asarray(delays)
