"""Per-layer cost, and the paper's 7-d context of the part of the model left to the edge.

Context order (the paper's): [conv MACs, conv layers, fc MACs, fc layers,
activation MACs, activation layers, transfer bits].

How each layer counts (NHWC shapes, batch excluded):

* conv (Conv1D/2D/3D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose): MACs =
  output positions x C_out x kernel size x C_in / groups (depthwise: C_in/groups = 1;
  separable: its depthwise part plus a 1x1 pointwise conv; transposed: input positions x
  C_in x kernel size x C_out). One conv layer each.
* fc (Dense): MACs = positions x inputs x units. One fc layer each.
* activation-type layers, counted as the paper's table does (its "activation" column
  holds batch-norm, activation and pooling layers): batch-norm 2 MACs per element
  (scale, shift); LeakyReLU and PReLU 2 per element; other activations 1 per element;
  pooling one per window element per output; global pooling one per input element;
  element-wise merges (Add, Multiply, ...) one per element per extra input. A conv or
  dense layer with a built-in activation also counts one activation layer.
* data movement (Concatenate, Reshape, Flatten, UpSampling, ZeroPadding, Dropout, ...):
  nothing.

With these rules the paper's tiny-YOLOv2 at 416x416 (80 classes) gives conv MACs
3,537,437,696 at index 0 and 3,462,677,504 after the first conv block, as its table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from keras import layers as kl

CONV = (kl.Conv1D, kl.Conv2D, kl.Conv3D, kl.DepthwiseConv2D, kl.SeparableConv2D, kl.Conv2DTranspose)
TWO_PER_ELEMENT = (kl.LeakyReLU, kl.PReLU)
ACTIVATIONS = (kl.ReLU, kl.ELU, kl.Softmax, kl.Activation, *TWO_PER_ELEMENT)
POOLS = (kl.MaxPooling1D, kl.MaxPooling2D, kl.MaxPooling3D, kl.AveragePooling1D, kl.AveragePooling2D,
         kl.AveragePooling3D)
GLOBAL_POOLS = (kl.GlobalAveragePooling1D, kl.GlobalAveragePooling2D, kl.GlobalMaxPooling1D, kl.GlobalMaxPooling2D)
MERGES = (kl.Add, kl.Subtract, kl.Multiply, kl.Average, kl.Maximum, kl.Minimum)


@dataclass(frozen=True)
class LayerCost:
    conv_macs: int = 0
    conv_layers: int = 0
    fc_macs: int = 0
    fc_layers: int = 0
    act_macs: int = 0
    act_layers: int = 0

    def vector(self) -> np.ndarray:
        return np.array([self.conv_macs, self.conv_layers, self.fc_macs, self.fc_layers, self.act_macs,
                         self.act_layers], dtype=np.float64)

    @property
    def macs(self) -> int:
        return self.conv_macs + self.fc_macs + self.act_macs


def _elements(shape) -> int:
    return int(math.prod(int(d) for d in shape[1:]))


def _has_activation(layer) -> bool:
    act = getattr(layer, "activation", None)
    return act is not None and getattr(act, "__name__", "linear") != "linear"


def layer_cost(layer) -> LayerCost:
    if isinstance(layer, kl.InputLayer):
        return LayerCost()
    out = layer.output.shape
    if isinstance(layer, CONV):
        inp = layer.input.shape
        c_in, kernel = int(inp[-1]), math.prod(layer.kernel_size)
        positions = _elements(out) // int(out[-1])
        if isinstance(layer, kl.SeparableConv2D):
            mid = c_in * layer.depth_multiplier
            macs = positions * mid * kernel + positions * int(out[-1]) * mid
        elif isinstance(layer, kl.DepthwiseConv2D):
            macs = positions * int(out[-1]) * kernel
        elif isinstance(layer, kl.Conv2DTranspose):
            macs = (_elements(inp) // c_in) * c_in * kernel * int(out[-1])
        else:
            macs = positions * int(out[-1]) * kernel * c_in // getattr(layer, "groups", 1)
        act = _has_activation(layer)
        return LayerCost(conv_macs=macs, conv_layers=1, act_macs=_elements(out) if act else 0, act_layers=int(act))
    if isinstance(layer, kl.Dense):
        inp = layer.input.shape
        positions = _elements(out) // int(out[-1])
        act = _has_activation(layer)
        return LayerCost(fc_macs=positions * int(inp[-1]) * int(out[-1]), fc_layers=1,
                         act_macs=_elements(out) if act else 0, act_layers=int(act))
    if isinstance(layer, kl.BatchNormalization):
        return LayerCost(act_macs=2 * _elements(out), act_layers=1)
    if isinstance(layer, ACTIVATIONS):
        if isinstance(layer, kl.Activation) and not _has_activation(layer):
            return LayerCost()
        per = 2 if isinstance(layer, TWO_PER_ELEMENT) else 1
        return LayerCost(act_macs=per * _elements(out), act_layers=1)
    if isinstance(layer, POOLS):
        return LayerCost(act_macs=_elements(out) * math.prod(layer.pool_size), act_layers=1)
    if isinstance(layer, GLOBAL_POOLS):
        return LayerCost(act_macs=_elements(layer.input.shape), act_layers=1)
    if isinstance(layer, MERGES):
        return LayerCost(act_macs=(len(layer.input) - 1) * _elements(out), act_layers=1)
    return LayerCost()


def tensor_bytes(shape, dtype: str = "float32") -> int:
    return _elements(shape) * np.dtype(dtype).itemsize
