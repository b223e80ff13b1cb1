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
import itertools
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
from mqtt.codec import CODECS, IMAGE_CODEC, VARIABLE, payload_bytes

from .codec_calibration import RANGES_FILE, calibrate_codecs, samples_digest, write_ranges

from .features import layer_cost, tensor_bytes
from .graph import RECURRENT, ModelError, build_graph, cut_points

TAIL_FILE = "tails/model.keras"
#: The most tensors one cut sends by default (a feature pyramid's three levels).
MAX_CUT_TENSORS = 3



def content_hash(model) -> str:
    """sha256 of the architecture and every weight, in order."""
    h = hashlib.sha256(model.to_json().encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def to_tflite(model, calibration: np.ndarray | list[np.ndarray] | None = None) -> bytes:
    """Convert with LiteRT built-in ops only (what a device interpreter runs), batch 1. With
    ``calibration`` (inputs of ``model``, one per row; a list of such arrays for a model of several
    inputs), full-integer int8 weights and arithmetic inside, ranges taken from those inputs; input
    and output stay float32 either way, so int8 segments chain and feed the codecs like float ones."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if calibration is not None:
        columns = calibration if isinstance(calibration, list) else [calibration]
        if len(columns) > 1:  # the calibrator feeds the inputs in the TFLite model's order, not the model's
            order, _ = io_order(to_tflite(model), model)
            columns = [columns[order.index(j)] for j in range(len(columns))]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([c[i:i + 1].astype(np.float32) for c in columns]
                                               for i in range(len(columns[0])))
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


def io_order(tflite: bytes, model) -> tuple[list[int], list[int]]:
    """Where each of ``model``'s inputs and outputs is among the TFLite model's (TFLite may reorder
    them): found by running both on the same random inputs, of every assignment of the inputs that
    fits their shapes the one whose outputs match best."""
    from ai_edge_litert.interpreter import Interpreter

    with captured(2):  # LiteRT's note that it made an XNNPACK delegate
        it = Interpreter(model_content=tflite)
        it.allocate_tensors()
    rng = np.random.default_rng(0)
    xs = [rng.random([1, *[int(d) for d in t.shape[1:]]], dtype=np.float32) for t in model.inputs]
    want = run_keras(model, xs)
    ins, outs = it.get_input_details(), it.get_output_details()
    best = (np.inf, None, None)
    for assignment in itertools.permutations(range(len(ins))):
        if len(ins) != len(xs) or any(list(ins[j]["shape"]) != list(x.shape) for j, x in zip(assignment, xs)):
            continue
        for j, x in zip(assignment, xs):
            it.set_tensor(ins[j]["index"], x)
        it.invoke()
        got = [it.get_tensor(d["index"]) for d in outs]
        order = []
        for w in want:
            errors = [float(np.max(np.abs(g - w))) if g.shape == w.shape and k not in order else np.inf
                      for k, g in enumerate(got)]
            order.append(int(np.argmin(errors)))
        total = sum(float(np.max(np.abs(got[k] - w))) if got[k].shape == w.shape else np.inf
                    for k, w in zip(order, want))
        if total < best[0] and sorted(order) == list(range(len(got))) and len(got) == len(want):
            best = (total, list(assignment), order)
    if best[1] is None:
        raise ModelError(f"'{model.name}': cannot match its TFLite inputs and outputs to the model's")
    return best[1], best[2]


def _run_in_batches(model, inputs: list[np.ndarray], size: int = 16) -> list[np.ndarray]:
    """``model``'s outputs on ``inputs`` (one array per model input), 16 rows at a time: a direct call,
    not ``predict``, which traces a function per model and warns about it."""
    parts = [run_keras(model, [a[i:i + size] for a in inputs]) for i in range(0, len(inputs[0]), size)]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


def run_keras(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """A Keras model on one array per model input: its outputs, always a list of arrays."""
    outputs = model(inputs[0] if len(inputs) == 1 else inputs, training=False)
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def _tensor(t, name: str) -> TensorInfo:
    return TensorInfo(name=name, shape=[1, *[int(d) for d in t.shape[1:]]], dtype=str(t.dtype))


def _reusable(out: Path, info: ModelInfo, splits_meta: list[dict], precision: str,
              samples: np.ndarray | None) -> Manifest | None:
    """The bundle already in ``out``, if it is this model with these settings (and codec ranges
    measured on these samples) and its files are intact."""
    try:
        old = read_manifest(out)
    except BundleError:
        return None
    if any(segment.precision != precision for segment in old.segments) or (old.ranges is None) != (samples is None):
        return None
    if samples is not None:
        try:
            if json.loads((out / RANGES_FILE).read_text()).get("samples_sha256") != samples_digest(samples):
                return None
        except (OSError, ValueError):
            return None
    described = [{k: v for k, v in dataclasses.asdict(s).items() if k != "tail"} for s in old.splits]
    for split in described:  # measured sizes: compared through the samples they were measured on
        split["codec_bytes"] = {c: n for c, n in split["codec_bytes"].items() if c not in VARIABLE}
    if _plain(old.model) != _plain(info) or _plain(described) != _plain(splits_meta):
        return None
    refs = [s.file for s in old.segments] + [s.tail for s in old.splits if s.tail is not None]
    refs += [old.ranges] if old.ranges is not None else []
    intact = all((out / r.path).is_file() and sha256_file(out / r.path) == r.sha256 for r in refs)
    return old if intact else None


def plan_splits(model, max_tensors: int = MAX_CUT_TENSORS) -> tuple[object, list[list[str]], list[dict]]:
    """The functional model, its cuts (each the layers whose outputs it sends), and every split's
    description (all but file paths)."""
    graph = build_graph(model)
    model = graph.model
    for layer in graph.order:
        if isinstance(layer, RECURRENT):
            raise ModelError(f"layer '{layer.name}' ({type(layer).__name__}): recurrent layers have no TFLite "
                             "built-in form that can be cut; a detector has none, remove it")
    costs = {layer.name: layer_cost(layer).vector() for layer in graph.order}
    cuts = cut_points(graph, max_tensors, cost=lambda layer: costs[layer.name][0] + costs[layer.name][2])
    if not cuts:
        raise ModelError(f"'{model.name}' has no layer boundary where at most {max_tensors} tensors separate the "
                         "input from the outputs: there is nothing to split")
    total = sum(costs.values())
    graph_input = graph.input_layer.name
    splits_meta = []
    for i, cut in enumerate([[graph_input], *cuts, []]):
        if not cut:
            on_device = total
        elif i == 0:
            on_device = np.zeros_like(total)
        else:
            on_device = sum(costs[n] for n in set().union(*(graph.ancestors(c) for c in cut)))
        tensors = [dataclasses.asdict(_tensor(model.get_layer(n).output, n)) for n in cut]
        shapes = [t["shape"] for t in tensors]
        nbytes = sum(tensor_bytes(shape) for shape in shapes)
        splits_meta.append(dict(index=i, tensors=tensors, transfer_bytes=nbytes,
                                codec_bytes={c: sum(payload_bytes(shape, c) for shape in shapes)
                                             for c in (*CODECS, IMAGE_CODEC)
                                             if c not in VARIABLE and (c != IMAGE_CODEC or i == 0)},
                                context=[*(total - on_device).tolist(), 8.0 * nbytes],
                                front_macs=int(on_device[0] + on_device[2] + on_device[4])))
    return model, cuts, splits_meta


def _segment_inputs(graph, outputs: list[str], available: set[str]) -> list[str]:
    """The tensors among ``available`` that computing ``outputs`` reads, in the graph's order."""
    needed, seen, todo = set(), set(outputs), list(outputs)
    while todo:
        for p in graph.parents[todo.pop()]:
            if p in available:
                needed.add(p)
            elif p not in seen:
                seen.add(p)
                todo.append(p)
    position = {layer.name: i for i, layer in enumerate(graph.order)}
    return sorted(needed, key=lambda n: position.get(n, -1))  # the graph's order (the input first)


def convert(model, out: str | Path, *, name: str | None = None, preprocessing: Preprocessing | None = None,
            decoding: Decoding | None = None, calibration: np.ndarray | None = None,
            samples: np.ndarray | None = None, log=print, check: Callable[[Path], object] | None = None,
            max_tensors: int = MAX_CUT_TENSORS) -> Manifest:
    """Write the bundle of ``model`` to ``out`` (or find it there already) and return its manifest.
    ``calibration``: preprocessed images (NHWC float32) to quantize the device's segments to int8
    with; without them the segments are float32. ``samples``: preprocessed images like the device's
    frames, to measure the cut tensors' channel ranges for the low-bit codecs (``ranges.json``);
    without them a device can send int8 at the least. ``check``: called with the finished bundle's
    folder before it takes ``out``'s place; what it raises leaves ``out`` as it was.
    ``max_tensors``: the most tensors one cut may send."""
    import keras
    import tensorflow as tf

    out = Path(out)
    model, cuts, splits_meta = plan_splits(model, max_tensors)
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
    existing = _reusable(out, info, splits_meta, precision, samples)
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
        steps = len(cuts) + 2 + (samples is not None)

        def step(k: int, what: str) -> None:
            log(f"[{k}/{steps}] {time.monotonic() - started:6.1f}s  {what}")

        model.save(tmp / TAIL_FILE)
        step(1, f"edge model -> {TAIL_FILE}")
        tail = FileRef(path=TAIL_FILE, sha256=sha256_file(tmp / TAIL_FILE))
        # Segments are cut from a copy: a Keras model built from inner tensors calls its layers
        # again, which would leave the caller's model with layers applied twice.
        # Its input gets the original's name (a clone's would be new), the name the manifest uses.
        copy = keras.models.clone_model(model, input_tensors=keras.Input(shape=model.input.shape[1:],
                                                                           name=graph_input))
        copy.set_weights(model.get_weights())
        graph = build_graph(copy)
        outputs_of = {layer.name: layer.output for layer in copy.layers}
        model_outputs = [t._keras_history.operation.name for t in copy.outputs]
        available = {graph_input}
        store = {graph_input: calibration}  # int8: what each tensor is on the calibration images
        segments = []
        for k, cut in enumerate([*cuts, model_outputs], 1):
            last = k == len(cuts) + 1
            new = model_outputs if last else [n for n in cut if n not in available]
            reads = _segment_inputs(graph, new, available)
            sub = keras.Model([outputs_of[n] for n in reads] if len(reads) > 1 else outputs_of[reads[0]],
                              [outputs_of[n] for n in new] if len(new) > 1 or last else outputs_of[new[0]],
                              name=f"segment_{k}")
            data = to_tflite(sub, None if calibration is None else [store[n] for n in reads])
            if calibration is not None and not last:
                store.update(zip(new, _run_in_batches(sub, [store[n] for n in reads])))
            rel = f"segments/segment_{k:03d}.tflite"
            (tmp / rel).write_bytes(data)
            input_order, output_order = io_order(data, sub)
            segments.append(Segment(index=k, file=FileRef(path=rel, sha256=sha256_file(tmp / rel)),
                                    inputs=[_tensor(outputs_of[n], n) for n in reads], input_order=input_order,
                                    outputs=info.outputs if last else [_tensor(outputs_of[n], n) for n in new],
                                    output_order=output_order, precision=precision))
            available.update(new)
            step(1 + k, f"segment {k}: {' + '.join(reads)} -> {'the outputs' if last else ' + '.join(new)} "
                        f"({len(data) / 1e6:.1f} MB{', int8' if calibration is not None else ''})")
        ranges = None
        if samples is not None:
            sent = [[t["name"] for t in meta["tensors"]] for meta in splits_meta]
            names = list(dict.fromkeys(n for cut in sent[1:] for n in cut))
            probe = keras.Model(copy.input, [outputs_of[n] for n in names])
            document, sizes = calibrate_codecs(lambda x: run_keras(probe, [x]), names, sent, samples,
                                               info.preprocessing.scale)
            write_ranges(tmp, document)
            ranges = FileRef(path=RANGES_FILE, sha256=sha256_file(tmp / RANGES_FILE))
            splits_meta = [{**meta, "codec_bytes": {**meta["codec_bytes"], **measured}}
                           for meta, measured in zip(splits_meta, sizes)]
            step(steps, f"codec ranges and sizes measured on {document['samples']} sample images -> {RANGES_FILE}")
        splits = [Split(tail=tail if meta["tensors"] else None, **{**meta, "tensors": [TensorInfo(**t) for t in
                                                                                      meta["tensors"]]})
                  for meta in splits_meta]
        manifest = Manifest(model=info, segments=segments, splits=splits, ranges=ranges,
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
