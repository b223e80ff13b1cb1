"""``ans convert --report``: what each cut-tensor codec costs in accuracy, split by split, and for an
int8 bundle what int8 costs in accuracy and saves in time against float32.

For every split that offloads, sample images (random ones, or the demo detector's own
generated scenes) go through the split's head (LiteRT, as on the device), the cut tensor through each codec, and the rest through the edge model.
Against the float32 path it reports the largest output error (relative to the output's
range) and, for a YOLOv2-region detector, the share of anchor cells whose decision
(object or not, and the class when it is one) is unchanged.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from common.bundle import Bundle
from common.keras_model import load_keras_model, tail_model
from common.tflite import SegmentRunner
from mqtt.codec import CODECS, decode, encode

from .bundle import run_keras

REPORT_FILE = "codec-report.json"


def _decisions(output: np.ndarray, anchors: int, threshold: float = 0.5) -> np.ndarray:
    """Per anchor cell: -1 when no object, else the class id."""
    cells = output.reshape(*output.shape[:-1], anchors, -1)
    objectness = 1.0 / (1.0 + np.exp(-cells[..., 4]))
    return np.where(objectness > threshold, np.argmax(cells[..., 5:], axis=-1), -1)


def codec_report(bundle: str | Path, samples: int = 4, seed: int = 0, images: np.ndarray | None = None,
                 log=print) -> dict:
    """``images`` (preprocessed, NHWC float32) default to ``samples`` random ones."""
    bundle = Path(bundle)
    heads = SegmentRunner(Bundle(bundle))  # as the device runs them: LiteRT, interpreters kept
    manifest = heads.bundle.manifest
    edge = load_keras_model(bundle / manifest.splits[0].tail.path)
    shape = manifest.model.input.shape
    if images is None:
        images = np.random.default_rng(seed).random((samples, *shape[1:]), dtype=np.float32)
    samples = len(images)
    region = manifest.model.decoding.kind == "yolov2-region"
    anchors = len(manifest.model.decoding.anchors)
    rows = []
    log(f"{'split':>5}  {'codec':<8}{'bytes':>12}{'max rel err':>13}" + (f"{'same decisions':>16}" if region else ""))
    for split in manifest.splits:
        if split.tail is None:
            continue
        tail = tail_model(edge, split.names)
        sent = [heads.run(split.index, img[None]) for img in images]  # per image, the tensors sent
        cuts = [np.concatenate([s[j] for s in sent]) for j in range(len(split.tensors))]  # per tensor, a batch
        reference = run_keras(tail, cuts)
        for codec in CODECS:
            decoded = [np.stack([decode(*_encoded(c, codec)) for c in batch]) for batch in cuts]
            outputs = run_keras(tail, decoded)
            err = max(float(np.max(np.abs(o - r)) / (np.ptp(r) or 1.0)) for o, r in zip(outputs, reference))
            row = {"index": split.index, "cut": split.cut, "codec": codec, "bytes": split.codec_bytes[codec],
                   "max_rel_error": err}
            if region:
                row["same_decisions"] = float(np.mean(_decisions(outputs[0], anchors) == _decisions(reference[0], anchors)))
            rows.append(row)
            log(f"{split.index:>5}  {codec:<8}{row['bytes']:>12,}{err:>13.2e}"
                + (f"{row['same_decisions']:>16.2%}" if region else ""))
    report = {"samples": samples, "seed": seed, "rows": rows}
    (bundle / REPORT_FILE).write_text(json.dumps(report, indent=1))
    log(f"wrote {bundle / REPORT_FILE}")
    return report


def _encoded(cut: np.ndarray, codec: str) -> tuple:
    payload, quant = encode(cut, codec)
    return payload, codec, cut.shape, quant


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
