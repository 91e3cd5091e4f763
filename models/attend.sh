#!/usr/bin/env bash
# Attention supervision (issue #29, item 3), measured: the shipped recipe's variant trained as one
# head (no ensemble) without and with the garment attention loss (`models/train.py --attend 1`),
# over three training seeds on the same cached features; dev only (test is not read).
#   models/attend.sh            (about 3 minutes a run, one thread, once out/features holds the features: 25 minutes before)
#   ATTEND_SEEDS="0 1 2" ATTEND_WEIGHTS="0 0.3 1" models/attend.sh   (what docs/attention.md shows)
# Writes out/attend/seed<S>-attend<W>.json (train.py's results) and prints the mean and spread.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
LOOKD=${LOOKD:-target/release/lookd}
mkdir -p out/attend
for s in ${ATTEND_SEEDS:-0 1 2}; do
  for w in ${ATTEND_WEIGHTS:-0 1}; do
    out=out/attend/seed$s-attend$w
    if [ ! -s "$out.json" ]; then
      $PY -u models/train.py --out '' --variants hybrid-product-mix-bg-colour-pool --members 1 \
        --attend "$w" --train-seed "$s" --threads 1 --lookd "$LOOKD" > "$out.log" 2>&1
      cp out/features/results.json "$out.json"
    fi
  done
done
$PY - <<'PY'
import glob, json, re
import numpy as np
runs = {}
for f in sorted(glob.glob("out/attend/seed*-attend*.json")):
    s, w = re.search(r"seed(\d+)-attend([\d.]+)\.json", f).groups()
    r = json.load(open(f))
    v = r["variants"]["hybrid-product-mix-bg-colour-pool"]["dev"]
    a = r["attention"]["studio"]
    runs.setdefault(w, []).append({
        "studio FITB-4": v["studio"]["hybrid"][0], "studio AUC": v["studio"]["hybrid"][1],
        "plain FITB-4": v["plain"]["hybrid"][0], "plain AUC": v["plain"]["hybrid"][1],
        "local-only studio AUC": v["studio"]["local"][1],
        "peak on the person": a["peak_on_person"], "peak / uniform (median)": a["peak_to_uniform_median"]})
keys = list(next(iter(runs.values()))[0])
print("| dev, one head, " + " | ".join(f"--attend {w} ({len(r)} seeds)" for w, r in sorted(runs.items())) + " |")
print("|---" * (1 + len(runs)) + "|")
for k in keys:
    cells = []
    for w, rs in sorted(runs.items()):
        x = np.array([r[k] for r in rs])
        cells.append(f"{x.mean():.3f} ({x.min():.3f}-{x.max():.3f})")
    print(f"| {k} | " + " | ".join(cells) + " |")
PY
