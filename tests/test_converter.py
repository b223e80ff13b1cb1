"""The converter on small models: cut points, contexts, and every split equal to the whole model."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from keras import layers as kl  # noqa: E402

from common.bundle import BundleError, read_manifest  # noqa: E402
from common.keras_model import ModelError, load_keras_model, tail_model  # noqa: E402
from common.bundle import Bundle  # noqa: E402
from common.tflite import SegmentRunner  # noqa: E402
from converter.bundle import convert, plan_splits, to_tflite  # noqa: E402
from converter.graph import build_graph, cut_layers  # noqa: E402
from converter.zoo import calibrate_batch_norm, tiny_yolov2  # noqa: E402
from device_app.learner.profile import load_profile  # noqa: E402


def dag_model() -> keras.Model:
    """Residual block, a concatenation of two branches, and two outputs."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((32, 32, 3), name="image")
    x = kl.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = kl.BatchNormalization(name="bn1")(x)
    x = kl.LeakyReLU(0.1, name="a1")(x)
    r = kl.Conv2D(8, 3, padding="same", name="res_conv")(x)
    r = kl.ReLU(name="res_relu")(r)
    x = kl.Add(name="res_add")([x, r])
    x = kl.MaxPooling2D(2, name="pool")(x)
    out1 = kl.Conv2D(6, 1, name="head_small")(x)
    b1 = kl.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="b1")(x)
    b2 = kl.Conv2D(4, 1, strides=2, name="b2")(x)
    b2 = kl.ReLU(name="b2_relu")(b2)
    y = kl.Concatenate(name="cat")([b1, b2])
    y = kl.Conv2D(16, 3, padding="same", activation="relu", name="c3")(y)
    y = kl.GlobalAveragePooling2D(name="gap")(y)
    out2 = kl.Dense(5, name="fc")(y)
    model = keras.Model(inp, [out1, out2], name="dag")
    calibrate_batch_norm(model)
    return model


def run_tflite(path, x):
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def test_cut_points_respect_blocks_branches_fusion_and_outputs():
    cuts = [c.name for c in cut_layers(build_graph(dag_model()))]
    # 'pool' feeds the small output head and both branches, but all of that lies beyond it: one tensor.
    assert cuts == ["a1", "res_add", "pool"]
    for never in ("c1", "bn1", "res_conv", "res_relu", "b1", "b2", "cat", "head_small", "fc"):
        assert never not in cuts


@pytest.fixture(scope="module")
def dag_bundle(tmp_path_factory):
    model = dag_model()
    out = tmp_path_factory.mktemp("bundles") / "dag"
    manifest = convert(model, out, log=lambda *_: None)
    return model, out, manifest


def test_every_split_and_every_fallback_equals_the_whole_model(dag_bundle):
    """Per split: the head (segments 1..p under LiteRT) gives the cut tensor, the edge's tail the
    model's outputs from it, and the device's fallback (segments p+1..end) the same outputs, in the
    manifest's order: no sorting, so a reordered multi-output model would fail here."""
    model, out, manifest = dag_bundle
    runner = SegmentRunner(Bundle(out))
    rng = np.random.default_rng(0)
    x = rng.random((1, 32, 32, 3), dtype=np.float32)
    want = [np.asarray(t) for t in model(x, training=False)]
    assert [list(w.shape) for w in want] == [o.shape for o in manifest.model.outputs]
    edge = load_keras_model(out / manifest.splits[0].tail.path)
    scale = max(1.0, max(float(np.max(np.abs(w))) for w in want))
    errors = {}
    for split in manifest.splits:
        head = runner.run(split.index, x)
        if split.tail is None:  # device-only: every segment, the model's outputs in order
            errors[f"device-only {split.index}"] = max(float(np.max(np.abs(g - w))) for g, w in zip(head, want))
            continue
        assert [list(s.shape) for s in head] == split.shapes and sum(s.nbytes for s in head) == split.transfer_bytes
        if split.index:
            refs = [np.asarray(keras.Model(model.input, model.get_layer(n).output)(x, training=False))
                    for n in split.names]
            errors[f"head {split.index}"] = max(float(np.max(np.abs(s - r))) for s, r in zip(head, refs))
        tail = [np.asarray(t) for t in tail_model(edge, split.names)(head if len(head) > 1 else head[0],
                                                                      training=False)]
        fallback = runner.finish(split.index, head)
        assert len(tail) == len(fallback) == len(want)
        errors[f"tail {split.index}"] = max(float(np.max(np.abs(g - w))) for g, w in zip(tail, want))
        errors[f"fallback {split.index}"] = max(float(np.max(np.abs(g - w))) for g, w in zip(fallback, want))
    assert max(errors.values()) <= 1e-4 * scale, errors
    assert len(errors) == 3 * (len(manifest.splits) - 1)  # heads 1..3, tails and fallbacks 0..3, device-only


