"""The device's part of every split: its bundle, its TFLite heads, and their measured delays.

Runs with a TFLite interpreter alone: ``ai-edge-litert`` (the maintained one), or
``tflite-runtime`` where only that is installed, or one the host app supplies (on
Android, LiteRT's Java interpreter through Chaquopy) with the same small interface:
``Interpreter(model_path=..., num_threads=...)``, ``allocate_tensors()``,
``get_input_details()``, ``get_output_details()``, ``set_tensor()``, ``invoke()``,
``get_tensor()``. No pydantic: the manifest is read as plain JSON and checked here.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from pathlib import Path

import numpy as np

from .learner.persist import load_state, save_state
from .learner.profile import MANIFEST_SCHEMA_VERSIONS


class BundleError(ValueError):
    """A bundle the device cannot use, with the file at fault."""


def default_interpreter():
    """The TFLite interpreter class: LiteRT, else tflite-runtime."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise BundleError("no TFLite interpreter installed: pip install ai-edge-litert "
                              "(or tflite-runtime where LiteRT has no build)") from None
    return Interpreter


class DeviceBundle:
    """A converter bundle as the device sees it: the manifest and the head files, checked."""

    def __init__(self, folder: str | Path, verify: bool = True):
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise BundleError(f"{path}: cannot read: {exc.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("schema_version") not in MANIFEST_SCHEMA_VERSIONS:
            raise BundleError(f"{path}: not a bundle manifest of a known schema version")
        try:
            self.content_hash = str(doc["model"]["content_hash"])
            self.input_shape = tuple(int(d) for d in doc["model"]["input"]["shape"])
            self.splits = list(doc["splits"])
            self.whole = doc["whole_model"]
            for i, s in enumerate(self.splits):
                if s["index"] != i:
                    raise BundleError(f"{path}: splits must be ordered by index")
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{path}: manifest is missing or mangles {exc}") from None
        self.manifest = doc
        if verify:
            for ref in [self.whole] + [s["head"] for s in self.splits if s.get("head")]:
                file = self.folder / ref["path"]
                try:
                    digest = hashlib.sha256(file.read_bytes()).hexdigest()
                except OSError as exc:
                    raise BundleError(f"{file}: cannot read: {exc.strerror}") from None
                if digest != ref["sha256"]:
                    raise BundleError(f"{file}: sha256 does not match the manifest (corrupt or replaced)")

    @property
    def device_only(self) -> int:
        return len(self.splits) - 1


class HeadRunner:
    """Runs split p's head on a preprocessed image; interpreters are created on first use and kept."""

    def __init__(self, bundle: DeviceBundle, interpreter=None, threads: int | None = None):
        self.bundle = bundle
        self.interpreter_cls = interpreter or default_interpreter()
        self.threads = threads
        self._interpreters: dict[int, object] = {}

    def _interpreter(self, split: int):
        if split not in self._interpreters:
            ref = self.bundle.splits[split]["head"]
            if ref is None:
                raise BundleError(f"split {split} has no head: it sends the input itself")
            it = self.interpreter_cls(model_path=str(self.bundle.folder / ref["path"]), num_threads=self.threads)
            it.allocate_tensors()
            self._interpreters[split] = it
        return self._interpreters[split]

    def run(self, split: int, image: np.ndarray) -> list[np.ndarray]:
        """The head's outputs: the cut tensor (one array), or every model output for device-only."""
        if split == 0:
            return [image]
        it = self._interpreter(split)
        it.set_tensor(it.get_input_details()[0]["index"], image)
        it.invoke()
        return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def calibrate(runner: HeadRunner, repeats: int = 5, cache: str | Path | None = None, log=print) -> np.ndarray:
    """Front-end delay of every split, measured on this device (median of ``repeats`` runs after a
    warm-up), cached in ``cache`` against the bundle's content hash so a restart skips it."""
    bundle = runner.bundle
    if cache is not None and Path(cache).is_file():
        try:
            state = load_state(cache)
            if state.get("bundle") == bundle.content_hash and len(state.get("front_delay_s", [])) == len(bundle.splits):
                return np.asarray(state["front_delay_s"], dtype=np.float64)
        except ValueError:
            pass  # an unreadable cache is measured again
    image = np.random.default_rng(0).random(bundle.input_shape, dtype=np.float32)
    delays = [0.0]
    for split in range(1, len(bundle.splits)):
        runner.run(split, image)  # warm-up: allocation, caches
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            runner.run(split, image)
            times.append(time.perf_counter() - start)
        delays.append(statistics.median(times))
        log(f"calibrated split {split}/{bundle.device_only}: {delays[-1] * 1e3:.2f} ms")
    if cache is not None:
        save_state(cache, {"bundle": bundle.content_hash, "front_delay_s": delays})
    return np.asarray(delays)
