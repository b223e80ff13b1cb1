"""Beliefs decay: a split observed once and not since is re-checked eventually, the nearly-best
ones soonest, with back-off so that regret stays sublinear in steady state."""

from __future__ import annotations

import math

import numpy as np


class Staleness:
    """The frame each split was last observed at, and how long until its estimate counts as old:
    ``stale_after`` frames at first, doubled by every re-check that confirmed it, back to
    ``stale_after`` when an observation revealed a change."""

    def __init__(self, n_splits: int, stale_after: int, stale_rate: float) -> None:
        self.after, self.rate = stale_after, stale_rate
        self.seen_at = np.full(n_splits, math.inf)  # never observed: never stale
        self.horizon = np.full(n_splits, float(stale_after))
        self._from = math.inf  # the earliest frame any split can go stale: no work before
        self.rechecks = 0

    def bonus(self, t: int, estimate: np.ndarray) -> np.ndarray | float:
        """How much lower a split may be than its estimate because the split was last observed
        long ago: zero until its horizon has passed, then ``stale_rate`` of the best estimate
        per horizon since. So a split estimated 1.2x the best is re-checked two horizons after
        going stale, one at 3x after twenty. Splits never observed are priced by the shared
        models and their confidence widths, and get none."""
        if t < self._from:
            return 0.0
        over = np.maximum(t - self.seen_at - self.horizon, 0.0)
        if not over.any():
            self._from = float(np.min(self.seen_at + self.horizon))
            return 0.0
        return self.rate * max(float(np.min(estimate)), 0.0) * over / self.horizon

    def observed(self, t: int, split: int, changed: bool = False) -> None:
        """``split`` was just observed: its age restarts, and its horizon doubles if it had gone
        stale (back-off), or falls back to ``stale_after`` if the observation revealed a change."""
        if changed:
            self.horizon[split] = self.after
        elif t - self.seen_at[split] > self.horizon[split]:  # (False if never observed)
            self.rechecks += 1
            self.horizon[split] *= 2.0
        self.seen_at[split] = t
        self._from = min(self._from, t + self.horizon[split])
