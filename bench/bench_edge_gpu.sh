#!/usr/bin/env bash
# The edge on a GPU, one command: installs ANS (with tensorflow[and-cuda] when an NVIDIA GPU is
# present, as setup.sh does), converts tiny-YOLOv2 (80 classes, 416x416, seeded weights) and
# prints the tail time and requests/s against batch size, with and without XLA, for the first,
# a middle and the last split. Without a GPU it runs the same on the CPU and says so.
#
#   bash bench/bench_edge_gpu.sh [extra bench_edge_batch.py arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash setup.sh install
work="${ANS_BENCH_DIR:-$(mktemp -d)}"
[ -f "$work/tiny-yolov2/manifest.json" ] || .venv/bin/ans convert --zoo tiny-yolov2 --out "$work/tiny-yolov2" >/dev/null
exec .venv/bin/python bench/bench_edge_batch.py --bundle "$work/tiny-yolov2" "$@"
