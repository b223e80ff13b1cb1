"""Live runs replayed offline: a learner on the conditions the live testbed measured, in seconds.

``bench/bench_live.py`` forces every candidate split through each schedule. Those forced runs are a
measurement of the environment, not of a learner: what split p's frame f took, and how the edge's
acknowledgement split it, whoever chooses. A ``LiveTrace`` keeps just that (per forced split and
frame: the whole delay, the offloading delay, the edge's compute, its queueing wait, its batch),
with the contexts of the splits as the device's learner saw them and the live oracle's stretches.
``replay`` then plays any policy through it: each frame the policy chooses a split and is fed that
split's measurement of that frame, as a device would have been. What a replay cannot show: how
the policy's own choices would have changed the conditions (a large request drains a token
bucket that the next small one then waits on), and splits that were not forced. Traces ship in ``lab/live_traces``.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Where the shipped traces are.
TRACES = Path(__file__).resolve().parent / "live_traces"
#: The devices' deadline in the live runs (``bench_live``): what a missed one teaches the learner.
DEADLINE_S = 1.0
_FIELDS = ("delay", "offload", "edge", "wait", "batch")


@dataclass(frozen=True)
class LiveTrace:
    """The forced splits of one live run of one schedule. Times in seconds; ``offload`` is NaN on
    frames that were not answered in time (finished on the device)."""

    name: str
    scenario: str
    splits: list[int]  # the forced offloading splits and last device-only, in the bundle's numbering
    contexts: np.ndarray  # (len(splits), 7): their contexts, as the learner saw them
    forced: dict[str, np.ndarray]  # field -> (len(splits) - 1, frames): the offloading splits
    device_only: np.ndarray  # (frames,) device-only's delay
    stretches: list[tuple[int, int]]  # the live oracle's stretches
    live_ans_s: float | None = None  # the mean delay ``ans`` had in the live run itself

    @property
    def frames(self) -> int:
        return int(self.device_only.size)

    def oracle_s(self) -> float:
        """The live oracle's mean delay: per stretch, the forced split (or device-only) best over it."""
        series = [*self.forced["delay"], self.device_only]
        return float(np.mean(np.concatenate([min((s[a:b] for s in series), key=np.mean) for a, b in self.stretches])))

    def save(self, path: Path) -> None:
        doc = {"name": self.name, "scenario": self.scenario, "splits": self.splits,
               "contexts": self.contexts.tolist(), "stretches": [list(s) for s in self.stretches],
               "device_only_us": _micro(self.device_only), "live_ans_s": self.live_ans_s,
               **{f"{k}_us": [_micro(row) for row in self.forced[k]] for k in _FIELDS if k != "batch"},
               "batch": self.forced["batch"].astype(int).tolist()}
        with gzip.open(path, "wt") as out:
            json.dump(doc, out, separators=(",", ":"))

    @classmethod
    def load(cls, path: Path) -> LiveTrace:
        with gzip.open(path, "rt") as f:
            doc = json.load(f)
        forced = {k: np.array(doc[f"{k}_us"], dtype=np.float64) / 1e6 for k in _FIELDS if k != "batch"}
        forced["batch"] = np.array(doc["batch"], dtype=np.float64)
        return cls(doc["name"], doc["scenario"], list(doc["splits"]), np.array(doc["contexts"], dtype=np.float64),
                   forced, np.array(doc["device_only_us"], dtype=np.float64) / 1e6,
                   [tuple(s) for s in doc["stretches"]], doc.get("live_ans_s"))


def _micro(values: np.ndarray) -> list:
    """Whole microseconds (None for NaN): a trace's JSON stays small."""
    return [None if not np.isfinite(v) else int(round(v * 1e6)) for v in np.asarray(values, dtype=np.float64)]


def from_records(name: str, scenario: str, runs: dict[str, list[dict]], contexts_of, device_only: int,
                 stretches: list[tuple[int, int]]) -> LiveTrace:
    """A trace from ``bench_live``'s records per contender (``split-P`` for the forced ones);
    ``contexts_of(splits)``: the learner's contexts of those splits."""
    splits = sorted(int(k.split("-")[1]) for k in runs if k.startswith("split-") and int(k.split("-")[1]) != device_only)
    frames = len(runs[f"split-{splits[0]}"])
    forced = {k: np.full((len(splits), frames), np.nan) for k in _FIELDS}
    for i, p in enumerate(splits):
        for f, r in enumerate(runs[f"split-{p}"][:frames]):
            forced["delay"][i, f] = r["delay_s"]
            t = r.get("timing")
            if t:
                forced["offload"][i, f], forced["edge"][i, f] = t["offload_s"], t["edge_compute_s"]
                forced["wait"][i, f], forced["batch"][i, f] = t["edge_wait_s"], t["batch_size"]
    forced["batch"] = np.nan_to_num(forced["batch"], nan=1.0)
    if f"split-{device_only}" not in runs:
        raise ValueError("a trace needs device-only forced through the schedule too")
    alone = np.array([r["delay_s"] for r in runs[f"split-{device_only}"][:frames]])
    live = runs.get("ans")
    return LiveTrace(name, scenario, [*splits, device_only], np.asarray(contexts_of([*splits, device_only]), dtype=np.float64),
                     forced, alone, [tuple(s) for s in stretches],
                     float(np.mean([r["delay_s"] for r in live])) if live else None)


def replay(trace: LiveTrace, make_policy, warmup: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Play a policy (``make_policy(profile)``, e.g. ``ANS``) through the trace: the delay of each
    frame and the split it chose (bundle numbering). The first ``warmup`` frames are played twice,
    once unscored, as the live runs start with a warm-up in the baseline."""
    from device_app.learner.policy import Feedback
    from device_app.learner.profile import SplitProfile

    forced = trace.forced
    answered = np.isfinite(forced["offload"])
    front = [float(np.median((forced["delay"][i] - forced["offload"][i])[answered[i]])) if answered[i].any()
             else float(np.nanmedian(forced["delay"][i])) for i in range(len(trace.splits) - 1)]
    front.append(float(np.nanmedian(trace.device_only)))
    profile = SplitProfile(trace.name, trace.contexts, np.array(front), "replay")
    policy = make_policy(profile)
    delays, chosen = [], []
    for f in [*range(min(warmup, trace.frames)), *range(trace.frames)]:
        a = policy.choose(False)
        if a == len(trace.splits) - 1:
            delay = trace.device_only[f]
        else:
            delay = forced["delay"][a, f]
            if answered[a, f]:
                offload = forced["offload"][a, f]
                edge = min(forced["edge"][a, f], offload)
                policy.update(Feedback(a, offload, offload - edge, edge, wait_s=min(forced["wait"][a, f], offload - edge),
                                       batch_size=int(forced["batch"][a, f])))
            elif delay >= DEADLINE_S:  # a missed deadline (else no edge was there: the device sent nothing)
                policy.update(Feedback(a, DEADLINE_S, censored=True))
        delays.append(delay)
        chosen.append(trace.splits[a])
    skip = len(delays) - trace.frames
    return np.array(delays[skip:]), np.array(chosen[skip:])


def shipped() -> list[LiveTrace]:
    """Every trace in ``lab/live_traces``, by name."""
    return [LiveTrace.load(p) for p in sorted(TRACES.glob("*.json.gz"))]
