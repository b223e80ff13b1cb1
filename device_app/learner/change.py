"""Change detection on standardised residuals that outlier frames cannot set off.

A two-sided CUSUM: it reacts within a few frames to a large shift, accumulates evidence over more
frames for a smaller or noisier one, and ignores a lone spike. Outliers (a pause, a retransmission,
a garbage collection) are single frames far off, a few of them in a row now and then; a change
lasts. So, once the model behind the scores is settled, one score moves the statistic by at most
``STEP_CAP`` noise widths, and an alarm needs the last scores to agree with it: the last
``CONFIRM`` all pointing its way by twice the drift or more, or, when one of the last ``CONFIRM_FAR``
was far off (an outlier, or the first frames of a large change), all of those beyond
``FAR`` noise widths. With 5% of frames outliers, a false alarm then needs four in a row
(once in about 160,000 frames); a large change is confirmed by its fourth frame. A part
re-fitted a few frames ago may be wrong (or a drift goes on), so its steps are not capped, but
a lone outlier must not re-fit it to itself: it alarms on two far-off scores in a row.
"""

from __future__ import annotations


class ChangeDetector:
    STEP_CAP = 3.5  # noise widths one score may move the statistic by, once settled
    FAR = 3.0  # noise widths beyond which a score is far off
    CONFIRM = 3  # last scores that must all point the alarm's way, once settled ...
    CONFIRM_FAR = 4  # ... or all be far off its way, if one of these was

    def __init__(self, drift: float, threshold: float) -> None:
        self.drift, self.threshold = drift, threshold
        self.up = self.down = 0.0
        self.last: list[float] = []  # the last CONFIRM_FAR scores

    def step(self, score: float, settled: bool, refitted: bool = False) -> float:
        """Take one score; the alarm's side (+1: the part got slower, -1: faster), or 0.
        ``refitted``: the part is young since a re-fit but not in its life: an alarm needs the
        last two scores beyond ``FAR`` its way (a drift goes on, an outlier is alone)."""
        step = min(max(score, -self.STEP_CAP), self.STEP_CAP) if settled else score
        self.up = max(0.0, self.up + step - self.drift)
        self.down = max(0.0, self.down - step - self.drift)
        last = self.last = self.last[1 - self.CONFIRM_FAR:] + [score]
        if max(self.up, self.down) <= self.threshold:
            return 0.0
        side = 1.0 if self.up > self.down else -1.0
        if settled:
            return side if self._confirmed(side, last) else 0.0
        if refitted:
            return side if len(last) >= 2 and min(last[-1] * side, last[-2] * side) > self.FAR else 0.0
        return side

    def _confirmed(self, side: float, last: list[float]) -> bool:
        if max(abs(score) for score in last) > self.STEP_CAP:
            return len(last) == self.CONFIRM_FAR and min(score * side for score in last) > self.FAR
        return min(score * side for score in last[-self.CONFIRM:]) > 2.0 * self.drift

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
