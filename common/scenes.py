"""Procedurally generated scenes with ground-truth boxes: training data for the demo
detector, its held-out test set, and the demo video clip, all from one generator.

Three classes with distinct shapes and colours (a red disc, a blue square, a green
triangle), 1 to 4 per frame, over textured backgrounds (smooth colour gradients,
stripes, blotches and sensor noise). In a clip the objects move and bounce, so
consecutive frames change little and key frames are rare, as in real video.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

LABELS = ("disc", "square", "triangle")
_COLOURS = ((220, 40, 40), (40, 70, 220), (40, 190, 60))  # RGB per class


@dataclass
class Thing:
    cls: int
    x: float  # centre, pixels
    y: float
    size: float  # bounding-box side, pixels
    vx: float = 0.0
    vy: float = 0.0

    def box(self) -> tuple[float, float, float, float]:
        h = self.size / 2
        return self.x - h, self.y - h, self.x + h, self.y + h


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(60, 200, 3)
    tilt = rng.uniform(-60, 60, (2, 3))
    img = base + (xx[..., None] / w - 0.5) * tilt[0] + (yy[..., None] / h - 0.5) * tilt[1]
    if rng.random() < 0.6:  # stripes
        period, angle = rng.uniform(8, 40), rng.uniform(0, np.pi)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period
        img += (np.sin(phase)[..., None] * rng.uniform(5, 25)) * rng.uniform(0.5, 1, 3)
    canvas = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, 6)):  # blotches
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(5, w // 4)), int(rng.integers(5, h // 4)))
        colour = tuple(int(c) for c in np.clip(base + rng.normal(0, 35, 3), 0, 255))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return canvas


def _draw(canvas: np.ndarray, thing: Thing, rng: np.random.Generator) -> None:
    _paint(canvas, thing, tuple(int(c) for c in np.clip(np.array(_COLOURS[thing.cls]) + rng.normal(0, 12, 3), 0, 255)))


def _paint(canvas: np.ndarray, thing: Thing, colour) -> None:
    x1, y1, x2, y2 = (int(round(v)) for v in thing.box())
    if thing.cls == 0:
        cv2.circle(canvas, (int(round(thing.x)), int(round(thing.y))), int(round(thing.size / 2)), colour, -1,
                   cv2.LINE_AA)
    elif thing.cls == 1:
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, -1)
    else:
        pts = np.array([[int(round(thing.x)), y1], [x1, y2], [x2, y2]], np.int32)
        cv2.fillPoly(canvas, [pts], colour, cv2.LINE_AA)


def _place(rng: np.random.Generator, h: int, w: int, sizes: tuple[float, float]) -> list[Thing]:
    things: list[Thing] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            size = float(rng.uniform(*sizes))
            t = Thing(int(rng.integers(0, len(LABELS))), float(rng.uniform(size / 2, w - size / 2)),
                      float(rng.uniform(size / 2, h - size / 2)), size)
            if all(abs(t.x - o.x) > (t.size + o.size) / 2 or abs(t.y - o.y) > (t.size + o.size) / 2 for o in things):
                things.append(t)
                break
    return things


def _render(rng: np.random.Generator, background: np.ndarray, things: list[Thing]) -> np.ndarray:
    frame = background.copy()
    for t in things:
        _draw(frame, t, rng)
    noise = rng.normal(0, 3, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def _visible(things: list[Thing], h: int, w: int) -> list[float]:
    """The share of each object's pixels that the objects drawn after it leave visible."""
    masks = []
    for t in things:
        mask = np.zeros((h, w), np.uint8)
        _paint(mask, t, 1)
        masks.append(mask.astype(bool))
    shares = []
    for k, mask in enumerate(masks):
        cover = np.zeros((h, w), bool)
        for later in masks[k + 1:]:
            cover |= later
        shares.append(round(float((mask & ~cover).sum() / max(mask.sum(), 1)), 3))
    return shares


def _boxes(things: list[Thing]) -> np.ndarray:
    """(n, 5) rows of class, x1, y1, x2, y2 in pixels."""
    return np.array([[t.cls, *t.box()] for t in things], np.float32).reshape(-1, 5)


def make_frame(rng: np.random.Generator, size: int = 256, sizes: tuple[float, float] = (24, 72)):
    """One RGB frame (uint8) and its boxes."""
    things = _place(rng, size, size, sizes)
    return _render(rng, _background(rng, size, size), things), _boxes(things)


