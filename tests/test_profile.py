import json

import numpy as np
import pytest

from device_app.learner.profile import ProfileError, load_profile


def test_builtin_profiles_load_in_paper_order(tiny, vgg):
    assert (tiny.n_splits, vgg.n_splits) == (32, 23)
    # conv MACs of the whole back end at index 0 and after the first conv block (paper's table)
    assert tiny.contexts[0, 0] == 3_537_437_696
    assert tiny.contexts[1, 0] == 3_462_677_504
    assert tiny.contexts[0, 6] == 16_614_800  # transfer bits of the input
    assert np.all(tiny.contexts[-1] == 0) and tiny.device_only == 31
    assert tiny.front_delay_s[0] == 0.0 and tiny.front_delay_s[-1] == pytest.approx(0.116404)


def _manifest(splits, version=3):
    """A complete manifest (the reader is strict), with these splits and segments that chain them."""
    tensor = {"name": "x", "shape": [1, 4, 4, 3], "dtype": "float32"}
    sent = [s["tensors"][0] for s in splits[:-1]]
    segments = [{"index": k, "file": {"path": f"segments/segment_{k:03d}.tflite", "sha256": "0" * 64},
                 "inputs": [sent[k - 1]], "input_order": [0],
                 "outputs": [sent[k] if k < len(sent) else {**tensor, "name": "out"}], "output_order": [0]}
                for k in range(1, len(splits))]
    return {"schema_version": version, "splits": splits, "segments": segments, "converter": {},
            "model": {"name": "toy", "input": tensor, "outputs": [{**tensor, "name": "out"}], "content_hash": "ab" * 32,
                      "preprocessing": {"size": [4, 4]}, "decoding": {"kind": "none"}}}


def _split(i, ctx, front_macs):
    nbytes = ctx[6] // 8
    if i == 0:
        sent = [{"name": "x", "shape": [1, 4, 4, 3], "dtype": "float32"}]
    else:
        sent = [{"name": f"l{i}", "shape": [1, nbytes // 4], "dtype": "float32"}] if nbytes else []
    return {"index": i, "context": ctx, "front_macs": front_macs, "transfer_bytes": nbytes, "tensors": sent,
            "tail": None, "codec_bytes": {"float32": nbytes, "float16": nbytes // 2, "int8": nbytes // 4}}


def test_manifest_loads_and_estimates_front_delay(tmp_path):
    splits = [_split(0, [100, 2, 0, 0, 10, 2, 800], 0), _split(1, [50, 1, 0, 0, 5, 1, 400], 50),
              _split(2, [0, 0, 0, 0, 0, 0, 0], 100)]
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest(splits)))
    prof = load_profile(tmp_path, device_macs_per_s=100.0)  # a bundle folder works too
    assert prof.name == "toy" and prof.n_splits == 3
    np.testing.assert_allclose(prof.front_delay_s, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(prof.backend_macs, [110, 55, 0])
    # The input travels as its 8-bit image where the bundle says how big that is; the rest as the codec.
    splits[0]["codec_bytes"]["uint8"] = 25
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest(splits)))
    for codec, bits in (("float32", [200, 400, 0]), ("int8", [200, 96, 0])):
        np.testing.assert_allclose(load_profile(tmp_path, codec=codec).contexts[:, -1], bits)
    # Arms: a split may have several rows, each priced with its codec's bytes and its split's front end.
    arms = load_profile(tmp_path, device_macs_per_s=100.0, arms=[(0, "uint8"), (1, "int8"), (1, "float16"), (2, "float32")])
    np.testing.assert_allclose(arms.contexts[:, -1], [200, 96, 200, 0])
    np.testing.assert_allclose(arms.front_delay_s, [0.0, 0.5, 0.5, 1.0])
    assert arms.contexts[1, 0] == arms.contexts[2, 0] == 50 and arms.device_only == 3
    for wrong in ([(0, "uint8"), (2, "float32")], [(1, "int8"), (0, "uint8"), (2, "float32")],
                  [(0, "uint8"), (1, "int8"), (2, "float32"), (2, "float32")]):
        with pytest.raises(ProfileError, match="arms must cover every split"):
            load_profile(tmp_path, arms=wrong)


@pytest.mark.parametrize(
    "doc, message",
    [
        ("{not json", ":1: not valid JSON"),
        (json.dumps(_manifest([], version=99)), "schema_version 99 is not supported"),
        (json.dumps({"splits": [{"index": 1}, {"index": 0}]}), "splits must be ordered"),
        (json.dumps(_manifest([_split(0, [1, 1, 0, 0, 0, 0, 8], 0), _split(1, [1, 0, 0, 0, 0, 0, 0], 1)])),
         "device-only) must leave nothing"),
        (json.dumps(_manifest([{**_split(0, [1, 1, 0, 0, 0, 0, -8], 0), "transfer_bytes": 1}, _split(1, [0] * 7, 1)])),
         "context[6]: must not be negative"),
        (json.dumps(_manifest([{k: v for k, v in _split(0, [0] * 7, 0).items() if k != "context"},
                               _split(1, [0] * 7, 1)])), ": splits[0]: missing key 'context'"),
        (json.dumps(_manifest([{**_split(0, [0] * 7, 0), "extra": 1}, _split(1, [0] * 7, 1)])),
         ": splits[0]: unknown key 'extra'"),
    ],
)
def test_bad_profiles_name_file_and_problem(tmp_path, doc, message):
    path = tmp_path / "p.json"
    path.write_text(doc)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_unknown_profile_name_lists_builtins():
    with pytest.raises(ProfileError, match="tiny-yolov2-tx2"):
        load_profile("no-such-profile")
