#!/usr/bin/env bash
# Rebuild the shipped model from a Shop-the-Look folder, measure it, and write its model card.
#   models/ship.sh [DATA]      (DATA defaults to ../shared/data/ccp)
# Needs the Python set-up in the README (Debian's python3-torch, a venv) and a built lookd.
# About 25 minutes on 2 cores, most of it backbone features (cached in out/features).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/ccp}"
PY=.venv/bin/python
LOOKD="${LOOKD:-cargo run --release --quiet --}"
mkdir -p out/ship
$PY -u models/train.py --data "$DATA" --out models/default | tee out/ship/train.log
$PY -u models/onnx_eval.py quantize --model models/default --data "$DATA" --out out/models/default-int8
for m in default default-int8; do
  dir=models/$m; [ "$m" = default-int8 ] && dir=out/$dir
  $PY models/onnx_eval.py eval --model $dir --data "$DATA" --split dev > out/ship/ort-$m.json
  $LOOKD eval --data "$DATA" --model $dir --split dev --json > out/ship/tract-$m.json
  $LOOKD model check $dir --tolerance 1e-2 | tee out/ship/check-$m.txt
  $LOOKD model bench $dir --runs 30 --json > out/ship/bench-$m.json
done
$PY models/card.py --results models/default/results.json --ship out/ship --out models/default/MODEL_CARD.md

