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
DIM = 128  # embedding width of the shipped model (an ensemble's members split it)
AUGMENTS = 3  # random query variants per training pair, besides the protocol's own
PRODUCT_AUGMENTS = 2  # random crops with colour jitter per training product, besides the photo itself
CROP_GRID, CROP_SIDE = 2, 112  # the tutorial's regions: N x N crops of the query, each through the backbone
VARIANTS = ["global", "local", "hybrid-product", "hybrid-category", "hybrid-product-plain", "hybrid-product-crops"]
SHIPPABLE = ["hybrid-product", "hybrid-category", "hybrid-product-plain"]


def load_rgb(path):
    return Image.open(path).convert("RGB")


def to_input(img, box=None, side=SIDE):
    if box is not None:
        x, y, w, h = box
        img = img.crop((x, y, x + w, y + h))
    img = img.resize((side, side), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1)


def crop_inputs(img, box):
    """The tutorial's regions: the query split into CROP_GRID x CROP_GRID crops, row-major."""
    x, y, w, h = box if box is not None else (0, 0, img.width, img.height)
    out = []
    for r in range(CROP_GRID):
        for c in range(CROP_GRID):
            x0, y0 = x + w * c // CROP_GRID, y + h * r // CROP_GRID
            x1, y1 = x + w * (c + 1) // CROP_GRID, y + h * (r + 1) // CROP_GRID
            out.append(to_input(img, (x0, y0, max(x1 - x0, 1), max(y1 - y0, 1)), CROP_SIDE))
    return out


