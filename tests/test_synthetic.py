import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from common.scenes import LABELS, make_clip, make_frame  # noqa: E402


def test_frames_have_boxes_inside_the_image_and_are_reproducible():
    a_img, a_boxes = make_frame(np.random.default_rng(3), 256)
    b_img, b_boxes = make_frame(np.random.default_rng(3), 256)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_boxes, b_boxes)
    assert a_img.shape == (256, 256, 3) and a_img.dtype == np.uint8
    assert 1 <= len(a_boxes) <= 4
    assert np.all(a_boxes[:, 1:] >= -1) and np.all(a_boxes[:, 1:] <= 257)
    assert set(a_boxes[:, 0].astype(int)) <= set(range(len(LABELS)))


def test_clip_is_written_and_reads_back_with_its_boxes(tmp_path):
    path = make_clip(tmp_path / "demo.avi", frames=30, width=160, height=120)
    cap = cv2.VideoCapture(str(path))
    count = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (120, 160, 3)
        count += 1
    assert count == 30
    truth = json.loads((tmp_path / "demo.avi.json").read_text())
    assert len(truth["boxes"]) == 30 and truth["labels"] == list(LABELS)
