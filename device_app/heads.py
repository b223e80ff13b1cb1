"""The device's measured front-end delays: every split's head timed at first start as the device runs
it once in use (segments 1..p one after another, or fused into one model where that is faster),
cached against the bundle's content hash so that a restart skips it; and every arm's encoding (one
pass of the model and a few encodings), cached the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.disk import write_problem
from common.tflite import SegmentRunner
from common.timing import median_time
from mqtt.codec import encode

from .learner.persist import load_state, save_state


def calibrate(runner: SegmentRunner, repeats: int = 5, cache: str | Path | None = None, log=print,
              progress=None) -> np.ndarray:
    """Front-end delay of every split, measured on this device (median of ``repeats`` runs after a
    warm-up), cached in ``cache`` against the bundle's content hash so a restart skips it.
    ``progress(done, of)``: called as the heads are timed."""
    bundle = runner.bundle
    fused = runner.fused_heads > 0  # asked for (the cache stands for what the same settings measured)
    state = _cached(cache, bundle)
    if state.get("fused") == fused and len(state.get("front_delay_s", [])) == len(bundle.splits):
        pays = state.get("fuse_pays")
        if isinstance(pays, list) and len(pays) == len(bundle.splits) - 1:
            runner.fuse_pays = [bool(p) for p in pays]
        return np.asarray(state["front_delay_s"], dtype=np.float64)
    image = np.random.default_rng(0).random(bundle.input_shape, dtype=np.float32)
    delays = [0.0, *runner.head_times(image, repeats, progress)]
    how = "fused where faster" if runner.fused_heads else "chained"
    log(f"measured the head of every split on this device: split 1 {delays[1] * 1e3:.2f} ms ... device-only "
        f"{delays[-1] * 1e3:.2f} ms ({len(delays) - 1} segments, {how}, median of {repeats})")
    _keep(cache, bundle, {"fused": fused, "fuse_pays": runner.fuse_pays, "front_delay_s": delays},
          "calibration", log)
    return np.asarray(delays)


def encode_times(runner: SegmentRunner, arms, ranges: list, scale: float, repeats: int = 3,
                 cache: str | Path | None = None, log=print) -> np.ndarray:
    """Each arm's encoding time on this device (s; 0 for device-only): its codec on its split's cut
    of a camera-like image. Not noise: JPEG and deflate take longer on noise than on any scene.
    ``arms``: ``codec_choice.Arms``; ``ranges``: each split's calibrated channel ranges. Cached in
    ``cache`` per arm against the bundle's content hash, as the heads are: arms measured before are
    not measured again (another ``codec`` setting measures only its new ones)."""
    bundle, labels = runner.bundle, [arms.label(a) for a in range(len(arms))]
    cached = _cached(cache, bundle).get("encoding_s")
    known = {k: float(v) for k, v in cached.items() if isinstance(v, (int, float)) and v >= 0} \
        if isinstance(cached, dict) else {}
    todo = [a for a, label in enumerate(labels) if label not in known]
    if todo:
        cuts = runner.cuts(camera_like(bundle.input_shape, scale))
        for arm in todo:
            split, codec = int(arms.split[arm]), arms.codec[arm]
            known[labels[arm]] = 0.0
            if split < len(cuts):
                tensors, rs = cuts[split], ranges[split] or [None] * len(cuts[split])
                known[labels[arm]] = median_time(lambda: [encode(t, codec, scale, r) for t, r in zip(tensors, rs)],
                                                 repeats)
        _keep(cache, bundle, {"encoding_s": known}, "encoding times", log)
    return np.array([known[label] for label in labels])


def _cached(cache: str | Path | None, bundle) -> dict:
    """What ``cache`` holds for this bundle (its content hash); empty if nothing, another bundle's or
    unreadable (measured again)."""
    if cache is None or not Path(cache).is_file():
        return {}
    try:
        state = load_state(cache)
    except ValueError:
        return {}
    return state if state.get("bundle") == bundle.content_hash else {}


def _keep(cache: str | Path | None, bundle, state: dict, what: str, log) -> None:
    """Cache ``state`` for this bundle; a full disk only costs measuring again at the next start."""
    if cache is None:
        return
    try:
        save_state(cache, {"bundle": bundle.content_hash, **state})
    except OSError as exc:
        log(f"{what} not cached: {write_problem(cache, exc)}")


def camera_like(shape: tuple[int, ...], scale: float) -> np.ndarray:
    """A preprocessed input batch of one that looks like a scene: smooth shading, a few flat objects
    with sharp edges, a little sensor noise, on the 8-bit grid a camera frame comes in."""
    _, h, w, c = shape
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    image = 90 + 60 * np.sin(3 * x + 2 * y)[..., None] + 30 * np.cos(5 * y)[..., None] * np.linspace(0.5, 1, c)
    for _ in range(4):
        top, left = rng.integers(0, h), rng.integers(0, w)
        image[top:top + h // 5, left:left + w // 5] = rng.integers(0, 256, c)
    image += rng.normal(0, 2, image.shape)
    return (np.clip(np.round(image), 0, 255).astype(np.float32) * np.float32(scale))[None]
