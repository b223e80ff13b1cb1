"""Which codec each split sends with: the configured one, or with ``codec = "auto"`` the one that
sends the fewest bytes among those whose accuracy cost at that split, as ``ans convert --report``
measured it (its detections against float32's own), is within ``max_map_loss``. The learner then
chooses the split knowing each split's bytes with its codec; the codec's encoding time is part of
the offloading delay it measures."""

from __future__ import annotations

import json
import logging
import math

from common.bundle import CODEC_REPORT
from common.errors import ConfigurationError
from mqtt.codec import CODECS, IMAGE_CODECS, LOW_BIT, jpeg_available

log = logging.getLogger("ans.device")

#: Codecs that cost no accuracy to speak of: played without a measurement (float16's relative error is
#: about 1e-3; uint8 carries the input image bit for bit).
LOSSLESS = ("float32", "float16", "uint8")


def measured_losses(folder) -> dict[tuple[int, str], float]:
    """(split, codec) -> mAP@0.5 lost against float32's detections, from the bundle's codec report;
    empty when there is none (or it is unreadable)."""
    try:
        rows = json.loads((folder / CODEC_REPORT).read_text()).get("rows", [])
        return {(int(r["split"]), str(r["codec"])): 1.0 - float(r["map50_vs_float32"]) for r in rows
                if isinstance(r.get("map50_vs_float32"), (int, float)) and math.isfinite(r["map50_vs_float32"])}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def wire_codecs(bundle, codec: str, image_codec: str, max_map_loss: float) -> list[str]:
    """Per split of ``bundle`` (a ``common.bundle.Bundle``), the codec its tensors travel with.
    ConfigurationError for a named codec this bundle or this device cannot send."""
    splits = bundle.splits
    if codec != "auto":
        if codec in LOW_BIT and any(codec not in s.codec_bytes for s in splits[1:] if s.tensors):
            raise ConfigurationError(f"codec {codec} quantises within ranges measured at conversion, and "
                                     f"{bundle.folder} has none: convert the model again with sample images "
                                     "(--calibration-images), or use int8")
        if image_codec == "jpeg" and not jpeg_available():
            raise ConfigurationError("image_codec jpeg needs OpenCV on the device (pip install "
                                     "opencv-python-headless); or use uint8")
        return [image_codec] + [codec] * (len(splits) - 1)
    losses = measured_losses(bundle.folder)
    if not losses:
        log.warning("codec auto: %s has no codec report with accuracies (ans convert --report): sending only "
                    "codecs that cost no accuracy (float16, and the input as its 8-bit image)", bundle.folder)
    chosen = []
    for split in splits:
        candidates = IMAGE_CODECS if split.index == 0 else CODECS
        values = sum(math.prod(shape) for shape in split.shapes)
        size = {c: split.codec_bytes.get(c, values) for c in candidates}  # an older bundle: uint8 unmeasured
        allowed = [c for c in candidates if (c in split.codec_bytes or c == "uint8")
                   and (c in LOSSLESS or losses.get((split.index, c), math.inf) <= max_map_loss)
                   and (c != "jpeg" or jpeg_available())]
        chosen.append(min(allowed, key=lambda c: size[c]) if split.tensors else "float32")
    log.info("codec auto (at most %.3f of mAP@0.5 lost): %s", max_map_loss,
             ", ".join(f"split {k} {c}" for k, c in enumerate(chosen[:-1])))
    return chosen
