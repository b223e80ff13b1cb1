"""Model files checked without TensorFlow: a missing or corrupt file is one clear line, before
TensorFlow's start-up messages (and before Keras says "File not found" of a file that is there).
The format of a user's model is read from its content, not its name."""

from __future__ import annotations

import zipfile
from pathlib import Path

_HDF5 = b"\x89HDF\r\n\x1a\n"
#: ``ans convert --decoder``: how a model's outputs become detections ("auto": told by their shapes).
DECODER_CHOICES = ("auto", "none", "yolov8", "yolox", "yolox-raw", "boxes-scores")
_READS = "a Keras .keras or .h5 file, an ONNX file, a TFLite file or a TensorFlow SavedModel folder"


def model_format(path: str | Path) -> tuple[str | None, str | None]:
    """(format, None) for a model ``ans convert`` reads, told by its content: "keras", "h5", "onnx",
    "tflite" or "savedmodel"; (None, the reason in one line) for anything else."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "savedmodel", None
        return None, f"{path}: a folder without saved_model.pb; the converter reads {_READS}"
    if not path.is_file():
        return None, f"{path}: no such file"
    if path.suffix in (".keras", ".h5"):  # named as Keras: say what is wrong with it as a Keras file
        problem = model_file_problem(path)
        return (None, problem) if problem else (path.suffix[1:], None)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
        if head.startswith(_HDF5):
            return "h5", None
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            if "config.json" in names:
                problem = _keras_archive_problem(path)
                return (None, problem) if problem else ("keras", None)
            if any(n.endswith("data.pkl") for n in names):
                return None, (f"{path}: a PyTorch checkpoint; export it to ONNX first (torch.onnx.export, or "
                              "Ultralytics: yolo export format=onnx) and convert the .onnx file")
            return None, f"{path}: a zip that is not a .keras model; the converter reads {_READS}"
    except (OSError, zipfile.BadZipFile) as exc:
        return None, f"{path}: cannot read the model file: {exc}"
    if head[4:8] == b"TFL3":
        return "tflite", None
    if head.lstrip().startswith(b"[net]"):
        return None, f"{path}: a Darknet cfg; convert it with --darknet CFG WEIGHTS"
    if head[:1] == b"\x80":
        return None, (f"{path}: a pickled file (a PyTorch checkpoint?), which ANS never loads; export it to "
                      "ONNX first and convert the .onnx file")
    if head[:1] == b"\x08" or path.suffix == ".onnx":  # ONNX: a protobuf that opens with its ir_version
        return "onnx", None
    return None, f"{path}: not a model the converter reads ({_READS}; Darknet with --darknet)"


def model_file_problem(path: str | Path) -> str | None:
    """What is wrong with a ``.keras`` / ``.h5`` model file, or None when it looks loadable."""
    path = Path(path)
    if path.suffix not in (".keras", ".h5"):
        return f"{path}: expected a Keras model file (.keras or .h5)"
    if not path.is_file():
        return f"{path}: no such file"
    try:
        if path.suffix == ".h5":
            with open(path, "rb") as f:
                ok = f.read(len(_HDF5)) == _HDF5
            return None if ok else f"{path}: not an HDF5 file (corrupt, or not a Keras .h5 model)"
        if not zipfile.is_zipfile(path):
            return f"{path}: not a .keras archive (corrupt or truncated: a .keras file is a zip)"
    except OSError as exc:
        return f"{path}: cannot read the model file: {exc}"
    return _keras_archive_problem(path)


def _keras_archive_problem(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                return f"{path}: a zip without config.json, not a .keras model"
            broken = archive.testzip()
        return None if broken is None else f"{path}: corrupt .keras archive ({broken} is damaged)"
    except (OSError, zipfile.BadZipFile) as exc:
        return f"{path}: cannot read the model file: {exc}"
