"""What the low-bit codecs quantise within, measured once at conversion: each cut tensor's
per-channel range on sample images like the device's frames (the 0.1th and 99.9th percentiles,
widened to include 0), and what each variable-size codec then makes of every split's tensors
(mean bytes over the samples), which the learner prices the transfer with.

Written as ``ranges.json`` beside the manifest; the device and the edge read the same file, and
each request carries the ranges' fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mqtt.codec import LOW_BIT, ChannelRange, encode

RANGES_FILE = "ranges.json"
#: The clipping percentiles: the range keeps 99.8% of a channel's values; the rest saturate.
PERCENTILES = (0.1, 99.9)
#: Samples used at most (more cost conversion time and memory, not accuracy).
MAX_SAMPLES = 64
#: Values kept per tensor per sample for the percentiles (positions sampled evenly beyond it).
_KEEP = 1 << 16


def samples_digest(samples: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(samples[:MAX_SAMPLES], np.float32).tobytes()).hexdigest()


def calibrate_codecs(run, names: list[str], split_names: list[list[str]], samples: np.ndarray, input_scale: float,
                     batch: int = 8) -> tuple[dict, list[dict[str, int]]]:
    """``run(images)``: the tensors called ``names`` (a list of arrays, batch first) on a batch of
    preprocessed images. Returns the ranges document and, per split (``split_names``: the tensors
    each sends; the first is split 0's input), the mean payload bytes of each variable-size codec."""
    samples = np.asarray(samples[:MAX_SAMPLES], np.float32)
    kept: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, len(samples), batch):
        for name, values in zip(names, run(samples[start:start + batch])):
            flat = values.reshape(len(values), -1, values.shape[-1])
            step = max(1, flat.shape[1] * flat.shape[2] // _KEEP)
            kept[name].append(flat[:, ::step].reshape(-1, flat.shape[2]))
    tensors = {}
    for name, parts in kept.items():
        lo, hi = np.percentile(np.concatenate(parts), PERCENTILES, axis=0)
        tensors[name] = {"lo": [float(v) for v in lo.astype(np.float32)],
                         "hi": [float(v) for v in hi.astype(np.float32)]}
    ranges = {"percentiles": list(PERCENTILES), "samples": len(samples), "samples_sha256": samples_digest(samples),
              "tensors": tensors}
    channel = {name: ChannelRange(t["lo"], t["hi"]) for name, t in tensors.items()}
    # Split 0 sends the input as an image (JPEG carries 1 or 3 channels); the cuts their low-bit symbols.
    wire = [("jpeg",) if samples.shape[-1] in (1, 3) else ()] + [LOW_BIT if cut else () for cut in split_names[1:]]
    totals = [dict.fromkeys(codecs, 0) for codecs in wire]
    for start in range(0, len(samples), batch):
        images = samples[start:start + batch]
        values = dict(zip(names, run(images)))
        for codec in wire[0]:
            totals[0][codec] += sum(len(encode(img[None], codec, input_scale)[0]) for img in images)
        for k, cut in enumerate(split_names[1:], 1):
            for codec in wire[k]:
                totals[k][codec] += sum(len(encode(values[n][i:i + 1], codec, channel_range=channel[n])[0])
                                        for n in cut for i in range(len(images)))
    return ranges, [{c: int(round(v / len(samples))) for c, v in t.items()} for t in totals]


def write_ranges(folder: Path, ranges: dict) -> None:
    (folder / RANGES_FILE).write_text(json.dumps(ranges, separators=(",", ":")))
