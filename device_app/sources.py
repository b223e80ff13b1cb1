"""Where frames come from, and how they become the model's input.

OpenCV reads files and cameras; a host app (Android) hands frames over itself and needs
neither: ``preprocess`` falls back to numpy when OpenCV is absent.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from common.errors import ConfigurationError, SourceLost  # noqa: F401  (SourceLost: raised here, caught by hosts)


def open_source(spec: str, limit: int | None = None, loop: bool = False):
    """RGB uint8 frames from a video file, ``camera:N``, or ``demo`` (the generated demo clip);
    ``loop``: a file starts again from its first frame when it ends, until ``limit``."""
    if spec == "demo":
        spec = str(demo_clip())
    if not loop or spec.startswith("camera:"):
        return _video_frames(spec, limit)
    return _looped(spec, limit)


def _looped(spec: str, limit: int | None):
    count = 0
    while limit is None or count < limit:
        played = 0
        for frame in _video_frames(spec, None if limit is None else limit - count):
            played += 1
            yield frame
        if not played:  # an empty file would loop for ever
            raise ConfigurationError(f"{spec}: the video holds no frame")
        count += played


def demo_clip() -> Path:
    """The demo clip, generated once per machine into the temp folder (no download)."""
    from common.scenes import make_clip

    path = Path(tempfile.gettempdir()) / "ans-demo-clip-v1.avi"
    if not path.is_file():
        part = path.with_name(f".{path.stem}-{os.getpid()}.avi")
        make_clip(part, frames=300)
        part.with_suffix(".avi.json").unlink(missing_ok=True)
        part.replace(path)
    return path


def _video_frames(source: str, limit: int | None, camera_patience_s: float = 5.0):
    """A file ends at its last frame; a camera that fails to deliver for ``camera_patience_s`` is lost."""
    import time

    import cv2

    camera = source.startswith("camera:")
    cap = cv2.VideoCapture(int(source.split(":", 1)[1]) if camera else source)
    if not cap.isOpened():
        if camera:  # not there (yet): worth a restart, it may be enumerating at boot
            raise SourceLost(f"{source}: cannot open the camera")
        raise ConfigurationError(f"{source}: cannot open the video source")
    count, failing_since = 0, None
    try:
        while limit is None or count < limit:
            ok, frame = cap.read()
            if not ok:
                if not camera:
                    return
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > camera_patience_s:
                    raise SourceLost(f"{source}: no frame for {camera_patience_s:g} s (unplugged?)")
                time.sleep(0.1)
                continue
            failing_since = None
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def preprocess(frame: np.ndarray, size: tuple[int, int], scale: float) -> np.ndarray:
    """RGB uint8 frame -> the model's float32 input batch of one, resized to ``size`` (h, w)."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame (h, w, 3), got shape {frame.shape}")
    if frame.shape[:2] != tuple(size):
        try:
            import cv2

            frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        except ImportError:  # nearest neighbour: hosts without OpenCV usually hand over model-sized frames
            rows = (np.arange(size[0]) * frame.shape[0] // size[0])
            cols = (np.arange(size[1]) * frame.shape[1] // size[1])
            frame = frame[rows[:, None], cols]
    return (frame.astype(np.float32) * np.float32(scale))[None]
