"""Probing instead of the paper's fixed forced sampling: while device-only wins, an offloading
frame is sent now and then, as often as its cost is worth the delay it saves by noticing a
recovered link early, and again at once when a probe brings good news or an edge comes back."""

from __future__ import annotations

import math

import numpy as np


class Prober:
    def __init__(self, probe_min: int, probe_max: int, change_prior_frames: float) -> None:
        self.probe_min, self.probe_max, self.change_prior_frames = probe_min, probe_max, change_prior_frames
        self.idle = 0  # device-only frames since the last offload
        self.probes = 0
        self.changes = 0  # changes the learner detected: their rate sets how often probing pays
        # The best offloading seen: the split that last beat device-only (on its merits, not as a
        # probe), and the least it delivered; probed while device-only wins (is that regime back?).
        # A cheaper split may tell nothing about it (a tiny tensor sees the RTT, not the bandwidth).
        self.good_split: int | None = None
        self.good_s = math.inf
        self.recheck = False  # the last probe brought good news (or an edge came back): probe again at once
        self.pending: int | None = None  # the split of the probe whose answer is awaited

    def offloaded(self) -> None:
        """The learner chose to offload on its merits: no probe needed."""
        self.idle = 0

    def waited(self) -> None:
        """The learner chose device-only for this frame."""
        self.idle += 1

    def next(self, t: int, fallback, costs) -> int | None:
        """On a device-only frame that may probe: the split to probe now, or None.
        ``fallback()``: the split to probe when offloading never won; ``costs(probe)`` ->
        (probe's total, device-only's, most optimistic offloading) estimates, for its interval."""
        probe = self.good_split if self.good_split is not None else fallback()
        if not self.recheck and self.idle < self.interval(t, *costs(probe)):
            return None
        self.idle = 0
        self.recheck = False
        self.probes += 1
        self.pending = probe
        return probe

    def interval(self, t: int, probe_s: float, device_s: float, optimistic_s: float) -> float:
        """Frames between probes while device-only wins, from their cost and their value.

        A probe costs c = (its estimated delay − device-only's) now; not probing costs, per
        frame after the conditions come back, G = device-only − the delay offloading
        achieved before (or, if it never won, its most optimistic estimate now): ``every``
        with the changes detected so far, at most ``probe_max``.
        """
        if self.good_split is not None:
            gain = device_s - min(self.good_s, device_s)
        else:  # offloading never won: at most what its most optimistic estimate would save
            gain = device_s - optimistic_s
        return min(self.every(t, probe_s - device_s, gain, self.changes), self.probe_max)

    def every(self, t: int, cost: float, gain: float, changes: int) -> float:
        """Frames between looks at a way that may have come back: a look costs ``cost`` now, not
        looking costs ``gain`` per frame once it is back. With changes arriving at rate ρ, looking
        every I frames costs about c/I + ρ·G·I/2 per frame, least at I = sqrt(2c/(ρG)), at least
        ``probe_min``. ρ: ``changes`` so far, with a prior of one per ``change_prior_frames``."""
        rate = (changes + 1) / (t + self.change_prior_frames)
        return max(math.sqrt(2.0 * max(cost, 1e-6) / (rate * max(gain, 1e-6))), self.probe_min)

    def missed(self, split: int) -> None:
        """No answer in time: a probe that missed waits its interval before the next."""
        if split == self.pending:
            self.pending = None

    def answered(self, split: int, delivered_s: float, device_s: float, good_news: bool) -> None:
        """An offloaded frame's answer (``delivered_s``: the frame's whole delay): a split that
        beat device-only becomes the best offloading seen, what to probe once device-only wins
        (the split that did best last, not the lowest estimate ever: a young model's estimate of a
        split once tried can be far too good, and the probes would go to it for good). An
        answer to a probe with good news (far faster than expected) asks for another at once, to
        confirm it. Bad news asks for none: device-only wins already, and a probe on a link
        getting worse is the dearest frame."""
        if delivered_s < device_s and split != self.pending:
            if split != self.good_split or delivered_s < self.good_s:
                self.good_split, self.good_s = split, delivered_s
        if split == self.pending:
            self.pending = None
            self.recheck = good_news


def optimistic_offload(front_s: np.ndarray, offload_s: np.ndarray, width_s: np.ndarray, offload: np.ndarray) -> float:
    """The lowest lower-confidence total delay of any offloading split."""
    return float(np.where(offload, front_s + offload_s - width_s, np.inf).min())
