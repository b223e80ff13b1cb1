import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtt.codec import (LOW_BIT, WIRE_CODECS, ChannelRange, CodecError, Quantisation, RangeMismatch, decode,
                        encode, payload_bytes)

FIXED = ("float32", "float16", "int8")


@pytest.mark.parametrize("codec", FIXED)
def test_round_trip_and_sizes(codec):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1, 13, 13, 32)) * 3).astype(np.float32)
    x[..., :4] = 0.0
    payload, quant = encode(x, codec)
    assert len(payload) == payload_bytes(x.shape, codec) == x.size * {"float32": 4, "float16": 2, "int8": 1}[codec]
    y = decode(payload, codec, x.shape, quant)
    assert y.dtype == np.float32 and y.shape == x.shape
    tolerance = {"float32": 0.0, "float16": 2e-3 * np.abs(x).max(), "int8": (x.max() - x.min()) / 255 / 2 + 1e-6}
    assert np.max(np.abs(y - x)) <= tolerance[codec]
    assert np.all(y[..., :4] == 0.0)  # zeros survive every codec


def test_float32_decodes_without_copying():
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    payload = memoryview(bytearray(encode(x, "float32")[0]))
    y = decode(payload, "float32", x.shape)
    assert np.shares_memory(y, np.frombuffer(payload, dtype=np.float32))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64), st.sampled_from(WIRE_CODECS), st.lists(st.integers(0, 8), min_size=1, max_size=4),
       st.floats(allow_nan=True, allow_infinity=True), st.integers(-300, 300), st.booleans())
def test_malformed_payloads_raise_a_clear_error_or_decode(payload, codec, shape, scale, zero_point, fingerprint):
    channels = ChannelRange(np.zeros(max(shape[-1], 1)), np.ones(max(shape[-1], 1)))
    quant = Quantisation(scale, channels.fingerprint if fingerprint else zero_point)
    try:
        y = decode(payload, codec, shape, quant, channels)
    except CodecError as exc:
        assert any(word in str(exc) for word in ("bytes", "scale", "zero point", "empty dimension", "inflate",
                                                 "channel", "JPEG", "jpeg"))
    else:
        assert list(y.shape) == shape and y.dtype == np.float32
        assert codec == "float32" or codec == "float16" or np.all(np.isfinite(y))


def test_unknown_codec():
    with pytest.raises(CodecError, match="unknown codec 'bf16'"):
        encode(np.zeros(3, np.float32), "bf16")


def test_opencvs_fast_casts_agree_with_numpys(monkeypatch):
    """float16 bit for bit (round to nearest even, overflow to infinity, subnormals), int8 within one
    step: OpenCV rounds x * (1 / scale), numpy x / scale."""
    import mqtt.codec as codec

    if codec._opencv() is None:
        pytest.skip("OpenCV is not installed")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(scale=s, size=5000) for s in (1e-6, 1e-3, 1.0, 1e3, 1e5)]).astype(np.float32)
    x[:8] = [0.0, -0.0, 6.1e-5, 6.0e-8, 65504, 65520, 1e6, -1e6]
    x = x.reshape(1, 25, 1000)
    fast = {c: codec.encode(x, c) for c in ("float16", "int8")}
    monkeypatch.setattr(codec, "_opencv", lambda: None)
    slow = {c: codec.encode(x, c) for c in ("float16", "int8")}
    assert bytes(fast["float16"][0]) == bytes(slow["float16"][0])
    assert fast["int8"][1] == slow["int8"][1]
    q_fast, q_slow = (np.frombuffer(p[0], np.int8).astype(int) for p in (fast["int8"], slow["int8"]))
    assert np.abs(q_fast - q_slow).max() <= 1
    half = np.frombuffer(fast["float16"][0], np.float16).reshape(x.shape)
    monkeypatch.undo()
    assert np.array_equal(codec.decode(half.tobytes(), "float16", x.shape), half.astype(np.float32))


def test_the_input_travels_as_its_8_bit_image_bit_for_bit():
    """Split 0: the device's input is float32(q) * float32(scale) of an 8-bit resized frame; the edge
    rebuilds exactly those float32 values from a quarter of the bytes."""
    from device_app.sources import preprocess
    from mqtt.codec import IMAGE_CODEC, encode_image

    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    for scale in (1 / 255, 1 / 127.5, 0.0039):
        x = preprocess(frame, (96, 128), scale)
        payload, quant = encode_image(x, scale)
        assert len(payload) == x.size == payload_bytes(x.shape, IMAGE_CODEC) and quant.zero_point == 0
        y = decode(payload, IMAGE_CODEC, x.shape, quant)
        assert y.dtype == np.float32 and np.array_equal(y.view(np.uint32), x.view(np.uint32))
    with pytest.raises(CodecError, match="zero point 0"):
        decode(payload, IMAGE_CODEC, x.shape, Quantisation(quant.scale, 3))


