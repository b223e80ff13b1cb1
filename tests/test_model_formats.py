"""The detectors people bring: ONNX (shaped like YOLOv8, YOLOX and SSD-MobileNet exports), TFLite, a
SavedModel and a reloaded Keras Sequential model, each converted and every split checked against the
original model run by its own runtime; and the files and layers that cannot be converted, refused in
one line that says what to do."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import subprocess  # noqa: E402
import zipfile  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from keras import layers as kl  # noqa: E402

from common.bundle import read_manifest  # noqa: E402
from common.keras_model import ModelError  # noqa: E402
from common.model_files import model_format  # noqa: E402
from converter.bundle import convert, plan_splits, tflite_failure, to_tflite  # noqa: E402
from converter.user_model import _labels, load_user_model  # noqa: E402
from converter.verify import VERIFY_FILE, verify_bundle  # noqa: E402
from lab.onnx_models import GraphBuilder, ssd_mobilenet, yolov8, yolox  # noqa: E402

from .running import ANS, ENV  # noqa: E402


def converted(path, fmt, out):
    """Convert as ``ans convert`` does: every split checked against the original, or no bundle."""
    user = load_user_model(path, fmt)
    images = np.random.default_rng(7).random((2, *[int(d) for d in user.model.input.shape[1:]]), dtype=np.float32)
    manifest = convert(user.model, out, log=lambda *_: None,
                       check=lambda folder: verify_bundle(folder, user.reference, user.runtime, images,
                                                          log=lambda *_: None))
    report = json.loads((out / VERIFY_FILE).read_text())
    assert [r["index"] for r in report["splits"]] == [s.index for s in manifest.splits]
    assert all(r["ok"] and r["fallback"] <= 1e-4 and r["tail"] <= 1e-4 for r in report["splits"]), report
    return user, manifest


def test_a_yolov8_shaped_onnx_converts_with_every_split_equal_to_onnxruntime(tmp_path):
    path = tmp_path / "yolov8.onnx"
    onnx.save(yolov8(size=128, classes=3, width=0.125), path)
    assert model_format(path) == ("onnx", None)
    user, manifest = converted(path, "onnx", tmp_path / "bundle")
    assert user.runtime.startswith("onnxruntime") and user.labels == ["class0", "class1", "class2"]
    assert manifest.model.input.shape == [1, 128, 128, 3]  # NCHW in ONNX, NHWC for the device
    assert manifest.model.outputs[0].shape == [1, 7, 16 * 16 + 8 * 8 + 4 * 4]
    cuts = [s.cut for s in manifest.splits[1:-1]]
    several = [s for s in manifest.splits if len(s.tensors) > 1]
    assert len(manifest.splits) >= 12 and len(several) >= 4  # the neck and head: two or three levels alive
    assert all(len(s.tensors) <= 3 and s.transfer_bytes == sum(4 * np.prod(t.shape) for t in s.tensors)
               for s in several)
    # SiLU is Sigmoid x Mul in ONNX: never a cut between a convolution and its activation
    assert not any(c.startswith(("conv_", "c2f_cv", "bottleneck", "sppf_cv")) for c in cuts), cuts


@pytest.mark.parametrize("build,outputs", [(lambda: yolox(size=96, classes=4, width=0.125), [[1, 189, 9]]),
                                           (lambda: ssd_mobilenet(size=96, classes=5, width=0.25),
                                            [[1, 3 * (36 + 9), 4], [1, 3 * (36 + 9), 5]])])
def test_yolox_and_ssd_shaped_onnx_convert_losslessly(tmp_path, build, outputs):
    path = tmp_path / "model.onnx"
    onnx.save(build(), path)
    _, manifest = converted(path, "onnx", tmp_path / "bundle")
    assert [o.shape for o in manifest.model.outputs] == outputs
    assert len(manifest.splits) >= 8


def test_a_trained_tflite_detector_and_a_saved_model_convert_against_their_runtimes(tmp_path):
    from converter.zoo import demo_model

    model = demo_model()
    (tmp_path / "demo.tflite").write_bytes(to_tflite(model))
    assert model_format(tmp_path / "demo.tflite") == ("tflite", None)
    user, manifest = converted(tmp_path / "demo.tflite", "tflite", tmp_path / "from-tflite")
    assert user.runtime.startswith("LiteRT")
    keras_splits = plan_splits(model)[2]
    assert [s.names for s in manifest.splits[1:-1]] == [[t["name"] for t in s["tensors"]]
                                                        for s in keras_splits[1:-1]]  # same layer names
    assert [s.transfer_bytes for s in manifest.splits] == [s["transfer_bytes"] for s in keras_splits]

    model.export(tmp_path / "saved", verbose=False)
    assert model_format(tmp_path / "saved") == ("savedmodel", None)
    user, manifest = converted(tmp_path / "saved", "savedmodel", tmp_path / "from-saved")
    assert user.runtime.startswith("TensorFlow") and len(manifest.splits) == len(keras_splits)


def test_a_reloaded_sequential_model_converts(tmp_path):
    """Keras 3 gives a reloaded Sequential model's layers several inbound nodes: not shared weights."""
    keras.Sequential([keras.Input((64, 64, 3)), kl.Conv2D(8, 3, padding="same", activation="relu"),
                      kl.MaxPooling2D(), kl.Conv2D(10, 1)]).save(tmp_path / "seq.keras")
    _, manifest = converted(tmp_path / "seq.keras", "keras", tmp_path / "bundle")
    assert len(manifest.splits) == 4


