"""Model files checked without TensorFlow: a missing or corrupt file is one clear line, before
TensorFlow's start-up messages (and before Keras says "File not found" of a file that is there)."""

from __future__ import annotations

import zipfile
from pathlib import Path

_HDF5 = b"\x89HDF\r\n\x1a\n"


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
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                return f"{path}: a zip without config.json, not a .keras model"
            broken = archive.testzip()
        return None if broken is None else f"{path}: corrupt .keras archive ({broken} is damaged)"
    except (OSError, zipfile.BadZipFile) as exc:
        return f"{path}: cannot read the model file: {exc}"
