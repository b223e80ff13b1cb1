"""Cut-tensor codec cost against a plain copy of the same bytes: encode + request framing +
decode, per codec, for tensors of the sizes the bundles send.

    .venv/bin/python bench/bench_codec.py [--repeat 30]
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
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'tensor':>18}{'MB':>7}{'memcpy ms':>11}" + "".join(f"{c + ' ms (x)':>19}" for c in CODECS))
    for shape in SHAPES:
        x = rng.normal(size=shape).astype(np.float32)
        copy = median_s(x.tobytes, args.repeat)  # one memcpy of the payload
        cells = []
        for codec in CODECS:
            def round_trip(codec=codec):
                payload, quant = encode(x, codec)
                message = encode_request(Request(1, 1, HASH, (shape,), codec, (quant,)), [payload])
                decode_request(message)
            t = median_s(round_trip, args.repeat)
            cells.append(f"{t * 1e3:>10.2f} ({t / copy:>4.1f}x)")
        print(f"{str(shape[1:]):>18}{x.nbytes / 1e6:>7.2f}{copy * 1e3:>11.2f}" + "".join(f"{c:>19}" for c in cells))


if __name__ == "__main__":
    main()
