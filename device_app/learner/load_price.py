"""Load is priced apart from the network: the edge's queueing wait moves with the other devices'
choices, not with this device's link. It comes from the timing acknowledgements (the wait, and
what a batch's run took beyond this request's own compute) and, for a device that does not
offload, from the edges' load reports; it is added to every offloading split alike."""

from __future__ import annotations

import math

import numpy as np

#: Weight of a new queueing-wait figure (an acknowledgement, or an edge's load report) in the estimate.
WAIT_EWMA = 0.2
#: Weight of a frame in the estimate of the edge time this device causes per frame.
OWN_LOAD_EWMA = 0.05


class LoadPrice:
    def __init__(self, seed: int | None = None) -> None:
        self.wait_s = 0.0
        self.own_busy_s = 0.0  # edge seconds this device causes per frame (EWMA over frames)
        self.rng = np.random.default_rng(seed)

    def frame(self) -> None:
        """One more frame: what this device causes per frame decays."""
        self.own_busy_s *= 1.0 - OWN_LOAD_EWMA

    def acknowledged(self, wait_s: float | None, batch_size: int, edge_s: float, transfer_s: float,
                     solo_s: float | None) -> float:
        """An offloaded frame's timing; the network's share (transfer minus the queueing wait).
        ``solo_s``: for a batch's edge time, what this request alone would have taken (the
        surplus is load); None for a request run alone."""
        queued = 0.0 if wait_s is None else min(max(wait_s, 0.0), transfer_s)
        self.own_busy_s += OWN_LOAD_EWMA * edge_s / max(batch_size, 1)
        wait = queued + (max(edge_s - max(solo_s, 0.0), 0.0) if solo_s is not None else 0.0)
        if wait_s is not None or solo_s is not None:
            self.wait_s += WAIT_EWMA * (wait - self.wait_s)
        return transfer_s - queued

    def reported(self, utilisation: float, wait_s: float, service_s: float, frame_rate: float, edges: int) -> bool:
        """An edge's load report: its busy fraction, the mean queueing wait and tail run time it
        saw lately. What this device itself adds is priced in: a device that offloads learns the
        wait from its own acknowledgements; one that does not expects, if it joined, the wait the
        others see plus, with probability the others' busy fraction, half a run of theirs (a
        request arriving at a busy edge). A device leaving or coming back because of it does so
        on a report with probability 1/2 (drawn from ``seed``): devices that all heard the same
        report do not all move at once and then all move back (herding). True if the price moved."""
        if not all(math.isfinite(v) and v >= 0 for v in (utilisation, wait_s, service_s, frame_rate)) or edges < 1:
            return False
        mine = min(self.own_busy_s * frame_rate / edges, 1.0)  # this device's share of one edge's time
        others = min(max(utilisation - mine, 0.0), 1.0)
        if mine > 0.5 * utilisation and mine > 0:  # it offloads: its acknowledgements say it best
            return False
        if self.rng.random() >= 0.5:
            return False
        self.wait_s += WAIT_EWMA * (wait_s + others * service_s / 2 - self.wait_s)
        return True
