#!/usr/bin/env bash
# Installs everything ANS needs on a fresh Debian/Ubuntu machine with Python 3.11,
# then runs what was asked:  bash setup.sh demo   |   bash setup.sh test [pytest args]
# (bash setup.sh install: only the installation, as the benchmark scripts use it).
set -euo pipefail
cd "$(dirname "$0")"

what="${1:-}"
case "$what" in
  demo|test|install) shift ;;
  *) echo "usage: bash setup.sh demo|test" >&2; exit 2 ;;
esac

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

python="${PYTHON:-python3}"
"$python" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { echo "ANS needs Python 3.11 or newer (found $("$python" --version 2>&1))" >&2; exit 1; }

# The MQTT broker that the device and edge talk through.
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3-venv; "$python" -m venv .venv; }
fi
.venv/bin/python -m pip install -q --upgrade pip
# Editable, so that the checkout is what runs; setuptools' notice about editable installs is for
# package authors, not for the person running this.
PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e '.[all]'

# With an NVIDIA GPU, the edge's TensorFlow is the CUDA build (same version as the CPU one it
# replaces; both provide the same package, so one goes before the other comes). ANS_GPU=0 keeps the CPU build.
if [ "${ANS_GPU:-1}" != 0 ] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 \
   && .venv/bin/python -m pip show -q tensorflow-cpu >/dev/null 2>&1; then
  tf_version="$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))')"
  echo "NVIDIA GPU found: installing tensorflow[and-cuda]==$tf_version for the edge"
  .venv/bin/python -m pip uninstall -q -y tensorflow-cpu
  PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q "tensorflow[and-cuda]==$tf_version"
fi

case "$what" in
  demo) exec .venv/bin/ans demo "$@" ;;
  test) exec .venv/bin/python -m pytest "$@" ;;
esac
