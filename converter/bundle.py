"""Turn a Keras detector into a model bundle: the model as consecutive TFLite segments between its
cut points (the device's side, every weight stored once), the edge's tail model, and
``manifest.json``.

The bundle is written into a temporary folder beside the target and renamed into place
only when complete, so a failure never leaves a half-written bundle. Re-running on an
unchanged model with the same settings finds the bundle up to date and rewrites nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.bundle import (BundleError, Decoding, FileRef, Manifest, ModelInfo, Preprocessing, Segment, Split,
                           TensorInfo, read_manifest, sha256_file)
from common.fd_capture import captured
from mqtt.codec import CODECS, payload_bytes

from .features import layer_cost, tensor_bytes
from .graph import ModelError, build_graph, cut_layers

TAIL_FILE = "tails/model.keras"


def _unsupported() -> tuple:
    from keras import layers as kl

    return (kl.RNN, kl.Bidirectional, kl.LSTM, kl.GRU, kl.SimpleRNN, kl.ConvLSTM2D)


def content_hash(model) -> str:
    """sha256 of the architecture and every weight, in order."""
    h = hashlib.sha256(model.to_json().encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def to_tflite(model, calibration: np.ndarray | None = None) -> bytes:
    """Convert with LiteRT built-in ops only (what a device interpreter runs), batch 1. With
    ``calibration`` (inputs of ``model``, one per row), full-integer int8 weights and arithmetic
    inside, ranges taken from those inputs; input and output stay float32 either way, so int8
    segments chain and feed the codecs like float ones."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if calibration is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([row[None].astype(np.float32)] for row in calibration)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:  # the converter prints its progress from C++ and warns from Python: neither is for the user
        with captured(1, 2), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return conv.convert()
    except Exception as exc:
        raise ModelError(tflite_failure(model.name, str(exc))) from None


def tflite_failure(name: str, message: str) -> str:
    """One line out of the TFLite converter's MLIR diagnostics: the TensorFlow op and the layer it is in."""
    op = re.search(r"'(tf\.\w+)' op", message)
    scope = re.search(r'"([^"/]+)/([^"/]+)/', message)
    layer = re.sub(r"_\d+$", "", scope.group(2)) if scope else None
    where = f" in layer '{layer}'" if layer else ""
    if op:
        return (f"'{name}': TensorFlow op {op.group(1)}{where} has no TFLite built-in equivalent; replace that "
                "layer by standard convolution, pooling, element-wise and reshaping layers")
    return f"'{name}' does not convert to TFLite built-in ops{where}: {message.strip().splitlines()[0][:200]}"


def output_order(tflite: bytes, model) -> list[int]:
    """Where each of ``model``'s outputs is among the TFLite model's output tensors: matched by
    running both on the same random input (TFLite may reorder a multi-output model's outputs)."""
    from ai_edge_litert.interpreter import Interpreter

    with captured(2):  # LiteRT's note that it made an XNNPACK delegate
        it = Interpreter(model_content=tflite)
        it.allocate_tensors()
    x = np.random.default_rng(0).random([1, *[int(d) for d in model.input.shape[1:]]], dtype=np.float32)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    got = [it.get_tensor(d["index"]) for d in it.get_output_details()]
    want = [np.asarray(t) for t in (model(x, training=False) if len(model.outputs) > 1 else [model(x, training=False)])]
    order = []
    for w in want:
        errors = [float(np.max(np.abs(g - w))) if g.shape == w.shape and k not in order else np.inf
                  for k, g in enumerate(got)]
        order.append(int(np.argmin(errors)))
    if sorted(order) != list(range(len(got))) or len(got) != len(want):
        raise ModelError(f"'{model.name}': cannot match its TFLite outputs to the model's")
    return order


def _tensor(t, name: str) -> TensorInfo:
    return TensorInfo(name=name, shape=[1, *[int(d) for d in t.shape[1:]]], dtype=str(t.dtype))


def _reusable(out: Path, info: ModelInfo, splits_meta: list[dict], precision: str) -> Manifest | None:
    """The bundle already in ``out``, if it is this model with these settings and its files are intact."""
    try:
        old = read_manifest(out)
    except BundleError:
        return None
    if any(segment.precision != precision for segment in old.segments):
        return None
    described = [{k: v for k, v in dataclasses.asdict(s).items() if k != "tail"} for s in old.splits]
    if _plain(old.model) != _plain(info) or _plain(described) != _plain(splits_meta):
        return None
    refs = [s.file for s in old.segments] + [s.tail for s in old.splits if s.tail is not None]
    intact = all((out / r.path).is_file() and sha256_file(out / r.path) == r.sha256 for r in refs)
    return old if intact else None


