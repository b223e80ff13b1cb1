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
from mqtt.protocol import (ProtocolError, Request, bundle_hash_bytes, decode_compute_table, decode_result,  # noqa: E402
                           encode_request)

from .test_converter import dag_model  # noqa: E402

TOPIC = "ans/v1/device/cam-1/request"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("edge") / "dag"
    manifest = convert(dag_model(), out, log=lambda *_: None)
    # Never connects: what is published is recorded instead.
    return recording(EdgeServer(EdgeSettings(bundle=str(out), max_batch=4, queue_size=8, per_device_queue=8,
                                             error_replies_per_s=1e6))), manifest


def recording(srv):
    """The server, never connected: what it publishes is recorded instead."""
    srv.sent = []

    def publish(topic, payload, qos=0, retain=False):
        srv.sent.append((topic, payload))
        return SimpleNamespace(rc=0)

    srv.client.publish = publish
    return srv


def serve_all(srv, device="cam-1"):
    """Run the worker's loop body until the queue is empty; ``device``'s results by frame id."""
    batches = []
    while len(srv.queue):
        batch = srv.next_batch(timeout=0.01)
        if batch:
            batches.append(len(batch))
        for dev, result in srv.run_batch(batch) if batch else ():
            srv._send(dev, result)
    out = {}
    for topic, result in srv.sent:
        if topic == f"ans/v1/device/{device}/result":
            result = decode_result(result)
            out[result.frame_id] = result
    return out, batches


def admit(srv, message: bytes, topic: str = TOPIC):
    srv._on_message(srv.client, None, SimpleNamespace(topic=topic, payload=message))


def ask(srv, message: bytes, frame: int = 7):
    srv.sent.clear()
    admit(srv, message)
    return serve_all(srv)[0][frame]


def request(manifest, split=1, shape=None, bundle=None, frame=7, seed=0):
    shapes = [shape] if shape else manifest.splits[split].shapes
    xs = [np.random.default_rng(seed).random(s, dtype=np.float32) for s in shapes]
    payloads, quants = zip(*(encode(x, "float32") for x in xs))
    return encode_request(Request(frame, split, bundle or bundle_hash_bytes(manifest.model.content_hash),
                                  tuple(tuple(s) for s in shapes), "float32", quants), list(payloads))


def test_a_good_request_is_answered_with_timing(server):
    srv, manifest = server
    for split in [s.index for s in manifest.splits if s.tail is not None]:  # cuts of one tensor and of two
        result = ask(srv, request(manifest, split))
        assert result.status == "ok" and result.frame_id == 7 and result.split == split
        assert result.compute_s > 0 and result.wait_s >= 0 and result.batch_size == 1


def test_a_split_of_several_tensors_is_batched_tensor_by_tensor(server):
    srv, manifest = server
    split = next(s for s in manifest.splits if len(s.tensors) > 1)
    rng = np.random.default_rng(4)
    xs = [[rng.random(shape, dtype=np.float32) for shape in split.shapes] for _ in range(3)]
    batched = srv.tails.run(split.index, [np.concatenate([x[j] for x in xs]) for j in range(len(split.tensors))])
    for i, x in enumerate(xs):
        for b, a in zip(batched, srv.tails.run(split.index, x), strict=True):
            np.testing.assert_allclose(b[i:i + 1], a, rtol=1e-5, atol=1e-6)
    srv.sent.clear()
    for f in range(3):
        admit(srv, request(manifest, split.index, frame=f, seed=f))
    out, batches = serve_all(srv)
    assert batches == [3] and all(out[f].status == "ok" and out[f].batch_size == 3 for f in range(3))


def test_requests_for_one_split_run_as_one_batch_with_the_same_answers(server):
    srv, manifest = server
    alone = {f: ask(srv, request(manifest, 1, frame=f, seed=f), frame=f) for f in range(5)}
    srv.sent.clear()
    for f in range(5):  # five for split 1 (batches of at most 4), one for split 2 in between
        admit(srv, request(manifest, 1, frame=f, seed=f))
        if f == 1:
            admit(srv, request(manifest, 2, frame=99))
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
        admit(srv, request(manifest, 1, frame=f))
    refused = [decode_result(p) for _, p in srv.sent]
    assert [r.frame_id for r in refused] == [8, 9] and all("queue full" in r.error for r in refused)
    srv.sent.clear()
    results, _ = serve_all(srv)
    assert sorted(results) == list(range(8)) and all(r.status == "ok" for r in results.values())


