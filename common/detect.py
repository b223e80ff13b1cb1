"""From a detector's raw outputs to detections: decode (YOLOv2 region, YOLOv3/v4, YOLOv8/YOLO11
anchor-free, YOLOX/YOLOv5, boxes + scores), threshold, non-maximum suppression.

Numpy only: this runs on the device (device-only frames) as well as on the edge.
"""

from __future__ import annotations

import numpy as np

from .bundle import Decoding


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _kept(corners: np.ndarray, scores: np.ndarray, conf: float) -> np.ndarray:
    """Rows (x1, y1, x2, y2, score, class) of the boxes (``corners``: ..., 4) whose best class
    (``scores``: ..., classes) scores at least ``conf``."""
    cls, best = scores.argmax(axis=-1), scores.max(axis=-1)
    keep = best >= conf
    return np.column_stack([corners[keep], best[keep], cls[keep]]).astype(np.float32)


def decode_yolov2(output: np.ndarray, anchors, classes: int, conf: float = 0.25, nms_iou: float = 0.45,
                  max_detections: int = 100) -> np.ndarray:
    """Detections as rows of (x1, y1, x2, y2, score, class), coordinates relative to the image (0..1).

    ``output`` is the raw (1, S, S, A·(5+classes)) or (S, S, A·(5+classes)) tensor and
    ``anchors`` the A (w, h) anchor sizes in grid cells.
    """
    grid = np.asarray(output, dtype=np.float32).reshape(output.shape[-3], output.shape[-2], len(anchors), 5 + classes)
    s_y, s_x = grid.shape[:2]
    # A box scores objectness x a class probability (at most 1): only boxes whose objectness reaches conf
    # can be kept, so the rest is computed for those alone (a handful of a few hundred), the same values.
    # The test is on the logit, sigmoid's inverse at conf: no exponential over the whole grid.
    where = np.nonzero(grid[..., 4] >= np.float32(np.log(conf / (1.0 - conf))))
    cells = grid[where]
    # Few numpy calls, each on all boxes' columns at once: the edge runs this on every reply.
    sig = _sigmoid(cells[:, [0, 1, 4]])  # the centre's offsets in its cell, and objectness
    size = np.array([s_x, s_y], np.float32)
    centre = (np.column_stack([where[1], where[0]]).astype(np.float32) + sig[:, :2]) / size
    half = np.asarray(anchors, dtype=np.float32)[where[2]] * np.exp(np.minimum(cells[:, 2:4], 10.0)) / size / 2
    exps = np.exp(cells[:, 5:] - cells[:, 5:].max(axis=-1, keepdims=True))
    scores = sig[:, 2:3] * (exps / exps.sum(axis=-1, keepdims=True))
    corners = np.concatenate([centre - half, centre + half], axis=1)
    return nms(_kept(corners, scores, conf), nms_iou)[:max_detections]


def decode_yolo(outputs: list[np.ndarray], anchors, masks: list[list[int]], classes: int, input_size: tuple[int, int],
                conf: float = 0.25, nms_iou: float = 0.45, max_detections: int = 100) -> np.ndarray:
    """YOLOv3/v4 heads (Darknet's [yolo]): one output per scale, each (S, S, len(mask)·(5+classes));
    anchors in pixels of the network input (``input_size`` = height, width), ``masks`` the anchors
    each output uses; objectness and classes are independent sigmoids. Rows as ``decode_yolov2``."""
    anchors = np.asarray(anchors, dtype=np.float32)
    h_in, w_in = input_size
    found = []
    for output, mask in zip(outputs, masks):
        grid = np.asarray(output, dtype=np.float32).reshape(output.shape[-3], output.shape[-2], len(mask), 5 + classes)
        s_y, s_x = grid.shape[:2]
        cy, cx = np.mgrid[0:s_y, 0:s_x].astype(np.float32)
        a = anchors[mask]
        x = (cx[..., None] + _sigmoid(grid[..., 0])) / s_x
        y = (cy[..., None] + _sigmoid(grid[..., 1])) / s_y
        w = a[:, 0] * np.exp(np.minimum(grid[..., 2], 10.0)) / w_in
        h = a[:, 1] * np.exp(np.minimum(grid[..., 3], 10.0)) / h_in
        scores = _sigmoid(grid[..., 4])[..., None] * _sigmoid(grid[..., 5:])
        found.append(_kept(np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], axis=-1), scores, conf))
    rows = np.concatenate(found) if found else np.zeros((0, 6), np.float32)
    return nms(rows, nms_iou)[:max_detections]


def _rows(centre_size: np.ndarray, scores: np.ndarray, input_size: tuple[int, int], conf: float,
          nms_iou: float, max_detections: int) -> np.ndarray:
    """(cx, cy, w, h) boxes in input pixels and per-class scores -> NMS-ed relative rows."""
    h_in, w_in = input_size
    cx, cy, w, h = (centre_size[:, k] for k in range(4))
    corners = np.stack([(cx - w / 2) / w_in, (cy - h / 2) / h_in, (cx + w / 2) / w_in, (cy + h / 2) / h_in], axis=-1)
    return nms(_kept(corners, scores, conf), nms_iou)[:max_detections]


def decode_anchor_free(output: np.ndarray, classes: int, input_size: tuple[int, int], conf: float = 0.25,
                       nms_iou: float = 0.45, max_detections: int = 100) -> np.ndarray:
    """YOLOv8 / YOLO11 ([1, 4 + classes, N], distribution focal loss decoded in the graph): centre and
    size in input pixels, then the class scores (sigmoid applied). Rows as ``decode_yolov2``."""
    pred = np.asarray(output, dtype=np.float32).reshape(4 + classes, -1).T
    return _rows(pred[:, :4], pred[:, 4:], input_size, conf, nms_iou, max_detections)