def test_the_device_side_stores_each_weight_once(dag_bundle):
    model, out, manifest = dag_bundle
    segments = sum((out / s.file.path).stat().st_size for s in manifest.segments)
    whole = len(to_tflite(model))
    assert segments <= 1.1 * whole + 4096 * len(manifest.segments), (segments, whole)


def test_manifest_is_read_by_the_device_and_matches_the_model(dag_bundle, tmp_path):
    model, out, manifest = dag_bundle
    profile = load_profile(out, device_macs_per_s=1e9)
    # input, a1, res_add, pool, then pool (which the small head reads last) with cat, and with gap; device-only
    assert [s.cut for s in manifest.splits] == ["image", "a1", "res_add", "pool", "pool + cat", "pool + gap", None]
    assert profile.n_splits == len(manifest.splits) == 7
    assert np.all(profile.contexts[-1] == 0)
    assert profile.contexts[0, 6] == 32 * 32 * 3 * 8  # the input travels as its 8-bit image
    # conv MACs left to the edge shrink as the cut moves in; front MACs grow
    assert list(profile.contexts[:, 0]) == sorted(profile.contexts[:, 0], reverse=True)
    assert [s.front_macs for s in manifest.splits] == sorted(s.front_macs for s in manifest.splits)
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["schema_version"] == 3 and doc["model"]["content_hash"]


def test_rerun_on_an_unchanged_model_rewrites_nothing(dag_bundle):
    model, out, _ = dag_bundle
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    lines = []
    convert(model, out, log=lines.append)
    assert any("up to date" in line for line in lines)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_tiny_yolov2_contexts_match_the_paper():
    model = tiny_yolov2(classes=80, size=416)
    _, cuts, splits = plan_splits(model)
    assert splits[0]["context"][0] == 3_537_437_696
    assert splits[1]["tensors"][0]["name"] == "leaky1" and splits[1]["context"][0] == 3_462_677_504
    assert splits[0]["context"][1] == 9 and splits[0]["context"][5] == 22  # 8 batch-norm + 8 leaky + 6 pools
    assert splits[0]["transfer_bytes"] == 416 * 416 * 3 * 4
    assert len(splits) == 16 and splits[-1]["context"] == [0.0] * 7


