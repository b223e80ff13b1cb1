"""Shared helpers: seeded simulations the learner tests assert properties of."""

from __future__ import annotations

import numpy as np
import pytest

from device_app.learner.profile import load_profile
from device_app.learner.registry import make_policy
from lab.sim.scenarios import SCENARIOS
from lab.sim.simulator import RunResult, build_world, run


def simulate(profile: str, scenario, policy: str, seed: int = 0, frames: int = 4500, **world) -> RunResult:
    """Run ``policy`` on a built-in profile; ``scenario`` is a built-in name or a Trace."""
    prof = load_profile(profile)
    trace = SCENARIOS[scenario](frames) if isinstance(scenario, str) else scenario
    w = build_world(prof, trace, frames, seed, **world)
    return run(make_policy(policy, prof, w.mean_total_s), w)


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    """Edge and device processes a test started are killed after it, whatever happened."""
    yield
    from .running import kill_leftovers

    kill_leftovers()


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory):
    """The demo detector converted into a bundle, and a 150-frame demo clip, in one folder."""
    pytest.importorskip("keras")
    pytest.importorskip("paho.mqtt.client")
    pytest.importorskip("cv2")
    from .running import make_bundle_and_clip

    tmp = tmp_path_factory.mktemp("running")
    make_bundle_and_clip(tmp)
    return tmp


@pytest.fixture(scope="session")
def tiny():
    return load_profile("tiny-yolov2-tx2")


@pytest.fixture(scope="session")
def vgg():
    return load_profile("vgg16-tx2")


def per_frame_regret(result: RunResult) -> np.ndarray:
    return result.delay_s - result.oracle_delay_s
