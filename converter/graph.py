"""Where a Keras functional model can be cut in two, with one tensor or a few.

Walking the layers in a topological order, the tensors alive after a layer are those computed so
far that a later layer still reads. Where at most ``max_tensors`` are alive, the model can be cut
there: the device computes everything so far and sends them, and the edge needs nothing else. With
one tensor (a layer L such that, of L and all its ancestors, only L feeds a layer outside that set)
this is the classic cut: in a residual block only the block's output qualifies. A feature pyramid
keeps two or three levels alive through its neck and head: cuts of several tensors go there. A cut
of several tensors is dropped when another cut reached without any convolution or dense layer in
between sends no more bytes in no more tensors (the two halves of a residual block before their add).

Three more rules. No cut between an op and what TFLite fuses into it (convolution or
dense | batch-norm | activation, and a residual add | activation): the cut goes after the
activation, so no head or tail loses a fusion and a residual block is one cut, not two. No cut at a model output, since the edge would have to hand it back. And
no cut after a layer that only moves or pads data (padding, reshape, flatten, dropout):
the cut before it sends the same or less.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers as kl

from common.keras_model import ModelError

from .features import tensor_bytes

#: Layers TFLite folds into the op before them.
FUSABLE_FOLLOWERS = (kl.BatchNormalization, kl.ReLU, kl.LeakyReLU, kl.Activation, kl.ELU, kl.PReLU, kl.Softmax)
#: Layers that only move or pad data: a cut after one sends what the cut before it sends, or more.
DATA_MOVEMENT = (kl.ZeroPadding1D, kl.ZeroPadding2D, kl.ZeroPadding3D, kl.Cropping1D, kl.Cropping2D, kl.Cropping3D,
                 kl.Reshape, kl.Flatten, kl.Permute, kl.Dropout, kl.SpatialDropout1D, kl.SpatialDropout2D)
#: Ops that absorb such followers.
FUSING_OPS = (kl.Conv1D, kl.Conv2D, kl.Conv3D, kl.DepthwiseConv2D, kl.SeparableConv2D, kl.Conv2DTranspose,
              kl.Dense, kl.BatchNormalization)
#: Element-wise ops that absorb an activation after them (TFLite's fused activation on ADD, MUL, SUB).
FUSING_ELEMENTWISE = (kl.Add, kl.Multiply, kl.Subtract)
ACTIVATIONS = (kl.ReLU, kl.LeakyReLU, kl.Activation, kl.ELU, kl.PReLU)
#: Layers with no TFLite built-in form that can be cut (a detector has none).
RECURRENT = (kl.RNN, kl.Bidirectional, kl.LSTM, kl.GRU, kl.SimpleRNN, kl.ConvLSTM2D)


@dataclass(frozen=True)
class Graph:
    """The layer DAG of a functional model with one image input."""

    model: keras.Model
    order: list  # layers in topological order, the input layer first
    parents: dict  # layer name -> names of the layers whose outputs it consumes
    children: dict  # layer name -> names of the layers consuming its output
    output_names: frozenset  # the layers whose outputs are the model's

    @property
    def input_layer(self):
        return self.order[0]

    def ancestors(self, name: str) -> set[str]:
        """``name`` and every layer it depends on."""
        seen, todo = {name}, [name]
        while todo:
            for p in self.parents[todo.pop()]:
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen


def as_functional(model) -> keras.Model:
    """A Functional model, or a ModelError saying why this one cannot be split."""
    from keras.src.models.functional import Functional
    from keras.src.models.sequential import Sequential

    if isinstance(model, Sequential):
        return _sequential_as_functional(model)
    if not isinstance(model, Functional):
        raise ModelError(f"{type(model).__name__} is a subclassed Keras model: only functional (or Sequential) "
                         "models expose the layer graph needed to split them")
    return model


def _sequential_as_functional(model) -> keras.Model:
    """The Sequential model rebuilt as a functional one with fresh layers, each applied once. A
    Sequential model's own layers carry a node per build (a reloaded one several), which would read
    as shared weights."""
    if not model.built or not model.inputs:
        raise ModelError("the Sequential model has no defined input; give it a keras.Input first")
    x = inputs = keras.Input(shape=tuple(model.inputs[0].shape[1:]), name=model.inputs[0].name or None)
    for layer in model.layers:
        fresh = layer.__class__.from_config(layer.get_config())
        x = fresh(x)
        fresh.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=model.name)


def _tensors(value) -> list:
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return [value]


def build_graph(model: keras.Model) -> Graph:
    model = as_functional(model)
    if len(model.inputs) != 1:
        raise ModelError(f"the model has {len(model.inputs)} inputs; the converter needs exactly one image input")
    parents: dict[str, list[str]] = {}
    for layer in model.layers:
        if isinstance(layer, kl.InputLayer):
            parents[layer.name] = []
            continue
        if len(layer._inbound_nodes) != 1:
            raise ModelError(f"layer '{layer.name}' is used {len(layer._inbound_nodes)} times (shared weights); "
                             "the converter needs each layer applied once")
        parents[layer.name] = list(dict.fromkeys(t._keras_history.operation.name for t in _tensors(layer.input)))
    children: dict[str, list[str]] = {name: [] for name in parents}
    for name, ps in parents.items():
        for p in ps:
            children[p].append(name)
    by_name = {layer.name: layer for layer in model.layers}
    order, placed = [], set()
    for n in by_name:  # the model's own order where it is topological: each branch as it was built
        if any(p not in placed for p in parents[n]) or (not order and parents[n]):
            order, placed = [], set()
            break
        order.append(by_name[n])
        placed.add(n)
    while len(order) < len(by_name):  # else Kahn's algorithm, stable in the model's own layer order
        ready = [n for n in by_name if n not in placed and all(p in placed for p in parents[n])]
        if not ready:
            raise ModelError("the layer graph has a cycle")
        for n in ready:
            order.append(by_name[n])
            placed.add(n)
    outputs = frozenset(t._keras_history.operation.name for t in model.outputs)
    return Graph(model=model, order=order, parents=parents, children=children, output_names=outputs)


def _gated(graph: Graph, name: str) -> bool:
    """Whether ``name`` feeds a gate and the product of itself and that gate, and nothing else: SiLU
    (x * sigmoid(x)) as ONNX and TFLite spell it. A cut before the product sends as much."""
    from common.keras_model import Elementwise

    kids = [graph.model.get_layer(k) for k in graph.children[name]]
    if len(kids) != 2:
        return False
    gates = [k for k in kids if isinstance(k, (kl.Activation, Elementwise)) and len(graph.children[k.name]) == 1]
    products = [k for k in kids if isinstance(k, kl.Multiply)]
    return (len(gates) == 1 and len(products) == 1 and graph.children[gates[0].name] == [products[0].name]
            and sorted(graph.parents[products[0].name]) == sorted([name, gates[0].name]))


def _affine(layer) -> bool:
    """An element-wise op with a constant: an imported graph's unfolded batch norm (scale, shift), which
    TFLite folds into the op before it, as it does a Keras batch norm."""
    from common.keras_model import Binary

    return isinstance(layer, Binary) and layer.shape is not None and layer.op in ("add", "subtract", "multiply",
                                                                                     "divide")


def _sendable(graph: Graph, name: str) -> bool:
    """Whether a cut may send ``name``'s output: not a model output (the edge would hand it back), one
    tensor, not mere data movement (the cut before it sends as much), not between an op and what
    TFLite fuses into it, not the input of a SiLU."""
    layer = graph.model.get_layer(name)
    if name in graph.output_names or len(_tensors(layer.output)) != 1 or isinstance(layer, DATA_MOVEMENT):
        return False
    kids = graph.children[name]
    if len(kids) == 1:
        child = graph.model.get_layer(kids[0])
        fusing, follower = isinstance(layer, FUSING_OPS) or _affine(layer), isinstance(child, FUSABLE_FOLLOWERS)
        if fusing and (follower or _affine(child)) and not (
                isinstance(layer, kl.BatchNormalization) and isinstance(child, kl.BatchNormalization)):
            return False  # TFLite fuses the follower into this op: cut after it instead
        if isinstance(layer, FUSING_ELEMENTWISE) and isinstance(child, ACTIVATIONS):
            return False  # a residual add and its activation: one op for TFLite, one cut after both
    return not _gated(graph, name)  # x * sigmoid(x) (SiLU, hard-swish): one activation, cut after the product


def cut_points(graph: Graph, max_tensors: int = 3, cost=None) -> list[list[str]]:
    """Every cut, in order from the input (input and output ends excluded), as the names of the layers
    whose outputs it sends (at most ``max_tensors``). ``cost(layer) -> conv + dense MACs`` drops cuts of
    several tensors that another cut, no convolution or dense layer away, beats or equals."""
    order = [layer.name for layer in graph.order]
    position = {name: i for i, name in enumerate(order)}
    last_read = {name: max((position[c] for c in graph.children[name]), default=-1) for name in order}
    candidates = []  # (position, alive names)
    for i, name in enumerate(order[1:], 1):
        if name in graph.output_names:
            break  # from here on the device would hold a model output the edge needs
        alive = [n for n in order[:i + 1] if last_read[n] > i]
        if graph.input_layer.name in alive:
            continue  # the input and more: split 0 sends the input alone
        if 0 < len(alive) <= max_tensors and all(_sendable(graph, n) for n in alive):
            if not candidates or candidates[-1][1] != alive:
                candidates.append((i, alive))
    if cost is None or max_tensors == 1:
        return [alive for _, alive in candidates]
    size = {name: tensor_bytes(graph.model.get_layer(name).output.shape) for _, alive in candidates for name in alive}
    heavy = np.cumsum([cost(graph.model.get_layer(n)) for n in order])
    kept = []
    for i, alive in candidates:
        if len(alive) > 1:
            mine = (sum(size[n] for n in alive), len(alive))

            def beats(j, other):  # no more bytes in no more tensors; of equals, the later one
                theirs = (sum(size[n] for n in other), len(other))
                return theirs[0] <= mine[0] and theirs[1] <= mine[1] and (theirs != mine or j > i)

            if any(beats(j, other) for j, other in candidates
                   if j != i and heavy[max(j, i)] == heavy[min(j, i)]):
                continue
        kept.append(alive)
    return kept


def cut_layers(graph: Graph) -> list:
    """The layers after which the model can be cut with one tensor, in order from the input."""
    return [graph.model.get_layer(alive[0]) for alive in cut_points(graph, max_tensors=1)]
