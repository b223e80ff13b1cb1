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
