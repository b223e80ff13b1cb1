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
    totals = [dict.fromkeys(LOW_BIT, 0) for _ in split_names]
    for start in range(0, len(samples), batch):
        images = samples[start:start + batch]
        values = dict(zip(names, run(images)))
        for k, cut in enumerate(split_names[1:], 1):
            for codec in LOW_BIT:
                totals[k][codec] += sum(len(encode(values[n][i:i + 1], codec, channel_range=channel[n])[0])
                                        for n in cut for i in range(len(images)))
        if samples.shape[-1] in (1, 3):  # what JPEG can carry
            totals[0]["jpeg"] = totals[0].get("jpeg", 0) + sum(len(encode(img[None], "jpeg", input_scale)[0])
                                                               for img in images)
    sizes = [{c: int(round(v / len(samples))) for c, v in t.items()} for t in totals]
    sizes[0] = {c: n for c, n in sizes[0].items() if c == "jpeg"}  # the input travels as an image
    return ranges, sizes


def write_ranges(folder: Path, ranges: dict) -> None:
    (folder / RANGES_FILE).write_text(json.dumps(ranges, separators=(",", ":")))
