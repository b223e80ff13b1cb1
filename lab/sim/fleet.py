"""A fleet in simulation: many devices, each with its own learner, sharing a few edge servers.

Unlike the single-device simulator, the edge's load here is caused by the devices' own
choices. Event-driven, in continuous time:

* a device takes a frame at most every 1/fps seconds (the next one as soon as the last is
  done, if that is later), runs its head (its own front-end delay, jittered), and either
  finishes locally or sends the cut tensor: RTT/2 + bits/bandwidth later it reaches an edge;
* requests are handed to the edges in turn, as an MQTT shared subscription does (round robin);
* an edge serves one batch at a time: the oldest request's split, with every request for the
  same split that queued meanwhile (up to ``max_batch``, none waited for). A batch of b costs
  ``layers x layer_overhead + b x MACs / edge_rate``: per-call overhead once, arithmetic per
  request, the shape of the edge batching measurements in docs/performance.md;
* the result is back RTT/2 later, with the timing acknowledgement a real edge sends (wait,
  compute, batch size); the device's learner learns from it as on the real system;
* every second each edge publishes its load (busy fraction, mean wait), as its stats do.

Devices join and leave. The fleet oracle is the best static assignment of one split per
device, found by coordinate descent over each device's undominated splits, each candidate
assignment scored by this same simulation with the same random draws (``fleet_oracle``).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from common.errors import ConfigurationError
from common.json_file import read_json
from device_app.learner.policy import Feedback, FixedSplit, Policy
from device_app.learner.profile import SplitProfile, load_profile
from device_app.learner.registry import make_policy
from mqtt.protocol import LOAD_PERIOD_S, LoadWindow

from .simulator import DEFAULT_EDGE_RATE, DEFAULT_LAYER_OVERHEAD_S, edge_work_s



@dataclass(frozen=True)
class DeviceSpec:
    name: str
    profile: SplitProfile  # its front-end delays are this device's
    bandwidth: tuple[tuple[float, float], ...]  # (from second, Mbit/s): the uplink over time
    rtt_ms: float
    fps: float
    join_s: float = 0.0
    leave_s: float = math.inf

    def mbps(self, t: float) -> float:
        value = self.bandwidth[0][1]
        for start, mbps in self.bandwidth:
            if t >= start:
                value = mbps
        return value


@dataclass(frozen=True)
class FleetSpec:
    devices: tuple[DeviceSpec, ...]
    edges: int
    duration_s: float
    edge_rate: float = DEFAULT_EDGE_RATE
    layer_overhead_s: float = DEFAULT_LAYER_OVERHEAD_S
    max_batch: int = 8
    noise: float = 0.05
    key_frame_prob: float = 0.1

    def __post_init__(self) -> None:
        if not self.devices or self.edges < 1 or self.duration_s <= 0 or self.max_batch < 1:
            raise ValueError("a fleet needs devices, at least one edge, a positive duration and max_batch >= 1")

    def solo_delay(self, d: DeviceSpec, t: float = 0.0) -> np.ndarray:
        """Every split's mean delay for device ``d`` alone with an idle edge."""
        p = d.profile
        offload = np.arange(p.n_splits) != p.device_only
        net = (d.rtt_ms * 1e-3 + p.transfer_bits / (d.mbps(t) * 1e6)) * offload
        return p.front_delay_s + net + self.service_s(p, 1) * offload

    def service_s(self, p: SplitProfile, batch: int) -> np.ndarray:
        return edge_work_s(p, self.edge_rate, self.layer_overhead_s, batch)


@dataclass
class Edge:
    queue: list = field(default_factory=list)  # pending requests, oldest first
    busy_until: float = 0.0
    busy_s: float = 0.0  # total time serving
    load: LoadWindow = field(default_factory=lambda: LoadWindow(0.0))  # what its next load report says
    batches: list = field(default_factory=list)  # sizes


@dataclass
class FleetResult:
    policy: str
    delays: dict[str, np.ndarray]  # per device, per frame (s)
    splits: dict[str, np.ndarray]
    times: dict[str, np.ndarray]  # frame start times
    edge_utilisation: list[float]
    batch_sizes: list[int]
    solo_best_s: dict[str, float]

    def summary(self, steady_from: float = 0.0, oracle_mean_s: float | None = None) -> dict:
        means = {d: float(v.mean()) for d, v in self.delays.items() if len(v)}
        rel = np.array([self.solo_best_s[d] / means[d] for d in means])
        switches, moves = [], []
        for d, s in self.splits.items():
            keep = self.times[d] >= steady_from
            if keep.sum() > 1:
                switches.append(100.0 * np.count_nonzero(np.diff(s[keep])) / (keep.sum() - 1))
                moves.append(100.0 * held_changes(s[keep]) / (keep.sum() - 1))
        out = {
            "policy": self.policy,
            "devices": len(self.delays),
            "fleet_mean_s": float(np.mean(list(means.values()))),
            "device_mean_s": means,
            "device_p95_s": {d: float(np.percentile(v, 95)) for d, v in self.delays.items() if len(v)},
            "fairness": float(rel.sum() ** 2 / (len(rel) * (rel**2).sum())),
            "switches_per_100": float(np.mean(switches)) if switches else 0.0,
            "moves_per_100": float(np.mean(moves)) if moves else 0.0,
            "edge_utilisation": self.edge_utilisation,
            "batch_mean": float(np.mean(self.batch_sizes)) if self.batch_sizes else 0.0,
        }
        if oracle_mean_s is not None:
            out["ratio_to_oracle"] = out["fleet_mean_s"] / oracle_mean_s
        return out


