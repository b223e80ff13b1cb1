"""Run an edge process with a per-request stage trace, for ``bench_system.py``:

    python bench/edge_trace.py TRACE.jsonl python -m ans.cli edge --bundle B --broker URL

(the command after the trace file is the edge's own, as ``lab.demo.start_edge`` runs it). Each
served request appends one JSON line: its split and frame, and CLOCK_MONOTONIC times (the clock
every process on the machine shares, so they line up with the device's) of its arrival in paho's
thread, its pick by the worker, its decoding, the tail's run (TensorFlow's part, then the detections
and the reply's encoding) and the reply's publish. The edge is the shipped one: the trace wraps a few
of its methods from outside and changes nothing it does.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def install(path: str) -> None:
    from edge_app.server import EdgeServer as Edge, TailRunner

    out = open(path, "a", buffering=1)
    decode, run_batch, send, run = Edge._decode, Edge.run_batch, Edge._send, TailRunner.run
    ran = {}

    def traced_run(self, split, batch):
        outputs = run(self, split, batch)
        ran["at"] = time.monotonic()
        return outputs

    def traced_decode(self, pending):
        got = decode(self, pending)
        if got is not None:
            got.trace = {"split": got.request.split, "frame": got.request.frame_id, "received": got.received,
                         "picked": got.picked, "decoded": time.monotonic()}
        return got

    def traced_run_batch(self, batch):
        start = time.monotonic()
        replies = run_batch(self, batch)
        end = time.monotonic()
        computed = ran.pop("at", end)  # taken, so that a run that failed leaves no time for the next batch
        for pending in batch:
            pending.trace.update(tail_start=start, computed=computed, tail_end=end, batch=len(batch))
        self._tracing = {id(reply): pending.trace for pending, (_, reply) in zip(batch, replies)}
        return replies

    def traced_send(self, device, result):
        send(self, device, result)
        trace = getattr(self, "_tracing", {}).pop(id(result), None)
        if trace is not None:
            trace["replied"] = time.monotonic()
            out.write(json.dumps(trace) + "\n")

    Edge._decode, Edge.run_batch, Edge._send, TailRunner.run = traced_decode, traced_run_batch, traced_send, traced_run


def main() -> int:
    install(sys.argv[1])
    from ans.cli import main as ans

    return ans(sys.argv[sys.argv.index("ans.cli") + 1:])


if __name__ == "__main__":
    sys.exit(main())
