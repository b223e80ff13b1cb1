"""Random schedules of a changing world, drawn from a seed, for the simulator and the live testbed
alike: steps and slow drifts of bandwidth, round-trip time and edge load, single outlier frames,
edge and broker restarts, at random times and of random sizes.

A learner tuned on a handful of hand-written scenarios is judged here on worlds nobody wrote: tune
on some seeds, report on others never looked at (docs/results.md and docs/performance.md name
both). The same schedule drives ``ans experiment --random`` (the simulator) and
``bench/bench_live.py --random`` (the real system).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PREFIX = "random-"  # a random schedule as a scenario: random-<seed>
KINDS = ("bandwidth_mbps", "rtt_added_ms", "edge_slowdown")
BASELINE = {"bandwidth_mbps": 100.0, "rtt_added_ms": 0.0, "edge_slowdown": 1.0}  # where every schedule starts and ends
OUTLIER_FACTOR = 4.0  # an outlier frame's offloading delay, times its usual
DRIFT_EVERY = 10  # a drift moves one step every this many frames (at least 6 steps)


@dataclass(frozen=True)
class Change:
    """From ``frame`` on, ``kind`` holds ``value``; or a one-frame event (``outlier``, ``edge-restart``,
    ``broker-restart``), where ``value`` is the outlier's factor (1 for restarts)."""

    frame: int
    kind: str
    value: float


@dataclass(frozen=True)
class Schedule:
    seed: int
    frames: int
    changes: tuple[Change, ...]  # ordered by frame
    episodes: tuple[str, ...]  # what was drawn, in words

    def levels(self) -> dict[str, np.ndarray]:
        """Per frame: bandwidth (Mbit/s), added round trip (ms) and edge slowdown (x)."""
        out = {kind: np.full(self.frames, BASELINE[kind]) for kind in KINDS}
        for change in self.changes:
            if change.kind in out:
                out[change.kind][change.frame:] = change.value
        return out

    def outliers(self) -> np.ndarray:
        """Per frame: the factor its offloading delay is multiplied by (1 for most frames)."""
        factor = np.ones(self.frames)
        for change in self.changes:
            if change.kind == "outlier":
                factor[change.frame] = change.value
        return factor

    def restarts(self) -> list[Change]:
        return [c for c in self.changes if c.kind in ("edge-restart", "broker-restart")]

    def describe(self) -> str:
        return f"seed {self.seed}: " + ("; ".join(self.episodes) or "steady")


def names(first_seed: int, count: int) -> list[str]:
    """The scenario names of ``count`` random schedules, seeds ``first_seed`` on."""
    return [f"{PREFIX}{seed}" for seed in range(first_seed, first_seed + count)]


def named(name: str, frames: int) -> Schedule | None:
    """The random schedule a scenario name stands for (``random-<seed>``), or None."""
    seed = name.removeprefix(PREFIX)
    return random_schedule(int(seed), frames) if name.startswith(PREFIX) and seed.isdigit() else None


def random_schedule(seed: int, frames: int) -> Schedule:
    """One to three episodes (a change, held, then back), each a step or a drift of bandwidth
    (2-60 Mbit/s from 100), added round trip (20-120 ms) or edge load (2-20x slower); 0, 1, 3 or
    5% of the frames single outliers; an edge restart (30% of schedules) or a broker restart (15%)."""
    if frames < 60:
        raise ValueError(f"a random schedule needs at least 60 frames, got {frames}")
    rng = np.random.default_rng(seed)
    changes: list[Change] = []
    episodes: list[str] = []
    busy: dict[str, list[tuple[int, int]]] = {kind: [] for kind in KINDS}
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(KINDS, p=[0.45, 0.25, 0.3]))
        ramp_in, hold, ramp_out = _ramp(rng, frames), int(rng.uniform(0.1, 0.3) * frames), _ramp(rng, frames)
        # Every episode ends by 90% of the run: how fast a policy comes back is part of the score.
        start = int(rng.uniform(0.1 * frames, 0.9 * frames - (ramp_in + hold + ramp_out)))
        end = start + ramp_in + hold + ramp_out
        if any(a <= end and start <= b for a, b in busy[kind]):
            continue  # one episode per kind at a time
        busy[kind].append((start, end))
        target = {"bandwidth_mbps": lambda: math.exp(rng.uniform(math.log(2.0), math.log(60.0))),
                  "rtt_added_ms": lambda: rng.uniform(20.0, 120.0),
                  "edge_slowdown": lambda: math.exp(rng.uniform(math.log(2.0), math.log(20.0)))}[kind]()
        base = BASELINE[kind]
        changes += _move(kind, start, ramp_in, base, target)
        changes += _move(kind, start + ramp_in + hold, ramp_out, target, base)
        episodes.append(f"{kind} {base:g} -> {target:.3g} at frame {start} ({_shape(ramp_in)}), "
                        f"back from frame {start + ramp_in + hold} ({_shape(ramp_out)})")
    share = float(rng.choice([0.0, 0.01, 0.03, 0.05]))
    n_out = int(round(share * frames))
    for frame in sorted(rng.choice(np.arange(1, frames), size=n_out, replace=False)) if n_out else ():
        changes.append(Change(int(frame), "outlier", OUTLIER_FACTOR))
    if n_out:
        episodes.append(f"{n_out} outlier frames (x{OUTLIER_FACTOR:g})")
    draw = rng.random()
    kind = "edge-restart" if draw < 0.3 else "broker-restart" if draw < 0.45 else None
    if kind is not None:
        frame = int(rng.uniform(0.2, 0.8) * frames)
        changes.append(Change(frame, kind, 1.0))
        episodes.append(f"{kind} at frame {frame}")
    changes = [c for c in changes if c.frame < frames]
    changes.sort(key=lambda c: c.frame)
    return Schedule(seed, frames, tuple(changes), tuple(episodes))


def _ramp(rng: np.random.Generator, frames: int) -> int:
    """Frames a move takes: 0 (a step) half the time, else a drift over 5-25% of the run."""
    return 0 if rng.random() < 0.5 else int(rng.uniform(0.05, 0.25) * frames)


def _shape(ramp: int) -> str:
    return "step" if ramp == 0 else f"drift over {ramp} frames"


def _move(kind: str, start: int, ramp: int, old: float, new: float) -> list[Change]:
    """A step at ``start``, or equal steps over ``ramp`` frames, one per ``DRIFT_EVERY`` frames
    (geometric for rates and slowdowns, linear for the round trip)."""
    if ramp == 0:
        return [Change(start, kind, new)]
    steps = max(6, ramp // DRIFT_EVERY)
    out = []
    for k in range(1, steps + 1):
        f = k / steps
        value = old + f * (new - old) if kind == "rtt_added_ms" else old * (new / old) ** f
        out.append(Change(start + int(round((k - 1) * ramp / steps)), kind, float(value)))
    return out