def held_changes(splits: np.ndarray) -> int:
    """Changes of the split a device holds (for two frames or more): oscillation, as opposed to a
    one-frame probe or re-check, which is exploration and comes back."""
    held = [int(splits[0])]
    for k in range(1, len(splits)):
        if splits[k] != held[-1] and (k + 1 < len(splits) and splits[k + 1] == splits[k]):
            held.append(int(splits[k]))
    return len(held) - 1


def simulate_fleet(spec: FleetSpec, policies: dict[str, Policy], seed: int = 0, name: str = "") -> FleetResult:
    """Play every device's policy through the fleet (same ``seed``: same draws for any policies)."""
    devices = {d.name: d for d in spec.devices}
    edges = [Edge() for _ in range(spec.edges)]
    events: list = []  # (time, order, kind, payload)
    order = iter(range(1 << 62))
    next_edge = 0
    # Per-device noise and key-frame draws come from the device's own stream, so that one device's
    # change of split does not reshuffle every other device's luck.
    streams = {d.name: np.random.default_rng([seed, k]) for k, d in enumerate(spec.devices)}
    out_delay: dict[str, list] = {d: [] for d in devices}
    out_split: dict[str, list] = {d: [] for d in devices}
    out_time: dict[str, list] = {d: [] for d in devices}
    for d in spec.devices:
        heapq.heappush(events, (d.join_s, next(order), "frame", d.name))
    for t in np.arange(LOAD_PERIOD_S, spec.duration_s, LOAD_PERIOD_S):
        heapq.heappush(events, (float(t), next(order), "load", None))

    def jitter(stream) -> float:
        return max(1.0 + spec.noise * stream.standard_normal(), 0.1)

    def start_batch(e: int, now: float) -> None:
        edge = edges[e]
        if edge.busy_until > now or not edge.queue:
            return
        first = edge.queue[0]
        same = [r for r in edge.queue if r["split"] == first["split"]][: spec.max_batch]
        for r in same:
            edge.queue.remove(r)
        p = devices[first["device"]].profile
        service = float(spec.service_s(p, len(same))[first["split"]]) * jitter(streams[first["device"]])
        edge.busy_until = now + service
        edge.busy_s += service
        edge.batches.append(len(same))
        waits = [now - r["arrived"] for r in same]
        edge.load.batch(service, waits)
        for r, wait in zip(same, waits):
            back = now + service + devices[r["device"]].rtt_ms * 1e-3 / 2
            heapq.heappush(events, (back, next(order), "result", {**r, "wait": wait, "compute": service,
                                                                  "batch": len(same)}))
        heapq.heappush(events, (edge.busy_until, next(order), "edge-free", e))

    def frame_rate(device: DeviceSpec) -> float:
        """Frames per second the device has been taking lately (what its runtime measures)."""
        t = out_time[device.name][-20:]
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else device.fps

    def finish_frame(device: DeviceSpec, started: float, done: float, split: int) -> None:
        out_delay[device.name].append(done - started)
        out_split[device.name].append(split)
        out_time[device.name].append(started)
        nxt = max(done, started + 1.0 / device.fps)
        if nxt < min(device.leave_s, spec.duration_s):
            heapq.heappush(events, (nxt, next(order), "frame", device.name))

    while events:
        now, _, kind, payload = heapq.heappop(events)
        if now > spec.duration_s and kind != "result":
            continue
        if kind == "frame":
            d = devices[payload]
            stream = streams[d.name]
            policy = policies[d.name]
            split = policy.choose(bool(stream.random() < spec.key_frame_prob))
            front = float(d.profile.front_delay_s[split]) * jitter(stream)
            if split == d.profile.device_only:
                finish_frame(d, now, now + front, split)
                continue
            upload = (d.rtt_ms * 1e-3 / 2 + d.profile.transfer_bits[split] / (d.mbps(now) * 1e6)) * jitter(stream)
            e = next_edge
            next_edge = (next_edge + 1) % spec.edges
            request = {"device": d.name, "split": split, "started": now, "sent": now + front,
                       "arrived": now + front + upload, "edge": e}
            heapq.heappush(events, (request["arrived"], next(order), "arrive", request))
        elif kind == "arrive":
            edges[payload["edge"]].queue.append(payload)
            start_batch(payload["edge"], now)
        elif kind == "edge-free":
            start_batch(payload, now)
        elif kind == "result":
            r = payload
            d = devices[r["device"]]
            offload = now - r["sent"]
            policies[d.name].update(Feedback(r["split"], offload, offload - r["compute"], r["compute"],
                                             wait_s=r["wait"], batch_size=r["batch"]))
            finish_frame(d, r["started"], now, r["split"])
        elif kind == "load":
            for edge in edges:
                report = edge.load.report(len(edge.queue), now)
                for name, p in policies.items():
                    if devices[name].join_s <= now < devices[name].leave_s:
                        p.edge_load(report.utilisation, report.wait_s, report.service_s, frame_rate(devices[name]),
                                    spec.edges)
    return FleetResult(
        policy=name,
        delays={d: np.array(v) for d, v in out_delay.items()},
        splits={d: np.array(v, dtype=int) for d, v in out_split.items()},
        times={d: np.array(v) for d, v in out_time.items()},
        edge_utilisation=[min(e.busy_s / spec.duration_s, 1.0) for e in edges],
        batch_sizes=[b for e in edges for b in e.batches],
        solo_best_s={d.name: float(spec.solo_delay(d, d.join_s).min()) for d in spec.devices},
    )


