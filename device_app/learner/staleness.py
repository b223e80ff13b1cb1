"""Beliefs decay: a split observed once and not since is re-checked eventually, the nearly-best
ones soonest, and sooner still one that last delivered much better than the split in use now (the
way back from device-only after the conditions that drove it there are gone), with back-off so that
regret stays sublinear in steady state."""

from __future__ import annotations

import math

import numpy as np


class Staleness:
    """The frame each split was last observed at, and how long until its estimate counts as old:
    ``stale_after`` frames at first, doubled by every re-check that confirmed it, back to
    ``stale_after`` when an observation revealed a change; shortened while the split in use is
    estimated slower than what that split last delivered. Also what each split delivered at best
    and when it was last recalled for a frame (``ANS._recall``)."""

    #: The shortened horizons are worked out again when the estimate of the split in use has moved
    #: this much (a share of it) since they last were; per observation otherwise, one split at a time.
    SLACK = 0.05

    def __init__(self, n_splits: int, stale_after: int, stale_rate: float) -> None:
        self.after, self.rate = stale_after, stale_rate
        self.seen_at = np.full(n_splits, math.inf)  # never observed: never stale
        self.horizon = np.full(n_splits, float(stale_after))
        self.delivered_s = np.full(n_splits, math.inf)  # the total delay each split last delivered
        self.best_s = np.full(n_splits, math.inf)  # ... and the least it ever delivered
        self.recalled_at = np.full(n_splits, -math.inf)  # the frame each split was last recalled at
        self.tell_s = np.zeros(n_splits)  # ... and under what delay its answer said to look again
        self.confirm: int | None = None  # a recalled split that brought good news: recalled again at once
        self.short = self.horizon.copy()  # the horizons, shortened against ``now``
        self.now = math.inf  # the estimate of the split in use that ``short`` was worked out for
        self._from = math.inf  # the earliest frame any split can go stale: no work before
        self.rechecks = 0
        self.recalls = 0

    def bonus(self, t: int, estimate: np.ndarray, current: int) -> np.ndarray | float:
        """How much lower a split may be than its estimate because the split was last observed
        long ago: zero until its horizon has passed, then ``stale_rate`` of the best estimate
        per horizon since. So a split estimated 1.2x the best is re-checked two horizons after
        going stale, one at 3x after twenty. A split that last delivered a share g less than the
        estimate of the split in use (``current``) has its horizon divided by 1 + g/``stale_rate``:
        one that delivered a third less is looked at again four times sooner. Splits never
        observed are priced by the shared models and their confidence widths, and get none."""
        if self.rate == 0:
            return 0.0
        now = max(float(estimate[current]), 1e-9)
        if abs(now - self.now) > self.SLACK * now:
            self.now = now
            self.short = self.horizon / (1.0 + np.maximum(now - self.delivered_s, 0.0) / (now * self.rate))
            self._from = float(np.min(self.seen_at + self.short))
        if t < self._from:
            return 0.0
        over = np.maximum(t - self.seen_at - self.short, 0.0)
        if not over.any():
            self._from = float(np.min(self.seen_at + self.short))
            return 0.0
        return self.rate * max(float(np.min(estimate)), 0.0) * over / self.short

    def since_seen(self, t: int, split: int) -> float:
        """Frames since ``split`` was last observed or recalled (a recall may miss its deadline);
        infinite if never."""
        seen = float(self.seen_at[split])
        return t - max(seen if seen < math.inf else -math.inf, self.recalled_at[split])

    def recalled(self, t: int, split: int, tell_s: float | None = None) -> None:
        """``split`` is tried for this frame to see whether the conditions under which a split once
        delivered much better than the split in use are back; an answer under ``tell_s`` says they
        may be (default: what it said for the last look at ``split``)."""
        self.recalled_at[split] = t
        if tell_s is not None:
            self.tell_s[split] = tell_s
        self.recalls += 1

    def recall_answered(self, t: int, split: int, delivered_s: float, changed: bool) -> None:
        """An answer at ``split``, which asks for another look at once if ``split`` was recalled for it
        and the conditions looked for may be back (``recalled``) but the models have not changed
        yet: a settled model takes one far-off answer for an outlier until more confirm it, and the
        split in use may show nothing."""
        self.confirm = (split if self.recalled_at[split] >= t - 1 and delivered_s < self.tell_s[split] and not changed
                        else None)

    def observed(self, t: int, split: int, delivered_s: float, changed: bool = False) -> None:
        """``split`` was just observed, taking ``delivered_s`` in all: its age restarts, and its
        horizon doubles if it had gone stale (back-off), or falls back to ``stale_after`` if the
        observation revealed a change."""
        horizon = float(self.horizon[split])
        if changed:
            horizon = self.after
        elif t - self.seen_at[split] > self.short[split]:  # (False if never observed)
            self.rechecks += 1
            horizon *= 2.0
        self.horizon[split], self.seen_at[split], self.delivered_s[split] = horizon, t, delivered_s
        self.best_s[split] = min(self.best_s[split], delivered_s)
        if self.rate > 0 and delivered_s < self.now < math.inf:
            horizon /= 1.0 + (self.now - delivered_s) / (self.now * self.rate)
        self.short[split] = horizon
        self._from = min(self._from, t + horizon)
