"""More training scenes (#29 item 1): a garment locator trained on ccp/'s masks labels the street
scenes of ccp-extra/, which carry garment tags but no boxes or masks.

    .venv/bin/python models/extra.py locate     # train on the train split's masks, measure on dev's
    .venv/bin/python models/extra.py label      # label ccp-extra: out/extra/pairs.jsonl and masks

The locator is tag-conditioned: a scene's tags (the garment labels present, as ccp-extra's
tags.json gives them) are known, so each pixel chooses among those labels plus `null`, `skin`
and `hair`. It is a small head on EfficientNet-Lite0's frozen maps of the whole scene at 448x320
(the stride-16 map, 28x20 cells, and the final map upsampled to it), trained with a soft
cross-entropy against each cell's label shares in ccp/masks of the training split only. A
garment's box is the tight box of the pixels that choose its label, as ccp's boxes are the tight
boxes of a label's mask; its confidence is the mean probability of its label over those pixels.

`label` keeps a tagged garment when its label maps to a category of ccp's pairs that the locator
finds well on dev (--min-located), its confidence is at least --keep, it covers at least MIN_AREA of the photo and the protocol's query beside it
exists; its pairs go to out/extra/pairs.jsonl (Shop-the-Look fields plus `confidence`) and the
predicted label map of each scene to out/extra/masks/<scene>.png (for the cut-out and the
backdrop of train.py --extra). Nothing of ccp-extra is ever evaluated.
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctl  # noqa: E402

H_IN, W_IN = 448, 320  # the locator's input (portrait, as the street photos)
CELL = 16  # the stride-16 map's cell
NOT_GARMENT = ("null", "skin", "hair")
MIN_AREA = 0.004  # of the photo: smaller predicted garments are dropped (ccp's smallest boxes are about this)


class Locator(nn.Module):
    def __init__(self, labels, width=96):
        super().__init__()
        self.mid = nn.Conv2d(112, width, 1)
        self.fin = nn.Conv2d(1280, width, 1)
        self.ctx = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, labels, 1)

    def forward(self, mid, fin):
        f = F.interpolate(self.fin(fin), size=mid.shape[2:], mode="bilinear", align_corners=False)
        h = F.relu(self.mid(mid) + f)
        h = F.relu(self.ctx(h)) + h
        return self.out(h)


def restrict(logits, allowed):
    """Logits [N,K,...] with every label outside allowed [N,K] (bool) at -inf."""
    shape = allowed.shape + (1,) * (logits.dim() - 2)
    return logits.masked_fill(~allowed.view(shape), float("-inf"))


class Maps:
    """The backbone's maps of whole scenes, computed once and cached (float16)."""

    def __init__(self, paths, cache, threads):
        key = hashlib.sha256(("|".join(os.path.abspath(p) for p in paths) + f"|{H_IN}x{W_IN}|v1").encode()).hexdigest()[:12]
        store = os.path.join(cache, f"maps-{key}.npz")
        if os.path.exists(store):
            z = np.load(store)
            self.mid, self.fin = z["mid"], z["fin"]
            return
        torch.set_num_threads(threads)
        backbone = ctl.LiteBackbone().eval()
        mids, fins, t0 = [], [], time.time()
        for s in range(0, len(paths), 16):
            x = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB").resize((W_IN, H_IN), Image.BILINEAR),
                                                      dtype=np.float32).transpose(2, 0, 1) for p in paths[s:s + 16]]))
            with torch.no_grad():
                m, f = backbone.maps(x)
            mids.append(m.numpy().astype(np.float16))
            fins.append(f.numpy().astype(np.float16))
        self.mid, self.fin = np.concatenate(mids), np.concatenate(fins)
        os.makedirs(cache, exist_ok=True)
        np.savez(store + ".tmp.npz", mid=self.mid, fin=self.fin)
        os.replace(store + ".tmp.npz", store)
        print(f"maps: {len(paths)} scenes in {time.time() - t0:.0f} s")


def cell_targets(mask, k):
    """Each 16x16 cell's label shares [K,28,20] of a mask resized (nearest) to the locator's input."""
    m = np.asarray(Image.fromarray(mask).resize((W_IN, H_IN), Image.NEAREST)).astype(np.int64)
    gh, gw = H_IN // CELL, W_IN // CELL
    cells = m.reshape(gh, CELL, gw, CELL).transpose(0, 2, 1, 3).reshape(gh, gw, CELL * CELL)
    counts = np.zeros((gh * gw, k), np.float32)
    np.add.at(counts, (np.repeat(np.arange(gh * gw), CELL * CELL), cells.reshape(-1)), 1)
    return (counts / (CELL * CELL)).reshape(gh, gw, k).transpose(2, 0, 1)


def allowed_of(tags, names):
    """The labels a scene's pixels may take: its tags plus null, skin and hair."""
    ok = np.zeros(len(names), bool)
    for t in list(tags) + list(NOT_GARMENT):
        if t in names:
            ok[names.index(t)] = True
    return ok


