"""Running a bundle's TFLite segments with an interpreter alone: ``ai-edge-litert`` (the maintained
one), or ``tflite-runtime`` where only that is installed, or one the host app supplies (on
Android, LiteRT's Java interpreter through Chaquopy) with the same small interface:
``Interpreter(model_path=..., num_threads=...)``, ``allocate_tensors()``,
``get_input_details()``, ``get_output_details()``, ``set_tensor()``, ``invoke()``,
``get_tensor()`` (and ``experimental_delegates=`` when a delegate is configured). The device runs
its heads and fallbacks with it, and the converter's report measures the same runs.
"""

from __future__ import annotations

import ctypes
import time

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


def load_delegate(library: str, options: dict[str, str] | None = None, log=None):
    """A LiteRT delegate (an Edge TPU, GPU or NNAPI library), or None, with one warning, when it cannot
    be loaded: the device then runs on the CPU rather than not at all."""
    try:
        try:
            from ai_edge_litert.interpreter import load_delegate as load
        except ImportError:
            from tflite_runtime.interpreter import load_delegate as load
        ctypes.CDLL(library)  # first: LiteRT's Delegate object trips over a library that is not there
        return load(library, options or {})
    except Exception as exc:  # a missing library, a missing accelerator, bad options: the CPU will do
        if log is not None:
            log(f"delegate {library} not loaded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                "running on the CPU")
        return None


class SegmentRunner:
    """Runs a bundle's segments: split p's head is segments 1..p, and a frame the edge did not answer
    is finished from its cut tensor with segments p+1..end, not started again. Every segment's
    interpreter is made at start and checked against the manifest, so a bundle whose segments do
    not chain is refused at load, naming the file."""

    def __init__(self, bundle: Bundle, interpreter=None, threads: int | None = None, delegate=None, log=None):
        self.bundle = bundle
        self.interpreter_cls = interpreter or default_interpreter()
        self.threads, self.delegate, self.log = threads, delegate, log
        self._interpreters = [self._load(segment) for segment in bundle.segments]

    def _load(self, segment):
        path = self.bundle.folder / segment.file.path
        try:
            it = None
            if self.delegate is not None:
                try:
                    it = self.interpreter_cls(model_path=str(path), num_threads=self.threads,
                                              experimental_delegates=[self.delegate])
                    it.allocate_tensors()
                except Exception as exc:  # ops the accelerator cannot run: this segment stays on the CPU
                    if self.log is not None:
                        self.log(f"{path}: the delegate cannot run it ({str(exc).splitlines()[0][:200]}); CPU")
                    it = None
            if it is None:
                it = self.interpreter_cls(model_path=str(path), num_threads=self.threads)
                it.allocate_tensors()
        except (ValueError, RuntimeError, OSError) as exc:
            raise BundleError(f"{path}: cannot be loaded as a TFLite model: {str(exc).splitlines()[0]}") from None
        inputs, outputs = it.get_input_details(), it.get_output_details()
        if len(inputs) != 1 or list(inputs[0]["shape"]) != segment.input.shape:
            raise BundleError(f"{path}: reads {[list(d['shape']) for d in inputs]}, the manifest says "
                              f"{segment.input.shape}: the segments do not chain")
        got = [list(outputs[k]["shape"]) for k in segment.output_order] if len(outputs) == len(segment.outputs) \
            else None
        if got != [o.shape for o in segment.outputs]:
            raise BundleError(f"{path}: computes {[list(d['shape']) for d in outputs]}, the manifest says "
                              f"{[o.shape for o in segment.outputs]}: the segments do not chain")
        return it, inputs[0]["index"], [outputs[k]["index"] for k in segment.output_order]

    def segment(self, k: int, x: np.ndarray) -> list[np.ndarray]:
        """Segment ``k`` (1-based) on ``x``: its outputs in the manifest's order."""
        it, source, targets = self._interpreters[k - 1]
        it.set_tensor(source, x)
        it.invoke()
        return [it.get_tensor(t) for t in targets]

    def segment_times(self, image: np.ndarray, repeats: int) -> list[float]:
        """Median time of each segment (after a warm-up run) on what it really reads: the image for
        segment 1, the previous segment's output after that. Split p's head takes their sum up to p."""
        times, x = [], image
        for k in range(1, len(self._interpreters) + 1):
            out = self.segment(k, x)  # warm-up: allocation, caches
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                self.segment(k, x)
                runs.append(time.perf_counter() - start)
            times.append(float(np.median(runs)))
            x = out[0]
        return times

    def run(self, split: int, image: np.ndarray) -> list[np.ndarray]:
        """Split ``split``'s head: the cut tensor (one array), or every model output for device-only."""
        outputs = [image]
        for k in range(1, split + 1):
            outputs = self.segment(k, outputs[0])
        return outputs

    def finish(self, split: int, cut: np.ndarray) -> list[np.ndarray]:
        """The model's outputs from split ``split``'s cut tensor (the input itself for split 0)."""
        outputs = [cut]
        for k in range(split + 1, len(self._interpreters) + 1):
            outputs = self.segment(k, outputs[0])
        return outputs
