"""μLinUCB exactly as the Autodidactic Neurosurgeon paper states it, and plain LinUCB.

Kept as a selectable mode so results can be compared with the paper; the default
learner (``ans``) lives in ``ans.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .persist import StateError, check_header, state_header
from .policy import Feedback, Policy
from .profile import SplitProfile
from .ridge import ArmRidge


@dataclass(frozen=True)
class PaperConfig:
    """μLinUCB's constants as the paper states them."""

    key_weight: float = 0.8  # L on key frames
    nonkey_weight: float = 0.2  # L on other frames
    forced_sampling: bool = True  # every ceil(T^mu)-th frame may not be device-only
    mu: float = 0.25
    horizon: int = 200  # T at start, doubled when passed
    delta: float = 0.1
    c_noise: float = 0.05
    c_theta: float = 1.0
    lam: float = 1.0  # ridge prior

    def __post_init__(self) -> None:
        if not (0 <= self.nonkey_weight <= 1 and 0 <= self.key_weight < 1):
            raise ValueError("frame weights must lie in [0, 1) for key frames and [0, 1] otherwise")


class MuLinUCB(Policy):
    """Lower-confidence-bound selection on raw 7-d contexts.

    index(p) = x_pᵀθ̂ − α·sqrt((1−L)·x_pᵀA⁻¹x_p) + d_f(p), L = ``key_weight`` on key
    frames and ``nonkey_weight`` otherwise; every ceil(T^μ)-th frame device-only is
    excluded (forced sampling). The horizon T starts at ``horizon`` and doubles
    whenever the frame count passes it, which also resets α.
    """

    name = "mu-linucb-paper"
    stateful = True

    def __init__(self, profile: SplitProfile, config: PaperConfig | None = None) -> None:
        super().__init__(profile)
        self.config = c = config or PaperConfig()
        self.x = profile.contexts
        self.offload = np.arange(profile.n_splits) != profile.device_only
        self.c_x = float(np.max(np.linalg.norm(self.x, axis=1)))
        self.model = ArmRidge(self.x[None], c.lam)
        self.horizon = c.horizon
        self._set_horizon(c.horizon)
        self.forced = 0  # frames whose choice was forced to offload

    def _set_horizon(self, horizon: int) -> None:
        self.horizon = horizon
        d = self.x.shape[1]
        log_term = math.log((1.0 + horizon * self.c_x**2) / self.config.delta)
        self.alpha = (self.config.c_theta + self.config.c_noise * math.sqrt(d * log_term)) / (1.0 - self.config.key_weight)
        self.forced_every = math.ceil(horizon**self.config.mu)

    def estimate(self) -> np.ndarray:
        """Expected total delay of every split under the current model."""
        return self.model.mean[0] + self.front_delay_s

    def indices(self, key_frame: bool) -> np.ndarray:
        """The lower-confidence total delay of every split."""
        weight = self.config.key_weight if key_frame else self.config.nonkey_weight
        return self.model.mean[0] - self.alpha * math.sqrt(1.0 - weight) * self.model.width[0] + self.front_delay_s

    def _choose(self, key_frame: bool) -> int:
        t = self.t + 1
        while t > self.horizon:
            self._set_horizon(2 * self.horizon)
        index = self.indices(key_frame)
        if self.config.forced_sampling and t % self.forced_every == 0:
            self.forced += 1
            index = np.where(self.offload, index, np.inf)
        return int(np.argmin(index))

    def update(self, feedback: Feedback) -> None:
        if self.offload[feedback.split]:
            self.model.update(feedback.split, [feedback.offload_s])

    def state(self) -> dict:
        """The ridge model and the clock (the horizon doubling and forced sampling depend on it)."""
        return {**state_header(self), "ridge": self.model.state(0), "t": self.t, "horizon": self.horizon}

    def load_state(self, state: dict, weight: float | None = None) -> None:
        """The paper's algorithm forgets nothing: what was learnt counts in full (``weight`` unused)."""
        check_header(self, state)
        try:
            t, horizon = int(state["t"]), int(state["horizon"])
            if not 0 <= t <= horizon:
                raise ValueError(f"frame count {t} outside the horizon {horizon}")
            self.model.load_state(0, state["ridge"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"learner state is malformed: {exc}") from None
        self.t = t
        self._set_horizon(horizon)

    def stats(self) -> dict:
        return {**super().stats(), "alpha": self.alpha, "forced_every": self.forced_every, "forced": self.forced}


def plain_linucb(profile: SplitProfile) -> MuLinUCB:
    """LinUCB without key-frame weighting or forced sampling, same features and α."""
    policy = MuLinUCB(profile, PaperConfig(key_weight=0.0, nonkey_weight=0.0, forced_sampling=False))
    policy.name = "linucb"
    return policy