def train_locator(maps, rows, masks, allowed, k, epochs, seed):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    loc = Locator(k)
    opt = torch.optim.Adam(loc.parameters(), lr=2e-3, weight_decay=1e-4)
    targets = np.stack([cell_targets(m, k) for m in masks])
    for epoch in range(epochs):
        order, total = rng.permutation(len(rows)), 0.0
        for s in range(0, len(order), 16):
            b = order[s:s + 16]
            mid = torch.from_numpy(maps.mid[rows[b]].astype(np.float32))
            fin = torch.from_numpy(maps.fin[rows[b]].astype(np.float32))
            if rng.random() < 0.5:  # the same scene mirrored: maps and targets flipped together
                mid, fin, t = mid.flip(3), fin.flip(3), torch.from_numpy(targets[b][..., ::-1].copy())
            else:
                t = torch.from_numpy(targets[b])
            ok = torch.from_numpy(allowed[b])[:, :, None, None]
            logp = F.log_softmax(restrict(loc(mid, fin), torch.from_numpy(allowed[b])), 1)
            loss = -(t * torch.where(ok, logp, torch.zeros(()))).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        print(f"  locator epoch {epoch + 1}: loss {total / len(rows):.4f}")
    return loc.eval()


def predict(loc, maps, row, allowed, size):
    """The label map (uint8, the photo's size (w, h)) and each pixel's probability of its label."""
    with torch.no_grad():
        logits = loc(torch.from_numpy(maps.mid[row:row + 1].astype(np.float32)),
                     torch.from_numpy(maps.fin[row:row + 1].astype(np.float32)))
        logits = F.interpolate(logits, size=(size[1], size[0]), mode="bilinear", align_corners=False)
        p = torch.softmax(restrict(logits, torch.from_numpy(allowed[None])), 1)[0]
        conf, label = p.max(0)
    return label.numpy().astype(np.uint8), conf.numpy()


def garments(label_map, conf, tags, names):
    """{tag: (bbox normalised, confidence, area share)} for each tag that some pixels choose."""
    h, w = label_map.shape
    out = {}
    for t in tags:
        if t not in names:
            continue
        ys, xs = np.nonzero(label_map == names.index(t))
        if len(xs) == 0:
            continue
        out[t] = ((xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h),
                  float(conf[ys, xs].mean()), len(xs) / (w * h))
    return out


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def label_categories(data):
    """Fine label -> category path, from ccp's pairs (each label has one)."""
    cats = json.load(open(f"{data}/fashion-cat.json"))
    table = {}
    for p in ctl.read_stl(data):
        table.setdefault(p["label"], cats[p["product"]])
    return table


def scene_tags(mask, names):
    return [names[i] for i in np.unique(mask) if names[i] not in NOT_GARMENT]


def setup(args):
    names = json.load(open(f"{args.data}/mask-labels.json"))
    scenes = sorted({p["scene"] for p in ctl.read_stl(args.data)})
    extra = json.load(open(f"{args.extra}/tags.json"))
    extra_scenes = sorted(extra)
    paths = [f"{args.data}/scenes/{s}.jpg" for s in scenes] + [f"{args.extra}/scenes/{s}.jpg" for s in extra_scenes]
    maps = Maps(paths, args.cache, args.threads)
    return names, scenes, extra, extra_scenes, maps