def decode_yolox(output: np.ndarray, classes: int, input_size: tuple[int, int], strides: list[int],
                 conf: float = 0.25, nms_iou: float = 0.45, max_detections: int = 100) -> np.ndarray:
    """YOLOX (and YOLOv5) [1, N, 5 + classes]: box, objectness, class scores (sigmoids applied). With
    ``strides``, the export left the grid decode out: xy are offsets in cells of each stride's grid
    (the levels in order, rows first) and wh log sizes in cells."""
    pred = np.asarray(output, dtype=np.float32).reshape(-1, 5 + classes)
    box = pred[:, :4]
    if strides:
        h_in, w_in = input_size
        grids, scale = [], []
        for s in strides:
            gy, gx = np.mgrid[0:h_in // s, 0:w_in // s]
            grids.append(np.stack([gx.ravel(), gy.ravel()], axis=-1))
            scale.append(np.full(gx.size, s))
        grid, scale = np.concatenate(grids).astype(np.float32), np.concatenate(scale).astype(np.float32)[:, None]
        if len(grid) != len(pred):
            raise ValueError(f"yolox output has {len(pred)} rows; strides {strides} give {len(grid)}")
        box = np.column_stack([(box[:, :2] + grid) * scale, np.exp(np.minimum(box[:, 2:4], 10.0)) * scale])
    return _rows(box, pred[:, 4:5] * pred[:, 5:], input_size, conf, nms_iou, max_detections)


def decode_boxes_scores(boxes: np.ndarray, scores: np.ndarray, box_order: str = "xyxy", background: bool = False,
                        conf: float = 0.25, nms_iou: float = 0.45, max_detections: int = 100) -> np.ndarray:
    """SSD-style two outputs: boxes [1, N, 4] as relative corners, scores [1, N, C] (column 0 the
    background when ``background``). Rows as ``decode_yolov2``."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(len(boxes), -1)
    if box_order == "yxyx":
        boxes = boxes[:, [1, 0, 3, 2]]
    if background:
        scores = scores[:, 1:]
    return nms(_kept(boxes, scores, conf), nms_iou)[:max_detections]


def detections(outputs: list[np.ndarray], decoding: Decoding, input_size: tuple[int, int]) -> list[list[float]]:
    """Detections from a model's raw outputs (in the manifest's order), as the manifest's ``decoding``
    says; none for ``none``. ``input_size``: the network input's height and width."""
    if decoding.kind == "yolov2-region":
        return decode_yolov2(outputs[0], decoding.anchors, decoding.classes).tolist()
    if decoding.kind == "yolo":
        return decode_yolo(outputs, decoding.anchors, decoding.masks, decoding.classes, input_size).tolist()
    if decoding.kind == "yolov8":
        return decode_anchor_free(outputs[0], decoding.classes, input_size).tolist()
    if decoding.kind == "yolox":
        return decode_yolox(outputs[0], decoding.classes, input_size, decoding.strides).tolist()
    if decoding.kind == "boxes-scores":
        return decode_boxes_scores(outputs[0], outputs[1], decoding.box_order, decoding.background).tolist()
    return []


def objects(rows: list[list[float]], labels: list[str], width: int, height: int) -> list[dict]:
    """Detections as users read them: label, score, and the box in pixels of the source frame
    (``rows`` are the protocol's relative (x1, y1, x2, y2, score, class))."""
    out = []
    for x1, y1, x2, y2, score, cls in rows:
        k = int(cls)
        out.append({"label": labels[k] if 0 <= k < len(labels) else str(k), "score": round(float(score), 3),
                    "box": [round(float(x1) * width), round(float(y1) * height), round(float(x2) * width),
                            round(float(y2) * height)]})
    return out


def counts(found: list[dict], labels: list[str]) -> dict[str, int]:
    """Objects per label, every label present (zero when none is seen)."""
    tally = dict.fromkeys(labels, 0)
    for thing in found:
        tally[thing["label"]] = tally.get(thing["label"], 0) + 1
    return tally


def iou(a: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of (x1, y1, x2, y2) boxes: of one box ``a`` with each row of ``boxes`` (a vector), or of
    each row of ``a`` with each row of ``boxes`` (a matrix, one row per row of ``a``)."""
    x1, y1, x2, y2 = a[:4] if a.ndim == 1 else a[:, :4, None].transpose(1, 0, 2)
    inter = (np.clip(np.minimum(x2, boxes[:, 2]) - np.maximum(x1, boxes[:, 0]), 0, None)
             * np.clip(np.minimum(y2, boxes[:, 3]) - np.maximum(y1, boxes[:, 1]), 0, None))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum((x2 - x1) * (y2 - y1) + areas - inter, 1e-12)


def nms(rows: np.ndarray, threshold: float, block: int = 256) -> np.ndarray:
    """Per-class greedy non-maximum suppression of (x1, y1, x2, y2, score, class) rows, best first: a
    row is kept unless a kept row of its class that scores higher overlaps it by ``threshold`` IoU or
    more. The overlaps are worked out for a block of rows against all at once, so the numpy calls
    are a few per block, not a dozen per kept box (on the edge this runs on every reply)."""
    rows = rows[np.argsort(-rows[:, 4], kind="stable")]
    cls = rows[:, 5]
    removed = np.zeros(len(rows), bool)
    keep = []
    for start in range(0, len(rows), block):
        b = slice(start, start + block)
        suppresses = (iou(rows[b, :4], rows[:, :4]) >= threshold) & (cls[b, None] == cls)
        for i, row in enumerate(suppresses, start):
            if not removed[i]:
                keep.append(i)
                removed |= row
    return rows[keep].astype(np.float32, copy=False)
