"""What a device reports about itself: a window of per-frame records turned into one stats message."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from mqtt.protocol import FrameRecord


class DeviceStats:
    """Per-frame records since the last report -> fps, delays, splits, fallbacks, learner state."""

    def __init__(self, n_splits: int, arms: list[str]):
        self.n_splits = n_splits
        self.arms = arms  # the learner's arms, ``split/codec``: what its per-arm lists are about
        self.totals = Counter()
        self._reset(time.monotonic())

    def _reset(self, now: float) -> None:
        self.since = now
        self.delays: list[float] = []
        self.splits = np.zeros(self.n_splits, dtype=np.int64)
        self.window = Counter()

    def count(self, what: str) -> None:
        """One more of ``what`` in the totals (``unsent``, ``write_errors``, ``duplicate_id``)."""
        self.totals[what] += 1

    def record(self, record: FrameRecord, explored: bool) -> None:
        self.delays.append(record.delay_s)
        self.splits[record.split] += 1
        outcome = ("fallback" if record.fallback else
                   "offloaded" if record.split != self.n_splits - 1 else "local")
        for counter in (self.window, self.totals):
            counter[outcome] += 1
            counter["frames"] += 1
            counter["explored"] += explored

    def report(self, policy, **extra) -> dict:
        """The stats message for the window that ends now; starts the next window."""
        now = time.monotonic()
        delays = np.asarray(self.delays) if self.delays else np.zeros(1)
        frames = self.window["frames"]
        estimate = policy.estimate()
        message = {
            "window_s": round(now - self.since, 3),
            "frames": frames,
            "fps": round(frames / max(now - self.since, 1e-9), 2),
            "delay_mean_ms": round(float(delays.mean()) * 1e3, 2),
            "delay_p95_ms": round(float(np.percentile(delays, 95)) * 1e3, 2),
            "split_histogram": self.splits.tolist(),
            "split": int(np.argmax(self.splits)) if frames else None,
            "offloaded": self.window["offloaded"],
            "fallbacks": self.window["fallback"],
            "exploration_rate": round(self.window["explored"] / frames, 3) if frames else 0.0,
            "totals": dict(self.totals),
            "learner": {**policy.stats(), "arms": self.arms,
                        **({"estimate_ms": np.round(estimate * 1e3, 2).tolist()} if estimate is not None else {}),
                        "front_ms": np.round(policy.front_delay_s * 1e3, 2).tolist()},
            **extra,
        }
        self._reset(now)
        return message