def locate(args):
    names, scenes, _, _, maps = setup(args)
    masks = {s: np.asarray(Image.open(f"{args.data}/masks/{s}.png")) for s in scenes}
    train = np.array([i for i, s in enumerate(scenes) if ctl.split_of(s) == "train"])
    allowed = np.stack([allowed_of(scene_tags(masks[s], names), names) for s in scenes])
    weights = os.path.join(args.out, "locator.pt")
    if os.path.exists(weights) and not args.retrain:  # measured again, not trained again
        loc = Locator(len(names))
        loc.load_state_dict(torch.load(weights))
        loc.eval()
    else:
        t0 = time.time()
        loc = train_locator(maps, train, [masks[scenes[i]] for i in train], allowed[train], len(names), args.epochs,
                            args.seed)
        print(f"locator: {len(train)} training scenes in {time.time() - t0:.0f} s")
        os.makedirs(args.out, exist_ok=True)
        torch.save(loc.state_dict(), weights + ".tmp")
        os.replace(weights + ".tmp", weights)
    # Dev: every pair's box predicted from its scene's tags, against the box of its mask.
    table = label_categories(args.data)
    rows, pixel_ok, pixel_n = [], 0, 0
    by_scene = {}
    for p in ctl.read_stl(args.data):
        if ctl.split_of(p["scene"]) == "dev":
            by_scene.setdefault(p["scene"], []).append(p)
    for s, ps in by_scene.items():
        i = scenes.index(s)
        mask = masks[s]
        label_map, conf = predict(loc, maps, i, allowed[i], (mask.shape[1], mask.shape[0]))
        pixel_ok += int((label_map == mask).sum())
        pixel_n += mask.size
        found = garments(label_map, conf, scene_tags(mask, names), names)
        for p in ps:
            g = found.get(p["label"])
            rows.append({"category": table[p["label"]].split("|")[-1], "found": g is not None,
                         "iou": iou(g[0], p["bbox"]) if g else 0.0, "confidence": g[1] if g else 0.0,
                         "area": g[2] if g else 0.0})
    result = {"dev_pairs": len(rows), "dev_scenes": len(by_scene), "pixel_accuracy": pixel_ok / pixel_n,
              "epochs": args.epochs, "train_scenes": len(train)}

    def summary(sel):
        v = np.array([r["iou"] for r in sel]) if sel else np.zeros(0)
        return {"pairs": len(sel), "mean_iou": float(v.mean()) if len(v) else None,
                "iou_at_least_0.5": float((v >= 0.5).mean()) if len(v) else None}

    result["all"] = summary(rows)
    result["by_keep"] = {str(k): {**summary([r for r in rows if r["found"] and r["confidence"] >= k
                                               and r["area"] >= MIN_AREA]), "share_kept": float(np.mean(
                                      [r["found"] and r["confidence"] >= k and r["area"] >= MIN_AREA for r in rows]))}
                         for k in (0.0, 0.5, 0.6, 0.7, 0.8)}
    result["by_category"] = {c: summary([r for r in rows if r["category"] == c])
                             for c in sorted({r["category"] for r in rows})}
    # What `label` keeps: the well-located categories, at its confidence and area thresholds.
    good = {c for c, r in result["by_category"].items() if r["iou_at_least_0.5"] >= args.min_located}
    mine = [r for r in rows if r["category"] in good]
    kept = [r for r in mine if r["found"] and r["confidence"] >= args.keep and r["area"] >= MIN_AREA]
    result["labelled"] = {"categories": sorted(good), "keep": args.keep, "all": summary(mine),
                          "kept": {**summary(kept), "share_kept": len(kept) / len(mine)}}
    with open(os.path.join(args.out, "locator.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


def label(args):
    names, scenes, extra, extra_scenes, maps = setup(args)
    loc = Locator(len(names))
    loc.load_state_dict(torch.load(os.path.join(args.out, "locator.pt")))
    loc.eval()
    table = label_categories(args.data)
    with open(os.path.join(args.out, "locator.json")) as f:
        located = json.load(f)["by_category"]
    # Categories the locator finds badly on dev (bags, sunglasses, necklaces) are not labelled.
    poor = sorted(c for c, r in located.items() if r["iou_at_least_0.5"] < args.min_located)
    table = {t: c for t, c in table.items() if c.split("|")[-1] not in poor}
    os.makedirs(os.path.join(args.out, "masks"), exist_ok=True)
    pairs, dropped, considered = [], {"unmapped or poorly located": 0, "not found": 0, "unsure": 0, "small": 0, "no query": 0}, 0
    for k, s in enumerate(extra_scenes):
        row = len(scenes) + k
        tags = extra[s]
        size = Image.open(f"{args.extra}/scenes/{s}.jpg").size
        label_map, conf = predict(loc, maps, row, allowed_of(tags, names), size)
        Image.fromarray(label_map).save(os.path.join(args.out, "masks", f"{s}.png"))
        found = garments(label_map, conf, tags, names)
        n = 0
        for t in tags:
            considered += 1
            if t not in table:
                dropped["unmapped or poorly located"] += 1
                continue
            if t not in found:
                dropped["not found"] += 1
                continue
            box, c, area = found[t]
            why = ("unsure" if c < args.keep else "small" if area < MIN_AREA
                   else "no query" if ctl.query_rect(tuple(np.float32(v) for v in box)) is None else None)
            if why:
                dropped[why] += 1
                continue
            n += 1
            pairs.append({"product": f"{s}-x{n:02d}", "scene": s, "bbox": [round(float(v), 6) for v in box],
                          "label": t, "category": table[t], "confidence": round(c, 4)})
    with open(os.path.join(args.out, "pairs.jsonl.tmp"), "w") as f:
        f.write("".join(json.dumps(p) + "\n" for p in pairs))
    os.replace(os.path.join(args.out, "pairs.jsonl.tmp"), os.path.join(args.out, "pairs.jsonl"))
    counts = {}
    for p in pairs:
        c = p["category"].split("|")[-1]
        counts[c] = counts.get(c, 0) + 1
    summary = {"scenes": len(extra_scenes), "tags": considered, "pairs": len(pairs), "keep": args.keep,
               "min_located": args.min_located, "categories_not_labelled": poor,
               "dropped": dropped, "by_category": counts, "scenes_with_pairs": len({p["scene"] for p in pairs})}
    with open(os.path.join(args.out, "label.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["locate", "label"])
    ap.add_argument("--data", default="../shared/data/ccp")
    ap.add_argument("--extra", default="../shared/data/ccp-extra")
    ap.add_argument("--out", default="out/extra")
    ap.add_argument("--cache", default="out/features")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retrain", action="store_true", help="locate: train again even if out/locator.pt exists")
    ap.add_argument("--keep", type=float, default=0.6, help="label: the least confidence of a kept garment")
    ap.add_argument("--min-located", type=float, default=0.6,
                    help="label: only categories whose dev boxes have IoU >= 0.5 in at least this share (locator.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    {"locate": locate, "label": label}[args.step](args)


if __name__ == "__main__":
    main()