def make_camera_frame(rng: np.random.Generator, size: int = 256):
    """A scene as the device sees a camera frame: captured at another aspect ratio (as the demo
    clip's 320x240), often JPEG-compressed (as MJPG video), objects that may pass in front of one
    another (as they do in the clip) or sit on a blob of nearly their colour, and distractors in
    the objects' colours (blue and green blobs of any shape, elongated red ones: none is a disc,
    a square or a triangle), then
    stretched to the model's square input. Returns the ``size`` x ``size`` RGB frame and its
    boxes in its pixels (an occluded object keeps its whole box, as in the clip's ground truth)."""
    w, h = int(rng.integers(size, size * 7 // 5)), int(rng.integers(size * 4 // 5, size * 23 // 20))
    background = _background(rng, h, w)
    for _ in range(int(rng.integers(0, 5))):
        cls = int(rng.integers(0, 3))
        a = rng.uniform(6, 45)
        b = a / rng.uniform(2.5, 6) if cls == 0 else rng.uniform(6, 45)
        colour = tuple(int(c) for c in np.clip(np.array(_COLOURS[cls]) + rng.normal(0, 25, 3), 0, 255))
        cv2.ellipse(background, (int(rng.integers(0, w)), int(rng.integers(0, h))), (int(a), int(b)),
                    float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    things = _place(rng, h, w, (28, 70))
    for t in things:  # now and then an object sits on a blob of nearly its own colour: low contrast
        if rng.random() < 0.25:
            colour = tuple(int(c) for c in np.clip(np.array(_COLOURS[t.cls]) + rng.normal(0, 40, 3), 0, 255))
            axes = (int(t.size * rng.uniform(0.6, 1.5)), int(t.size * rng.uniform(0.6, 1.5)))
            centre = (int(t.x + rng.uniform(-0.5, 0.5) * t.size), int(t.y + rng.uniform(-0.5, 0.5) * t.size))
            cv2.ellipse(background, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    if things and rng.random() < 0.4:  # one more object, partly in front of or behind another
        other = things[int(rng.integers(0, len(things)))]
        size_new = float(rng.uniform(28, 70))
        shift = rng.uniform(0.45, 0.85) * (other.size + size_new) / 2 * np.sign(rng.uniform(-1, 1, 2))
        x = float(np.clip(other.x + shift[0], size_new / 2, w - size_new / 2))
        y = float(np.clip(other.y + shift[1], size_new / 2, h - size_new / 2))
        cls = (other.cls + int(rng.integers(1, len(LABELS)))) % len(LABELS)  # same colour would merge into one
        things.insert(int(rng.integers(0, len(things) + 1)), Thing(cls, x, y, size_new))
    frame = _render(rng, background, things)
    if rng.random() < 0.7:
        quality = int(rng.integers(60, 96))
        frame = cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_UNCHANGED)
    frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    boxes = _boxes(things)
    boxes[:, 1:] *= np.array([size / w, size / h, size / w, size / h], np.float32)
    return frame, boxes


def make_clip(path: str | Path, frames: int = 300, seed: int = 7, width: int = 320, height: int = 240,
              fps: int = 15) -> Path:
    """Write the demo clip (MJPG .avi, BGR as video files are) and its ground truth as ``<path>.json``:
    per frame the boxes (class, x1, y1, x2, y2 in pixels) and the share of each object left visible
    by those passing in front of it (evaluations treat objects less than half visible as VOC's
    "difficult": neither found nor missed)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    background = _background(rng, height, width)
    things = _place(rng, height, width, (28, 70))
    for t in things:
        t.vx, t.vy = rng.uniform(-2.5, 2.5, 2)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: cannot open a video writer")
    truth, visible = [], []
    try:
        for k in range(frames):
            if k and k % 100 == 0:  # a scene cut now and then: a new background and new objects
                background = _background(rng, height, width)
                things = _place(rng, height, width, (28, 70))
                for t in things:
                    t.vx, t.vy = rng.uniform(-2.5, 2.5, 2)
            frame = _render(rng, background, things)
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            truth.append(_boxes(things).tolist())
            visible.append(_visible(things, height, width))
            for t in things:
                t.x += t.vx
                t.y += t.vy
                h = t.size / 2
                if not h <= t.x <= width - h:
                    t.vx = -t.vx
                    t.x = min(max(t.x, h), width - h)
                if not h <= t.y <= height - h:
                    t.vy = -t.vy
                    t.y = min(max(t.y, h), height - h)
    finally:
        writer.release()
    path.with_suffix(path.suffix + ".json").write_text(json.dumps({"labels": LABELS, "boxes": truth,
                                                                   "visible": visible}))
    return path
