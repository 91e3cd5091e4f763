"""lookd beside onnxruntime and numpy on this machine, in one run: writes BENCHMARKS.md's tables.

Run through bench/compare (it builds lookd, prepares the model variants and the venv). Every
figure below comes from this run, on the same machine, the same graphs and the same inputs:

  scene graph   lookd/tract (`lookd model bench`, lookd's kernels and tract's alone) vs onnxruntime,
                f32 and int8, same threads; where its time goes, operator by operator
  camera frame  a 1280x720 frame to the model's input, converted whole vs resized in YUV
  aarch64       instructions per inference under qemu, when bench/aarch64-insns has run
  end to end    `lookd bench` (decode, preprocess, graph, ranking, JSON) vs onnxruntime graph only
  ranking       lookd (criterion, `cargo bench --bench rank`) vs numpy doing the same math
  backbones     EfficientNet-Lite0 vs an untrained ResNet50 (latency only)
  the limit     this machine's sustained f32 GEMM rate, and each graph's share of it

The tables replace the text between the compare markers in BENCHMARKS.md; the rest of that
file (analysis, optimisation log) is written by hand.
"""
import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import time

# One BLAS thread, as lookd's ranking: set before numpy loads.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "models"))
from build_model import reference_pixels  # noqa: E402

D, R = 128, 49
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"


def manifest(folder):
    import tomllib

    with open(os.path.join(folder, "manifest.toml"), "rb") as f:
        return tomllib.load(f)


def median(xs):
    return float(np.median(np.asarray(xs)))


# ---------------------------------------------------------------- the limit


def gemm_rate(sizes=(1024, 2048), seconds=3.0):
    """Sustained single-thread f32 GEMM, GFLOP/s: the best of repeated n x n x n products."""
    return max(gemm_rate_at(n, seconds) for n in sizes)


