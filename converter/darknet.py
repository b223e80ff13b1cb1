"""Darknet ``.cfg`` + ``.weights`` of the tiny YOLO family, as an equivalent Keras model.

Sections: [net], [convolutional] (batch-norm, leaky/linear/relu/logistic), [maxpool]
(stride defaults to 1, as Darknet's parser has it), [route] (one or more layers; with
``groups``/``group_id`` each input is sliced, then concatenated), [shortcut], [upsample], and
the [region] (YOLOv2) and [yolo] (YOLOv3/v4) heads, whose inputs become the model's outputs
(decoded by ``common.detect``). Anything else, and options that would change the maths but are
not implemented (``dilation``), are refused with the section and line. Weights are read in
Darknet's order and byte layout, and their count must match the cfg exactly.

Batch norm computes (x - mean) / sqrt(var + 0.00001), as Darknet's GPU path (cuDNN) and
AlexeyAB's darknet do: the published YOLO weights were trained with it. (pjreddie's CPU path
divides by sqrt(var) + 0.000001 instead, which differs by several percent for small variances.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import keras
from keras import layers as kl

from common.bundle import Decoding
from common.keras_model import ChannelGroup, ModelError

SUPPORTED = {"net", "network", "convolutional", "maxpool", "route", "shortcut", "upsample", "region", "yolo"}
ACTIVATIONS = {"leaky", "linear", "relu", "logistic"}


@dataclass
class Section:
    kind: str
    line: int
    options: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default=None, cast=int):
        if key not in self.options:
            if default is None:
                raise ModelError(f"line {self.line}: [{self.kind}] needs '{key}'")
            return default
        try:
            return cast(self.options[key])
        except ValueError:
            raise ModelError(f"line {self.line}: [{self.kind}] {key}={self.options[key]!r} is not a valid value") from None

    def ints(self, key: str) -> list[int]:
        return [int(v) for v in self.options[key].split(",") if v.strip()]


def parse_cfg(text: str, where: str = "cfg") -> list[Section]:
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ModelError(f"{where}:{number}: malformed section header {line!r}")
            kind = line[1:-1].strip().lower()
            if kind not in SUPPORTED:
                raise ModelError(f"{where}:{number}: unsupported section [{kind}] (supported: {', '.join(sorted(SUPPORTED))})")
            sections.append(Section(kind, number))
        elif "=" in line and sections:
            key, value = (p.strip() for p in line.split("=", 1))
            sections[-1].options[key] = value
        else:
            raise ModelError(f"{where}:{number}: expected a [section] or key=value, got {line!r}")
    if not sections or sections[0].kind not in ("net", "network"):
        raise ModelError(f"{where}: the first section must be [net]")
    return sections


class _Weights:
    def __init__(self, data: np.ndarray, where: str):
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int) -> np.ndarray:
        if self.pos + n > self.data.size:
            raise ModelError(f"{self.where}: weights file too short: the cfg needs more than its {self.data.size:,} floats")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


def read_weights(path: str | Path) -> np.ndarray:
    raw = Path(path).read_bytes()
    if len(raw) < 16:
        raise ModelError(f"{path}: too short for a Darknet weights header")
    major, minor, _ = np.frombuffer(raw[:12], "<i4")
    header = 20 if major * 10 + minor >= 2 else 16  # 'seen' grew from int32 to int64
    if (len(raw) - header) % 4:
        raise ModelError(f"{path}: {len(raw) - header} bytes after the header is not a whole number of float32s")
    return np.frombuffer(raw[header:], "<f4")


def _activation(x, kind: str, name: str):
    if kind == "leaky":
        return kl.LeakyReLU(negative_slope=0.1, name=name)(x)
    if kind == "relu":
        return kl.ReLU(name=name)(x)
    if kind == "logistic":
        return kl.Activation("sigmoid", name=name)(x)
    return x


def build_darknet(cfg_path: str | Path, weights_path: str | Path | None = None) -> tuple[keras.Model, Decoding]:
    """The Keras model of a Darknet cfg (weights loaded when given) and its output decoding."""
    cfg_path = Path(cfg_path)
    try:
        sections = parse_cfg(cfg_path.read_text(encoding="utf-8"), str(cfg_path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{cfg_path}: cannot read: {exc}") from None
    net = sections[0]
    h, w, c = net.get("height", 416), net.get("width", 416), net.get("channels", 3)
    inp = keras.Input((h, w, c), name="image")
    outs: list = []  # output tensor of each layer, Darknet numbering (the [net] section excluded)
    pending, anchors, masks, classes, kind = [], [], [], 0, "none"
    for i, s in enumerate(sections[1:]):
        x = outs[-1] if outs else inp
        where = f"{cfg_path}:{s.line}"
        if s.kind == "convolutional":
            act = s.get("activation", "linear", str)
            if act not in ACTIVATIONS:
                raise ModelError(f"{where}: activation '{act}' is not supported ({', '.join(sorted(ACTIVATIONS))})")
            size, stride, bn = s.get("size", 1), s.get("stride", 1), s.get("batch_normalize", 0)
            if s.get("dilation", 1) != 1 and size > 1:
                raise ModelError(f"{where}: dilation={s.options['dilation']} is not supported (it would change the "
                                 "output); only undilated convolutions convert")
            if s.get("groups", 1) != 1:
                raise ModelError(f"{where}: grouped convolutions (groups={s.options['groups']}) are not supported")
            pad = size // 2 if s.get("pad", 0) else s.get("padding", 0)
            if stride > 1 and pad:
                x = kl.ZeroPadding2D(pad, name=f"pad_{i}")(x)  # Darknet pads both sides alike
                padding = "valid"
            else:
                padding = "same" if pad else "valid"
            x = kl.Conv2D(s.get("filters"), size, strides=stride, padding=padding, use_bias=not bn, name=f"conv_{i}")(x)
            if bn:
                x = kl.BatchNormalization(epsilon=1e-5, name=f"bn_{i}")(x)
            x = _activation(x, act, f"{act}_{i}")
        elif s.kind == "maxpool":
            size = s.get("size", 2)
            x = kl.MaxPooling2D(size, strides=s.get("stride", 1), padding="same", name=f"pool_{i}")(x)
        elif s.kind == "route":
            refs = [r if r >= 0 else i + r for r in s.ints("layers")]
            if any(not 0 <= r < i for r in refs):
                raise ModelError(f"{where}: route refers to a layer outside 0..{i - 1}: {s.options['layers']}")
            srcs = [outs[r] for r in refs]
            groups = s.get("groups", 1)
            if groups > 1:  # Darknet takes group ``group_id`` of each input's channels, then concatenates
                srcs = [ChannelGroup(groups, s.get("group_id", 0), name=f"group_{i}" + (f"_{k}" if len(srcs) > 1
                                                                                      else ""))(src)
                        for k, src in enumerate(srcs)]
            x = srcs[0] if len(srcs) == 1 else kl.Concatenate(name=f"route_{i}")(srcs)
        elif s.kind == "shortcut":
            ref = s.get("from")
            ref = ref if ref >= 0 else i + ref
            if s.get("activation", "linear", str) != "linear":
                raise ModelError(f"{where}: only linear shortcuts are supported")
            x = kl.Add(name=f"shortcut_{i}")([outs[-1], outs[ref]])
        elif s.kind == "upsample":
            x = kl.UpSampling2D(s.get("stride", 2), interpolation="nearest", name=f"upsample_{i}")(x)
        else:  # region / yolo: the tensor before is a detection output
            pending.append(x)
            all_anchors = [float(v) for v in s.options.get("anchors", "").split(",") if v.strip()]
            anchors = list(zip(all_anchors[::2], all_anchors[1::2]))
            classes = s.get("classes")
            kind = "yolov2-region" if s.kind == "region" else "yolo"
            if s.kind == "yolo":
                masks.append(s.ints("mask"))
        outs.append(x)
    outputs = pending or [outs[-1]]
    model = keras.Model(inp, outputs, name=cfg_path.stem)
    if weights_path is not None:
        _load_weights(model, sections, Path(weights_path))
    return model, Decoding(kind=kind, anchors=anchors, classes=classes, masks=masks)


def _load_weights(model: keras.Model, sections: list[Section], path: Path) -> None:
    weights = _Weights(read_weights(path), str(path))
    for i, s in enumerate(sections[1:]):
        if s.kind != "convolutional":
            continue
        conv = model.get_layer(f"conv_{i}")
        kh, kw, c_in, filters = conv.kernel.shape
        if s.get("batch_normalize", 0):
            beta, gamma, mean, var = (weights.take(filters) for _ in range(4))
            model.get_layer(f"bn_{i}").set_weights([gamma, beta, mean, var])  # sqrt(var + 1e-5), as trained
            kernel = weights.take(filters * c_in * kh * kw)
            conv.set_weights([kernel.reshape(filters, c_in, kh, kw).transpose(2, 3, 1, 0)])
        else:
            bias = weights.take(filters)
            kernel = weights.take(filters * c_in * kh * kw)
            conv.set_weights([kernel.reshape(filters, c_in, kh, kw).transpose(2, 3, 1, 0), bias])
    if weights.pos != weights.data.size:
        raise ModelError(f"{path}: weights file has {weights.data.size - weights.pos:,} floats more than the cfg uses "
                         f"({weights.pos:,}): cfg and weights do not match")
