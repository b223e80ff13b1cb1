"""The detectors people bring, converted as ``ans convert --model`` converts them: per model the
convert time, the splits (and how many send two or three tensors), the largest difference of any
split or fallback from the original model run by its own runtime, and the device-side files
against the whole model as one TFLite file.

Models (built here with seeded weights, nothing downloaded, see lab/onnx_models.py): a
YOLOv8n-shaped ONNX at 320x320, a YOLOX-nano-shaped ONNX at 416, an SSD-MobileNet-shaped ONNX
with two outputs at 300, the trained demo detector as a TFLite file, and a Keras Sequential model.

    .venv/bin/python bench/bench_convert.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ans.quiet_tensorflow import import_tensorflow  # noqa: E402

import_tensorflow()

import numpy as np  # noqa: E402


def write_models(folder: Path) -> dict[str, Path]:
    import keras
    import onnx
    from keras import layers as kl

    from converter.bundle import to_tflite
    from converter.zoo import demo_model
    from lab.onnx_models import ssd_mobilenet, yolov8, yolox

    paths = {"YOLOv8n-shaped ONNX, 320": folder / "yolov8n.onnx", "YOLOX-nano-shaped ONNX, 416": folder / "yolox.onnx",
             "SSD-MobileNet-shaped ONNX, 300": folder / "ssd.onnx", "trained demo detector, TFLite": folder / "demo.tflite",
             "Keras Sequential, 224": folder / "sequential.keras"}
    onnx.save(yolov8(size=320, classes=80), paths["YOLOv8n-shaped ONNX, 320"])
    onnx.save(yolox(size=416, classes=80), paths["YOLOX-nano-shaped ONNX, 416"])
    onnx.save(ssd_mobilenet(size=300, classes=91), paths["SSD-MobileNet-shaped ONNX, 300"])
    paths["trained demo detector, TFLite"].write_bytes(to_tflite(demo_model()))
    keras.utils.set_random_seed(0)
    keras.Sequential([keras.Input((224, 224, 3)), kl.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
                      kl.MaxPooling2D(), kl.Conv2D(32, 3, padding="same", activation="relu"), kl.MaxPooling2D(),
                      kl.Conv2D(64, 3, padding="same", activation="relu"), kl.GlobalAveragePooling2D(),
                      kl.Dense(10)]).save(paths["Keras Sequential, 224"])
    return paths


def measure(name: str, path: Path, out: Path) -> dict:
    from common.model_files import model_format
    from converter.bundle import convert, to_tflite
    from converter.user_model import load_user_model
    from converter.verify import verify_bundle

    print(f"{name}: converting", flush=True)
    started = time.monotonic()
    fmt, problem = model_format(path)
    assert problem is None, problem
    user = load_user_model(path, fmt)
    images = np.random.default_rng(7).random((4, *[int(d) for d in user.model.input.shape[1:]]), dtype=np.float32)
    reports = []
    manifest = convert(user.model, out, log=lambda *_: None,
                       check=lambda folder: reports.append(verify_bundle(folder, user.reference, user.runtime, images,
                                                                         log=lambda *_: None)))
    took = time.monotonic() - started
    segments = sum((out / s.file.path).stat().st_size for s in manifest.segments)
    whole = len(to_tflite(user.model))
    rows = reports[0]["splits"]
    row = {"model": name, "format": fmt, "runtime": user.runtime, "convert_s": round(took, 1),
           "splits": len(manifest.splits), "several_tensors": sum(len(s.tensors) > 1 for s in manifest.splits),
           "max_rel_error": max(max(r["tail"], r["fallback"]) for r in rows),
           "device_side_mb": round(segments / 1e6, 2), "whole_model_mb": round(whole / 1e6, 2),
           "device_side_ratio": round(segments / whole, 3)}
    print(f"  {row}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON object, last")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = [measure(name, path, folder / f"bundle-{k}") for k, (name, path) in
                enumerate(write_models(folder).items())]
    print("\n| model | runtime checked against | convert | splits (of 2-3 tensors) | largest error | "
          "device side / whole model |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['runtime']} | {r['convert_s']:.0f} s | {r['splits']} ({r['several_tensors']}) | "
              f"{r['max_rel_error']:.1e} | {r['device_side_mb']:.1f} / {r['whole_model_mb']:.1f} MB "
              f"({r['device_side_ratio']:.2f}x) |")
    if args.json:
        print(json.dumps({"models": rows}))


if __name__ == "__main__":
    main()