def colour_hist(x):
    """8x8x8 RGB histogram of a [3,H,W] 0..255 image, square-rooted (Hellinger), unit norm."""
    q = np.clip(x // 32, 0, 7).astype(np.int64)
    h = np.bincount((q[0] * 64 + q[1] * 8 + q[2]).ravel(), minlength=512).astype(np.float32)
    h = np.sqrt(h / h.sum())
    return h / np.linalg.norm(h)


def jitter_params(rng):
    """Training colour jitter (temperature, brightness, contrast): wider than the photometric
    check and drawn from another stream."""
    return tuple(np.float32(rng.uniform(lo, hi)) for lo, hi in ((-0.25, 0.25), (0.7, 1.3), (0.7, 1.3)))


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


def random_product_crop(rng, img):
    """A random crop keeping 75-100% of each side of a product photo."""
    fw, fh = rng.uniform(0.75, 1.0, 2)
    w, h = max(int(img.width * fw), 1), max(int(img.height * fh), 1)
    x, y = int(rng.uniform(0, img.width - w + 1e-9)), int(rng.uniform(0, img.height - h + 1e-9))
    return x, y, w, h


class Features:
    """Backbone outputs, computed once and cached:
    products: p_* the photo; ph_* the photo under the photometric check (ctl.photometric_params,
    seed 0); pa_* training products' random crops with colour jitter (owner: product row).
    scenes: per pair the protocol's query, and for training pairs AUGMENTS random rectangles
    with colour jitter (s_owner: pair index, variant); s_cells the stride-16 cells, s_crops the
    pooled final feature of each of the query's CROP_GRID^2 crops."""

    def __init__(self, data, pairs, backbone, name, cache, seed, batch=32):
        key = hashlib.sha256(f"{os.path.abspath(data)}|{len(pairs)}|{seed}|{AUGMENTS}|{PRODUCT_AUGMENTS}|"
                             f"{CROP_GRID}|{CROP_SIDE}|{name}|v2".encode()).hexdigest()[:12]
        path = os.path.join(cache, f"features-{key}.npz")
        if os.path.exists(path):
            z = np.load(path)
            self.__dict__.update({k: z[k] for k in z.files})
            print(f"features: reused {path}")
            return
        self.backbone, self.batch = backbone, batch
        rng = np.random.default_rng(seed)
        products = sorted({p["product"] for p in pairs})
        self.product_ids = np.array(products)
        train_products = sorted({p["product"] for p in pairs if ctl.split_of(p["scene"]) == "train"})
        row = {p: i for i, p in enumerate(products)}

        def photo(p):
            return ctl.photometric(to_input(load_rgb(f"{data}/products/{p}.jpg")), ctl.photometric_params(p, 0))

        def augmented(p):
            img = load_rgb(f"{data}/products/{p}.jpg")
            return ctl.photometric(to_input(img, random_product_crop(rng, img)), jitter_params(rng))

        t0 = time.time()
        for prefix, jobs in [("p", [lambda p=p: to_input(load_rgb(f"{data}/products/{p}.jpg")) for p in products]),
                             ("ph", [lambda p=p: photo(p) for p in products]),
                             ("pa", [lambda p=p: augmented(p) for p in train_products for _ in range(PRODUCT_AUGMENTS)])]:
            f = self._run(jobs)
            setattr(self, f"{prefix}_pooled", f["pooled"])
            setattr(self, f"{prefix}_mid", f["mid_pooled"])
            setattr(self, f"{prefix}_hist", f["hist"])
        self.pa_owner = np.array([row[p] for p in train_products for _ in range(PRODUCT_AUGMENTS)])
        print(f"features: {len(products)} products, photometric and {len(self.pa_owner)} augmented in {time.time() - t0:.0f} s")
        jobs, owner = [], []
        for i, p in enumerate(pairs):
            q = ctl.query_rect(p["bbox"])
            n = 1 + (AUGMENTS if ctl.split_of(p["scene"]) == "train" else 0)
            for v in range(n):
                jobs.append(lambda p=p, q=q, v=v: self._scene_crop(data, p, q, v, rng))
                owner.append((i, v))
        t0 = time.time()
        sf = self._run(jobs, crops=True)
        print(f"features: {len(jobs)} scene queries in {time.time() - t0:.0f} s")
        self.s_owner = np.array(owner)
        self.s_pooled, self.s_cells, self.s_hist, self.s_crops = sf["pooled"], sf["cells"], sf["hist"], sf["crops"]
        os.makedirs(cache, exist_ok=True)
        np.savez(path + ".tmp.npz", **{k: v for k, v in self.__dict__.items() if isinstance(v, np.ndarray)})
        os.replace(path + ".tmp.npz", path)

    def _scene_crop(self, data, p, q, v, rng):
        """(model input, crop inputs) of one scene query; variants after 0 are jittered."""
        img = load_rgb(f"{data}/scenes/{p['scene']}.jpg")
        if q is None:
            box = None
        elif v == 0:
            box = ctl.to_pixels(q, img.width, img.height)
        else:
            box = random_query(rng, p["bbox"], img.width, img.height)
        x, crops = to_input(img, box), crop_inputs(img, box)
        if v > 0:
            params = jitter_params(rng)
            x, crops = ctl.photometric(x, params), [ctl.photometric(c, params) for c in crops]
        return x, crops

    def _run(self, jobs, crops=False):
        out = {"pooled": [], "mid_pooled": [], "cells": [], "hist": [], "crops": []}
        for s in range(0, len(jobs), self.batch):
            done = [j() for j in jobs[s:s + self.batch]]
            x = np.stack([d[0] for d in done] if crops else done)
            with torch.no_grad():
                final, mid = self.backbone(torch.from_numpy(x))
                if crops:
                    c = np.stack([c for d in done for c in d[1]])
                    cf, _ = self.backbone(torch.from_numpy(c))
                    out["crops"].append(cf.mean((2, 3)).reshape(len(done), CROP_GRID ** 2, -1).numpy().astype(np.float16))
            out["pooled"].append(final.mean((2, 3)).numpy())
            out["mid_pooled"].append(mid.mean((2, 3)).numpy())
            out["cells"].append(mid.flatten(2).transpose(1, 2).numpy().astype(np.float16))
            out["hist"].append(np.stack([colour_hist(i) for i in x]))
        return {k: np.concatenate(v) for k, v in out.items() if v}


class Problem:
    """Pairs, splits, and index maps from pairs to feature rows."""

    def __init__(self, pairs, feats):
        self.pairs, self.f = pairs, feats
        prow = {p: i for i, p in enumerate(feats.product_ids)}
        self.product_row = np.array([prow[p["product"]] for p in pairs])
        self.query_rows = {}
        for row, (i, v) in enumerate(feats.s_owner):
            self.query_rows.setdefault(int(i), []).append(row)
        n = len(feats.product_ids)
        # Training product views: the photo (row r) or one of its augmented copies (n + k).
        self.product_views = [[r] for r in range(n)]
        for k, owner in enumerate(feats.pa_owner):
            self.product_views[int(owner)].append(n + k)
        self.all_pooled = np.concatenate([feats.p_pooled, feats.pa_pooled])
        self.all_mid = np.concatenate([feats.p_mid, feats.pa_mid])
        self.split = np.array([ctl.split_of(p["scene"]) for p in pairs])
        self.categories = sorted({p["category"] for p in pairs})
        self.cat_index = np.array([self.categories.index(p["category"]) for p in pairs])

    def trials(self, split):
        """Protocol trials on one split, as `lookd eval --split`: indices into self.pairs."""
        idx = [i for i, s in enumerate(self.split) if s == split]
        sub = [self.pairs[i] for i in idx]
        return [(idx[i], [idx[n] for n in negs], idx[a]) for i, _, negs, a in ctl.plan(sub, 0)]

    def products(self, rows, view):
        """(pooled, mid-pooled, histogram) of product rows: the photo, or under the photometric check."""
        f = self.f
        if view == "photometric":
            return f.ph_pooled[rows], f.ph_mid[rows], f.ph_hist[rows]
        return f.p_pooled[rows], f.p_mid[rows], f.p_hist[rows]


def trial_distances(prob, trials, dist_fn):
    """dist_fn(query rows [T], product rows [T, 5], pair idx [T, 5]) -> [T, 5] distances."""
    q = np.array([prob.query_rows[i][0] for i, _, _ in trials], dtype=np.int64)
    cand = np.array([[i, *negs, a] for i, negs, a in trials], dtype=np.int64).reshape(-1, 5)
    return dist_fn(q, prob.product_row[cand], cand)


def score_trials(prob, trials, dist_fn):
    return ctl.fitb_auc(trial_distances(prob, trials, dist_fn))


def per_category(prob, trials, d):
    cats = np.array([prob.pairs[i]["category"].split("|")[-1] for i, _, _ in trials])
    return {c: {"pairs": int((cats == c).sum()), "fitb4": ctl.fitb_auc(d[cats == c])[0]} for c in sorted(set(cats))}


VIEWS = ["plain", "photometric"]


def baselines(prob, split):
    f, trials = prob.f, prob.trials(split)

    def rand(q, p, c, view):
        return np.random.default_rng(0).random(p.shape)

    def imagenet(q, p, c, view):
        s = f.s_pooled[q] / np.linalg.norm(f.s_pooled[q], axis=1, keepdims=True)
        g = prob.products(p, view)[0]
        g = g / np.linalg.norm(g, axis=2, keepdims=True)
        return ((s[:, None, :] - g) ** 2).sum(-1)

    def hist(q, p, c, view):
        return ((f.s_hist[q][:, None, :] - prob.products(p, view)[2]) ** 2).sum(-1)

    return {name: {view: score_trials(prob, trials, lambda q, p, c, fn=fn, view=view: fn(q, p, c, view))
                   for view in VIEWS}
            for name, fn in [("random", rand), ("imagenet-global", imagenet), ("colour-histogram", hist)]}


def variant_setup(variant):
    """(attention mode, which distance trains: 0 global 1 local 2 hybrid, regions, augment)."""
    mode = "category" if variant == "hybrid-category" else "product"
    which = {"global": 0, "local": 1}.get(variant, 2)
    regions = "crops" if variant.endswith("-crops") else "cells"
    return mode, which, regions, not variant.endswith("-plain")


def scene_inputs(prob, q, regions):
    f = prob.f
    cells = f.s_crops[q] if regions == "crops" else f.s_cells[q]
    return torch.from_numpy(f.s_pooled[q]), torch.from_numpy(cells.astype(np.float32))


def product_inputs(pooled, mid, regions):
    """In the crop scheme the regions are pooled final features, so the product's key is too."""
    return torch.from_numpy(pooled), torch.from_numpy(pooled if regions == "crops" else mid)


def head_distances(heads, prob, q, p, c, setup, view="plain"):
    """All three distances for query rows q [T] against product rows p [T, K]."""
    mode, _, regions, _ = setup
    t, k = p.shape
    unique, back = np.unique(p.ravel(), return_inverse=True)  # each product's heads run once
    pooled, mid, _ = prob.products(unique, view)
    with torch.no_grad():
        sg, sr, sk = heads.scene(*scene_inputs(prob, q, regions))
        pg, pk = heads.product(*product_inputs(pooled, mid, regions))
        back = torch.from_numpy(back)
        pg, pk = pg[back], pk[back]
        if mode == "category":
            pk = heads.category_keys()[torch.from_numpy(prob.cat_index[c.ravel()])]
        rep = lambda x: x.repeat_interleave(k, 0)  # noqa: E731
        g, loc, hyb = ctl.distances(rep(sg), rep(sr), rep(sk), pg, pk)
    return [x.numpy().reshape(t, k) for x in (g, loc, hyb)]


def train_variant(prob, variant, seed, epochs=40, patience=6, negatives=1, dim=128, swa_from=None, log=print):
    """Trains one variant; each anchor meets `negatives` same-category negatives per step.
    Early stopping on dev FITB-4 by default; with swa_from, all `epochs` run and the result is the
    average of the weights after each epoch from swa_from on (dev is then not looked at)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    f = prob.f
    setup = variant_setup(variant)
    mode, which, regions, augment = setup
    c_region = f.s_crops.shape[2] if regions == "crops" else f.s_cells.shape[2]
    heads = ctl.Heads(f.p_pooled.shape[1], c_region, prob.categories, dim=dim)
    opt = torch.optim.Adam(heads.parameters(), lr=1e-3, weight_decay=1e-4)
    train = np.flatnonzero(prob.split == "train")
    by_cat = {}
    for i in train:
        by_cat.setdefault(prob.cat_index[i], []).append(i)
    dev = prob.trials("dev")
    best, best_state, since, average = -1.0, None, 0, None
    for epoch in range(epochs):
        heads.train()
        order = rng.permutation(train)
        for s in range(0, len(order), 256):
            b = order[s:s + 256]
            q = np.array([rng.choice(prob.query_rows[i]) if augment else prob.query_rows[i][0] for i in b])
            neg = []
            for _ in range(negatives):
                for i in b:
                    pool = by_cat[prob.cat_index[i]]
                    j = pool[rng.integers(len(pool))]
                    while prob.pairs[j]["scene"] == prob.pairs[i]["scene"] and len(pool) > 1:
                        j = pool[rng.integers(len(pool))]
                    neg.append(j)
            neg = np.array(neg)
            sg, sr, sk = heads.scene(*scene_inputs(prob, q, regions))
            losses = []
            for rows in (b, neg):
                views = [rng.choice(prob.product_views[r]) if augment else r for r in prob.product_row[rows]]
                pg, pk = heads.product(*product_inputs(prob.all_pooled[views], prob.all_mid[views], regions))
                if mode == "category":
                    pk = heads.category_keys()[torch.from_numpy(prob.cat_index[rows])]
                n = len(rows) // len(b)  # the scene side repeats once per negative drawn
                losses.append(ctl.distances(sg.repeat(n, 1), sr.repeat(n, 1, 1), sk.repeat(n, 1, 1), pg, pk)[which])
            loss = torch.clamp(losses[0].repeat(negatives) - losses[1] + ctl.MARGIN, min=0).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        heads.eval()
        if swa_from is not None:
            if epoch >= swa_from:
                average = ctl.running_average(average, heads.state_dict(), epoch - swa_from)
            continue
        fitb, auc = score_trials(prob, dev, lambda q, p, c: head_distances(heads, prob, q, p, c, setup)[which])
        log(f"  {variant} epoch {epoch + 1}: loss {loss.item():.4f} dev FITB-4 {fitb:.4f} AUC {auc:.4f}")
        if fitb > best:
            best, since = fitb, 0
            best_state = {k: v.clone() for k, v in heads.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                break
    heads.load_state_dict(best_state if swa_from is None else average)
    heads.eval()
    return heads, mode, evaluate(prob, heads, setup)


def evaluate(prob, heads, setup):
    """All three distances on dev and test, plain and photometric, and dev per category."""
    result = {}
    for split in ("dev", "test"):
        trials = prob.trials(split)
        result[split] = {}
        for view in VIEWS:
            d = trial_distances(prob, trials, lambda q, p, c, view=view: np.stack(
                head_distances(heads, prob, q, p, c, setup, view)))
            result[split][view] = {name: ctl.fitb_auc(d[k]) for k, name in enumerate(["global", "local", "hybrid"])}
        result[split]["pairs"] = len(trials)
    result["dev-per-category"] = per_category(prob, prob.trials("dev"), trial_distances(
        prob, prob.trials("dev"), lambda q, p, c: head_distances(heads, prob, q, p, c, setup)[2]))
    return result


def make_backbone(args):
    """(module, manifest name): EfficientNet-Lite0, or torchvision's ResNet50 from a weights file."""
    if args.backbone == "resnet50":
        return ctl.ResNetBackbone(args.weights).eval(), "resnet50"
    return ctl.LiteBackbone().eval(), "efficientnet-lite0"


def export(heads, mode, out, result, args):
    model = ctl.Embed(make_backbone(args)[0], heads).eval()
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


def write_manifest(out, graph_file, mode, precision, name, result, backbone="efficientnet-lite0"):
    digest = sha256(os.path.join(out, graph_file))
    key_line = 'key = "key"\n' if mode == "product" else ""
    cat_line = 'category-keys = "category_keys.json"\n' if mode == "category" else ""
    dev = result["dev"]["plain"]["hybrid"]
    photo = result["dev"]["photometric"]["hybrid"]
    text = f"""# lookd model manifest (contract: models/README.md). Written by models/train.py.
format = 1
name = "{name}"
backbone = "{backbone}"
trained = true
precision = "{precision}"
attention = "{mode}"
dim = {DIM}
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
dev-photometric-fitb4 = {photo[0]:.4f}
dev-photometric-auc = {photo[1]:.4f}
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
    ap.add_argument("--backbone", choices=["efficientnet-lite0", "resnet50"], default="efficientnet-lite0")
    ap.add_argument("--weights", help="ResNet50: a torchvision state_dict file (ImageNet weights); required")
    ap.add_argument("--max-pairs", type=int, help="use only the first N pairs (a quick check of the pipeline)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--negatives", type=int, default=8, help="same-category negatives per anchor and step")
    ap.add_argument("--members", type=int, default=4,
                    help="the shipped model: this many heads of the chosen variant, 128/M dimensions each, side by side")
    ap.add_argument("--member-epochs", type=int, default=30, help="epochs per member (no early stopping)")
    ap.add_argument("--average-from", type=int, default=5, help="members: average the weights after each epoch from this one")
    args = ap.parse_args()
    if args.members < 1 or DIM % args.members:
        ap.error(f"--members must divide {DIM}")
    if args.backbone == "resnet50" and not args.weights:
        ap.error("--backbone resnet50 needs --weights (a trained model needs ImageNet features; "
                 "models/build_model.py --backbone resnet50 exports the untrained one for latency work)")
    torch.set_num_threads(args.threads)
    pairs = ctl.read_stl(args.data)[:args.max_pairs]
    print(f"{len(pairs)} pairs; split: " + ", ".join(
        f"{s} {sum(ctl.split_of(p['scene']) == s for p in pairs)}" for s in ("train", "dev", "test")))
    backbone, backbone_name = make_backbone(args)
    if args.weights:
        backbone_name += "-" + sha256(args.weights)[:12]
    feats = Features(args.data, pairs, backbone, backbone_name, args.cache, args.seed)
    prob = Problem(pairs, feats)
    results = {"baselines": {s: baselines(prob, s) for s in ("dev", "test")}, "variants": {}}
    print("baselines", json.dumps(results["baselines"]))
    trained = {}
    for v in VARIANTS:
        heads, mode, r = train_variant(prob, v, args.seed, epochs=args.epochs, negatives=args.negatives)
        trained[v] = (heads, mode)
        results["variants"][v] = r
        print(v, json.dumps(r))
    # The shipped hybrid: best mean of plain and photometric dev FITB-4 (a store's catalog is
    # studio photos, so matching a photo's own colour cast must not be what wins).
    best = max(SHIPPABLE, key=lambda v: sum(results["variants"][v]["dev"][view]["hybrid"][0] for view in VIEWS))
    results["shipped"] = best
    heads, mode = trained[best]
    shipped_result, name = results["variants"][best], best
    if args.members > 1:
        # Seeds spread models/train.py's one seed; every member sees the same train split.
        members, member_results = [], []
        for k in range(args.members):
            h, _, r = train_variant(prob, best, args.seed + 1000 * (k + 1), epochs=args.member_epochs,
                                    negatives=args.negatives, dim=DIM // args.members, swa_from=args.average_from)
            members.append(h)
            member_results.append(r)
            print(f"member {k + 1}/{args.members}", json.dumps(r))
        heads = ctl.Ensemble(members).eval()
        shipped_result = evaluate(prob, heads, variant_setup(best))
        results["ensemble"] = {"variant": best, "members": args.members, "member_dim": DIM // args.members,
                               "epochs": args.member_epochs, "average_from": args.average_from,
                               "member_results": member_results, **shipped_result}
        name = f"{best}-x{args.members}"
        print("ensemble", json.dumps(shipped_result))
    export(heads, mode, args.out, shipped_result, args)
    short = "lite0" if args.backbone == "efficientnet-lite0" else "resnet50"
    write_manifest(args.out, "embed.onnx", mode, "f32", f"ctl-{short}-{name}", shipped_result,
                   make_backbone(args)[1])
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"shipped {best} to {args.out}")


if __name__ == "__main__":
    main()
