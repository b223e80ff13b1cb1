"""Built-in detectors, built in Keras: the paper's tiny-YOLOv2.

The zoo ships no downloaded weights: it builds the architecture with seeded weights and
calibrated batch-norm statistics, enough for the split contexts (which only depend on
shapes), for timing, and for checking that every split computes the same as the whole
model. The one model that detects for real, ``demo``, is trained by ``converter.train_demo``
on generated scenes and its weights ship with ANS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import keras
from keras import layers as kl

#: tiny-YOLOv2 anchors (COCO, in 13x13 grid cells), as Darknet's yolov2-tiny.cfg.
TINY_YOLOV2_ANCHORS = [(0.57273, 0.677385), (1.87446, 2.06253), (3.33843, 5.47434), (7.88282, 3.52778),
                       (9.77052, 9.16828)]


def tiny_yolov2(classes: int = 80, size: int = 416, width: float = 1.0, seed: int = 0,
                anchors: list[tuple[float, float]] = TINY_YOLOV2_ANCHORS) -> keras.Model:
    """The paper's tiny-YOLOv2: six 3x3 conv blocks of 16-32-64-128-256-512 filters (batch-norm,
    leaky 0.1), each followed by a 2x2 max-pool (the sixth with stride 1), then conv 1024,
    conv 1024 and a 1x1 output conv of anchors x (5 + classes) filters. ``width`` scales every
    filter count except the output's (for small variants)."""
    if classes < 1 or size % 32 or width <= 0:
        raise ValueError("need classes >= 1, an input size divisible by 32 and a positive width")
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = inp
    filters = [16, 32, 64, 128, 256, 512, 1024, 1024]
    for i, f in enumerate(filters, 1):
        x = kl.Conv2D(max(1, round(f * width)), 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = kl.BatchNormalization(epsilon=1e-5, name=f"bn{i}")(x)
        x = kl.LeakyReLU(negative_slope=0.1, name=f"leaky{i}")(x)
        if i <= 6:
            x = kl.MaxPooling2D(2, strides=2 if i < 6 else 1, padding="same", name=f"pool{i}")(x)
    out = kl.Conv2D(len(anchors) * (5 + classes), 1, name="detections")(x)
    model = keras.Model(inp, out, name=f"tiny-yolov2-{classes}c-{size}")
    calibrate_batch_norm(model, seed=seed)
    return model


def calibrate_batch_norm(model: keras.Model, samples: int = 4, seed: int = 0) -> None:
    """Set every batch-norm layer's moving statistics to those of its input on random images.

    Untrained statistics (mean 0, variance 1) let activations shrink or blow up layer after
    layer (outputs of ~1e-7), which makes equivalence checks meaningless.
    """
    rng = np.random.default_rng(seed)
    shape = (samples, *model.input.shape[1:])
    images = rng.random(shape, dtype=np.float32)
    for layer in model.layers:
        if not isinstance(layer, kl.BatchNormalization):
            continue
        probe = keras.Model(model.input, layer.input)
        x = np.asarray(probe(images, training=False))
        axes = tuple(range(x.ndim - 1))
        weights = layer.get_weights()  # [gamma][, beta], moving mean, moving variance
        layer.set_weights([*weights[:-2], x.mean(axis=axes), x.var(axis=axes) + 1e-3])


#: The demo detector: tiny-YOLOv2 at a quarter width, 256x256, three classes, anchors (grid cells)
#: fitted to the generated objects (24 to 72 pixels, cells of 32).
DEMO_SIZE = 256
DEMO_ANCHORS = [(0.9, 0.9), (1.4, 1.4), (2.0, 2.0)]
DEMO_WEIGHTS = Path(__file__).parent / "zoo_weights" / "demo.weights.h5"


def demo_decoding():
    """How the demo detector's output is read: a YOLOv2 region layer over the demo's three classes."""
    from common.bundle import Decoding
    from common.scenes import LABELS

    return Decoding(kind="yolov2-region", anchors=DEMO_ANCHORS, classes=len(LABELS), labels=list(LABELS))


def demo_model(weights: Path | None = DEMO_WEIGHTS) -> keras.Model:
    """The demo detector, with the weights trained by ``converter.train_demo`` unless ``weights`` is None."""
    from common.scenes import LABELS

    model = tiny_yolov2(classes=len(LABELS), size=DEMO_SIZE, width=0.25, anchors=DEMO_ANCHORS)
    model.name = "demo-detector"
    if weights is not None:
        model.load_weights(weights)
    return model
