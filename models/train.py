"""Train Complete-the-Look heads on a Shop-the-Look folder and ship them as a lookd model.

    .venv/bin/python models/train.py --data ../shared/data/ccp --out models/default

Steps: backbone features, computed once and cached (--cache); baselines; the heads trained in
four variants (global only, local only, hybrid with the tutorial's product key, hybrid with the
paper's category key); the best hybrid on the dev split exported to ONNX with the normalisation
folded in; an int8 (QDQ) copy; a results JSON and MODEL_CARD.md written from the numbers.
Split by scene (ctl.split_of); the dev split stops training early and picks the variant;
the test split is reported untouched. Seeds: everything from --seed.
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctl  # noqa: E402
from build_model import check_and_write_reference, reference_pixels, sha256  # noqa: E402

SIDE = 224
AUGMENTS = 3  # random query variants per training pair, besides the protocol's own
VARIANTS = ["global", "local", "hybrid-product", "hybrid-category"]


def load_rgb(path):
    return Image.open(path).convert("RGB")


def to_input(img, box=None):
    if box is not None:
        x, y, w, h = box
        img = img.crop((x, y, x + w, y + h))
    img = img.resize((SIDE, SIDE), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1)


def colour_hist(x):
    """8x8x8 RGB histogram of a [3,H,W] 0..255 image, square-rooted (Hellinger), unit norm."""
    q = np.clip(x // 32, 0, 7).astype(np.int64)
    h = np.bincount((q[0] * 64 + q[1] * 8 + q[2]).ravel(), minlength=512).astype(np.float32)
    h = np.sqrt(h / h.sum())
    return h / np.linalg.norm(h)


def random_query(rng, bbox, width, height):
    """A random rectangle inside one free side of the scene (at least 10% of the image)."""
    l, t, r, b = (float(v) for v in bbox)
    sides = [s for s in [(0, 0, l, 1), (r, 0, 1, 1), (0, 0, 1, t), (0, b, 1, 1)]
             if (s[2] - s[0]) * (s[3] - s[1]) >= 0.1]
    x0, y0, x1, y1 = sides[rng.integers(len(sides))]
    fw, fh = rng.uniform(0.7, 1.0, 2)
    w, h = (x1 - x0) * fw, (y1 - y0) * fh
    ox, oy = x0 + rng.uniform(0, (x1 - x0) - w), y0 + rng.uniform(0, (y1 - y0) - h)
    return ctl.to_pixels((ox, oy, ox + w, oy + h), width, height)


class Features:
    """Backbone outputs per product and per scene query (canonical + augmented)."""

    def __init__(self, data, pairs, backbone, cache, seed, batch=32):
        key = hashlib.sha256(f"{os.path.abspath(data)}|{len(pairs)}|{seed}|{AUGMENTS}|v1".encode()).hexdigest()[:12]
        path = os.path.join(cache, f"features-{key}.npz")
        if os.path.exists(path):
            z = np.load(path)
            self.__dict__.update({k: z[k] for k in z.files})
            print(f"features: reused {path}")
            return
        self.backbone, self.batch = backbone, batch
        products = sorted({p["product"] for p in pairs})
        self.product_ids = np.array(products)
        t0 = time.time()
        pf = self._run([lambda p=p: to_input(load_rgb(f"{data}/products/{p}.jpg")) for p in products])
        self.p_pooled, self.p_mid, self.p_hist = pf["pooled"], pf["mid_pooled"], pf["hist"]
        print(f"features: {len(products)} products in {time.time() - t0:.0f} s")
        rng = np.random.default_rng(seed)
        jobs, owner = [], []
        for i, p in enumerate(pairs):
            q = ctl.query_rect(p["bbox"])
            n = 1 + (AUGMENTS if ctl.split_of(p["scene"]) == "train" else 0)
            for v in range(n):
                jobs.append(lambda p=p, q=q, v=v: self._scene_crop(data, p, q, v, rng))
                owner.append((i, v))
        t0 = time.time()
        sf = self._run(jobs)
        print(f"features: {len(jobs)} scene queries in {time.time() - t0:.0f} s")
        self.s_owner = np.array(owner)
        self.s_pooled, self.s_cells, self.s_hist = sf["pooled"], sf["cells"], sf["hist"]
        os.makedirs(cache, exist_ok=True)
        np.savez(path + ".tmp.npz", **{k: v for k, v in self.__dict__.items() if isinstance(v, np.ndarray)})
        os.replace(path + ".tmp.npz", path)

    def _scene_crop(self, data, p, q, v, rng):
        img = load_rgb(f"{data}/scenes/{p['scene']}.jpg")
        if q is None:
            box = None
        elif v == 0:
            box = ctl.to_pixels(q, img.width, img.height)
        else:
            box = random_query(rng, p["bbox"], img.width, img.height)
        return to_input(img, box)

    def _run(self, jobs):
        out = {"pooled": [], "mid_pooled": [], "cells": [], "hist": []}
        for s in range(0, len(jobs), self.batch):
            x = np.stack([j() for j in jobs[s:s + self.batch]])
            with torch.no_grad():
                final, mid = self.backbone(torch.from_numpy(x))
            out["pooled"].append(final.mean((2, 3)).numpy())
            out["mid_pooled"].append(mid.mean((2, 3)).numpy())
            out["cells"].append(mid.flatten(2).transpose(1, 2).numpy().astype(np.float16))
            out["hist"].append(np.stack([colour_hist(i) for i in x]))
        return {k: np.concatenate(v) for k, v in out.items()}


class Problem:
    """Pairs, splits, and index maps from pairs to feature rows."""

    def __init__(self, pairs, feats):
        self.pairs, self.f = pairs, feats
        prow = {p: i for i, p in enumerate(feats.product_ids)}
        self.product_row = np.array([prow[p["product"]] for p in pairs])
        self.query_rows = {}
        for row, (i, v) in enumerate(feats.s_owner):
            self.query_rows.setdefault(int(i), []).append(row)
        self.split = np.array([ctl.split_of(p["scene"]) for p in pairs])
        self.categories = sorted({p["category"] for p in pairs})
        self.cat_index = np.array([self.categories.index(p["category"]) for p in pairs])

    def trials(self, split):
        """Protocol trials on one split, as `lookd eval --split`: indices into self.pairs."""
        idx = [i for i, s in enumerate(self.split) if s == split]
        sub = [self.pairs[i] for i in idx]
        return [(idx[i], [idx[n] for n in negs], idx[a]) for i, _, negs, a in ctl.plan(sub, 0)]


def trial_distances(prob, trials, dist_fn):
    """dist_fn(query rows [T], product rows [T, 5], pair idx [T, 5]) -> [T, 5] distances."""
    q = np.array([prob.query_rows[i][0] for i, _, _ in trials])
    cand = np.array([[i, *negs, a] for i, negs, a in trials])
    return dist_fn(q, prob.product_row[cand], cand)


def score_trials(prob, trials, dist_fn):
    return ctl.fitb_auc(trial_distances(prob, trials, dist_fn))


def per_category(prob, trials, d):
    cats = np.array([prob.pairs[i]["category"].split("|")[-1] for i, _, _ in trials])
    return {c: {"pairs": int((cats == c).sum()), "fitb4": ctl.fitb_auc(d[cats == c])[0]} for c in sorted(set(cats))}


def baselines(prob, split):
    f, trials = prob.f, prob.trials(split)

    def rand(q, p, c):
        return np.random.default_rng(0).random(p.shape)

    def imagenet(q, p, c):
        s = f.s_pooled[q] / np.linalg.norm(f.s_pooled[q], axis=1, keepdims=True)
        g = f.p_pooled[p] / np.linalg.norm(f.p_pooled[p], axis=2, keepdims=True)
        return ((s[:, None, :] - g) ** 2).sum(-1)

    def hist(q, p, c):
        return ((f.s_hist[q][:, None, :] - f.p_hist[p]) ** 2).sum(-1)

    return {name: score_trials(prob, trials, fn) for name, fn in
            [("random", rand), ("imagenet-global", imagenet), ("colour-histogram", hist)]}


def head_distances(heads, prob, q, p, c, mode):
    """All three distances for query rows q [T] against product rows p [T, K]."""
    f = prob.f
    t, k = p.shape
    with torch.no_grad():
        sg, sr, sk = heads.scene(torch.from_numpy(f.s_pooled[q]), torch.from_numpy(f.s_cells[q].astype(np.float32)))
        pg, pk = heads.product(torch.from_numpy(f.p_pooled[p.ravel()]), torch.from_numpy(f.p_mid[p.ravel()]))
        if mode == "category":
            pk = heads.category_keys()[torch.from_numpy(prob.cat_index[c.ravel()])]
        rep = lambda x: x.repeat_interleave(k, 0)  # noqa: E731
        g, loc, hyb = ctl.distances(rep(sg), rep(sr), rep(sk), pg, pk)
    return [x.numpy().reshape(t, k) for x in (g, loc, hyb)]


def train_variant(prob, variant, seed, epochs=40, patience=6, log=print):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    f = prob.f
    mode = "category" if variant == "hybrid-category" else "product"
    which = {"global": 0, "local": 1}.get(variant, 2)
    heads = ctl.Heads(f.p_pooled.shape[1], f.s_cells.shape[2], prob.categories)
    opt = torch.optim.Adam(heads.parameters(), lr=1e-3, weight_decay=1e-4)
    train = np.flatnonzero(prob.split == "train")
    by_cat = {}
    for i in train:
        by_cat.setdefault(prob.cat_index[i], []).append(i)
    dev = prob.trials("dev")
    best, best_state, since = -1.0, None, 0
    for epoch in range(epochs):
        heads.train()
        order = rng.permutation(train)
        for s in range(0, len(order), 256):
            b = order[s:s + 256]
            q = np.array([rng.choice(prob.query_rows[i]) for i in b])
            neg = []
            for i in b:
                pool = by_cat[prob.cat_index[i]]
                j = pool[rng.integers(len(pool))]
                while prob.pairs[j]["scene"] == prob.pairs[i]["scene"] and len(pool) > 1:
                    j = pool[rng.integers(len(pool))]
                neg.append(j)
            neg = np.array(neg)
            sg, sr, sk = heads.scene(torch.from_numpy(f.s_pooled[q]), torch.from_numpy(f.s_cells[q].astype(np.float32)))
            losses = []
            for rows in (b, neg):
                pg, pk = heads.product(torch.from_numpy(f.p_pooled[prob.product_row[rows]]),
                                       torch.from_numpy(f.p_mid[prob.product_row[rows]]))
                if mode == "category":
                    pk = heads.category_keys()[torch.from_numpy(prob.cat_index[rows])]
                losses.append(ctl.distances(sg, sr, sk, pg, pk)[which])
            loss = torch.clamp(losses[0] - losses[1] + ctl.MARGIN, min=0).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        heads.eval()
        fitb, auc = score_trials(prob, dev, lambda q, p, c: head_distances(heads, prob, q, p, c, mode)[which])
        log(f"  {variant} epoch {epoch + 1}: loss {loss.item():.4f} dev FITB-4 {fitb:.4f} AUC {auc:.4f}")
        if fitb > best:
            best, since = fitb, 0
            best_state = {k: v.clone() for k, v in heads.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                break
    heads.load_state_dict(best_state)
    heads.eval()
    result = {}
    for split in ("dev", "test"):
        trials = prob.trials(split)
        ds = lambda q, p, c: head_distances(heads, prob, q, p, c, mode)  # noqa: E731
        result[split] = {name: score_trials(prob, trials, lambda q, p, c, k=k: ds(q, p, c)[k])
                         for k, name in enumerate(["global", "local", "hybrid"])}
        result[split]["pairs"] = len(trials)
    result["dev-per-category"] = per_category(prob, prob.trials("dev"), trial_distances(
        prob, prob.trials("dev"), lambda q, p, c: head_distances(heads, prob, q, p, c, mode)[2]))
    return heads, mode, result


def export(heads, mode, out, result, args):
    model = ctl.Embed(ctl.LiteBackbone(), heads).eval()
    os.makedirs(out, exist_ok=True)
    graph = os.path.join(out, "embed.onnx")
    x = torch.from_numpy(reference_pixels(SIDE))
    outputs = ["global", "regions", "region_keys", "key"]
    with torch.no_grad():
        expected = [t.numpy() for t in model(x)]
        torch.onnx.export(model, x, graph + ".tmp", input_names=["image"], output_names=outputs, opset_version=13,
                          dynamic_axes={"image": {0: "N"}, **{o: {0: "N"} for o in outputs}})
    os.replace(graph + ".tmp", graph)
    check_and_write_reference(out, graph, x.numpy(), expected)
    if mode == "category":
        keys = heads.category_keys().detach().numpy()
        with open(os.path.join(out, "category_keys.json"), "w") as f:
            json.dump({c: [float(v) for v in k] for c, k in zip(heads.categories, keys)}, f)
    return graph


def write_manifest(out, graph_file, mode, precision, name, result):
    digest = sha256(os.path.join(out, graph_file))
    key_line = 'key = "key"\n' if mode == "product" else ""
    cat_line = 'category-keys = "category_keys.json"\n' if mode == "category" else ""
    dev = result["dev"]["hybrid"]
    text = f"""# lookd model manifest (contract: models/README.md). Written by models/train.py.
