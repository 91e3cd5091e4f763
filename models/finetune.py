"""Fine-tune the backbone's last block with the heads (#29, item 2): does it help the studio view, or
only fit the training scenes?

    .venv/bin/python -u models/finetune.py [--seeds 3] [--epochs 3] [--tune block|head]

EfficientNet-Lite0 is frozen up to its last MBConv block (block 15, 192 -> 320 channels at 7x7) and
the head convolution (320 -> 1280) that make the global feature; the stride-16 map that feeds the
local branch and the keys comes earlier and does not move. So that this fits 2 cores, the input of
the trainable tail (block 14's output, [192, 7, 7]) is computed once for every view that needs no
random augmentation (each pair's protocol query, each product's photo and catalog cut-out; ccp's
pairs and the labelled extra scenes) and cached (out/features/tail-KEY.npz). Per seed:

  A  the shipped recipe's member (train.train_variant with ship.sh's settings: variant, attention
     loss, 30 epochs with weight averaging from 5, 8 negatives, 32 dimensions), heads only, on the
     cached features with all their augmentations; seed 1000 k is the shipped model's member k;
  C  A trained --epochs more on the un-augmented views, heads only: the control;
  B  A trained the same epochs on the same batches, with the tail trained too (from ImageNet's
     weights; --tune head trains only the head convolution and its batch norm's scale and shift).

Reported per arm: dev FITB-4 and AUC of the hybrid distance (studio and plain views, 95% scene
bootstrap) and the FITB-4 of the training split's own trials in the studio view (the fit). The test
split is never read. Writes --out (JSON) after each seed.
"""
import argparse
import copy
import hashlib
import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctl  # noqa: E402
import train as T  # noqa: E402

VARIANT = "hybrid-product-mix-bg-colour-pool"  # ship.sh's SHIP_VARIANTS' hybrid
TAIL_FROM = 15  # the first trainable block: block 15 is EfficientNet-Lite0's last


class Tail(nn.Module):
    """The backbone from block `first` on: blocks, head convolution, batch norm, ReLU6, mean over
    the 7x7 grid: the pooled global feature the heads take."""

    def __init__(self, net, first):
        super().__init__()
        self.blocks = nn.ModuleList(net._blocks[first:])
        self.conv, self.bn, self.act = net._conv_head, net._bn1, net._swish

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.act(self.bn(self.conv(x))).mean((2, 3))


def front(net, x, last):
    """The frozen backbone on model inputs (RGB 0..255) up to block `last`'s output."""
    x = net._swish(net._bn0(net._conv_stem((x - 127.0) / 128.0)))
    for block in net._blocks[:last + 1]:
        x = block(x)
    return x


def tail_inputs(args, prob, base, net):
    """Block 14's output for each pair's protocol query (q: [pairs]) and each product's photo (p)
    and catalog cut-out (st: [products]), rows as prob's pairs and product rows; cached."""
    pairs, ids = prob.pairs, prob.f.product_ids
    key = hashlib.sha256(json.dumps([os.path.abspath(args.data), os.path.abspath(args.studio), args.extra or "",
                                     [p["scene"] for p in pairs], [str(i) for i in ids], TAIL_FROM, "t1"])
                         .encode()).hexdigest()[:12]
    store = os.path.join(args.cache, f"tail-{key}.npz")
    if os.path.exists(store):
        z = np.load(store)
        print(f"tail inputs: reused {store}")
        return {k: z[k] for k in z.files}
    px = T.LookdPixels(args.lookd, args.cache)
    photo, studio = f"{args.data}/products/{{}}.jpg".format, f"{args.studio}/products/{{}}.jpg".format
    n_ccp = len({p["product"] for p in pairs[:base]})
    names = json.load(open(f"{args.data}/mask-labels.json"))
    scene_jobs, photo_jobs, studio_jobs = [], [], []
    for i, p in enumerate(pairs):
        path = p.get("photo") or f"{args.data}/scenes/{p['scene']}.jpg"
        crop = T.query_box(path, ctl.query_rect(p["bbox"]))
        px.want(path, crop)
        scene_jobs.append(lambda path=path, crop=crop: px.model_input(path, crop))
    for r, pid in enumerate(ids[:n_ccp]):
        px.want(photo(pid), None)
        px.want(studio(pid), None)
        photo_jobs.append(lambda pid=pid: px.model_input(photo(pid)))
        studio_jobs.append(lambda pid=pid: px.model_input(studio(pid)))
    for p in pairs[base:]:  # extra pairs: one product row each, in order, after ccp's products
        photo_jobs.append(lambda p=p: T.to_input(T.extra_product_views(px, p, names)[0]))
        studio_jobs.append(lambda p=p: T.to_input(T.extra_product_views(px, p, names)[1]))
    assert len(photo_jobs) == len(ids)
    px.make()
    out, t0 = {}, time.time()
    for name, jobs in (("q", scene_jobs), ("p", photo_jobs), ("st", studio_jobs)):
        parts = []
        for s in range(0, len(jobs), 32):
            x = torch.from_numpy(np.stack([j() for j in jobs[s:s + 32]]))
            with torch.no_grad():
                parts.append(front(net, x, TAIL_FROM - 1).numpy())
        out[name] = np.concatenate(parts)
    print(f"tail inputs: {sum(len(v) for v in out.values())} views in {time.time() - t0:.0f} s")
    np.savez(store + ".tmp.npz", **out)
    os.replace(store + ".tmp.npz", store)
    return out


