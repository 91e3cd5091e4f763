"""Train Complete-the-Look heads on a Shop-the-Look folder and ship them as a lookd model.

    .venv/bin/python models/train.py --data ../shared/data/ccp --out models/default-f32

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
import shlex
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctl  # noqa: E402
from build_model import check_and_write_reference, reference_pixels, sha256  # noqa: E402

SIDE = 224
DIM = 128  # embedding width of the shipped model (an ensemble's members split it)
AUGMENTS = 2  # random query variants per training pair, besides the protocol's own
BACKDROPS = 2  # random query variants per training pair of the scene with its backdrop replaced
PRODUCT_AUGMENTS = 1  # random crops with colour jitter per training product, besides the photo itself
STUDIO_AUGMENTS = 2  # catalog shots (studio_composite) per training product, besides the cut-out itself
# Variant names are tokens: the distance trained (global, local, hybrid), the attention key
# (product, category), the training products (photo unless studio or mix), bg (scenes with
# replaced backdrops too), colour (ColourCells inputs), pool (the global head also sees the
# regions pooled by a learned score), plain (no augmentation at all).
VARIANTS = ["global", "local", "hybrid-product", "hybrid-category", "hybrid-product-plain",
            "hybrid-product-studio-bg", "hybrid-product-mix-bg", "hybrid-product-mix-bg-colour",
            "hybrid-product-mix-bg-colour-pool"]
SHIPPABLE = "hybrid"  # the variants that export as one graph lookd runs: the hybrids


class LookdPixels:
    """lookd's own pixels: every photo decoded by lookd (the image crate's JPEG decoder, not
    libjpeg's), and the protocol's model inputs (whole products, the query rectangles of the
    scenes) cropped and resized by lookd too, so that Python trains and scores on exactly what
    `lookd eval` and the mirror feed the model. `lookd model input` writes them once as PNGs
    under cache/pixels; augmented views are cut and resized by PIL from lookd's decoded photos."""

    def __init__(self, lookd, cache):
        self.lookd, self.dir = shlex.split(lookd), os.path.join(cache, "pixels")
        self.jobs = {}

    def _dst(self, path, crop):
        h = hashlib.sha256(f"{os.path.abspath(path)}|{crop}".encode()).hexdigest()[:20]
        return os.path.join(self.dir, h[:2], f"{h}.png")

    def want(self, path, crop="decoded"):
        """Asks for a picture: crop "decoded" (the photo), None (the whole photo as the model's
        input) or (x, y, w, h) in pixels."""
        dst = self._dst(path, crop)
        if not os.path.exists(dst):
            self.jobs[dst] = (path, crop)
        return dst

    def make(self):
        if not self.jobs:
            return
        os.makedirs(self.dir, exist_ok=True)
        for dst in self.jobs:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
        lines = [f"{src}\t{dst}" + ("" if crop is None else "\t" + (crop if crop == "decoded" else ",".join(map(str, crop))))
                 for dst, (src, crop) in self.jobs.items()]
        jobs = os.path.join(self.dir, "jobs.tsv")
        with open(jobs, "w") as f:
            f.write("\n".join(lines) + "\n")
        t0 = time.time()
        subprocess.run(self.lookd + ["model", "input", "--model", "models/default-f32", jobs], check=True)
        print(f"pixels: {len(lines)} pictures from lookd in {time.time() - t0:.0f} s")
        self.jobs = {}

    def photo(self, path):
        return Image.open(self._dst(path, "decoded")).convert("RGB")

    def model_input(self, path, crop=None):
        return np.asarray(Image.open(self._dst(path, crop)).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)


def load_rgb(path):
    """A photo decoded by PIL (libjpeg): onnx_eval's independent path."""
    return Image.open(path).convert("RGB")


def query_box(path, q):
    """The protocol's query rectangle `q` (fractions; None: the whole scene) in the pixels of the
    photo at `path`, exactly as lookd eval cuts it."""
    return None if q is None else ctl.to_pixels(q, *Image.open(path).size)


def to_input(img, box=None, side=SIDE):
    if box is not None:
        x, y, w, h = box
        img = img.crop((x, y, x + w, y + h))
    img = img.resize((side, side), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1)


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


def studio_composite(rng, photo, studio):
    """A training product as a catalog shot: the garment's own pixels (where the studio cut-out
    agrees with the photo) on a new plain backdrop (white, grey, a light colour or a vertical
    gradient of two), with a random margin of 0-25% of each side, as catalog photos have."""
    a, b = np.asarray(photo, dtype=np.int16), np.asarray(studio, dtype=np.int16)
    garment = np.abs(a - b).max(-1) < 48
    h, w = garment.shape
    pl, pr, pt, pb = (int(rng.uniform(0, 0.25) * n) for n in (w, w, h, h))
    H, W = h + pt + pb, w + pl + pr
    kind = rng.random()
    if kind < 0.35:
        top = bottom = np.full(3, 255.0)
    elif kind < 0.6:
        top = bottom = np.full(3, rng.uniform(185, 245))
    elif kind < 0.85:
        top = bottom = rng.uniform(140, 250, 3)
    else:
        top, bottom = rng.uniform(150, 250, 3), rng.uniform(150, 250, 3)
    ramp = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
    canvas = np.broadcast_to(top + (bottom - top) * ramp, (H, W, 3)).copy()
    region = canvas[pt:pt + h, pl:pl + w]
    region[garment] = b[garment]
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def replace_background(rng, img, mask):
    """A scene whose backdrop (mask label 0, `null`) is heavily blurred or a plain light colour,
    so the street behind the shopper cannot be matched: the mirror sees a shopper in a store."""
    x = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.5:
        fill = np.asarray(img.filter(ImageFilter.GaussianBlur(12)), dtype=np.float32)
    else:
        fill = np.broadcast_to(rng.uniform(90, 240, 3).astype(np.float32), x.shape)
    back = (mask == 0)[..., None]
    return Image.fromarray(np.where(back, fill, x).astype(np.uint8))


