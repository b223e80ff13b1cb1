"""The edge answers every request, batches those that arrive together, and answers bad ones with an
error naming the problem."""

import os
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytest.importorskip("keras")
pytest.importorskip("paho.mqtt.client")

from converter.bundle import convert  # noqa: E402
from edge_app.server import EdgeServer  # noqa: E402
from edge_app.settings import EdgeSettings  # noqa: E402
from mqtt.codec import encode  # noqa: E402
from mqtt.protocol import Request, bundle_hash_bytes, decode_result, encode_request  # noqa: E402

from .test_converter import dag_model  # noqa: E402

TOPIC = "ans/v1/device/cam-1/request"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("edge") / "dag"
    manifest = convert(dag_model(), out, log=lambda *_: None)
    # Never connects: what is published is recorded instead.
    srv = EdgeServer(EdgeSettings(bundle=str(out), max_batch=4, batch_wait_ms=0, queue_size=8))
    srv.sent = []
    srv.client.publish = lambda topic, payload, qos=0, retain=False: srv.sent.append((topic, payload))
    return srv, manifest


def serve_all(srv):
    """Run the worker's loop body until the queue is empty; the results by frame id."""
    srv.sent.clear()
    batches = []
    while batch := srv.next_batch(timeout=0.01):
        batches.append(len(batch))
        for device, result in srv.run_batch(batch):
            srv.sent.append((srv.topics.result(device), result))
    out = {}
    for topic, result in srv.sent:
        assert topic == "ans/v1/device/cam-1/result"
        result = decode_result(result)
        out[result.frame_id] = result
    return out, batches


def ask(srv, message: bytes, frame: int = 7):
    srv.requests.put((TOPIC, message, 0.0))
    return serve_all(srv)[0][frame]


def request(manifest, split=1, shape=None, bundle=None, frame=7, seed=0):
    shape = shape or manifest.splits[split].cut_shape
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    payload, quant = encode(x, "float32")
    return encode_request(Request(frame, split, bundle or bundle_hash_bytes(manifest.model.content_hash),
                                  tuple(shape), "float32", quant), payload)


def test_a_good_request_is_answered_with_timing(server):
    srv, manifest = server
    for split in (0, 1, 2, 3):
        result = ask(srv, request(manifest, split))
        assert result.status == "ok" and result.frame_id == 7 and result.split == split
        assert result.compute_s > 0 and result.wait_s >= 0 and result.batch_size == 1


def test_requests_for_one_split_run_as_one_batch_with_the_same_answers(server):
    srv, manifest = server
    alone = {f: ask(srv, request(manifest, 1, frame=f, seed=f), frame=f) for f in range(5)}
    for f in range(5):  # five for split 1 (batches of at most 4), one for split 2 in between
        srv.requests.put((TOPIC, request(manifest, 1, frame=f, seed=f), 0.0))
        if f == 1:
            srv.requests.put((TOPIC, request(manifest, 2, frame=99), 0.0))
    results, batches = serve_all(srv)
    assert sorted(batches) == [1, 1, 4] and len(results) == 6
    assert results[99].split == 2 and results[99].status == "ok"
    assert sorted(results[f].batch_size for f in range(5)) == [1, 4, 4, 4, 4]
    for f in range(5):
        assert results[f].status == "ok" and results[f].detections == alone[f].detections


def test_a_full_queue_is_answered_at_once_not_dropped(server):
    srv, manifest = server
    srv.sent.clear()
    for f in range(srv.settings.queue_size + 2):
        srv._on_message(srv.client, None, SimpleNamespace(topic=TOPIC, payload=request(manifest, 1, frame=f)))
    refused = [decode_result(p) for _, p in srv.sent]
    assert [r.frame_id for r in refused] == [8, 9] and all("queue full" in r.error for r in refused)
    results, _ = serve_all(srv)
    assert sorted(results) == list(range(8)) and all(r.status == "ok" for r in results.values())


@pytest.mark.parametrize("mangle, message", [
    (lambda m, r: b"garbage", "shorter than"),
    (lambda m, r: r[:-3], "needs"),
    (lambda m, r: request(m, bundle=b"\0" * 16), "deploy the same bundle"),
    (lambda m, r: request(m, split=4, shape=[1, 8]), "no tail"),
    (lambda m, r: request(m, split=1, shape=[1, 4, 4, 8]), "sends shape"),
])
def test_bad_requests_get_an_error_result_and_the_edge_keeps_serving(server, mangle, message):
    srv, manifest = server
    frame = 0 if message == "shorter than" else 7  # a header too short to name its frame: frame 0
    result = ask(srv, mangle(manifest, request(manifest)), frame)
    assert result.status == "error" and message in result.error
    assert ask(srv, request(manifest)).status == "ok"


@settings(max_examples=120, deadline=None)
@given(st.integers(1, 3), st.data())
def test_mutated_requests_always_get_one_answer_and_never_stop_the_edge(server, split, data):
    """Hypothesis flips bytes of a valid request (header and tensor alike): the edge answers every
    message it can attribute, with a result or an error, and raises nothing."""
    srv, manifest = server
    message = bytearray(request(manifest, split, frame=5))
    for _ in range(data.draw(st.integers(1, 6))):
        message[data.draw(st.integers(0, len(message) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        message = message[:data.draw(st.integers(0, len(message)))]
    srv.requests.put((TOPIC, bytes(message), 0.0))
    results, _ = serve_all(srv)
    assert len(srv.sent) == 1 and len(results) == 1
    (result,) = results.values()
    assert result.status in ("ok", "error")


def test_idle_warm_up_traces_every_tail_once(tmp_path):
    from converter.bundle import convert as convert_bundle
    from edge_app.server import TailRunner

    manifest = convert_bundle(dag_model(), tmp_path / "dag", log=lambda *_: None)
    tails = TailRunner(tmp_path / "dag")
    warmed = 0
    while tails.warm_next():
        warmed += 1
    assert warmed == sum(s.tail is not None for s in manifest.splits) == len(tails._tails)
