"""Frame sources: a file ends, a camera that stops delivering is lost (so the service restarts),
and preprocessing works with or without OpenCV."""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from device_app import sources  # noqa: E402


class FakeCamera:
    """Delivers ``frames`` frames, then fails every read, as an unplugged USB camera does."""

    def __init__(self, index, frames=3):
        self.left = frames

    def isOpened(self):
        return True

    def read(self):
        if self.left:
            self.left -= 1
            return True, np.zeros((4, 6, 3), np.uint8)
        return False, None

    def release(self):
        pass


def test_a_camera_that_stops_is_lost_not_ended(monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", FakeCamera)
    frames = sources._video_frames("camera:0", None, camera_patience_s=0.3)
    assert sum(1 for _ in zip(range(3), frames)) == 3
    with pytest.raises(sources.SourceLost, match="camera:0: no frame for 0.3 s"):
        next(frames)


def test_a_missing_camera_is_lost_and_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(sources.SourceLost, match="cannot open the camera"):
        next(sources._video_frames("camera:97", None))
    with pytest.raises(ValueError, match="cannot open the video source"):
        next(sources._video_frames(str(tmp_path / "nope.mp4"), None))


def test_preprocess_resizes_and_scales():
    frame = np.full((240, 320, 3), 255, np.uint8)
    x = sources.preprocess(frame, (256, 256), 1 / 255)
    assert x.shape == (1, 256, 256, 3) and x.dtype == np.float32 and np.allclose(x, 1.0)
    with pytest.raises(ValueError, match="expected an RGB frame"):
        sources.preprocess(np.zeros((4, 4)), (2, 2), 1.0)


def test_a_looped_file_starts_again_until_the_limit(tmp_path):
    from common.scenes import make_clip

    clip = tmp_path / "clip.avi"
    make_clip(clip, frames=5, width=160, height=120)
    once = list(sources.open_source(str(clip)))
    looped = list(sources.open_source(str(clip), limit=12, loop=True))
    assert len(once) == 5 and len(looped) == 12
    assert all(np.array_equal(a, b) for a, b in zip(looped[5:10], once))
