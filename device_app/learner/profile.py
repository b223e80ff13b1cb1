"""Per-split descriptions the learner works on: contexts and front-end delays.

A profile is the list of split points of one detector, index 0 = send the input,
last index = everything on the device. Each split carries the paper's 7-d context
of the part left to the edge, in the paper's order:

    [conv MACs, conv layers, fc MACs, fc layers, activation MACs, activation layers, transfer bits]

Two files describe splits: a converter bundle's ``manifest.json`` (read by
``common.bundle``, the one manifest reader) and the schema of the paper's measured
profiles (``device_app/profiles/*.json``). Both are read with the standard library
only (no pydantic: the device core must install on Android), and any problem is one
``ProfileError`` naming the file and the offending entry.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from common.bundle import BundleError, parse_manifest
from common.errors import ConfigurationError
from mqtt.codec import IMAGE_CODEC, VARIABLE

CONTEXT_FIELDS = (
    "conv_macs",
    "conv_layers",
    "fc_macs",
    "fc_layers",
    "act_macs",
    "act_layers",
    "transfer_bits",
)
#: Column positions inside a context vector.
MAC_COLUMNS = (0, 2, 4)
LAYER_COLUMNS = (1, 3, 5)
BITS_COLUMN = 6

#: Built-in profiles measured by the paper's authors on a Jetson TX2.
BUILTIN_PROFILES = {
    "tiny-yolov2-tx2": "tiny_yolov2_tx2.json",
    "vgg16-tx2": "vgg16_tx2.json",
}


class ProfileError(ConfigurationError):
    """A profile or manifest that cannot be used, with the file and entry at fault."""


@dataclass(frozen=True)
class SplitProfile:
    """Contexts and front-end delays of every split of one detector."""

    name: str
    contexts: np.ndarray  # (K, 7) float64, paper order
    front_delay_s: np.ndarray  # (K,) front-end (device) delay of each split
    source: str

    @property
    def n_splits(self) -> int:
        return int(self.contexts.shape[0])

    @property
    def device_only(self) -> int:
        """Index of the split that keeps everything on the device."""
        return self.n_splits - 1

    @property
    def transfer_bits(self) -> np.ndarray:
        return self.contexts[:, BITS_COLUMN]

    @property
    def backend_macs(self) -> np.ndarray:
        return self.contexts[:, MAC_COLUMNS].sum(axis=1)

    @property
    def backend_layers(self) -> np.ndarray:
        return self.contexts[:, LAYER_COLUMNS].sum(axis=1)


def load_profile(spec: str | Path, device_macs_per_s: float = 3.0e10, codec: str = "float32",
                 image_codec: str = IMAGE_CODEC, arms: list[tuple[int, str]] | None = None) -> SplitProfile:
    """Load a built-in profile name, a paper-schema JSON or a bundle manifest.

    A manifest holds no delays (they are measured on the device): front-end
    delays are then estimated as ``front_macs / device_macs_per_s``, which is what
    a simulation needs before a real device has calibrated itself. ``codec`` picks the
    cut-tensor codec whose payload size becomes the transfer bits, ``image_codec`` split 0's.
    ``arms`` (manifests only): the profile's rows are these (split, codec) pairs instead, in split
    order, device-only last (``device_app.codec_choice.Arms``): a split may have several.
    """
    spec_s = str(spec)
    if spec_s in BUILTIN_PROFILES:
        ref = resources.files("device_app.profiles") / BUILTIN_PROFILES[spec_s]
        return _parse(ref.read_text(encoding="utf-8"), spec_s, device_macs_per_s, (codec, image_codec), arms)
    path = Path(spec_s)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        known = ", ".join(sorted(BUILTIN_PROFILES))
        raise ProfileError(f"{spec_s}: no such file, bundle or built-in profile (built-ins: {known})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read: {exc}") from None
    return _parse(text, str(path), device_macs_per_s, (codec, image_codec), arms)


def _parse(text: str, where: str, device_macs_per_s: float, codecs: tuple[str, str],
           arms: list[tuple[int, str]] | None) -> SplitProfile:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{where}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("splits"), list):
        raise ProfileError(f"{where}: expected an object with a 'splits' list")
    if "schema_version" in doc:
        return _parse_manifest(doc, where, device_macs_per_s, codecs, arms)
    if codecs[0] != "float32" or arms is not None:
        raise ProfileError(f"{where}: a paper profile has one float32 transfer size per split, not {codecs[0]}")
    return _parse_paper(doc, where)


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProfileError(f"{where}: expected a finite number, got {value!r}")
    if value < 0:
        raise ProfileError(f"{where}: must not be negative, got {value!r}")
    return float(value)


def _field(entry: dict, key: str, where: str) -> object:
    if not isinstance(entry, dict) or key not in entry:
        raise ProfileError(f"{where}: missing field '{key}'")
    return entry[key]


def _check_indices(splits: list, where: str) -> None:
    if len(splits) < 2:
        raise ProfileError(f"{where}: needs at least two splits (edge-only and device-only)")
    for i, s in enumerate(splits):
        idx = _field(s, "index", f"{where}: splits[{i}]")
        if idx != i:
            raise ProfileError(f"{where}: splits[{i}].index is {idx!r}; splits must be ordered 0..{len(splits) - 1}")


def _finish(name: str, contexts: list, front: list, where: str) -> SplitProfile:
    ctx = np.asarray(contexts, dtype=np.float64)
    if np.any(ctx[-1] != 0):
        raise ProfileError(f"{where}: the last split (device-only) must leave nothing to the edge")
    if np.any(ctx[:-1, BITS_COLUMN] <= 0):
        bad = int(np.flatnonzero(ctx[:-1, BITS_COLUMN] <= 0)[0])
        raise ProfileError(f"{where}: splits[{bad}] offloads but sends no bits")
    return SplitProfile(name=name, contexts=ctx, front_delay_s=np.asarray(front, dtype=np.float64), source=where)


def _read_splits(splits: list, where: str, read) -> tuple[list, list]:
    """``read(split, where)`` -> (context row, front-end delay) for every split, in index order."""
    _check_indices(splits, where)
    rows = [read(s, f"{where}: splits[{i}]") for i, s in enumerate(splits)]
    return [r[0] for r in rows], [r[1] for r in rows]


def _parse_paper(doc: dict, where: str) -> SplitProfile:
    def read(s: dict, w: str) -> tuple[list, float]:
        layers = _field(s, "backend_layers", w)
        macs = _field(s, "backend_macs", w)
        row = []
        for kind in ("conv", "fc", "act"):
            row.append(_number(_field(macs, kind, f"{w}.backend_macs"), f"{w}.backend_macs.{kind}"))
            row.append(_number(_field(layers, kind, f"{w}.backend_layers"), f"{w}.backend_layers.{kind}"))
        row.append(_number(_field(s, "transfer_bits", w), f"{w}.transfer_bits"))
        return row, _number(_field(s, "front_delay_s", w), f"{w}.front_delay_s")

    contexts, front = _read_splits(doc["splits"], where, read)
    return _finish(str(doc.get("model", Path(where).stem)), contexts, front, where)


def _parse_manifest(doc: dict, where: str, device_macs_per_s: float, codecs: tuple[str, str],
                    arms: list[tuple[int, str]] | None) -> SplitProfile:
    """A bundle manifest, read by the one reader every role uses (``common.bundle``). ``codecs``: every
    cut's codec and split 0's, whose sizes become the transfer bits; or one row per (split, codec) of
    ``arms``."""
    try:
        manifest = parse_manifest(doc, where)
    except BundleError as exc:
        raise ProfileError(str(exc)) from None
    if device_macs_per_s <= 0:
        raise ProfileError(f"{where}: device MAC rate must be positive, got {device_macs_per_s}")
    splits = manifest.splits
    if arms is None:
        arms = [(s.index, codecs[1] if s.index == 0 else codecs[0]) for s in splits]
    order = [k for k, _ in arms]
    if order != sorted(order) or set(order) != set(range(len(splits))) or order.count(len(splits) - 1) != 1:
        raise ProfileError(f"{where}: arms must cover every split in order, device-only last and once")
    contexts, front = [], []
    for index, wire in arms:
        s, w = splits[index], f"{where}: splits[{index}]"
        row = [_number(v, f"{w}.context[{j}]") for j, v in enumerate(s.context)]
        if wire in s.codec_bytes:
            row[BITS_COLUMN] = 8 * _number(s.codec_bytes[wire], f"{w}.codec_bytes.{wire}")
        elif s.tensors and (wire != "float32" and not (s.index == 0 and wire == IMAGE_CODEC)):
            raise ProfileError(f"{w}.codec_bytes: no size for codec {wire!r}" + (
                " (measured at conversion: convert the model again with sample images, --calibration-images)"
                if wire in VARIABLE else ""))
        contexts.append(row)
        front.append(s.front_macs / device_macs_per_s)
    return _finish(manifest.model.name or Path(where).parent.name, contexts, front, where)
