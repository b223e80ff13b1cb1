"""``ans convert``: the command-line side of the converter."""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output


def convert_command(args: argparse.Namespace) -> int:
    import dataclasses

    import keras

    from common.bundle import Decoding
    from common.keras_model import ModelError

    from .bundle import convert, run_keras
    from .decoders import choose_decoding, read_labels
    from .verify import verify_bundle
    from .zoo import TINY_YOLOV2_ANCHORS, demo_decoding, demo_model, tiny_yolov2

    started = time.monotonic()
    reference = runtime = None
    if args.zoo == "demo":
        print("loading the trained demo detector")
        model, decoding = demo_model(), demo_decoding()
    elif args.zoo:
        print(f"building {args.zoo} ({args.classes} classes, {args.size}x{args.size}, width {args.width:g})")
        model = tiny_yolov2(classes=args.classes, size=args.size, width=args.width)
        decoding = Decoding(kind="yolov2-region", anchors=TINY_YOLOV2_ANCHORS, classes=args.classes)
    elif args.darknet:
        from .darknet import build_darknet

        model, decoding = build_darknet(*args.darknet)
    else:
        from .user_model import load_user_model

        print(f"reading {args.model} ({args.model_format})")
        user = load_user_model(args.model, args.model_format)
        model, reference, runtime = user.model, user.reference, user.runtime
    if reference is None:  # a model built here is its own reference
        runtime, reference = f"Keras {keras.__version__}", lambda x: run_keras(model, [x])
    images = _check_images(model, demo=args.zoo == "demo")
    labels = read_labels(args.labels) if args.labels else None
    if args.model:
        size = tuple(int(d) for d in model.input.shape[1:3])
        shapes = [[1, *[int(d) for d in t.shape[1:]]] for t in model.outputs]
        decoding = choose_decoding(args.decoder, shapes, reference(images[:1]), size,
                                   labels if labels is not None else user.labels)
        print(f"decoder: {decoding.kind}, {decoding.classes} classes"
              + (f" ({', '.join(decoding.labels[:5])}{', ...' if len(decoding.labels) > 5 else ''})"
                 if decoding.labels else ""))
    elif labels is not None:
        if len(labels) != decoding.classes:
            raise ModelError(f"{args.labels}: {len(labels)} labels for a model with {decoding.classes} classes")
        decoding = dataclasses.replace(decoding, labels=labels)
    from .calibration import calibration_images, demo_scenes
    from .codec_calibration import MAX_SAMPLES

    size = tuple(int(d) for d in model.input.shape[1:3])
    samples = None  # images like the device's frames: the low-bit codecs' ranges (and int8's)
    if getattr(args, "calibration_files", None):
        samples = calibration_images(args.calibration_files, size, 1.0 / 255.0)
        print(f"calibrating with {len(samples)} images from {args.calibration_images}")
    elif args.zoo == "demo":
        samples = demo_scenes(size=size[0])
        print(f"calibrating with {len(samples)} generated scenes")
    calibration = None
    if args.quantize == "int8":
        # The zoo's tiny-yolov2 has seeded weights: any images measure its ranges.
        calibration = samples if samples is not None else np.random.default_rng(0).random((64, *size, 3),
                                                                                          dtype=np.float32)
        print(f"int8: quantising the segments with {len(calibration)} "
              f"{'images' if samples is not None else 'random images (seeded zoo weights)'}")
    manifest = convert(model, args.out, name=args.name, decoding=decoding, calibration=calibration, samples=samples,
                       check=None if calibration is not None else
                       lambda folder: verify_bundle(folder, reference, runtime, images))
    print(f"converted in {time.monotonic() - started:.1f}s")
    print(f"{'split':>5}  {'cut after':<16}{'sent (bytes)':>14}{'front MMACs':>13}{'back conv MMACs':>17}")
    for s in manifest.splits:
        print(f"{s.index:>5}  {s.cut or '(device only)':<16}{s.transfer_bytes:>14,}{s.front_macs / 1e6:>13.1f}"
              f"{s.context[0] / 1e6:>17.1f}")
    if args.report:
        from .report import codec_report

        images, what = None, "random images"
        if args.zoo == "demo":
            from common.scenes import make_frame

            rng = np.random.default_rng(99)  # other scenes than the ranges were measured on
            images = np.stack([make_frame(rng, model.input.shape[1])[0] for _ in range(16)]).astype(np.float32) / 255
            what = "16 generated scenes"
        elif samples is not None:  # the images the ranges were not measured on, if there are any
            images = samples[MAX_SAMPLES:MAX_SAMPLES + 32] if len(samples) > MAX_SAMPLES else samples[:32]
            what = f"{len(images)} of your images"
            if len(samples) <= MAX_SAMPLES:
                what += f" (the ranges were measured on them: give more than {MAX_SAMPLES} to score on others)"
        print(f"\ncodecs against float32 on {what}:")
        codec_report(args.out, images=images)
        if calibration is not None:
            from .report import precision_report

            print("\nint8 segments against float32 (head time on this machine, accuracy):")
            precision_report(model, args.out, demo=args.zoo == "demo", images=None if args.zoo == "demo"
                             else calibration[:16])
    return 0


def _check_images(model, demo: bool) -> np.ndarray:
    """What every split is checked on: the demo's own scenes, or seeded random images in [0, 1]."""
    shape = [int(d) for d in model.input.shape[1:]]
    if demo:
        from common.scenes import make_frame

        rng = np.random.default_rng(7)
        return np.stack([make_frame(rng, shape[0])[0] for _ in range(4)]).astype(np.float32) / 255
    return np.random.default_rng(7).random((4, *shape), dtype=np.float32)
