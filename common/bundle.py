"""The bundle contract: ``manifest.json`` says what a device and an edge need to know about
every split. One schema (these dataclasses) and one reader (``read_manifest``): the converter
writes what the same code reads on the device and the edge. Standard library only, so a board
or an Android app reads it without pydantic.

The device's side of a bundle is the model cut into consecutive TFLite *segments* between the
cut points (segment k computes what cut k needs from what cuts before it left; the last one the
model's outputs), so every weight is stored once: split p's head is segments 1..p, and a frame the
edge did not answer is finished from the cut tensors the device already has with segments p+1..end.
A cut is one tensor or several (a feature pyramid's levels are alive at once): segments read and
write tensors by name.

Versioned (``schema_version``) and strict: unknown keys, missing keys and wrong types are
refused with the entry at fault, so a typo or a manifest from a newer converter fails loudly
instead of being half-understood.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union, get_args, get_origin, get_type_hints

from .errors import ConfigurationError
from .json_file import read_json

SCHEMA_VERSION = 3
MANIFEST = "manifest.json"
#: What ``ans convert --report`` writes into a bundle: every codec's bytes, time and accuracy per split,
#: which a device with ``codec = "auto"`` reads.
CODEC_REPORT = "codec-report.json"


class BundleError(ConfigurationError):
    """A bundle that cannot be used, with the file and entry at fault."""


@dataclass(frozen=True)
class Preprocessing:
    size: tuple[int, int]
    """Input height and width the frame is resized to."""
    scale: float = 1.0 / 255.0
    """Pixel values are multiplied by this after resizing."""
    channel_order: Literal["RGB", "BGR"] = "RGB"
    """Channel order the model expects."""


@dataclass(frozen=True)
class Decoding:
    kind: Literal["none", "yolov2-region", "yolo", "yolov8", "yolox", "boxes-scores"] = "none"
    """How raw outputs become detections: YOLOv2's region output; YOLOv3/v4 [yolo] outputs; YOLOv8 and
    YOLO11's anchor-free [1, 4 + C, N] (centre, size in input pixels, class scores); YOLOX's
    [1, N, 5 + C] (and YOLOv5's); two outputs, boxes [1, N, 4] (relative corners) and scores [1, N, C]."""
    anchors: list[tuple[float, float]] = field(default_factory=list)
    """Anchor (w, h): grid cells for yolov2-region, pixels for yolo."""
    masks: list[list[int]] = field(default_factory=list)
    """yolo: anchor indices used by each output."""
    classes: int = 0
    """Number of classes."""
    labels: list[str] = field(default_factory=list)
    """Class names, index = class id."""
    strides: list[int] = field(default_factory=list)
    """yolox: the grid strides when the export left the grid decode out (raw offsets and log sizes);
    empty when boxes are already in input pixels."""
    box_order: Literal["xyxy", "yxyx"] = "xyxy"
    """boxes-scores: the order of the box corners (TensorFlow's detectors write y first)."""
    background: bool = False
    """boxes-scores: score column 0 is the background class, not a class of its own."""

    def __post_init__(self) -> None:
        if self.classes < 0:
            raise ValueError("classes must not be negative")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    """Tensor (layer) name."""
    shape: list[int]
    """Shape with batch 1."""
    dtype: str = "float32"
    """Numpy dtype name."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    """Model name."""
    input: TensorInfo
    """The image input, NHWC."""
    outputs: list[TensorInfo]
    """The model's outputs, in order."""
    preprocessing: Preprocessing
    decoding: Decoding
    content_hash: str
    """sha256 of the architecture and weights; the edge refuses requests made with other bundles."""


@dataclass(frozen=True)
class FileRef:
    path: str
    """Path relative to the bundle folder."""
    sha256: str
    """sha256 of the file's bytes."""


@dataclass(frozen=True)
class Segment:
    index: int
    """1, 2, ...: segment k computes cut k's new tensors (segment 1 from the input)."""
    file: FileRef
    """The segment as a TFLite model (batch 1, float32 in and out)."""
    inputs: list[TensorInfo]
    """What it reads, by name: the model input (segment 1), or tensors computed by segments before it."""
    input_order: list[int]
    """For each entry of ``inputs``, its position among the interpreter's input tensors."""
    outputs: list[TensorInfo]
    """What it computes: the tensors of its cut that are new, or for the last segment the model's
    outputs in the manifest's order."""
    output_order: list[int]
    """For each entry of ``outputs``, its position among the interpreter's output tensors (TFLite
    may order a model's outputs differently)."""
    precision: Literal["float32", "int8"] = "float32"
    """Weights and arithmetic inside the segment; its inputs and outputs are float32 either way."""

    def __post_init__(self) -> None:
        if sorted(self.output_order) != list(range(len(self.outputs))):
            raise ValueError("output_order must be a permutation of the outputs' positions")
        if sorted(self.input_order) != list(range(len(self.inputs))) or not self.inputs:
            raise ValueError("input_order must be a permutation of the inputs' positions")


@dataclass(frozen=True)
class Split:
    index: int
    """0 = send the input, last = everything on the device. The device runs segments 1..index."""
    tensors: list[TensorInfo]
    """What is sent, in order: one tensor (a layer's output, the input for split 0) or several alive
    at once; none for device-only."""
    tail: FileRef | None
    """Keras model the edge builds the rest from, starting at ``tensors``; None for device-only."""
    transfer_bytes: int
    """Raw payload bytes of the tensors sent (0 for device-only)."""
    codec_bytes: dict[str, int]
    """Payload bytes of the tensors sent with each codec: exact for float32 (= transfer_bytes), float16,
    int8 and split 0's uint8; the mean over the sample images for the variable-size ones (int4, int3,
    int2; split 0's jpeg), present when the bundle has calibrated ranges."""
    context: list[float]
    """Back-end context: conv MACs, conv layers, fc MACs, fc layers, activation MACs, activation layers,
    transfer bits."""
    front_macs: int
    """MACs the device computes for this split (all layer kinds)."""

    def __post_init__(self) -> None:
        if self.index < 0 or self.transfer_bytes < 0 or self.front_macs < 0:
            raise ValueError("index, transfer_bytes and front_macs must not be negative")
        if len(self.context) != 7:
            raise ValueError(f"context holds 7 numbers, not {len(self.context)}")

    @property
    def cut(self) -> str | None:
        """The split as people read it: the layer(s) after which it cuts; None for device-only."""
        return " + ".join(t.name for t in self.tensors) or None

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tensors]

    @property
    def shapes(self) -> list[list[int]]:
        return [t.shape for t in self.tensors]


