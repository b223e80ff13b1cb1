"""Detections drawn on the frames, written to a video file (OpenCV; optional on the device)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_COLOURS = ((230, 60, 60), (60, 110, 240), (60, 200, 90), (240, 200, 40), (200, 80, 220), (40, 200, 210))


class AnnotatedVideo:
    """Opens the writer on the first frame (its size is the frame's); boxes are relative (0..1)."""

    def __init__(self, path: str | Path, labels: list[str] | None = None, fps: float = 15.0):
        self.path, self.labels, self.fps = Path(path), labels or [], fps
        self.writer = None

    def write(self, frame: np.ndarray, record: dict) -> None:
        import cv2

        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix == ".mp4" else "MJPG"))
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (frame.shape[1], frame.shape[0]))
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: cannot open a video writer")
        image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        h, w = image.shape[:2]
        for x1, y1, x2, y2, score, cls in record["detections"]:
            colour = _COLOURS[int(cls) % len(_COLOURS)][::-1]
            cv2.rectangle(image, (int(x1 * w), int(y1 * h)), (int(x2 * w), int(y2 * h)), colour, 2)
            name = self.labels[int(cls)] if int(cls) < len(self.labels) else str(int(cls))
            cv2.putText(image, f"{name} {score:.2f}", (int(x1 * w), max(int(y1 * h) - 4, 10)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
        where = "device (fallback)" if record["fallback"] else f"split {record['split']}"
        cv2.putText(image, f"#{record['frame']} {where} {record['delay_s'] * 1e3:.0f} ms", (4, h - 6),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
