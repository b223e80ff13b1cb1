"""A live fleet: one Mosquitto, one or two edge processes on the shared subscription, N device
processes (emulated slow boards: the slowdown is a sleep, so 16 fit on 2 cores) on the demo clip,
looped. Every device runs ``ans`` (each learns on its own; they share the edges' load reports).

Per configuration: frames expected vs answered (none may be lost), the share answered by an
edge, p50/p99 delay per device, requests/s per edge, the edge batch-size histogram, and each
process's peak memory. Then the edge's throughput at saturation: 8 devices that offload every
frame (edge-only) on 1 edge and on 2 edges.

    .venv/bin/python bench/bench_fleet.py [--out bench-fleet] [--frames 150] [--sizes 1 4 8 16]

Prints a table, writes OUT/fleet.json and OUT/fleet.png; docs/scaling.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.bench_faults import Context, Device, Edge, summary  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fleet(ctx: Context, devices: int, edges: int, frames: int, policy: str, slowdown: float) -> dict:
    with ctx.broker() as port:
        servers = [Edge(ctx.bundle, port, ctx.work, f"edge-{k}") for k in range(edges)]
        started = time.monotonic()
        runs = [Device(ctx.bundle, ctx.clip, port, ctx.work, f"{policy}-{devices}x{edges}-{k}", "--policy", policy,
                       "--frames", str(frames), "--loop", "--emulate-slowdown", str(slowdown)) for k in range(devices)]
        rss, peak = {}, {}
        deadline = time.monotonic() + 1200
        while any(d.proc.poll() is None for d in runs) and time.monotonic() < deadline:
            for k, d in enumerate(runs):  # peak memory is read while each process is still there
                try:
                    peak[k] = max(peak.get(k, 0.0), peak_rss_mb(d.proc.pid))
                except OSError:
                    pass
            time.sleep(0.5)
        duration = max(t for d in runs for t, _ in d.seen) - started if any(d.seen for d in runs) else 0.0
        for k, e in enumerate(servers):
            rss[f"edge-{k}"] = round(peak_rss_mb(e.proc.pid), 1)
        results = [d.stop() for d in runs]
        for e in servers:
            e.stop()
    per = [summary(r) for r in results]
    if peak:
        rss["device (max)"] = round(max(peak.values()), 1)
    records = [r for rs in results for r in rs]
    batches = Counter(r.timing.batch_size for r in records if r.timing)
    by_edge = Counter(r.edge for r in records if r.edge)
    return {
        "devices": devices, "edges": edges, "policy": policy, "frames_expected": devices * frames,
        "frames_answered": len(records), "lost": devices * frames - len(records),
        "edge_share": round(sum(by_edge.values()) / max(len(records), 1), 3),
        "p50_ms": [p["p50_ms"] for p in per], "p99_ms": [p["p99_ms"] for p in per],
        "duration_s": round(duration, 1),
        "requests_per_s_per_edge": {e: round(n / duration, 1) for e, n in sorted(by_edge.items())} if duration else {},
        "batch_histogram": {str(k): v for k, v in sorted(batches.items())},
        "edge_wait_ms_median": round(float(np.median([r.timing.edge_wait_s for r in records if r.timing]))
                                     * 1e3, 3) if batches else None,
        "peak_rss_mb": rss,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    learners = [r for r in rows if r["policy"] == "ans" and r["edges"] == 1]
    fig, (ax_delay, ax_batch) = plt.subplots(1, 2, figsize=(13, 4.2))
    for k, r in enumerate(learners):
        x = np.full(len(r["p50_ms"]), r["devices"], dtype=float) + np.linspace(-0.25, 0.25, len(r["p50_ms"]))
        ax_delay.scatter(x, r["p50_ms"], color="C0", s=12, label="p50 per device" if k == 0 else None)
        ax_delay.scatter(x, r["p99_ms"], color="C3", s=12, marker="x", label="p99 per device" if k == 0 else None)
    ax_delay.set(title="ans fleet on 1 edge: delay per device", xlabel="devices", ylabel="ms", yscale="log",
                 xticks=[r["devices"] for r in learners])
    ax_delay.legend(fontsize=8)
    width = 0.8 / max(len(rows), 1)
    for k, r in enumerate(rows):
        sizes = sorted(int(b) for b in r["batch_histogram"])
        counts = np.array([r["batch_histogram"][str(b)] for b in sizes], dtype=float)
        if counts.sum():
            ax_batch.bar(np.array(sizes) + k * width - 0.4, counts / counts.sum(), width,
                         label=f"{r['policy']} {r['devices']} dev / {r['edges']} edge")
    ax_batch.set(title="edge batch sizes (share of answered requests)", xlabel="batch size", ylabel="share")
    ax_batch.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-fleet")
    parser.add_argument("--frames", type=int, default=150, help="frames per device")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16], help="fleet sizes on one edge")
    parser.add_argument("--slowdown", type=float, default=30.0, help="emulated board: heads this many times slower")
    args = parser.parse_args()
    out = Path(args.out)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ctx = Context(work)
    steps = [(n, 1, "ans") for n in args.sizes] + [(8, 1, "edge-only"), (8, 2, "edge-only"), (8, 2, "ans")]
    rows = []
    for k, (n, m, policy) in enumerate(steps, 1):
        began = time.monotonic()
        print(f"[{k}/{len(steps)}] {n} devices ({policy}) on {m} edge(s) ...", file=sys.stderr, flush=True)
        rows.append(fleet(ctx, n, m, args.frames, policy, args.slowdown))
        print(f"    {time.monotonic() - began:.0f} s: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    (out / "fleet.json").write_text(json.dumps(rows, indent=1))
    plot(rows, out / "fleet.png")
    print("| devices / edges | policy | answered / expected | by an edge | p50 median (worst) | p99 worst | "
          "req/s per edge | batch sizes | edge wait p50 | peak RSS (edges, device) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['devices']} / {r['edges']} | {r['policy']} | {r['frames_answered']} / {r['frames_expected']} | "
              f"{r['edge_share']:.0%} | {np.median(r['p50_ms']):.1f} ({max(r['p50_ms']):.1f}) ms | "
              f"{max(r['p99_ms']):.1f} ms | {', '.join(f'{v:g}' for v in r['requests_per_s_per_edge'].values())} | "
              f"{r['batch_histogram']} | {r['edge_wait_ms_median']} ms | "
              f"{', '.join(f'{v:.0f}' for v in r['peak_rss_mb'].values())} MB |")


if __name__ == "__main__":
    main()