class Features:
    """Backbone outputs, computed once and cached. Per image: pooled final feature, pooled
    intermediate map, a 512-bin colour histogram (the baseline) and ColourCells' 64 bins.
    products: p_* the photo (ccp/), st_* the studio cut-out (ccp-studio/), ph_*/sth_* the same
    under the photometric check (ctl.photometric_params, seed 0; dev and test products only, the
    only ones evaluated); pa_* training products' random crops with colour jitter, sa_* training
    products as catalog shots on new backdrops (studio_composite), random crop and jitter
    (owner: product row). scenes: per pair the protocol's query (s_*), for training pairs
    AUGMENTS random rectangles with colour jitter (s_owner: pair index, variant) and BACKDROPS
    more with the backdrop replaced (sb_*, sb_owner: pair index); *_cells the stride-16 cells,
    *_col the ColourCells cells."""

    def __init__(self, data, studio, pairs, backbone, name, cache, seed, lookd, batch=32):
        key = hashlib.sha256(f"{os.path.abspath(data)}|{os.path.abspath(studio)}|{len(pairs)}|{seed}|{AUGMENTS}|"
                             f"{PRODUCT_AUGMENTS}|{STUDIO_AUGMENTS}|{BACKDROPS}|{name}|v4".encode()).hexdigest()[:12]
        store = os.path.join(cache, f"features-{key}.npz")
        if self._reuse(store):
            return
        self.backbone, self.colour, self.batch = backbone, ctl.ColourCells(), batch
        rng = np.random.default_rng(seed)
        products = sorted({p["product"] for p in pairs})
        self.product_ids = np.array(products)
        train_products = sorted({p["product"] for p in pairs if ctl.split_of(p["scene"]) == "train"})
        evaluated = sorted({p["product"] for p in pairs if ctl.split_of(p["scene"]) != "train"})
        row = {p: i for i, p in enumerate(products)}
        self.pixels = px = LookdPixels(lookd, cache)
        photo_path, studio_path = f"{data}/products/{{}}.jpg".format, f"{studio}/products/{{}}.jpg".format
        for p in pairs:
            scene = f"{data}/scenes/{p['scene']}.jpg"
            px.want(scene)
            px.want(scene, query_box(scene, ctl.query_rect(p["bbox"])))
        for p in products:
            for photo in (photo_path(p), studio_path(p)):
                px.want(photo)
                px.want(photo, None)
        px.make()
        photo_of = lambda p: px.photo(photo_path(p))  # noqa: E731
        studio_of = lambda p: px.photo(studio_path(p))  # noqa: E731

        def photometric(path, p):
            return ctl.photometric(px.model_input(path), ctl.photometric_params(p, 0))

        def augmented(img):
            return ctl.photometric(to_input(img, random_product_crop(rng, img)), jitter_params(rng))

        t0 = time.time()
        for prefix, jobs in [
                ("p", [lambda p=p: px.model_input(photo_path(p)) for p in products]),
                ("st", [lambda p=p: px.model_input(studio_path(p)) for p in products]),
                ("ph", [lambda p=p: photometric(photo_path(p), p) for p in evaluated]),
                ("sth", [lambda p=p: photometric(studio_path(p), p) for p in evaluated]),
                ("pa", [lambda p=p: augmented(photo_of(p)) for p in train_products for _ in range(PRODUCT_AUGMENTS)]),
                ("sa", [lambda p=p: augmented(studio_composite(rng, photo_of(p), studio_of(p)))
                        for p in train_products for _ in range(STUDIO_AUGMENTS)])]:
            f = self._run(jobs)
            for k in ("pooled", "mid", "hist", "col"):
                setattr(self, f"{prefix}_{k}", f[k])
        self.eval_rows = np.array([row[p] for p in evaluated])
        self.pa_owner = np.array([row[p] for p in train_products for _ in range(PRODUCT_AUGMENTS)])
        self.sa_owner = np.array([row[p] for p in train_products for _ in range(STUDIO_AUGMENTS)])
        print(f"features: {len(products)} products, photo and studio, {len(evaluated)} photometric,"
              f" {len(self.pa_owner) + len(self.sa_owner)} augmented in {time.time() - t0:.0f} s")
        jobs, owner, bjobs, bowner = [], [], [], []
        for i, p in enumerate(pairs):
            q = ctl.query_rect(p["bbox"])
            train = ctl.split_of(p["scene"]) == "train"
            for v in range(1 + (AUGMENTS if train else 0)):
                jobs.append(lambda p=p, q=q, v=v: self._scene_crop(data, p, q, v, rng))
                owner.append((i, v))
            for _ in range(BACKDROPS if train else 0):
                bjobs.append(lambda p=p: self._scene_crop(data, p, None, 1, rng, backdrop=True))
                bowner.append(i)
        t0 = time.time()
        sf, bf = self._run(jobs), self._run(bjobs)
        print(f"features: {len(jobs) + len(bjobs)} scene queries in {time.time() - t0:.0f} s")
        self.s_owner, self.sb_owner = np.array(owner), np.array(bowner)
        for prefix, f in (("s", sf), ("sb", bf)):
            for k in ("pooled", "cells", "hist", "cells_col"):
                setattr(self, f"{prefix}_{k}", f[k])
        self._store(store)

    def _scene_crop(self, data, p, q, v, rng, backdrop=False):
        """The model input of one scene query; variants after 0 are a random rectangle, jittered;
        with backdrop, of the scene with its backdrop replaced."""
        path = f"{data}/scenes/{p['scene']}.jpg"
        if v == 0:  # the protocol's query: lookd's own crop and resize
            return self.pixels.model_input(path, query_box(path, q))
        img = self.pixels.photo(path)
        if backdrop:
            img = replace_background(rng, img, np.asarray(Image.open(f"{data}/masks/{p['scene']}.png")))
        box = random_query(rng, p["bbox"], img.width, img.height)
        return ctl.photometric(to_input(img, box), jitter_params(rng))

    def _reuse(self, store):
        """Loads the arrays cached in store, if it exists."""
        if not os.path.exists(store):
            return False
        z = np.load(store)
        self.__dict__.update({k: z[k] for k in z.files})
        print(f"features: reused {store}")
        return True

    def _store(self, store):
        """Writes every array attribute to store, atomically."""
        os.makedirs(os.path.dirname(store), exist_ok=True)
        np.savez(store + ".tmp.npz", **{k: v for k, v in self.__dict__.items() if isinstance(v, np.ndarray)})
        os.replace(store + ".tmp.npz", store)

    def _run(self, jobs):
        out = {"pooled": [], "mid": [], "cells": [], "hist": [], "col": [], "cells_col": []}
        for s in range(0, len(jobs), self.batch):
            x = torch.from_numpy(np.stack([j() for j in jobs[s:s + self.batch]]))
            with torch.no_grad():
                final, mid = self.backbone(x)
                col_cells, col = self.colour(x)
            out["pooled"].append(final.mean((2, 3)).numpy())
            out["mid"].append(mid.mean((2, 3)).numpy())
            out["cells"].append(mid.flatten(2).transpose(1, 2).numpy())
            out["col"].append(col.numpy())
            out["cells_col"].append(col_cells.numpy())
            out["hist"].append(np.stack([colour_hist(i) for i in x.numpy()]))
        return {k: np.concatenate(v) for k, v in out.items() if v}