@dataclass(frozen=True)
class Manifest:
    model: ModelInfo
    segments: list[Segment]
    """The model cut at every split, in order: one fewer than the splits."""
    splits: list[Split]
    converter: dict[str, str] = field(default_factory=dict)
    """Versions of the tools that made the bundle."""
    schema_version: Literal[3] = SCHEMA_VERSION
    ranges: FileRef | None = None
    """The cut tensors' calibrated channel ranges (``ranges.json``), which the low-bit codecs quantise
    within; None when the model was converted without sample images."""

    def __post_init__(self) -> None:
        if [s.index for s in self.splits] != list(range(len(self.splits))) or len(self.splits) < 2:
            raise ValueError("splits must be numbered 0, 1, 2, ... in order, at least two")
        if [s.index for s in self.segments] != list(range(1, len(self.splits))):
            raise ValueError(f"segments must be numbered 1 to {len(self.splits) - 1}, one per split but the first")
        # The segments chain: each reads tensors computed before it (the first, the input), the last
        # computes the outputs; each split sends tensors computed by its segments, every one that
        # a later segment reads, so that the rest can be computed from what was sent.
        known = {self.model.input.name: self.model.input.shape}
        if self.splits[0].shapes != [self.model.input.shape]:
            raise ValueError("splits[0] must send the input")
        for segment in self.segments:
            for t in segment.inputs:
                if known.get(t.name) != t.shape:
                    raise ValueError(f"segments[{segment.index - 1}] ({segment.file.path}) reads {t.name} "
                                     f"{t.shape}, which no segment before it computes: the segments do not chain")
            if segment.index < len(self.segments):
                known.update({t.name: t.shape for t in segment.outputs})
                split = self.splits[segment.index]
                if any(known.get(t.name) != t.shape for t in split.tensors) or not split.tensors:
                    raise ValueError(f"splits[{segment.index}] sends {split.cut} {split.shapes}, which segments "
                                     f"1..{segment.index} do not compute")
                later = {t.name for s in self.segments[segment.index:] for t in s.inputs}
                missing = sorted((later & set(known)) - set(split.names))
                if missing:
                    raise ValueError(f"splits[{segment.index}] does not send {missing[0]}, which a later segment reads")
        last = self.segments[-1]
        if [o.shape for o in last.outputs] != [o.shape for o in self.model.outputs]:
            raise ValueError(f"the last segment ({last.file.path}) does not compute the model's outputs")
        if self.splits[-1].tensors or any(not s.tensors for s in self.splits[:-1]):
            raise ValueError("every split but the last sends at least one tensor; the last (device-only) none")

    @property
    def device_only(self) -> int:
        """The last split: everything on the device."""
        return len(self.splits) - 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