def gemm_rate_at(n, seconds):
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def graph_flops(path, side):
    """Multiply-adds of Conv, Gemm and MatMul at batch 1, times 2. Output shapes come from one
    onnxruntime run with every such output exposed (static inference cannot follow the exported
    padding), weight shapes from the initializers (through DequantizeLinear in QDQ graphs)."""
    m = onnx.load(path)
    nodes = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    wanted = []
    for n in nodes:
        wanted += [n.output[0]] + ([n.input[0]] if n.op_type != "Conv" else [])
    have = {o.name for o in m.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = list(dict.fromkeys(wanted))
    shapes = dict(zip(names, (o.shape for o in sess.run(names, {m.graph.input[0].name: reference_pixels(side)}))))
    weights = {t.name: list(t.dims) for t in m.graph.initializer}
    produced_by = {o: n for n in m.graph.node for o in n.output}

    def weight(name):
        if name in weights:
            return weights[name]
        node = produced_by.get(name)
        return weight(node.input[0]) if node is not None and node.op_type == "DequantizeLinear" else None

    macs = 0
    for n in nodes:
        out = shapes[n.output[0]]
        if n.op_type == "Conv":
            macs += int(np.prod(out)) * int(np.prod(weight(n.input[1])[1:]))
        else:
            macs += int(np.prod(out)) * shapes[n.input[0]][-1]
    return 2 * macs


# ---------------------------------------------------------------- graphs


def ort_latency(folder, threads, runs):
    m = manifest(folder)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(os.path.join(folder, m["scene"]["graph"]), opts, providers=["CPUExecutionProvider"])
    x = reference_pixels(m["input"]["width"])
    outputs = [m["scene"][k] for k in ("global", "regions", "keys")]
    for _ in range(3):
        sess.run(outputs, {m["input"]["name"]: x})
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(outputs, {m["input"]["name"]: x})
        ms.append((time.perf_counter() - t) * 1e3)
    return median(ms)


def lookd(args):
    out = subprocess.run([LOOKD, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def tract_latency(folder, threads, runs, kernels="lookd"):
    args = ["model", "bench", folder, "--runs", str(runs), "--threads", str(threads), "--json", "--kernels", kernels]
    return lookd(args)["p50_ms"]


def op_profile(folder, kernels, runs):
    """Per-operator ms per run (`lookd model bench --profile`), heaviest first."""
    out = subprocess.run([LOOKD, "model", "bench", folder, "--runs", str(runs), "--profile", "--kernels", kernels],
                         check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[-1] == "nodes" and parts[-4] == "ms":
            rows.append((" ".join(parts[:-5]), float(parts[-5]), int(parts[-2])))
    return rows


# ---------------------------------------------------------------- ranking


def unit_rows(rng, n):
    v = rng.standard_normal((n, D), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def numpy_rank(scene, globals_, keys, category_key):
    """The hybrid distance of lookd's rank.rs, written the way a numpy user would."""
    g, regions, rkeys = scene
    gn = (globals_ * globals_).sum(1)
    glob = (g @ g) + gn - 2 * globals_ @ g
    if keys is None:
        logits = -((rkeys - category_key) ** 2).sum(1)
        a = np.exp(logits - logits.max())
        a /= a.sum()
        pooled = a @ regions
        local = (a * (regions * regions).sum(1)).sum() + gn - 2 * globals_ @ pooled
    else:
        logits = 2 * keys @ rkeys.T - (rkeys * rkeys).sum(1)  # the key's own norm cancels
        logits -= logits.max(1, keepdims=True)
        a = np.exp(logits)
        a /= a.sum(1, keepdims=True)
        sq = (regions * regions).sum(1)[None, :] + gn[:, None] - 2 * globals_ @ regions.T
        local = (a * sq).sum(1)
    return 0.5 * (glob + local)


def numpy_ranking(sizes, budget_s=2.0):
    rng = np.random.default_rng(1)
    scene = (unit_rows(rng, 1)[0], unit_rows(rng, R), unit_rows(rng, R))
    category_key = unit_rows(rng, 1)[0]
    out = {}
    for p in sizes:
        globals_, keys = unit_rows(rng, p), unit_rows(rng, p)
        for mode, k in (("category-key", None), ("product-key", keys)):
            numpy_rank(scene, globals_, k, category_key)
            ms, end = [], time.perf_counter() + budget_s
            while len(ms) < 3 or (time.perf_counter() < end and len(ms) < 50):
                t = time.perf_counter()
                numpy_rank(scene, globals_, k, category_key)
                ms.append((time.perf_counter() - t) * 1e3)
            out[(mode, p)] = median(ms)
    return out


def criterion_ranking(target_dir, sizes):
    modes = ("category-key", "product-key")
    return {(mode, p): criterion_ms(target_dir, "rank", mode, str(p)) for mode in modes for p in sizes}


def catalog_batches(csv, rows, batches):
    """`lookd catalog build` of the first `rows` catalog rows at each batch size: seconds."""
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as d:
        lines = open(csv).read().splitlines()[: rows + 1]
        small = os.path.join(d, "catalog.csv")
        with open(small, "w") as f:
            f.write("\n".join(lines) + "\n")
        for b in batches:
            t = time.perf_counter()
            subprocess.run([LOOKD, "catalog", "build", "--catalog", small, "--images", os.path.dirname(csv),
                            "--out", os.path.join(d, f"b{b}.cache"), "--batch", str(b)],
                           check=True, capture_output=True)
            out[b] = time.perf_counter() - t
    return out


def criterion_ms(target_dir, *parts):
    path = os.path.join(target_dir, "criterion", *parts, "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"] / 1e6


def criterion_frames(target_dir):
    rows = []
    for fmt in ("yuyv", "mjpg"):
        rows.append((f"1280×720 {fmt.upper()} → RGB", criterion_ms(target_dir, "frame-1280x720", "to-rgb", fmt)))
    for n in (3781, 100000):
        rows.append((f"open a {n:,}-product cache (mmap, CRC, metadata)", criterion_ms(target_dir, "cache-open", str(n))))
    return rows


def criterion_camera(target_dir):
    """Per format: (converted whole then stretched, resized in YUV then converted) ms."""
    return [(fmt.upper(), criterion_ms(target_dir, "frame-1280x720", "to-model-input-224", fmt),
             criterion_ms(target_dir, "frame-1280x720", "camera-to-model-input-224", fmt))
            for fmt in ("yuyv", "nv12", "yu12", "mjpg")]


def aarch64_insns():
    """Every bench/aarch64-insns run kept in out/bench, one per emulated CPU."""
    runs = []
    for path in sorted(glob.glob(os.path.join(REPO, "out", "bench", "aarch64-insns-*.json"))):
        with open(path) as f:
            r = json.load(f)
        r["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(path)))
        runs.append(r)
    return runs


# ---------------------------------------------------------------- report


def int8_isa(lookd):
    """The vector unit lookd's int8 kernels run on here (the best this CPU has, unless
    LOOKD_INT8_ISA names another), and every one it has."""
    env = dict(os.environ, LOOKD_INT8_ISA="list")
    p = subprocess.run([lookd, "model", "bench", os.path.join(REPO, "models", "default"), "--runs", "1"],
                       capture_output=True, text=True, env=env)
    text = p.stdout + p.stderr
    if "runs int8 paths " not in text:
        return "?"
    paths = text.split("runs int8 paths ", 1)[1].split(", not", 1)[0]
    chosen = os.environ.get("LOOKD_INT8_ISA") or paths.split(", ")[-1]
    return f"{chosen} (this CPU has {paths})"


def machine(lookd):
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    tract = "?"
    lock = open(os.path.join(REPO, "Cargo.lock")).read().split("\n[[package]]\n")
    for pkg in lock:
        if pkg.startswith('name = "tract-core"'):
            tract = pkg.split('version = "')[1].split('"')[0]
    return (
        f"{cpu}, {os.cpu_count()} cores, {int(mem) // 1024 // 1024} GiB, Linux {platform.release()}; "
        f"tract {tract}, onnxruntime {ort.__version__}, numpy {np.__version__}, Python {platform.python_version()}; "
        f"lookd's int8 kernels: {int8_isa(lookd)}"
    )


def ratio(a, b):
    return f"{a / b:.2f}"


def render(r):
    lines = [BEGIN, "", f"Generated by `bench/compare` on {r['date']} (took {r['took_s']:.0f} s).", ""]
    lines += [f"Machine: {r['machine']}.", ""]
    lines += [f"Sustained f32 GEMM (numpy/OpenBLAS, 1 thread, best of 1024³ and 2048³): **{r['gemm_gflops']:.1f} GFLOP/s**. "
              "A graph above 100% of it runs kernels faster than OpenBLAS's on this CPU.", ""]
    lines += ["### Scene graph: lookd/tract vs onnxruntime (same graph, same input, median)", ""]
    lines += ["`lookd`: tract with lookd's own depthwise and squared-distance kernels swapped in, as the daemon runs "
              "(`--kernels lookd`); `tract alone`: tract's kernels only (`--kernels tract`), what lookd ran before #15.", ""]
    lines += ["| graph | threads | GFLOP | lookd ms | tract alone ms | onnxruntime ms | lookd/ORT | tract alone/ORT "
              "| lookd speed-up | lookd share of the GEMM rate |"]
    lines += ["|---|---|---|---|---|---|---|---|---|---|"]
    for g in r["graphs"]:
        share = g["gflop"] / (g["tract_ms"] / 1e3) / (r["gemm_gflops"] * g["threads"])
        lines.append(
            f"| {g['label']} | {g['threads']} | {g['gflop']:.2f} | {g['tract_ms']:.1f} | {g['alone_ms']:.1f} "
            f"| {g['ort_ms']:.1f} | {ratio(g['tract_ms'], g['ort_ms'])} | {ratio(g['alone_ms'], g['ort_ms'])} "
            f"| {g['alone_ms'] / g['tract_ms']:.2f}× | {share:.0%} |"
        )
    p = r["profiles"]
    lines += ["", "### Where the scene graph's time goes (`lookd model bench --profile`, ms per run, EfficientNet-Lite0 CtL)", ""]
    lines += ["| operator (f32, lookd) | ms | nodes | | operator (f32, tract alone) | ms | nodes | | operator (int8 QDQ, lookd) | ms | nodes |"]
    lines += ["|---|---|---|---|---|---|---|---|---|---|---|"]
    for i in range(8):
        cells = []
        for key in ("f32", "f32-tract", "int8"):
            rows = p[key]
            cells.append(f"{rows[i][0]} | {rows[i][1]:.2f} | {rows[i][2]}" if i < len(rows) else " | | ")
        lines.append("| " + " | | ".join(cells) + " |")
    dw = dict((n, ms) for n, ms, _ in p["f32"]).get("LookdDepthwise", float("nan"))
    dw_tract = dict((n, ms) for n, ms, _ in p["f32-tract"]).get("DepthWiseConv", float("nan"))
    lines += ["", f"Depthwise convolutions: **{dw:.2f} ms with lookd's kernel against {dw_tract:.2f} ms with tract's, "
              f"{dw / dw_tract:.0%}** (target ≤ 25%)."]
    e = r["e2e"]
    lines += ["", "### End to end: `lookd bench` (frame bytes in, ranking JSON out) vs onnxruntime's graph alone", ""]
    lines += ["| stage | p50 ms | p95 ms | max ms |", "|---|---|---|---|"]
    for name, s in e["stages"]:
        lines.append(f"| {name} | {s['p50_ms']:.3f} | {s['p95_ms']:.3f} | {s['max_ms']:.3f} |")
    lines += [
        "",
        f"{e['frames']} frames of ../shared/data/ccp/scenes, category {e['category']} "
        f"({e['category_products']} of {e['cache_products']} products), {e['precision']} model: "
        f"{e['fps']:.1f} frames/s; ready (model + cache) in {e['ready_ms']:.0f} ms; peak RSS {e['peak_rss_kb'] / 1024:.1f} MiB.",
        "",
        f"**lookd end-to-end p50 / onnxruntime scene-graph p50 = {e['total_p50']:.1f} / {e['ort_ms']:.1f} = "
        f"{ratio(e['total_p50'], e['ort_ms'])}** (target ≤ 2.2; with tract's kernels alone "
        f"{e['alone_total_p50']:.1f} ms, {ratio(e['alone_total_p50'], e['ort_ms'])}).",
    ]
    lines += ["", "### A camera frame to the model's input (criterion, `cargo bench --bench frame`, median ms)", ""]
    lines += ["| 1280×720 frame | converted whole, then stretched (before #15) | resized in YUV, then converted (now) | speed-up |",
              "|---|---|---|---|"]
    for fmt, before, now in r["camera"]:
        note = " (JPEG: decoded whole either way)" if fmt == "MJPG" else ""
        lines.append(f"| {fmt}{note} | {before:.2f} | {now:.2f} | {before / now:.2f}× |")
    for a in r["aarch64"]:
        cpu = a["emulator"].rsplit("-cpu ", 1)[-1]
        lines += ["", f"### aarch64 as a {cpu}: instructions per scene-graph inference "
                  f"(`QEMU_CPU={cpu} bench/aarch64-insns`, qemu, run of {a['date']})", ""]
        lines += ["No timing under an emulator: the count of guest instructions is the proxy (exact for the code run; "
                  "blind to caches and pipelines).", ""]
        lines += ["| f32, kernels | instructions | vs tract alone |", "|---|---|---|"]
        base = a["per_inference"].get("tract")
        for k, n in a["per_inference"].items():
            lines.append(f"| {k} | {n:,} | {n / base:.3f} |" if base else f"| {k} | {n:,} | |")
        f32 = a["per_inference"].get("tract-depthwise")
        if a.get("int8") and f32:
            lines += ["", "int8 copy (`models/default-int8`) against f32 on aarch64's default kernels (tract's depthwise):", ""]
            lines += ["| int8 convolutions | instructions | vs f32 |", "|---|---|---|"]
            ways = {"float": "float between fake-quantisation pairs (as tract reads it)",
                    "integer": "folded into tract's integer Conv (`LOOKD_INT8_CONV=integer`)",
                    "lookd": "lookd's integer kernels (`LOOKD_INT8_CONV=lookd`, the default)"}
            for k, n in a["int8"].items():
                lines.append(f"| {ways.get(k, k)} | {n:,} | {n / f32:.2f} |")
    lines += ["", "### Ranking: lookd vs numpy (same math, D = 128, R = 49, one thread, median ms)", ""]
    lines += ["| mode | products | lookd ms | numpy ms | speed vs numpy | lookd ns/product |", "|---|---|---|---|---|---|"]
    for (mode, p), ms in sorted(r["rank_lookd"].items()):
        npms = r["rank_numpy"][(mode, p)]
        lines.append(f"| {mode} | {p:,} | {ms:.3f} | {npms:.3f} | {npms / ms:.2f}× | {ms * 1e6 / p:.0f} |")
    lines += ["", "### Frame path and start-up (criterion, `cargo bench --bench frame`, median)", ""]
    lines += ["| step | ms |", "|---|---|"]
    for name, ms in r["frames"]:
        lines.append(f"| {name} | {ms:.2f} |")
    cb = r["catalog_batches"]
    lines += ["", f"### `lookd catalog build`: batch size ({r['catalog_rows']} catalog photos, wall time)", ""]
    lines += ["| --batch | seconds | photos/s | vs batch 1 |", "|---|---|---|---|"]
    for b, sec in cb.items():
        lines.append(f"| {b} | {sec:.1f} | {r['catalog_rows'] / sec:.1f} | {cb[1] / sec:.2f}× |")
    m = r["memory"]
    if m:
        lines += ["", "### Memory: `lookd run` peak RSS (folder camera, embedded broker, 40 frames)", ""]
        lines += ["| cache | products | peak RSS MiB | target MiB |", "|---|---|---|---|"]
        for row in m:
            lines.append(f"| {row['label']} | {row['products']:,} | {row['peak_mib']:.1f} | {row['target']} |")
    lines += ["", END]
    return "\n".join(lines)


def write_report(text):
    path = os.path.join(REPO, "BENCHMARKS.md")
    old = open(path).read() if os.path.exists(path) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path + ".tmp", "w") as f:
        f.write(head + text + tail)
    os.replace(path + ".tmp", path)


def main():
    global LOOKD
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lookd", required=True)
    ap.add_argument("--target-dir", required=True, help="where criterion wrote its estimates")
    ap.add_argument("--models", nargs="+", required=True, help="label=folder[@threads]")
    ap.add_argument("--scenes", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--catalog", required=True, help="catalog CSV (its images beside it)")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--memory", nargs="*", default=[], help="label=file:products:target (peak RSS JSON)")
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    a = ap.parse_args()
    LOOKD = a.lookd
    started = time.time()
    sizes = [int(s) for s in a.sizes.split(",")]
    r = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(a.lookd)}
    r["gemm_gflops"] = gemm_rate()
    print(f"GEMM {r['gemm_gflops']:.1f} GFLOP/s", file=sys.stderr)
    r["graphs"] = []
    for spec in a.models:
        label, rest = spec.split("=", 1)
        folder, threads = (rest.split("@") + ["1"])[:2]
        threads = int(threads)
        m = manifest(folder)
        path = os.path.join(folder, m["scene"]["graph"])
        g = {"label": label, "threads": threads, "gflop": graph_flops(path, m["input"]["width"]) / 1e9}
        g["tract_ms"] = tract_latency(folder, threads, a.runs)
        g["alone_ms"] = tract_latency(folder, threads, a.runs, "tract")
        g["ort_ms"] = ort_latency(folder, threads, a.runs)
        print(f"{label}: {g}", file=sys.stderr)
        r["graphs"].append(g)
    first = a.models[0].split("=", 1)[1].split("@")[0]
    # End to end with the model that ships (the one bench/compare built the cache with).
    shipped = next((i for i, spec in enumerate(a.models) if "(shipped)" in spec), 0)
    daemon = a.models[shipped].split("=", 1)[1].split("@")[0]
    e = lookd(["bench", "--scenes", a.scenes, "--model", daemon, "--cache", a.cache, "--frames", "100", "--json"])
    e["model"] = a.models[shipped].split("=", 1)[0]
    e["total_p50"] = dict(e["stages"])["total"]["p50_ms"]
    alone = lookd(["bench", "--scenes", a.scenes, "--model", daemon, "--cache", a.cache, "--frames", "100", "--json",
                   "--kernels", "tract"])
    e["alone_total_p50"] = dict(alone["stages"])["total"]["p50_ms"]
    int8 = next((spec.split("=", 1)[1].split("@")[0] for spec in a.models if "int8" in spec), first)
    r["profiles"] = {"f32": op_profile(first, "lookd", a.runs), "f32-tract": op_profile(first, "tract", a.runs),
                     "int8": op_profile(int8, "lookd", a.runs)}
    e["ort_ms"] = r["graphs"][shipped]["ort_ms"]
    r["e2e"] = e
    r["rank_lookd"] = criterion_ranking(a.target_dir, sizes)
    r["frames"] = criterion_frames(a.target_dir)
    r["camera"] = criterion_camera(a.target_dir)
    r["aarch64"] = aarch64_insns()
    r["catalog_rows"] = 200
    r["catalog_batches"] = catalog_batches(a.catalog, r["catalog_rows"], [1, 4, 16])
    r["rank_numpy"] = numpy_ranking(sizes)
    r["memory"] = []
    for spec in a.memory:
        label, rest = spec.split("=", 1)
        path, products, target = rest.split(":")
        with open(path) as f:
            r["memory"].append({"label": label, "products": int(products), "peak_mib": json.load(f)["peak_kb"] / 1024,
                                "target": target})
    r["took_s"] = time.time() - started
    write_report(render(r))
    print(render(r))


if __name__ == "__main__":
    main()
