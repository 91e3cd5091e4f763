"""A model folder's graphs through onnxruntime: the evaluation protocol, and int8 quantisation.

    onnx_eval.py eval --model models/default --data ../shared/data/ccp --split dev
    onnx_eval.py quantize --model models/default --data ../shared/data/ccp --out models/default-int8
    onnx_eval.py agree --reference models/default-f32 --model models/default-int8 --data ../shared/data/ccp-studio

`eval` is the Python twin of `lookd eval` (same trials, same crops, the same photometric check;
PIL resizes instead of the image crate). `quantize` writes a static QDQ int8 copy of the folder (the form tract runs),
calibrated on images of the train split only.
"""
import argparse
import json
import os
import shutil
import sys
import tomllib

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctl  # noqa: E402
from build_model import sha256  # noqa: E402
from train import load_rgb, to_input  # noqa: E402


def session(folder, threads=1):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    m = tomllib.load(open(os.path.join(folder, "manifest.toml"), "rb"))
    s = ort.InferenceSession(os.path.join(folder, m["scene"]["graph"]), opts, providers=["CPUExecutionProvider"])
    return m, s


def evaluate(folder, data, split, limit=None):
    pairs = [p for p in ctl.read_stl(data) if split == "all" or ctl.split_of(p["scene"]) == split]
    trials = ctl.plan(pairs, 0)[:limit]
    d = trial_distances(folder, data, pairs, trials)
    scenes = [pairs[i]["scene"] for i, *_ in trials]
    fitb, auc, fci, aci = ctl.metrics(scenes, d[False])
    pf, pa, pfci, paci = ctl.metrics(scenes, d[True])
    return {"pairs": len(trials), "fitb4": fitb, "auc": auc, "fitb4_ci": fci, "auc_ci": aci,
            "photometric": {"fitb4": pf, "auc": pa, "fitb4_ci": pfci, "auc_ci": paci}}


def trial_distances(folder, data, pairs, trials, views=(False, True)):
    """Each trial's hybrid distances (the positive, the three negatives, the AUC negative), for
    each view: False the products as they are, True photometrically changed."""
    m, sess = session(folder)
    keys = None
    if m["attention"] == "category":
        keys = json.load(open(os.path.join(folder, m["category-keys"])))
    memo = {}
    scene_outputs = [m["scene"][k] for k in ("global", "regions", "keys")]

    def product(pid, photometric):
        if (pid, photometric) not in memo:
            x = to_input(load_rgb(f"{data}/products/{pid}.jpg"))
            if photometric:
                x = ctl.photometric(x, ctl.photometric_params(pid, 0))
            g, k = sess.run([m["product"]["global"], m["product"].get("key", "key")], {"image": x[None]})
            memo[pid, photometric] = (g[0], k[0])
        return memo[pid, photometric]

    d = {v: [] for v in views}
    for i, q, negs, auc in trials:
        p = pairs[i]
        img = load_rgb(f"{data}/scenes/{p['scene']}.jpg")
        sg, sr, sk = (o[0] for o in sess.run(scene_outputs, {"image": to_input(img, ctl.to_pixels(q, img.width, img.height))[None]}))
        for photometric, rows in d.items():
            row = []
            for j in [i, *negs, auc]:
                pg, pk = product(pairs[j]["product"], photometric)
                if keys is not None:
                    pk = np.asarray(keys[p["category"]], dtype=np.float32)
                a = np.exp(-((sk - pk) ** 2).sum(1) - np.max(-((sk - pk) ** 2).sum(1)))
                a /= a.sum()
                g = ((sg - pg) ** 2).sum()
                loc = (a * ((sr - pg) ** 2).sum(1)).sum()
                row.append(0.5 * (g + loc))
            rows.append(row)
    return d


# The calibration set sizes `agree` keeps its trials clear of.
CALIBRATION_SIZES = (200, 400, 600)


def calibration_picks(n_pairs, n):
    """Which train pairs `Calibration` takes for a set of n (the same draw)."""
    return np.random.default_rng(0).choice(n_pairs, size=min(n, n_pairs), replace=False)


