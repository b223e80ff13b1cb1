"""The interface every split-selection policy implements, and the feedback it learns from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .profile import SplitProfile


@dataclass(frozen=True)
class Feedback:
    """What one offloaded frame taught the device.

    ``offload_s`` is the whole offloading delay (head output sent → result back).
    The edge's timing acknowledgement splits it: ``edge_s`` is the tail's compute
    time on the edge, ``transfer_s`` the rest (network both ways and queueing).
    Either may be ``None`` when the edge did not report it. ``wait_s``, part of ``transfer_s``,
    is how long the request queued on the edge (load, not network); ``batch_size`` how many
    requests the edge ran in the tail call that took ``edge_s``. ``censored``: no answer
    came in time (a missed deadline, an error reply), so ``offload_s`` is a lower bound, not a
    measurement.
    """

    split: int
    offload_s: float
    transfer_s: float | None = None
    edge_s: float | None = None
    censored: bool = False
    wait_s: float | None = None
    batch_size: int = 1


class Policy:
    """Chooses a split per frame and learns from offloading feedback.

    ``front_delay_s`` holds the device's own (measured) front-end delay per split;
    the device app refreshes it from real head runs.
    """

    name = "policy"

    def __init__(self, profile: SplitProfile) -> None:
        self.profile = profile
        self.front_delay_s = profile.front_delay_s.copy()
        self.t = 0  # frames decided so far

    def choose(self, key_frame: bool = False) -> int:
        split = self._choose(key_frame)
        self.t += 1
        return split

    def _choose(self, key_frame: bool) -> int:
        raise NotImplementedError

    def update(self, feedback: Feedback) -> None:
        """Learn from an offloaded frame; policies that do not learn ignore it."""

    def stats(self) -> dict:
        """A small JSON-able summary for monitoring."""
        return {"policy": self.name, "frames": self.t}


class FixedSplit(Policy):
    """Always the same split: device-only or edge-only."""

    def __init__(self, profile: SplitProfile, split: int, name: str) -> None:
        super().__init__(profile)
        self.split = split
        self.name = name

    def _choose(self, key_frame: bool) -> int:
        return self.split


class Oracle(Policy):
    """Knows the true mean total delay of every split at every frame (simulation only)."""

    name = "oracle"

    def __init__(self, profile: SplitProfile, mean_total_s: np.ndarray) -> None:
        super().__init__(profile)
        self.best = np.argmin(mean_total_s, axis=1)

    def _choose(self, key_frame: bool) -> int:
        return int(self.best[self.t])


class Neurosurgeon(Policy):
    """Offline profiling: exact knowledge of the conditions at start, then a fixed split."""

    name = "neurosurgeon"

    def __init__(self, profile: SplitProfile, mean_total_s: np.ndarray) -> None:
        super().__init__(profile)
        self.split = int(np.argmin(mean_total_s[0]))

    def _choose(self, key_frame: bool) -> int:
        return self.split
