"""Annotated frames (video and snapshots): readable object tags, a status bar that says where each
frame ran, snapshots no more often than asked."""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from device_app.annotate import AnnotatedVideo, Overlay, Snapshots  # noqa: E402
from mqtt.protocol import FrameRecord  # noqa: E402


def _record(split, fallback=False, edge=None, online=False, detections=()):
    return FrameRecord(3, split, fallback, 0.012, list(detections), [], edge, online)


def test_status_names_the_device_split_and_the_edge_state(tmp_path):
    overlay = Overlay(["disc"], device_only=9)
    overlay.times.extend([0.0, 0.5, 1.0])
    assert overlay.status(_record(9)) == "#3  2.0 fps  device  12 ms  edge offline"
    assert "device (fallback)" in overlay.status(_record(4, fallback=True, online=True))
    assert overlay.status(_record(4, edge="edge-1", online=True)).endswith("split 4  12 ms  edge online")


def test_labels_sit_on_a_filled_tag_in_the_class_colour(tmp_path):
    video = AnnotatedVideo(tmp_path / "a.avi", Overlay(["disc", "square"], device_only=9))
    frame = np.full((120, 160, 3), 255, np.uint8)  # white: a tag without fill would be unreadable
    video.write(frame, _record(9, detections=[(0.25, 0.5, 0.75, 0.9, 0.9, 1)]))
    video.close()
    ok, image = cv2.VideoCapture(str(tmp_path / "a.avi")).read()
    assert ok
    tag = cv2.cvtColor(image[48:58, 42:60], cv2.COLOR_BGR2RGB).reshape(-1, 3).astype(int)
    blue = np.all(np.abs(tag - (60, 110, 240)) < 40, axis=1)  # the square's colour fills the tag
    white = np.all(tag > 200, axis=1)
    assert blue.mean() > 0.25 and white.mean() < 0.05, (blue.mean(), white.mean())
    bar = image[-6:, :40].reshape(-1, 3).astype(int)
    assert (bar.sum(axis=1) < 200).mean() > 0.4  # the status bar is dark whatever the frame


def test_snapshots_are_jpegs_no_more_often_than_asked():
    sent = []
    snapshots = Snapshots(sent.append, Overlay(["disc"], device_only=9), interval_s=3600)
    frame = np.zeros((120, 160, 3), np.uint8)
    for _ in range(5):
        snapshots(frame, _record(9, detections=[(0.1, 0.1, 0.5, 0.5, 0.8, 0)]))
    assert len(sent) == 1
    image = cv2.imdecode(np.frombuffer(sent[0], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (120, 160, 3) and image.sum() > 0  # the frame, with the box and the status bar drawn
    every = Snapshots(sent.append, Overlay(), interval_s=0)
    every(frame, _record(9))
    every(frame, _record(9))
    assert len(sent) == 3
