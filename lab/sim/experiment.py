"""Reproduce the paper's comparison: every policy on every scenario and profile, several seeds.

Writes into the output folder: ``results.json`` (every run's summary), ``summary.md``
(mean delay and ratio to the oracle per policy), one PNG per profile and scenario
(cumulative regret, chosen split against the oracle's, delay CDF), and the scenario
traces as CSV so a run can be repeated with ``ans simulate``.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device_app.learner.registry import make_policy

from lab.random_schedule import named

from .codec_arms import sim_profile
from .scenarios import SCENARIOS, scenario
from .simulator import build_world, run

DEFAULT_PROFILES = ("tiny-yolov2-tx2", "vgg16-tx2")
DEFAULT_POLICIES = ("ans", "mu-linucb-paper", "linucb", "neurosurgeon", "oracle", "device-only", "edge-only")
#: Policies drawn in the chosen-split panel (the oracle is always drawn).
SPLIT_PANEL_POLICIES = ("ans", "mu-linucb-paper")


@dataclass(frozen=True)
class Job:
    profile: str
    scenario: str
    policy: str
    seed: int
    frames: int
    noise: float
    key_frame_prob: float


def _run_job(job: Job) -> tuple[Job, dict, np.ndarray, np.ndarray, np.ndarray]:
    profile = sim_profile(job.profile)
    world_of = scenario(job.scenario, job.frames)
    world = build_world(profile, world_of.trace, job.frames, job.seed, job.noise, job.key_frame_prob,
                        outliers=world_of.outliers, outage=world_of.outage)
    result = run(make_policy(job.policy, profile, world.oracle_s), world)
    return job, result.summary(), result.delay_s, result.oracle_delay_s, result.splits


def run_experiment(
    out: Path,
    profiles: tuple[str, ...] = DEFAULT_PROFILES,
    scenarios: tuple[str, ...] = tuple(SCENARIOS),
    policies: tuple[str, ...] = DEFAULT_POLICIES,
    seeds: int = 5,
    frames: int = 4500,
    noise: float = 0.1,
    key_frame_prob: float = 0.1,
    jobs: int | None = None,
    log=print,
) -> dict:
    for p in profiles:
        sim_profile(p)  # fail before any work on a bad profile
    out.mkdir(parents=True, exist_ok=True)
    (out / "traces").mkdir(exist_ok=True)
    for s in scenarios:
        scenario(s, frames).trace.write_csv(out / "traces" / f"{s}.csv")  # (checks every name first)

    todo = [Job(p, s, pol, seed, frames, noise, key_frame_prob)
            for p in profiles for s in scenarios for pol in policies for seed in range(seeds)]
    runs: dict[tuple[str, str, str], list] = {}
    started = time.monotonic()
    workers = jobs or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, (job, summary, delay, oracle_delay, splits) in enumerate(pool.map(_run_job, todo), 1):
            runs.setdefault((job.profile, job.scenario, job.policy), []).append((job.seed, summary, delay, oracle_delay, splits))
            log(f"[{i:>4}/{len(todo)}] {time.monotonic() - started:6.1f}s  {job.profile:<16} {job.scenario:<15} "
                f"{job.policy:<16} seed {job.seed}  ratio {summary['ratio_to_oracle']:.3f}")

    table = _table(runs, profiles, scenarios, policies)
    (out / "results.json").write_text(json.dumps(
        {"settings": {"frames": frames, "seeds": seeds, "noise": noise, "key_frame_prob": key_frame_prob},
         "table": table,
         "runs": [s for v in runs.values() for _, s, *_ in v]}, indent=1))
    (out / "summary.md").write_text(_markdown(table, profiles, scenarios, policies, frames))
    for p in profiles:
        for s in scenarios:
            plot_runs(out / f"{_slug(p)}_{s}.png", p, s, {pol: runs[(p, s, pol)] for pol in policies})
    log(f"wrote {out}/summary.md, results.json and {len(profiles) * len(scenarios)} plots")
    return table


def _slug(profile: str) -> str:
    return Path(profile).stem if os.sep in profile or profile.endswith(".json") else profile


def _table(runs, profiles, scenarios, policies) -> dict:
    table: dict = {}
    for p in profiles:
        for s in scenarios:
            for pol in policies:
                rows = runs[(p, s, pol)]
                ratios = [r[1]["ratio_to_oracle"] for r in rows]
                table.setdefault(p, {}).setdefault(s, {})[pol] = {
                    "mean_delay_s": float(np.mean([r[1]["mean_delay_s"] for r in rows])),
                    "p95_delay_s": float(np.mean([r[1]["p95_delay_s"] for r in rows])),
                    "ratio_to_oracle": float(np.mean(ratios)),
                    "ratio_sd": float(np.std(ratios)),
                    "regret_s": float(np.mean([r[1]["regret_s"] for r in rows])),
                }
    return table


def _markdown(table, profiles, scenarios, policies, frames: int) -> str:
    drawn = [named(s, frames) for s in scenarios]
    if any(drawn):
        return _markdown_random(table, profiles, scenarios, policies, drawn)
    lines = []
    for p in profiles:
        lines += [f"### {p}", "", "| policy | " + " | ".join(scenarios) + " |",
                  "|---|" + "---|" * len(scenarios)]
        for pol in policies:
            cells = []
            for s in scenarios:
                c = table[p][s][pol]
                cells.append(f"{c['mean_delay_s'] * 1e3:.1f} ms ({c['ratio_to_oracle']:.3f})")
            lines.append(f"| {pol} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Cells: mean end-to-end delay per frame, averaged over seeds, and in brackets its ratio to the oracle's.")
    return "\n".join(lines) + "\n"


def _markdown_random(table, profiles, scenarios, policies, drawn) -> str:
    """Random schedules: one row per schedule (what was drawn), the median and the worst."""
    lines = []
    for p in profiles:
        lines += [f"### {p}", "", "| schedule | " + " | ".join(policies) + " |", "|---|" + "---|" * len(policies)]
        for s in scenarios:
            lines.append(f"| {s} | " + " | ".join(f"{table[p][s][pol]['ratio_to_oracle']:.3f}" for pol in policies)
                         + " |")
        for label, fn in (("median", np.median), ("worst", np.max)):
            lines.append(f"| **{label}** | " + " | ".join(
                f"{fn([table[p][s][pol]['ratio_to_oracle'] for s in scenarios]):.3f}" for pol in policies) + " |")
        lines.append("")
    lines.append("Cells: mean delay per frame over the oracle's, averaged over noise seeds. The schedules:")
    lines.append("")
    lines += [f"- {schedule.describe()}" for schedule in drawn if schedule is not None]
    return "\n".join(lines) + "\n"


def plot_runs(path: Path, profile: str, scenario: str, runs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    ax_regret, ax_split, ax_cdf = axes
    others = [pol for pol in runs if pol != "oracle"]
    colour = {"oracle": "black", **{pol: f"C{k % 10}" for k, pol in enumerate(others)}}  # one per policy, every panel
    for pol in others:
        cum = np.mean([np.cumsum(d - o) for _, _, d, o, _ in runs[pol]], axis=0)
        ax_regret.plot(cum, label=pol, color=colour[pol])
    ax_regret.set(title="cumulative regret (mean over seeds)", xlabel="frame", ylabel="s", yscale="symlog")
    ax_regret.legend(fontsize=8)

    seed0 = {pol: rows[0] for pol, rows in runs.items()}
    if "oracle" in seed0:
        ax_split.plot(seed0["oracle"][4], color="black", lw=2.5, label="oracle", zorder=1)
    for pol in SPLIT_PANEL_POLICIES:
        if pol in seed0:
            ax_split.plot(seed0[pol][4], ".", ms=1.5, label=pol, zorder=2, color=colour[pol])
    ax_split.set(title="chosen split (seed 0)", xlabel="frame", ylabel="split index")
    ax_split.legend(fontsize=8, markerscale=6)

    for pol, rows in runs.items():
        d = np.sort(np.concatenate([r[2] for r in rows])) * 1e3
        ax_cdf.plot(d, np.linspace(0, 1, d.size), label=pol, color=colour[pol])
    ax_cdf.set(title="delay CDF (all seeds)", xlabel="end-to-end delay (ms)", ylabel="fraction of frames", xscale="log")
    ax_cdf.legend(fontsize=8)
    fig.suptitle(f"{profile} — {scenario}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