def agree(reference, folder, data, limit):
    """Label-free: how closely `folder` (an int8 copy) ranks like `reference` (its float model).
    Train-split FITB-4 trials whose scene pair no calibration set of CALIBRATION_SIZES uses; which
    candidate is right is never read. Reports how often both pick the same candidate of the four,
    put the AUC pair in the same order, and their mean absolute distance difference, each view."""
    pairs = [p for p in ctl.read_stl(data) if ctl.split_of(p["scene"]) == "train"]
    used = set()
    for n in CALIBRATION_SIZES:
        used.update(int(i) for i in calibration_picks(len(pairs), n))
    trials = [t for t in ctl.plan(pairs, 0) if t[0] not in used][:limit]
    ref, got = trial_distances(reference, data, pairs, trials), trial_distances(folder, data, pairs, trials)
    out = {"trials": len(trials)}
    for view, name in ((False, "plain"), (True, "photometric")):
        a, b = np.asarray(ref[view]), np.asarray(got[view])
        out[name] = {"same_pick": float((a[:, :4].argmin(1) == b[:, :4].argmin(1)).mean()),
                     "same_auc_order": float(((a[:, 0] < a[:, 4]) == (b[:, 0] < b[:, 4])).mean()),
                     "mean_abs_diff": float(np.abs(a - b).mean())}
    return out


class Calibration:
    def __init__(self, data, n):
        pairs = [p for p in ctl.read_stl(data) if ctl.split_of(p["scene"]) == "train"]
        picks = calibration_picks(len(pairs), n)
        self.items = []
        for k, i in enumerate(picks):
            p = pairs[i]
            if k % 2:
                self.items.append(to_input(load_rgb(f"{data}/products/{p['product']}.jpg")))
            else:
                img = load_rgb(f"{data}/scenes/{p['scene']}.jpg")
                q = ctl.query_rect(p["bbox"])
                self.items.append(to_input(img, ctl.to_pixels(q, img.width, img.height) if q else None))
        self.it = iter(self.items)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {"image": x[None]}


def quantize(folder, data, out, n, per_channel, method="minmax", scope="backbone-convs", keep_float=()):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    m = tomllib.load(open(os.path.join(folder, "manifest.toml"), "rb"))
    os.makedirs(out, exist_ok=True)
    src = os.path.join(folder, m["scene"]["graph"])
    dst = os.path.join(out, "embed.int8.onnx")
    import onnx

    nodes = onnx.load(src).graph.node
    if scope == "backbone-convs":
        # Only the backbone's convolutions (over 99% of the arithmetic) become int8; the colour
        # branch, the heads (MatMul/Gemm/BatchNorm), the softmaxes, the pooling sums, the L2
        # normalisation and the concatenation stay float, as the int8 issue (#28) asks.
        # The ReLU6 after a convolution (Clip) is named too: the quantizer then drops it and
        # quantizes the convolution's output with the clip's range, 0 to 6, instead of the
        # convolution's own.
        only = dict(op_types_to_quantize=["Conv", "Clip"],
                    nodes_to_quantize=[n.name for n in nodes
                                       if n.op_type in ("Conv", "Clip") and n.name.startswith("/backbone/")
                                       and not any(n.name.startswith(k) for k in keep_float)])
    else:
        # "all": every operator the quantizer knows, but the colour histogram (ctl.ColourCells),
        # which has no weights to shrink (the int8 copy measured before #28).
        only = dict(nodes_to_exclude=[n.name for n in nodes if n.name.startswith("/colour/")])
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    quantize_static(src, dst + ".tmp", Calibration(data, n), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                    calibrate_method=methods[method], extra_options={"WeightSymmetric": True}, **only)
    # The quantizer leaves value_info shapes that mix the batch symbol with 1; tract refuses to
    # unify those, and infers every shape itself anyway.
    q = onnx.load(dst + ".tmp")
    del q.graph.value_info[:]
    onnx.save(q, dst + ".tmp")
    os.replace(dst + ".tmp", dst)
    for f in os.listdir(folder):
        if f.endswith(".json") and f not in ("reference.json", "results.json"):
            shutil.copy(os.path.join(folder, f), out)
    text = open(os.path.join(folder, "manifest.toml")).read()
    digest = sha256(dst)
    text = text.replace(f'graph = "{m["scene"]["graph"]}"', 'graph = "embed.int8.onnx"')
    text = text.replace(m["scene"]["sha256"], digest).replace('precision = "f32"', 'precision = "int8"')
    text = text.replace(f'name = "{m["name"]}"', f'name = "{m["name"]}-int8"')
    # The float model's reference scenes are its own embeddings: the copy names none until
    # `lookd model scenes` writes the int8 ones (models/ship.sh does, next).
    text = "".join(line for line in text.splitlines(True) if not line.startswith("reference-scenes = "))
    with open(os.path.join(out, "manifest.toml"), "w") as f:
        f.write(text)
    # Reference outputs from onnxruntime on the int8 graph, for `lookd model check`.
    from build_model import reference_pixels

    _, sess = session(out)
    got = sess.run(None, {"image": reference_pixels(m["input"]["width"])})
    names = [o.name for o in sess.get_outputs()]
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"input": "reference_pixels", "outputs": {k: v[0].tolist() for k, v in zip(names, got)}}, f)
    print(f"wrote {dst} ({os.path.getsize(dst)} bytes, sha256 {digest})")