def read_extra(folder, extra_scenes):
    """The pairs models/extra.py labelled (folder/pairs.jsonl), in read_stl's form."""
    pairs = []
    with open(os.path.join(folder, "pairs.jsonl")) as f:
        for line in f:
            d = json.loads(line)
            pairs.append(dict(scene=d["scene"], product=d["product"], bbox=tuple(np.float32(v) for v in d["bbox"]),
                              label=d["label"], category=d["category"], confidence=d["confidence"],
                              photo=f"{extra_scenes}/{d['scene']}.jpg", mask=f"{folder}/masks/{d['scene']}.png"))
    return pairs


def extra_product_views(px, p, names):
    """An extra pair's product, as PIL images: the photo's crop of its box plus 8% (as ccp/products)
    and its predicted mask cut out on white (as ccp-studio/products). px: a LookdPixels."""
    img = px.photo(p["photo"])
    w, h = img.size
    l, t, r, b = p["bbox"]
    pw, ph = 0.08 * (r - l), 0.08 * (b - t)
    box = (int(max(0, l - pw) * w), int(max(0, t - ph) * h), int(np.ceil(min(1, r + pw) * w)),
           int(np.ceil(min(1, b + ph) * h)))
    mask = np.asarray(Image.open(p["mask"])) == names.index(p["label"])
    cut = np.where(mask[..., None], np.asarray(img), 255).astype(np.uint8)
    return img.crop(box), Image.fromarray(cut).crop(box)


