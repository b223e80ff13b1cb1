"""What the ONNX and TFLite importers build alike: Keras layer names for a graph's nodes (what Keras
accepts, no '/' or ':'; unique within one model; short enough to read in a split table), and the
layers of element-wise nodes of two operands."""

from __future__ import annotations

import re

import numpy as np
from keras import layers as kl

from common.keras_model import Binary

#: Two-operand ops that Keras has a merge layer for (the same shapes only).
_MERGES = {"add": kl.Add, "subtract": kl.Subtract, "multiply": kl.Multiply}


def clean(name: str, fallback: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip("_.")[-60:] or fallback


class LayerNames:
    def __init__(self, fallback: str) -> None:
        self.fallback = fallback
        self._taken: set[str] = set()

    def __call__(self, base: str) -> str:
        name = clean(base, self.fallback)
        unique, k = name, 1
        while unique in self._taken:
            k += 1
            unique = f"{name}_{k}"
        self._taken.add(unique)
        return unique


def two_tensors(op: str, a, b, name: str):
    """``op`` of two Keras tensors: Keras' own merge layer where it has one and the shapes agree,
    else a broadcasting ``Binary``."""
    merge = _MERGES.get(op) if list(a.shape[1:]) == list(b.shape[1:]) else None
    return (merge(name=name) if merge else Binary(op, name=name))([a, b])


def with_constant(op: str, x, constant: np.ndarray, reverse: bool, name: str):
    """``op`` of a Keras tensor and a constant shaped like one sample of it (broadcastable), the
    constant held as the layer's weight (``reverse``: it is the left operand)."""
    layer = Binary(op, shape=list(constant.shape), reverse=reverse, name=name)
    y = layer(x)
    layer.set_weights([constant])
    return y
