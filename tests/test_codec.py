import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtt.codec import CODECS, CodecError, Quantisation, decode, encode, payload_bytes


@pytest.mark.parametrize("codec", CODECS)
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


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.sampled_from(CODECS), st.lists(st.integers(0, 8), min_size=1, max_size=4),
       st.floats(allow_nan=True, allow_infinity=True), st.integers(-300, 300))
def test_malformed_payloads_raise_a_clear_error_or_decode(payload, codec, shape, scale, zero_point):
    try:
        y = decode(payload, codec, shape, Quantisation(scale, zero_point))
    except CodecError as exc:
        assert any(word in str(exc) for word in ("bytes", "scale", "zero point", "empty dimension"))
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
