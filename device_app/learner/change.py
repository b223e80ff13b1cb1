"""Change detection on standardised residuals that a lone outlier cannot set off.

A two-sided CUSUM: it reacts within a few frames to a large shift, accumulates evidence over more
frames for a smaller or noisier one, and ignores a lone spike. Outliers (a pause, a retransmission,
a garbage collection) are single frames far off; a change lasts. Once the model behind the scores
is settled, one score moves the statistic by at most ``STEP_CAP``, so it takes three to alarm
however far off they are, and an alarm needs the median of the last ``CONFIRM`` scores to point
its way: a lone outlier, or two, among ordinary frames never sets it off.
"""

from __future__ import annotations


class ChangeDetector:
    STEP_CAP = 4.0  # noise widths one score may move the statistic by, once settled
    CONFIRM = 3  # scores whose median must point the alarm's way, once settled

    def __init__(self, drift: float, threshold: float) -> None:
        self.drift, self.threshold = drift, threshold
        self.up = self.down = 0.0
        self.last: list[float] = []  # the last CONFIRM scores

    def step(self, score: float, settled: bool) -> float:
        """Take one score; the alarm's side (+1: the part got slower, -1: faster), or 0."""
        step = min(max(score, -self.STEP_CAP), self.STEP_CAP) if settled else score
        self.up = max(0.0, self.up + step - self.drift)
        self.down = max(0.0, self.down - step - self.drift)
        last = self.last = self.last[1 - self.CONFIRM:] + [score]
        if max(self.up, self.down) <= self.threshold:
            return 0.0
        side = 1.0 if self.up > self.down else -1.0
        if settled and not (len(last) == self.CONFIRM and sorted(last)[self.CONFIRM // 2] * side > 2.0 * self.drift):
            return 0.0
        return side

    @property
    def idle(self) -> bool:
        """Nothing accumulated: the last scores were as expected."""
        return self.up == 0.0 and self.down == 0.0

    @property
    def halfway(self) -> bool:
        return max(self.up, self.down) > self.threshold / 2

    def reset(self) -> None:
        self.up = self.down = 0.0
        self.last = []