class ExtraFeatures(Features):
    """Features of the pairs models/extra.py labelled on ccp-extra, training only, in Features'
    layout: each product as the photo's crop of its box plus 8% (as ccp/products), as a cut-out of
    its predicted mask on white (as ccp-studio/products), one random crop with jitter and
    STUDIO_AUGMENTS catalog shots; each scene as the protocol's query beside the predicted box
    (lookd's crop), AUGMENTS random rectangles and BACKDROPS with the backdrop (predicted `null`)
    replaced. merge() appends them to a Features."""

    def __init__(self, pairs, names, backbone, name, cache, seed, lookd, batch=32):
        """names: the mask labels (ccp's mask-labels.json), which the predicted masks index."""
        digest = hashlib.sha256(json.dumps([[p["product"], [float(v) for v in p["bbox"]], p["label"]] for p in pairs])
                                .encode()).hexdigest()[:12]
        key = hashlib.sha256(f"{digest}|{seed}|{AUGMENTS}|{PRODUCT_AUGMENTS}|{STUDIO_AUGMENTS}|{BACKDROPS}|{name}|x1"
                             .encode()).hexdigest()[:12]
        store = os.path.join(cache, f"extra-{key}.npz")
        if self._reuse(store):
            return
        self.backbone, self.colour, self.batch = backbone, ctl.ColourCells(), batch
        rng = np.random.default_rng(seed + 7)
        px = LookdPixels(lookd, cache)
        for p in pairs:
            px.want(p["photo"])
            px.want(p["photo"], query_box(p["photo"], ctl.query_rect(p["bbox"])))
        px.make()
        self.product_ids = np.array([p["product"] for p in pairs])

        t0 = time.time()
        prods = [extra_product_views(px, p, names) for p in pairs]
        jobs = {"p": [lambda v=v: to_input(v[0]) for v in prods],
                "st": [lambda v=v: to_input(v[1]) for v in prods],
                "pa": [lambda v=v: ctl.photometric(to_input(v[0], random_product_crop(rng, v[0])), jitter_params(rng))
                       for v in prods for _ in range(PRODUCT_AUGMENTS)],
                "sa": [lambda v=v: (lambda img: ctl.photometric(to_input(img, random_product_crop(rng, img)),
                                                                jitter_params(rng)))(studio_composite(rng, *v))
                       for v in prods for _ in range(STUDIO_AUGMENTS)]}
        for prefix, js in jobs.items():
            f = self._run(js)
            for k in ("pooled", "mid", "hist", "col"):
                setattr(self, f"{prefix}_{k}", f[k])
        self.pa_owner = np.repeat(np.arange(len(pairs)), PRODUCT_AUGMENTS)
        self.sa_owner = np.repeat(np.arange(len(pairs)), STUDIO_AUGMENTS)
        print(f"extra features: {len(pairs)} products in {time.time() - t0:.0f} s")

        def query(p, v, backdrop=False):
            if v == 0:
                return px.model_input(p["photo"], query_box(p["photo"], ctl.query_rect(p["bbox"])))
            img = px.photo(p["photo"])
            if backdrop:
                img = replace_background(rng, img, np.asarray(Image.open(p["mask"])))
            return ctl.photometric(to_input(img, random_query(rng, p["bbox"], img.width, img.height)), jitter_params(rng))

        t0 = time.time()
        sf = self._run([lambda p=p, v=v: query(p, v) for p in pairs for v in range(1 + AUGMENTS)])
        bf = self._run([lambda p=p: query(p, 1, True) for p in pairs for _ in range(BACKDROPS)])
        self.s_owner = np.array([(i, v) for i in range(len(pairs)) for v in range(1 + AUGMENTS)])
        self.sb_owner = np.repeat(np.arange(len(pairs)), BACKDROPS)
        for prefix, f in (("s", sf), ("sb", bf)):
            for k in ("pooled", "cells", "hist", "cells_col"):
                setattr(self, f"{prefix}_{k}", f[k])
        print(f"extra features: {len(pairs) * (1 + AUGMENTS + BACKDROPS)} scene queries in {time.time() - t0:.0f} s")
        self._store(store)

    def merge(self, feats, base_pairs):
        """Appends these products and scene queries to feats (a Features of base_pairs); the
        extra pairs follow base_pairs, one product each."""
        n, m = len(feats.product_ids), len(base_pairs)
        for prefix, keys in (("p", ("pooled", "mid", "hist", "col")), ("st", ("pooled", "mid", "hist", "col")),
                             ("pa", ("pooled", "mid", "hist", "col")), ("sa", ("pooled", "mid", "hist", "col")),
                             ("s", ("pooled", "cells", "hist", "cells_col")),
                             ("sb", ("pooled", "cells", "hist", "cells_col"))):
            for k in keys:
                name = f"{prefix}_{k}"
                setattr(feats, name, np.concatenate([getattr(feats, name), getattr(self, name)]))
        feats.product_ids = np.concatenate([feats.product_ids, self.product_ids])
        feats.pa_owner = np.concatenate([feats.pa_owner, self.pa_owner + n])
        feats.sa_owner = np.concatenate([feats.sa_owner, self.sa_owner + n])
        feats.s_owner = np.concatenate([feats.s_owner, self.s_owner + np.array([m, 0])])
        feats.sb_owner = np.concatenate([feats.sb_owner, self.sb_owner + m])


class Problem:
    """Pairs, splits, and index maps from pairs to feature rows."""

    def __init__(self, pairs, feats):
        self.pairs, self.f = pairs, feats
        f = feats
        prow = {p: i for i, p in enumerate(f.product_ids)}
        self.product_row = np.array([prow[p["product"]] for p in pairs])
        # Scene rows: the s_* queries, then the sb_* ones (offset by len(s_owner)).
        self.query_rows, self.backdrop_rows = {}, {}
        for row, (i, v) in enumerate(f.s_owner):
            self.query_rows.setdefault(int(i), []).append(row)
        for row, i in enumerate(f.sb_owner):
            self.backdrop_rows.setdefault(int(i), []).append(len(f.s_owner) + row)
        self.query0 = np.array([self.query_rows[i][0] for i in range(len(pairs))])  # each pair's protocol query
        self.s_pooled = np.concatenate([f.s_pooled, f.sb_pooled])
        self.s_cells = np.concatenate([f.s_cells, f.sb_cells])
        self.s_col = np.concatenate([f.s_cells_col, f.sb_cells_col])
        # Training product views, rows of all_*: the photo (r), its crops (n + k), the studio
        # cut-out (n + a + r), its catalog shots (2n + a + k).
        n, a = len(f.product_ids), len(f.pa_owner)
        self.photo_views = [[r] for r in range(n)]
        self.studio_views = [[n + a + r] for r in range(n)]
        for k, owner in enumerate(f.pa_owner):
            self.photo_views[int(owner)].append(n + k)
        for k, owner in enumerate(f.sa_owner):
            self.studio_views[int(owner)].append(2 * n + a + k)
        for k in ("pooled", "mid", "col"):
            setattr(self, f"all_{k}", np.concatenate([getattr(f, f"{s}_{k}") for s in ("p", "pa", "st", "sa")]))
        # The photometric views exist for evaluated products only: row r -> its row there.
        self.eval_row = np.full(n, -1)
        self.eval_row[f.eval_rows] = np.arange(len(f.eval_rows))
        self.split = np.array([ctl.split_of(p["scene"]) for p in pairs])
        self.categories = sorted({p["category"] for p in pairs})
        self.cat_index = np.array([self.categories.index(p["category"]) for p in pairs])

    def trials(self, split):
        """Protocol trials on one split, as `lookd eval --split`: indices into self.pairs."""
        idx = [i for i, s in enumerate(self.split) if s == split]
        sub = [self.pairs[i] for i in idx]
        return [(idx[i], [idx[n] for n in negs], idx[a]) for i, _, negs, a in ctl.plan(sub, 0)]

    def products(self, rows, view):
        """(pooled, mid-pooled, histogram, colour) of product rows in one view: the photo or the
        studio cut-out, plain or under the photometric check."""
        prefix = {"plain": "p", "photometric": "ph", "studio": "st", "studio-photometric": "sth"}[view]
        if view.endswith("photometric"):
            rows = self.eval_row[rows]
            assert (rows >= 0).all(), "photometric views exist for dev and test products only"
        return tuple(getattr(self.f, f"{prefix}_{k}")[rows] for k in ("pooled", "mid", "hist", "col"))


