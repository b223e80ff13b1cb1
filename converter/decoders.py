"""Which decoder turns a converted model's outputs into detections, told by the outputs' shapes (and,
for YOLOX, by whether the export left the grid decode out), or named with ``--decoder``; and its labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.bundle import Decoding
from common.keras_model import ModelError
YOLOX_STRIDES = [8, 16, 32]


def read_labels(path: str | Path) -> list[str]:
    """One class name per line (blank lines skipped), as Darknet's .names and most label files."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the labels: {exc.strerror}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def guess_decoder(shapes: list[list[int]], sample: list[np.ndarray], input_size: tuple[int, int]) -> str:
    """The decoder whose output layout ``shapes`` match; ``sample`` (outputs for one image) tells raw
    YOLOX offsets (small) from boxes in pixels."""
    if len(shapes) == 1 and len(shapes[0]) == 3:
        _, a, b = shapes[0]
        if b > a >= 5:
            return "yolov8"
        if a > b >= 6:
            cells = sum((input_size[0] // s) * (input_size[1] // s) for s in YOLOX_STRIDES)
            centres = np.abs(np.asarray(sample[0], dtype=np.float32).reshape(a, b)[:, :2])
            raw = a == cells and float(np.percentile(centres, 99)) < 0.1 * max(input_size)
            return "yolox-raw" if raw else "yolox"
    if len(shapes) == 2 and len(shapes[0]) == 3 == len(shapes[1]) and shapes[0][2] == 4 \
            and shapes[0][:2] == shapes[1][:2]:
        return "boxes-scores"
    return "none"


def choose_decoding(decoder: str, shapes: list[list[int]], sample: list[np.ndarray], input_size: tuple[int, int],
                    labels: list[str]) -> Decoding:
    """The manifest's ``decoding`` for ``decoder`` (``auto``: guessed), classes from the output shapes."""
    kind = guess_decoder(shapes, sample, input_size) if decoder == "auto" else decoder
    fits = {"yolov8": len(shapes) == 1 and len(shapes[0]) == 3,
            "yolox": len(shapes) == 1 and len(shapes[0]) == 3,
            "yolox-raw": len(shapes) == 1 and len(shapes[0]) == 3,
            "boxes-scores": len(shapes) == 2 and shapes[0][-1] == 4}
    if kind != "none" and not fits[kind]:
        raise ModelError(f"--decoder {kind} does not fit outputs of shapes {shapes}")
    classes = {"yolov8": lambda: shapes[0][1] - 4, "yolox": lambda: shapes[0][2] - 5,
               "yolox-raw": lambda: shapes[0][2] - 5, "boxes-scores": lambda: shapes[1][2],
               "none": lambda: len(labels)}[kind]()
    background = kind == "boxes-scores" and len(labels) == classes - 1
    named = classes - 1 if background else classes
    if labels and len(labels) != named:
        raise ModelError(f"{len(labels)} labels for a model with {named} classes")
    if kind == "yolox-raw":
        return Decoding(kind="yolox", classes=classes, labels=labels, strides=YOLOX_STRIDES)
    return Decoding(kind=kind, classes=classes, labels=labels, background=background)
