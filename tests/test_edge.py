"""The edge answers every request, and bad ones with an error naming the problem."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("keras")
pytest.importorskip("paho.mqtt.client")

from converter.bundle import convert  # noqa: E402
from edge_app.server import EdgeServer  # noqa: E402
from mqtt.codec import encode  # noqa: E402
from mqtt.protocol import Request, bundle_hash_bytes, decode_result, encode_request  # noqa: E402

from .test_converter import dag_model  # noqa: E402

TOPIC = "ans/v1/device/cam-1/request"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("edge") / "dag"
    manifest = convert(dag_model(), out, log=lambda *_: None)
    return EdgeServer(out, "mqtt://127.0.0.1:1"), manifest  # never connects: handle() is what is tested


def ask(server, message: bytes):
    topic, payload = server.handle(TOPIC, message, 0.0)
    assert topic == "ans/v1/device/cam-1/result"
    return decode_result(payload)


def request(manifest, split=1, shape=None, bundle=None):
    shape = shape or manifest.splits[split].cut_shape
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    payload, quant = encode(x, "float32")
    return encode_request(Request(7, split, bundle or bundle_hash_bytes(manifest.model.content_hash), tuple(shape),
                                  "float32", quant), payload)


def test_a_good_request_is_answered_with_timing(server):
    srv, manifest = server
    for split in (0, 1, 2, 3):
        result = ask(srv, request(manifest, split))
        assert result.status == "ok" and result.frame_id == 7 and result.split == split
        assert result.compute_s > 0 and result.wait_s >= 0


@pytest.mark.parametrize("mangle, message", [
    (lambda m, r: b"garbage", "shorter than"),
    (lambda m, r: r[:-3], "needs"),
    (lambda m, r: request(m, bundle=b"\0" * 16), "another bundle"),
    (lambda m, r: request(m, split=4, shape=[1, 8]), "no tail"),
    (lambda m, r: request(m, split=1, shape=[1, 4, 4, 8]), "sends shape"),
])
def test_bad_requests_get_an_error_result_and_the_edge_keeps_serving(server, mangle, message):
    srv, manifest = server
    result = ask(srv, mangle(manifest, request(manifest)))
    assert result.status == "error" and message in result.error
    assert ask(srv, request(manifest)).status == "ok"