def parse_manifest(doc: object, where: str = MANIFEST) -> Manifest:
    """The manifest in a decoded JSON document; BundleError naming the entry at fault."""
    if isinstance(doc, dict) and doc.get("schema_version") == 1:
        raise BundleError(f"{where}: a bundle of the first format (one TFLite head per split, every weight stored "
                          "again in each); convert the model again (ans convert ...): the new bundle stores each "
                          "weight once, as segments")
    if isinstance(doc, dict) and doc.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{where}: manifest schema_version {doc.get('schema_version')!r} is not supported "
                          f"(this reader knows {SCHEMA_VERSION}); convert the model again with this version")
    try:
        return _parse(Manifest, doc, "")
    except _Problem as exc:
        raise BundleError(f"{where}: {exc.path}: {exc.problem}" if exc.path else f"{where}: {exc.problem}") from None


def read_manifest(folder: str | Path) -> Manifest:
    path = Path(folder) / MANIFEST
    return parse_manifest(read_json(path, BundleError), str(path))


def read_ranges(folder: str | Path, ref: FileRef) -> dict[str, tuple[list[float], list[float]]]:
    """``ranges.json``, checked against its sha256 and read: tensor name -> (lo, hi) per channel."""
    verify_files(folder, [ref])
    path = Path(folder) / ref.path
    doc = read_json(path, BundleError)
    tensors = doc.get("tensors") if isinstance(doc, dict) else None
    if not isinstance(tensors, dict):
        raise BundleError(f"{path}: no 'tensors' object")
    out = {}
    for name, entry in tensors.items():
        lo, hi = (entry.get(k) if isinstance(entry, dict) else None for k in ("lo", "hi"))
        if not (isinstance(lo, list) and isinstance(hi, list) and len(lo) == len(hi) > 0
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lo + hi)):
            raise BundleError(f"{path}: tensors.{name}: lo and hi must be lists of numbers of one length")
        out[name] = (lo, hi)
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(folder: str | Path, refs: list[FileRef]) -> None:
    """Each file is there and has the manifest's sha256; BundleError naming the first that does not."""
    for ref in refs:
        file = Path(folder) / ref.path
        try:
            digest = sha256_file(file)
        except OSError as exc:
            raise BundleError(f"{file}: cannot read: {exc.strerror}") from None
        if digest != ref.sha256:
            raise BundleError(f"{file}: sha256 does not match the manifest (corrupt or replaced)")


class _Problem(Exception):
    def __init__(self, path: str, problem: str):
        super().__init__(problem)
        self.path, self.problem = path, problem


def _parse(tp, value, where: str):
    """``value`` (decoded JSON) as type ``tp``: dataclasses, Literal, unions with None, list,
    tuple, dict and the JSON scalars; nothing else is needed by the manifest. ``where`` is the
    entry's path (``splits[3].context``), for the error."""
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Problem(where, "expected an object")
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise _Problem(where, f"unknown key {unknown[0]!r}")
        hints = get_type_hints(tp)
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = _parse(hints[name], value[name], f"{where}.{name}" if where else name)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _Problem(where, f"missing key {name!r}")
        try:
            return tp(**kwargs)
        except ValueError as exc:
            raise _Problem(where, str(exc)) from None
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        if value not in args:
            raise _Problem(where, f"{value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(inner, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise _Problem(where, "expected a list")
        if origin is tuple:
            if len(value) != len(args):
                raise _Problem(where, f"expected {len(args)} items")
            return tuple(_parse(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        return [_parse(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Problem(where, "expected an object")
        return {k: _parse(args[1], v, f"{where}.{k}" if where else k) for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
        return value
    raise _Problem(where, f"expected {getattr(tp, '__name__', tp)}, got {type(value).__name__}")


class Bundle:
    """A bundle folder as the device (and the converter's report) runs it: the manifest, and with
    ``verify`` the sha256 of every TFLite file checked, so a corrupt copy fails at load."""

    def __init__(self, folder: str | Path, verify: bool = True):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self._ranges: dict[str, tuple[list[float], list[float]]] | None = None
        if verify:
            verify_files(self.folder, [segment.file for segment in self.manifest.segments])

    @property
    def splits(self) -> list[Split]:
        return self.manifest.splits

    @property
    def segments(self) -> list[Segment]:
        return self.manifest.segments

    @property
    def device_only(self) -> int:
        return self.manifest.device_only

    def ranges(self, names: list[str]) -> list[tuple[list[float], list[float]]] | None:
        """The calibrated (lo, hi) channel ranges of the tensors called ``names``; None when the bundle
        has none."""
        if self._ranges is None and self.manifest.ranges is not None:
            self._ranges = read_ranges(self.folder, self.manifest.ranges)
        if self._ranges is None:
            return None
        missing = [n for n in names if n not in self._ranges]
        if missing:
            raise BundleError(f"{self.folder / self.manifest.ranges.path}: no range for tensor {missing[0]}")
        return [self._ranges[n] for n in names]

    @property
    def content_hash(self) -> str:
        return self.manifest.model.content_hash

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest.model.input.shape)
