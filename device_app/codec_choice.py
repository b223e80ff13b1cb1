"""What the learner chooses among: its arms, each a split with the codec its tensors travel with.

With a named codec every split has one arm. With ``codec = "auto"`` a split's arm sends with the
codec of fewest bytes among those whose accuracy cost at that split, as ``ans convert --report``
measured it (its detections against float32's own), is within ``max_map_loss``; with
``learn_codec`` too, a split has a second arm where it differs: the fewest bytes among the codecs
that only convert each value (no entropy coding: cheap to encode). Which of the two is faster
depends on the link and the device's CPU (int2 or a JPEG saves transfer time a slow link pays for,
and costs encoding time a fast link does not return), so the learner learns it with the split.
Every arm's front-end delay is its head plus its encoding, both measured on the device, and its
transfer bits are its codec's."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import numpy as np

from common.bundle import CODEC_REPORT
from common.errors import ConfigurationError
from mqtt.codec import CODECS, IMAGE_CODECS, LOW_BIT, jpeg_available

log = logging.getLogger("ans.device")

#: Codecs that cost no accuracy to speak of: played without a measurement (float16's relative error is
#: about 1e-3; uint8 carries the input image bit for bit).
LOSSLESS = ("float32", "float16", "uint8")
#: Codecs that convert each value and no more: encoding costs about a memory copy at any size.
ELEMENTWISE = ("float32", "float16", "int8", "uint8")


@dataclass(frozen=True, eq=False)
class Arms:
    """The learner's arms in its profile's order: arm ``a`` runs split ``split[a]``'s head and
    sends with ``codec[a]``; splits in order, device-only last (one arm)."""

    split: np.ndarray  # (A,) int: the split of each arm
    codec: tuple[str, ...]  # the codec of each arm

    @classmethod
    def of(cls, per_split: list[list[str]]) -> Arms:
        """From each split's codecs, in split order."""
        pairs = [(k, c) for k, codecs in enumerate(per_split) for c in codecs]
        return cls(np.array([k for k, _ in pairs], dtype=np.int64), tuple(c for _, c in pairs))

    def __len__(self) -> int:
        return len(self.codec)

    def of_split(self, split: int) -> np.ndarray:
        """The arms that run ``split``'s head."""
        return np.flatnonzero(self.split == split)

    def pairs(self) -> list[tuple[int, str]]:
        """(split, codec) of every arm: what ``learner.profile.load_profile`` prices."""
        return [(int(k), c) for k, c in zip(self.split, self.codec)]

    def label(self, arm: int) -> str:
        """``split/codec``, as monitoring shows an arm."""
        return f"{int(self.split[arm])}/{self.codec[arm]}"


def measured_losses(folder) -> dict[tuple[int, str], float]:
    """(split, codec) -> mAP@0.5 lost against float32's detections, from the bundle's codec report;
    empty when there is none (or it is unreadable)."""
    try:
        rows = json.loads((folder / CODEC_REPORT).read_text()).get("rows", [])
        return {(int(r["split"]), str(r["codec"])): 1.0 - float(r["map50_vs_float32"]) for r in rows
                if isinstance(r.get("map50_vs_float32"), (int, float)) and math.isfinite(r["map50_vs_float32"])}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def wire_arms(bundle, codec: str, image_codec: str, max_map_loss: float, learn_codec: bool = False) -> Arms:
    """The arms of ``bundle`` (a ``common.bundle.Bundle``) with these settings (``learn_codec``: two
    per split with ``auto``). ConfigurationError for a named codec this bundle or this device cannot send."""
    splits = bundle.splits
    if codec != "auto":
        if codec in LOW_BIT and any(codec not in s.codec_bytes for s in splits[1:] if s.tensors):
            raise ConfigurationError(f"codec {codec} quantises within ranges measured at conversion, and "
                                     f"{bundle.folder} has none: convert the model again with sample images "
                                     "(--calibration-images), or use int8")
        if image_codec == "jpeg" and not jpeg_available():
            raise ConfigurationError("image_codec jpeg needs OpenCV on the device (pip install "
                                     "opencv-python-headless); or use uint8")
        return Arms.of([[image_codec]] + [[codec]] * (len(splits) - 1))
    losses = measured_losses(bundle.folder)
    if not losses:
        log.warning("codec auto: %s has no codec report with accuracies (ans convert --report): sending only "
                    "codecs that cost no accuracy (float16, and the input as its 8-bit image)", bundle.folder)
    chosen: list[list[str]] = []
    for split in splits:
        candidates = IMAGE_CODECS if split.index == 0 else CODECS
        values = sum(math.prod(shape) for shape in split.shapes)
        size = {c: split.codec_bytes.get(c, values) for c in candidates}  # an older bundle: uint8 unmeasured
        allowed = [c for c in candidates if (c in split.codec_bytes or c == "uint8")
                   and (c in LOSSLESS or losses.get((split.index, c), math.inf) <= max_map_loss)
                   and (c != "jpeg" or jpeg_available())]
        if not split.tensors:
            chosen.append(["float32"])
            continue
        fewest = min(allowed, key=lambda c: size[c])
        cheap = min((c for c in allowed if c in ELEMENTWISE), key=lambda c: size[c], default=fewest)
        chosen.append([fewest] if cheap == fewest or not learn_codec else [fewest, cheap])
    log.info("codec auto (at most %.3f of mAP@0.5 lost): %s", max_map_loss,
             ", ".join(f"split {k} {' or '.join(c)}" for k, c in enumerate(chosen[:-1])))
    return Arms.of(chosen)
