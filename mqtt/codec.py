"""Cut-tensor codecs: how the intermediate tensor travels. Numpy only (device and edge); OpenCV
where installed, for speed and for JPEG.

* ``float32``: the tensor as computed, bit-exact.
* ``float16``: half the bytes; relative error about 1e-3 on activations.
* ``int8``: a quarter of the bytes; per-tensor affine quantisation q = round(x/scale) + zero_point,
  with scale and zero point chosen from this tensor's own range (so they travel with it).
* ``int4``, ``int3``, ``int2``: each channel quantised to 2^b levels within the range the bundle's
  calibration measured for it (``ChannelRange``: values beyond are clipped), the symbols packed
  several to a byte and entropy-coded with raw deflate: a variable size, a fraction of a bit per
  value where activations are sparse. The request carries the range's fingerprint, so a device and
  an edge with different calibrations of one model never decode each other's symbols.
* ``uint8``, for split 0 only: the preprocessed input as the 8-bit image it was made from,
  x = q × scale with the bundle's preprocessing scale: a quarter of float32's bytes, bit for bit
  the same input on the edge (the device's preprocessing is float32(q) × float32(scale) too).
* ``jpeg``, for split 0 only: that 8-bit image as a JPEG (quality ``JPEG_QUALITY``; needs OpenCV on
  both sides); lossy, a fraction of a bit per value.

Decoding never copies more than once, never unpickles anything, and never inflates or decodes a
payload beyond the size its header's shape allows (no decompression bombs).

Speed: numpy's float32 <-> float16 casts are scalar loops (5x a memcpy); where OpenCV is installed
(a board with a camera, the edge) its F16C casts do it at memcpy speed, bit for bit the same. int8
is quantised in one OpenCV pass there, else in numpy passes over chunks that stay in the CPU's
cache. The low-bit codecs work in cache-sized parts, deflated in parallel into one stream.
``bench/bench_codec.py`` measures them.
"""

from __future__ import annotations

import functools
import math
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

#: Bits per value of the calibrated low-bit codecs.
LOW_BIT = {"int4": 4, "int3": 3, "int2": 2}
#: What a device may choose for its cut tensors (``codec`` in its settings).
CODECS = ("float32", "float16", "int8", *LOW_BIT)
#: How split 0 may send the input image (``image_codec`` in a device's settings).
IMAGE_CODECS = ("uint8", "jpeg")
#: Split 0's image codec unless a device's settings say otherwise: lossless.
IMAGE_CODEC = "uint8"
#: Every codec a request may name, in the order of their ids on the wire (new ones only appended).
WIRE_CODECS = ("float32", "float16", "int8", "uint8", *LOW_BIT, "jpeg")
#: Codecs whose payload size depends on the content (the request header carries each payload's length).
VARIABLE = (*LOW_BIT, "jpeg")
#: The JPEG quality split 0's ``jpeg`` codec encodes with (the demo detector loses under 0.005 mAP@0.5).
JPEG_QUALITY = 90
#: Raw deflate's effort for the low-bit codecs: level 1 (its string matching finds what neighbouring
#: positions repeat, a third of the bytes on the demo's activations) at a fifth of level 6's time.
DEFLATE_LEVEL = 1
#: Values per part of a low-bit tensor deflated on its own (in parallel with the others): 256 kB of
#: float32, which stays in a core's cache through quantising, packing and deflating.
PART_VALUES = 1 << 16
_PART_OVERHEAD = 19  # bytes a part may add to one stream's bound: its own 13, a sync flush's 5, a bit's byte
_MAX_SCALE = float(np.finfo(np.float32).max) / 256  # so (q - zero_point) * scale stays finite
_WIRE_DTYPE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "int8": np.dtype("i1"),
               "uint8": np.dtype("u1")}
#: Elements per chunk of the int8 passes: 256 kB of float32, which stays in a core's cache.
_CHUNK = 1 << 16


class CodecError(ValueError):
    """A payload that does not decode to the tensor it claims to be."""


class RangeMismatch(CodecError):
    """A low-bit payload quantised within other channel ranges than the receiver's: the two sides run
    different calibrations of the same model."""


@dataclass(frozen=True)
class Quantisation:
    """x ≈ (q - zero_point) * scale; identity for the float codecs. The low-bit codecs carry their
    channel ranges' fingerprint in ``zero_point`` (scale 1)."""

    scale: float = 1.0
    zero_point: int = 0


