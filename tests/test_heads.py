"""The device side of a bundle: checked files, segments chained under LiteRT into heads and fallbacks,
measured front-end delays, delegates that fail falling back to the CPU."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("keras")

from converter.bundle import convert  # noqa: E402
from common.bundle import Bundle, BundleError  # noqa: E402
from common.tflite import SegmentRunner  # noqa: E402
from device_app.heads import calibrate  # noqa: E402

from .test_converter import dag_model  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    model = dag_model()
    out = tmp_path_factory.mktemp("device") / "dag"
    convert(model, out, log=lambda *_: None)
    return model, out


def test_heads_compute_the_cut_tensors_and_device_only_the_outputs(bundle):
    model, out = bundle
    b = Bundle(out)
    runner = SegmentRunner(b)
    x = np.random.default_rng(3).random(b.input_shape, dtype=np.float32)
    for split in b.splits[1:-1]:
        cut = runner.run(split.index, x)
        assert [list(c.shape) for c in cut] == split.shapes
    outputs = runner.run(b.device_only, x)
    for got, ref in zip(outputs, model(x, training=False), strict=True):  # in the manifest's order
        np.testing.assert_allclose(got, np.asarray(ref), atol=1e-4)


class HostInterpreter:
    """What a host app supplies (on Android, LiteRT's Java interpreter behind an adapter): only the
    documented interface, no attribute passthrough, so anything else SegmentRunner touched would fail."""

    made = 0

    def __init__(self, model_path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self._it = Interpreter(model_path=model_path, num_threads=num_threads)
        HostInterpreter.made += 1

    def allocate_tensors(self):
        self._it.allocate_tensors()

    def get_input_details(self):
        return self._it.get_input_details()

    def get_output_details(self):
        return self._it.get_output_details()

    def set_tensor(self, index, value):
        self._it.set_tensor(index, value)

    def invoke(self):
        self._it.invoke()

    def get_tensor(self, index):
        return self._it.get_tensor(index)


def test_a_host_supplied_interpreter_runs_the_heads_alike(bundle):
    _, out = bundle
    b = Bundle(out)
    default, hosted = SegmentRunner(b), SegmentRunner(b, interpreter=HostInterpreter, threads=1)
    x = np.random.default_rng(4).random(b.input_shape, dtype=np.float32)
    for split in range(1, len(b.splits)):
        for got, want in zip(hosted.run(split, x), default.run(split, x)):
            np.testing.assert_allclose(got, want, atol=1e-6)
    hosted.run(1, x)
    assert HostInterpreter.made == len(b.segments)  # one per segment, made at start and kept


def test_a_fused_head_computes_what_its_segments_compute(bundle):
    """Every split's head fused into one model (segments joined on the device, no TensorFlow) gives
    the chained segments' result bit for bit, the two outputs of device-only in the manifest's order."""
    _, out = bundle
    b = Bundle(out)
    runner = SegmentRunner(b)
    x = np.random.default_rng(6).random(b.input_shape, dtype=np.float32)
    for split in range(2, len(b.splits)):
        fused = runner.invoke(runner.fuse(split), [x])
        chained = runner.run(split, x)
        assert [f.shape for f in fused] == [c.shape for c in chained]
        for f, c in zip(fused, chained, strict=True):
            np.testing.assert_array_equal(f, c)


def test_segments_that_do_not_chain_are_not_fused(bundle):
    from common.tflite_fuse import FuseError, fuse_segments

    _, out = bundle
    b = Bundle(out)
    files = [(b.folder / s.file.path).read_bytes() for s in b.segments]
    reads = [[t.name for t in s.inputs] for s in b.segments]
    writes = [[t.name for t in s.outputs] for s in b.segments]
    with pytest.raises(FuseError, match="segment 2 reads .* they do not chain"):
        fuse_segments([files[1], files[0]], [["image"], ["x"]], [["x"] * len(writes[1]), writes[0]], writes[0])
    with pytest.raises(FuseError, match="segment 2 reads res_add, which no segment before it computes"):
        fuse_segments([files[0], files[2]], reads[:1] + reads[2:3], writes[:1] + writes[2:3], writes[2])
    with pytest.raises(FuseError, match="nothing to fuse"):
        fuse_segments([], [], [], [])


def test_a_segment_replaced_after_load_is_not_fused(bundle, tmp_path):
    import shutil

    _, out = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    runner = SegmentRunner(Bundle(copy))
    first = copy / runner.bundle.segments[0].file.path
    first.write_bytes(first.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="changed since the bundle was loaded"):
        runner.fuse(2)


def test_the_split_in_use_runs_fused_after_a_few_frames(bundle):
    """A split run FUSE_AFTER times in a row is fused in the background; with room for one, the next
    split used that long replaces it (here device-only, as frames fall back from split 0 while the
    edge is away). Results stay those of the chained segments."""
    from common.tflite import FUSE_AFTER

    _, out = bundle
    b = Bundle(out)
    runner, chained = SegmentRunner(b, fused_heads=1), SegmentRunner(b)
    x = np.random.default_rng(7).random(b.input_shape, dtype=np.float32)
    for split in (3, b.device_only):  # device-only by fallbacks from split 0: the whole model from the input
        run = (lambda: runner.run(3, x)) if split == 3 else (lambda: runner.finish(0, [x]))
        runner.fused_built.clear()
        for _ in range(FUSE_AFTER):
            assert split not in runner.fused()
            run()
        assert runner.fused_built.wait(60)
        for got, want in zip(run(), chained.run(split, x), strict=True):
            np.testing.assert_array_equal(got, want)
        assert runner.fused() == [split]
    runner.fused_built.clear()
    for split in (2, 3, 2, 3):  # no split in a row long enough: nothing is built
        runner.run(split, x)
    assert runner.fused() == [b.device_only] and runner._building is None
    runner.fuse_pays = [split != 2 for split in range(1, len(b.splits))]  # calibration: fusing 2 is slower here
    for _ in range(FUSE_AFTER + 1):
        runner.run(2, x)
    assert runner._building is None and runner.fused() == [b.device_only]


def test_an_interpreter_that_cannot_fuse_keeps_chaining(bundle):
    """A host-supplied interpreter takes a model path only: one warning, then segments as before."""
    from common.tflite import FUSE_AFTER

    _, out = bundle
    b = Bundle(out)
    warnings = []
    runner = SegmentRunner(b, interpreter=HostInterpreter, log=warnings.append, fused_heads=2)
    x = np.random.default_rng(8).random(b.input_shape, dtype=np.float32)
    for _ in range(FUSE_AFTER):
        runner.run(3, x)
    assert runner.fused_built.wait(60)
    (cut,) = runner.run(3, x)
    np.testing.assert_array_equal(cut, SegmentRunner(b).run(3, x)[0])
    assert runner.fused() == [] and runner.fused_heads == 0
    assert len(warnings) == 1 and "not fused (the interpreter takes no model_content)" in warnings[0]


def test_calibration_measures_every_split_and_is_cached(bundle, tmp_path):
    _, out = bundle
    runner = SegmentRunner(Bundle(out))
    cache = tmp_path / "calibration.json"
    lines = []
    delays = calibrate(runner, repeats=3, cache=cache, log=lines.append)
    assert delays.shape == (7,) and delays[0] == 0.0 and np.all(np.diff(delays) > 0)  # segments add up
    assert len(lines) == 1 and "device-only" in lines[0]
    again = calibrate(runner, cache=cache, log=lines.append)
    assert np.array_equal(again, delays) and len(lines) == 1  # from the cache, nothing measured
    state = json.loads(cache.read_text())
    state["bundle"] = "another model"
    cache.write_text(json.dumps(state))
    calibrate(runner, repeats=1, cache=cache, log=lines.append)
    assert len(lines) == 2  # another bundle's numbers are not used
    fusing, steps = SegmentRunner(Bundle(out), fused_heads=1), []
    fused = calibrate(fusing, repeats=3, cache=cache, log=lines.append, progress=lambda *step: steps.append(step))
    assert steps == [(k, 6) for k in range(1, 7)]  # a slow board's service says how far it is (systemd)
    assert len(lines) == 3 and "chained" in lines[1] and "fused" in lines[2]  # heads as they will run
    assert fused.shape == (7,) and np.all(fused[1:] > 0)
    assert len(fusing.fuse_pays) == 6  # where fusing is faster, per split: remembered with the delays
    restarted = SegmentRunner(Bundle(out), fused_heads=1)
    assert np.array_equal(calibrate(restarted, cache=cache, log=lines.append), fused) and len(lines) == 3
    assert restarted.fuse_pays == fusing.fuse_pays


def test_simulate_with_measured_front_delays(bundle, capsys):
    from ans.cli import main

    _, out = bundle
    assert main(["simulate", "--profile", str(out), "--trace", "steady", "--frames", "200", "--calibrate",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 200


def test_a_tampered_or_broken_bundle_is_refused(bundle, tmp_path):
    _, out = bundle
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in out.rglob("*"):
        if f.is_file():
            (copy / f.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            (copy / f.relative_to(out)).write_bytes(f.read_bytes())
    segment = copy / "segments" / "segment_002.tflite"
    original = segment.read_bytes()
    segment.write_bytes(original[:-4] + b"\0\0\0\0")
    with pytest.raises(BundleError, match="segment_002.tflite: sha256 does not match"):
        Bundle(copy)
    segment.unlink()
    with pytest.raises(BundleError, match="segment_002.tflite: cannot read"):
        Bundle(copy)
    # A segment that is intact but is not the one the manifest describes: refused at load.
    segment.write_bytes((copy / "segments" / "segment_001.tflite").read_bytes())
    manifest = json.loads((copy / "manifest.json").read_text())
    from common.bundle import sha256_file

    manifest["segments"][1]["file"]["sha256"] = sha256_file(segment)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="segment_002.tflite: reads .* the segments do not chain"):
        SegmentRunner(Bundle(copy))
    (copy / "manifest.json").write_text('{"schema_version": 9}')
    with pytest.raises(BundleError, match="schema_version 9 is not supported"):
        Bundle(copy)
    with pytest.raises(BundleError, match="cannot read"):
        Bundle(tmp_path / "nowhere")


def test_the_device_side_runs_with_tensorflow_blocked(bundle):
    import subprocess
    import sys

    from .test_device_core_imports import BLOCKER

    _, out = bundle
    script = BLOCKER.split("import numpy as np")[0] + f"""
import numpy as np
from common.bundle import Bundle
from common.tflite import SegmentRunner
from device_app.heads import calibrate
runner = SegmentRunner(Bundle({str(out)!r}), fused_heads=1)
lines = []
delays = calibrate(runner, repeats=1, log=lines.append)
assert "fused" in lines[0], lines  # heads fused on the device, without TensorFlow
cut = runner.run(1, np.zeros(runner.bundle.input_shape, np.float32))
runner.finish(1, cut)
print('ok', len(delays), cut[0].shape)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok 7")


def test_a_delegate_that_cannot_load_leaves_the_cpu_with_one_warning(bundle):
    from common.tflite import load_delegate

    _, out = bundle
    warnings = []
    assert load_delegate("/nonexistent/libedgetpu.so.1", {"device": "usb"}, log=warnings.append) is None
    assert len(warnings) == 1 and "libedgetpu.so.1 not loaded" in warnings[0] and "CPU" in warnings[0]


def test_a_segment_the_delegate_cannot_run_stays_on_the_cpu(bundle):
    """A delegate object the interpreter refuses (as an accelerator refuses ops it lacks): each
    segment is then made without it, with a warning naming the file, and runs the same."""
    _, out = bundle
    b = Bundle(out)
    warnings = []
    runner = SegmentRunner(b, delegate=object(), log=warnings.append)
    x = np.random.default_rng(5).random(b.input_shape, dtype=np.float32)
    for got, want in zip(runner.run(b.device_only, x), SegmentRunner(b).run(b.device_only, x)):
        np.testing.assert_array_equal(got, want)
    assert len(warnings) == len(b.segments) and all("the delegate cannot run it" in w for w in warnings)