def test_a_bundle_that_differs_from_the_original_is_not_written(tmp_path):
    path = tmp_path / "ssd.onnx"
    onnx.save(ssd_mobilenet(size=64, classes=3, width=0.25), path)
    user = load_user_model(path, "onnx")
    images = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)

    def wrong(x):
        return [o * 1.001 for o in user.reference(x)]

    with pytest.raises(ModelError, match=r"split 0 .* differs from the original model by 1\.0e-03"):
        convert(user.model, tmp_path / "bundle", log=lambda *_: None,
                check=lambda folder: verify_bundle(folder, wrong, "test", images, log=lambda *_: None))
    assert not (tmp_path / "bundle").exists()


def _onnx_with(tmp_path, op, *, opset=17, dynamic=False, **attrs):
    g = GraphBuilder()
    x = g.conv("images", 3, 4, 3)
    if op == "NonMaxSuppression":
        y = g.node("NonMaxSuppression", [g.node("Reshape", [x, g.const(np.array([1, -1, 4], dtype=np.int64))]),
                                         g.node("Reshape", [x, g.const(np.array([1, 1, -1], dtype=np.int64))])])
    else:
        y = g.node(op, [x], **attrs)
    model = g.model("images", [1, 3, "h" if dynamic else 32, 32], {y: None}, "bad", opset=opset)
    path = tmp_path / f"{op}.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("case,message", [
    (dict(op="NonMaxSuppression"), r"ONNX node 'nonmaxsuppression_\d+' \(NonMaxSuppression\): not supported: export "
                                   r"without NMS \(Ultralytics: nms=False\)"),
    (dict(op="Relu", opset=10), "uses opset 10: export it with opset 11 or later"),
    (dict(op="Relu", dynamic=True), r"has a dynamic size \(h in dimension 2\): export with a fixed input size"),
    (dict(op="LpNormalization"), r"\(LpNormalization\): not supported: re-export the model without it"),
    (dict(op="MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
     r"pads \[1, 1, 1, 1\] with strides \[2, 2\]: only the padding of Keras' 'same'"),
])
def test_onnx_nodes_that_do_not_convert_are_named_with_what_to_do(tmp_path, case, message):
    path = _onnx_with(tmp_path, **case)
    with pytest.raises(ModelError, match=message) as err:
        load_user_model(path, "onnx")
    assert "\n" not in str(err.value)


def test_keras_layers_that_do_not_convert_are_named_with_what_to_do(tmp_path):
    inp = keras.Input((16, 16, 3))
    x = kl.Lambda(lambda t: t * 2, name="double")(kl.Conv2D(4, 3)(inp))
    keras.Model(inp, kl.Conv2D(2, 1)(x)).save(tmp_path / "lambda.keras")
    with pytest.raises(ModelError, match="layer 'double' is a Lambda layer .* replace the Lambda layer"):
        load_user_model(tmp_path / "lambda.keras", "keras")
    x = kl.LSTM(8, name="lstm")(kl.Reshape((14, 56))(kl.Conv2D(4, 3)(inp)))
    with pytest.raises(ModelError, match=r"layer 'lstm' \(LSTM\): recurrent layers"):
        convert(keras.Model(inp, kl.Dense(2)(x)), tmp_path / "b", log=lambda *_: None)
    mlir = ("<unknown>:0: error: loc(callsite(fused[\"TensorListReserve:\", \"segment_2_1/lstm_1/TensorArrayV2_1@"
            "__inference_function_1126\"] at ...)): 'tf.TensorListReserve' op requires element_shape to be static")
    assert tflite_failure("segment_2", mlir) == (
        "'segment_2': TensorFlow op tf.TensorListReserve in layer 'lstm' has no TFLite built-in equivalent; "
        "replace that layer by standard convolution, pooling, element-wise and reshaping layers")


