"""Darknet cfg + weights: parsing, byte layout, exact weight count, and a bundle from the result."""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from converter.bundle import convert  # noqa: E402
from converter.darknet import build_darknet  # noqa: E402
from converter.graph import ModelError  # noqa: E402

# yolov4-tiny's building blocks at toy size: stride-2 conv, grouped route, concatenation,
# stride-1 max-pool, shortcut, upsampling and two [yolo] heads.
CFG = """
[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[route]
layers=-1
groups=2
group_id=1

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[shortcut]
from=-2
activation=linear

[route]
layers=-1,-4

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask = 3,4,5
anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319
classes=1
num=6

[route]
layers = -4

[upsample]
stride=2

[route]
layers = -1, 5

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask = 0,1,2
anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319
classes=1
num=6
"""


def float_count(model) -> int:
    n = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            n += int(np.prod(layer.kernel.shape)) + int(layer.kernel.shape[-1]) * (1 if layer.use_bias else 4)
    return n


def write(tmp_path, floats: np.ndarray, cfg: str = CFG):
    (tmp_path / "toy.cfg").write_text(cfg)
    header = np.array([0, 2, 5], "<i4").tobytes() + np.array([12345], "<i8").tobytes()
    (tmp_path / "toy.weights").write_bytes(header + floats.astype("<f4").tobytes())
    return tmp_path / "toy.cfg", tmp_path / "toy.weights"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("darknet")
    shape_only, _ = build_darknet(write(tmp, np.zeros(0))[0])
    rng = np.random.default_rng(0)
    floats = rng.normal(0, 0.3, float_count(shape_only)).astype(np.float32)
    # plausible batch-norm variances: make every 4th block of BN numbers positive
    floats = np.abs(floats) + 0.05
    floats[24:32] = 1e-4  # the first batch-norm's variances: small, as trained ones often are
    cfg, weights = write(tmp, floats)
    model, decoding = build_darknet(cfg, weights)
    return tmp, model, decoding, floats


def test_structure_and_decoding(toy):
    _, model, decoding, _ = toy
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(16, 16, 18), (32, 32, 18)]
    assert decoding.kind == "yolo" and decoding.classes == 1 and decoding.masks == [[3, 4, 5], [0, 1, 2]]
    assert len(decoding.anchors) == 6


