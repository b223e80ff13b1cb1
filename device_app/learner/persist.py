"""Learner state on disk: plain JSON, written atomically, so a restart resumes where it stopped.

JSON rather than pickle or npz: the file may come from another device (warm start),
and nothing read from elsewhere should be able to run code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


class StateError(ValueError):
    """A state file that cannot be read or does not fit the learner."""


def save_state(path: str | Path, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".state-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StateError(f"{path}: cannot read learner state: {exc.strerror}") from None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(f"{path}:{exc.lineno}: learner state is not valid JSON: {exc.msg}") from None
    if not isinstance(state, dict):
        raise StateError(f"{path}: learner state must be a JSON object")
    return state
