"""The detector as this device runs it: the bundle (every segment checked against its sha256), the
segments' interpreters, and every split's head delay measured here. Loading it is the device's
heavy set-up (minutes of calibration on a slow board, once per bundle), done here and not in the
device loop's constructor."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from common.bundle import Bundle
from common.service import Notifier
from common.tflite import SegmentRunner, load_delegate
from mqtt.codec import ChannelRange, split_ranges
from mqtt.protocol import bundle_hash_bytes

from .codec_choice import wire_codecs
from .heads import calibrate
from .settings import DeviceSettings

log = logging.getLogger("ans.device")


@dataclass
class LocalModel:
    bundle: Bundle
    runner: SegmentRunner
    measured: np.ndarray  # every split's head delay on this device (s), 0 for split 0
    slowdown: float  # lab: heads emulated this many times slower (a board slower than the host)
    codecs: list[str]  # per split, the codec its tensors travel with (``codec_choice``)
    channel_ranges: list[list[ChannelRange] | None]  # per split, its tensors' calibrated ranges (low-bit codecs)

    @property
    def calibrated(self) -> np.ndarray:
        """Head delays as the learner should expect them (with the emulated slowdown)."""
        return self.slowdown * self.measured

    @property
    def device_only(self) -> int:
        return self.bundle.device_only

    @cached_property
    def labels(self) -> list[str]:
        decoding = self.decoding
        return list(decoding.labels) or [str(k) for k in range(decoding.classes)]

    @cached_property
    def decoding(self):
        """How the detector's outputs become boxes (``common.detect``)."""
        return self.bundle.manifest.model.decoding

    @cached_property
    def input_size(self) -> tuple[int, ...]:
        return tuple(self.bundle.manifest.model.preprocessing.size)

    @cached_property
    def input_scale(self) -> float:
        return float(self.bundle.manifest.model.preprocessing.scale)

    @cached_property
    def hash16(self) -> bytes:
        """The bundle's hash as requests carry it: an edge serving another model refuses them."""
        return bundle_hash_bytes(self.bundle.content_hash)


def load_model(settings: DeviceSettings, interpreter=None, notifier: Notifier | None = None) -> LocalModel:
    """Open and check the bundle, make its interpreters (``interpreter``: a TFLite interpreter class
    the host app supplies, default LiteRT), and time every head on this device (cached against the
    bundle's hash in ``state_dir``)."""
    s, notifier = settings, notifier or Notifier()
    bundle = Bundle(s.bundle)
    codecs = wire_codecs(bundle, s.codec, s.image_codec, s.max_map_loss)  # refused now, not after timing the heads
    delegate = load_delegate(s.delegate, s.delegate_options, log=log.warning) if s.delegate else None
    runner = SegmentRunner(bundle, interpreter, s.threads, delegate, log=log.warning, fused_heads=s.fused_heads)
    measured = calibrate(runner, cache=Path(s.state_dir) / "calibration.json" if s.state_dir else None,
                         log=log.info, progress=lambda done, of: notifier.extend(
                             120, f"{s.id}: timing the heads on this device, {done}/{of}"))
    return LocalModel(bundle, runner, measured, s.emulate_slowdown, codecs, split_ranges(bundle))
