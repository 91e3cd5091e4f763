#!/usr/bin/env bash
# A lookd model on the design's backbone, ResNet50, from a torchvision ResNet50 weights file that
# you supply (a state_dict, e.g. ImageNet weights; none can be had here): the heads trained on
# its features, exported as f32, then quantized to int8 (the backbone's convolutions, per-channel
# symmetric weights, u8 activations) and checked through lookd against onnxruntime.
#
#   models/resnet50.sh WEIGHTS.pth [OUT]        OUT defaults to models/resnet50; OUT-f32 beside it
#   QUICK=1 models/resnet50.sh WEIGHTS.pth OUT  the whole pipeline on 240 pairs, 1 epoch (a check)
#
# Needs the Python set-up of models/README.md (.venv with Debian's torch and torchvision) and a
# built lookd (LOOKD, default `cargo run --release --quiet --`). Training args pass through
# TRAIN_ARGS (e.g. TRAIN_ARGS="--variants hybrid-product").
set -euo pipefail
cd "$(dirname "$0")/.."
weights=${1:?usage: models/resnet50.sh WEIGHTS.pth [OUT]}
out=${2:-models/resnet50}
DATA=${LOOKD_DATA:-../shared/data}/ccp
STUDIO=$(dirname "$DATA")/ccp-studio
PY=.venv/bin/python
LOOKD="${LOOKD:-cargo run --release --quiet --}"
quick=()
calibration=200
if [ -n "${QUICK:-}" ]; then
    quick=(--max-pairs 240 --epochs 1 --members 1 --member-epochs 1 --variants hybrid-product)
    calibration=16
fi
# shellcheck disable=SC2086
$PY -u models/train.py --backbone resnet50 --weights "$weights" --data "$DATA" --studio "$STUDIO" \
    --out "$out-f32" --lookd "$LOOKD" "${quick[@]}" ${TRAIN_ARGS:-}
$PY -u models/onnx_eval.py quantize --model "$out-f32" --data "$STUDIO" --out "$out" \
    --per-channel --method minmax --calibration "$calibration"
$LOOKD model check "$out-f32" --tolerance 1e-4
$LOOKD model check "$out" --tolerance 1e-2
$LOOKD model bench "$out-f32" --runs 10
$LOOKD model bench "$out" --runs 10
echo "models/resnet50.sh: $out (int8) and $out-f32 (f32) written and checked"