def trial_distances(prob, trials, dist_fn):
    """dist_fn(query rows [T], product rows [T, 5], pair idx [T, 5]) -> [T, 5] distances."""
    q = np.array([prob.query_rows[i][0] for i, _, _ in trials], dtype=np.int64)
    cand = np.array([[i, *negs, a] for i, negs, a in trials], dtype=np.int64).reshape(-1, 5)
    return dist_fn(q, prob.product_row[cand], cand)


def score_trials(prob, trials, dist_fn):
    """[FITB-4, AUC, FITB-4 interval, AUC interval] (ctl.metrics: 95%, scene bootstrap)."""
    return ctl.metrics(trial_scenes(prob, trials), trial_distances(prob, trials, dist_fn))


def trial_scenes(prob, trials):
    return [prob.pairs[i]["scene"] for i, _, _ in trials]


def per_category(prob, trials, d):
    cats = np.array([prob.pairs[i]["category"].split("|")[-1] for i, _, _ in trials])
    scenes = np.array(trial_scenes(prob, trials))
    out = {}
    for c in sorted(set(cats)):
        fitb, _, ci, _ = ctl.metrics(list(scenes[cats == c]), d[cats == c])
        out[c] = {"pairs": int((cats == c).sum()), "fitb4": fitb, "fitb4_ci": ci}
    return out


VIEWS = ["plain", "photometric", "studio", "studio-photometric"]
CHOOSE_VIEW = "studio"  # variants, early stopping and the shipped model are chosen on dev FITB-4 of this view


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


class Setup:
    """What a variant's name says (see VARIANTS)."""

    def __init__(self, variant):
        t = variant.split("-")
        self.mode = "category" if "category" in t else "product"
        self.which = {"global": 0, "local": 1}.get(t[0], 2)
        self.augment = "plain" not in t
        self.products = "studio" if "studio" in t else "mix" if "mix" in t else "photo"
        self.backdrops = "bg" in t
        self.colour = "colour" in t
        self.pool = "pool" in t


def scene_inputs(prob, q, setup, pooled=None):
    """The heads' inputs for scene rows q; pooled (a tensor) in place of their cached global features."""
    cells = torch.from_numpy(prob.s_cells[q].astype(np.float32))
    pooled = torch.from_numpy(prob.s_pooled[q]) if pooled is None else pooled
    if not setup.colour:
        return pooled, cells
    col = torch.from_numpy(prob.s_col[q].astype(np.float32))
    whole = torch.sqrt((col ** 2).mean(1))  # ColourCells' whole-image bins from its cells
    return ctl.with_colour(pooled, whole), ctl.with_colour(cells, col)


def product_inputs(pooled, mid, col, setup):
    """The heads' inputs for products' features (arrays, or tensors such as a trained tail's output)."""
    pooled, mid = torch.as_tensor(pooled), torch.as_tensor(mid)
    if not setup.colour:
        return pooled, mid
    col = torch.as_tensor(col)
    return ctl.with_colour(pooled, col), ctl.with_colour(mid, col)


def head_distances(heads, prob, q, p, c, setup, view="plain"):
    """All three distances for query rows q [T] against product rows p [T, K]."""
    t, k = p.shape
    unique, back = np.unique(p.ravel(), return_inverse=True)  # each product's heads run once
    pooled, mid, _, col = prob.products(unique, view)
    with torch.no_grad():
        sg, sr, sk = heads.scene(*scene_inputs(prob, q, setup))
        pg, pk = heads.product(*product_inputs(pooled, mid, col, setup))
        back = torch.from_numpy(back)
        pg, pk = pg[back], pk[back]
        if setup.mode == "category":
            pk = heads.category_keys()[torch.from_numpy(prob.cat_index[c.ravel()])]
        rep = lambda x: x.repeat_interleave(k, 0)  # noqa: E731
        g, loc, hyb = ctl.distances(rep(sg), rep(sr), rep(sk), pg, pk)
    return [x.numpy().reshape(t, k) for x in (g, loc, hyb)]


def training_views(prob, setup, r, rng):
    """A random training view of product row r: the variant's photos and/or catalog shots."""
    if not setup.augment:
        return r
    views = {"photo": prob.photo_views[r], "studio": prob.studio_views[r],
             "mix": prob.photo_views[r] + prob.studio_views[r]}[setup.products]
    return views[rng.integers(len(views))]


