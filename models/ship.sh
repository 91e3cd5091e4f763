#!/usr/bin/env bash
# Rebuild the shipped model from a Shop-the-Look folder, measure it, and write its model card.
#   models/ship.sh [DATA]      (DATA defaults to ../shared/data/ccp; its studio view, ccp-studio,
#                               is looked for beside it, or in $LOOKD_STUDIO)
# Needs the Python set-up in the README (Debian's python3-torch, a venv) and a built lookd.
# Timed on 2 cores: see MODEL_CARD.md ("Rebuild"); most of it is backbone features (cached in
# out/features) and the evaluations through tract and onnxruntime.
# SHIP_SKIP_TRAIN=1 keeps the trained models/default-f32 and only quantizes, measures and writes the card.
# The shipped recipe is the default (#29): SHIP_EXTRA=1 also trains on ccp-extra's scenes (beside
# DATA, or $LOOKD_EXTRA), labelled by models/extra.py's garment locator (docs/extra-scenes.md);
# SHIP_ATTEND=1 adds the attention loss of docs/attention.md with weight 1; SHIP_VARIANTS trains
# these variants (comma-separated: the two single-branch baselines and the shipped variant; "all"
# for every one of train.py's VARIANTS, the shipped one chosen among them). Set SHIP_EXTRA= or
# SHIP_ATTEND= (empty) to leave either out.
# Training writes the float model to models/default-f32; the int8 copy is quantized from it into
# out/models/default-int8; models/default becomes whichever the card's rule ships (#28: int8 when it
# is faster in lookd and within 1 FITB-4 point and 0.01 AUC of f32 on the dev studio view).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/ccp}"
STUDIO="${LOOKD_STUDIO:-$(dirname "$DATA")/ccp-studio}"
CATALOG="${LOOKD_CATALOG:-$(dirname "$DATA")/catalog/catalog.csv}"
started=$(date +%s)
SHIP_EXTRA=${SHIP_EXTRA-1}
SHIP_ATTEND=${SHIP_ATTEND-1}
SHIP_VARIANTS=${SHIP_VARIANTS-global,local,hybrid-product-mix-bg-colour-pool}
[ "$SHIP_VARIANTS" = all ] && SHIP_VARIANTS=
PY=.venv/bin/python
LOOKD="${LOOKD:-cargo run --release --quiet --}"
mkdir -p out/ship
if [ -z "${SHIP_SKIP_TRAIN:-}" ]; then
  flags=()
  [ -n "${SHIP_VARIANTS:-}" ] && flags+=(--variants "$SHIP_VARIANTS")
  [ -n "${SHIP_ATTEND:-}" ] && flags+=(--attend "$SHIP_ATTEND")
  if [ -n "${SHIP_EXTRA:-}" ]; then
    EXTRA="${LOOKD_EXTRA:-$(dirname "$DATA")/ccp-extra}"
    extra_labelled=false
    if [ ! -s out/extra/pairs.jsonl ]; then
      extra_labelled=true
      $PY -u models/extra.py locate --data "$DATA" --extra "$EXTRA"
      $PY -u models/extra.py label --data "$DATA" --extra "$EXTRA"
    fi
    flags+=(--extra out/extra --extra-scenes "$EXTRA/scenes")
  fi
  $PY -u models/train.py --data "$DATA" --studio "$STUDIO" --out models/default-f32 --lookd "$LOOKD" "${flags[@]}" \
    | tee out/ship/train.log
