"""A user's detector file, whatever its format, as what the converter splits (a Keras functional model
with an NHWC image input) plus the original model run by its own runtime, to check every split against.

* Keras ``.keras`` / ``.h5`` (functional or Sequential): loaded as is; the reference is Keras itself.
* ONNX: imported node by node (``onnx_import``); the reference is onnxruntime on the file.
* TFLite: imported operator by operator (``tflite_import``); the reference is LiteRT on the file.
* TensorFlow SavedModel: converted to TFLite by TensorFlow's converter, then imported as TFLite; the
  reference is TensorFlow running the SavedModel's serving signature.
"""

from __future__ import annotations

import ast
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.keras_model import ModelError, load_keras_model

from .bundle import run_keras
from .graph import as_functional


#: A label file larger than this inside a model is not a label file (nor read into memory).
MAX_LABELS_BYTES = 1 << 20


@dataclass
class UserModel:
    model: object
    """The Keras functional model to split (NHWC image input)."""
    runtime: str
    """What runs the original model for the equivalence check."""
    reference: Callable[[np.ndarray], list[np.ndarray]]
    """One NHWC image batch [1, H, W, C] -> the original model's outputs, in the Keras model's order."""
    labels: list[str] = field(default_factory=list)
    """Class names found in the model's metadata."""


def load_user_model(path: str | Path, fmt: str) -> UserModel:
    path = Path(path)
    if fmt in ("keras", "h5"):
        return _keras(path, fmt)
    if fmt == "onnx":
        return _onnx(path)
    if fmt == "tflite":
        return _tflite(path.read_bytes(), path.stem)
    if fmt == "savedmodel":
        return _saved_model(path)
    raise ModelError(f"{path}: unknown model format {fmt!r}")


def _keras(path: Path, fmt: str) -> UserModel:
    suffix = f".{fmt}"
    if path.suffix != suffix:  # Keras goes by the name: give it one that says what the content is
        with tempfile.TemporaryDirectory() as tmp:
            named = Path(tmp) / f"model{suffix}"
            shutil.copyfile(path, named)
            model = load_keras_model(named)
    else:
        model = load_keras_model(path)
    # Split the functional form (a Sequential model rebuilt as one); check against the model as loaded.
    return UserModel(as_functional(model), f"Keras {_version('keras')}", lambda x: run_keras(model, [x]))


def _onnx(path: Path) -> UserModel:
    try:
        import onnx  # noqa: F401  (the importer's parser)
        import onnxruntime as ort
    except ImportError:
        raise ModelError("converting ONNX models needs onnx and onnxruntime: pip install '.[convert]'") from None

    from .onnx_import import import_onnx, load_onnx, onnx_metadata

    proto = load_onnx(path)
    model, nchw = import_onnx(proto, name=path.stem)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name

    def reference(x: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {feed: x.transpose(0, 3, 1, 2) if nchw else x})

    return UserModel(model, f"onnxruntime {ort.__version__}", reference, _labels(onnx_metadata(proto).get("names")))


def _tflite(data: bytes, name: str) -> UserModel:
    from ai_edge_litert.interpreter import Interpreter

    from common.fd_capture import captured

    from .tflite_import import import_tflite

    model = import_tflite(data, name=name)
    with captured(2):  # LiteRT's note that it made an XNNPACK delegate
        interpreter = Interpreter(model_content=data)
        interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    outputs = [d["index"] for d in interpreter.get_output_details()]

    def reference(x: np.ndarray) -> list[np.ndarray]:
        interpreter.set_tensor(source, x.astype(np.float32))
        interpreter.invoke()
        return [interpreter.get_tensor(i).copy() for i in outputs]

    return UserModel(model, f"LiteRT {_version('ai-edge-litert')}", reference, _tflite_labels(data))


def _saved_model(path: Path) -> UserModel:
    import tensorflow as tf

    from common.fd_capture import captured

    from .tflite_import import import_tflite

    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]
    except Exception as exc:
        raise ModelError(f"{path}: cannot load the SavedModel's serving signature: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    conv = tf.lite.TFLiteConverter.from_saved_model(str(path))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        with captured(1, 2):
            data = conv.convert()
    except Exception as exc:
        from .bundle import tflite_failure

        raise ModelError(tflite_failure(str(path), str(exc))) from None
    model = import_tflite(data, name=path.name)
    (arg,) = signature.structured_input_signature[1].keys()
    keys = sorted(signature.structured_outputs.keys())
    order: list[str] = []

    def reference(x: np.ndarray) -> list[np.ndarray]:
        result = signature(**{arg: tf.constant(x.astype(np.float32))})
        values = {k: np.asarray(v) for k, v in result.items()}
        if not order:  # the TFLite model orders the outputs its own way: match them once by value
            ours = run_keras(model, [x])
            for mine in ours:
                best = min((k for k in keys if k not in order and values[k].shape == mine.shape),
                           key=lambda k: float(np.max(np.abs(values[k] - mine))), default=None)
                if best is None:
                    raise ModelError(f"{path}: cannot match the SavedModel's outputs {keys} to the converted model's")
                order.append(best)
        return [values[k] for k in order]

    return UserModel(model, f"TensorFlow {tf.__version__}", reference)


def _labels(names: str | None) -> list[str]:
    """Class names from Ultralytics' metadata (a Python dict literal, {0: 'person', ...}), read as a
    literal, never evaluated."""
    if not names:
        return []
    try:
        value = ast.literal_eval(names)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return []
    if isinstance(value, dict) and all(isinstance(k, int) for k in value):
        return [str(value[k]) for k in sorted(value)] if sorted(value) == list(range(len(value))) else []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return []


def _tflite_labels(data: bytes) -> list[str]:
    """Class names from a TFLite model's associated label file (TFLite Metadata packs it in a zip
    appended to the flatbuffer), when there is one."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if info.filename.endswith(".txt") and info.file_size <= MAX_LABELS_BYTES:
                    return [line.strip() for line in archive.read(info).decode("utf-8", "replace").splitlines()
                            if line.strip()]
    except (zipfile.BadZipFile, OSError, ValueError):
        return []
    return []


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"
