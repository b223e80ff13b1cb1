"""Cut-tensor codecs: how the intermediate tensor travels. Numpy only (device and edge).

* ``float32``: the tensor as computed, bit-exact.
* ``float16``: half the bytes; relative error about 1e-3 on activations.
* ``int8``: a quarter of the bytes; per-tensor affine quantisation q = round(x/scale) + zero_point,
  with scale and zero point chosen from this tensor's own range (so they travel with it).
* ``uint8``, for split 0 only: the preprocessed input as the 8-bit image it was made from,
  x = q × scale with the bundle's preprocessing scale: a quarter of float32's bytes, bit for bit
  the same input on the edge (the device's preprocessing is float32(q) × float32(scale) too).

Decoding never copies more than once, and never unpickles anything: the payload is raw bytes.

Speed: numpy's float32 <-> float16 casts are scalar loops (5x a memcpy); where OpenCV is installed
(a board with a camera, the edge) its F16C casts do it at memcpy speed, bit for bit the same. int8
is quantised in one OpenCV pass there, else in numpy passes over chunks that stay in the CPU's
cache. ``bench/bench_codec.py`` measures them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

#: What a device may choose for its cut tensors (``codec`` in its settings).
CODECS = ("float32", "float16", "int8")
#: How split 0 sends the input image, whatever the cut-tensor codec.
IMAGE_CODEC = "uint8"
#: Every codec a request may name, in the order of their ids on the wire.
WIRE_CODECS = (*CODECS, IMAGE_CODEC)
_MAX_SCALE = float(np.finfo(np.float32).max) / 256  # so (q - zero_point) * scale stays finite
_WIRE_DTYPE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "int8": np.dtype("i1"),
               "uint8": np.dtype("u1")}
#: Elements per chunk of the int8 passes: 256 kB of float32, which stays in a core's cache.
_CHUNK = 1 << 16


class CodecError(ValueError):
    """A payload that does not decode to the tensor it claims to be."""


@dataclass(frozen=True)
class Quantisation:
    """x ≈ (q - zero_point) * scale; identity for the float codecs."""

    scale: float = 1.0
    zero_point: int = 0


def payload_bytes(shape: list[int] | tuple[int, ...], codec: str) -> int:
    return math.prod(int(d) for d in shape) * _WIRE_DTYPE[_check(codec)].itemsize  # Python ints: no overflow


def encode(tensor: np.ndarray, codec: str, scale: float | None = None) -> tuple[memoryview, Quantisation]:
    """The wire bytes (a view of the tensor itself for float32: no copy) and their quantisation.
    ``scale``: for ``uint8`` (the input image), the bundle's preprocessing scale."""
    codec = _check(codec)
    if codec == IMAGE_CODEC:
        if scale is None:
            raise CodecError("uint8 encodes the input image: it needs the preprocessing scale")
        return encode_image(tensor, scale)
    if codec == "float32":
        return memoryview(np.ascontiguousarray(tensor, dtype=np.float32)).cast("B"), Quantisation()
    if codec == "float16":
        return memoryview(_half(np.ascontiguousarray(tensor, dtype=np.float32))).cast("B"), Quantisation()
    if tensor.size == 0:
        return memoryview(b""), Quantisation()
    flat = np.ascontiguousarray(tensor, dtype=np.float32).reshape(-1)
    cv2 = _opencv()
    lo, hi = cv2.minMaxLoc(flat.reshape(1, -1))[:2] if cv2 is not None else (float(np.min(flat)), float(np.max(flat)))
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # keep 0 exact: padding and ReLU zeros stay zeros
    scale = float(np.float32((hi - lo) / 255.0)) or 1.0  # float32: what the wire header carries
    zero_point = int(round(-128 - lo / scale))
    if cv2 is not None:  # one pass: x / scale + zero point, rounded to nearest even, saturated to int8
        row = flat.reshape(1, -1)
        q = cv2.addWeighted(row, 1.0 / scale, row, 0.0, float(zero_point), dtype=cv2.CV_8S).reshape(tensor.shape)
        return memoryview(q).cast("B"), Quantisation(scale, zero_point)
    q = np.empty(flat.size, np.int8)
    buf = np.empty(min(_CHUNK, flat.size), np.float32)
    step = np.float32(scale)
    for start in range(0, flat.size, _CHUNK):  # q = clip(rint(x / scale) + zero point), chunk by chunk
        part = buf[:min(_CHUNK, flat.size - start)]
        np.divide(flat[start:start + _CHUNK], step, out=part)
        np.rint(part, out=part)
        np.add(part, zero_point, out=part)
        np.clip(part, -128, 127, out=part)
        q[start:start + part.size] = part
    return memoryview(q).cast("B"), Quantisation(scale, zero_point)


