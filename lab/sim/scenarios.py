"""The built-in scenarios of the experiments: one steady world and four changing ones.

Bandwidths are chosen around the cross-over points of the paper's profiles, so the
best split really moves: on tiny-YOLOv2 (TX2) split 20 wins at 100 Mbit/s and
device-only below about 40; on VGG16 edge-only wins down to about 10 Mbit/s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lab.random_schedule import Schedule, named

from .trace import Trace, make_trace

RTT_MS = 10.0


def steady(frames: int) -> Trace:
    return make_trace([(0, 100.0, RTT_MS, 1.0)])


def bandwidth_drop(frames: int) -> Trace:
    """100 Mbit/s, a drop to 8 Mbit/s for the middle third, then recovery."""
    third = frames // 3
    return make_trace([(0, 100.0, RTT_MS, 1.0), (third, 8.0, RTT_MS, 1.0), (2 * third, 100.0, RTT_MS, 1.0)])


def edge_overload(frames: int) -> Trace:
    """The edge's tail runs 20 times slower (a saturated, shared GPU) for the middle third:
    enough to move the best split on both paper profiles."""
    third = frames // 3
    return make_trace([(0, 100.0, RTT_MS, 1.0), (third, 100.0, RTT_MS, 20.0), (2 * third, 100.0, RTT_MS, 1.0)])


def rtt_jump(frames: int) -> Trace:
    """The round trip grows from 10 to 90 ms for the middle third (a handover to a cellular
    link, a VPN): every offloading split pays the same 80 ms more, which a learner must not
    take for a bandwidth drop (that would price big tensors far too high)."""
    third = frames // 3
    return make_trace([(0, 100.0, RTT_MS, 1.0), (third, 100.0, RTT_MS + 80.0, 1.0), (2 * third, 100.0, RTT_MS, 1.0)])


def flapping(frames: int, period: int = 300) -> Trace:
    """The link flaps between 150 and 8 Mbit/s every ``period`` frames."""
    rows = [(start, 150.0 if (start // period) % 2 == 0 else 8.0, RTT_MS, 1.0) for start in range(0, frames, period)]
    return make_trace(rows)


SCENARIOS = {
    "steady": steady,
    "bandwidth-drop": bandwidth_drop,
    "edge-overload": edge_overload,
    "flapping": flapping,
    "rtt-jump": rtt_jump,
}


#: A simulated restart: frames without an edge online (the edge warming its tails again, the
#: broker coming back), as a share of the run.
OUTAGE_SHARE = {"edge-restart": 0.05, "broker-restart": 0.01}


@dataclass(frozen=True)
class Scenario:
    """A trace and what it cannot say: outlier frames and outages (see ``build_world``)."""

    trace: Trace
    outliers: np.ndarray | None = None
    outage: np.ndarray | None = None


def scenario(name: str, frames: int) -> Scenario:
    """A built-in scenario by name, or ``random-<seed>``: the random schedule of that seed."""
    if name in SCENARIOS:
        return Scenario(SCENARIOS[name](frames))
    drawn = named(name, frames)
    if drawn is not None:
        return from_schedule(drawn)
    raise ValueError(f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)}, or random-<seed>)")


def from_schedule(schedule: Schedule) -> Scenario:
    frames = schedule.frames
    levels = schedule.levels()
    rtt = RTT_MS + levels["rtt_added_ms"]
    moved = np.flatnonzero(np.any(np.diff(np.stack([levels["bandwidth_mbps"], rtt, levels["edge_slowdown"]]),
                                           axis=1) != 0, axis=0)) + 1
    rows = [(int(f), float(levels["bandwidth_mbps"][f]), float(rtt[f]), float(levels["edge_slowdown"][f]))
            for f in [0, *moved]]
    outage = np.zeros(frames, dtype=bool)
    for restart in schedule.restarts():
        outage[restart.frame:restart.frame + max(1, int(OUTAGE_SHARE[restart.kind] * frames))] = True
    return Scenario(make_trace(rows), schedule.outliers(), outage)
