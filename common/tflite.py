"""Running a bundle's TFLite heads with an interpreter alone: ``ai-edge-litert`` (the maintained
one), or ``tflite-runtime`` where only that is installed, or one the host app supplies (on
Android, LiteRT's Java interpreter through Chaquopy) with the same small interface:
``Interpreter(model_path=..., num_threads=...)``, ``allocate_tensors()``,
``get_input_details()``, ``get_output_details()``, ``set_tensor()``, ``invoke()``,
``get_tensor()``. The device runs its heads with it, and the converter's report measures the
same runs.
"""

from __future__ import annotations

import numpy as np

from .bundle import Bundle, BundleError


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


class HeadRunner:
    """Runs split p's head on a preprocessed image; interpreters are created on first use and kept."""

    def __init__(self, bundle: Bundle, interpreter=None, threads: int | None = None):
        self.bundle = bundle
        self.interpreter_cls = interpreter or default_interpreter()
        self.threads = threads
        self._interpreters: dict[int, object] = {}

    def _interpreter(self, split: int):
        if split not in self._interpreters:
            ref = self.bundle.splits[split].head
            if ref is None:
                raise BundleError(f"split {split} has no head: it sends the input itself")
            it = self.interpreter_cls(model_path=str(self.bundle.folder / ref.path), num_threads=self.threads)
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


