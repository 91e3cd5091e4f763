#!/usr/bin/env bash
# What ccp-extra's scenes bring (#29 item 1), dev only: the shipped variant as one head, trained on
# ccp's train split (base), on it plus the pairs models/extra.py labelled (extra), and on those
# alone (extra-only), and with the extra pairs and the attention loss of docs/attention.md
# (extra-attend, a mode EXTRA_MODES names), over three training seeds; prints the mean and range of each.
#   models/extra.sh            (after `models/extra.py locate` and `models/extra.py label`)
# EXTRA_SEEDS and EXTRA_MODES choose the runs; finished runs (out/extra/runs/*.json) are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
LOOKD=${LOOKD:-target/release/lookd}
mkdir -p out/extra/runs
for s in ${EXTRA_SEEDS:-0 1 2}; do
  for m in ${EXTRA_MODES:-base extra extra-only}; do
    out=out/extra/runs/seed$s-$m
    if [ ! -s "$out.json" ]; then
      case $m in
        base) flags=() ;;
        extra) flags=(--extra out/extra) ;;
        extra-only) flags=(--extra out/extra --extra-only) ;;
        extra-attend) flags=(--extra out/extra --attend 1) ;;
      esac
      $PY -u models/train.py --out '' --variants hybrid-product-mix-bg-colour-pool --members 1 \
        --train-seed "$s" --threads 1 --lookd "$LOOKD" --cache out/features "${flags[@]}" \
        --results "$out.json" > "$out.log" 2>&1
    fi
  done
done
$PY - <<'PY'
import glob, json, re
import numpy as np
runs = {}
for f in sorted(glob.glob("out/extra/runs/seed*-*.json")):
    s, m = re.search(r"seed(\d+)-([a-z-]+)\.json", f).groups()
    r = json.load(open(f))
    v = r["variants"]["hybrid-product-mix-bg-colour-pool"]["dev"]
    a = r["attention"]["studio"]
    runs.setdefault(m, []).append({
        "studio FITB-4": v["studio"]["hybrid"][0], "studio AUC": v["studio"]["hybrid"][1],
        "plain FITB-4": v["plain"]["hybrid"][0], "plain AUC": v["plain"]["hybrid"][1],
        "peak on the person": a["peak_on_person"], "peak / uniform (median)": a["peak_to_uniform_median"]})
order = ["base", "extra", "extra-only", "extra-attend"]
runs = {m: runs[m] for m in sorted(runs, key=lambda m: order.index(m) if m in order else len(order))}
keys = list(next(iter(runs.values()))[0])
print("| dev, one head, mean (range) over seeds | " + " | ".join(f"{m} ({len(runs[m])})" for m in runs) + " |")
print("|---|" + "---|" * len(runs))
for k in keys:
    print(f"| {k} | " + " | ".join(
        "{:.3f} ({:.3f}-{:.3f})".format(np.mean(x), min(x), max(x)) for x in
        ([r[k] for r in runs[m]] for m in runs)) + " |")
PY
