"""Cut-tensor codec cost against a plain copy of the same bytes, per codec, for tensors of the
sizes the bundles send: the device's encoding alone, and the round trip (encode + request framing +
decode).

    .venv/bin/python bench/bench_codec.py [--repeat 30] [--no-opencv]

(``--no-opencv``: numpy's casts alone, as on a device without OpenCV.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mqtt.codec import CODECS, encode  # noqa: E402
from mqtt.protocol import Request, decode_request, encode_request  # noqa: E402

SHAPES = ((1, 13, 13, 512), (1, 52, 52, 128), (1, 416, 416, 16))  # 346 KB, 1.4 MB, 11 MB as float32
HASH = bytes(16)


def median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-opencv", action="store_true", help="numpy's casts alone")
    args = parser.parse_args()
    if args.no_opencv:
        import mqtt.codec

        mqtt.codec._opencv = lambda: None
    rng = np.random.default_rng(0)
    print(f"{'tensor':>18}{'MB':>7}{'memcpy ms':>11}" + "".join(f"{c + ' encode (x)':>22}" for c in CODECS[1:])
          + "".join(f"{c + ' round trip (x)':>26}" for c in CODECS))
    for shape in SHAPES:
        x = np.maximum(rng.normal(size=shape), 0).astype(np.float32)  # post-ReLU activations
        copy = median_s(x.tobytes, args.repeat)  # one memcpy of the payload
        cells = []
        for codec in CODECS[1:]:
            t = median_s(lambda codec=codec: encode(x, codec), args.repeat)
            cells.append(f"{t * 1e3:>13.2f} ({t / copy:>4.1f}x)")
        for codec in CODECS:
            def round_trip(codec=codec):
                payload, quant = encode(x, codec)
                message = encode_request(Request(1, 1, HASH, (shape,), codec, (quant,)), [payload])
                decode_request(message)
            t = median_s(round_trip, args.repeat)
            cells.append(f"{t * 1e3:>17.2f} ({t / copy:>4.1f}x)")
        print(f"{str(shape[1:]):>18}{x.nbytes / 1e6:>7.2f}{copy * 1e3:>11.2f}" + "".join(cells))


if __name__ == "__main__":
    main()
