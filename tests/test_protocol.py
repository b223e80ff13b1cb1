from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtt.codec import ChannelRange, encode
from mqtt.protocol import (MAX_DIMS, MAX_TENSORS, ComputeTable, LoadWindow, ProtocolError, Request, Result, Topics, bundle_hash_bytes,
                           decode_compute_table, decode_request, decode_result, encode_compute_table, encode_request,
                           encode_result)

HASH = bundle_hash_bytes("ab" * 32)


def one(x: np.ndarray, codec: str = "float32", frame: int = 1, split: int = 1) -> bytes:
    """A request carrying the one tensor ``x``."""
    payload, quant = encode(x, codec)
    return bytes(encode_request(Request(frame, split, HASH, (x.shape,), codec, (quant,)), [payload]))


@pytest.mark.parametrize("codec", ["float32", "float16", "int8", "int4", "int3", "int2"])
def test_request_round_trip(codec):
    """Several cut tensors of different shapes (a feature pyramid's levels), each with its own int8 range
    or calibrated channel ranges; each payload's length travels in the header."""
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(1, 13, 13, 16)).astype(np.float32), 5 * rng.normal(size=(1, 26, 26, 8)).astype(np.float32),
          rng.normal(size=(1, 3)).astype(np.float32)]
    ranges = [ChannelRange(x.reshape(-1, x.shape[-1]).min(0), x.reshape(-1, x.shape[-1]).max(0)) for x in xs]
    payloads, quants = zip(*(encode(x, codec, channel_range=r) for x, r in zip(xs, ranges)))
    req = Request(frame_id=42, split=7, bundle_hash=HASH, shapes=tuple(x.shape for x in xs), codec=codec,
                  quants=tuple(quants))
    got, tensors = decode_request(bytes(encode_request(req, list(payloads))), channel_ranges=ranges)
    assert replace(got, sizes=()) == req and got.sizes == tuple(len(p) for p in payloads)
    step = {"int4": 1 / 15, "int3": 1 / 7, "int2": 1 / 3}.get(codec, 0.05)
    for tensor, x in zip(tensors, xs):
        assert tensor.shape == x.shape and np.allclose(tensor, x, atol=step * np.ptp(x))


def test_low_bit_requests_refuse_other_ranges_as_another_bundle():
    """A device and an edge with different calibrations of one model: refused as kind "bundle" (the
    device then stops offloading to that edge), never decoded into wrong values."""
    x = np.abs(np.random.default_rng(1).normal(size=(1, 8, 8, 4))).astype(np.float32)
    mine, theirs = ChannelRange(np.zeros(4), np.full(4, 2.0)), ChannelRange(np.zeros(4), np.full(4, 2.5))
    payload, quant = encode(x, "int2", channel_range=mine)
    message = encode_request(Request(1, 3, HASH, (x.shape,), "int2", (quant,)), [payload])
    with pytest.raises(ProtocolError, match="other channel ranges") as err:
        decode_request(message, channel_ranges=[theirs])
    assert err.value.kind == "bundle"
    with pytest.raises(ProtocolError, match="no calibrated channel range") as err:
        decode_request(message)
    assert err.value.kind == "bundle"


def test_float32_tensors_are_views_of_the_message():
    xs = [np.ones((1, 4, 4, 2), np.float32), np.zeros((1, 2, 2, 4), np.float32)]
    message = encode_request(Request(1, 1, HASH, tuple(x.shape for x in xs)), [encode(x, "float32")[0] for x in xs])
    _, tensors = decode_request(message)
    assert all(np.shares_memory(t, np.frombuffer(message, np.uint8)) for t in tensors)
    assert [t.sum() for t in tensors] == [32.0, 0.0]


def test_bad_requests_say_what_is_wrong():
    x = np.ones((1, 2, 2, 1), np.float32)
    good = one(x)
    with pytest.raises(ProtocolError, match="shorter than"):
        decode_request(good[:10])
    with pytest.raises(ProtocolError, match="magic"):
        decode_request(b"XXXX" + good[4:])
    with pytest.raises(ProtocolError, match="15 payload bytes for tensors of 16"):
        decode_request(good[:-1])
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode_request(good, max_bytes=10)
    with pytest.raises(ProtocolError, match="does not match"):
        encode_request(Request(1, 1, HASH, ((1, 3),)), [b"\0" * 8])
    with pytest.raises(ProtocolError, match=f"1 to {MAX_TENSORS} travel"):
        encode_request(Request(1, 1, HASH, ((1, 1),) * (MAX_TENSORS + 1)), [b"\0" * 4] * (MAX_TENSORS + 1))
    old = bytearray(good)
    old[6] = 2  # the version byte: a device of the fixed-size format
    with pytest.raises(ProtocolError, match="version 2 is not supported") as err:
        decode_request(bytes(old))
    assert err.value.kind == "version"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoder(blob):
    try:
        decode_request(blob)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 65535), st.lists(st.integers(1, 5), max_size=MAX_DIMS),
       st.sampled_from(["float32", "float16", "int8"]), st.data())
