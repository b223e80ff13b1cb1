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

from .codec_choice import Arms, wire_arms
from .heads import calibrate, encode_times
from .settings import DeviceSettings

log = logging.getLogger("ans.device")


@dataclass
class LocalModel:
    bundle: Bundle
    runner: SegmentRunner
    measured: np.ndarray  # every split's head delay on this device (s), 0 for split 0
    slowdown: float  # lab: heads and encoders emulated this many times slower (a board slower than the host)
    arms: Arms  # what the learner chooses among: a split and the codec its tensors travel with (``codec_choice``)
    channel_ranges: list[list[ChannelRange] | None]  # per split, its tensors' calibrated ranges (low-bit codecs)
    encoding: np.ndarray  # every arm's encoding time on this device (s), 0 for device-only

    @property
    def calibrated(self) -> np.ndarray:
        """Every arm's front-end delay as the learner should expect it: its head and its encoding
        (with the emulated slowdown)."""
        return self.slowdown * (self.measured[self.arms.split] + self.encoding)

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
    arms = wire_arms(bundle, s.codec, s.image_codec, s.max_map_loss, s.learn_codec)  # refused now, not after timing the heads
    delegate = load_delegate(s.delegate, s.delegate_options, log=log.warning) if s.delegate else None
    runner = SegmentRunner(bundle, interpreter, s.threads, delegate, log=log.warning, fused_heads=s.fused_heads)
    measured = calibrate(runner, cache=Path(s.state_dir) / "calibration.json" if s.state_dir else None,
                         log=log.info, progress=lambda done, of: notifier.extend(
                             120, f"{s.id}: timing the heads on this device, {done}/{of}"))
    ranges = split_ranges(bundle)
    scale = float(bundle.manifest.model.preprocessing.scale)
    encoding = encode_times(runner, arms, ranges, scale, cache=Path(s.state_dir) / "encoding.json" if s.state_dir else None,
                            log=log.info)
    return LocalModel(bundle, runner, measured, s.emulate_slowdown, arms, ranges, encoding)