def mean_scene(folder, data):
    """The folder's mean scene for lookd's hubness correction (rank::correct_hubs): over the train
    split's scenes, each whole (as the mirror sees one), the mean global embedding plus the mean
    region embedding. Written to mean_scene.json and named in the manifest (`mean-scene`)."""
    m, sess = session(folder, threads=2)
    outs = [m["scene"]["global"], m["scene"]["regions"]]
    scenes = sorted({p["scene"] for p in ctl.read_stl(data) if ctl.split_of(p["scene"]) == "train"})
    g, r = np.zeros(m["dim"]), np.zeros(m["dim"])
    for s in scenes:
        sg, sr = sess.run(outs, {"image": to_input(load_rgb(f"{data}/scenes/{s}.jpg"))[None]})
        g += sg[0]
        r += sr[0].mean(0)
    mean = (g + r) / len(scenes)
    with open(os.path.join(folder, "mean_scene.json"), "w") as f:
        json.dump([float(v) for v in mean], f)
    path = os.path.join(folder, "manifest.toml")
    text = open(path).read()
    if "mean-scene = " not in text:
        regions = f'regions = {m["regions"]}\n'
        assert regions in text, "the manifest has no top-level regions line"
        text = text.replace(regions, regions + 'mean-scene = "mean_scene.json"\n', 1)
        with open(path, "w") as f:
            f.write(text)
    print(f"wrote {folder}/mean_scene.json: {len(scenes)} train scenes, |mean| {np.linalg.norm(mean):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["eval", "quantize", "mean-scene", "agree"])
    ap.add_argument("--reference", help="agree: the float model the int8 copy (--model) is compared with")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="../shared/data/ccp")
    ap.add_argument("--split", default="dev", choices=["all", "train", "dev", "test"])
    ap.add_argument("--limit", type=int)
    ap.add_argument("--out")
    ap.add_argument("--calibration", type=int, default=200)
    ap.add_argument("--per-channel", action="store_true")
    ap.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"])
    ap.add_argument("--scope", default="backbone-convs", choices=["backbone-convs", "all"])
    ap.add_argument("--keep-float", default="", help="quantize: comma-separated node-name prefixes left float")
    a = ap.parse_args()
    if a.action == "eval":
        print(json.dumps(evaluate(a.model, a.data, a.split, a.limit)))
    elif a.action == "agree":
        print(json.dumps(agree(a.reference, a.model, a.data, a.limit or 400)))
    elif a.action == "mean-scene":
        mean_scene(a.model, a.data)
    else:
        keep = tuple(k for k in a.keep_float.split(",") if k)
        quantize(a.model, a.data, a.out, a.calibration, a.per_channel, a.method, a.scope, keep)


if __name__ == "__main__":
    main()
