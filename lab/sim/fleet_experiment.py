"""``ans experiment --fleet``: fleets of 4, 16 and 64 devices on 1-4 edges, every policy against
the fleet oracle, and a newcomer with and without the edge's compute table.

Writes ``fleet.md`` (the table), ``fleet.json`` and ``fleet.png`` (fleet mean delay per
configuration and policy, relative to the oracle; switches per 100 frames).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from device_app.learner.profile import load_profile

from .fleet import fleet_oracle, fleet_policies, make_fleet, simulate_fleet
from .simulator import edge_work_s

#: (devices, edges, links drop) of the default table.
CONFIGS = ((4, 1, False), (16, 1, False), (16, 2, False), (64, 1, False), (64, 4, False), (16, 1, True))
FLEET_POLICIES = ("ans", "mu-linucb-paper", "neurosurgeon", "device-only", "edge-only")
STEADY_FROM_S = 20.0  # switches are counted after every learner's first 20 s


def _config(job: tuple) -> dict:
    n, m, drops, duration, seed, policies = job
    spec = make_fleet(n, m, duration, seed=seed, drops=drops)
    _, oracle = fleet_oracle(spec, seed=seed)
    row = {"devices": n, "edges": m, "drops": drops, "seed": seed, "oracle_mean_s": oracle}
    for pol in policies:
        result = simulate_fleet(spec, fleet_policies(spec, pol, seed), seed=seed, name=pol)
        summary = result.summary(STEADY_FROM_S, oracle)
        row[pol] = {k: summary[k] for k in ("fleet_mean_s", "ratio_to_oracle", "fairness", "switches_per_100",
                                             "moves_per_100", "edge_utilisation", "batch_mean")}
        row[pol]["p95_worst_s"] = max(summary["device_p95_s"].values())
    return row


def newcomer(profiles=("tiny-yolov2-tx2", "vgg16-tx2"), slowdowns=(1.0, 5.0, 20.0), bandwidth_mbps: float = 100.0,
             frames: int = 200, seeds: int = 5) -> list[dict]:
    """A device's first ``frames`` frames, cold and started from the edge's compute table (its
    tails' times alone, as the edge publishes them), with the edge at ``slowdowns`` x its idle
    speed (load from other devices): regret against the per-frame oracle, mean over seeds."""
    from device_app.learner.registry import make_policy

    from .simulator import build_world, run
    from .trace import make_trace

    rows = []
    for name in profiles:
        profile = load_profile(name)
        offload = np.arange(profile.n_splits) != profile.device_only
        for slow in slowdowns:
            table = np.where(offload, edge_work_s(profile) * slow, np.nan)
            cold, warm = [], []
            for seed in range(seeds):
                world = build_world(profile, make_trace([(0, bandwidth_mbps, 10.0, slow)]), frames, seed=seed)
                cold.append(run(make_policy("ans", profile, seed=seed), world).regret_s)
                policy = make_policy("ans", profile, seed=seed)
                policy.prime_edge(table)
                warm.append(run(policy, world).regret_s)
            rows.append({"profile": name, "edge_slowdown": slow, "cold_regret_s": float(np.mean(cold)),
                         "warm_regret_s": float(np.mean(warm))})
    return rows


def run_fleet_experiment(out: Path, configs=CONFIGS, policies=FLEET_POLICIES, seeds: int = 2, duration_s: float = 60.0,
                         jobs: int | None = None, log=print) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    todo = [(n, m, drops, duration_s, seed, tuple(policies)) for n, m, drops in configs for seed in range(seeds)]
    started = time.monotonic()
    rows = []
    with ProcessPoolExecutor(jobs) as pool:
        for i, row in enumerate(pool.map(_config, todo), 1):
            rows.append(row)
            ans = row.get("ans", {})
            log(f"[{i:>3}/{len(todo)}] {time.monotonic() - started:6.1f}s  {_label(row)}, "
                f"seed {row['seed']}: oracle {row['oracle_mean_s'] * 1e3:.1f} ms, ans "
                f"{ans.get('ratio_to_oracle', float('nan')):.3f}x")
    log("newcomer: cold start against a start from the edge's compute table")
    arrival = newcomer()
    (out / "fleet.json").write_text(json.dumps({"rows": rows, "newcomer": arrival, "duration_s": duration_s,
                                                "seeds": seeds}, indent=1))
    (out / "fleet.md").write_text(fleet_markdown(rows, policies, arrival, duration_s, seeds))
    plot_fleet(out / "fleet.png", rows, policies)
    log(f"wrote {out}/fleet.md, fleet.json and fleet.png")
    return rows


def _key(row: dict) -> tuple:
    return row["devices"], row["edges"], row.get("drops", False)


def _label(row_or_key) -> str:
    n, m, drops = _key(row_or_key) if isinstance(row_or_key, dict) else row_or_key
    return f"{n} devices / {m} edge{'s' if m > 1 else ''}" + (", links drop" if drops else "")


def _mean(rows: list[dict], pol: str, key: str) -> float:
    return float(np.mean([r[pol][key] for r in rows]))


def fleet_markdown(rows, policies, arrival, duration_s, seeds) -> str:
    configs = sorted({_key(r) for r in rows})
    lines = [f"Heterogeneous fleets (`lab.sim.fleet.make_fleet`), {duration_s:g} s each, {seeds} seeds; cells: fleet "
             "mean delay (ratio to the fleet oracle), Jain's fairness, split switches / moves per device per 100 "
             f"frames after {STEADY_FROM_S:g} s (a move changes the split held; a one-frame probe or re-check is "
             "two switches and no move).", "",
             "| fleet | oracle | " + " | ".join(policies) + " |", "|---|---|" + "---|" * len(policies)]
    for config in configs:
        mine = [r for r in rows if _key(r) == config]
        cells = [f"{_mean(mine, p, 'fleet_mean_s') * 1e3:.1f} ms ({_mean(mine, p, 'ratio_to_oracle'):.3f}), "
                 f"{_mean(mine, p, 'fairness'):.2f}, {_mean(mine, p, 'switches_per_100'):.1f} / "
                 f"{_mean(mine, p, 'moves_per_100'):.1f}" for p in policies]
        oracle = np.mean([r["oracle_mean_s"] for r in mine]) * 1e3
        lines.append(f"| {_label(config)} | {oracle:.1f} ms | " + " | ".join(cells) + " |")
    lines += ["", "A newcomer's first 200 frames (100 Mbit/s, the edge at 1x, 5x and 20x its idle speed, 5 seeds): "
              "regret against the per-frame oracle, cold start / started from the edge's compute table:", "",
              "| profile | edge 1x | edge 5x | edge 20x |", "|---|---|---|---|"]
    for name in sorted({r["profile"] for r in arrival}):
        cells = [f"{r['cold_regret_s']:.2f} s / {r['warm_regret_s']:.2f} s" for r in arrival if r["profile"] == name]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def plot_fleet(path: Path, rows, policies) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({_key(r) for r in rows})
    x = np.arange(len(configs))
    width = 0.8 / len(policies)
    fig, (ax_ratio, ax_switch) = plt.subplots(1, 2, figsize=(14, 4.5))
    for k, pol in enumerate(policies):
        ratio = [_mean([r for r in rows if _key(r) == c], pol, "ratio_to_oracle") for c in configs]
        switches = [_mean([r for r in rows if _key(r) == c], pol, "switches_per_100")
                    for c in configs]
        ax_ratio.bar(x + k * width, ratio, width, label=pol, color=f"C{k}")
        ax_switch.bar(x + k * width, switches, width, label=pol, color=f"C{k}")
    labels = [_label(c).replace(" devices", " dev").replace(", links drop", "\nlinks drop") for c in configs]
    ax_ratio.axhline(1.0, color="black", lw=1)
    ax_ratio.set(title="fleet mean delay / fleet oracle's", xticks=x + 0.4 - width / 2, xticklabels=labels,
                 yscale="log")
    ax_switch.set(title="split switches per device per 100 frames", xticks=x + 0.4 - width / 2, xticklabels=labels,
                  yscale="symlog")
    ax_ratio.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
