"""Cut-tensor codecs: how the intermediate tensor travels. Numpy only (device and edge).

* ``float32``: the tensor as computed, bit-exact.
* ``float16``: half the bytes; relative error about 1e-3 on activations.
* ``int8``: a quarter of the bytes; per-tensor affine quantisation q = round(x/scale) + zero_point,
  with scale and zero point chosen from this tensor's own range (so they travel with it).

Decoding never copies more than once, and never unpickles anything: the payload is raw bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CODECS = ("float32", "float16", "int8")
_MAX_SCALE = float(np.finfo(np.float32).max) / 256  # so (q - zero_point) * scale stays finite
_WIRE_DTYPE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "int8": np.dtype("i1")}


class CodecError(ValueError):
    """A payload that does not decode to the tensor it claims to be."""


@dataclass(frozen=True)
class Quantisation:
    """x ≈ (q - zero_point) * scale; identity for the float codecs."""

    scale: float = 1.0
    zero_point: int = 0


def payload_bytes(shape: list[int] | tuple[int, ...], codec: str) -> int:
    return math.prod(int(d) for d in shape) * _WIRE_DTYPE[_check(codec)].itemsize  # Python ints: no overflow


def encode(tensor: np.ndarray, codec: str) -> tuple[memoryview, Quantisation]:
    """The wire bytes (a view of the tensor itself for float32: no copy) and their quantisation."""
    codec = _check(codec)
    if codec != "int8":
        return memoryview(np.ascontiguousarray(tensor, dtype=_WIRE_DTYPE[codec])).cast("B"), Quantisation()
    if tensor.size == 0:
        return memoryview(b""), Quantisation()
    lo, hi = float(np.min(tensor)), float(np.max(tensor))
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # keep 0 exact: padding and ReLU zeros stay zeros
    scale = float(np.float32((hi - lo) / 255.0)) or 1.0  # float32: what the wire header carries
    zero_point = int(round(-128 - lo / scale))
    q = np.clip(np.rint(tensor / scale) + zero_point, -128, 127).astype(np.int8)
    return memoryview(q).cast("B"), Quantisation(scale, zero_point)


def decode(payload: bytes | memoryview, codec: str, shape: list[int] | tuple[int, ...],
           quant: Quantisation = Quantisation()) -> np.ndarray:
    """The float32 tensor of ``shape`` carried by ``payload``."""
    codec = _check(codec)
    if any(int(d) <= 0 for d in shape):
        raise CodecError(f"shape {list(shape)} has an empty dimension: a cut tensor never does")
    expected = payload_bytes(shape, codec)
    if len(payload) != expected:
        raise CodecError(f"{codec} payload of shape {list(shape)} needs {expected} bytes, got {len(payload)}")
    wire = np.frombuffer(payload, dtype=_WIRE_DTYPE[codec]).reshape(shape)
    if codec == "float32":
        return wire
    if codec == "float16":
        return wire.astype(np.float32)
    if not 0.0 < quant.scale <= _MAX_SCALE:
        raise CodecError(f"int8 scale must lie in (0, {_MAX_SCALE:.3g}], got {quant.scale}")
    if not -128 <= quant.zero_point <= 127:
        raise CodecError(f"int8 zero point must lie in [-128, 127], got {quant.zero_point}")
    return (wire.astype(np.float32) - np.float32(quant.zero_point)) * np.float32(quant.scale)


def _check(codec: str) -> str:
    if codec not in _WIRE_DTYPE:
        raise CodecError(f"unknown codec {codec!r} (choose from {', '.join(CODECS)})")
    return codec
