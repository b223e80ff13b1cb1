"""Key-frame detection: a frame whose structure differs from the previous one (low SSIM).

Key frames are where the scene changed, so the learner serves them greedily rather
than exploring on them. Pure numpy (no OpenCV): this runs on the device, every frame, so it
works on an 80-pixel grey thumbnail with SSIM over 8x8 blocks: about 0.1 ms whatever the
camera's resolution.
"""

from __future__ import annotations

import numpy as np

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: The thumbnail's longer side: 80 px keeps a scene's structure (objects, edges) and drops the rest.
MAX_SIDE = 80
#: SSIM's windows: 8x8 blocks of the thumbnail (10x7 of them at 4:3).
BLOCK = 8


def to_grey(frame: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Grey float32 thumbnail, decimated so its longer side is at most ``max_side`` pixels.

    ``frame`` is H×W (grey) or H×W×C with C = 3 or 4 (RGB or BGR alike: the weights differ
    little for SSIM). Decimating before converting keeps the cost independent of the camera
    resolution; SSIM's 7×7 windows then average out sensor noise.
    """
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
        raise ValueError(f"expected an H×W or H×W×3 image, got shape {frame.shape}")
    step = max(1, -(-max(frame.shape[:2]) // max_side))
    small = frame[::step, ::step]
    if small.ndim == 3:
        return small[..., :3] @ _LUMA
    return small.astype(np.float32)


def ssim(a: np.ndarray, b: np.ndarray, block: int = BLOCK) -> float:
    """Mean structural similarity of two grey images of equal shape, over non-overlapping
    ``block`` x ``block`` windows (a ragged edge is left out): each window's means, variances and
    covariance from one reshape, no sliding filter."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    k = max(1, min(block, *a.shape))
    h, w = a.shape[0] // k * k, a.shape[1] // k * k
    x = a[:h, :w].reshape(h // k, k, w // k, k).astype(np.float32)
    y = b[:h, :w].reshape(h // k, k, w // k, k).astype(np.float32)
    mu_x, mu_y = x.mean(axis=(1, 3)), y.mean(axis=(1, 3))
    var_x = (x * x).mean(axis=(1, 3)) - mu_x * mu_x
    var_y = (y * y).mean(axis=(1, 3)) - mu_y * mu_y
    cov = (x * y).mean(axis=(1, 3)) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
    den = (mu_x * mu_x + mu_y * mu_y + _C1) * (var_x + var_y + _C2)
    return float(np.mean(num / den))


class KeyFrameDetector:
    """Flags a frame as key when its SSIM to the previous frame falls below ``threshold``.

    The first frame, and any frame whose size changed, is a key frame.
    """

    def __init__(self, threshold: float = 0.8, max_side: int = MAX_SIDE) -> None:
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
