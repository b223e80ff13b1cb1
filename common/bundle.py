"""The bundle contract: ``manifest.json`` says what a device and an edge need to know about
every split. One schema (these dataclasses) and one reader (``read_manifest``): the converter
writes what the same code reads on the device and the edge. Standard library only, so a board
or an Android app reads it without pydantic.

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

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(ValueError):
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
    kind: Literal["none", "yolov2-region", "yolo"] = "none"
    """How raw outputs become detections."""
    anchors: list[tuple[float, float]] = field(default_factory=list)
    """Anchor (w, h): grid cells for yolov2-region, pixels for yolo."""
    masks: list[list[int]] = field(default_factory=list)
    """yolo: anchor indices used by each output."""
    classes: int = 0
    """Number of classes."""
    labels: list[str] = field(default_factory=list)
    """Class names, index = class id."""

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
class Split:
    index: int
    """0 = send the input, last = everything on the device."""
    cut: str | None
    """Layer whose output is sent; None for device-only."""
    head: FileRef | None
    """TFLite model computing the cut tensor from the input; None for index 0."""
    tail: FileRef | None
    """Keras model the edge builds the rest from, starting at ``cut``; None for device-only."""
    cut_shape: list[int]
    """Shape of the tensor sent (batch 1); [] for device-only."""
    transfer_bytes: int
    """Raw payload bytes of the tensor sent (0 for device-only)."""
    codec_bytes: dict[str, int]
    """Payload bytes of the tensor sent with each cut-tensor codec (float32 = transfer_bytes, float16, int8)."""
    context: list[float]
    """Back-end context: conv MACs, conv layers, fc MACs, fc layers, activation MACs, activation layers,
    transfer bits."""
    front_macs: int
    """MACs the device computes for this split (all layer kinds)."""
    cut_dtype: str = "float32"
    """Dtype of the tensor sent."""

    def __post_init__(self) -> None:
        if self.index < 0 or self.transfer_bytes < 0 or self.front_macs < 0:
            raise ValueError("index, transfer_bytes and front_macs must not be negative")
        if len(self.context) != 7:
            raise ValueError(f"context holds 7 numbers, not {len(self.context)}")


@dataclass(frozen=True)
class Manifest:
    model: ModelInfo
    whole_model: FileRef
    """The whole model as one TFLite file, for pure on-device runs."""
    splits: list[Split]
    converter: dict[str, str] = field(default_factory=dict)
    """Versions of the tools that made the bundle."""
    schema_version: Literal[1] = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if [s.index for s in self.splits] != list(range(len(self.splits))) or len(self.splits) < 2:
            raise ValueError("splits must be numbered 0, 1, 2, ... in order, at least two")

    @property
    def device_only(self) -> int:
        """The last split: everything on the device."""
        return len(self.splits) - 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


def parse_manifest(doc: object, where: str = MANIFEST) -> Manifest:
    """The manifest in a decoded JSON document; BundleError naming the entry at fault."""
    if isinstance(doc, dict) and doc.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{where}: manifest schema_version {doc.get('schema_version')!r} is not supported "
                          f"(this reader knows {SCHEMA_VERSION}); convert the model again with this version")
    try:
        return _parse(Manifest, doc, "")
    except _Problem as exc:
        raise BundleError(f"{where}: {exc.path}: {exc.problem}" if exc.path else f"{where}: {exc.problem}") from None


def read_manifest(folder: str | Path) -> Manifest:
    path = Path(folder) / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BundleError(f"{path}: cannot read: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON: {exc}") from None
    return parse_manifest(doc, str(path))


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
        if verify:
            refs = {ref.path: ref for ref in [self.manifest.whole_model] + [s.head for s in self.splits if s.head]}
            verify_files(self.folder, list(refs.values()))

    @property
    def splits(self) -> list[Split]:
        return self.manifest.splits

    @property
    def device_only(self) -> int:
        return self.manifest.device_only

    @property
    def content_hash(self) -> str:
        return self.manifest.model.content_hash

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest.model.input.shape)