def fleet_policies(spec: FleetSpec, policy: str, seed: int = 0) -> dict[str, Policy]:
    """One independent learner per device (Neurosurgeon: each device's best split alone, at its join)."""
    out = {}
    for k, d in enumerate(spec.devices):
        if policy == "neurosurgeon":
            out[d.name] = FixedSplit(d.profile, int(np.argmin(spec.solo_delay(d, d.join_s))), "neurosurgeon")
        else:
            out[d.name] = make_policy(policy, d.profile, seed=[seed, k])
    return out


def undominated_splits(spec: FleetSpec, d: DeviceSpec) -> list[int]:
    """Splits not beaten on every count (front delay, bits, edge work) by another one."""
    p = d.profile
    cost = np.stack([p.front_delay_s, p.transfer_bits, spec.service_s(p, 1)], axis=1)
    keep = []
    for k in range(p.n_splits):
        worse = np.all(cost <= cost[k], axis=1) & np.any(cost < cost[k], axis=1)
        if not worse.any():
            keep.append(k)
    return keep


def fleet_oracle(spec: FleetSpec, seed: int = 0, sweeps: int = 3, candidates: int = 8,
                 log=lambda *_: None) -> tuple[dict[str, int], float]:
    """The best static assignment found by coordinate descent: from each device's best split alone,
    change one device's split at a time to the first of its ``candidates`` best undominated
    splits (alone) that lowers the fleet mean delay (every candidate scored by ``simulate_fleet``
    with the same draws), until a sweep changes nothing. A local optimum, so an upper bound on
    the best static assignment (finding the global one is a combinatorial search); learners are
    measured against it."""
    def score(assign: dict[str, int]) -> float:
        policies = {d.name: FixedSplit(d.profile, assign[d.name], "fixed") for d in spec.devices}
        return simulate_fleet(spec, policies, seed).summary()["fleet_mean_s"]

    assign = {d.name: int(np.argmin(spec.solo_delay(d, d.join_s))) for d in spec.devices}
    best = score(assign)
    for sweep in range(sweeps):
        changed = False
        for d in spec.devices:
            solo = spec.solo_delay(d, d.join_s)
            for k in sorted(undominated_splits(spec, d), key=lambda k: solo[k])[:candidates]:
                if k == assign[d.name]:
                    continue
                trial = {**assign, d.name: k}
                value = score(trial)
                if value < best - 1e-9:
                    assign, best, changed = trial, value, True
        log(f"fleet oracle: sweep {sweep + 1}, fleet mean {best * 1e3:.2f} ms")
        if not changed:
            break
    return assign, best


class FleetError(ConfigurationError):
    """A fleet description that cannot be used, with the file and entry at fault."""


