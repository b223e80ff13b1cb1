"""Learner state on disk: plain JSON, written atomically, so a restart resumes where it stopped.

JSON rather than pickle or npz: the file may come from another device (warm start),
and nothing read from elsewhere should be able to run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from common.errors import ConfigurationError

STATE_VERSION = 1


class StateError(ConfigurationError):
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


def profile_fingerprint(contexts: np.ndarray) -> str:
    """Identifies the split contexts a learnt state applies to."""
    return hashlib.sha256(np.ascontiguousarray(contexts).tobytes()).hexdigest()[:16]


def state_header(policy) -> dict:
    """What every saved learner state starts with: format, policy and the model's splits."""
    return {"version": STATE_VERSION, "policy": policy.name, "profile": profile_fingerprint(policy.profile.contexts)}


def check_header(policy, state: dict) -> None:
    """Refuse a state of another format, another policy, or another model's splits."""
    if state.get("version") != STATE_VERSION or state.get("policy") != policy.name:
        raise StateError(f"learner state is not version {STATE_VERSION} of policy '{policy.name}'")
    if state.get("profile") != profile_fingerprint(policy.profile.contexts):
        raise StateError("learner state was learnt on another model's splits (profile fingerprint differs)")
