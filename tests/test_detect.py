import numpy as np

from common.detect import decode_yolov2, nms

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


def test_detections_follow_the_manifest_decoding():
    from common.bundle import Decoding
    from common.detect import detections

    out = np.full((1, 2, 2, 2 * 8), -8.0, np.float32)
    region = Decoding(kind="yolov2-region", anchors=ANCHORS, classes=3)
    assert detections([out], Decoding(kind="none")) == []
    assert detections([out], region) == []
    out[0, 0, 0, 4] = 8.0
    assert len(detections([out], region)) == 1
