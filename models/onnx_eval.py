"""A model folder's graphs through onnxruntime: the evaluation protocol, and int8 quantisation.

    onnx_eval.py eval --model models/default --data ../shared/data/ccp --split dev
    onnx_eval.py quantize --model models/default --data ../shared/data/ccp --out models/default-int8

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
    m, sess = session(folder)
    keys = None
    if m["attention"] == "category":
        keys = json.load(open(os.path.join(folder, m["category-keys"])))
    pairs = [p for p in ctl.read_stl(data) if split == "all" or ctl.split_of(p["scene"]) == split]
    trials = ctl.plan(pairs, 0)[:limit]
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

    d = {False: [], True: []}
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
    scenes = [pairs[i]["scene"] for i, *_ in trials]
    fitb, auc, fci, aci = ctl.metrics(scenes, d[False])
    pf, pa, pfci, paci = ctl.metrics(scenes, d[True])
    return {"pairs": len(trials), "fitb4": fitb, "auc": auc, "fitb4_ci": fci, "auc_ci": aci,
            "photometric": {"fitb4": pf, "auc": pa, "fitb4_ci": pfci, "auc_ci": paci}}


class Calibration:
    def __init__(self, data, n):
        pairs = [p for p in ctl.read_stl(data) if ctl.split_of(p["scene"]) == "train"]
        rng = np.random.default_rng(0)
        picks = rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)
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


def quantize(folder, data, out, n, per_channel, method="minmax", scope="backbone-convs"):
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
                                       if n.op_type in ("Conv", "Clip") and n.name.startswith("/backbone/")])
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
    ap.add_argument("action", choices=["eval", "quantize", "mean-scene"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="../shared/data/ccp")
    ap.add_argument("--split", default="dev", choices=["all", "train", "dev", "test"])
    ap.add_argument("--limit", type=int)
    ap.add_argument("--out")
    ap.add_argument("--calibration", type=int, default=200)
    ap.add_argument("--per-channel", action="store_true")
    ap.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"])
    ap.add_argument("--scope", default="backbone-convs", choices=["backbone-convs", "all"])
    a = ap.parse_args()
    if a.action == "eval":
        print(json.dumps(evaluate(a.model, a.data, a.split, a.limit)))
    elif a.action == "mean-scene":
        mean_scene(a.model, a.data)
    else:
        quantize(a.model, a.data, a.out, a.calibration, a.per_channel, a.method, a.scope)


if __name__ == "__main__":
    main()
