"""Images to quantize a detector's segments to int8 with: a user's folder of frames like the ones the
device will see, or the demo detector's own generated scenes. OpenCV and numpy only, so a bad folder
is reported before TensorFlow starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def calibration_files(folder: str | Path, limit: int = 300) -> list[Path]:
    """Up to ``limit`` readable images in ``folder`` (sorted by name); ValueError when there is none."""
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder (--calibration-images needs a folder of images)")
    found = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES):
        if cv2.imread(str(path)) is not None:
            found.append(path)
            if len(found) == limit:
                break
    if not found:
        raise ValueError(f"{folder}: no readable images ({', '.join(sorted(SUFFIXES))}) to calibrate int8 with")
    return found


def calibration_images(files: list[Path], size: tuple[int, int], scale: float) -> np.ndarray:
    """The images as the device preprocesses frames: RGB, resized to ``size`` (h, w), scaled."""
    import cv2

    images = [cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), (size[1], size[0]),
                         interpolation=cv2.INTER_AREA) for f in files]
    return np.stack(images).astype(np.float32) * np.float32(scale)


def demo_scenes(count: int = 200, size: int = 256, seed: int = 123) -> np.ndarray:
    """The demo detector's calibration set: generated scenes as a camera delivers them."""
    from common.scenes import make_camera_frame

    rng = np.random.default_rng(seed)
    return np.stack([make_camera_frame(rng, size)[0] for _ in range(count)]).astype(np.float32) / 255.0
