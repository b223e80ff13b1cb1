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
