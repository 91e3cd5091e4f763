#!/usr/bin/env bash
# Rebuild the shipped model from a Shop-the-Look folder, measure it, and write its model card.
#   models/ship.sh [DATA]      (DATA defaults to ../shared/data/ccp)
# Needs the Python set-up in the README (Debian's python3-torch, a venv) and a built lookd.
# Timed on 2 cores: see MODEL_CARD.md ("Rebuild"); most of it is backbone features (cached in
# out/features) and the evaluations through tract and onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/ccp}"
CATALOG="${LOOKD_CATALOG:-$(dirname "$DATA")/catalog/catalog.csv}"
started=$(date +%s)
PY=.venv/bin/python
LOOKD="${LOOKD:-cargo run --release --quiet --}"
mkdir -p out/ship
$PY -u models/train.py --data "$DATA" --out models/default | tee out/ship/train.log
$PY -u models/onnx_eval.py quantize --model models/default --data "$DATA" --out out/models/default-int8 --per-channel
# The catalog check ranks the store catalog: its cache, built with the new model.
catalog_check=()
if [ -f "$CATALOG" ]; then
  $LOOKD catalog build --catalog "$CATALOG" --model models/default --out out/ship/catalog.cache
  catalog_check=(--catalog-cache out/ship/catalog.cache)
fi
for m in default default-int8; do
  dir=models/$m; [ "$m" = default-int8 ] && dir=out/$dir
  $PY models/onnx_eval.py eval --model $dir --data "$DATA" --split dev > out/ship/ort-$m.json
  extra=(); [ "$m" = default ] && extra=("${catalog_check[@]}")
  $LOOKD eval --data "$DATA" --model $dir --split dev --json "${extra[@]}" > out/ship/tract-$m.json
  [ "$m" = default ] && $LOOKD eval --data "$DATA" --model $dir --split test --json > out/ship/tract-default-test.json
  tolerance=1e-4; [ "$m" = default-int8 ] && tolerance=3e-2   # int8: MODEL_CARD.md, "Why f32 ships"
  $LOOKD model check $dir --tolerance $tolerance | tee out/ship/check-$m.txt
  $LOOKD model bench $dir --runs 30 --json > out/ship/bench-$m.json
done
echo "{\"seconds\": $(( $(date +%s) - started ))}" > out/ship/elapsed.json
$PY models/card.py --results models/default/results.json --ship out/ship --out models/default/MODEL_CARD.md

