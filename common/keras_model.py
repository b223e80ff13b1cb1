"""The Keras side of the bundle contract: the layers a bundle's edge model may use beyond Keras'
own (registered on import, so that loading finds them), loading such a model, and a split's
tail. Needs Keras: the edge and the converter import it, the device never does.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers as kl
from keras import ops

from .errors import ConfigurationError
from .model_files import model_file_problem


class ModelError(ConfigurationError):
    """A model that cannot be loaded or split, with the reason."""


@keras.saving.register_keras_serializable(package="ans")
class ChannelGroup(kl.Layer):
    """Darknet's grouped route: channel group ``group_id`` of ``groups`` equal groups."""

    def __init__(self, groups: int, group_id: int, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.group_id = groups, group_id

    def call(self, x):
        size = x.shape[-1] // self.groups
        return x[..., self.group_id * size:(self.group_id + 1) * size]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.groups)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "group_id": self.group_id}


@keras.saving.register_keras_serializable(package="ans")
class Slice(kl.Layer):
    """A strided slice along some axes (ONNX Slice and Split): ``specs`` lists (axis, start, stop, step)
    with the axis counted with the batch, bounds already clamped to the input."""

    def __init__(self, specs: list, **kwargs):
        super().__init__(**kwargs)
        self.specs = [tuple(int(v) for v in spec) for spec in specs]

    def call(self, x):
        index = [slice(None)] * len(x.shape)
        for axis, start, stop, step in self.specs:
            index[axis] = slice(start, stop, step)
        return x[tuple(index)]

    def get_config(self):
        return {**super().get_config(), "specs": [list(s) for s in self.specs]}


@keras.saving.register_keras_serializable(package="ans")
class Tile(kl.Layer):
    """Repeats the tensor ``multiples[i]`` times along each axis but the batch (how TFLite spells a
    nearest-neighbour upsampling: reshape, tile, reshape)."""

    def __init__(self, multiples: list, **kwargs):
        super().__init__(**kwargs)
        self.multiples = [int(m) for m in multiples]

    def call(self, x):
        return ops.tile(x, [1, *self.multiples])

    def get_config(self):
        return {**super().get_config(), "multiples": self.multiples}


#: What ``Elementwise`` and ``Binary`` may compute: names, never code, so that loading stays safe.
UNARY = {
    "exp": ops.exp, "log": ops.log, "sqrt": ops.sqrt, "abs": ops.abs, "negative": ops.negative,
    "tanh": ops.tanh, "sigmoid": ops.sigmoid, "floor": ops.floor, "ceil": ops.ceil, "erf": ops.erf,
}
BINARY = {"add": ops.add, "subtract": ops.subtract, "multiply": ops.multiply, "divide": ops.divide,
          "maximum": ops.maximum, "minimum": ops.minimum, "power": ops.power}


@keras.saving.register_keras_serializable(package="ans")
class Elementwise(kl.Layer):
    """A unary op by name (``UNARY``), or ``clip`` to [low, high], or ``hard_sigmoid``
    clip(alpha * x + beta, 0, 1): what an imported graph uses beyond Keras' activation layers."""

    def __init__(self, op: str, low: float = 0.0, high: float = 0.0, alpha: float = 0.0, beta: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        if op not in UNARY and op not in ("clip", "hard_sigmoid"):
            raise ValueError(f"unknown element-wise op {op!r}")
        self.op, self.low, self.high, self.alpha, self.beta = op, float(low), float(high), float(alpha), float(beta)

    def call(self, x):
        if self.op == "clip":
            return ops.clip(x, self.low, self.high)
        if self.op == "hard_sigmoid":
            return ops.clip(x * self.alpha + self.beta, 0.0, 1.0)
        return UNARY[self.op](x)

    def get_config(self):
        return {**super().get_config(), "op": self.op, "low": self.low, "high": self.high, "alpha": self.alpha,
                "beta": self.beta}


@keras.saving.register_keras_serializable(package="ans")
class Binary(kl.Layer):
    """A broadcasting binary op by name (``BINARY``) on two tensors, or on one tensor and a constant
    held as a weight of ``shape`` (``reverse``: the constant is the left operand)."""

    def __init__(self, op: str, shape: list | None = None, reverse: bool = False, **kwargs):
        super().__init__(**kwargs)
        if op not in BINARY:
            raise ValueError(f"unknown binary op {op!r}")
        self.op, self.reverse = op, bool(reverse)
        self.shape = None if shape is None else [int(d) for d in shape]
        if self.shape is not None:
            self.value = self.add_weight(shape=tuple(self.shape), initializer="zeros", trainable=False, name="value")

    def call(self, inputs):
        a, b = (inputs, self.value) if self.shape is not None else inputs
        return BINARY[self.op](b, a) if self.reverse else BINARY[self.op](a, b)

    def get_config(self):
        return {**super().get_config(), "op": self.op, "shape": self.shape, "reverse": self.reverse}


def load_keras_model(path: str | Path):
    """Load a ``.keras`` or ``.h5`` model (a user's, or a bundle's edge model), with a clear error when it
    cannot be. Only the layers registered here may appear beyond Keras' own (``safe_mode``)."""
    path = Path(path)
    problem = model_file_problem(path)
    if problem:
        raise ModelError(problem)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file; name the file and the cause
        lambdas = _lambda_layers(path) if "Lambda" in str(exc) else []
        if lambdas:
            raise ModelError(f"{path}: layer '{lambdas[0]}' is a Lambda layer (Python code stored in the model "
                             "file, which ANS never runs): replace the Lambda layer by a built-in layer or a "
                             "registered one (keras.saving.register_keras_serializable)") from None
        raise ModelError(f"{path}: cannot load the Keras model: {str(exc).splitlines()[0]}") from None


def _lambda_layers(path: Path) -> list[str]:
    """Names of the Lambda layers in a .keras file's configuration."""
    import json
    import zipfile

    found = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                found.append(str(node.get("config", {}).get("name", "?")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    try:
        with zipfile.ZipFile(path) as archive:
            walk(json.loads(archive.read("config.json")))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return []
    return found


def tail_model(model: keras.Model, names: list[str]) -> keras.Model:
    """What the edge runs for a split: from the outputs of the layers ``names`` (what the split
    sends, in its order) to the model's outputs, weights shared with ``model``. Cutting at the
    input is the whole model."""
    if names == [model.input._keras_history.operation.name]:
        return model
    inputs = [model.get_layer(n).output for n in names]
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], model.outputs, name=f"tail_{names[-1]}")