def encode_image(image: np.ndarray, scale: float) -> tuple[memoryview, Quantisation]:
    """The preprocessed input ``image`` (8-bit values times ``scale``) as those 8-bit values."""
    if not 0.0 < scale <= _MAX_SCALE:
        raise CodecError(f"uint8 scale must lie in (0, {_MAX_SCALE:.3g}], got {scale}")
    q = np.clip(np.rint(np.asarray(image, dtype=np.float32) / np.float32(scale)), 0, 255).astype(np.uint8)
    return memoryview(q).cast("B"), Quantisation(float(np.float32(scale)), 0)


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
        return _single(wire)
    if codec == "uint8":
        if not 0.0 < quant.scale <= _MAX_SCALE or quant.zero_point != 0:
            raise CodecError(f"uint8 needs a scale in (0, {_MAX_SCALE:.3g}] and zero point 0, got {quant}")
        return wire.astype(np.float32) * np.float32(quant.scale)
    if not 0.0 < quant.scale <= _MAX_SCALE:
        raise CodecError(f"int8 scale must lie in (0, {_MAX_SCALE:.3g}], got {quant.scale}")
    if not -128 <= quant.zero_point <= 127:
        raise CodecError(f"int8 zero point must lie in [-128, 127], got {quant.zero_point}")
    out = np.empty(wire.shape, np.float32)
    flat, target = wire.reshape(-1), out.reshape(-1)
    zero, step = np.float32(quant.zero_point), np.float32(quant.scale)
    for start in range(0, flat.size, _CHUNK):  # x = (q - zero point) * scale, chunk by chunk
        part = target[start:start + _CHUNK]
        np.subtract(flat[start:start + _CHUNK], zero, out=part)
        np.multiply(part, step, out=part)
    return out


@functools.cache
def _opencv():
    """OpenCV, where installed (its casts use the CPU's vector instructions: F16C for float16), else
    None."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2 if all(hasattr(cv2, f) for f in ("convertFp16", "minMaxLoc", "addWeighted")) else None


def _half(x: np.ndarray) -> np.ndarray:
    """float32 -> float16, round to nearest even (OpenCV's and numpy's casts agree bit for bit)."""
    cv2 = _opencv()
    if cv2 is None or x.size == 0:
        with np.errstate(over="ignore"):  # beyond float16's range is infinity, as it should be
            return x.astype(np.float16)
    return cv2.convertFp16(x.reshape(1, -1)).view(np.float16).reshape(x.shape)


def _single(h: np.ndarray) -> np.ndarray:
    """float16 -> float32, exact."""
    cv2 = _opencv()
    if cv2 is None or h.size == 0:
        return h.astype(np.float32)
    return cv2.convertFp16(np.ascontiguousarray(h).reshape(1, -1)).reshape(h.shape)


def _check(codec: str) -> str:
    if codec not in _WIRE_DTYPE:
        raise CodecError(f"unknown codec {codec!r} (one of {', '.join(WIRE_CODECS)})")
    return codec
