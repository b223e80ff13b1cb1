"""The bundle contract: one schema and one reader. What the converter writes is what the device,
the edge and the learner read, and the reader refuses what the schema does not describe."""

import dataclasses
import json

import pytest

from common.bundle import SCHEMA_VERSION, BundleError, Manifest, parse_manifest, read_manifest


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    pytest.importorskip("keras")
    from converter.bundle import convert

    from .test_converter import dag_model

    out = tmp_path_factory.mktemp("contract") / "dag"
    return out, convert(dag_model(), out, log=lambda *_: None)


def test_what_the_converter_writes_the_reader_reads_back_equal(written):
    out, manifest = written
    again = read_manifest(out)
    assert isinstance(again, Manifest) and again == manifest
    assert json.loads(again.to_json()) == json.loads((out / "manifest.json").read_text())
    assert again.schema_version == SCHEMA_VERSION and again.device_only == len(again.splits) - 1


@pytest.mark.parametrize("mangle, message", [
    (lambda d: d.update(schema_version=4), "schema_version 4 is not supported"),
    (lambda d: d.update(schema_version=1), "a bundle of the first format (one TFLite head per split"),
    (lambda d: d["segments"][1]["inputs"][0].update(shape=[1, 3, 3, 8]),
     "(segments/segment_002.tflite) reads a1 [1, 3, 3, 8], which no segment before it computes"),
    (lambda d: d["splits"][2].update(tensors=[d["splits"][1]["tensors"][0]]), "splits[2] does not send res_add"),
    (lambda d: d["segments"].pop(), "segments must be numbered 1 to 6"),
    (lambda d: d["segments"][0].update(output_order=[1]), "output_order must be a permutation"),
    (lambda d: d["model"].update(colour="red"), "model: unknown key 'colour'"),
    (lambda d: d["splits"][1].pop("tensors"), "splits[1]: missing key 'tensors'"),
    (lambda d: d["splits"][1].update(transfer_bytes="many"), "splits[1].transfer_bytes: expected int, got str"),
    (lambda d: d["model"]["decoding"].update(kind="yolo9"), "model.decoding.kind: 'yolo9' is not one of"),
    (lambda d: d["splits"][1].update(context=[1, 2]), "splits[1]: context holds 7 numbers, not 2"),
    (lambda d: d["splits"].reverse(), "splits must be numbered 0, 1, 2"),
])
def test_the_reader_refuses_what_the_schema_does_not_describe(written, mangle, message):
    out, manifest = written
    doc = dataclasses.asdict(manifest)
    doc = json.loads(json.dumps(doc))
    mangle(doc)
    with pytest.raises(BundleError, match="^where: ") as err:
        parse_manifest(doc, "where")
    assert message in str(err.value)
