"""Policies by name, as the command line and the configuration name them."""

from __future__ import annotations

import numpy as np

from .ans import ANS
from .mu_linucb import MuLinUCB, plain_linucb
from .policy import FixedSplit, Neurosurgeon, Oracle, Policy
from .profile import SplitProfile

#: Policies that need the true delays, so exist in simulation only.
NEEDS_TRUTH = ("oracle", "neurosurgeon")
POLICY_NAMES = ("ans", "mu-linucb-paper", "linucb", "neurosurgeon", "oracle", "device-only", "edge-only")


def make_policy(name: str, profile: SplitProfile, mean_total_s: np.ndarray | None = None, seed=None) -> Policy:
    """``seed``: the learner's own random draws (``ans``), for reproducible simulations."""
    if name not in POLICY_NAMES:
        raise ValueError(f"unknown policy '{name}' (choose from {', '.join(POLICY_NAMES)})")
    if name in NEEDS_TRUTH:
        if mean_total_s is None:
            raise ValueError(f"policy '{name}' needs the true delays, so it exists in simulation only")
        return Oracle(profile, mean_total_s) if name == "oracle" else Neurosurgeon(profile, mean_total_s)
    if name == "ans":
        return ANS(profile, seed=seed)
    if name == "mu-linucb-paper":
        return MuLinUCB(profile)
    if name == "linucb":
        return plain_linucb(profile)
    split = profile.device_only if name == "device-only" else 0
    return FixedSplit(profile, split, name)