def load_fleet(path: str | Path) -> FleetSpec:
    """A fleet from JSON: ``{"edges": M, "duration_s": S, "profile": "tiny-yolov2-tx2", "devices":
    [{"name", "speed", "bandwidth_mbps" (a number, or [[from_s, mbps], ...]), "rtt_ms", "fps",
    "join_s", "leave_s"}, ...]}``; ``speed`` divides the profile's front-end delays."""
    path = Path(path)
    doc = read_json(path, FleetError)
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), list) or not doc["devices"]:
        raise FleetError(f"{path}: expected an object with a non-empty 'devices' list")
    unknown = set(doc) - {"edges", "duration_s", "profile", "devices", "max_batch"}
    if unknown:
        raise FleetError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")

    def number(value, where, low=0.0, allow_inf=False) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
            math.isfinite(value) or (allow_inf and value == math.inf))
        if not ok or value < low:
            raise FleetError(f"{path}: {where} must be a number >= {low:g}, got {value!r}")
        return float(value)

    try:
        base = load_profile(doc.get("profile", "tiny-yolov2-tx2"))
    except ValueError as exc:
        raise FleetError(f"{path}: profile: {exc}") from None
    devices, names = [], set()
    for i, entry in enumerate(doc["devices"]):
        where = f"devices[{i}]"
        if not isinstance(entry, dict):
            raise FleetError(f"{path}: {where} must be an object")
        unknown = set(entry) - {"name", "speed", "bandwidth_mbps", "rtt_ms", "fps", "join_s", "leave_s"}
        if unknown:
            raise FleetError(f"{path}: {where}: unknown field(s) {', '.join(sorted(unknown))}")
        name = entry.get("name", f"dev-{i:02d}")
        if not isinstance(name, str) or not name or name in names:
            raise FleetError(f"{path}: {where}.name must be a unique non-empty string, got {name!r}")
        names.add(name)
        bw = entry.get("bandwidth_mbps", 100.0)
        steps = [[0.0, bw]] if not isinstance(bw, list) else bw
        if not steps or not all(isinstance(st, list) and len(st) == 2 for st in steps):
            raise FleetError(f"{path}: {where}.bandwidth_mbps must be a number or a list of [from_s, mbps]")
        bandwidth = tuple((number(t, f"{where}.bandwidth_mbps time"), number(v, f"{where}.bandwidth_mbps", 1e-3))
                          for t, v in steps)
        speed = number(entry.get("speed", 1.0), f"{where}.speed", 1e-3)
        devices.append(DeviceSpec(name, replace(base, front_delay_s=base.front_delay_s / speed), bandwidth,
                                  number(entry.get("rtt_ms", 10.0), f"{where}.rtt_ms"),
                                  number(entry.get("fps", 10.0), f"{where}.fps", 1e-3),
                                  number(entry.get("join_s", 0.0), f"{where}.join_s"),
                                  number(entry.get("leave_s", math.inf), f"{where}.leave_s", allow_inf=True)))
    edges = doc.get("edges", 1)
    if not isinstance(edges, int) or isinstance(edges, bool) or edges < 1:
        raise FleetError(f"{path}: edges must be a whole number >= 1, got {edges!r}")
    max_batch = doc.get("max_batch", 8)
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise FleetError(f"{path}: max_batch must be a whole number >= 1, got {max_batch!r}")
    return FleetSpec(tuple(devices), edges, number(doc.get("duration_s", 120.0), "duration_s", 1e-3),
                     max_batch=max_batch)


def make_fleet(n_devices: int, n_edges: int, duration_s: float = 120.0, seed: int = 0, churn: bool = True,
               profile: str = "tiny-yolov2-tx2", drops: bool = False) -> FleetSpec:
    """A heterogeneous fleet on one bundle: device speeds (the paper's TX2, a board 2x faster, or
    2-4x slower), uplinks (20-400 Mbit/s), RTTs (2-20 ms), cameras (5-15 fps); with ``churn`` a
    quarter of the devices join during the first half and a quarter leave during the second; with
    ``drops`` every other device's uplink falls to a tenth for the middle third (a congested cell)."""
    rng = np.random.default_rng(seed)
    base = load_profile(profile)
    devices = []
    for k in range(n_devices):
        speed = float(rng.choice([0.25, 0.5, 1.0, 2.0]))
        mbps = float(rng.choice([20.0, 50.0, 100.0, 200.0, 400.0]))
        join = float(rng.uniform(0, duration_s / 2)) if churn and k % 4 == 1 else 0.0
        leave = float(rng.uniform(duration_s / 2, duration_s)) if churn and k % 4 == 2 else math.inf
        devices.append(DeviceSpec(
            name=f"dev-{k:02d}", profile=replace(base, front_delay_s=base.front_delay_s / speed),
            bandwidth=((0.0, mbps), (duration_s / 3, mbps / 10), (2 * duration_s / 3, mbps)) if drops and k % 2 == 0
            else ((0.0, mbps),), rtt_ms=float(rng.choice([2.0, 5.0, 10.0, 20.0])),
            fps=float(rng.choice([5.0, 10.0, 15.0])), join_s=join, leave_s=leave))
    return FleetSpec(tuple(devices), n_edges, duration_s)
