"""Train the ``demo`` detector: reduced-width tiny-YOLOv2 on generated scenes.

    .venv/bin/python -m converter.train_demo [--epochs 20] [--out converter/zoo_weights/demo.weights.h5]

Every batch is freshly generated (``common.scenes``), so the model never sees the
same image twice; the held-out set comes from another seed. Prints the loss per epoch
and mAP@0.5 on the held-out set at the end, and writes the weights (about 4 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from common.detect import decode_yolov2, iou  # noqa: E402

from common.scenes import LABELS, make_camera_frame, make_clip, make_frame  # noqa: E402
from .zoo import DEMO_ANCHORS, DEMO_SIZE, demo_model  # noqa: E402

WEIGHTS = Path(__file__).parent / "zoo_weights" / "demo.weights.h5"
GRID = DEMO_SIZE // 32


def encode_targets(boxes: np.ndarray) -> np.ndarray:
    """(S, S, A, 6): x/y offset in the cell, log w/h over the anchor, object mask, class."""
    target = np.zeros((GRID, GRID, len(DEMO_ANCHORS), 6), np.float32)
    anchors = np.asarray(DEMO_ANCHORS, np.float32)
    for cls, x1, y1, x2, y2 in boxes:
        cx, cy = (x1 + x2) / 2 / 32, (y1 + y2) / 2 / 32
        w, h = (x2 - x1) / 32, (y2 - y1) / 32
        i, j = min(int(cy), GRID - 1), min(int(cx), GRID - 1)
        inter = np.minimum(w, anchors[:, 0]) * np.minimum(h, anchors[:, 1])
        a = int(np.argmax(inter / (w * h + anchors[:, 0] * anchors[:, 1] - inter)))
        target[i, j, a] = [cx - j, cy - i, np.log(w / anchors[a, 0]), np.log(h / anchors[a, 1]), 1.0, cls]
    return target


def yolo_loss(y_true, y_pred):
    pred = tf.reshape(y_pred, [-1, GRID, GRID, len(DEMO_ANCHORS), 5 + len(LABELS)])
    mask = y_true[..., 4]
    xy = tf.reduce_sum(tf.square(tf.sigmoid(pred[..., 0:2]) - y_true[..., 0:2]), axis=-1)
    wh = tf.reduce_sum(tf.square(pred[..., 2:4] - y_true[..., 2:4]), axis=-1)
    obj = tf.nn.sigmoid_cross_entropy_with_logits(labels=mask, logits=pred[..., 4])
    cls = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y_true[..., 5], tf.int32),
                                                         logits=pred[..., 5:])
    per_image = tf.reduce_sum(mask * (5.0 * xy + 5.0 * wh + cls) + obj * tf.where(mask > 0, 1.0, 0.5), axis=[1, 2, 3])
    return tf.reduce_mean(per_image)


class Scenes(keras.utils.PyDataset):
    """Batches of fresh scenes; batch k of epoch e is drawn from seed (base, e, k)."""

    def __init__(self, batches: int, batch_size: int, seed: int):
        super().__init__()
        self.batches, self.batch_size, self.seed, self.epoch = batches, batch_size, seed, 0

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, k: int):
        rng = np.random.default_rng((self.seed, self.epoch, k))
        images, targets = [], []
        for k in range(self.batch_size):  # half plain scenes, half as a camera delivers them
            img, boxes = (make_frame if k % 2 else make_camera_frame)(rng, DEMO_SIZE)
            images.append(img.astype(np.float32) / 255.0)
            targets.append(encode_targets(boxes))
        return np.stack(images), np.stack(targets)

    def on_epoch_end(self) -> None:
        self.epoch += 1


def average_precision(detections: list[np.ndarray], truths: list[np.ndarray], cls: int, threshold: float = 0.5,
                      difficult: list[np.ndarray] | None = None):
    """VOC-style all-point AP of one class; boxes relative to the image. As VOC, a detection that
    matches a ``difficult`` object (per frame, a flag per truth row) counts neither way, nor does
    missing it."""
    scored, positives = [], 0
    for k, (dets, gts) in enumerate(zip(detections, truths)):
        mine = gts[:, 0] == cls
        gt = gts[mine, 1:]
        hard = np.zeros(len(gt), bool) if difficult is None else np.asarray(difficult[k], bool)[mine]
        positives += int((~hard).sum())
        used = np.zeros(len(gt), bool)
        for d in dets[dets[:, 5] == cls]:
            hit = False
            if len(gt):
                overlaps = iou(d[:4], gt)
                best = int(np.argmax(overlaps))
                if overlaps[best] >= threshold and hard[best]:
                    continue
                if overlaps[best] >= threshold and not used[best]:
                    used[best] = hit = True
            scored.append((d[4], hit))
    if not positives:
        return float("nan")
    scored.sort(key=lambda s: -s[0])
    hits = np.array([h for _, h in scored], float)
    tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
    recall = np.concatenate([[0], tp / positives, [1]])
    precision = np.concatenate([[1], tp / np.maximum(tp + fp, 1e-9), [0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def evaluate(model, images: int = 400, seed: int = 12345, conf: float = 0.05) -> dict:
    """mAP@0.5 on freshly generated held-out scenes."""
    rng = np.random.default_rng(seed)
    frames, truths = zip(*(make_frame(rng, DEMO_SIZE) for _ in range(images)))
    outputs = model.predict(np.stack(frames).astype(np.float32) / 255.0, batch_size=32, verbose=0)
    detections = [decode_yolov2(o, DEMO_ANCHORS, len(LABELS), conf=conf) for o in outputs]
    relative = [np.column_stack([t[:, :1], t[:, 1:] / DEMO_SIZE]) for t in truths]
    aps = {LABELS[c]: average_precision(detections, relative, c) for c in range(len(LABELS))}
    return {"map50": float(np.mean(list(aps.values()))), "ap50": aps, "images": images}


def clip_frames(frames: int = 300) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The demo clip as the device sees it: the MJPG video decoded, each 320x240 frame stretched to the
    model's input (``INTER_AREA``, the device's preprocessing), scaled to 0..1; with its ground truth
    (class and box relative to the frame, per frame) and which objects are "difficult" (VOC):
    less than half visible behind others, neither found nor missed by the score."""
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "demo.avi", frames=frames)
        ground = json.loads(clip.with_suffix(".avi.json").read_text())
        cap = cv2.VideoCapture(str(clip))
        images = []
        while len(images) < frames:
            ok, frame = cap.read()
            if not ok:
                break
            images.append(cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (DEMO_SIZE, DEMO_SIZE),
                                     interpolation=cv2.INTER_AREA))
            height, width = frame.shape[:2]
        cap.release()
    scale = np.array([1, width, height, width, height], np.float32)
    truth = [np.asarray(t, np.float32).reshape(-1, 5) / scale for t in ground["boxes"][:len(images)]]
    difficult = [np.asarray(v) < 0.5 for v in ground["visible"][:len(images)]]
    return np.stack(images).astype(np.float32) / 255.0, truth, difficult