@pytest.mark.parametrize("codec", list(LOW_BIT))
def test_low_bit_codecs_keep_each_channel_within_half_a_step_and_zeros_exact(codec):
    """Within the calibrated range every value is within half a step; beyond it, clipped to the range's
    end; zeros (ReLU's) stay zeros; a sparse tensor takes a fraction of a bit per value."""
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(1, 26, 26, 16)) - 0.8, 0).astype(np.float32) * np.arange(1, 17, dtype=np.float32)
    hi = np.percentile(x.reshape(-1, 16), 99.9, axis=0)
    channels = ChannelRange(np.zeros(16), hi)
    payload, quant = encode(x, codec, channel_range=channels)
    y = decode(payload, codec, x.shape, quant, channels)
    step = channels.steps(1 << LOW_BIT[codec])
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.all(np.abs(y - np.minimum(x, channels.hi)) <= step / 2 + 1e-5 * channels.hi)
    assert np.all(y[x == 0] == 0)
    assert len(payload) <= payload_bytes(x.shape, codec)
    if codec == "int2":
        assert 8 * len(payload) / x.size < 1.0, 8 * len(payload) / x.size


@pytest.mark.parametrize("codec", list(LOW_BIT))
def test_a_large_tensor_travels_as_one_stream_of_parts_within_the_bound(codec):
    """A tensor of several parts (deflated apart, in parallel) decodes as one stream; incompressible
    symbols, an odd channel count and a short last part stay within the size the edge allows."""
    from mqtt.codec import PART_VALUES

    rng = np.random.default_rng(1)
    x = rng.random((1, 3 * PART_VALUES // 5 + 7, 5), dtype=np.float32)  # 3 parts and 7 rows, 5 channels
    channels = ChannelRange(np.zeros(5), np.ones(5))
    payload, quant = encode(x, codec, channel_range=channels)
    assert len(payload) <= payload_bytes(x.shape, codec)
    y = decode(payload, codec, x.shape, quant, channels)
    assert np.all(np.abs(y - x) <= channels.steps(1 << LOW_BIT[codec]) / 2 + 1e-6)


def test_low_bit_payloads_are_refused_unless_they_inflate_to_exactly_their_shape():
    import zlib

    channels = ChannelRange(np.zeros(4), np.ones(4))
    x = np.random.default_rng(0).random((1, 8, 8, 4), dtype=np.float32)
    payload, quant = encode(x, "int2", channel_range=channels)
    shape = x.shape
    with pytest.raises(CodecError, match="inflate"):
        decode(bytes(payload)[:-3], "int2", shape, quant, channels)  # cut short
    with pytest.raises(CodecError, match="inflate"):
        decode(bytes(payload) + b"junk", "int2", shape, quant, channels)  # more after the stream's end
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = packer.compress(bytes(1 << 20)) + packer.flush()  # 1 MB of zeros in a few hundred bytes
    wide = (1, 64, 64, 4)
    assert len(bomb) <= payload_bytes(wide, "int2")
    with pytest.raises(CodecError, match="inflate"):
        decode(bomb, "int2", wide, quant, channels)  # inflated no further than the shape allows
    with pytest.raises(CodecError, match="inflate"):
        decode(b"\xff" * 40, "int2", shape, quant, channels)
    with pytest.raises(RangeMismatch):
        decode(payload, "int2", shape, Quantisation(1.0, quant.zero_point ^ 1), channels)
    with pytest.raises(CodecError, match="channel"):
        decode(payload, "int2", (1, 8, 4, 8), quant, channels)
    with pytest.raises(CodecError, match="calibrated"):
        encode(x, "int2")


def test_jpeg_carries_the_input_image_and_refuses_another_size_before_decoding():
    """Split 0 as a JPEG: a fraction of the uint8 bytes, close to the image; a JPEG that says it is
    another size (a decompression bomb would) is refused from its header, never decoded."""
    import cv2

    from common.scenes import make_camera_frame
    from device_app.sources import preprocess

    frame = make_camera_frame(np.random.default_rng(0), 256)[0]
    x = preprocess(frame, (256, 256), 1 / 255)
    payload, quant = encode(x, "jpeg", 1 / 255)
    y = decode(payload, "jpeg", x.shape, quant)
    assert len(payload) < x.size / 8 and np.mean(np.abs(y - x)) < 0.02, (len(payload), np.mean(np.abs(y - x)))
    big = cv2.imencode(".jpg", np.zeros((4096, 4096, 3), np.uint8))[1].tobytes()
    with pytest.raises(CodecError, match="not a JPEG of 256x256x3"):
        decode(big, "jpeg", x.shape, quant)
    with pytest.raises(CodecError):
        decode(bytes(payload)[:100], "jpeg", x.shape, quant)
    with pytest.raises(CodecError, match="1 or 3 channels"):
        encode(np.zeros((1, 8, 8, 4), np.float32), "jpeg", 1 / 255)
