"""``ans convert --report``: what each codec costs and saves, split by split, and for an int8
bundle what int8 costs in accuracy and saves in time against float32.

For every split that offloads, sample images (the user's, the demo detector's own generated
scenes, or random ones) go through the split's head (LiteRT, as on the device), the cut tensors
through each codec (split 0: the input image's codecs; the low-bit ones where the bundle has
calibrated ranges), and the rest through the edge model. Against the float32 path it reports the
bytes and bits per value, the encoding and decoding time, the largest output error (relative to
the output's range), and for a detector the mAP@0.5 of the coded path's detections against
float32's own (objects float32 finds with a score of at least 0.5 as the truth): 1.0 means the
codec finds what float32 finds.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common.bundle import CODEC_REPORT, Bundle
from common.detect import detections
from common.keras_model import load_keras_model, tail_model
from common.tflite import SegmentRunner
from mqtt.codec import decode, encode, sendable, split_ranges

from .bundle import run_keras
from .train_demo import average_precision

#: A float32 detection at least this sure is an object the coded path should find too.
TRUTH_SCORE = 0.5


def agreement_map(coded: list[np.ndarray], reference: list[np.ndarray], classes: int) -> float:
    """mAP@0.5 of ``coded`` detections (rows x1, y1, x2, y2, score, class) against the confident
    ones of ``reference``; NaN when the reference finds nothing."""
    truths = [np.c_[r[r[:, 4] >= TRUTH_SCORE][:, 5], r[r[:, 4] >= TRUTH_SCORE][:, :4]] for r in reference]
    aps = [average_precision(coded, truths, c) for c in range(classes)]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")


def codec_report(bundle: str | Path, samples: int = 4, seed: int = 0, images: np.ndarray | None = None,
                 log=print) -> dict:
    """``images`` (preprocessed, NHWC float32) default to ``samples`` random ones."""
    bundle = Path(bundle)
    heads = SegmentRunner(Bundle(bundle))  # as the device runs them: LiteRT, interpreters kept
    manifest = heads.bundle.manifest
    ranges = split_ranges(heads.bundle)
    edge = load_keras_model(bundle / manifest.splits[0].tail.path)
    model = manifest.model
    if images is None:
        images = np.random.default_rng(seed).random((samples, *model.input.shape[1:]), dtype=np.float32)
    samples = len(images)
    detector = model.decoding.kind != "none" and model.decoding.classes > 0
    size = tuple(model.preprocessing.size)
    rows = []
    log(f"{'split':>5}  {'codec':<8}{'bytes':>12}{'bits/value':>11}{'encode ms':>10}{'decode ms':>10}"
        f"{'max rel err':>13}" + (f"{'mAP@0.5 vs float32':>20}" if detector else ""))
    for split in manifest.splits:
        if split.tail is None:
            continue
        tail = tail_model(edge, split.names)
        sent = [heads.run(split.index, img[None]) for img in images]  # per image, the tensors sent
        values = sum(int(np.prod(s)) for s in split.shapes)
        reference = [run_keras(tail, cut) for cut in sent]
        found = [np.array(detections(out, model.decoding, size)).reshape(-1, 6) for out in reference] \
            if detector else None
        channels = ranges[split.index] or [None] * len(split.names)
        for codec in sendable(split.index, ranges[split.index] is not None):
            nbytes, err, coded, enc_s, dec_s = 0, 0.0, [], [], []
            for cut, ref in zip(sent, reference):
                start = time.perf_counter()
                wire = [encode(t, codec, model.preprocessing.scale, r) for t, r in zip(cut, channels)]
                enc_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                back = [decode(b, codec, t.shape, q, r) for (b, q), t, r in zip(wire, cut, channels)]
                dec_s.append(time.perf_counter() - start)
                nbytes += sum(len(b) for b, _ in wire)
                outputs = run_keras(tail, back)
                err = max(err, *(float(np.max(np.abs(o - r)) / (np.ptp(r) or 1.0)) for o, r in zip(outputs, ref)))
                if detector:
                    coded.append(np.array(detections(outputs, model.decoding, size)).reshape(-1, 6))
            mean_bytes = nbytes / samples
            row = {"split": split.index, "cut": split.cut, "codec": codec, "bytes": round(mean_bytes),
                   "bits_per_value": round(8 * mean_bytes / values, 3), "encode_ms": round(np.median(enc_s) * 1e3, 3),
                   "decode_ms": round(np.median(dec_s) * 1e3, 3), "max_rel_error": err}
            if detector:
                row["map50_vs_float32"] = round(agreement_map(coded, found, model.decoding.classes), 4)
            rows.append(row)
            log(f"{split.index:>5}  {codec:<8}{row['bytes']:>12,}{row['bits_per_value']:>11.2f}"
                f"{row['encode_ms']:>10.3f}{row['decode_ms']:>10.3f}{err:>13.2e}" + (f"{row['map50_vs_float32']:>20.3f}" if detector else ""))
    report = {"samples": samples, "seed": seed, "rows": rows}
    (bundle / CODEC_REPORT).write_text(json.dumps(report, indent=1))
    log(f"wrote {bundle / CODEC_REPORT}")
    return report


PRECISION_FILE = "precision-report.json"


def _device_only(runner: SegmentRunner):
    """The whole model as the device runs it after calibration: fused where that was faster."""
    last = runner.bundle.device_only
    if runner.fuse_pays and runner.fuse_pays[last - 1]:
        head = runner.fuse(last)
        return lambda x: runner.invoke(head, [x])
    return lambda x: runner.run(last, x)


def precision_report(model, bundle: str | Path, demo: bool = False, images: np.ndarray | None = None,
                     repeats: int = 20, log=print) -> dict:
    """An int8 bundle against the same model's float32 segments (made in a temporary folder): each
    split's head time on this machine (as the device runs it: fused where that is faster), and
    accuracy: mAP@0.5 on the demo clip for the demo detector, else how far the int8 device-only
    outputs are from float32's on ``images``."""
    from .bundle import convert

    bundle = Path(bundle)
    quantized = SegmentRunner(Bundle(bundle), fused_heads=1)
    manifest = quantized.bundle.manifest
    with tempfile.TemporaryDirectory() as tmp:
        convert(model, Path(tmp) / "float32", decoding=manifest.model.decoding,
                preprocessing=manifest.model.preprocessing, log=lambda *_: None)
        floats = SegmentRunner(Bundle(Path(tmp) / "float32"), fused_heads=1)
        probe = np.random.default_rng(0).random(quantized.bundle.input_shape, dtype=np.float32)
        t_float = np.asarray(floats.head_times(probe, repeats))  # as the device runs them: fused where faster
        t_int8 = np.asarray(quantized.head_times(probe, repeats))
        last = manifest.device_only
        float_run, int8_run = _device_only(floats), _device_only(quantized)
        if demo:
            from .train_demo import clip_frames, clip_map

            clip, truth, difficult = clip_frames()
            accuracy = {name: clip_map([run(img[None])[0][0] for img in clip], truth, difficult)
                        for name, run in (("float32", float_run), ("int8", int8_run))}
        else:
            images = images if images is not None else np.random.default_rng(1).random(
                (8, *quantized.bundle.input_shape[1:]), dtype=np.float32)
            errors = []
            for img in images:
                ref = float_run(img[None])
                got = int8_run(img[None])
                errors.append(max(float(np.max(np.abs(g - r)) / (np.ptp(r) or 1.0)) for g, r in zip(got, ref)))
            accuracy = {"max_rel_error": float(np.max(errors)), "median_rel_error": float(np.median(errors)),
                        "images": len(images)}
    log(f"{'split':>5}  {'float32 head':>13}{'int8 head':>11}{'speed-up':>10}")
    for k in range(1, last + 1):
        log(f"{k:>5}  {t_float[k - 1] * 1e3:>10.2f} ms{t_int8[k - 1] * 1e3:>8.2f} ms{t_float[k - 1] / t_int8[k - 1]:>9.2f}x")
    if demo:
        log(f"mAP@0.5 on the demo clip ({accuracy['int8']['images']} frames, device-only): float32 "
            f"{accuracy['float32']['map50']:.3f}, int8 {accuracy['int8']['map50']:.3f}")
    else:
        log(f"int8 against float32, device-only outputs on {accuracy['images']} images: largest error "
            f"{accuracy['max_rel_error']:.2e} of the output range (median {accuracy['median_rel_error']:.2e})")
    report = {"head_s": {"float32": t_float.tolist(), "int8": t_int8.tolist()}, "accuracy": accuracy,
              "repeats": repeats}
    (bundle / PRECISION_FILE).write_text(json.dumps(report, indent=1))
    log(f"wrote {bundle / PRECISION_FILE}")
    return report
