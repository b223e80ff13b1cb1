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
import hashlib
import queue
import threading
from collections import OrderedDict

import numpy as np

from .bundle import Bundle, BundleError
from .timing import median_time

#: Runs of one split in a row after which its head is fused into one model (in the background).
FUSE_AFTER = 3


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
    not chain is refused at load, naming the file.

    Chaining costs an interpreter call and two copies of the cut tensor per segment: the head of a
    split run ``FUSE_AFTER`` times in a row is fused into one model in the background
    (``common.tflite_fuse``) and run as one call from then on, for the ``fused_heads`` splits used
    last (each holds its weights in memory once more; 0: always chain), where calibration found
    the fused head faster (``fuse_pays``; it was on every split measured on x86, not under qemu's
    arm64 emulation for the whole model)."""

    def __init__(self, bundle: Bundle, interpreter=None, threads: int | None = None, delegate=None, log=None,
                 fused_heads: int = 0):
        self.bundle = bundle
        self.interpreter_cls = interpreter or default_interpreter()
        self.threads, self.delegate, self.log = threads, delegate, log
        self._interpreters = [self._load(segment) for segment in bundle.segments]
        self.fused_heads = fused_heads
        self._fused: OrderedDict[int, tuple] = OrderedDict()  # split -> its fused head, least recently used first
        self._ready: queue.SimpleQueue = queue.SimpleQueue()  # fused heads built, not yet adopted (or errors)
        self.fused_built = threading.Event()  # set whenever a fused head (or its failure) is ready to adopt
        self._building: int | None = None
        self._streak = (None, 0)  # (split, runs in a row)
        self.fuse_pays: list[bool] | None = None  # per split 1..: fused measured faster (None: not measured)

    def _make(self, where: str, **source):
        """An interpreter on ``source`` (``model_path`` or ``model_content``), on the delegate when it
        can run it (else the CPU, saying so), tensors allocated."""
        if self.delegate is not None:
            try:
                it = self.interpreter_cls(**source, num_threads=self.threads, experimental_delegates=[self.delegate])
                it.allocate_tensors()
                return it
            except Exception as exc:  # ops the accelerator cannot run: this one stays on the CPU
                if self.log is not None:
                    self.log(f"{where}: the delegate cannot run it ({str(exc).splitlines()[0][:200]}); CPU")
        it = self.interpreter_cls(**source, num_threads=self.threads)
        it.allocate_tensors()
        return it

    def _load(self, segment):
        path = self.bundle.folder / segment.file.path
        try:
            it = self._make(str(path), model_path=str(path))
        except (ValueError, RuntimeError, OSError) as exc:
            raise BundleError(f"{path}: cannot be loaded as a TFLite model: {str(exc).splitlines()[0]}") from None
        inputs, outputs = it.get_input_details(), it.get_output_details()
        read = [list(inputs[k]["shape"]) for k in segment.input_order] if len(inputs) == len(segment.inputs) \
            else None
        if read != [t.shape for t in segment.inputs]:
            raise BundleError(f"{path}: reads {[list(d['shape']) for d in inputs]}, the manifest says "
                              f"{[t.shape for t in segment.inputs]}: the segments do not chain")
        got = [list(outputs[k]["shape"]) for k in segment.output_order] if len(outputs) == len(segment.outputs) \
            else None
        if got != [o.shape for o in segment.outputs]:
            raise BundleError(f"{path}: computes {[list(d['shape']) for d in outputs]}, the manifest says "
                              f"{[o.shape for o in segment.outputs]}: the segments do not chain")
        return it, [inputs[k]["index"] for k in segment.input_order], [outputs[k]["index"] for k in segment.output_order]

    def _segment_files(self, upto: int) -> list[bytes]:
        """Segments 1..``upto`` as bytes, read again: what was checked at load must still be there."""
        files = []
        for segment in self.bundle.segments[:upto]:
            data = (self.bundle.folder / segment.file.path).read_bytes()
            if hashlib.sha256(data).hexdigest() != segment.file.sha256:
                raise ValueError(f"{segment.file.path} changed since the bundle was loaded")
            files.append(data)
        return files

    def _sent(self, split: int) -> list[str]:
        """What split ``split``'s head hands over, by name: the tensors it sends, or the model's outputs."""
        if split == len(self._interpreters):
            return [o.name for o in self.bundle.segments[-1].outputs]
        return self.bundle.splits[split].names

    def fuse(self, split: int, files: list[bytes] | None = None) -> tuple:
        """Split ``split``'s head (segments 1..split) as one interpreter: (interpreter, input, outputs in
        the manifest's order). ``files``: the segments' bytes if already read (``_segment_files``).
        Raises ``ValueError`` or ``ImportError`` where it cannot be fused."""
        from .tflite_fuse import fuse_segments

        segments = self.bundle.segments[:split]
        reads = [[s.inputs[pos].name for pos in _inverse(s.input_order)] for s in segments]
        writes = [[s.outputs[pos].name for pos in _inverse(s.output_order)] for s in segments]
        model = fuse_segments((files or self._segment_files(split))[:split], reads, writes, self._sent(split))
        try:
            it = self._make(f"the fused head of split {split}", model_content=model)
        except TypeError:
            raise ValueError("the interpreter takes no model_content") from None
        return it, [it.get_input_details()[0]["index"]], [d["index"] for d in it.get_output_details()]

    def _build(self, split: int) -> None:
        try:
            self._ready.put((split, self.fuse(split)))
        except Exception as exc:  # an old interpreter, no schema, a model the fuser does not know: chain
            self._ready.put((split, exc))
        self.fused_built.set()

    def _give_up(self, exc: Exception) -> None:
        if self.log is not None:
            self.log(f"heads are not fused ({str(exc).splitlines()[0][:200] or type(exc).__name__}); "
                     "segments run one after another")
        self.fused_heads = 0

    def _adopt(self) -> None:
        """Take in what the background builder made (on the frame's thread: the only one that runs heads)."""
        while not self._ready.empty():
            split, made = self._ready.get()
            self._building = None
            if isinstance(made, Exception):
                self._give_up(made)
                continue
            self._fused[split] = made
            while len(self._fused) > self.fused_heads:
                self._fused.popitem(last=False)

    def fused(self) -> list[int]:
        """The splits whose head runs fused, least recently used first."""
        return list(self._fused)

    def _note_run(self, split: int) -> None:
        """Count runs of ``split`` in a row; at ``FUSE_AFTER``, fuse its head in the background."""
        last, runs = self._streak
        self._streak = (split, runs + 1 if split == last else 1)
        if (self._streak[1] >= FUSE_AFTER and self._building is None and split > 1 and split not in self._fused
                and self.fused_heads > 0 and (self.fuse_pays is None or self.fuse_pays[split - 1])):
            self._building = split
            threading.Thread(target=self._build, args=(split,), name=f"fuse-head-{split}", daemon=True).start()

    @staticmethod
    def invoke(loaded: tuple, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """A loaded model (a segment, or a head from ``fuse``) on ``inputs`` (in the manifest's order):
        its outputs in the manifest's order."""
        it, sources, targets = loaded
        for source, x in zip(sources, inputs):
            it.set_tensor(source, x)
        it.invoke()
        return [it.get_tensor(t) for t in targets]

    def segment(self, k: int, known: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Segment ``k`` (1-based) on the tensors it reads from ``known``, which it adds its outputs to;
        its outputs in the manifest's order."""
        segment = self.bundle.segments[k - 1]
        outputs = self.invoke(self._interpreters[k - 1], [known[t.name] for t in segment.inputs])
        known.update(zip((t.name for t in segment.outputs), outputs))
        return outputs

    def segment_times(self, image: np.ndarray, repeats: int) -> list[float]:
        """Median time of each segment on what it really reads: the image for segment 1, what the
        segments before it computed after that. Split p's head, chained, takes their sum up to p."""
        times, known = [], {self.bundle.manifest.model.input.name: image}
        for k, (loaded, segment) in enumerate(zip(self._interpreters, self.bundle.segments), 1):
            inputs = [known[t.name] for t in segment.inputs]
            times.append(median_time(lambda: self.invoke(loaded, inputs), repeats))
            self.segment(k, known)
        return times

    def cuts(self, image: np.ndarray) -> list[list[np.ndarray]]:
        """What every split but device-only sends for ``image``, from one chained pass."""
        known = {self.bundle.manifest.model.input.name: image}
        sent = [[image]]
        for k in range(1, len(self._interpreters)):
            self.segment(k, known)
            sent.append([known[name] for name in self._sent(k)])
        return sent

    def head_times(self, image: np.ndarray, repeats: int, progress=None) -> list[float]:
        """Median time of every split's head (split 1 to device-only) as this runner will run it once
        the split is in use: segment by segment, or fused into one model where that is faster on this
        device (``fuse_pays``, per split; fusing is then left to those splits). ``progress(done, of)``
        is called as the fused heads are timed (minutes on a slow board)."""
        chained = np.cumsum(self.segment_times(image, repeats))
        if self.fused_heads:
            try:
                fused, splits = [], len(self._interpreters)
                files = self._segment_files(splits)  # read and checked once, not once per head
                for split in range(1, splits + 1):
                    head = self.fuse(split, files)
                    fused.append(median_time(lambda: self.invoke(head, [image]), repeats))
                    if progress is not None:
                        progress(split, splits)
            except Exception as exc:  # as in _build: the device will chain, so that is what it costs
                self._give_up(exc)
            else:
                self.fuse_pays = [bool(f < c) for f, c in zip(fused, chained)]
                return np.minimum(fused, chained).tolist()
        return chained.tolist()

    def run(self, split: int, image: np.ndarray) -> list[np.ndarray]:
        """Split ``split``'s head: the tensors it sends (the image for split 0), or every model output
        for device-only."""
        if self.fused_heads:
            self._adopt()
            if split in self._fused:
                self._fused.move_to_end(split)
                return self.invoke(self._fused[split], [image])
            self._note_run(split)
        known = {self.bundle.manifest.model.input.name: image}
        for k in range(1, split + 1):
            self.segment(k, known)
        return [known[name] for name in self._sent(split)]

    def finish(self, split: int, cut: list[np.ndarray]) -> list[np.ndarray]:
        """The model's outputs from split ``split``'s cut tensors (the input itself for split 0: the
        device-only head, fused like any head when the edge stays away)."""
        if split == 0:
            return self.run(len(self._interpreters), cut[0])
        known = dict(zip(self.bundle.splits[split].names, cut))
        outputs = []
        for k in range(split + 1, len(self._interpreters) + 1):
            outputs = self.segment(k, known)
        return outputs


def _inverse(order: list[int]) -> list[int]:
    """For a map manifest position -> interpreter position, the manifest position of each interpreter one."""
    inverse = [0] * len(order)
    for manifest_pos, interpreter_pos in enumerate(order):
        inverse[interpreter_pos] = manifest_pos
    return inverse