def step_loss(heads, setup, prob, b, neg, scene_in, product_in, attend=0.0, query_keys=None):
    """One training step's loss: the triplet hinge (margin ctl.MARGIN) of the distance trained
    (setup.which) between anchors b, whose scene head inputs are scene_in, and their positive
    products, against the negative pairs neg (len(neg) // len(b) per anchor, draw_negatives'
    order); product_in(rows) gives the head inputs of one view of each row's product. attend > 0
    adds that weight times the attention loss: -log of the attention mass the positive's key puts
    on the garment regions (prob.garments) of the anchors' protocol queries, whose region keys
    query_keys() gives (by default those of scene_in, when they are the protocol queries)."""
    sg, sr, sk = heads.scene(*scene_in)
    losses = []
    for rows in (b, neg):
        pg, pk = heads.product(*product_in(rows))
        if setup.mode == "category":
            pk = heads.category_keys()[torch.from_numpy(prob.cat_index[rows])]
        if rows is b:
            pos_key = pk
        n = len(rows) // len(b)  # the scene side repeats once per negative drawn
        losses.append(ctl.distances(sg.repeat(n, 1), sr.repeat(n, 1, 1), sk.repeat(n, 1, 1), pg, pk)[setup.which])
    loss = torch.clamp(losses[0].repeat(len(neg) // len(b)) - losses[1] + ctl.MARGIN, min=0).mean()
    if attend > 0:
        keys = sk if query_keys is None else query_keys()
        a = torch.softmax(-ctl.sq(keys, pos_key[:, None, :]), dim=1)
        mass = (a * torch.from_numpy(prob.garments[b])).sum(1)
        loss = loss + attend * -torch.log(mass + 1e-4).mean()
    return loss


def draw_negatives(prob, by_cat, anchors, negatives, rng):
    """`negatives` rounds of one negative pair per anchor: a training pair of the same category
    (by_cat: category index -> training pairs) from another scene. [negatives * len(anchors)]."""
    neg = []
    for _ in range(negatives):
        for i in anchors:
            pool = by_cat[prob.cat_index[i]]
            j = pool[rng.integers(len(pool))]
            while prob.pairs[j]["scene"] == prob.pairs[i]["scene"] and len(pool) > 1:
                j = pool[rng.integers(len(pool))]
            neg.append(j)
    return np.array(neg)


def train_variant(prob, variant, seed, epochs=40, patience=6, negatives=1, dim=128, swa_from=None, log=print,
                  attend=0.0, report=True):
    """Trains one variant; each anchor meets `negatives` same-category negatives per step.
    Early stopping on dev FITB-4 (CHOOSE_VIEW) by default; with swa_from, all `epochs` run and the
    result is the average of the weights after each epoch from swa_from on (dev is then not looked at).
    report=False skips the evaluation on dev and test (the third value is then None).
    attend > 0 adds that weight times an attention loss: -log of the attention mass (anchor's
    protocol query, its positive product's key) on the regions covered by garments in ccp/masks
    (prob.garments), so that the local branch weighs clothes, not pavement."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    f = prob.f
    setup = Setup(variant)
    colour = ctl.ColourCells.bins if setup.colour else 0
    heads = ctl.Heads(f.p_pooled.shape[1], f.s_cells.shape[2], prob.categories, dim=dim, c_colour=colour,
                      pool=setup.pool)
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
            queries = [prob.query_rows[i] + (prob.backdrop_rows.get(i, []) if setup.backdrops else []) for i in b]
            q = np.array([rng.choice(rows) if setup.augment else rows[0] for rows in queries])
            neg = draw_negatives(prob, by_cat, b, negatives, rng)

            def product_in(rows):
                views = [training_views(prob, setup, r, rng) for r in prob.product_row[rows]]
                return product_inputs(prob.all_pooled[views], prob.all_mid[views], prob.all_col[views], setup)

            # The attention loss reads the protocol queries' keys: their masks are known.
            loss = step_loss(heads, setup, prob, b, neg, scene_inputs(prob, q, setup), product_in, attend,
                             lambda: heads.scene(*scene_inputs(prob, prob.query0[b], setup))[2])
            opt.zero_grad()
            loss.backward()
            opt.step()
        heads.eval()
        if swa_from is not None:
            if epoch >= swa_from:
                average = ctl.running_average(average, heads.state_dict(), epoch - swa_from)
            continue
        fitb, auc = ctl.fitb_auc(trial_distances(prob, dev, lambda q, p, c: head_distances(
            heads, prob, q, p, c, setup, CHOOSE_VIEW)[setup.which]))
        log(f"  {variant} epoch {epoch + 1}: loss {loss.item():.4f} dev {CHOOSE_VIEW} FITB-4 {fitb:.4f} AUC {auc:.4f}")
        if fitb > best:
            best, since = fitb, 0
            best_state = {k: v.clone() for k, v in heads.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                break
    heads.load_state_dict(best_state if swa_from is None else average)
    heads.eval()
    return heads, setup, evaluate(prob, heads, setup) if report else None


def evaluate(prob, heads, setup):
    """All three distances on dev and test in every view, and dev per category (plain, studio)."""
    result = {}
    for split in ("dev", "test"):
        trials = prob.trials(split)
        result[split] = {}
        for view in VIEWS:
            d = trial_distances(prob, trials, lambda q, p, c, view=view: np.stack(
                head_distances(heads, prob, q, p, c, setup, view)))
            result[split][view] = {name: ctl.metrics(trial_scenes(prob, trials), d[k])
                                   for k, name in enumerate(["global", "local", "hybrid"])}
        result[split]["pairs"] = len(trials)
    for view in ("plain", "studio"):
        result[f"dev-per-category-{view}"] = per_category(prob, prob.trials("dev"), trial_distances(
            prob, prob.trials("dev"), lambda q, p, c: head_distances(heads, prob, q, p, c, setup, view)[2]))
    return result


def cell_shares(data, pair, grid=7, labels=None):
    """For each of the protocol query's grid x grid regions (row-major, as the scene graph's cells),
    the share of its pixels labelled in ccp/masks: any label but `null` (the person) by default,
    else only the label ids in `labels`."""
    mask = np.asarray(Image.open(f"{data}/masks/{pair['scene']}.png"))
    hit = mask != 0 if labels is None else np.isin(mask, labels)
    h, w = hit.shape
    x, y, qw, qh = ctl.to_pixels(ctl.query_rect(pair["bbox"]), w, h)
    share = np.zeros(grid * grid, dtype=np.float32)
    for r in range(grid):
        for c in range(grid):
            cell = hit[y + qh * r // grid:y + max(qh * (r + 1) // grid, qh * r // grid + 1),
                       x + qw * c // grid:x + max(qw * (c + 1) // grid, qw * c // grid + 1)]
            share[r * grid + c] = cell.mean()
    return share


def garment_labels(data):
    """The mask label ids of garments and accessories: all but null, skin and hair."""
    with open(f"{data}/mask-labels.json") as f:
        names = json.load(f)
    return [i for i, n in enumerate(names) if n not in ("null", "skin", "hair")]


def attention_stats(prob, heads, setup, data, split="dev", view=CHOOSE_VIEW):
    """Where the local branch looks: for each trial's positive product, the attention weights over
    the query's 7x7 regions. Peak-to-uniform ratio (max weight x 49) and whether the peak region
    falls on the person (most of its pixels labelled anything but `null` in ccp/masks), against the
    share of all regions that do (what a peak at random would give)."""
    trials = prob.trials(split)
    q = np.array([prob.query_rows[i][0] for i, _, _ in trials])
    rows = prob.product_row[[i for i, _, _ in trials]]
    pooled, mid, _, col = prob.products(rows, view)
    with torch.no_grad():
        _, _, sk = heads.scene(*scene_inputs(prob, q, setup))
        _, pk = heads.product(*product_inputs(pooled, mid, col, setup))
        a = torch.softmax(-ctl.sq(sk, pk[:, None, :]), dim=1).numpy()
    grid = int(round(a.shape[1] ** 0.5))
    peaks, on_person, person_share = a.max(1) * a.shape[1], [], []
    for (i, _, _), weights in zip(trials, a):
        share = cell_shares(data, prob.pairs[i], grid)
        on_person.append(share[int(weights.argmax())] > 0.5)
        person_share.append((share > 0.5).mean())
    return {"split": split, "view": view, "trials": len(trials),
            "peak_to_uniform_median": float(np.median(peaks)),
            "peak_to_uniform_p10": float(np.percentile(peaks, 10)),
            "peak_to_uniform_p90": float(np.percentile(peaks, 90)),
            "peak_on_person": float(np.mean(on_person)), "regions_on_person": float(np.mean(person_share))}


def make_backbone(args):
    """(module, manifest name): EfficientNet-Lite0, or torchvision's ResNet50 from a weights file."""
    if args.backbone == "resnet50":
        return ctl.ResNetBackbone(args.weights).eval(), "resnet50"
    return ctl.LiteBackbone().eval(), "efficientnet-lite0"


def export(heads, setup, out, args):
    mode = setup.mode
    model = ctl.Embed(make_backbone(args)[0], heads, colour=setup.colour).eval()
    os.makedirs(out, exist_ok=True)
    graph = os.path.join(out, "embed.onnx")
    x = torch.from_numpy(reference_pixels(SIDE))
    outputs = ["global", "regions", "region_keys", "key", "product_global"]
    with torch.no_grad():
        expected = [t.numpy() for t in model(x)]
        torch.onnx.export(model, x, graph + ".tmp", input_names=["image"], output_names=outputs, opset_version=13,
                          dynamic_axes={"image": {0: "N"}, **{o: {0: "N"} for o in outputs}})
    os.replace(graph + ".tmp", graph)
    check_and_write_reference(out, graph, x.numpy(), expected, outputs)
    if mode == "category":
        keys = heads.category_keys().detach().numpy()
        with open(os.path.join(out, "category_keys.json"), "w") as f:
            json.dump({c: [float(v) for v in k] for c, k in zip(heads.categories, keys)}, f)
    return graph


def write_manifest(out, graph_file, mode, precision, name, result, backbone="efficientnet-lite0", extra=None,
                   attend=0.0):
    """The manifest of a trained model folder; its [training] table names the data (with the
    labelled extra scenes and the attention loss when they trained it) and the dev numbers of the
    chosen view (CHOOSE_VIEW) and the plain one."""
    digest = sha256(os.path.join(out, graph_file))
    key_line = 'key = "key"\n' if mode == "product" else ""
    cat_line = 'category-keys = "category_keys.json"\n' if mode == "category" else ""
    dev = result["dev"]["plain"]["hybrid"]
    photo = result["dev"]["photometric"]["hybrid"]
    studio = result["dev"]["studio"]["hybrid"]
    studio_photo = result["dev"]["studio-photometric"]["hybrid"]
    data = "Shop-the-Look layout, ../shared/data/ccp; products also as ../shared/data/ccp-studio cut-outs"
    if extra:
        data += f"; more training scenes from {extra}, garments located by models/extra.py"
    if attend > 0:
        data += f"; attention loss on ccp's garment masks, weight {attend:g}"
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
global = "product_global"
{key_line}
[training]
data = "{data}"
split = "by scene: sha256(scene id)[0..8] big-endian % 100; train < 70, dev < 85, test"
dev-fitb4 = {dev[0]:.4f}
dev-auc = {dev[1]:.4f}
dev-photometric-fitb4 = {photo[0]:.4f}
dev-photometric-auc = {photo[1]:.4f}
dev-studio-fitb4 = {studio[0]:.4f}
dev-studio-auc = {studio[1]:.4f}
dev-studio-photometric-fitb4 = {studio_photo[0]:.4f}
dev-studio-photometric-auc = {studio_photo[1]:.4f}
"""
    with open(os.path.join(out, "manifest.toml.tmp"), "w") as f:
        f.write(text)
    os.replace(os.path.join(out, "manifest.toml.tmp"), os.path.join(out, "manifest.toml"))


def load_problem(args):
    """(Problem, pairs, number of ccp pairs) from train.py's arguments: ccp's pairs and their
    cached features, then --extra's labelled pairs (training only), and with --attend the garment
    shares of the training scenes' regions (prob.garments)."""
    pairs = ctl.read_stl(args.data)[:args.max_pairs]
    print(f"{len(pairs)} pairs; split: " + ", ".join(
        f"{s} {sum(ctl.split_of(p['scene']) == s for p in pairs)}" for s in ("train", "dev", "test")))
    backbone, backbone_name = make_backbone(args)
    if args.weights:
        backbone_name += "-" + sha256(args.weights)[:12]
    feats = Features(args.data, args.studio, pairs, backbone, backbone_name, args.cache, args.seed, args.lookd)
    base = len(pairs)
    if args.extra:
        extra = read_extra(args.extra, args.extra_scenes)
        with open(f"{args.data}/mask-labels.json") as f:
            names = json.load(f)
        ExtraFeatures(extra, names, backbone, backbone_name, args.cache, args.seed, args.lookd).merge(feats, pairs)
        pairs = pairs + extra
        print(f"extra: {len(extra)} training pairs from {args.extra} ({len({p['scene'] for p in extra})} scenes)")
    prob = Problem(pairs, feats)
    prob.split[base:] = "train"  # labelled scenes only ever train
    if args.extra_only:
        prob.split[:base][prob.split[:base] == "train"] = "none"  # ccp's training pairs left out
    if args.attend > 0:
        labels = garment_labels(args.data)
        prob.garments = np.stack([cell_shares(args.data, p, labels=labels) if s == "train" and i < base
                                  else np.zeros(49, np.float32) for i, (p, s) in enumerate(zip(pairs, prob.split))])
    return prob, pairs, base


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/ccp")
    ap.add_argument("--studio", help="the same pairs with catalog-style products (default: ccp-studio beside --data)")
    ap.add_argument("--out", default="models/default-f32", help="the model folder to write ('' trains and reports only)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variants to train (see VARIANTS)")
    ap.add_argument("--cache", default="out/features")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-seed", type=int,
                    help="the heads' seed (default: --seed); the cached features keep --seed's, so seeds of one recipe compare on the same inputs")
    ap.add_argument("--lookd", default="cargo run --release --quiet --",
                    help="how to run lookd, whose `model input` decodes, crops and resizes the photos")
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
    ap.add_argument("--attend", type=float, default=0.0,
                    help="weight of the attention loss on garment regions of the training scenes' masks (0: none)")
    ap.add_argument("--extra", help="also train on the pairs models/extra.py labelled in this folder (pairs.jsonl, masks/)")
    ap.add_argument("--results", help="where the results JSON goes (default: results.json in --out, else in --cache)")
    ap.add_argument("--extra-only", action="store_true", help="with --extra: train on its pairs alone (ccp's train split left out)")
    ap.add_argument("--extra-scenes", default="../shared/data/ccp-extra/scenes", help="the photos of --extra's pairs")
    args = ap.parse_args()
    if args.members < 1 or DIM % args.members:
        ap.error(f"--members must divide {DIM}")
    if args.backbone == "resnet50" and not args.weights:
        ap.error("--backbone resnet50 needs --weights (a trained model needs ImageNet features; "
                 "models/build_model.py --backbone resnet50 exports the untrained one for latency work)")
    args.studio = args.studio or os.path.join(os.path.dirname(os.path.abspath(args.data)), "ccp-studio")
    torch.set_num_threads(args.threads)
    prob, pairs, base = load_problem(args)
    train_seed = args.seed if args.train_seed is None else args.train_seed
    results = {"baselines": {s: baselines(prob, s) for s in ("dev", "test")}, "variants": {}, "attend": args.attend,
               "extra_pairs": len(pairs) - base, "extra_only": args.extra_only,
               "train_seed": train_seed,
               "chosen_on": f"dev {CHOOSE_VIEW} FITB-4"}
    print("baselines", json.dumps(results["baselines"]))
    trained = {}
    for v in args.variants.split(","):
        heads, setup, r = train_variant(prob, v, train_seed, epochs=args.epochs, negatives=args.negatives,
                                        attend=args.attend)
        trained[v] = (heads, setup)
        results["variants"][v] = r
        print(v, json.dumps({sp: {view: r[sp][view]["hybrid"] for view in VIEWS} for sp in ("dev", "test")}))
    # The shipped hybrid: the best dev FITB-4 on the studio view (a store's catalog is studio
    # photos; on the plain view a model can win by recognising the scene's own photo).
    shippable = [v for v in trained if v.startswith(SHIPPABLE)]
    best = max(shippable, key=lambda v: results["variants"][v]["dev"][CHOOSE_VIEW]["hybrid"][0])
    results["shipped"] = best
    heads, setup = trained[best]
    shipped_result, name = results["variants"][best], best
    if args.members > 1:
        # Seeds spread models/train.py's one seed; every member sees the same train split.
        members, member_results = [], []
        for k in range(args.members):
            h, _, r = train_variant(prob, best, train_seed + 1000 * (k + 1), epochs=args.member_epochs,
                                    negatives=args.negatives, dim=DIM // args.members, swa_from=args.average_from,
                                    attend=args.attend)
            members.append(h)
            member_results.append(r)
            print(f"member {k + 1}/{args.members}", json.dumps(r["dev"][CHOOSE_VIEW]["hybrid"]))
        heads = ctl.Ensemble(members).eval()
        shipped_result = evaluate(prob, heads, setup)
        results["ensemble"] = {"variant": best, "members": args.members, "member_dim": DIM // args.members,
                               "epochs": args.member_epochs, "average_from": args.average_from,
                               "member_results": member_results, **shipped_result}
        name = f"{best}-x{args.members}"
        print("ensemble", json.dumps({sp: {view: shipped_result[sp][view]["hybrid"] for view in VIEWS}
                                      for sp in ("dev", "test")}))
    results["attention"] = {view: attention_stats(prob, heads, setup, args.data, view=view) for view in ("plain", "studio")}
    print("attention", json.dumps(results["attention"]))
    if args.out:
        export(heads, setup, args.out, args)
        short = "lite0" if args.backbone == "efficientnet-lite0" else "resnet50"
        write_manifest(args.out, "embed.onnx", setup.mode, "f32", f"ctl-{short}-{name}", shipped_result,
                       make_backbone(args)[1], extra=args.extra and os.path.dirname(args.extra_scenes.rstrip("/")),
                       attend=args.attend)
    with open(args.results or os.path.join(args.out or args.cache, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"shipped {best} to {args.out}")


if __name__ == "__main__":
    main()
