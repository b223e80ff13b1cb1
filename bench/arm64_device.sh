#!/usr/bin/env bash
# The device on an arm64 userland: a Debian 12 arm64 root run by qemu-user-static (binfmt_misc), ANS
# installed there with the device extras only ('.[board]': numpy, paho-mqtt, LiteRT's arm64 build,
# OpenCV, pydantic; no TensorFlow), against a Mosquitto and an x86 edge on this host.
#
#   sudo bash bench/arm64_device.sh [FRAMES]        # default 20 frames per run; ROOT=/var/tmp/ans-arm64
#
# Two runs on the demo clip (written losslessly, so both machines see the same pixels), each checked:
#   1. device-only on arm64 and the same on x86: every frame answered, the same detections (class,
#      and box and score within 1e-3: two builds of the same float arithmetic);
#   2. the learner (policy ans) on arm64 offloading to the x86 edge: every frame answered, some by the edge.
# Timings under emulation are qemu's, not a board's. Exit status 0 when every check passed. The root
# (about 600 MB with the venv) is kept and reused; a run takes about 20 minutes, most of it the
# device's first-start calibration (every head timed chained and fused) under emulation.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
FRAMES=${1:-20}
ROOT=${ROOT:-/var/tmp/ans-arm64}
WORK=$(mktemp -d /var/tmp/ans-arm64-run.XXXXXX)
step() { printf '[%5ds] %s\n' "$SECONDS" "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "bench/arm64_device.sh needs root (debootstrap, chroot, binfmt)" >&2; exit 2; }

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true

if [ ! -x "$ROOT/usr/bin/python3" ]; then
  step "debootstrap an arm64 Debian 12 into $ROOT (a few minutes)"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOT" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; exit 1; }
fi

mounts=()
cleanup() {
  set +e
  [ -n "${EDGE_PID:-}" ] && kill "$EDGE_PID" 2>/dev/null && wait "$EDGE_PID" 2>/dev/null
  [ -n "${BROKER_PID:-}" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  pkill -f "/opt/ans/venv/bin/ans device" 2>/dev/null; sleep 0.5
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[$i]}" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM
for fs in proc sys dev; do
  mkdir -p "$ROOT/$fs"; mount --bind "/$fs" "$ROOT/$fs"; mounts+=("$ROOT/$fs")
done
# Under qemu-user the arm64 programs read this x86 host's /proc/cpuinfo, which LiteRT's CPU
# detection (cpuinfo, for XNNPACK) cannot parse: it crashes at the first allocate_tensors(). Show
# it what a board would: two Cortex-A76 cores (as a Raspberry Pi 5's).
for k in 0 1; do
  printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' "$k"
done >"$WORK/cpuinfo"
mount --bind "$WORK/cpuinfo" "$ROOT/proc/cpuinfo"; mounts+=("$ROOT/proc/cpuinfo")
# pip there trusts what this host trusts (a proxy's CA, say).
cp "${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}" "$ROOT/etc/ssl/host-ca.crt"
inroot() { chroot "$ROOT" env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 PIP_CERT=/etc/ssl/host-ca.crt "$@"; }

digest=$(git ls-files -co --exclude-standard -z | xargs -0 sha256sum 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat "$ROOT/opt/ans/installed-from" 2>/dev/null)" != "$digest" ]; then
  step "installing ANS with the device extras in the arm64 root (pip, under emulation)"
  rm -rf "$ROOT/opt/ans"; mkdir -p "$ROOT/opt/ans/src"
  git ls-files -co --exclude-standard -z | xargs -0 tar -cf - | tar -xf - -C "$ROOT/opt/ans/src"
  inroot python3 -m venv /opt/ans/venv
  inroot /opt/ans/venv/bin/pip install -q --disable-pip-version-check --upgrade pip wheel
  inroot /opt/ans/venv/bin/pip install -q --disable-pip-version-check '/opt/ans/src[board]'
  echo "$digest" >"$ROOT/opt/ans/installed-from"
fi
inroot /opt/ans/venv/bin/python - <<'EOF'
import importlib.util, platform
assert platform.machine() == "aarch64", platform.machine()
assert importlib.util.find_spec("tensorflow") is None, "TensorFlow must not be in a device install"
import ai_edge_litert.interpreter as lite
print(f"arm64 root: {platform.machine()}, Python {platform.python_version()}, LiteRT from {lite.__file__}")
EOF

step "bundle, broker and edge on this host (x86)"
.venv/bin/ans convert --zoo demo --out "$WORK/bundle" >/dev/null
# The demo clip, losslessly (FFV1): both machines then see the same pixels (their JPEG decoders
# round differently, and the comparison is about the heads, not about MJPG).
.venv/bin/python - "$WORK/clip.avi" "$FRAMES" <<'EOF'
import sys, cv2
from device_app.sources import demo_clip, open_source
out = cv2.VideoWriter(sys.argv[1], cv2.VideoWriter_fourcc(*"FFV1"), 15, (320, 240))
for frame in list(open_source(str(demo_clip())))[:int(sys.argv[2])]:
    out.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
out.release()
EOF
mkdir -p "$ROOT/opt/ans/bundle" "$ROOT/opt/ans/out"
mount --bind "$WORK/bundle" "$ROOT/opt/ans/bundle"; mounts+=("$ROOT/opt/ans/bundle")
mount --bind "$WORK" "$ROOT/opt/ans/out"; mounts+=("$ROOT/opt/ans/out")
PORT=$(.venv/bin/python -c 'from lab.local_broker import free_port; print(free_port())')
sed "s/^listener .*/listener $PORT 127.0.0.1/" mqtt/mosquitto.conf >"$WORK/mosquitto.conf"
echo "user root" >>"$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 & BROKER_PID=$!
.venv/bin/ans edge --bundle "$WORK/bundle" --broker "mqtt://127.0.0.1:$PORT" --id edge-x86 >"$WORK/edge.log" 2>&1 &
EDGE_PID=$!
for _ in $(seq 1 240); do grep -q "connected to" "$WORK/edge.log" 2>/dev/null && break; sleep 0.5; done

device() {  # where (arm64|x86), policy, id
  local args=(device --bundle BUNDLE --source CLIP --frames "$FRAMES" --policy "$2" --id "$3"
              --broker "mqtt://127.0.0.1:$PORT" --deadline-ms 3000)
  if [ "$1" = arm64 ]; then
    args=("${args[@]/BUNDLE//opt/ans/bundle}")
    # A fresh state, but one calibration for both arm64 runs: under emulation it takes minutes.
    rm -rf "${ROOT:?}/tmp/$3"; mkdir -p "$ROOT/tmp/$3"
    [ -f "$WORK/calibration.json" ] && cp "$WORK/calibration.json" "$ROOT/tmp/$3/"
    inroot /opt/ans/venv/bin/ans "${args[@]/CLIP//opt/ans/out/clip.avi}" --out "/opt/ans/out/$3.jsonl" --state-dir /tmp/$3
  else
    args=("${args[@]/BUNDLE/$WORK/bundle}")
    .venv/bin/ans "${args[@]/CLIP/$WORK/clip.avi}" --out "$WORK/$3.jsonl" --state-dir "$WORK/state-$3"
  fi
}
step "run 1: device-only, arm64 (emulated) and x86"
device arm64 device-only arm-local 2>"$WORK/arm-local.log" | tail -1
cp "$ROOT/tmp/arm-local/calibration.json" "$WORK/calibration.json"
device x86 device-only x86-local 2>"$WORK/x86-local.log" | tail -1
step "run 2: the learner on arm64, offloading to the x86 edge"
device arm64 ans arm-ans 2>"$WORK/arm-ans.log" | tail -1

.venv/bin/python - "$WORK" "$FRAMES" <<'EOF'
import json, sys
from pathlib import Path
import numpy as np
work, frames = Path(sys.argv[1]), int(sys.argv[2])
load = lambda name: [json.loads(line) for line in (work / f"{name}.jsonl").read_text().splitlines()]
arm, x86, ans = load("arm-local"), load("x86-local"), load("arm-ans")
checks = {
    "arm64 device-only: every frame answered": [r["frame"] for r in arm] == list(range(frames)),
    "x86 device-only: every frame answered": [r["frame"] for r in x86] == list(range(frames)),
    "arm64 ans: every frame answered": [r["frame"] for r in ans] == list(range(frames)),
    "arm64 ans: some frames answered by the x86 edge": sum(r["edge"] == "edge-x86" for r in ans) > 0,
}
same, worst = True, 0.0
for a, b in zip(arm, x86):
    da, db = np.array(a["detections"]).reshape(-1, 6), np.array(b["detections"]).reshape(-1, 6)
    if da.shape != db.shape or not np.array_equal(da[:, 5], db[:, 5]):
        same = False
        continue
    if len(da):
        worst = max(worst, float(np.max(np.abs(da[:, :5] - db[:, :5]))))
checks["arm64 and x86 detections equal (classes; boxes and scores within 1e-3)"] = same and worst <= 1e-3
delays = np.array([r["delay_s"] for r in arm]) * 1e3
offloaded = sum(r["edge"] is not None for r in ans)
for name, ok in checks.items():
    print(f"{'PASS' if ok else 'FAIL'}  {name}")
print(f"detections on {len(arm)} frames, {sum(len(r['detections']) for r in arm)} objects; largest difference "
      f"{worst:.1e}; arm64 device-only median {np.median(delays):.0f} ms per frame under emulation; "
      f"ans on arm64: {offloaded}/{len(ans)} frames answered by the x86 edge")
pays = json.loads((work / "calibration.json").read_text()).get("fuse_pays")
if pays is not None:  # every head was fused and timed there; these run fused
    print(f"heads fused on arm64 (faster than their segments under emulation): splits "
          f"{[k + 1 for k, p in enumerate(pays) if p and k]} of 2..{len(pays)}")
sys.exit(0 if all(checks.values()) else 1)
EOF