format = 1
name = "{name}"
backbone = "efficientnet-lite0"
trained = true
precision = "{precision}"
attention = "{mode}"
dim = 128
regions = 49
{cat_line}
[input]
name = "image"
width = {SIDE}
height = {SIDE}
pixels = "rgb-0-255"
resize = "stretch"

[scene]
graph = "{graph_file}"
sha256 = "{digest}"
global = "global"
regions = "regions"
keys = "region_keys"

[product]
graph = "{graph_file}"
sha256 = "{digest}"
global = "global"
{key_line}
[training]
data = "Shop-the-Look layout, ../shared/data/ccp"
split = "by scene: sha256(scene id)[0..8] big-endian % 100; train < 70, dev < 85, test"
dev-fitb4 = {dev[0]:.4f}
dev-auc = {dev[1]:.4f}
"""
    with open(os.path.join(out, "manifest.toml.tmp"), "w") as f:
        f.write(text)
    os.replace(os.path.join(out, "manifest.toml.tmp"), os.path.join(out, "manifest.toml"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/ccp")
    ap.add_argument("--out", default="models/default")
    ap.add_argument("--cache", default="out/features")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = ctl.read_stl(args.data)
    print(f"{len(pairs)} pairs; split: " + ", ".join(
        f"{s} {sum(ctl.split_of(p['scene']) == s for p in pairs)}" for s in ("train", "dev", "test")))
    feats = Features(args.data, pairs, ctl.LiteBackbone().eval(), args.cache, args.seed)
    prob = Problem(pairs, feats)
    results = {"baselines": {s: baselines(prob, s) for s in ("dev", "test")}, "variants": {}}
    print("baselines", json.dumps(results["baselines"]))
    trained = {}
    for v in VARIANTS:
        heads, mode, r = train_variant(prob, v, args.seed)
        trained[v] = (heads, mode)
        results["variants"][v] = r
        print(v, json.dumps(r))
    best = max(["hybrid-product", "hybrid-category"], key=lambda v: results["variants"][v]["dev"]["hybrid"][0])
    results["shipped"] = best
    heads, mode = trained[best]
    export(heads, mode, args.out, results["variants"][best], args)
    write_manifest(args.out, "embed.onnx", mode, "f32", f"ctl-lite0-{mode}-key", results["variants"][best])
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"shipped {best} to {args.out}")


if __name__ == "__main__":
    main()
