"""codec = "auto": per split, the fewest bytes among the codecs whose measured accuracy cost is within
the budget (with learn_codec, the fewest among the cheap-to-encode ones too, as a second arm);
nothing lossy without a measurement."""

import json
from types import SimpleNamespace

from common.bundle import CODEC_REPORT as REPORT_FILE
from device_app.codec_choice import wire_arms


def wire_codecs(bundle, codec, image_codec, budget, learn=False):
    """Each split's codecs, as the arms list them."""
    arms = wire_arms(bundle, codec, image_codec, budget, learn)
    return [[arms.codec[a] for a in arms.of_split(k)] for k in range(len(bundle.splits))]


def _bundle(folder, rows=None):
    sizes = [{"float32": 800, "float16": 400, "int8": 200, "uint8": 200, "jpeg": 20},
             {"float32": 400, "float16": 200, "int8": 100, "int4": 30, "int3": 20, "int2": 10},
             {"float32": 100, "float16": 50, "int8": 25, "int4": 9, "int3": 6, "int2": 3},
             {"float32": 0}]
    splits = [SimpleNamespace(index=k, codec_bytes=b, shapes=[[1, 10]] if k < 3 else [],
                              tensors=[1] if k < 3 else []) for k, b in enumerate(sizes)]
    if rows is not None:
        (folder / REPORT_FILE).write_text(json.dumps({"rows": rows}))
    return SimpleNamespace(splits=splits, folder=folder)


def test_auto_takes_the_fewest_bytes_within_the_budget(tmp_path):
    measured = {(0, "jpeg"): 0.995, (1, "int8"): 1.0, (1, "int4"): 0.999, (1, "int3"): 0.991, (1, "int2"): 0.95,
                (2, "int2"): float("nan"), (2, "int8"): 0.999}
    rows = [{"split": split, "codec": codec, "map50_vs_float32": m} for (split, codec), m in measured.items()]
    bundle = _bundle(tmp_path, rows)
    # int2 over the budget, NaN unmeasured
    assert wire_codecs(bundle, "auto", "uint8", 0.01)[:3] == [["jpeg"], ["int3"], ["int8"]]
    assert wire_codecs(bundle, "auto", "uint8", 0.0015)[:3] == [["uint8"], ["int4"], ["int8"]]
    assert wire_codecs(bundle, "auto", "uint8", 0.0)[:3] == [["uint8"], ["int8"], ["float16"]]
    # learn_codec: the cheap codec beside the smallest where they differ
    assert wire_codecs(bundle, "auto", "uint8", 0.01, True)[:3] == [["jpeg", "uint8"], ["int3", "int8"], ["int8"]]
    assert wire_codecs(bundle, "auto", "uint8", 0.0015, True)[:3] == [["uint8"], ["int4", "int8"], ["int8"]]
    assert wire_codecs(bundle, "int2", "uint8", 0.01, True)[:2] == [["uint8"], ["int2"]]  # a named codec is one arm


def test_without_a_report_auto_sends_only_what_costs_no_accuracy(tmp_path, caplog):
    assert wire_codecs(_bundle(tmp_path), "auto", "jpeg", 0.5)[:3] == [["uint8"], ["float16"], ["float16"]]
    assert "no codec report" in caplog.text
    (tmp_path / REPORT_FILE).write_text("{not json")
    assert wire_codecs(_bundle(tmp_path), "auto", "jpeg", 0.5)[:3] == [["uint8"], ["float16"], ["float16"]]


def test_a_named_codec_is_used_as_it_is(tmp_path):
    arms = wire_arms(_bundle(tmp_path), "int2", "jpeg", 0.0)
    assert arms.pairs() == [(0, "jpeg"), (1, "int2"), (2, "int2"), (3, "int2")]
    assert [arms.label(a) for a in range(len(arms))] == ["0/jpeg", "1/int2", "2/int2", "3/int2"]


def test_a_named_codec_the_bundle_or_the_device_cannot_send_is_refused_at_start(tmp_path, monkeypatch):
    import pytest

    import device_app.codec_choice as choice
    from common.errors import ConfigurationError

    bundle = _bundle(tmp_path)
    for split in bundle.splits:  # converted without sample images: no low-bit sizes
        split.codec_bytes = {c: n for c, n in split.codec_bytes.items() if not c.startswith("int") or c == "int8"}
    with pytest.raises(ConfigurationError, match="--calibration-images"):
        wire_codecs(bundle, "int2", "uint8", 0.01)
    assert wire_codecs(bundle, "int8", "uint8", 0.01)[:2] == [["uint8"], ["int8"]]
    monkeypatch.setattr(choice, "jpeg_available", lambda: False)
    with pytest.raises(ConfigurationError, match="OpenCV"):
        wire_codecs(bundle, "int8", "jpeg", 0.01)
