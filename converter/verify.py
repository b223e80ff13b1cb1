"""Every split of a bundle checked against the original model run by its own runtime (onnxruntime,
LiteRT, TensorFlow or Keras): per split, the device's head (LiteRT, as the device runs it) then the
edge's tail (Keras), and the device's fallback from the cut tensor (the remaining segments); and
device-only. A bundle that differs from the original by more than ``TOLERANCE`` relative to the
output's magnitude is refused, never written as if it were the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.bundle import Bundle
from common.keras_model import ModelError, load_keras_model, tail_model
from common.tflite import SegmentRunner

from .bundle import run_keras

TOLERANCE = 1e-4
VERIFY_FILE = "verification.json"


def verify_bundle(bundle: str | Path, reference: Callable[[np.ndarray], list[np.ndarray]], runtime: str,
                  images: np.ndarray, tolerance: float = TOLERANCE, log=print) -> dict:
    """``images``: preprocessed NHWC inputs; ``reference``: one [1, H, W, C] image -> the original's
    outputs in the manifest's order. Writes ``verification.json`` into the bundle; raises ModelError
    naming the first split out of tolerance."""
    bundle = Path(bundle)
    runner = SegmentRunner(Bundle(bundle))
    manifest = runner.bundle.manifest
    edge = load_keras_model(bundle / manifest.splits[0].tail.path)
    wants = [[np.asarray(w, dtype=np.float32) for w in reference(img[None])] for img in images]
    scales = [max(max(float(np.max(np.abs(w[k]))) for w in wants), 1e-12) for k in range(len(wants[0]))]

    def error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
        if len(got) != len(want) or any(np.shape(g) != np.shape(w) for g, w in zip(got, want)):
            return float("inf")
        return max(float(np.max(np.abs(np.asarray(g) - w))) / s for g, w, s in zip(got, want, scales))

    rows = []
    for split in manifest.splits:
        tail_err = fallback_err = 0.0
        if split.tail is None:
            fallback_err = max(error(runner.run(split.index, img[None]), want) for img, want in zip(images, wants))
        else:
            tail = tail_model(edge, split.names)
            for img, want in zip(images, wants):
                sent = runner.run(split.index, img[None])
                tail_err = max(tail_err, error(run_keras(tail, sent), want))
                fallback_err = max(fallback_err, error(runner.finish(split.index, sent), want))
        rows.append({"index": split.index, "cut": split.cut, "tail": tail_err, "fallback": fallback_err,
                     "ok": max(tail_err, fallback_err) <= tolerance})
    log(f"every split against the original ({runtime}, {len(images)} images, tolerance {tolerance:g} relative):")
    log(f"{'split':>5}  {'cut after':<40}{'head+tail':>11}{'fallback':>11}")
    for row in rows:
        tail = "-" if manifest.splits[row["index"]].tail is None else f"{row['tail']:.1e}"
        log(f"{row['index']:>5}  {row['cut'] or '(device only)':<40.40}{tail:>11}{row['fallback']:>11.1e}"
            f"{'' if row['ok'] else '  OFF'}")
    report = {"runtime": runtime, "images": len(images), "tolerance": tolerance, "splits": rows}
    (bundle / VERIFY_FILE).write_text(json.dumps(report, indent=1))
    bad = [r for r in rows if not r["ok"]]
    if bad:
        raise ModelError(f"split {bad[0]['index']} (after {bad[0]['cut']}) differs from the original model by "
                         f"{max(bad[0]['tail'], bad[0]['fallback']):.1e} relative (tolerance {tolerance:g})")
    return report