def clip_map(outputs: list[np.ndarray], truth: list[np.ndarray], difficult: list[np.ndarray],
             conf: float = 0.05) -> dict:
    """mAP@0.5 of the demo detector's raw outputs (one per clip frame) against the clip's truth."""
    detections = [decode_yolov2(o, DEMO_ANCHORS, len(LABELS), conf=conf) for o in outputs]
    aps = {LABELS[c]: average_precision(detections, truth, c, difficult=difficult) for c in range(len(LABELS))}
    return {"map50": float(np.mean(list(aps.values()))), "ap50": aps, "images": len(outputs),
            "difficult": int(sum(d.sum() for d in difficult))}


def evaluate_clip(model, frames: int = 300) -> dict:
    """mAP@0.5 of a Keras demo detector on the demo clip itself (see ``clip_frames``)."""
    images, truth, difficult = clip_frames(frames)
    return clip_map(list(model.predict(images, batch_size=32, verbose=0)), truth, difficult)


def main() -> None:
    parser = argparse.ArgumentParser(description="train the demo detector on generated scenes")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batches", type=int, default=100, help="batches per epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-from", type=Path, help="fine-tune these weights instead of starting afresh")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="initial rate of the cosine schedule")
    parser.add_argument("--evaluate", action="store_true",
                        help="only print the mAP of --start-from (default: the committed weights)")
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    if args.evaluate:
        model = demo_model(weights=args.start_from or WEIGHTS)
        print(_accuracy(model))
        return
    model = demo_model(weights=args.start_from)
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, args.epochs * args.batches, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=yolo_loss)
    started = time.monotonic()
    model.fit(Scenes(args.batches, args.batch_size, args.seed), epochs=args.epochs, verbose=2)
    trained = time.monotonic() - started
    accuracy = _accuracy(model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bare = demo_model(weights=None)  # uncompiled: the file holds the model's weights, no optimizer state
    bare.set_weights(model.get_weights())
    bare.save_weights(args.out)
    size = args.out.stat().st_size
    print(f"trained {args.epochs} epochs x {args.batches * args.batch_size} images in {trained / 60:.1f} min; "
          f"weights {size / 1e6:.1f} MB -> {args.out}")
    print(accuracy)


def _accuracy(model) -> str:
    held_out, clip = evaluate(model), evaluate_clip(model)

    def line(name: str, result: dict) -> str:
        per_class = ", ".join(f"{k} {v:.3f}" for k, v in result["ap50"].items())
        return f"mAP@0.5 {result['map50']:.3f} ({per_class}) on {result['images']} {name}"

    return line("held-out generated scenes", held_out) + "\n" + line("frames of the demo clip", clip)


if __name__ == "__main__":
    main()