def test_bad_models_are_refused_clearly(tmp_path):
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.c = kl.Conv2D(2, 1)

        def call(self, x):
            return self.c(x)

    with pytest.raises(ModelError, match="subclassed"):
        build_graph(Sub())

    inp = keras.Input((8, 8, 3))
    joined = kl.Add()([kl.Conv2D(4, 1)(inp), kl.Conv2D(4, 3, padding="same")(inp)])
    with pytest.raises(ModelError, match="at most 1 tensors separate the input from the outputs: there is nothing"):
        convert(keras.Model(inp, joined), tmp_path / "b", log=lambda *_: None, max_tensors=1)
    assert not any(tmp_path.iterdir())  # no half-written bundle
    sent = [[t["name"] for t in s["tensors"]] for s in plan_splits(keras.Model(inp, joined))[2]]
    assert len(sent) == 3 and len(sent[1]) == 2  # by default: the two branches before their add, one cut

    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="broken.keras: not a .keras archive"):
        load_keras_model(tmp_path / "broken.keras")
    with pytest.raises(ModelError, match="expected a Keras model file"):
        load_keras_model(tmp_path / "model.onnx")
    with pytest.raises(BundleError, match="cannot read"):
        read_manifest(tmp_path)


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ModelError, match="cannot write the bundle there"):
        convert(dag_model(), tmp_path / "a-file" / "bundle", log=lambda *_: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_the_simulator_and_experiments_take_a_converted_bundle(dag_bundle, capsys):
    from ans.cli import main

    _, out, _ = dag_bundle
    assert main(["simulate", "--profile", str(out), "--trace", "bandwidth-drop", "--frames", "300", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 300


def test_codec_report_measures_each_codec_on_each_split(dag_bundle):
    from common.bundle import CODEC_REPORT as REPORT_FILE
    from converter.report import codec_report

    _, out, manifest = dag_bundle
    report = codec_report(out, samples=2, log=lambda *_: None)
    offloading = [s for s in manifest.splits if s.tail is not None]
    # Split 0: the float codecs, int8 and the image codecs; the others (no calibrated ranges): the fixed-size ones.
    assert len(report["rows"]) == 5 + 3 * (len(offloading) - 1)
    for row in report["rows"]:
        split = manifest.splits[row["split"]]
        if row["codec"] in ("uint8", "jpeg"):
            assert row["split"] == 0 and row["bytes"] <= split.transfer_bytes // 4
            continue
        assert row["max_rel_error"] <= {"float32": 0.0, "float16": 1e-2, "int8": 5e-2}[row["codec"]], row
        assert row["bytes"] == split.transfer_bytes // {"float32": 1, "float16": 2, "int8": 4}[row["codec"]]
        assert row["bits_per_value"] == {"float32": 32, "float16": 16, "int8": 8}[row["codec"]]
    assert json.loads((out / REPORT_FILE).read_text())["samples"] == 2


def test_a_calibrated_bundles_report_prices_the_low_bit_codecs_and_their_accuracy(demo_bundle):
    """With ranges measured at conversion: int4, int3 and int2 at every cut, a fraction of int8's bytes
    on the demo's scenes, and each codec's detections scored against float32's own."""
    from common.scenes import make_frame
    from converter.report import codec_report

    rng = np.random.default_rng(5)
    images = np.stack([make_frame(rng, 256)[0] for _ in range(3)]).astype(np.float32) / 255
    rows = codec_report(demo_bundle / "bundle", images=images, log=lambda *_: None)["rows"]
    at = {(r["split"], r["codec"]): r for r in rows}
    assert {c for s, c in at if s == 4} == {"float32", "float16", "int8", "int4", "int3", "int2"}
    assert at[0, "jpeg"]["bits_per_value"] < 1 and at[4, "int2"]["bits_per_value"] < 1
    assert at[4, "float32"]["map50_vs_float32"] == 1.0
    assert 0.0 <= at[4, "int2"]["map50_vs_float32"] <= 1.0


def test_a_residual_add_and_its_activation_are_one_cut():
    """ResNet's block ends in add | relu: cutting between them would give a redundant split."""
    inp = keras.Input((16, 16, 4), name="image")
    x = kl.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    y = kl.Conv2D(4, 3, padding="same", name="c2")(x)
    x = kl.Add(name="add")([x, y])
    x = kl.ReLU(name="add_relu")(x)
    out = kl.Conv2D(2, 1, name="out")(x)
    cuts = [c.name for c in cut_layers(build_graph(keras.Model(inp, out)))]
    assert cuts == ["c1", "add_relu"]


def test_int8_segments_are_smaller_and_close_to_float32(dag_bundle, tmp_path):
    model, out, manifest = dag_bundle
    rng = np.random.default_rng(3)
    calibration = rng.random((32, 32, 32, 3), dtype=np.float32)
    quantized = convert(model, tmp_path / "int8", calibration=calibration, log=lambda *_: None)
    assert {s.precision for s in quantized.segments} == {"int8"}
    assert {s.precision for s in manifest.segments} == {"float32"}
    size = lambda m, folder: sum((folder / s.file.path).stat().st_size for s in m.segments)  # noqa: E731
    assert size(quantized, tmp_path / "int8") < size(manifest, out)  # (a toy: file headers weigh; 3.5x on the demo)
    x = rng.random((1, 32, 32, 3), dtype=np.float32)
    runner = SegmentRunner(Bundle(tmp_path / "int8"))
    got = runner.run(quantized.device_only, x)
    want = [np.asarray(t) for t in model(x, training=False)]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32 and float(np.max(np.abs(g - w))) <= 0.05 * float(np.ptp(w))
    # Fused, int8 segments meet in int8 (requantized, or as they are where both sides share a scale):
    # as close to float32 as the chained segments.
    head = runner.fuse(quantized.device_only)
    ops = head[0]._get_ops_details()
    types = {t["index"]: t["dtype"] for t in head[0].get_tensor_details()}
    names = [op["op_name"] for op in ops]
    assert names.count("DEQUANTIZE") == len(want), names  # the outputs only: no float round trip inside
    requantized = [op for op in ops if op["op_name"] == "QUANTIZE" and types[op["inputs"][0]] != np.float32]
    assert len(requantized) == names.count("QUANTIZE") - 1, names  # all but the image's are int8 -> int8
    fused = runner.invoke(head, [x])
    for f, w in zip(fused, want, strict=True):
        assert f.dtype == np.float32 and float(np.max(np.abs(f - w))) <= 0.05 * float(np.ptp(w))
    lines = []
    convert(model, tmp_path / "int8", log=lines.append)  # float32 asked of an int8 bundle: rewritten
    assert not any("up to date" in line for line in lines)
    assert {s.precision for s in read_manifest(tmp_path / "int8").segments} == {"float32"}


def test_int8_needs_images_like_the_devices_frames(tmp_path):
    import subprocess

    from .running import ANS, ENV

    def convert_cli(*extra):
        return subprocess.run(ANS + ["convert", "--model", str(model_file), "--out", str(tmp_path / "b"), *extra],
                              capture_output=True, text=True, timeout=120, env=ENV)

    model_file = tmp_path / "m.keras"
    dag_model().save(model_file)
    missing = convert_cli("--quantize", "int8")
    assert missing.returncode == 2 and "--quantize int8 needs --calibration-images DIR" in missing.stderr
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "broken.jpg").write_bytes(b"not an image")
    empty = convert_cli("--quantize", "int8", "--calibration-images", str(tmp_path / "frames"))
    assert empty.returncode == 2
    assert empty.stderr.strip().splitlines() == [f"ans convert: error: {tmp_path / 'frames'}: no readable images "
                                                 "(.bmp, .jpeg, .jpg, .png, .webp) to calibrate int8 with"]
    import cv2

    for k in range(4):
        cv2.imwrite(str(tmp_path / "frames" / f"{k}.png"), np.random.default_rng(k).integers(0, 255, (40, 50, 3),
                                                                                          dtype=np.uint8))
    done = convert_cli("--quantize", "int8", "--calibration-images", str(tmp_path / "frames"))
    assert done.returncode == 0, done.stderr
    assert "calibrating with 4 images" in done.stdout and done.stderr == ""
    assert {s.precision for s in read_manifest(tmp_path / "b").segments} == {"int8"}