def run_tail(tail, x, batch=512):
    with torch.no_grad():
        return torch.cat([tail(torch.from_numpy(x[s:s + batch])) for s in range(0, len(x), batch)]).numpy()


class Views:
    """The un-augmented views' pooled features through a tail, patched into a copy of prob, so that
    train.py's distances and trials run on them unchanged."""

    def __init__(self, prob, pooled):
        self.prob = copy.copy(prob)
        self.prob.f = copy.copy(prob.f)
        self.prob.s_pooled = prob.s_pooled.copy()
        self.prob.s_pooled[prob.query0] = pooled["q"]
        self.prob.f.p_pooled, self.prob.f.st_pooled = pooled["p"], pooled["st"]


def scores(prob, heads, setup, pooled):
    v = Views(prob, pooled).prob
    out = {}
    for split, view in (("dev", "studio"), ("dev", "plain"), ("train", "studio")):
        trials = prob.trials(split)
        fitb, auc, fitb_ci, auc_ci = T.score_trials(v, trials, lambda q, p, c: T.head_distances(
            heads, v, q, p, c, setup, view)[setup.which])
        out[f"{split}-{view}"] = {"fitb4": fitb, "auc": auc, "fitb4_ci": fitb_ci, "auc_ci": auc_ci}
    return out


def show(name, s):
    return (f"{name}: dev studio {s['dev-studio']['fitb4']:.3f} / {s['dev-studio']['auc']:.3f}, dev plain "
            f"{s['dev-plain']['fitb4']:.3f} / {s['dev-plain']['auc']:.3f}, train studio {s['train-studio']['fitb4']:.3f}")


