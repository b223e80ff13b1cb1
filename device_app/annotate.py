"""Detections drawn on the frames, for a video file and for snapshots (OpenCV; optional on the device)."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import numpy as np

from mqtt.protocol import FrameRecord

_COLOURS = ((230, 60, 60), (60, 110, 240), (60, 200, 90), (240, 200, 40), (200, 80, 220), (40, 200, 210))
_FONT, _SCALE = 0, 0.4  # cv2.FONT_HERSHEY_SIMPLEX


def _label(cv2, image: np.ndarray, text: str, x: int, y: int, background: tuple, above: bool = True) -> None:
    """Text on a filled box of ``background`` (readable over any colour); black or white text,
    whichever contrasts more. ``(x, y)`` is the box's lower left corner (upper left if not ``above``)."""
    h, w = image.shape[:2]
    scale = _SCALE
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    if tw > w - 4:  # a small frame: smaller text rather than a cut-off line
        scale *= (w - 4) / tw
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    x = min(max(x, 0), max(w - tw - 4, 0))
    top = y - th - base - 2 if above else y
    top = min(max(top, 0), max(h - th - base - 2, 0))
    cv2.rectangle(image, (x, top), (x + tw + 4, top + th + base + 2), background, -1)
    ink = (0, 0, 0) if sum(background) > 380 else (255, 255, 255)
    cv2.putText(image, text, (x + 2, top + th + 1), _FONT, scale, ink, 1, cv2.LINE_AA)


class Overlay:
    """Draws a frame's objects (label and score on a filled tag) and a status bar: frame number,
    frames per second, where the frame was cut ("device" for the device-only split), the delay,
    and whether an edge was online. Boxes are relative (0..1)."""

    def __init__(self, labels: list[str] | None = None, device_only: int | None = None):
        self.labels, self.device_only = labels or [], device_only
        self.times: deque = deque(maxlen=30)

    def draw(self, frame: np.ndarray, record: FrameRecord) -> np.ndarray:
        """The RGB ``frame`` annotated, as a new BGR image (what OpenCV writes)."""
        import cv2

        self.times.append(time.monotonic())
        image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        h, w = image.shape[:2]
        for x1, y1, x2, y2, score, cls in record.detections:
            colour = _COLOURS[int(cls) % len(_COLOURS)][::-1]
            cv2.rectangle(image, (int(x1 * w), int(y1 * h)), (int(x2 * w), int(y2 * h)), colour, 2)
            name = self.labels[int(cls)] if 0 <= int(cls) < len(self.labels) else str(int(cls))
            _label(cv2, image, f"{name} {score:.2f}", int(x1 * w) - 1, int(y1 * h), colour)
        _label(cv2, image, self.status(record), 0, h, (32, 32, 32))
        return image

    def status(self, record: FrameRecord) -> str:
        """The status bar's text for one frame."""
        span = self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0
        fps = f"{(len(self.times) - 1) / span:.1f} fps" if span > 0 else "- fps"
        if record.fallback:
            where = "device (fallback)"
        elif record.split == self.device_only:
            where = "device"
        else:
            where = f"split {record.split}"
        edge = "edge online" if record.edge_online else "edge offline"
        return f"#{record.frame}  {fps}  {where}  {record.delay_s * 1e3:.0f} ms  {edge}"


class AnnotatedVideo:
    """Annotated frames to a video file; opens the writer on the first frame (its size is the frame's)."""

    def __init__(self, path: str | Path, overlay: Overlay, fps: float = 15.0):
        self.path, self.overlay, self.fps = Path(path), overlay, fps
        self.writer = None

    def write(self, frame: np.ndarray, record: FrameRecord) -> None:
        import cv2

        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix == ".mp4" else "MJPG"))
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (frame.shape[1], frame.shape[0]))
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: cannot open a video writer")
        self.writer.write(self.overlay.draw(frame, record))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


class Snapshots:
    """The latest annotated frame as a JPEG, handed to ``publish`` at most every ``interval_s``
    (a Home Assistant camera refreshes from it; a video stream would flood the broker)."""

    def __init__(self, publish, overlay: Overlay, interval_s: float, quality: int = 80):
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise ValueError("snapshot_interval_s needs OpenCV: pip install opencv-python-headless") from None
        self.publish, self.overlay, self.interval_s, self.quality = publish, overlay, interval_s, quality
        self.last = -float("inf")

    def __call__(self, frame: np.ndarray, record: FrameRecord) -> None:
        import cv2

        now = time.monotonic()
        if now - self.last < self.interval_s:
            return
        self.last = now
        ok, jpeg = cv2.imencode(".jpg", self.overlay.draw(frame, record), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            self.publish(jpeg.tobytes())
