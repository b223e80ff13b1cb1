"""Key-frame detection: a frame whose structure differs from the previous one (low SSIM).

Key frames are where the scene changed, so the learner serves them greedily rather
than exploring on them. Pure numpy (no OpenCV): this runs on the device.
"""

from __future__ import annotations

import numpy as np

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_LUMA = np.array([0.299, 0.587, 0.114])


def to_grey(frame: np.ndarray, max_side: int = 160) -> np.ndarray:
    """Grey float image, decimated so its longer side is at most ``max_side`` pixels.

    ``frame`` is H×W (grey) or H×W×C with C = 3 or 4 (RGB or BGR alike: the weights differ
    little for SSIM). Decimating before converting keeps the cost independent of the camera
    resolution; SSIM's 7×7 windows then average out sensor noise.
    """
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
        raise ValueError(f"expected an H×W or H×W×3 image, got shape {frame.shape}")
    step = max(1, -(-max(frame.shape[:2]) // max_side))
    small = frame[::step, ::step]
    if small.ndim == 3:
        return small[..., :3].astype(np.float64) @ _LUMA
    return small.astype(np.float64)


def _box_mean(img: np.ndarray, k: int) -> np.ndarray:
    """Mean over every k×k window (valid positions only), by integral image."""
    s = np.pad(img, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
    return (s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]) / (k * k)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Mean structural similarity of two grey images of equal shape (uniform 7×7 windows)."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    k = min(window, *a.shape)
    mu_a, mu_b = _box_mean(a, k), _box_mean(b, k)
    var_a = _box_mean(a * a, k) - mu_a**2
    var_b = _box_mean(b * b, k) - mu_b**2
    cov = _box_mean(a * b, k) - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2)
    return float(np.mean(num / den))


class KeyFrameDetector:
    """Flags a frame as key when its SSIM to the previous frame falls below ``threshold``.

    The first frame, and any frame whose size changed, is a key frame.
    """

    def __init__(self, threshold: float = 0.8, max_side: int = 160) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"SSIM threshold must lie in (0, 1], got {threshold}")
        self.threshold = threshold
        self.max_side = max_side
        self._prev: np.ndarray | None = None
        self.last_ssim: float | None = None

    def __call__(self, frame: np.ndarray) -> bool:
        grey = to_grey(frame, self.max_side)
        prev, self._prev = self._prev, grey
        if prev is None or prev.shape != grey.shape:
            self.last_ssim = None
            return True
        self.last_ssim = ssim(prev, grey)
        return self.last_ssim < self.threshold
