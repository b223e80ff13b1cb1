"""Simulated codec arms: a profile whose offloading splits each come twice, as they travel in
float32 and in a small codec that costs encoding time on the device (a 2-bit quantiser with
deflate on a slow board). Which of the two is faster depends on the link (the break-even of the
defaults is near 300 Mbit/s), so the learner must learn the codec with the split.
``ans experiment --profiles tiny-yolov2-tx2+codecs`` runs any built-in profile this way."""

from __future__ import annotations

import numpy as np

from device_app.learner.profile import BITS_COLUMN, SplitProfile, load_profile

#: The suffix of a profile name that asks for codec arms.
SUFFIX = "+codecs"
#: The small codec's encoding cost on the device, per value sent.
ENCODE_S_PER_VALUE = 100e-9
#: Its size against float32's (2 bits per value, a little less after deflate).
SIZE_RATIO = 1 / 16


def with_codec_arms(base: SplitProfile, size_ratio: float = SIZE_RATIO,
                    encode_s_per_value: float = ENCODE_S_PER_VALUE) -> tuple[SplitProfile, np.ndarray]:
    """``base`` with every offloading split twice, float32 then the small codec; and which arms are
    the small codec's."""
    rows, front, small = [], [], []
    for k in range(base.n_splits - 1):
        squeezed = base.contexts[k].copy()
        squeezed[BITS_COLUMN] *= size_ratio
        values = base.contexts[k, BITS_COLUMN] / 32
        rows += [base.contexts[k], squeezed]
        front += [base.front_delay_s[k], base.front_delay_s[k] + values * encode_s_per_value]
        small += [False, True]
    rows.append(base.contexts[-1])
    front.append(base.front_delay_s[-1])
    small.append(False)
    return SplitProfile(base.name + SUFFIX, np.array(rows), np.array(front), base.source), np.array(small)


def sim_profile(name: str) -> SplitProfile:
    """A profile by name, as ``load_profile`` reads it; ``NAME+codecs``: with codec arms."""
    if name.endswith(SUFFIX):
        return with_codec_arms(load_profile(name[:-len(SUFFIX)]))[0]
    return load_profile(name)