@pytest.mark.parametrize("mangle, message", [
    (lambda m, r: b"garbage", "shorter than"),
    (lambda m, r: r[:-3], "payload bytes for tensors of"),
    (lambda m, r: request(m, bundle=b"\0" * 16), "deploy the same bundle"),
    (lambda m, r: request(m, split=m.device_only, shape=[1, 8]), "no tail"),
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
    srv.sent.clear()
    admit(srv, bytes(message))
    results, _ = serve_all(srv)
    assert len(srv.sent) == 1 and len(results) == 1
    (result,) = results.values()
    assert result.status in ("ok", "error")


def test_every_tail_is_warm_before_the_edge_connects(tmp_path):
    """The edge traces and runs every tail before it connects (and so before it says online): a
    device's first request for any split meets a warm tail."""
    import threading

    from converter.bundle import convert as convert_bundle

    manifest = convert_bundle(dag_model(), tmp_path / "dag", log=lambda *_: None)
    srv = recording(EdgeServer(EdgeSettings(bundle=str(tmp_path / "dag"))))
    warm_at_connect = []
    srv.client.connect = lambda *a, **k: warm_at_connect.append(len(srv.tails._tails))
    srv.client.loop_start = lambda: None
    stop = threading.Event()
    stop.set()
    srv.serve(stop)
    assert warm_at_connect == [sum(s.tail is not None for s in manifest.splits)]


def test_the_edge_publishes_its_compute_table_and_keeps_it_current(server):
    """Measured at warm-up for every split with a tail, retained on the edge's compute topic, followed
    on every batch of one, and published again once an entry has moved by more than 20%."""
    srv, manifest = server
    srv.tails.warm_up()
    times = srv.tails.compute_s
    assert all((t is None) == (s.tail is None) for t, s in zip(times, manifest.splits))
    assert all(t > 0 for t in times if t is not None)
    srv.sent.clear()
    srv.publish_compute_table()
    (topic, payload), = srv.sent
    table = decode_compute_table(payload, len(manifest.splits))
    assert topic == f"ans/v1/edge/{srv.settings.id}/compute" and table.bundle == manifest.model.content_hash
    assert table.compute_s == [None if t is None else round(t, 6) for t in times]
    assert not srv._table_moved()
    before = times[1]
    for _ in range(30):  # the edge got 3x slower on split 1
        srv.tails.observed(1, 3 * before)
    assert srv.tails.compute_s[1] > 2 * before and srv._table_moved()
    srv.sent.clear()
    srv.publish_stats()
    assert [t for t, _ in srv.sent].count(f"ans/v1/edge/{srv.settings.id}/compute") == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=80), min_size=0, max_size=6), st.binary(max_size=64))
def test_any_topic_and_payload_is_answered_or_counted_never_raised(server, levels, payload):
    """Hypothesis over topic levels (empty, long, unicode, wildcards, any depth): a message whose
    topic names a valid device gets exactly one reply on that device's result topic; any other is
    counted as unanswerable and dropped. Nothing raises (the network thread would die)."""
    srv, _ = server
    srv.sent.clear()
    topic = "/".join(["ans", "v1", "device", *levels, "request"])
    before = srv.stats.totals["unanswerable"]
    admit(srv, payload, topic)
    serve_all(srv)
    try:
        device = srv.topics.requesting_device(topic)
    except ProtocolError:
        assert srv.sent == [] and srv.stats.totals["unanswerable"] == before + 1
    else:
        assert [t for t, _ in srv.sent] == [f"ans/v1/device/{device}/result"]


@pytest.mark.parametrize("topic", ["ans/v1/device//request", f"ans/v1/device/{'x' * 65}/request",
                                   "ans/v1/device/a/b/request", "ans/v1/device/cam+/request"])
def test_a_request_topic_without_a_valid_device_is_dropped_and_the_edge_serves_on(server, topic):
    srv, manifest = server
    srv.sent.clear()
    admit(srv, request(manifest), topic)
    assert srv.sent == [] and len(srv.queue) == 0
    assert ask(srv, request(manifest)).status == "ok"