def tune(prob, setup, heads, tail, x, frozen, seed, args, train_tail):
    """Heads (and the tail, if train_tail) trained args.epochs more on the un-augmented views: each
    step's anchors are their protocol queries, positives and negatives (same category, another
    scene) a product's photo or cut-out at random, with the attention loss as in training.
    Returns the scores after each epoch."""
    heads, tail = copy.deepcopy(heads), copy.deepcopy(tail)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    groups = [{"params": heads.parameters(), "lr": args.lr}]
    if train_tail:
        params = [p for n, p in tail.named_parameters() if args.tune == "block" or not n.startswith("blocks.")]
        for p in tail.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        groups.append({"params": params, "lr": args.tail_lr})
    opt = torch.optim.Adam(groups, weight_decay=1e-4)
    n, a = len(prob.f.product_ids), len(prob.f.pa_owner)
    train = np.flatnonzero(prob.split == "train")
    by_cat = {}
    for i in train:
        by_cat.setdefault(prob.cat_index[i], []).append(i)

    def pooled(kind, rows, studio=None):
        """Pooled features of rows of x[kind] (products: of x["st"] where studio, else x["p"]),
        through the tail with gradients, or the frozen ones."""
        src = x if train_tail else frozen
        v = src[kind][rows] if studio is None else np.where(
            studio.reshape(-1, *[1] * (src["p"].ndim - 1)), src["st"][rows], src["p"][rows])
        return tail(torch.from_numpy(v)) if train_tail else torch.from_numpy(v)

    history = []
    for epoch in range(args.epochs):
        heads.train()
        tail.eval()  # batch norm statistics stay ImageNet's
        t0 = time.time()
        order = rng.permutation(train)
        for s in range(0, len(order), 256):
            b = order[s:s + 256]
            neg = T.draw_negatives(prob, by_cat, b, args.negatives, rng)

            def product_in(rows):
                r = prob.product_row[rows]
                studio = rng.integers(2, size=len(r)).astype(bool)
                view_rows = np.where(studio, n + a + r, r)  # rows of prob.all_*: the cut-out or the photo
                return T.product_inputs(pooled(None, r, studio), prob.all_mid[view_rows], prob.all_col[view_rows],
                                        setup)

            # The anchors are their protocol queries, so the attention loss reads their own keys.
            loss = T.step_loss(heads, setup, prob, b, neg, T.scene_inputs(prob, prob.query0[b], setup, pooled("q", b)),
                               product_in, args.attend)
            opt.zero_grad()
            loss.backward()
            opt.step()
        heads.eval()
        now = {k: run_tail(tail, x[k]) for k in x} if train_tail else frozen
        s = scores(prob, heads, setup, now)
        s["epoch"], s["loss"], s["seconds"] = epoch + 1, float(loss), round(time.time() - t0)
        print("   " + show(f"epoch {epoch + 1} ({s['seconds']} s, loss {s['loss']:.3f})", s), flush=True)
        history.append(s)
    return history


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/ccp")
    ap.add_argument("--extra", default="out/extra", help="models/extra.py's labelled pairs ('' for none)")
    ap.add_argument("--extra-scenes", default="../shared/data/ccp-extra/scenes")
    ap.add_argument("--cache", default="out/features")
    ap.add_argument("--lookd", default="cargo run --release --quiet --")
    ap.add_argument("--seeds", type=int, default=3, help="members 1..N of the shipped recipe (seeds 1000 k)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of C and B after A")
    ap.add_argument("--negatives", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4, help="the heads' learning rate in C and B")
    ap.add_argument("--tail-lr", type=float, default=1e-4, help="the tail's learning rate in B")
    ap.add_argument("--tune", choices=["block", "head"], default="block",
                    help="B trains block 15 and the head convolution (block) or the head convolution only")
    ap.add_argument("--a-epochs", type=int, default=30, help="A's epochs (the shipped recipe: 30; fewer for a quick check)")
    ap.add_argument("--attend", type=float, default=1.0, help="the attention loss's weight (ship.sh: 1)")
    ap.add_argument("--out", default="out/finetune/results.json")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.studio = os.path.join(os.path.dirname(os.path.abspath(args.data)), "ccp-studio")
    targs = SimpleNamespace(data=args.data, studio=args.studio, cache=args.cache, seed=0, lookd=args.lookd,
                            backbone="efficientnet-lite0", weights=None, max_pairs=None, extra=args.extra or None,
                            extra_scenes=args.extra_scenes, extra_only=False, attend=args.attend)
    prob, pairs, base = T.load_problem(targs)
    net = ctl.LiteBackbone().eval().net
    for p in net.parameters():
        p.requires_grad_(False)
    x = tail_inputs(args, prob, base, net)
    tail = Tail(net, TAIL_FROM if args.tune == "block" else len(net._blocks)).eval()
    if args.tune == "head":  # the tail's input is then block 15's output
        block = Tail(net, TAIL_FROM)
        x = {k: np.concatenate([_run_blocks(block, v[s:s + 512]) for s in range(0, len(v), 512)]) for k, v in x.items()}
    frozen = {k: run_tail(tail, v) for k, v in x.items()}
    gap = max(float(np.abs(frozen["q"] - prob.s_pooled[prob.query0]).max()),
              float(np.abs(frozen["p"] - prob.f.p_pooled).max()),
              float(np.abs(frozen["st"] - prob.f.st_pooled).max()))
    print(f"the frozen tail on its cached inputs against train.py's cached features: largest difference {gap:.2e}")
    assert gap < 1e-3, "the tail inputs do not reproduce the cached features"
    results = {"variant": VARIANT, "tune": args.tune, "epochs": args.epochs, "negatives": args.negatives, "lr": args.lr,
               "tail_lr": args.tail_lr, "attend": args.attend, "frozen_gap": gap, "seeds": []}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for k in range(1, args.seeds + 1):
        seed = 1000 * k
        t0 = time.time()
        saved = os.path.join(os.path.dirname(args.out) or ".", f"A-{seed}-{args.a_epochs}-{args.attend}.pt")
        if os.path.exists(saved):  # A is the same for --tune block and head: trained once per seed
            setup = T.Setup(VARIANT)
            heads = ctl.Heads(prob.f.p_pooled.shape[1], prob.s_cells.shape[2], prob.categories, dim=32,
                              c_colour=ctl.ColourCells.bins, pool=setup.pool)
            heads.load_state_dict(torch.load(saved))
        else:
            heads, setup, _ = T.train_variant(prob, VARIANT, seed, epochs=args.a_epochs, negatives=8, dim=32,
                                              swa_from=min(5, args.a_epochs - 1), attend=args.attend, report=False)
            torch.save(heads.state_dict(), saved + ".tmp")
            os.replace(saved + ".tmp", saved)
        heads.eval()
        r = {"seed": seed, "A": scores(prob, heads, setup, frozen), "A_seconds": round(time.time() - t0)}
        print(f"seed {seed}: " + show("A (shipped recipe)", r["A"]), flush=True)
        print(" C: heads only, un-augmented views", flush=True)
        r["C"] = tune(prob, setup, heads, tail, x, frozen, seed + 1, args, train_tail=False)
        print(f" B: heads and tail ({args.tune})", flush=True)
        r["B"] = tune(prob, setup, heads, tail, x, frozen, seed + 1, args, train_tail=True)
        results["seeds"].append(r)
        with open(args.out + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(args.out + ".tmp", args.out)
    summary = {}
    for arm in ("A", "C", "B"):
        for key in ("dev-studio", "dev-plain", "train-studio"):
            for m in ("fitb4", "auc"):
                v = [r[arm][key][m] if arm == "A" else r[arm][-1][key][m] for r in results["seeds"]]
                summary[f"{arm} {key} {m}"] = {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
    results["summary"] = summary
    with open(args.out + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(args.out + ".tmp", args.out)
    for key, v in summary.items():
        print(f"{key}: {v['mean']:.3f} ± {v['sd']:.3f}")


def _run_blocks(tail, x):
    with torch.no_grad():
        y = torch.from_numpy(x)
        for block in tail.blocks:
            y = block(y)
        return y.numpy()


if __name__ == "__main__":
    main()
