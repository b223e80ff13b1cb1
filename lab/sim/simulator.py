"""Trace-driven simulation of a device choosing splits against a changing network and edge.

Ground truth for frame t and split p (device-only has no offloading delay):

    d_e(p,t) = rtt + transfer_bits(p)/bandwidth
               + edge_slowdown·(backend_MACs(p)/edge_rate + backend_layers(p)·layer_overhead)

times (1 + noise·N(0,1)), clipped at 0, and times an outlier factor on the frames a schedule
makes outliers (a pause, a retransmission: unforeseeable, so not part of the oracle's mean). The
total delay is d_f(p) + d_e(p,t). During an outage (no edge online: a restart) every split runs on
the device and nothing is fed back; the learner hears that the edge is back when it is. The noise
draws are made once per world, so every policy run on the same world sees the same draws and
regrets are comparable frame by frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from device_app.learner.policy import Feedback, Policy
from device_app.learner.profile import SplitProfile

from .trace import Trace

DEFAULT_EDGE_RATE = 7e11  # MAC/s the edge sustains on the tail
DEFAULT_LAYER_OVERHEAD_S = 1e-4  # per back-end layer launch cost on the edge


def edge_work_s(profile: SplitProfile, edge_rate: float = DEFAULT_EDGE_RATE,
                layer_overhead_s: float = DEFAULT_LAYER_OVERHEAD_S, batch: int = 1) -> np.ndarray:
    """Every split's tail time on an idle edge for a batch of ``batch`` requests: per-layer launch
    overhead once, arithmetic per request."""
    return profile.backend_layers * layer_overhead_s + batch * profile.backend_macs / edge_rate


@dataclass(frozen=True)
class World:
    """Everything a simulated run needs, drawn once from a seed."""

    profile: SplitProfile
    net_s: np.ndarray  # (N, K) observed network part (transfer + rtt), noisy
    edge_s: np.ndarray  # (N, K) observed edge-compute part, noisy
    mean_total_s: np.ndarray  # (N, K) true mean total delay
    key_frame: np.ndarray  # (N,) bool
    conditions: dict[str, np.ndarray] = field(repr=False)
    outage: np.ndarray | None = None  # (N,) bool: no edge online, every frame runs on the device

    @property
    def frames(self) -> int:
        return int(self.key_frame.shape[0])

    @property
    def total_s(self) -> np.ndarray:
        """(N, K) realised total delay of every split at every frame."""
        return self._device_in_outage(self.profile.front_delay_s + self.net_s + self.edge_s)

    @property
    def oracle_s(self) -> np.ndarray:
        """(N, K) what the oracle knows: every split's mean delay, device-only during an outage."""
        return self._device_in_outage(self.mean_total_s)

    def _device_in_outage(self, total: np.ndarray) -> np.ndarray:
        if self.outage is None or not self.outage.any():
            return total
        total = total.copy()
        total[self.outage] = self.profile.front_delay_s[self.profile.device_only]
        return total


def build_world(
    profile: SplitProfile,
    trace: Trace,
    frames: int,
    seed: int,
    noise: float = 0.1,
    key_frame_prob: float = 0.1,
    edge_rate: float = DEFAULT_EDGE_RATE,
    layer_overhead_s: float = DEFAULT_LAYER_OVERHEAD_S,
    outliers: np.ndarray | None = None,
    outage: np.ndarray | None = None,
) -> World:
    """``outliers``: (N,) factor of each frame's offloading delay (1: none); ``outage``: (N,) bool."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if noise < 0 or not 0 <= key_frame_prob <= 1 or edge_rate <= 0 or layer_overhead_s < 0:
        raise ValueError("noise and layer overhead must be >= 0, key-frame probability in [0, 1], edge rate > 0")
    cond = trace.per_frame(frames)
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((frames, profile.n_splits))
    key_draw = rng.random(frames) < key_frame_prob
    key = cond["key_frame"] if "key_frame" in cond else key_draw

    offload = (np.arange(profile.n_splits) != profile.device_only).astype(np.float64)
    rtt = cond["rtt_ms"][:, None] * 1e-3
    bps = cond["bandwidth_mbps"][:, None] * 1e6
    net_mean = (rtt + profile.transfer_bits / bps) * offload
    edge_mean = cond["edge_slowdown"][:, None] * edge_work_s(profile, edge_rate, layer_overhead_s) * offload
    scale = np.maximum(1.0 + noise * eps, 0.0)
    if outliers is not None:
        scale *= np.asarray(outliers, dtype=np.float64)[:frames, None]
    return World(
        profile=profile,
        net_s=net_mean * scale,
        edge_s=edge_mean * scale,
        mean_total_s=profile.front_delay_s + net_mean + edge_mean,
        key_frame=np.asarray(key, dtype=bool),
        conditions=cond,
        outage=None if outage is None else np.asarray(outage, dtype=bool)[:frames],
    )


@dataclass(frozen=True)
class RunResult:
    policy: str
    delay_s: np.ndarray  # (N,) realised total delay per frame
    splits: np.ndarray  # (N,) chosen split per frame
    oracle_delay_s: np.ndarray  # (N,) realised delay of the oracle's choice
    oracle_splits: np.ndarray
    device_only: int
    policy_stats: dict

    @property
    def regret_s(self) -> float:
        return float(np.sum(self.delay_s) - np.sum(self.oracle_delay_s))

    def summary(self, with_splits: bool = False) -> dict:
        out = {
            "policy": self.policy,
            "frames": int(self.delay_s.shape[0]),
            "mean_delay_s": float(np.mean(self.delay_s)),
            "p95_delay_s": float(np.percentile(self.delay_s, 95)),
            "regret_s": self.regret_s,
            "oracle_mean_delay_s": float(np.mean(self.oracle_delay_s)),
            "ratio_to_oracle": float(np.mean(self.delay_s) / np.mean(self.oracle_delay_s)),
            "offload_fraction": float(np.mean(self.splits != self.device_only)),
            "policy_stats": self.policy_stats,
        }
        if with_splits:
            out["splits"] = self.splits.tolist()
        return out


def run(policy: Policy, world: World, progress=None, every: int = 500) -> RunResult:
    """Play ``policy`` through ``world``, feeding back every offloaded frame.

    ``progress``, when given, is called every ``every`` frames with the number of
    frames done and the splits chosen so far.
    """
    n = world.frames
    device_only = world.profile.device_only
    total = world.total_s
    outage = world.outage if world.outage is not None else np.zeros(n, dtype=bool)
    splits = np.empty(n, dtype=np.int64)
    for t in range(n):
        if t and outage[t - 1] and not outage[t]:
            policy.edge_online()
        p = policy.choose(bool(world.key_frame[t]))
        if outage[t]:
            p = device_only  # no edge to offload to: the device runs it all, and learns nothing
        splits[t] = p
        if p != device_only:
            net, edge = float(world.net_s[t, p]), float(world.edge_s[t, p])
            policy.update(Feedback(split=p, offload_s=net + edge, transfer_s=net, edge_s=edge))
        if progress is not None and (t + 1) % every == 0:
            progress(t + 1, splits[: t + 1])
    oracle = np.argmin(world.oracle_s, axis=1)
    rows = np.arange(n)
    return RunResult(
        policy=policy.name,
        delay_s=total[rows, splits],
        splits=splits,
        oracle_delay_s=total[rows, oracle],
        oracle_splits=oracle,
        device_only=device_only,
        policy_stats=policy.stats(),
    )
