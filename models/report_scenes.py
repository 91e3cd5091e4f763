"""Choose the standard report's 24 scenes (docs/report-scenes.txt) from a Shop-the-Look folder.

    .venv/bin/python models/report_scenes.py --data ../shared/data/ccp > docs/report-scenes.txt

Only dev and test scenes (never trained on). Light and dark outfits: a scene's tone is the mean
luminance of its garment boxes; the 12 lightest and 12 darkest are filled greedily, each pick
the scene that adds the most categories not yet covered (ties: the more extreme tone), until
every category of the folder is covered; then by tone alone. Deterministic.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctl  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/ccp")
    ap.add_argument("--count", type=int, default=24)
    args = ap.parse_args()
    scenes = {}
    for p in ctl.read_stl(args.data):
        if ctl.split_of(p["scene"]) != "train":
            scenes.setdefault(p["scene"], []).append(p)
    tone, cats = {}, {}
    for s, pairs in scenes.items():
        img = np.asarray(Image.open(f"{args.data}/scenes/{s}.jpg").convert("L"), dtype=np.float32)
        h, w = img.shape
        lum = [img[int(t * h):max(int(b * h), int(t * h) + 1), int(l * w):max(int(r * w), int(l * w) + 1)].mean()
               for l, t, r, b in (p["bbox"] for p in pairs)]
        tone[s] = float(np.mean(lum))
        cats[s] = {p["category"] for p in pairs}
    everything = set().union(*cats.values())
    by_tone = sorted(scenes, key=lambda s: (tone[s], s))
    half = args.count // 2
    pools = {"dark": by_tone[:len(by_tone) // 2], "light": by_tone[len(by_tone) // 2:][::-1]}
    chosen, covered = {"dark": [], "light": []}, set()
    while any(len(chosen[k]) < half for k in pools):
        for k, pool in pools.items():
            if len(chosen[k]) >= half:
                continue
            free = [s for s in pool if s not in chosen[k]]
            best = max(free, key=lambda s: (len(cats[s] - covered), -free.index(s)))
            chosen[k].append(best)
            covered |= cats[best]
    missing = everything - covered
    print(f"# The standard `lookd report` scenes: ids in ../shared/data/ccp, dev and test split only.")
    print(f"# Chosen by models/report_scenes.py: {half} dark and {half} light outfits (mean luminance of the")
    print(f"# garment boxes), greedily covering every category{'' if not missing else ' but ' + ', '.join(sorted(missing))}.")
    for k in ("dark", "light"):
        for s in chosen[k]:
            print(f"{s}  # {k}, tone {tone[s]:.0f}, {len(cats[s])} categories")


if __name__ == "__main__":
    main()
