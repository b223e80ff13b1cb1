"""Cut-tensor codec cost against a plain copy of the same bytes, per codec, for tensors of the
sizes the bundles send: the device's encoding alone, and the round trip (encode + request framing +
decode).

    .venv/bin/python bench/bench_codec.py [--repeat 30] [--no-opencv] [--json]

(``--no-opencv``: numpy's casts alone, as on a device without OpenCV.) With ``--json``, also the demo
detector's accuracy per split and codec: every frame of the demo clip through split p's head
(LiteRT), the cut tensors through the codec, and the edge's tail (TensorFlow); mAP@0.5 against the
clip's truth, next to float32's. The last line is then one JSON object with a list ``codecs`` of
``{"split", "codec", "bits_per_value", "bytes", "encode_ms", "decode_ms", "map50", "map50_float32"}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mqtt.codec import CODECS, ChannelRange, encode  # noqa: E402
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
    parser.add_argument("--json", action="store_true",
                        help="also the demo detector's mAP per split and codec; the last line one JSON object")
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 4, 8, 10], help="--json: the splits")
    args = parser.parse_args()
    if args.no_opencv:
        import mqtt.codec

        mqtt.codec._opencv = lambda: None
    rng = np.random.default_rng(0)
    print("encoding time (ms, and x a memcpy of the float32 tensor) and the round trip (encode, request, decode); "
          "synthetic post-ReLU activations, 70% zeros")
    print(f"{'tensor':>18}{'MB':>7}{'memcpy ms':>11}" + "".join(f"{c + ' encode':>20}" for c in CODECS[1:])
          + "".join(f"{c + ' round trip':>20}" for c in CODECS))
    for shape in SHAPES:
        x = np.maximum(rng.normal(size=shape) - 0.5, 0).astype(np.float32)  # post-ReLU activations
        ranges = ChannelRange(np.zeros(shape[-1]), np.percentile(x.reshape(-1, shape[-1]), 99.9, axis=0))
        copy = median_s(x.tobytes, args.repeat)  # one memcpy of the payload
        cells = []
        for codec in CODECS[1:]:
            t = median_s(lambda codec=codec: encode(x, codec, channel_range=ranges), args.repeat)
            cells.append(f"{t * 1e3:>11.2f} ({t / copy:>4.1f}x)")
        for codec in CODECS:
            def round_trip(codec=codec):
                payload, quant = encode(x, codec, channel_range=ranges)
                message = encode_request(Request(1, 1, HASH, (shape,), codec, (quant,)), [payload])
                decode_request(message, channel_ranges=[ranges])
            t = median_s(round_trip, args.repeat)
            cells.append(f"{t * 1e3:>11.2f} ({t / copy:>4.1f}x)")
        print(f"{str(shape[1:]):>18}{x.nbytes / 1e6:>7.2f}{copy * 1e3:>11.2f}" + "".join(cells))
        print(f"{'':>18}{'':>7}{'bits/value':>11}" + "".join(
            f"{8 * len(encode(x, c, channel_range=ranges)[0]) / x.size:>20.3f}" for c in CODECS[1:]))
    if args.json:
        rows = accuracy(args.splits, args.repeat)
        print(json.dumps({"codecs": rows}))


def accuracy(splits: list[int], repeat: int) -> list[dict]:
    """The demo detector's mAP@0.5 on the demo clip per split and codec, with the codec's size and time."""
    import tempfile

    from ans.quiet_tensorflow import import_tensorflow

    import_tensorflow()
    from common.bundle import Bundle
    from common.keras_model import load_keras_model, tail_model
    from common.tflite import SegmentRunner
    from converter.bundle import convert, run_keras
    from converter.calibration import demo_scenes
    from converter.train_demo import clip_frames, clip_map
    from converter.zoo import demo_decoding, demo_model
    from mqtt.codec import decode, sendable, split_ranges

    images, truth, difficult = clip_frames()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Ranges measured on generated scenes, as `ans convert --zoo demo` does: not on the clip scored here.
        manifest = convert(demo_model(), Path(tmp) / "bundle", decoding=demo_decoding(), log=lambda *_: None,
                           samples=demo_scenes(64))
        bundle = Bundle(Path(tmp) / "bundle")
        runner = SegmentRunner(bundle)
        channel_ranges = split_ranges(bundle)
        edge = load_keras_model(Path(tmp) / "bundle" / manifest.splits[0].tail.path)
        scale = manifest.model.preprocessing.scale
        print(f"\ndemo detector on the demo clip ({len(images)} frames): mAP@0.5 per split and codec", flush=True)
        print(f"{'split':>5}  {'codec':<8}{'bytes':>10}{'bits/value':>11}{'encode ms':>10}{'decode ms':>10}{'mAP@0.5':>9}")
        for p in splits:
            split = manifest.splits[p]
            tail = tail_model(edge, split.names)
            cuts = [runner.run(p, img[None].astype(np.float32)) for img in images]
            values = sum(int(np.prod(s)) for s in split.shapes)
            reference = None
            ranges = channel_ranges[p] or [None] * len(split.names)
            for codec in sendable(p, channel_ranges[p] is not None):
                def coded(tensors, codec=codec):
                    return [encode(t, codec, scale, r) for t, r in zip(tensors, ranges)]

                def decoded(sent, tensors, codec=codec):
                    return [decode(b, codec, t.shape, q, r) for (b, q), t, r in zip(sent, tensors, ranges)]

                encode_s = median_s(lambda: coded(cuts[0]), repeat)
                first = coded(cuts[0])
                decode_s = median_s(lambda: decoded(first, cuts[0]), repeat)
                outputs, nbytes = [], 0
                for tensors in cuts:
                    sent = coded(tensors)
                    nbytes += sum(len(b) for b, _ in sent)
                    outputs.append(run_keras(tail, decoded(sent, tensors))[0][0])
                nbytes = round(nbytes / len(cuts))  # the mean over the clip: variable-size codecs vary
                score = clip_map(outputs, truth, difficult)["map50"]
                reference = score if codec == "float32" else reference
                rows.append({"split": p, "codec": codec, "bits_per_value": round(8 * nbytes / values, 3),
                             "bytes": nbytes, "encode_ms": round(encode_s * 1e3, 3),
                             "decode_ms": round(decode_s * 1e3, 3), "map50": round(score, 4),
                             "map50_float32": round(reference, 4)})
                r = rows[-1]
                print(f"{p:>5}  {codec:<8}{r['bytes']:>10,}{r['bits_per_value']:>11.2f}{r['encode_ms']:>10.3f}"
                      f"{r['decode_ms']:>10.3f}{r['map50']:>9.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