def test_mutated_headers_never_crash_the_decoder(frame, split, shape, codec, data):
    count = data.draw(st.integers(1, 3))
    message = bytearray(encode_request(Request(frame, split, HASH, (tuple(shape),) * count, codec,
                                               (encode(np.zeros(shape, np.float32), codec)[1],) * count),
                                       [encode(np.zeros(shape, np.float32), codec)[0]] * count))
    for _ in range(data.draw(st.integers(0, 4))):
        position = data.draw(st.integers(0, len(message) - 1))
        message[position] = data.draw(st.integers(0, 255))
    try:
        req, tensors = decode_request(bytes(message))
    except ProtocolError:
        return
    assert [t.shape for t in tensors] == list(req.shapes) and all(t.dtype == np.float32 for t in tensors)


def test_result_round_trip_and_validation():
    r = Result(frame_id=9, split=3, status="ok", detections=[[0.1, 0.2, 0.3, 0.4, 0.9, 2]], wait_s=0.001,
               compute_s=0.004, batch_size=2, edge="edge-a")
    assert decode_result(encode_result(r)) == r
    for bad in (b"not json", b"[1]", b'{"frame_id": 1}', b'{"frame_id": 1, "split": 0, "status": "ok", "wait_s": -1}',
                b'{"frame_id": 1, "split": 0, "status": "maybe"}', b'{"frame_id": 1, "split": 0, "status": "ok", "x": 1}',
                b'{"frame_id": 1, "split": 0, "status": "ok", "edge": ["a"]}',
                b'{"frame_id": 1, "split": 0, "status": "error", "error_kind": 3}',
                b'{"frame_id": 1, "split": 0, "status": "ok", "batch_size": 0}'):
        with pytest.raises(ProtocolError):
            decode_result(bad)


def test_compute_table_round_trip_and_validation():
    table = ComputeTable("ab" * 32, "edge-a", [0.004, 0.002, None], "CPU")
    assert decode_compute_table(encode_compute_table(table), 3) == table
    for bad in (b"nope", b"[]", b'{"bundle": "x", "edge": "e"}',
                b'{"bundle": "x", "edge": "e", "compute_s": [0.1, 0.1]}',  # one split short
                b'{"bundle": "x", "edge": "e", "compute_s": [0.1, -1, null]}',
                b'{"bundle": "x", "edge": "e", "compute_s": [0.1, 1e9, null]}',
                b'{"bundle": "x", "edge": "e", "compute_s": [0.1, "fast", null]}',
                b'{"bundle": 1, "edge": "e", "compute_s": [0.1, 0.1, null]}',
                b'{"bundle": "x", "edge": "e", "compute_s": [0.1, 0.1, null], "extra": 1}',
                b'{"bundle": "x", "edge": "e", "compute_s": [0.1, NaN, null]}',
                b" " * 70000):
        with pytest.raises(ProtocolError):
            decode_compute_table(bad, 3)
    assert Topics().edge_compute("edge-a") == "ans/v1/edge/edge-a/compute"


def test_topics_are_versioned_and_refuse_wildcards():
    t = Topics("lab")
    assert t.request("cam-1") == "lab/v1/device/cam-1/request"
    assert t.shared_requests() == "$share/ans-edges/lab/v1/device/+/request"
    with pytest.raises(ProtocolError):
        t.result("a/b")
    with pytest.raises(ProtocolError):
        t.device_status("#")


def test_huge_claimed_shapes_are_refused_not_allocated():
    x = np.ones((1, 2), np.float32)
    message = bytearray(one(x))
    message[-8 - 8:-8] = (2**32 - 1).to_bytes(4, "little") * 2  # claim 4e9 x 4e9 elements
    with pytest.raises(ProtocolError, match="payload of 8 bytes cannot carry shape"):
        decode_request(bytes(message))


def test_topics_are_parsed_only_when_they_are_of_this_tree():
    from mqtt.protocol import Address

    t = Topics("ans")
    assert t.parse(t.device_stats("cam-1")) == Address("device", "cam-1", "stats")
    assert t.parse(t.edge_load("edge-1")) == Address("edge", "edge-1", "load")
    for other in ("ans/v2/device/cam-1/stats", "other/v1/device/cam-1/stats", "ans/v1/robot/cam-1/stats",
                  "ans/v1/device//stats", "ans/v1/device/cam-1/stats/x", "ans/v1/device/" + "x" * 65 + "/stats",
                  "ans/v1/device/cam-1", "", "/", "#"):
        assert t.parse(other) is None, other
    assert t.every("device", "stats") in t.everything("stats")


def test_a_load_window_reports_what_ran_since_the_last_report_on_the_callers_clock():
    window = LoadWindow(now=10.0)
    window.batch(0.1, [0.01, 0.03])
    window.batch(0.3, [0.02])
    report = window.report(queue=2, now=11.0)
    assert report.utilisation == pytest.approx(0.4) and report.wait_s == pytest.approx(0.02)
    assert report.service_s == pytest.approx(0.2) and report.queue == 2
    idle = window.report(queue=0, now=12.0)  # the next window starts at the last report
    assert (idle.utilisation, idle.wait_s, idle.service_s) == (0.0, 0.0, 0.0)
    window.batch(5.0, [])
    assert window.report(queue=0, now=13.0).utilisation == 1.0  # busy beyond the span: capped