class ChannelRange:
    """What a low-bit codec quantises one tensor's channels within (last axis): ``lo`` <= 0 <= ``hi``
    per channel, from the bundle's calibration. Zero stays exact when it is a level: ReLU's zeros
    stay zeros."""

    def __init__(self, lo, hi):
        self.lo = np.minimum(np.asarray(lo, np.float32), 0).reshape(-1)
        self.hi = np.maximum(np.asarray(hi, np.float32), self.lo + np.float32(1e-6)).reshape(-1)
        if self.lo.shape != self.hi.shape or not (np.isfinite(self.lo).all() and np.isfinite(self.hi).all()):
            raise CodecError("a channel range needs finite lo and hi of one length")
        # A signed 32-bit fingerprint of the ranges, which the request carries (zero_point).
        self.fingerprint = struct.unpack("<i", struct.pack("<I", zlib.crc32(self.lo.tobytes() + self.hi.tobytes())))[0]

    def steps(self, levels: int) -> np.ndarray:
        return (self.hi - self.lo) / np.float32(levels - 1)


def split_ranges(bundle) -> list[list[ChannelRange] | None]:
    """Per split of ``bundle`` (a ``common.bundle.Bundle``), its tensors' calibrated channel ranges:
    what the low-bit codecs encode and decode with. None for split 0 (the input travels as an image),
    for device-only, and for every split of a bundle converted without sample images."""
    out = []
    for split in bundle.splits:
        raw = bundle.ranges(split.names) if split.index and split.tensors else None
        out.append(None if raw is None else [ChannelRange(lo, hi) for lo, hi in raw])
    return out


def sendable(split: int, calibrated: bool) -> tuple[str, ...]:
    """The codecs split ``split``'s tensors can travel with: the input (split 0) the float codecs,
    int8 and the image codecs; a cut the fixed-size ones, and the low-bit ones where its channel
    ranges were calibrated."""
    if split == 0:
        return ("float32", "float16", "int8", *IMAGE_CODECS)
    return CODECS if calibrated else tuple(c for c in CODECS if c not in LOW_BIT)


