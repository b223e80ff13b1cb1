"""The interface every split-selection policy implements, and the feedback it learns from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .persist import StateError
from .profile import SplitProfile

#: Weight of a new head run in the running front-end delay of its split.
FRONT_EWMA = 0.1


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

    Every capability the device, its telemetry, the command line and the simulators use is
    declared here, with a default for a policy that does not have it, so that no caller needs to
    ask what a policy can do. ``front_delay_s`` holds the device's own (measured) front-end delay
    per split; only ``observe_front_delay`` and ``set_front_delay`` change it.
    """

    name = "policy"
    #: Whether ``state``/``load_state`` keep what it learnt across restarts.
    stateful = False

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

    def estimate(self) -> np.ndarray | None:
        """Expected total delay per split, or None for a policy that keeps no estimate."""
        return None

    # -- the device's own front-end delays --

    def observe_front_delay(self, split: int, seconds: float) -> None:
        """A head run of ``split`` just took ``seconds``: the running front-end delay moves by
        ``FRONT_EWMA`` of the difference (a split that may not be offloaded stays excluded)."""
        if np.isfinite(self.front_delay_s[split]):
            self.front_delay_s[split] += FRONT_EWMA * (seconds - self.front_delay_s[split])

    def set_front_delay(self, splits: np.ndarray, seconds: np.ndarray | float) -> None:
        """Set the front-end delay of ``splits`` (a mask or indices); ``inf`` excludes a split."""
        self.front_delay_s[splits] = seconds

    # -- what the edges say of themselves (fleets) --

    def prime_edge(self, compute_s: np.ndarray) -> bool:
        """An edge's own compute table per split; True if the policy started from it."""
        return False

    def edge_load(self, utilisation: float, wait_s: float, service_s: float, frame_rate: float,
                  edges: int = 1) -> None:
        """An edge's load report: its busy share, mean queue wait and service time per run."""

    def edge_online(self) -> None:
        """An edge came online after none was: a chance to re-check offloading now."""

    # -- persistence --

    def state(self) -> dict:
        """Everything learnt, as JSON-able data (``stateful`` policies)."""
        raise StateError(f"policy '{self.name}' keeps no state to save")

    def load_state(self, state: dict, weight: float | None = None) -> None:
        """Resume from ``state()`` output; each saved observation counts ``weight`` of a fresh one
        where the policy weighs them (``weaken``)."""
        raise StateError(f"policy '{self.name}' keeps no state to load")

    def weaken(self, weight: float) -> bool:
        """Let what was learnt count only ``weight`` of fresh observations; False where the policy
        keeps its beliefs at full weight (or has none)."""
        return False


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
