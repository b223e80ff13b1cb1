"""ONNX -> Keras functional model, node by node, so that an ONNX detector is cut, segmented and served
exactly like a Keras one (same cut finder, TFLite segments, Keras tail on the edge).

PyTorch exports NCHW; TFLite and Keras convolutions are NHWC. Every 4-D tensor that comes out of a
convolution-like node is held as NHWC and marked so (``_Value.nhwc``): axis-taking nodes (Concat,
Split, Slice, Softmax) get their axis mapped, constants of element-wise nodes are transposed, and a
node that depends on the memory order (Reshape, Transpose, Flatten) first gets the tensor back in
ONNX order with a Permute. Nodes whose inputs are all constants (shape arithmetic) are evaluated
at conversion with ONNX's reference runtime. A node this does not handle is refused with its name,
op type and what to do; never a TensorFlow dump.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers as kl

from common.keras_model import Elementwise, ModelError, Slice

from .imported_layers import LayerNames, clean, two_tensors, with_constant

MIN_OPSET = 11
#: ONNX axis of a 4-D NCHW tensor -> the axis of the same data held as NHWC.
_TO_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}
#: Element-wise ONNX ops -> the op names of ``Elementwise`` and ``Binary``.
_UNARY = {"Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Abs": "abs", "Neg": "negative", "Floor": "floor",
          "Ceil": "ceil", "Erf": "erf"}
_BINARY = {"Add": "add", "Sub": "subtract", "Mul": "multiply", "Div": "divide", "Max": "maximum", "Min": "minimum",
           "Pow": "power"}
#: What to do about a node that cannot be converted, by op type.
_ADVICE = {
    "NonMaxSuppression": "export without NMS (Ultralytics: nms=False); ANS runs NMS itself",
    "TopK": "export without NMS or top-k selection (Ultralytics: nms=False); ANS runs NMS itself",
    "If": "export with a fixed input size and no data-dependent control flow (dynamic=False)",
    "Loop": "export with a fixed input size and no data-dependent control flow (dynamic=False)",
    "QuantizeLinear": "export the float32 model; ans convert --quantize int8 quantises the device's side",
    "DequantizeLinear": "export the float32 model; ans convert --quantize int8 quantises the device's side",
}


@dataclass(frozen=True)
class _Value:
    """A Keras tensor standing for an ONNX tensor; ``nhwc``: a 4-D NCHW ONNX tensor held as NHWC."""

    tensor: object
    nhwc: bool = False

    @property
    def rank(self) -> int:
        return len(self.tensor.shape)

    @property
    def onnx_shape(self) -> list[int]:
        shape = [1, *[int(d) for d in self.tensor.shape[1:]]]
        return [shape[0], shape[3], shape[1], shape[2]] if self.nhwc else shape


def load_onnx(path: str | Path):
    """The ONNX model in ``path``, or a ModelError in one line."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
        raise ModelError(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if not model.graph.node:
        raise ModelError(f"{path}: an ONNX file without a graph")
    return model


def onnx_metadata(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def import_onnx(model, name: str | None = None) -> tuple[keras.Model, bool]:
    """A Keras functional model computing what the ONNX ``model`` computes, with an NHWC input, and
    whether the ONNX input is NCHW (so that a reference run transposes the image)."""
    importer = _Importer(model)
    return importer.build(name), importer.nchw


class _Importer:
    def __init__(self, model) -> None:
        import onnx
        from onnx import numpy_helper

        self.onnx = onnx
        opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        self.opset = opsets.get("ai.onnx", 0)
        if self.opset < MIN_OPSET:
            raise ModelError(f"the ONNX model uses opset {self.opset}: export it with opset {MIN_OPSET} or later")
        self.model = model
        self.values: dict[str, object] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self._plain: dict[int, _Value] = {}  # id(nhwc tensor) -> its Permute back to ONNX order
        self._name = LayerNames("node")  # a Keras layer name from an ONNX node or tensor name
        self.nchw = False

    # -- layouts ----------------------------------------------------------------------------------
    def plain(self, v: _Value) -> _Value:
        if not v.nhwc:
            return v
        key = id(v.tensor)
        if key not in self._plain:
            self._plain[key] = _Value(kl.Permute((3, 1, 2), name=self._name("to_nchw"))(v.tensor))
        return self._plain[key]

    def nhwc(self, v: _Value, node) -> _Value:
        if v.nhwc:
            return v
        if v.rank != 4:
            raise self.refuse(node, f"needs a 4-D NCHW input, got shape {v.onnx_shape}")
        return _Value(kl.Permute((2, 3, 1), name=self._name("to_nhwc"))(v.tensor), nhwc=True)

    @staticmethod
    def axis(v: _Value, axis: int) -> int:
        rank = len(v.onnx_shape)
        axis = axis + rank if axis < 0 else axis
        return _TO_NHWC[axis] if v.nhwc else axis

    def refuse(self, node, why: str) -> ModelError:
        return ModelError(f"ONNX node '{node.name or node.output[0]}' ({node.op_type}): {why}")

    # -- the graph --------------------------------------------------------------------------------
    def build(self, name: str | None) -> keras.Model:
        graph = self.model.graph
        inputs = [i for i in graph.input if i.name not in self.values]
        if len(inputs) != 1:
            raise ModelError(f"the ONNX model has {len(inputs)} inputs; the converter needs exactly one image input")
        source = inputs[0]
        dims = []
        for k, d in enumerate(source.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif k == 0:
                dims.append(1)  # a dynamic batch: the device sends one frame at a time
            else:
                raise ModelError(f"ONNX input '{source.name}' has a dynamic size ({d.dim_param or '?'} in dimension "
                                 f"{k}): export with a fixed input size (Ultralytics: imgsz=320, dynamic=False)")
        if len(dims) != 4 or dims[0] != 1:
            raise ModelError(f"ONNX input '{source.name}' has shape {dims}; the converter needs one image, "
                             "[1, 3, H, W] (NCHW) or [1, H, W, 3]")
        self.nchw = dims[1] in (1, 3) and dims[3] not in (1, 3)
        shape = (dims[2], dims[3], dims[1]) if self.nchw else tuple(dims[1:])
        image = keras.Input(shape=shape, name=self._name(source.name))
        self.values[source.name] = _Value(image, nhwc=self.nchw)
        for node in graph.node:
            self.convert_node(node)
        outputs = []
        for out in graph.output:
            v = self.values.get(out.name)
            if not isinstance(v, _Value):
                raise ModelError(f"ONNX output '{out.name}' does not depend on the input")
            outputs.append(self.plain(v).tensor)
        model_name = clean(name or graph.name or "", "onnx_model")
        return keras.Model(image, outputs if len(outputs) > 1 else outputs[0], name=model_name)

    def convert_node(self, node) -> None:
        if node.domain not in ("", "ai.onnx"):
            raise self.refuse(node, f"an op of the custom domain '{node.domain}' has no TFLite equivalent; "
                                    "export with standard ONNX ops only")
        ins = [self.values[i] if i else None for i in node.input]
        missing = [i for i, v in zip(node.input, ins) if i and v is None]
        if missing:
            raise self.refuse(node, f"input '{missing[0]}' is not produced by any earlier node")
        attrs = {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        if node.op_type == "Constant":
            outs = [self._constant(node, attrs)]
        elif node.op_type == "Shape":
            outs = [np.array(self._shape(ins[0]), dtype=np.int64)]
        elif all(v is None or isinstance(v, np.ndarray) for v in ins):
            outs = self._fold(node, ins)
        elif node.op_type in _UNARY:
            name = self._name(node.name or node.output[0])
            outs = self._activation(node, ins[0], Elementwise(_UNARY[node.op_type], name=name))
        elif node.op_type in _BINARY:
            outs = self._binary(node, ins, _BINARY[node.op_type])
        else:
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                advice = _ADVICE.get(node.op_type, "re-export the model without it (the ops the converter takes "
                                                    "are listed in docs/converter.md)")
                raise self.refuse(node, f"not supported: {advice}")
            outs = handler(node, ins, attrs)
        for name, value in zip(node.output, outs):
            if name:
                self.values[name] = value

    def _constant(self, node, attrs):
        from onnx import numpy_helper

        if "value" in attrs:
            return numpy_helper.to_array(attrs["value"])
        for key in ("value_float", "value_int"):
            if key in attrs:
                return np.array(attrs[key], dtype=np.float32 if key == "value_float" else np.int64)
        for key in ("value_floats", "value_ints"):
            if key in attrs:
                return np.array(attrs[key], dtype=np.float32 if key == "value_floats" else np.int64)
        raise self.refuse(node, "a constant of a kind the converter does not read (sparse or string)")

    def _shape(self, v) -> list[int]:
        return list(v.shape) if isinstance(v, np.ndarray) else v.onnx_shape

    def _fold(self, node, ins) -> list:
        """Evaluate a node of constants now (shape arithmetic, anchor grids)."""
        from onnx.reference import ReferenceEvaluator

        try:
            feeds = {n: v for n, v in zip(node.input, ins) if n}
            return [np.asarray(o) for o in ReferenceEvaluator(node).run(None, feeds)]
        except Exception as exc:
            raise self.refuse(node, f"cannot evaluate it on constants ({str(exc).splitlines()[0]})") from None

    def const(self, node, value, what: str) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise self.refuse(node, f"its {what} must be a constant (export with a fixed input size)")
        return value

    # -- convolutions and pooling ------------------------------------------------------------------
    def _padding(self, node, v: _Value, kernel, strides, dilations, attrs, zero_fill: bool):
        """Keras padding for the node's pads: 'valid', 'same' where it is the same, else explicit zeros."""
        auto = attrs.get("auto_pad", "NOTSET")
        if auto == "SAME_UPPER":
            return v, "same"
        if auto == "SAME_LOWER":
            raise self.refuse(node, "auto_pad SAME_LOWER has no TFLite equivalent; export with explicit pads")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if auto == "VALID" or not any(pads):
            return v, "valid"
        top, left, bottom, right = pads
        size = v.tensor.shape[1:3]

        def same(n, k, s, d, before, after):  # what Keras' 'same' pads: the larger half after
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            return (total // 2, total - total // 2) == (before, after)

        if all(same(size[i], kernel[i], strides[i], dilations[i], b, a)
               for i, (b, a) in enumerate(((top, bottom), (left, right)))):
            return v, "same"
        if not zero_fill:
            raise self.refuse(node, f"pads {pads} with strides {list(strides)}: only the padding of Keras' 'same' "
                                    "can be reproduced for pooling")
        padded = kl.ZeroPadding2D(((top, bottom), (left, right)), name=self._name(f"{node.name}_pad"))(v.tensor)
        return _Value(padded, nhwc=True), "valid"

    def op_Conv(self, node, ins, attrs):
        w = self.const(node, ins[1], "weight")
        b = self.const(node, ins[2], "bias") if len(ins) > 2 and ins[2] is not None else None
        if w.ndim != 4:
            raise self.refuse(node, f"a {w.ndim - 2}-D convolution; the converter takes 2-D ones")
        x = self.nhwc(ins[0], node)
        kernel = [int(k) for k in w.shape[2:]]
        strides = list(attrs.get("strides", [1, 1]))
        dilations = list(attrs.get("dilations", [1, 1]))
        groups = int(attrs.get("group", 1))
        x, padding = self._padding(node, x, kernel, strides, dilations, attrs, zero_fill=True)
        cin, cout = int(x.tensor.shape[-1]), int(w.shape[0])
        name = self._name(node.name or node.output[0])
        if groups == 1:
            layer = kl.Conv2D(cout, kernel, strides, padding, dilation_rate=dilations, use_bias=b is not None,
                              name=name)
            kernel_w = w.transpose(2, 3, 1, 0)
        elif groups == cin and cout % cin == 0:
            layer = kl.DepthwiseConv2D(kernel, strides, padding, depth_multiplier=cout // cin,
                                       dilation_rate=dilations, use_bias=b is not None, name=name)
            kernel_w = w.reshape(cin, cout // cin, *kernel).transpose(2, 3, 0, 1)
        else:
            raise self.refuse(node, f"a grouped convolution ({groups} groups of {cin // groups} channels) has no "
                                    "TFLite built-in op; only plain and depthwise convolutions convert")
        y = layer(x.tensor)
        layer.set_weights([kernel_w.astype(np.float32)] + ([b.astype(np.float32)] if b is not None else []))
        return [_Value(y, nhwc=True)]

    def _pool(self, node, ins, attrs, cls):
        if len(node.output) > 1 and node.output[1]:
            raise self.refuse(node, "pooling indices have no TFLite equivalent")
        if attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise self.refuse(node, "ceil_mode and dilated pooling do not convert; export with ceil_mode=False")
        if cls is kl.AveragePooling2D and attrs.get("count_include_pad", 0) and any(attrs.get("pads", [0])):
            raise self.refuse(node, "average pooling that counts the padding does not convert")
        x = self.nhwc(ins[0], node)
        kernel = list(attrs["kernel_shape"])
        strides = list(attrs.get("strides", [1, 1]))
        x, padding = self._padding(node, x, kernel, strides, [1, 1], attrs, zero_fill=False)
        return [_Value(cls(kernel, strides, padding, name=self._name(node.name or node.output[0]))(x.tensor),
                       nhwc=True)]

    def op_MaxPool(self, node, ins, attrs):
        return self._pool(node, ins, attrs, kl.MaxPooling2D)

    def op_AveragePool(self, node, ins, attrs):
        return self._pool(node, ins, attrs, kl.AveragePooling2D)

    def op_GlobalAveragePool(self, node, ins, attrs):
        x = self.nhwc(ins[0], node)
        return [_Value(kl.GlobalAveragePooling2D(keepdims=True, name=self._name(node.name))(x.tensor), nhwc=True)]

    def op_GlobalMaxPool(self, node, ins, attrs):
        x = self.nhwc(ins[0], node)
        return [_Value(kl.GlobalMaxPooling2D(keepdims=True, name=self._name(node.name))(x.tensor), nhwc=True)]

    def op_BatchNormalization(self, node, ins, attrs):
        gamma, beta, mean, var = (self.const(node, v, "statistics") for v in ins[1:5])
        x = ins[0]
        axis = self.axis(x, 1)
        layer = kl.BatchNormalization(axis=axis, epsilon=float(attrs.get("epsilon", 1e-5)),
                                      name=self._name(node.name or node.output[0]))
        y = layer(x.tensor)
        layer.set_weights([a.astype(np.float32) for a in (gamma, beta, mean, var)])
        return [_Value(y, nhwc=x.nhwc)]

    def op_Pad(self, node, ins, attrs):
        """Zeros around the height and width of an image tensor (as TensorFlow's exporters write
        a strided convolution's padding)."""
        x = ins[0]
        pads = attrs.get("pads") if len(ins) < 2 or ins[1] is None else self.const(node, ins[1], "pads")
        value = ins[2] if len(ins) > 2 and ins[2] is not None else attrs.get("value", 0.0)
        rank = len(x.onnx_shape)
        pads = [int(p) for p in np.ravel(pads)]
        widths = {self.axis(x, a): (pads[a], pads[a + rank]) for a in range(rank) if pads[a] or pads[a + rank]}
        if (attrs.get("mode", "constant") != "constant" or float(np.ravel(value)[0]) != 0.0 or x.rank != 4
                or not set(widths) <= {1, 2} or min(pads) < 0):
            raise self.refuse(node, f"{attrs.get('mode', 'constant')} padding {pads} does not convert: only zeros "
                                    "around the height and width of an image tensor")
        layer = kl.ZeroPadding2D((widths.get(1, (0, 0)), widths.get(2, (0, 0))),
                                 name=self._name(node.name or node.output[0]))
        return [_Value(layer(x.tensor), nhwc=x.nhwc)]

    def op_Resize(self, node, ins, attrs):
        x = self.nhwc(ins[0], node)
        n, c, h, w = x.onnx_shape
        scales = ins[2] if len(ins) > 2 else None
        sizes = ins[3] if len(ins) > 3 else None
        if isinstance(sizes, np.ndarray) and sizes.size:
            factors = [sizes[2] / h, sizes[3] / w]
        elif isinstance(scales, np.ndarray) and scales.size:
            factors = [float(scales[2]), float(scales[3])]
        else:
            raise self.refuse(node, "its scales or sizes must be constants (export with a fixed input size)")
        mode = attrs.get("mode", "nearest")
        transform = attrs.get("coordinate_transformation_mode", "half_pixel")
        if any(f != int(f) or f < 1 for f in factors):
            raise self.refuse(node, f"scale factors {factors}: only whole-number upsampling converts")
        if mode == "nearest" and transform in ("asymmetric", "half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn"):
            interpolation = "nearest"  # for whole factors all of these repeat each pixel
        elif mode == "linear" and transform in ("half_pixel", "pytorch_half_pixel"):
            interpolation = "bilinear"
        else:
            raise self.refuse(node, f"{mode} resizing with {transform} coordinates does not convert; export "
                                    "nearest or bilinear (align_corners=False) upsampling")
        layer = kl.UpSampling2D(tuple(int(f) for f in factors), interpolation=interpolation,
                                name=self._name(node.name or node.output[0]))
        return [_Value(layer(x.tensor), nhwc=True)]

    # -- element-wise ------------------------------------------------------------------------------
    def _activation(self, node, x: _Value, layer):
        return [_Value(layer(x.tensor), nhwc=x.nhwc)]

    def op_Relu(self, node, ins, attrs):
        return self._activation(node, ins[0], kl.ReLU(name=self._name(node.name or node.output[0])))

    def op_LeakyRelu(self, node, ins, attrs):
        return self._activation(node, ins[0], kl.LeakyReLU(negative_slope=float(attrs.get("alpha", 0.01)),
                                                          name=self._name(node.name or node.output[0])))

    def op_Sigmoid(self, node, ins, attrs):
        return self._activation(node, ins[0], kl.Activation("sigmoid", name=self._name(node.name or node.output[0])))

    def op_Tanh(self, node, ins, attrs):
        return self._activation(node, ins[0], kl.Activation("tanh", name=self._name(node.name or node.output[0])))

    def op_Clip(self, node, ins, attrs):
        low = ins[1] if len(ins) > 1 and ins[1] is not None else None
        high = ins[2] if len(ins) > 2 and ins[2] is not None else None
        low = float(self.const(node, low, "minimum")) if low is not None else float(attrs.get("min", -np.inf))
        high = float(self.const(node, high, "maximum")) if high is not None else float(attrs.get("max", np.inf))
        name = self._name(node.name or node.output[0])
        layer = kl.ReLU(max_value=None if np.isinf(high) else high, name=name) if low == 0 else \
            Elementwise("clip", low=low, high=high, name=name)
        return self._activation(node, ins[0], layer)

    def op_HardSigmoid(self, node, ins, attrs):
        layer = Elementwise("hard_sigmoid", alpha=float(attrs.get("alpha", 0.2)), beta=float(attrs.get("beta", 0.5)),
                            name=self._name(node.name or node.output[0]))
        return self._activation(node, ins[0], layer)

    def op_HardSwish(self, node, ins, attrs):
        x = ins[0]
        gate = Elementwise("hard_sigmoid", alpha=1 / 6, beta=0.5, name=self._name(f"{node.name}_gate"))(x.tensor)
        return [_Value(kl.Multiply(name=self._name(node.name or node.output[0]))([x.tensor, gate]), nhwc=x.nhwc)]

    def op_Identity(self, node, ins, attrs):
        return [ins[0]]

    def op_Dropout(self, node, ins, attrs):
        return [ins[0]]

    def op_Cast(self, node, ins, attrs):
        if attrs.get("to") != self.onnx.TensorProto.FLOAT:
            raise self.refuse(node, "a cast of a computed tensor to a type other than float32 does not convert")
        return [ins[0]]

    def _binary(self, node, ins, op):
        if len(ins) != 2:
            raise self.refuse(node, f"{len(ins)} operands; the converter takes two")
        a, b = ins
        name = self._name(node.name or node.output[0])
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            reverse = isinstance(a, np.ndarray)
            x, c = (b, a) if reverse else (a, b)
            c = np.asarray(c, dtype=np.float32)
            rank = len(x.onnx_shape)
            if c.ndim > rank:
                raise self.refuse(node, f"a constant of shape {list(c.shape)} widens the tensor {x.onnx_shape}")
            c = c.reshape((1,) * (rank - c.ndim) + c.shape)
            if x.nhwc:
                c = c.transpose(0, 2, 3, 1)
            if c.shape[0] != 1:
                raise self.refuse(node, "a constant with a batch dimension above 1")
            return [_Value(with_constant(op, x.tensor, c[0], reverse, name), nhwc=x.nhwc)]
        if a.nhwc != b.nhwc:
            if a.rank == b.rank == 4:
                a, b = self.nhwc(a, node), self.nhwc(b, node)
            else:
                a, b = self.plain(a), self.plain(b)
        return [_Value(two_tensors(op, a.tensor, b.tensor, name), nhwc=a.nhwc)]

    def op_Softmax(self, node, ins, attrs):
        x = ins[0]
        rank = len(x.onnx_shape)
        axis = int(attrs.get("axis", -1 if self.opset >= 13 else 1))
        axis = axis + rank if axis < 0 else axis
        if self.opset < 13 and axis != rank - 1:
            raise self.refuse(node, "a softmax over several axes (opset < 13); export with opset 13 or later")
        return [_Value(kl.Softmax(axis=self.axis(x, axis), name=self._name(node.name or node.output[0]))(x.tensor),
                       nhwc=x.nhwc)]

    # -- moving data ------------------------------------------------------------------------------
    def op_Concat(self, node, ins, attrs):
        if any(isinstance(v, np.ndarray) for v in ins):
            raise self.refuse(node, "concatenating a constant with computed tensors does not convert")
        axis = int(attrs["axis"])
        if all(v.rank == 4 for v in ins) and any(v.nhwc for v in ins):
            vs = [self.nhwc(v, node) for v in ins]
        else:
            vs = [self.plain(v) for v in ins]
        k = self.axis(vs[0], axis)
        if k == 0:
            raise self.refuse(node, "a concatenation along the batch axis")
        layer = kl.Concatenate(axis=k, name=self._name(node.name or node.output[0]))
        return [_Value(layer([v.tensor for v in vs]), nhwc=vs[0].nhwc)]

    def _slices(self, node, x: _Value, specs) -> _Value:
        """``specs``: (ONNX axis, start, stop, step) -> one Slice layer on ``x`` as held."""
        shape = x.onnx_shape
        mapped = []
        for axis, start, stop, step in specs:
            axis = axis + len(shape) if axis < 0 else axis
            if axis == 0:
                raise self.refuse(node, "a slice of the batch axis")
            start, stop, step = slice(int(start), int(stop), int(step)).indices(shape[axis])
            mapped.append((self.axis(x, axis), start, stop, step))
        return _Value(Slice(mapped, name=self._name(node.name or node.output[0]))(x.tensor), nhwc=x.nhwc)

    def op_Slice(self, node, ins, attrs):
        x = ins[0]
        starts = self.const(node, ins[1], "starts")
        ends = self.const(node, ins[2], "ends")
        axes = self.const(node, ins[3], "axes") if len(ins) > 3 and ins[3] is not None else range(len(starts))
        steps = self.const(node, ins[4], "steps") if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
        if any(int(s) < 0 for s in steps):
            raise self.refuse(node, "a slice with a negative step")
        big = np.iinfo(np.int64).max
        specs = [(int(a), int(s), min(int(e), big), int(t)) for a, s, e, t in zip(axes, starts, ends, steps)]
        return [self._slices(node, x, specs)]

    def op_Split(self, node, ins, attrs):
        x = ins[0]
        axis = int(attrs.get("axis", 0))
        size = x.onnx_shape[axis]
        if len(ins) > 1 and ins[1] is not None:
            parts = [int(p) for p in self.const(node, ins[1], "split sizes")]
        elif "split" in attrs:
            parts = [int(p) for p in attrs["split"]]
        else:
            n = len(node.output)
            parts = [-(-size // n)] * (n - 1)
            parts.append(size - sum(parts))
        outs, start = [], 0
        for part in parts:
            outs.append(self._slices(node, x, [(axis, start, start + part, 1)]))
            start += part
        return outs

    def _reshaped(self, node, x: _Value, shape: list[int]) -> _Value:
        if shape[0] != 1:
            raise self.refuse(node, f"a reshape to {shape} changes the batch dimension")
        x = self.plain(x)
        return _Value(kl.Reshape(tuple(shape[1:]), name=self._name(node.name or node.output[0]))(x.tensor))

    def op_Reshape(self, node, ins, attrs):
        x = ins[0]
        target = [int(d) for d in self.const(node, ins[1], "shape")]
        source = x.onnx_shape
        if not attrs.get("allowzero", 0):
            target = [source[i] if d == 0 else d for i, d in enumerate(target)]
        if -1 in target:
            known = int(np.prod([d for d in target if d != -1]))
            target[target.index(-1)] = int(np.prod(source)) // max(known, 1)
        if int(np.prod(target)) != int(np.prod(source)):
            raise self.refuse(node, f"cannot reshape {source} to {target}")
        return [self._reshaped(node, x, target)]

    def op_Flatten(self, node, ins, attrs):
        x = ins[0]
        axis = int(attrs.get("axis", 1))
        shape = x.onnx_shape
        axis = axis + len(shape) if axis < 0 else axis
        return [self._reshaped(node, x, [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))])]

    def _axes(self, node, ins, attrs) -> list[int]:
        if len(ins) > 1 and ins[1] is not None:
            return [int(a) for a in self.const(node, ins[1], "axes")]
        return [int(a) for a in attrs.get("axes", [])]

    def op_Squeeze(self, node, ins, attrs):
        x = ins[0]
        shape = x.onnx_shape
        axes = [a + len(shape) if a < 0 else a for a in self._axes(node, ins, attrs)] or \
            [i for i, d in enumerate(shape) if d == 1 and i > 0]
        return [self._reshaped(node, x, [d for i, d in enumerate(shape) if i not in axes])]

    def op_Unsqueeze(self, node, ins, attrs):
        x = ins[0]
        shape = list(x.onnx_shape)
        rank = len(shape) + len(self._axes(node, ins, attrs))
        for a in sorted(a + rank if a < 0 else a for a in self._axes(node, ins, attrs)):
            shape.insert(a, 1)
        return [self._reshaped(node, x, shape)]

    def op_Transpose(self, node, ins, attrs):
        x = ins[0]
        perm = [int(p) for p in attrs.get("perm", list(range(len(x.onnx_shape)))[::-1])]
        if perm[0] != 0:
            raise self.refuse(node, f"a transpose {perm} that moves the batch axis")
        if x.nhwc and perm == [0, 2, 3, 1]:
            return [_Value(x.tensor)]  # already held in that order
        x = self.plain(x)
        if perm == list(range(len(perm))):
            return [x]
        return [_Value(kl.Permute(tuple(perm[1:]), name=self._name(node.name or node.output[0]))(x.tensor))]

    def op_Gemm(self, node, ins, attrs):
        x = self.plain(ins[0])
        if x.rank != 2 or attrs.get("transA", 0):
            raise self.refuse(node, "a Gemm on anything but a [1, N] input")
        w = self.const(node, ins[1], "weight").astype(np.float32) * float(attrs.get("alpha", 1.0))
        w = w.T if attrs.get("transB", 0) else w
        b = ins[2] if len(ins) > 2 and ins[2] is not None else None
        b = None if b is None else np.broadcast_to(self.const(node, b, "bias") * float(attrs.get("beta", 1.0)),
                                                   (w.shape[1],)).astype(np.float32)
        layer = kl.Dense(w.shape[1], use_bias=b is not None, name=self._name(node.name or node.output[0]))
        y = layer(x.tensor)
        layer.set_weights([w] + ([b] if b is not None else []))
        return [_Value(y)]

    def op_MatMul(self, node, ins, attrs):
        if not isinstance(ins[1], np.ndarray) or ins[1].ndim != 2:
            raise self.refuse(node, "a product of two computed tensors does not convert (only by a constant matrix)")
        x = self.plain(ins[0])
        w = ins[1].astype(np.float32)
        layer = kl.Dense(w.shape[1], use_bias=False, name=self._name(node.name or node.output[0]))
        y = layer(x.tensor)
        layer.set_weights([w])
        return [_Value(y)]
