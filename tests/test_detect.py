import numpy as np
import pytest

from common.detect import decode_yolov2, detections, nms

ANCHORS = [(1.0, 1.0), (2.0, 2.0)]


def logit(p):
    return np.log(p / (1 - p))


def test_decode_places_a_confident_box_where_the_output_says():
    out = np.full((4, 4, 2, 5 + 3), -8.0, np.float32)
    out[..., 2:4] = 0.0
    # cell (row 1, col 2), anchor 1: centre at the middle of the cell, 2x2 cells, class 2
    out[1, 2, 1, :5] = [0.0, 0.0, 0.0, 0.0, logit(0.9)]
    out[1, 2, 1, 5:] = [0.0, 0.0, 6.0]
    dets = decode_yolov2(out.reshape(1, 4, 4, -1), ANCHORS, classes=3, conf=0.25)
    assert len(dets) == 1
    x1, y1, x2, y2, score, cls = dets[0]
    np.testing.assert_allclose([x1, y1, x2, y2], [2.5 / 4 - 1 / 4, 1.5 / 4 - 1 / 4, 2.5 / 4 + 1 / 4, 1.5 / 4 + 1 / 4],
                               atol=1e-6)
    assert cls == 2 and 0.85 < score < 0.9


def test_nms_keeps_the_best_of_overlapping_boxes_per_class():
    rows = np.array([[0, 0, 1, 1, 0.9, 0], [0.05, 0, 1, 1, 0.8, 0], [0.05, 0, 1, 1, 0.7, 1], [2, 2, 3, 3, 0.6, 0]],
                    np.float32)
    kept = nms(rows, 0.5)
    assert kept[:, 4].tolist() == [np.float32(0.9), np.float32(0.7), np.float32(0.6)]
    assert nms(np.zeros((0, 6), np.float32), 0.5).shape == (0, 6)


def test_nms_is_the_plain_greedy_one_box_at_a_time():
    """Block-wise overlaps (here blocks of 16 over 200 rows) keep exactly the rows that the textbook
    greedy suppression keeps: per class, best first, each kept box dropping the rest it overlaps."""
    from common.detect import iou

    def greedy(rows, threshold):
        rows, kept = rows[np.argsort(-rows[:, 4], kind="stable")], []
        for c in np.unique(rows[:, 5]):
            candidates = rows[rows[:, 5] == c]
            while len(candidates):
                kept.append(candidates[0])
                candidates = candidates[1:][iou(candidates[0], candidates[1:]) < threshold]
        return sorted(map(tuple, kept), key=lambda r: -r[4])

    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 200):
        xy = rng.uniform(0, 1, (n, 2))
        wh = rng.uniform(0.05, 0.4, (n, 2))
        rows = np.column_stack([xy, xy + wh, rng.uniform(0.25, 1, n), rng.integers(0, 3, n)]).astype(np.float32)
        for threshold in (0.3, 0.45, 0.7):
            got = nms(rows, threshold, block=16)
            assert sorted(map(tuple, got), key=lambda r: -r[4]) == greedy(rows, threshold)
            assert list(got[:, 4]) == sorted(got[:, 4], reverse=True)


def test_detections_follow_the_manifest_decoding():
    from common.bundle import Decoding
    from common.detect import detections

    out = np.full((1, 2, 2, 2 * 8), -8.0, np.float32)
    region = Decoding(kind="yolov2-region", anchors=ANCHORS, classes=3)
    assert detections([out], Decoding(kind="none"), (64, 64)) == []
    assert detections([out], region, (64, 64)) == []
    out[0, 0, 0, 4] = 8.0
    assert len(detections([out], region, (64, 64))) == 1


def test_yolo_heads_decode_with_their_own_anchors_in_pixels():
    """Two [yolo] outputs (YOLOv3/v4-tiny): the coarse one uses anchors 3..5, the fine one 0..2."""
    from common.bundle import Decoding
    from common.detect import detections

    anchors = [(10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)]
    decoding = Decoding(kind="yolo", anchors=anchors, masks=[[3, 4, 5], [0, 1, 2]], classes=2)
    coarse = np.full((1, 2, 2, 3 * 7), -8.0, np.float32)
    fine = np.full((1, 4, 4, 3 * 7), -8.0, np.float32)
    coarse[0, 1, 0, 7 * 1:7 * 2] = [0, 0, 0, 0, 8.0, -8.0, 8.0]  # anchor 4 (135x169), class 1, centre of cell
    fine[0, 0, 3, 7 * 2:7 * 3] = [0, 0, np.log(2.0), 0, 8.0, 8.0, -8.0]  # anchor 2 (37x58) twice as wide, class 0
    rows = detections([coarse, fine], decoding, (128, 256))  # height 128, width 256
    assert len(rows) == 2
    by_class = {int(r[5]): r for r in rows}
    np.testing.assert_allclose(by_class[1][:4], [0.25 - 135 / 512, 0.75 - 169 / 256, 0.25 + 135 / 512,
                                                 0.75 + 169 / 256], atol=1e-5)
    np.testing.assert_allclose(by_class[0][:4], [3.5 / 4 - 37 / 256, 0.125 - 29 / 128, 3.5 / 4 + 37 / 256,
                                                 0.125 + 29 / 128], atol=1e-5)
    assert all(r[4] > 0.99 for r in rows)


def test_anchor_free_yolox_and_boxes_scores_outputs_decode_to_the_same_box():
    """One object at (16..48, 8..40) of a 64x64 input, class 1, as each layout writes it."""
    from common.bundle import Decoding

    want = [0.25, 0.125, 0.75, 0.625]
    n = 8 * 8 + 4 * 4 + 2 * 2
    v8 = np.zeros((1, 4 + 3, n), np.float32)
    v8[0, :4, 5] = [32, 24, 32, 32]
    v8[0, 4 + 1, 5] = 0.9
    (row,) = detections([v8], Decoding(kind="yolov8", classes=3), (64, 64))
    assert np.allclose(row[:4], want) and row[4] == pytest.approx(0.9) and row[5] == 1

    raw = np.zeros((1, n, 5 + 3), np.float32)
    raw[0, :, 2:4] = -5.0  # tiny boxes everywhere, and no objectness
    cell = 3 * 8 + 4  # stride 8: row 3, column 4 -> centre (4 + 0, 3 + 0) * 8 = (32, 24)
    raw[0, cell] = [0.0, 0.0, np.log(4.0), np.log(4.0), 0.95, 0.0, 0.9, 0.1]
    (row,) = detections([raw], Decoding(kind="yolox", classes=3, strides=[8, 16, 32]), (64, 64))
    assert np.allclose(row[:4], want) and row[4] == pytest.approx(0.95 * 0.9) and row[5] == 1

    boxes = np.zeros((1, 5, 4), np.float32)
    boxes[0, 2] = [want[1], want[0], want[3], want[2]]  # y first
    scores = np.zeros((1, 5, 4), np.float32)
    scores[0, :, 0] = 1.0  # background everywhere else
    scores[0, 2] = [0.05, 0.05, 0.85, 0.05]
    (row,) = detections([boxes, scores], Decoding(kind="boxes-scores", classes=4, box_order="yxyx",
                                                  background=True), (64, 64))
    assert np.allclose(row[:4], want) and row[4] == pytest.approx(0.85) and row[5] == 1
