"""Keras layer names for the nodes of an imported graph (ONNX, TFLite): what Keras accepts (no '/' or
':'), unique within one model, and short enough to read in a split table."""

from __future__ import annotations

import re


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
