"""Network and edge-load traces: what the simulated world looks like frame by frame.

CSV with header ``frame,bandwidth_mbps,rtt_ms,edge_slowdown`` and an optional
``key_frame`` column (0/1). Each row holds from its frame until the next row's.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigurationError

REQUIRED_COLUMNS = ("frame", "bandwidth_mbps", "rtt_ms", "edge_slowdown")
KEY_COLUMN = "key_frame"


class TraceError(ConfigurationError):
    """A trace that cannot be used, with the file and line at fault."""


@dataclass(frozen=True)
class Trace:
    """Change points: row i holds from ``frame[i]`` until ``frame[i+1]``."""

    frame: np.ndarray  # int, strictly increasing, starts at 0
    bandwidth_mbps: np.ndarray
    rtt_ms: np.ndarray
    edge_slowdown: np.ndarray
    key_frame: np.ndarray | None = None  # bool per row, or None when absent

    def per_frame(self, n_frames: int) -> dict[str, np.ndarray]:
        """Expand the change points to one value per frame for ``n_frames`` frames."""
        rows = np.searchsorted(self.frame, np.arange(n_frames), side="right") - 1
        out = {
            "bandwidth_mbps": self.bandwidth_mbps[rows],
            "rtt_ms": self.rtt_ms[rows],
            "edge_slowdown": self.edge_slowdown[rows],
        }
        if self.key_frame is not None:
            out["key_frame"] = self.key_frame[rows]
        return out

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(REQUIRED_COLUMNS + ((KEY_COLUMN,) if self.key_frame is not None else ()))
            for i in range(len(self.frame)):
                row = [int(self.frame[i]), f"{self.bandwidth_mbps[i]:g}", f"{self.rtt_ms[i]:g}", f"{self.edge_slowdown[i]:g}"]
                if self.key_frame is not None:
                    row.append(int(self.key_frame[i]))
                w.writerow(row)


def make_trace(rows: list[tuple[int, float, float, float]]) -> Trace:
    """Build a trace from ``(frame, bandwidth_mbps, rtt_ms, edge_slowdown)`` rows, checked."""
    arr = np.asarray(rows, dtype=np.float64)
    trace = Trace(arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2], arr[:, 3])
    _check(trace, "<trace>", list(range(1, len(rows) + 1)))
    return trace


def load_trace(path: str | Path) -> Trace:
    path = Path(path)
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read trace: {exc.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise TraceError(f"{path}:1: empty trace, expected header {','.join(REQUIRED_COLUMNS)}")
        header = [h.strip() for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise TraceError(f"{path}:1: missing column(s) {', '.join(missing)}; header is {','.join(header)}")
        cols = {c: header.index(c) for c in REQUIRED_COLUMNS + ((KEY_COLUMN,) if KEY_COLUMN in header else ())}
        values: dict[str, list[float]] = {c: [] for c in cols}
        lines: list[int] = []
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise TraceError(f"{path}:{line}: {len(row)} fields, header has {len(header)}")
            for c, j in cols.items():
                try:
                    v = float(row[j])
                except ValueError:
                    raise TraceError(f"{path}:{line}: {c} is not a number: {row[j]!r}") from None
                if not math.isfinite(v):
                    raise TraceError(f"{path}:{line}: {c} is not finite: {row[j]!r}")
                values[c].append(v)
            lines.append(line)
    if not lines:
        raise TraceError(f"{path}: no data rows after the header")
    frames = np.asarray(values["frame"])
    if np.any(frames != np.round(frames)):
        bad = int(np.flatnonzero(frames != np.round(frames))[0])
        raise TraceError(f"{path}:{lines[bad]}: frame must be a whole number, got {frames[bad]:g}")
    key = None
    if KEY_COLUMN in values:
        k = np.asarray(values[KEY_COLUMN])
        if np.any((k != 0) & (k != 1)):
            bad = int(np.flatnonzero((k != 0) & (k != 1))[0])
            raise TraceError(f"{path}:{lines[bad]}: key_frame must be 0 or 1, got {k[bad]:g}")
        key = k.astype(bool)
    trace = Trace(
        frames.astype(np.int64),
        np.asarray(values["bandwidth_mbps"]),
        np.asarray(values["rtt_ms"]),
        np.asarray(values["edge_slowdown"]),
        key,
    )
    _check(trace, str(path), lines)
    return trace


def _check(trace: Trace, where: str, lines: list[int]) -> None:
    def fail(i: int, msg: str) -> None:
        raise TraceError(f"{where}:{lines[i]}: {msg}")

    if trace.frame[0] != 0:
        fail(0, f"the first row must start at frame 0, got {trace.frame[0]}")
    for i in range(1, len(trace.frame)):
        if trace.frame[i] <= trace.frame[i - 1]:
            fail(i, f"frames must increase strictly: {trace.frame[i]} after {trace.frame[i - 1]}")
    for i in range(len(trace.frame)):
        if trace.bandwidth_mbps[i] <= 0:
            fail(i, f"bandwidth_mbps must be positive, got {trace.bandwidth_mbps[i]:g}")
        if trace.rtt_ms[i] < 0:
            fail(i, f"rtt_ms must not be negative, got {trace.rtt_ms[i]:g}")
        if trace.edge_slowdown[i] <= 0:
            fail(i, f"edge_slowdown must be positive, got {trace.edge_slowdown[i]:g}")