def payload_bytes(shape: list[int] | tuple[int, ...], codec: str) -> int:
    """The payload's exact size; for a variable codec, the most it may take (its packed symbols, or
    the raw image, plus deflate's or JPEG's worst-case overhead)."""
    values = math.prod(int(d) for d in shape)  # Python ints: no overflow
    if _check(codec) in LOW_BIT:
        rows = values // max(int(shape[-1]), 1)
        parts = max(1, -(-rows // _part_rows(rows, int(shape[-1]))))
        return _deflate_bound(_packed_bytes(values, LOW_BIT[codec])) + parts * _PART_OVERHEAD
    if codec == "jpeg":
        return 2 * values + 4096
    return values * _WIRE_DTYPE[codec].itemsize


def encode(tensor: np.ndarray, codec: str, scale: float | None = None,
           channel_range: ChannelRange | None = None) -> tuple[memoryview, Quantisation]:
    """The wire bytes (a view of the tensor itself for float32: no copy) and their quantisation.
    ``scale``: for ``uint8`` and ``jpeg`` (the input image), the bundle's preprocessing scale;
    ``channel_range``: for the low-bit codecs, the tensor's calibrated range."""
    codec = _check(codec)
    if codec in IMAGE_CODECS:
        if scale is None:
            raise CodecError(f"{codec} encodes the input image: it needs the preprocessing scale")
        values, quant = _image_values(tensor, scale)
        return (memoryview(values).cast("B") if codec == "uint8" else _jpeg(values)), quant
    if codec in LOW_BIT:
        if channel_range is None:
            raise CodecError(f"{codec} needs the tensor's calibrated channel range (a bundle converted with "
                             "calibration images)")
        return _low_bit(tensor, LOW_BIT[codec], channel_range), Quantisation(1.0, channel_range.fingerprint)
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
    values, quant = _image_values(image, scale)
    return memoryview(values).cast("B"), quant


def _image_values(image: np.ndarray, scale: float) -> tuple[np.ndarray, Quantisation]:
    """The 8-bit values the preprocessed ``image`` was made from (x = q × ``scale``)."""
    if not 0.0 < scale <= _MAX_SCALE:
        raise CodecError(f"uint8 scale must lie in (0, {_MAX_SCALE:.3g}], got {scale}")
    q = np.clip(np.rint(np.asarray(image, dtype=np.float32) / np.float32(scale)), 0, 255).astype(np.uint8)
    return q, Quantisation(float(np.float32(scale)), 0)


def _image_scale(codec: str, quant: Quantisation) -> np.float32:
    """The preprocessing scale an image codec's payload carries (zero point 0)."""
    if not 0.0 < quant.scale <= _MAX_SCALE or quant.zero_point != 0:
        raise CodecError(f"{codec} needs a scale in (0, {_MAX_SCALE:.3g}] and zero point 0, got {quant}")
    return np.float32(quant.scale)


def decode(payload: bytes | memoryview, codec: str, shape: list[int] | tuple[int, ...],
           quant: Quantisation = Quantisation(), channel_range: ChannelRange | None = None) -> np.ndarray:
    """The float32 tensor of ``shape`` carried by ``payload``."""
    codec = _check(codec)
    if any(int(d) <= 0 for d in shape):
        raise CodecError(f"shape {list(shape)} has an empty dimension: a cut tensor never does")
    if codec in VARIABLE:
        if len(payload) > payload_bytes(shape, codec):
            raise CodecError(f"{codec} payload of shape {list(shape)} takes at most {payload_bytes(shape, codec)} "
                             f"bytes, got {len(payload)}")
        if codec == "jpeg":
            return _unjpeg(payload, shape, quant)
        return _unlow_bit(payload, LOW_BIT[codec], shape, quant, channel_range)
    expected = payload_bytes(shape, codec)
    if len(payload) != expected:
        raise CodecError(f"{codec} payload of shape {list(shape)} needs {expected} bytes, got {len(payload)}")
    wire = np.frombuffer(payload, dtype=_WIRE_DTYPE[codec]).reshape(shape)
    if codec == "float32":
        return wire
    if codec == "float16":
        return _single(wire)
    if codec == "uint8":
        return wire.astype(np.float32) * _image_scale(codec, quant)
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


def _packed_bytes(values: int, bits: int) -> int:
    return -(-values // (8 // bits))


def _deflate_bound(n: int) -> int:
    """zlib's compressBound: what one deflate stream may make of n bytes at most."""
    return n + (n >> 12) + (n >> 14) + (n >> 25) + 13


def _low_bit(tensor: np.ndarray, bits: int, channels: ChannelRange) -> memoryview:
    """Symbols q = round((x - lo) / step), clipped to 0 .. 2^bits - 1, per channel (last axis); packed
    8 // bits to a byte (first symbol in the low bits), then raw deflate: one stream, made of parts of
    about ``PART_VALUES`` values each deflated on its own (in parallel where there are several), ended
    by a sync flush, the last by the stream's end."""
    x = np.asarray(tensor, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] != channels.lo.size:
        raise CodecError(f"tensor of shape {list(x.shape)} does not have the range's {channels.lo.size} channels")
    rows = x.reshape(-1, channels.lo.size)
    inv = np.float32(1) / channels.steps(1 << bits)
    offset = np.float32(0.5) - channels.lo * inv  # q = floor(x / step + offset): rounded, lo at 0
    per_part = _part_rows(rows.shape[0], channels.lo.size)
    parts = [rows[start:start + per_part] for start in range(0, rows.shape[0], per_part)] or [rows]
    last = len(parts) - 1

    def deflate(k: int) -> bytes:
        q = np.multiply(parts[k], inv)
        q += offset
        np.clip(q, 0, (1 << bits) - 1, out=q)
        packer = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
        data = packer.compress(_pack(q.astype(np.uint8).reshape(-1), bits))
        return data + packer.flush(zlib.Z_FINISH if k == last else zlib.Z_SYNC_FLUSH)

    if last == 0:
        return memoryview(deflate(0))
    return memoryview(b"".join(_workers().map(deflate, range(len(parts)))))


def _part_rows(rows: int, channels: int) -> int:
    """Rows (of ``channels`` values) per deflated part: as many parts as ``PART_VALUES`` makes, of
    equal size (for the threads), a multiple of 4 rows each, so every part but the last packs whole
    bytes at any bit width."""
    most = max(4, PART_VALUES // max(channels, 1) // 4 * 4)
    parts = max(1, -(-rows // most))
    each = -(-rows // parts)
    return max(4, -(-each // 4) * 4)


@functools.cache
def _workers() -> ThreadPoolExecutor:
    """Threads for the parts of a large low-bit tensor (numpy and zlib let go of the GIL): the cores
    the frame thread leaves idle while it encodes."""
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="ans-codec")


def _pack(q: np.ndarray, bits: int) -> bytes:
    per = 8 // bits
    padded = np.zeros(-(-q.size // per) * per, np.uint8)
    padded[:q.size] = q
    rows = padded.reshape(-1, per)
    packed = rows[:, 0].copy()
    for k in range(1, per):
        packed |= rows[:, k] << np.uint8(k * bits)
    return packed.tobytes()


def _unlow_bit(payload, bits: int, shape, quant: Quantisation, channels: ChannelRange | None) -> np.ndarray:
    values = math.prod(int(d) for d in shape)
    if channels is None:
        raise RangeMismatch("this side has no calibrated channel range for the tensor: its bundle was converted "
                            "without sample images; deploy the same bundle on both sides")
    if int(shape[-1]) != channels.lo.size:
        raise CodecError(f"shape {list(shape)} does not have the range's {channels.lo.size} channels")
    if quant.zero_point != channels.fingerprint:
        raise RangeMismatch("the tensor was quantised within other channel ranges than this side's: the device "
                            "and the edge run different calibrations of this model; deploy the same bundle on both")
    size = _packed_bytes(values, bits)
    inflater = zlib.decompressobj(-15)
    try:
        packed = inflater.decompress(payload, size)  # never more than the shape allows
    except zlib.error as exc:
        raise CodecError(f"low-bit payload does not inflate: {exc}") from None
    if len(packed) != size or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise CodecError(f"low-bit payload does not inflate to the {size} bytes of shape {list(shape)}")
    per = 8 // bits
    rows = np.frombuffer(packed, np.uint8)
    q = np.empty((rows.size, per), np.uint8)
    mask = np.uint8((1 << bits) - 1)
    for k in range(per):
        q[:, k] = (rows >> np.uint8(k * bits)) & mask
    steps = channels.steps(1 << bits)
    out = q.reshape(-1)[:values].reshape(shape).astype(np.float32)
    out *= steps
    out += channels.lo
    return out


def _jpeg(image: np.ndarray) -> memoryview:
    """An 8-bit image of shape (1, H, W, 3) or (1, H, W, 1), channels in RGB order, as a JPEG."""
    cv2 = _opencv()
    if cv2 is None:
        raise CodecError("jpeg needs OpenCV (pip install opencv-python-headless)")
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[-1] not in (1, 3):
        raise CodecError(f"jpeg encodes one image of 1 or 3 channels, not shape {list(image.shape)}")
    plane = image[0, ..., ::-1] if image.shape[-1] == 3 else image[0]  # OpenCV reads BGR
    ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(plane), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise CodecError("OpenCV could not encode the image as JPEG")
    return memoryview(buffer).cast("B")


def _jpeg_size(data: bytes) -> tuple[int, int, int] | None:
    """Height, width and components from a JPEG's frame header, read before decoding: a payload that
    claims another size is refused without allocating for it."""
    at = 2
    if data[:2] != b"\xff\xd8":
        return None
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker, length = data[at + 1], int.from_bytes(data[at + 2:at + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if at + 10 > len(data):
                return None
            return (int.from_bytes(data[at + 5:at + 7], "big"), int.from_bytes(data[at + 7:at + 9], "big"),
                    data[at + 9])
        at += 2 + length
    return None


def _unjpeg(payload, shape, quant: Quantisation) -> np.ndarray:
    cv2 = _opencv()
    if cv2 is None:
        raise CodecError("jpeg needs OpenCV on the edge (pip install opencv-python-headless)")
    if len(shape) != 4 or int(shape[0]) != 1 or int(shape[-1]) not in (1, 3):
        raise CodecError(f"jpeg carries one image of 1 or 3 channels, not shape {list(shape)}")
    scale = _image_scale("jpeg", quant)
    data = bytes(payload)
    if _jpeg_size(data) != (int(shape[1]), int(shape[2]), int(shape[3])):
        raise CodecError(f"payload is not a JPEG of {shape[1]}x{shape[2]}x{shape[3]}")
    flag = cv2.IMREAD_COLOR if int(shape[-1]) == 3 else cv2.IMREAD_GRAYSCALE
    plane = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if plane is None or plane.shape[:2] != (int(shape[1]), int(shape[2])):
        raise CodecError("payload does not decode as a JPEG of its shape")
    image = plane[..., ::-1] if plane.ndim == 3 else plane[..., None]
    return image.reshape(shape).astype(np.float32) * scale


def jpeg_available() -> bool:
    """Whether this side can encode and decode ``jpeg`` (OpenCV is installed)."""
    return _opencv() is not None


@functools.cache
def _opencv():
    """OpenCV, where installed (its casts use the CPU's vector instructions: F16C for float16), else
    None."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2 if all(hasattr(cv2, f) for f in ("convertFp16", "minMaxLoc", "addWeighted", "imencode")) else None


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
    if codec not in WIRE_CODECS:
        raise CodecError(f"unknown codec {codec!r} (one of {', '.join(WIRE_CODECS)})")
    return codec