def test_metadata_labels_are_read_as_literals_never_run():
    assert _labels("{0: 'person', 1: 'bicycle'}") == ["person", "bicycle"]
    assert _labels("__import__('os').system('touch /tmp/owned')") == []
    assert _labels("{0: 'a', 5: 'b'}") == []


def test_the_format_is_read_from_the_content_and_a_foreign_file_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "yolov4-tiny.cfg").write_text("[net]\nwidth=416\n")
    with zipfile.ZipFile(tmp_path / "best.pt", "w") as archive:
        archive.writestr("best/data.pkl", b"\x80\x02}q\x00.")
    (tmp_path / "empty").mkdir()
    expected = {"notes.txt": "not a model the converter reads", "yolov4-tiny.cfg": "a Darknet cfg; convert it "
                "with --darknet", "best.pt": "a PyTorch checkpoint; export it to ONNX first",
                "empty": "a folder without saved_model.pb"}
    for name, message in expected.items():
        fmt, problem = model_format(tmp_path / name)
        assert fmt is None and problem.startswith(f"{tmp_path / name}: {message}"), problem
    proc = subprocess.run(ANS + ["convert", "--model", str(tmp_path / "best.pt"), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"ans convert: error: {expected_line(tmp_path / 'best.pt')}"]


def expected_line(path) -> str:
    return model_format(path)[1]


def test_ans_convert_takes_an_onnx_file_by_its_content(tmp_path):
    path = tmp_path / "detector.bin"  # a name that says nothing
    onnx.save(ssd_mobilenet(size=64, classes=3, width=0.25), path)
    proc = subprocess.run(ANS + ["convert", "--model", str(path), "--out", str(tmp_path / "bundle")],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert "every split against the original (onnxruntime" in proc.stdout
    assert "converted in" in proc.stdout
    manifest = read_manifest(tmp_path / "bundle")
    assert len(manifest.model.outputs) == 2 and manifest.model.input.shape == [1, 64, 64, 3]


def test_the_decoder_and_labels_are_told_by_the_outputs(tmp_path):
    from converter.decoders import choose_decoding

    rng = np.random.default_rng(0)
    for build, kind, classes in ((lambda: yolov8(size=64, classes=3, width=0.125), "yolov8", 3),
                                 (lambda: yolox(size=64, classes=4, width=0.125), "yolox", 4),
                                 (lambda: ssd_mobilenet(size=64, classes=5, width=0.25), "boxes-scores", 5)):
        path = tmp_path / f"{kind}.onnx"
        onnx.save(build(), path)
        user = load_user_model(path, "onnx")
        shapes = [[1, *[int(d) for d in t.shape[1:]]] for t in user.model.outputs]
        sample = user.reference(rng.random((1, 64, 64, 3), dtype=np.float32))
        decoding = choose_decoding("auto", shapes, sample, (64, 64), user.labels)
        assert (decoding.kind, decoding.classes) == (kind, classes)
        assert decoding.strides == ([8, 16, 32] if kind == "yolox" else [])  # the export left the decode out
    assert decoding.labels == []
    with pytest.raises(ModelError, match="2 labels for a model with 5 classes"):
        choose_decoding("auto", shapes, sample, (64, 64), ["a", "b"])
    with pytest.raises(ModelError, match="--decoder yolov8 does not fit"):
        choose_decoding("yolov8", shapes, sample, (64, 64), [])


def test_a_cut_of_three_tensors_travels_through_the_real_broker_and_edge(tmp_path):
    """A YOLOv8-shaped model's split through its neck, live: the device's head computes three tensors,
    one request carries them through Mosquitto, the edge's tail takes all three; every frame is
    answered by the edge with the detections the device finds on its own."""
    from common.detect import detections
    from converter.decoders import choose_decoding
    from device_app.learner.policy import FixedSplit
    from device_app.runtime import make_device
    from device_app.settings import DeviceSettings
    from device_app.sources import preprocess
    from mqtt.connection import MqttSettings

    from .broker import started
    from .running import dev_config, start_edge, stop

    path = tmp_path / "yolov8.onnx"
    onnx.save(yolov8(size=96, classes=3, width=0.125), path)
    user = load_user_model(path, "onnx")
    sample = user.reference(np.random.default_rng(0).random((1, 96, 96, 3), dtype=np.float32))
    decoding = choose_decoding("auto", [[1, 7, 189]], sample, (96, 96), user.labels)
    manifest = convert(user.model, tmp_path / "bundle", decoding=decoding, log=lambda *_: None)
    split = next(s for s in manifest.splits if len(s.tensors) == 3)
    frames = [np.random.default_rng(k).integers(0, 255, (120, 160, 3), dtype=np.uint8) for k in range(6)]
    with started(dev_config(), tmp_path) as broker:
        edge = start_edge(tmp_path, broker.port)
        device = make_device(DeviceSettings(bundle=str(tmp_path / "bundle"), id="cam-neck", policy="device-only",
                                            state_dir=str(tmp_path / "state"),
                                            mqtt=MqttSettings(broker=f"mqtt://127.0.0.1:{broker.port}")))
        try:
            device.policy = FixedSplit(device.policy.profile, split.index, "neck")
            device.connect()
            assert device.view.edges, "the edge's retained status did not arrive"
            records = [device.process(k, frame) for k, frame in enumerate(frames)]
            local = [device.model.runner.run(manifest.device_only, preprocess(f, device.model.input_size,
                                                                              device.model.input_scale))
                     for f in frames]
        finally:
            device.link.close()
            stop(edge)
    assert all(r.edge and r.split == split.index and not r.fallback for r in records), records
    for r, outputs in zip(records, local):
        mine = np.array(detections(outputs, decoding, (96, 96))).reshape(-1, 6)
        theirs = np.array(r.detections).reshape(-1, 6)
        assert mine.shape == theirs.shape and np.allclose(mine, theirs, atol=2e-3)
    assert sum(len(r.detections) for r in records) > 0


def test_a_tflite_models_packed_label_file_is_read():
    """TFLite Metadata packs the label file in a zip appended to the flatbuffer."""
    import io

    from converter.user_model import _tflite_labels

    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("labelmap.txt", "person\nbicycle\n\ncar\n")
    assert _tflite_labels(b"TFL3-flatbuffer-bytes" + packed.getvalue()) == ["person", "bicycle", "car"]
    assert _tflite_labels(b"no zip here") == []


def test_a_tensorflow_style_export_pads_explicitly_and_keeps_its_batch_norm(tmp_path):
    """tf2onnx writes a Pad before a strided convolution and leaves a depthwise convolution's batch
    norm as Mul and Add by constants: zeros around height and width convert, and no cut falls between
    a convolution and its scale, shift and activation (TFLite folds them into one op)."""
    g = GraphBuilder()
    x = g.conv("images", 3, 8, 3, act="relu6")
    x = g.node("Pad", [x, g.const(np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.int64))])
    w = g.rng.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32)
    x = g.node("Conv", [x, g.const(w)], kernel_shape=[3, 3], strides=[2, 2], group=8, prefix="dw")
    x = g.node("Mul", [x, g.const(g.rng.uniform(0.5, 2, (1, 8, 1, 1)).astype(np.float32))], prefix="bn_scale")
    x = g.node("Add", [x, g.const(g.rng.normal(0, 0.1, (1, 8, 1, 1)).astype(np.float32))], prefix="bn_shift")
    x = g.node("Clip", [x, g.const(np.float32(0)), g.const(np.float32(6))], prefix="dw_relu6")
    out = g.conv(x, 8, 4, 1, act=None, prefix="head")
    path = tmp_path / "tf_style.onnx"
    onnx.save(g.model("images", [1, 3, 32, 32], {out: [1, 4, 16, 16]}, "tf_style"), path)
    _, manifest = converted(path, "onnx", tmp_path / "bundle")
    cuts = [s.cut for s in manifest.splits[1:-1]]
    # after the first activation, after the depthwise block's activation (not its convolution, scale
    # or shift), and before the output's transpose back to NCHW
    assert cuts == ["clip_6", "dw_relu6_17", "head_20"], cuts
    with pytest.raises(ModelError, match=r"reflect padding .* only zeros around the height and width"):
        next(n for n in g.nodes if n.op_type == "Pad").attribute.append(onnx.helper.make_attribute("mode", "reflect"))
        onnx.save(g.model("images", [1, 3, 32, 32], {out: [1, 4, 16, 16]}, "tf_style"), path)
        load_user_model(path, "onnx")