def test_first_layer_matches_darknet_arithmetic(toy):
    """Conv (Darknet's [out][in][h][w] order, symmetric padding, stride 2) + Darknet batch-norm + leaky.
    The variances include small ones, where sqrt(var + 1e-5) and sqrt(var) + 1e-6 differ by percents."""
    _, model, _, floats = toy
    f, c, k = 8, 3, 3
    beta, gamma, mean, var = (floats[i * f:(i + 1) * f] for i in range(4))
    w = floats[4 * f:4 * f + f * c * k * k].reshape(f, c, k, k)
    x = np.random.default_rng(1).random((64, 64, 3), dtype=np.float32)
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    conv = np.zeros((32, 32, f), np.float32)
    for y in range(32):
        for xx in range(32):
            patch = padded[2 * y:2 * y + 3, 2 * xx:2 * xx + 3, :]  # (ky, kx, c)
            conv[y, xx] = np.einsum("hwc,fchw->f", patch, w)
    bn = gamma * (conv - mean) / np.sqrt(var + 1e-5) + beta  # as cuDNN and AlexeyAB's darknet
    want = np.where(bn > 0, bn, 0.1 * bn)
    probe = keras.Model(model.input, model.get_layer("leaky_0").output)
    got = np.asarray(probe(x[None]))[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_weights_must_match_the_cfg_exactly(toy, tmp_path):
    _, _, _, floats = toy
    cfg, weights = write(tmp_path, np.concatenate([floats, [1.0]]))
    with pytest.raises(ModelError, match="1 floats more than the cfg uses"):
        build_darknet(cfg, weights)
    cfg, weights = write(tmp_path, floats[:-10])
    with pytest.raises(ModelError, match="weights file too short"):
        build_darknet(cfg, weights)


@pytest.mark.parametrize("section, message", [
    ("[crop]\ncrop_width=3\n", r"unsupported section \[crop\]"),
    ("[convolutional]\nfilters=4\nsize=3\nactivation=mish\n", "activation 'mish' is not supported"),
    ("[route]\nlayers=7\n", "route refers to a layer outside"),
    ("[convolutional]\nfilters=4\nsize=3\npad=1\ndilation=2\nactivation=leaky\n", "dilation=2 is not supported"),
])
def test_unsupported_or_broken_cfg_names_the_line(tmp_path, section, message):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[net]\nwidth=32\nheight=32\n\n[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n\n"
                   + section)
    with pytest.raises(ModelError, match=message) as err:
        build_darknet(cfg)
    assert f"{cfg}:11" in str(err.value)


def test_a_darknet_model_becomes_a_bundle(toy, tmp_path):
    _, model, decoding, _ = toy
    manifest = convert(model, tmp_path / "bundle", decoding=decoding, log=lambda *_: None)
    # leaky_1 feeds the whole CSP-style block (grouped route, conv, shortcut, concatenation): inside
    # it only cuts of two or three tensors; the route that ends it is reused by the second head, so
    # after it every cut carries it too. The zero-padding before the stride-2 conv is no cut: it only
    # adds bytes.
    single = [s.cut for s in manifest.splits if len(s.tensors) <= 1]
    assert single == ["image", "leaky_0", "leaky_1", "route_5", None]
    several = [s for s in manifest.splits if len(s.tensors) > 1]
    assert several and all(len(s.tensors) <= 3 for s in several)
    assert all("route_5" in s.names for s in several if s.index > single.index("route_5"))
    assert not any("pad" in name for s in manifest.splits for name in s.names)
    assert manifest.model.decoding.kind == "yolo"
    # The device's own run (every segment) gives the outputs in the manifest's order, as the edge's
    # tail does: TFLite orders these two outputs the other way round.
    from common.bundle import Bundle
    from common.detect import detections
    from common.tflite import SegmentRunner

    x = np.random.default_rng(7).random((1, 64, 64, 3), dtype=np.float32)
    on_device = SegmentRunner(Bundle(tmp_path / "bundle")).run(len(manifest.splits) - 1, x)
    want = [np.asarray(o) for o in model(x, training=False)]
    assert [list(o.shape) for o in on_device] == [o.shape for o in manifest.model.outputs] == \
        [[1, 16, 16, 18], [1, 32, 32, 18]]
    for got, ref in zip(on_device, want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert manifest.segments[-1].output_order == [1, 0]
    found = detections(on_device, decoding, (64, 64))
    assert len(found) == len(detections(want, decoding, (64, 64)))
    # a fresh process (the edge) loads the edge model, custom layer included
    script = ("import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
              "from common.keras_model import load_keras_model\n"
              f"m = load_keras_model({str(tmp_path / 'bundle' / manifest.splits[0].tail.path)!r})\n"
              "print(len(m.outputs))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("2"), proc.stderr[-2000:]


def test_ans_convert_takes_a_darknet_pair(toy, tmp_path, capsys):
    from ans.cli import main

    tmp, _, _, floats = toy
    cfg, weights = write(tmp_path, floats)
    assert main(["convert", "--darknet", str(cfg), str(weights), "--out", str(tmp_path / "b")]) == 0
    assert "route_5" in capsys.readouterr().out
    cfg, weights = write(tmp_path / "b", floats[:100])
    assert main(["convert", "--darknet", str(cfg), str(weights), "--out", str(tmp_path / "c")]) == 2
    assert "weights file too short" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_maxpool_stride_defaults_to_one_and_grouped_routes_slice_each_input(tmp_path):
    """As Darknet's parser: [maxpool] without stride keeps the size; a [route] of two layers with
    groups=2, group_id=1 takes the second half of each input's channels, then concatenates."""
    cfg = tmp_path / "g.cfg"
    cfg.write_text("[net]\nwidth=16\nheight=16\n\n"
                   "[convolutional]\nfilters=4\nsize=1\nstride=1\npad=1\nactivation=linear\n\n"
                   "[convolutional]\nfilters=6\nsize=1\nstride=1\npad=1\nactivation=linear\n\n"
                   "[route]\nlayers=-1,-2\ngroups=2\ngroup_id=1\n\n"
                   "[maxpool]\nsize=2\n")
    model, _ = build_darknet(cfg)
    x = np.random.default_rng(2).random((1, 16, 16, 3), dtype=np.float32)
    a = np.asarray(keras.Model(model.input, model.get_layer("conv_0").output)(x))
    b = np.asarray(keras.Model(model.input, model.get_layer("conv_1").output)(x))
    route = np.asarray(keras.Model(model.input, model.get_layer("route_2").output)(x))
    np.testing.assert_array_equal(route, np.concatenate([b[..., 3:], a[..., 2:]], axis=-1))
    assert tuple(model.outputs[0].shape[1:]) == (16, 16, 5)  # stride 1: the size is kept
