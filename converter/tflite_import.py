"""TFLite -> Keras functional model, operator by operator, so that a TFLite detector (and a SavedModel,
converted to TFLite first) is cut, segmented and served like a Keras one. TFLite is NHWC like Keras:
weights change order, tensors do not. Read with the flatbuffer schema LiteRT ships (as fusing does).

Float32 models, and float16 weights behind DEQUANTIZE, convert exactly. A full-integer model would
be converted to a float one that differs from it by its quantisation error: it is refused with
what to do instead (convert the float model, then ``--quantize int8``).
"""

from __future__ import annotations

import re

import keras
import numpy as np
from keras import layers as kl

from common.keras_model import Elementwise, ModelError, Slice, Tile

from .imported_layers import LayerNames, clean, two_tensors, with_constant


#: Element-wise TFLite operators of two operands -> the op names of ``Binary``.
_BINARY = {"ADD": "add", "SUB": "subtract", "MUL": "multiply", "DIV": "divide", "MAXIMUM": "maximum",
           "MINIMUM": "minimum"}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def import_tflite(data: bytes, name: str | None = None) -> keras.Model:
    """A Keras functional model computing what the TFLite model ``data`` computes."""
    return _Importer(data).build(name)


class _Importer:
    def __init__(self, data: bytes) -> None:
        schema = _schema()
        try:
            self.model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        except Exception as exc:  # a truncated or corrupt flatbuffer
            raise ModelError(f"not a readable TFLite model ({type(exc).__name__}: {exc})") from None
        self.data = data
        self.schema = schema
        self.op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
        self.dtypes = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
                       schema.TensorType.INT32: np.int32, schema.TensorType.INT64: np.int64,
                       schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8,
                       schema.TensorType.INT16: np.int16}
        self._names = LayerNames("op")
        if len(self.model.subgraphs or []) != 1:
            raise ModelError(f"the TFLite model has {len(self.model.subgraphs or [])} subgraphs (control flow); "
                             "the converter takes models with one")
        self.graph = self.model.subgraphs[0]
        self.values: dict[int, object] = {}

    def _name(self, base) -> str:
        """A Keras layer name from a TFLite tensor name: the layer's scope where the name has one
        ("model/conv3_1/Conv2D" -> "conv3")."""
        base = base.decode() if isinstance(base, bytes) else str(base or "op")
        parts = [p for p in base.split(":")[0].split("/") if p]
        return self._names(re.sub(r"_\d+$", "", parts[1]) if len(parts) >= 3 else (parts[-1] if parts else "op"))

    def tensor_name(self, index: int) -> str:
        name = self.graph.tensors[index].name
        return name.decode() if isinstance(name, bytes) else str(name)

    def constant(self, index: int) -> np.ndarray | None:
        t = self.graph.tensors[index]
        buffer = self.model.buffers[t.buffer] if t.buffer < len(self.model.buffers or []) else None
        if buffer is None:
            return None
        if buffer.data is not None and len(buffer.data):
            raw = np.asarray(buffer.data, dtype=np.uint8).tobytes()
        elif getattr(buffer, "offset", 0) > 1:  # stored after the flatbuffer (models over 2 GB)
            raw = self.data[buffer.offset:buffer.offset + buffer.size]
        else:
            return None
        dtype = self.dtypes.get(t.type)
        if dtype is None:
            raise ModelError(f"TFLite tensor '{self.tensor_name(index)}' has a type the converter does not read")
        shape = [int(d) for d in (t.shape if t.shape is not None else [])]
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def refuse(self, op_name: str, index: int, why: str) -> ModelError:
        return ModelError(f"TFLite operator {index} ({op_name}, output '{self.tensor_name(self._out(index))}'): {why}")

    def _out(self, k: int) -> int:
        return int(self.graph.operators[k].outputs[0])

    # -- the graph --------------------------------------------------------------------------------
    def build(self, name: str | None) -> keras.Model:
        graph = self.graph
        inputs = [int(i) for i in graph.inputs]
        if len(inputs) != 1:
            raise ModelError(f"the TFLite model has {len(inputs)} inputs; the converter needs exactly one image input")
        source = graph.tensors[inputs[0]]
        shape = [int(d) for d in source.shape]
        if source.type != self.schema.TensorType.FLOAT32:
            raise ModelError("the TFLite model takes integer input (a full-integer model): convert the float32 "
                             "model and let ans convert --quantize int8 quantise the device's side")
        if len(shape) != 4 or shape[0] != 1:
            raise ModelError(f"the TFLite input has shape {shape}; the converter needs one NHWC image [1, H, W, C]")
        image = keras.Input(shape=tuple(shape[1:]), name=self._name(self.tensor_name(inputs[0])))
        self.values[inputs[0]] = image
        for k, op in enumerate(graph.operators):
            self.convert_op(k, op)
        outputs = []
        for i in graph.outputs:
            value = self.values.get(int(i))
            if value is None or isinstance(value, np.ndarray):
                raise ModelError(f"TFLite output '{self.tensor_name(int(i))}' does not depend on the input")
            outputs.append(value)
        model_name = clean(name or "", "tflite_model")
        return keras.Model(image, outputs if len(outputs) > 1 else outputs[0], name=model_name)

    def convert_op(self, k: int, op) -> None:
        code = self.model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        op_name = self.op_names.get(builtin, str(builtin))
        if op_name == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            hint = ("export without NMS; ANS runs NMS itself" if "NMS" in str(custom).upper() or "PostProcess" in
                    str(custom) else "re-export with TFLite built-in ops only")
            raise self.refuse(f"custom op {custom}", k, hint)
        ins = []
        for i in op.inputs if op.inputs is not None else []:
            i = int(i)
            if i < 0:
                ins.append(None)
            elif i in self.values:
                ins.append(self.values[i])
            else:
                value = self.constant(i)
                if value is None:
                    raise self.refuse(op_name, k, f"input '{self.tensor_name(i)}' is neither computed nor constant")
                ins.append(value)
        outs = [int(o) for o in op.outputs]
        if op_name == "SHAPE":
            self.values[outs[0]] = np.array([1, *[int(d) for d in ins[0].shape[1:]]], dtype=np.int32)
            return
        if all(v is None or isinstance(v, np.ndarray) for v in ins):
            self.values[outs[0]] = np.asarray(self._fold(k, op_name, op, ins))
            return
        options = op.builtinOptions
        name = self._name(self.tensor_name(outs[0]))
        if op_name in _BINARY:
            self.values[outs[0]] = self._binary(k, op_name, ins, options, name, _BINARY[op_name])[0]
            return
        handler = getattr(self, f"op_{op_name}", None)
        if handler is None:
            raise self.refuse(op_name, k, "not supported by the converter (its operators are listed in "
                                          "docs/converter.md); re-export the model without it")
        results = handler(k, op_name, ins, options, name)
        for index, value in zip(outs, results):
            self.values[index] = value

    def _fold(self, k: int, op_name: str, op, ins: list) -> np.ndarray:
        """An operator of constants (shape arithmetic, dequantized weights), evaluated now."""
        o = op.builtinOptions
        out = self.graph.tensors[self._out(k)]
        dtype = self.dtypes.get(out.type, np.float32)
        if op_name == "DEQUANTIZE":
            return self._dequantized(k, op, ins[0])
        if op_name in ("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM"):
            fn = {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "DIV": np.divide, "MAXIMUM": np.maximum,
                  "MINIMUM": np.minimum}[op_name]
            return fn(ins[0], ins[1]).astype(dtype)
        if op_name == "PACK":
            return np.stack(ins, axis=o.axis).astype(dtype)
        if op_name == "CONCATENATION":
            return np.concatenate(ins, axis=o.axis).astype(dtype)
        if op_name in ("CAST", "RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
            return np.asarray(ins[0]).astype(dtype).reshape([int(d) for d in out.shape])
        if op_name == "STRIDED_SLICE" and ins[0].ndim == 1 and not o.ellipsisMask and not o.newAxisMask:
            begin, end, step = (int(v[0]) for v in ins[1:4])
            part = ins[0][slice(None if o.beginMask & 1 else begin, None if o.endMask & 1 else end, step)]
            return (part[0] if o.shrinkAxisMask & 1 else part).astype(dtype)
        if op_name == "GATHER":
            return np.take(ins[0], ins[1], axis=o.axis).astype(dtype)
        raise self.refuse(op_name, k, "cannot evaluate it on constants; re-export with a fixed input size")

    def _dequantized(self, k: int, op, value: np.ndarray) -> np.ndarray:
        t = self.graph.tensors[int(op.inputs[0])]
        if value.dtype == np.float16:
            return value.astype(np.float32)
        q = t.quantization
        scale = np.asarray(q.scale, dtype=np.float32)
        zero = np.asarray(q.zeroPoint, dtype=np.float32)
        shape = [1] * value.ndim
        if scale.size > 1:
            shape[q.quantizedDimension] = -1
        return ((value.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)).astype(np.float32)

    def _activation(self, x, code: int, name: str):
        act = self.schema.ActivationFunctionType
        if code == act.NONE:
            return x
        if code == act.RELU:
            return kl.ReLU(name=self._name(f"{name}_relu"))(x)
        if code == act.RELU6:
            return kl.ReLU(max_value=6.0, name=self._name(f"{name}_relu6"))(x)
        if code == act.RELU_N1_TO_1:
            return Elementwise("clip", low=-1.0, high=1.0, name=self._name(f"{name}_relu1"))(x)
        if code == act.TANH:
            return kl.Activation("tanh", name=self._name(f"{name}_tanh"))(x)
        raise ModelError(f"TFLite tensor '{name}': fused activation {code} is not supported")

    def _padding(self, options) -> str:
        return "same" if options.padding == self.schema.Padding.SAME else "valid"

    def _const(self, k, op_name, value, what) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise self.refuse(op_name, k, f"its {what} must be a constant")
        return value

    # -- operators --------------------------------------------------------------------------------
    def op_CONV_2D(self, k, op_name, ins, o, name):
        w = self._const(k, op_name, ins[1], "filter").astype(np.float32)  # [out, kh, kw, in]
        b = ins[2] if len(ins) > 2 and ins[2] is not None else None
        if w.shape[3] != ins[0].shape[-1]:
            raise self.refuse(op_name, k, "a grouped convolution does not convert")
        layer = kl.Conv2D(w.shape[0], w.shape[1:3], (o.strideH, o.strideW), self._padding(o),
                          dilation_rate=(o.dilationHFactor, o.dilationWFactor), use_bias=b is not None, name=name)
        y = layer(ins[0])
        layer.set_weights([w.transpose(1, 2, 3, 0)] + ([b.astype(np.float32)] if b is not None else []))
        return [self._activation(y, o.fusedActivationFunction, name)]

    def op_DEPTHWISE_CONV_2D(self, k, op_name, ins, o, name):
        w = self._const(k, op_name, ins[1], "filter").astype(np.float32)  # [1, kh, kw, in * multiplier]
        b = ins[2] if len(ins) > 2 and ins[2] is not None else None
        cin = int(ins[0].shape[-1])
        mult = w.shape[3] // cin
        layer = kl.DepthwiseConv2D(w.shape[1:3], (o.strideH, o.strideW), self._padding(o), depth_multiplier=mult,
                                   dilation_rate=(o.dilationHFactor, o.dilationWFactor), use_bias=b is not None,
                                   name=name)
        y = layer(ins[0])
        layer.set_weights([w.reshape(*w.shape[1:3], cin, mult)] + ([b.astype(np.float32)] if b is not None else []))
        return [self._activation(y, o.fusedActivationFunction, name)]

    def op_FULLY_CONNECTED(self, k, op_name, ins, o, name):
        w = self._const(k, op_name, ins[1], "weights").astype(np.float32)  # [out, in]
        b = ins[2] if len(ins) > 2 and ins[2] is not None else None
        x = ins[0]
        if len(x.shape) != 2 and not o.keepNumDims:
            x = kl.Reshape((w.shape[1],), name=self._name(f"{name}_flat"))(x)
        layer = kl.Dense(w.shape[0], use_bias=b is not None, name=name)
        y = layer(x)
        layer.set_weights([w.T] + ([b.astype(np.float32)] if b is not None else []))
        return [self._activation(y, o.fusedActivationFunction, name)]

    def _pool(self, ins, o, name, cls):
        y = cls((o.filterHeight, o.filterWidth), (o.strideH, o.strideW), self._padding(o), name=name)(ins[0])
        return [self._activation(y, o.fusedActivationFunction, name)]

    def op_MAX_POOL_2D(self, k, op_name, ins, o, name):
        return self._pool(ins, o, name, kl.MaxPooling2D)

    def op_AVERAGE_POOL_2D(self, k, op_name, ins, o, name):
        return self._pool(ins, o, name, kl.AveragePooling2D)

    def _binary(self, k, op_name, ins, o, name, op):
        a, b = ins
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            reverse = isinstance(a, np.ndarray)
            x, c = (b, a) if reverse else (a, b)
            c = np.asarray(c, dtype=np.float32)
            rank = len(x.shape)
            c = c.reshape((1,) * (rank - c.ndim) + c.shape)[0] if c.ndim <= rank else None
            if c is None:
                raise self.refuse(op_name, k, "a constant wider than the tensor")
            y = with_constant(op, x, c, reverse, name)
        else:
            y = two_tensors(op, a, b, name)
        return [self._activation(y, getattr(o, "fusedActivationFunction", 0) if o is not None else 0, name)]

    def op_LOGISTIC(self, k, op_name, ins, o, name):
        return [kl.Activation("sigmoid", name=name)(ins[0])]

    def op_TANH(self, k, op_name, ins, o, name):
        return [kl.Activation("tanh", name=name)(ins[0])]

    def op_RELU(self, k, op_name, ins, o, name):
        return [kl.ReLU(name=name)(ins[0])]

    def op_RELU6(self, k, op_name, ins, o, name):
        return [kl.ReLU(max_value=6.0, name=name)(ins[0])]

    def op_LEAKY_RELU(self, k, op_name, ins, o, name):
        return [kl.LeakyReLU(negative_slope=float(o.alpha), name=name)(ins[0])]

    def op_HARD_SWISH(self, k, op_name, ins, o, name):
        gate = Elementwise("hard_sigmoid", alpha=1 / 6, beta=0.5, name=self._name(f"{name}_gate"))(ins[0])
        return [kl.Multiply(name=name)([ins[0], gate])]

    def op_EXP(self, k, op_name, ins, o, name):
        return [Elementwise("exp", name=name)(ins[0])]

    def op_SOFTMAX(self, k, op_name, ins, o, name):
        if float(o.beta) != 1.0:
            raise self.refuse(op_name, k, "a softmax with beta other than 1")
        return [kl.Softmax(axis=-1, name=name)(ins[0])]

    def op_CONCATENATION(self, k, op_name, ins, o, name):
        if any(isinstance(v, np.ndarray) for v in ins):
            raise self.refuse(op_name, k, "concatenating a constant with computed tensors does not convert")
        axis = o.axis + len(ins[0].shape) if o.axis < 0 else o.axis
        y = kl.Concatenate(axis=axis, name=name)(list(ins))
        return [self._activation(y, o.fusedActivationFunction, name)]

    def _reshaped(self, k, op_name, x, shape: list[int], name):
        size = int(np.prod([int(d) for d in x.shape[1:]]))
        if -1 in shape:
            known = int(np.prod([d for d in shape if d != -1]))
            shape[shape.index(-1)] = size // max(known, 1)
        if shape[0] != 1 or int(np.prod(shape)) != size:
            raise self.refuse(op_name, k, f"a reshape of {[1, *x.shape[1:]]} to {shape}")
        return [kl.Reshape(tuple(shape[1:]), name=name)(x)]

    def op_RESHAPE(self, k, op_name, ins, o, name):
        # The recorded output shape can be wrong where the model was exported with a dynamic batch:
        # the shape operand (folded) says what the reshape does.
        if len(ins) > 1 and isinstance(ins[1], np.ndarray):
            shape = [int(d) for d in ins[1]]
        elif o is not None and o.newShape is not None:
            shape = [int(d) for d in o.newShape]
        else:
            shape = [int(d) for d in self.graph.tensors[self._out(k)].shape]
        return self._reshaped(k, op_name, ins[0], shape, name)

    def op_SQUEEZE(self, k, op_name, ins, o, name):
        shape = [1, *[int(d) for d in ins[0].shape[1:]]]
        dims = [d % len(shape) for d in (o.squeezeDims if o.squeezeDims is not None else [])] or \
            [i for i, d in enumerate(shape) if d == 1 and i > 0]
        return self._reshaped(k, op_name, ins[0], [d for i, d in enumerate(shape) if i not in dims], name)

    def op_EXPAND_DIMS(self, k, op_name, ins, o, name):
        shape = [1, *[int(d) for d in ins[0].shape[1:]]]
        axis = int(np.ravel(self._const(k, op_name, ins[1], "axis"))[0])
        shape.insert(axis % (len(shape) + 1), 1)
        return self._reshaped(k, op_name, ins[0], shape, name)

    def op_TRANSPOSE(self, k, op_name, ins, o, name):
        perm = [int(p) for p in self._const(k, op_name, ins[1], "permutation")]
        if perm[0] != 0:
            raise self.refuse(op_name, k, f"a transpose {perm} that moves the batch axis")
        return [kl.Permute(tuple(perm[1:]), name=name)(ins[0])]

    def op_TILE(self, k, op_name, ins, o, name):
        multiples = [int(m) for m in self._const(k, op_name, ins[1], "multiples")]
        if multiples[0] != 1:
            raise self.refuse(op_name, k, "a tile along the batch axis")
        return [Tile(multiples[1:], name=name)(ins[0])]

    def op_PAD(self, k, op_name, ins, o, name):
        pads = self._const(k, op_name, ins[1], "paddings").astype(int)
        if len(pads) != 4 or pads[0].any() or pads[3].any():
            raise self.refuse(op_name, k, "padding other than height and width of an image tensor")
        return [kl.ZeroPadding2D((tuple(pads[1]), tuple(pads[2])), name=name)(ins[0])]

    def op_MEAN(self, k, op_name, ins, o, name):
        axes = sorted(int(a) % 4 for a in np.ravel(self._const(k, op_name, ins[1], "axes")))
        if axes != [1, 2] or len(ins[0].shape) != 4:
            raise self.refuse(op_name, k, "a mean over axes other than height and width")
        return [kl.GlobalAveragePooling2D(keepdims=bool(o.keepDims), name=name)(ins[0])]

    def _resize(self, k, op_name, ins, o, name, interpolation):
        size = self._const(k, op_name, ins[1], "size")
        h, w = (int(d) for d in ins[0].shape[1:3])
        factors = (int(size[0]) // h, int(size[1]) // w)
        if factors[0] * h != size[0] or factors[1] * w != size[1] or o.alignCorners:
            raise self.refuse(op_name, k, "only whole-number upsampling without align_corners converts")
        if interpolation == "bilinear" and not o.halfPixelCenters:
            raise self.refuse(op_name, k, "bilinear resizing without half-pixel centres does not convert")
        return [kl.UpSampling2D(factors, interpolation=interpolation, name=name)(ins[0])]

    def op_RESIZE_NEAREST_NEIGHBOR(self, k, op_name, ins, o, name):
        return self._resize(k, op_name, ins, o, name, "nearest")

    def op_RESIZE_BILINEAR(self, k, op_name, ins, o, name):
        return self._resize(k, op_name, ins, o, name, "bilinear")

    def op_STRIDED_SLICE(self, k, op_name, ins, o, name):
        begin, end, strides = (self._const(k, op_name, v, "bounds").astype(int) for v in ins[1:4])
        if o.ellipsisMask or o.newAxisMask or o.shrinkAxisMask or (strides <= 0).any():
            raise self.refuse(op_name, k, "a strided slice with ellipsis, new or shrunk axes, or negative steps")
        shape = [1, *[int(d) for d in ins[0].shape[1:]]]
        specs = []
        for axis in range(len(begin)):
            start = None if o.beginMask >> axis & 1 else int(begin[axis])
            stop = None if o.endMask >> axis & 1 else int(end[axis])
            start, stop, step = slice(start, stop, int(strides[axis])).indices(shape[axis])
            if (start, stop, step) != (0, shape[axis], 1):
                if axis == 0:
                    raise self.refuse(op_name, k, "a slice of the batch axis")
                specs.append((axis, start, stop, step))
        return [Slice(specs, name=name)(ins[0])]

    def _split(self, k, op_name, x, axis, sizes, name):
        axis = axis + len(x.shape) if axis < 0 else axis
        outs, start = [], 0
        for size in sizes:
            outs.append(Slice([(axis, start, start + size, 1)], name=self._name(f"{name}_part"))(x))
            start += size
        return outs

    def op_SPLIT(self, k, op_name, ins, o, name):
        axis, x = int(self._const(k, op_name, ins[0], "axis")), ins[1]
        n = int(o.numSplits)
        return self._split(k, op_name, x, axis, [int(x.shape[axis]) // n] * n, name)

    def op_SPLIT_V(self, k, op_name, ins, o, name):
        x, sizes = ins[0], [int(s) for s in self._const(k, op_name, ins[1], "sizes")]
        axis = int(self._const(k, op_name, ins[2], "axis"))
        if -1 in sizes:
            sizes[sizes.index(-1)] = int(x.shape[axis]) - (sum(sizes) + 1)
        return self._split(k, op_name, x, axis, sizes, name)

    def op_DEQUANTIZE(self, k, op_name, ins, o, name):
        raise self.refuse(op_name, k, "dequantizing a computed tensor (an integer model): convert the float32 "
                                      "model and use --quantize int8")

    def op_QUANTIZE(self, k, op_name, ins, o, name):
        return self.op_DEQUANTIZE(k, op_name, ins, o, name)
