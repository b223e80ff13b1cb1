"""Missed deadlines. A frame with no answer in time says the split took at least the deadline:
a lower bound, not a measurement, so it must not move the shared network and edge models (it
would re-price every split). The split is held at least that slow instead, until it is observed
again or ``hold`` frames have passed."""

from __future__ import annotations

import numpy as np


class Censoring:
    def __init__(self, n_splits: int, hold: int) -> None:
        self.hold = hold
        self.floor_s = np.zeros(n_splits)
        self.until = np.zeros(n_splits)
        self._end = 0.0  # the latest of ``until``: no array work per frame when none is active

    def floor(self, t: int, offload_s: np.ndarray) -> np.ndarray:
        """``offload_s``, raised to what a recent missed deadline said."""
        if t >= self._end:
            return offload_s
        return np.maximum(offload_s, np.where(t < self.until, self.floor_s, 0.0))

    def missed(self, t: int, split: int, offload_s: float) -> None:
        self.floor_s[split] = max(self.floor_s[split] if t < self.until[split] else 0.0, offload_s)
        self.until[split] = t + self.hold
        self._end = t + self.hold

    def observed(self, split: int) -> None:
        self.until[split] = 0.0