def test_a_flooding_device_delays_only_itself(tmp_path, caplog):
    """One device floods its share of the queue; another device's request is served in the very
    next batch (the flooder's batch is one request while the victim waits), the flood beyond the share is shed and counted, and the flooder's error replies
    stay within its budget."""
    out = tmp_path / "dag"
    manifest = convert(dag_model(), out, log=lambda *_: None)
    srv = recording(EdgeServer(EdgeSettings(bundle=str(out), max_batch=4, queue_size=64, per_device_queue=8,
                                            error_replies_per_s=5)))
    for f in range(200):
        admit(srv, request(manifest, 1, frame=f), "ans/v1/device/flood/request")
    admit(srv, request(manifest, 2, frame=7), "ans/v1/device/victim/request")
    first, second, third = srv.next_batch(0.01), srv.next_batch(0.01), srv.next_batch(0.01)
    # One turn each while the victim waits; once it is served, the flooder's requests batch again.
    assert [p.device for p in first] == ["flood"] and [p.device for p in second] == ["victim"]
    assert [p.device for p in third] == ["flood"] * 4
    stats = srv.publish_stats()
    assert stats["rejected_queue_full"] == 192 and stats["refused_devices"] == {"flood": 192}
    replies = [t for t, _ in srv.sent if t.endswith("/flood/result")]
    assert len(replies) == 10 and stats["errors_unanswered"] == 182  # a burst of 2 s worth, then counted only
    assert any("`ans broker disable device flood` stops it" in r.getMessage() for r in caplog.records)


def test_a_flood_of_distinct_errors_logs_a_line_per_kind(server, caplog):
    srv, manifest = server
    caplog.set_level("WARNING", logger="ans.edge")
    for f in range(500):  # every message different: frame ids, sizes, splits
        admit(srv, request(manifest, split=manifest.device_only, shape=[1, 8], frame=f))
        admit(srv, request(manifest, bundle=bytes([f % 256]) * 16, frame=f))
        admit(srv, b"x" * (f + 1), f"ans/v1/device/cam-{f}/request")
        admit(srv, b"", f"ans/v1/device/{'y' * (65 + f)}/request")
    lines = [r for r in caplog.records if r.name == "ans.edge"]
    assert len(lines) <= 4, [r.getMessage() for r in lines]
    assert set(srv.stats.kinds) >= {"split", "bundle", "malformed"}


def test_the_serving_loop_survives_a_failing_turn(server):
    """A bug in one turn of the loop is logged and counted; the loop goes on."""
    srv, manifest = server
    import threading

    stop, turns = threading.Event(), []

    def flaky_batch(timeout=0.2):
        turns.append(1)
        if len(turns) == 1:
            raise RuntimeError("boom")
        stop.set()
        return []

    original = srv.next_batch
    srv.next_batch, srv.connected = flaky_batch, threading.Event()
    srv.connected.set()
    srv.client.connect = srv.client.loop_start = lambda *a, **k: None
    try:
        srv.serve(stop)
    finally:
        srv.next_batch = original
    assert len(turns) == 2 and srv.stats.totals["internal_errors"] == 1


def test_xla_tails_answer_as_the_traced_ones_for_every_batch_size(server, tmp_path):
    """With ``xla`` a batch is padded to the next power of two (compiled at warm-up): the answers
    for every size up to max_batch are those of the plain traced tails."""
    from edge_app.server import TailRunner

    _, manifest = server
    folder = tmp_path / "dag"
    convert(dag_model(), folder, log=lambda *_: None)
    plain, xla = TailRunner(folder), TailRunner(folder, xla=True, max_batch=4)
    xla.warm_up()
    split = 1
    for batch in (1, 3, 4):
        x = [np.random.default_rng(batch).random((batch, *s[1:]), dtype=np.float32)
             for s in manifest.splits[split].shapes]
        for a, b in zip(plain.run(split, x), xla.run(split, x)):
            assert a.shape == b.shape and a.shape[0] == batch
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_cpu_percent_counts_the_window_that_just_ended():
    from edge_app.server import EdgeStats

    stats = EdgeStats()
    start = sum(os.times()[:2])
    while sum(os.times()[:2]) - start < 0.05:  # burn CPU time until the process clock shows it
        pass
    assert stats.report()["cpu_percent"] > 0