def plan_splits(model) -> tuple[object, list, list[dict]]:
    """The functional model, its cut layers, and every split's description (all but file paths)."""
    graph = build_graph(model)
    model = graph.model
    for layer in graph.order:
        if isinstance(layer, _unsupported()):
            raise ModelError(f"layer '{layer.name}' ({type(layer).__name__}): recurrent layers have no TFLite "
                             "built-in form that can be cut; a detector has none, remove it")
    cuts = cut_layers(graph)
    if not cuts:
        raise ModelError(f"'{model.name}' has no layer boundary where one tensor separates the input from the "
                         "outputs: there is nothing to split")
    costs = {layer.name: layer_cost(layer).vector() for layer in graph.order}
    total = sum(costs.values())
    names = [graph.input_layer.name] + [c.name for c in cuts] + [None]
    splits_meta = []
    for i, cut in enumerate(names):
        if i == 0:
            on_device, shape = np.zeros_like(total), [1, *[int(d) for d in model.input.shape[1:]]]
        elif cut is None:
            on_device, shape = total, []
        else:
            on_device = sum(costs[n] for n in graph.ancestors(cut))
            shape = [1, *[int(d) for d in model.get_layer(cut).output.shape[1:]]]
        nbytes = tensor_bytes(shape) if shape else 0
        splits_meta.append(dict(index=i, cut=cut, cut_shape=shape, cut_dtype="float32", transfer_bytes=nbytes,
                                codec_bytes={c: payload_bytes(shape, c) if shape else 0 for c in CODECS},
                                context=[*(total - on_device).tolist(), 8.0 * nbytes],
                                front_macs=int(on_device[0] + on_device[2] + on_device[4])))
    return model, cuts, splits_meta


def convert(model, out: str | Path, *, name: str | None = None, preprocessing: Preprocessing | None = None,
            decoding: Decoding | None = None, calibration: np.ndarray | None = None, log=print,
            check: Callable[[Path], object] | None = None) -> Manifest:
    """Write the bundle of ``model`` to ``out`` (or find it there already) and return its manifest.
    ``calibration``: preprocessed images (NHWC float32) to quantize the device's segments to int8
    with; without them the segments are float32. ``check``: called with the finished bundle's folder
    before it takes ``out``'s place; what it raises leaves ``out`` as it was."""
    import keras
    import tensorflow as tf

    out = Path(out)
    model, cuts, splits_meta = plan_splits(model)
    graph_input = model.input._keras_history.operation.name
    size = tuple(int(d) for d in model.input.shape[1:3])
    info = ModelInfo(
        name=name or model.name,
        input=_tensor(model.input, graph_input),
        outputs=[_tensor(t, t._keras_history.operation.name) for t in model.outputs],
        preprocessing=preprocessing or Preprocessing(size=size),
        decoding=decoding or Decoding(),
        content_hash=content_hash(model),
    )
    precision = "float32" if calibration is None else "int8"
    existing = _reusable(out, info, splits_meta, precision)
    if existing is not None:
        log(f"{out}: already up to date")
        return existing
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise ModelError(f"{out}: cannot write the bundle there: {exc.strerror}") from None
    try:
        (tmp / "segments").mkdir()
        (tmp / "tails").mkdir()
        started = time.monotonic()
        steps = len(cuts) + 2

        def step(k: int, what: str) -> None:
            log(f"[{k}/{steps}] {time.monotonic() - started:6.1f}s  {what}")

        model.save(tmp / TAIL_FILE)
        step(1, f"edge model -> {TAIL_FILE}")
        tail = FileRef(path=TAIL_FILE, sha256=sha256_file(tmp / TAIL_FILE))
        # Segments are cut from a copy: a Keras model built from inner tensors calls its layers
        # again, which would leave the caller's model with layers applied twice.
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        bounds = [copy.input] + [copy.get_layer(c.name).output for c in cuts] + [copy.outputs]
        names = [graph_input] + [c.name for c in cuts]
        segments = []
        inputs = calibration  # what segment k reads, for its int8 ranges: the previous segment's outputs
        for k in range(1, len(bounds)):
            last = k == len(bounds) - 1
            sub = keras.Model(bounds[k - 1], bounds[k], name=f"segment_{k}")
            data = to_tflite(sub, inputs)
            if inputs is not None and not last:
                inputs = np.asarray(sub.predict(inputs, batch_size=16, verbose=0))
            rel = f"segments/segment_{k:03d}.tflite"
            (tmp / rel).write_bytes(data)
            outputs = info.outputs if last else [_tensor(cuts[k - 1].output, cuts[k - 1].name)]
            segments.append(Segment(index=k, file=FileRef(path=rel, sha256=sha256_file(tmp / rel)),
                                    input=_tensor(bounds[k - 1], names[k - 1]), outputs=outputs,
                                    output_order=output_order(data, sub), precision=precision))
            step(1 + k, f"segment {k}: {names[k - 1]} -> {'the outputs' if last else cuts[k - 1].name} "
                        f"({len(data) / 1e6:.1f} MB{', int8' if inputs is not None else ''})")
        splits = [Split(tail=None if meta["cut"] is None else tail, **meta) for meta in splits_meta]
        manifest = Manifest(model=info, segments=segments, splits=splits,
                            converter={"tensorflow": tf.__version__, "keras": keras.__version__})
        (tmp / "manifest.json").write_text(manifest.to_json())
        if check is not None:
            check(tmp)
        _swap_into_place(tmp, out)
        log(f"wrote {out} ({len(splits)} splits, {time.monotonic() - started:.1f}s)")
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` with renames, so readers see the old bundle or the new one."""
    if out.exists() and not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise ModelError(f"{out}: exists and is not a bundle; refusing to replace it")
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it private; a bundle is read by services
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _plain(value) -> object:
    """Dataclasses and tuples as the JSON they are written as, for comparing a plan with a manifest."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value))
