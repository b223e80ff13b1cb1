"""Segments against one head file per split: bundle size, the cost of chaining, and what finishing a
late frame from its cut tensor saves.

For the demo detector, tiny-YOLOv2 (80 classes, 416x416) and a YOLOv8n-shaped ONNX model at 320
(imported; its neck and head cut with two or three tensors), it converts the model as ANS does
(segments), and also writes the old layout for comparison (one TFLite head per split, each from the
input, plus the whole model). Then, per split, on one core of this machine (LiteRT, XNNPACK):

* head: split p's head as one file vs segments 1..p chained vs segments 1..p fused on the device into
  one model (what the device runs at the split it uses; medians of --repeats interleaved runs);
* fallback: a frame the edge did not answer, finished from split p's cut (segments p+1..end) vs
  run again from the input (every segment).

    .venv/bin/python bench/bench_segments.py [--repeats 50] [--models demo tiny-yolov2 yolov8n]
        [--out docs/img/segments.png]

(tiny-YOLOv2 runs a fifth of the repeats: each of its runs is about 40 times the demo's.)

Prints a table per model, the sizes, the memory a fused head holds, and writes the plot.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ans.quiet_tensorflow import import_tensorflow  # noqa: E402

import_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from common.bundle import Bundle  # noqa: E402
from common.fd_capture import captured  # noqa: E402
from common.tflite import SegmentRunner, default_interpreter  # noqa: E402
from common.timing import median_time  # noqa: E402
from converter.bundle import convert, to_tflite  # noqa: E402
from converter.zoo import demo_model, tiny_yolov2  # noqa: E402


def one_file(path: Path):
    with captured(2):
        it = default_interpreter()(model_path=str(path), num_threads=1)
        it.allocate_tensors()
    source, targets = it.get_input_details()[0]["index"], [d["index"] for d in it.get_output_details()]

    def run(x):
        it.set_tensor(source, x)
        it.invoke()
        return [it.get_tensor(t) for t in targets]
    return run


def rss_mb() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def measure(name: str, model, work: Path, repeats: int) -> dict:
    print(f"\n{name}: converting", flush=True)
    manifest = convert(model, work / "bundle", log=lambda *_: None)
    with captured(2):
        runner = SegmentRunner(Bundle(work / "bundle"), threads=1)
    segments = sum((work / "bundle" / s.file.path).stat().st_size for s in manifest.segments)
    whole = work / "whole.tflite"
    whole.write_bytes(to_tflite(model))
    old_heads, rows = 0, []
    x = np.random.default_rng(0).random(runner.bundle.input_shape, dtype=np.float32)
    last = manifest.device_only
    from_input = median_time(lambda: runner.run(last, x), repeats)
    for split in manifest.splits[1:]:
        p = split.index
        if split.tensors:
            head_file = work / f"head_{p}.tflite"
            sent = [model.get_layer(n).output for n in split.names]
            head_file.write_bytes(to_tflite(keras.Model(model.input, sent if len(sent) > 1 else sent[0])))
            old_heads += head_file.stat().st_size
            single = one_file(head_file)
        else:
            single = one_file(whole)
        before = rss_mb()
        with captured(2):
            head = runner.fuse(p)
        fused_mb = rss_mb() - before
        chained_s, single_s, fused_s = [], [], []
        for _ in range(3):  # interleaved, so drift hits all alike
            chained_s.append(median_time(lambda: runner.run(p, x), repeats // 3 + 1))
            single_s.append(median_time(lambda: single(x), repeats // 3 + 1))
            fused_s.append(median_time(lambda: runner.invoke(head, [x]), repeats // 3 + 1))
        head = None  # its memory goes before the next split's
        chained, alone, fused = (float(np.median(t)) for t in (chained_s, single_s, fused_s))
        cut = runner.run(p, x) if p < last else None
        finish = median_time(lambda: runner.finish(p, cut), repeats) if cut is not None else 0.0
        rows.append({"split": p, "cut": split.cut or "(device only)", "head_one_file_s": alone, "head_chained_s": chained,
                     "head_fused_s": fused, "fused_rss_mb": fused_mb, "finish_from_cut_s": finish,
                     "finish_from_input_s": from_input})
        print(f"  split {p:>2} {split.cut or '(device only)':<14} head: one file {alone * 1e3:7.2f} ms, "
              f"chained {chained * 1e3:7.2f} ms ({(chained / alone - 1) * 100:+5.1f}%), "
              f"fused {fused * 1e3:7.2f} ms ({(fused / alone - 1) * 100:+5.1f}%, {fused_mb:+.0f} MB)"
              + (f"; late frame finished from the cut {finish * 1e3:7.2f} ms vs from the input "
                 f"{from_input * 1e3:7.2f} ms" if cut is not None else ""), flush=True)
    sizes = {"segments": segments, "old_heads": old_heads, "whole_model": whole.stat().st_size}
    print(f"  device-side files: segments {segments / 1e6:.1f} MB ({segments / sizes['whole_model']:.2f}x the whole "
          f"model's {sizes['whole_model'] / 1e6:.1f} MB); one head per split {old_heads / 1e6:.1f} MB + the whole "
          f"model = {(old_heads + sizes['whole_model']) / 1e6:.1f} MB "
          f"({(old_heads + sizes['whole_model']) / sizes['whole_model']:.2f}x)")
    return {"rows": rows, "sizes": sizes}


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.2), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items()):
        rows = result["rows"]
        splits = [r["split"] for r in rows]
        ax.plot(splits, [r["head_one_file_s"] * 1e3 for r in rows], "o-", label="head: one file per split")
        ax.plot(splits, [r["head_chained_s"] * 1e3 for r in rows], "s--", label="head: segments chained")
        ax.plot(splits, [r["head_fused_s"] * 1e3 for r in rows], "x:", label="head: segments fused on the device")
        fin = [(r["split"], r["finish_from_cut_s"] * 1e3) for r in rows if r["finish_from_cut_s"]]
        ax.plot([s for s, _ in fin], [t for _, t in fin], "^-", label="late frame: finished from the cut")
        ax.axhline(rows[0]["finish_from_input_s"] * 1e3, color="grey", ls=":", label="late frame: again from the input")
        ax.set(title=name, xlabel="split", ylabel="ms (median, one core)")
        ax.set_xticks(splits, [str(s) if s < splits[-1] else "device" for s in splits])
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"\nwrote {out}")


def yolov8n():
    from converter.onnx_import import import_onnx
    from lab.onnx_models import yolov8

    return import_onnx(yolov8(size=320, classes=80))[0]


#: name -> (title, model, share of --repeats: tiny-YOLOv2's run is about 40 times the demo's)
MODELS = {"demo": ("demo detector", demo_model, 1), "tiny-yolov2": ("tiny-YOLOv2 (80 classes, 416)",
                                                                   lambda: tiny_yolov2(classes=80, size=416), 5),
          "yolov8n": ("YOLOv8n-shaped ONNX (320)", yolov8n, 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=["demo", "tiny-yolov2"])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "segments.png")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models:
            name, make, share = MODELS[key]
            work = Path(tmp) / key
            work.mkdir()
            results[name] = measure(name, make(), work, max(6, args.repeats // share))
    plot(results, args.out)


if __name__ == "__main__":
    main()