fi
# The mean train scene for lookd's hubness correction (docs/variety.md), before quantizing, so the
# int8 copy carries the same file.
$PY -u models/onnx_eval.py mean-scene --model models/default-f32 --data "$DATA"
# int8: calibrated on train-split scenes and studio cut-outs (the products a store has).
# The backbone's convolutions with their ReLU6 ranges, MinMax, but for the stem, the first and
# last blocks and the head convolution, which stay float. Chosen without dev labels (#29): of six
# settings, the one whose rankings agree best with the float model's on train-split trials that
# no calibration set uses (`onnx_eval.py agree`; docs/int8-calibration.md).
INT8_FLOAT=/backbone/_conv_stem/,/backbone/_blocks.0/,/backbone/_blocks.15/,/backbone/_conv_head/
$PY -u models/onnx_eval.py quantize --model models/default-f32 --data "$STUDIO" --out out/models/default-int8 --per-channel --method minmax --keep-float "$INT8_FLOAT"
# Each copy's reference scenes (its own embeddings of the train scenes), against which a catalog
# build caps each product's exposure (docs/variety.md); after quantizing, which copies the folder.
$LOOKD model scenes models/default-f32 --data "$STUDIO"
$LOOKD model scenes out/models/default-int8 --data "$STUDIO"
# The catalog check ranks the store catalog: its cache, built with the new model.
catalog_check=()
if [ -f "$CATALOG" ]; then
  $LOOKD catalog build --catalog "$CATALOG" --model models/default-f32 --out out/ship/catalog.cache
  catalog_check=(--catalog-cache out/ship/catalog.cache)
fi
# Every lookd eval the card shows: <model>-<view>-<split>.json, view "plain" (ccp/) or "studio".
evaluate() {  # model-name dir view split [extra lookd eval flags]
  local name=$1 dir=$2 view=$3 split=$4 data=$DATA; shift 4
  [ "$view" = studio ] && data=$STUDIO
  $LOOKD eval --data "$data" --model "$dir" --split "$split" --json "$@" > "out/ship/tract-$name-$view-$split.json"
}
evaluate default models/default-f32 plain dev "${catalog_check[@]}"
evaluate default models/default-f32 studio dev
evaluate default models/default-f32 plain test
evaluate default models/default-f32 studio test
evaluate default-int8 out/models/default-int8 studio dev
evaluate default-int8 out/models/default-int8 studio test
evaluate default-int8 out/models/default-int8 plain dev
evaluate default-int8 out/models/default-int8 plain test
for m in default default-int8; do
  dir=models/default-f32; [ "$m" = default-int8 ] && dir=out/models/default-int8
  $PY models/onnx_eval.py eval --model $dir --data "$STUDIO" --split dev > out/ship/ort-$m-studio-dev.json
  tolerance=1e-4; [ "$m" = default-int8 ] && tolerance=1e-2   # int8: #28's "embeddings within 1e-2"
  # Both must agree with onnxruntime (int8 since lookd guards tract's softmax fold, src/model/qdq.rs).
  $LOOKD model check $dir --tolerance $tolerance | tee out/ship/check-$m.txt
  $LOOKD model bench $dir --runs 30 --json > out/ship/bench-$m.json
done
echo "{\"seconds\": $(( $(date +%s) - started )), \"trained\": $([ -z "${SHIP_SKIP_TRAIN:-}" ] && echo true || echo false),"\
  "\"extra_labelled\": ${extra_labelled:-null}}" > out/ship/elapsed.json
# The rule picks the precision that ships; models/default becomes a copy of it (the card stays).
ships=$($PY models/card.py --decide --ship out/ship)
from=models/default-f32; [ "$ships" = int8 ] && from=out/models/default-int8
publish() {  # from to: the model folder's files (not the trainer's results.json), replacing to's
  mkdir -p "$2"
  find "$2" -maxdepth 1 -type f ! -name MODEL_CARD.md -delete
  for f in "$1"/manifest.toml "$1"/*.json "$1"/*.onnx "$1"/*.bin; do
    [ "$(basename "$f")" = results.json ] || cp "$f" "$2"/
  done
}
publish "$from" models/default
echo "models/default: the $ships model (from $from)"
# The int8 copy is kept beside it either way (models/default-int8), for a board that wants the
# integer speed-up whatever the rule chose, and for the int8 tests and benches.
publish out/models/default-int8 models/default-int8
# Variety (#29, docs/variety.md): the shipped model's lists over the dev scenes, against the catalog.
if [ -f "$CATALOG" ]; then
  $LOOKD catalog build --catalog "$CATALOG" --model models/default --out out/ship/catalog-shipped.cache
  $LOOKD eval --data "$STUDIO" --model models/default --split dev --no-photometric --json \
    --catalog-cache out/ship/catalog-shipped.cache --variety 0,0.1,0.3,0.5 > out/ship/variety-dev.json
fi
$PY models/card.py --results models/default-f32/results.json --ship out/ship --out models/default/MODEL_CARD.md
