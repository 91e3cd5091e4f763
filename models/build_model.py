"""Build a lookd model folder: an ONNX embedding graph, manifest.toml and reference outputs.

Three backbones share one contract (models/README.md), all with untrained (fixed random)
projection heads (models/train.py trains real ones):
  efficientnet-lite0  the real ImageNet backbone
  efficientnet-lite1, efficientnet-lite2
                      the larger ones of the same family (ImageNet weights), at lookd's 224 input:
                      what a bigger backbone would cost in lookd (#29)
  resnet50            torchvision's ResNet50; untrained unless --weights names a state_dict
                      file (nothing is downloaded): the architecture for latency work
  tiny                a few random conv layers on 32x32 input, for lookd's own tests

The graph takes plain RGB pixels (0..255, f32, NCHW) and has the normalisation folded in.
Outputs, all L2-normalised along the last axis, with a leading batch axis N:
  global [N, D]      pooled final feature map, projected
  regions [N, R, D]  each cell of the final feature map, same projection as global
  region_keys [N, R, D]  each cell of an intermediate map (pooled to the final grid), key projection
  key [N, D]         the pooled intermediate map, key projection (the product's attention key)

The reference check feeds a pixel pattern lookd can regenerate (see `reference_pixels`) through
onnxruntime and stores the outputs in reference.json; `lookd model check` compares tract's to them.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def l2n(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-12)


class Heads(nn.Module):
    """Fixed random projections: untrained, but same shapes and spaces as trained heads.
    `mid` arrives already pooled to the final map's grid."""

    def __init__(self, c_final, c_mid, dim, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("wg", torch.randn(c_final, dim, generator=g) / dim**0.5)
        self.register_buffer("wk", torch.randn(c_mid, dim, generator=g) / dim**0.5)

    def forward(self, fmap, mid):
        cells = fmap.flatten(2).transpose(1, 2)  # [N, R, C]
        mid_cells = mid.flatten(2).transpose(1, 2)
        glob = l2n(cells.mean(1) @ self.wg)
        regions = l2n(cells @ self.wg)
        keys = l2n(mid_cells @ self.wk)
        key = l2n(mid_cells.mean(1) @ self.wk)
        return glob, regions, keys, key


class LiteEmbed(nn.Module):
    """The real ImageNet backbone (ctl.LiteBackbone, the one training uses) with untrained heads."""

    def __init__(self, dim, seed, variant="efficientnet-lite0"):
        super().__init__()
        from ctl import LiteBackbone

        self.backbone = LiteBackbone(variant)
        self.heads = Heads(self.backbone.final_channels, self.backbone.mid_channels, dim, seed)

    def forward(self, image):
        return self.heads(*self.backbone(image))


class ResNetEmbed(nn.Module):
    """torchvision's ResNet50 (ctl.ResNetBackbone) with untrained heads. Without a weights file
    the backbone is untrained too: the real architecture and shapes, for latency work only."""

    def __init__(self, dim, seed, weights=None):
        super().__init__()
        from ctl import ResNetBackbone

        self.backbone = ResNetBackbone(weights)
        self.heads = Heads(ResNetBackbone.final_channels, ResNetBackbone.mid_channels, dim, seed)

    def forward(self, image):
        return self.heads(*self.backbone(image))


class TinyEmbed(nn.Module):
    def __init__(self, dim, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(12, 16, 3, stride=2, padding=1)
        self.c4 = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.heads = Heads(24, 16, dim, seed + 1)

    def forward(self, image):
        x = (image - 127.5) / 64.0
        x = F.relu(self.c2(F.relu(self.c1(x))))
        mid = F.relu(self.c3(x))
        # The intermediate map is twice the final grid: pool it onto that grid.
        return self.heads(F.relu(self.c4(mid)), F.avg_pool2d(mid, 2))


SPECS = {
    # name: (module, input side, dim, grid side, pretty backbone name)
    "efficientnet-lite0": (LiteEmbed, 224, 128, 7),
    # Lite1 and Lite2 at lookd's 224 input (their own sizes are 240 and 260), for #29's latency gate.
    "efficientnet-lite1": (lambda dim, seed: LiteEmbed(dim, seed, "efficientnet-lite1"), 224, 128, 7),
    "efficientnet-lite2": (lambda dim, seed: LiteEmbed(dim, seed, "efficientnet-lite2"), 224, 128, 7),
    "resnet50": (ResNetEmbed, 224, 128, 7),
    "tiny": (TinyEmbed, 32, 8, 2),
}
OUTPUTS = ["global", "regions", "region_keys", "key"]


def reference_pixels(side):
    """A deterministic pattern lookd regenerates in Rust (model::reference_pixels)."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(side), np.arange(side), indexing="ij")
    return (((x * 7 + y * 13 + c * 29) % 256).astype(np.float32))[None]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest(args, side, dim, grid, digest):
    trained = "false"
    return f"""# lookd model manifest (contract: models/README.md). Written by models/build_model.py.
format = 1
name = "{args.name}"
backbone = "{args.backbone}"
trained = {trained}
precision = "f32"
attention = "product"
dim = {dim}
regions = {grid * grid}

[input]
name = "image"
width = {side}
height = {side}
pixels = "rgb-0-255"
resize = "stretch"

[scene]
graph = "embed.onnx"
sha256 = "{digest}"
global = "global"
regions = "regions"
keys = "region_keys"

[product]
graph = "embed.onnx"
sha256 = "{digest}"
global = "global"
key = "key"
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", choices=sorted(SPECS), default="efficientnet-lite0")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", help="resnet50 only: a torchvision state_dict file (else untrained)")
    args = ap.parse_args()
    if args.weights and args.backbone != "resnet50":
        ap.error("--weights applies to --backbone resnet50 only")
    untrained_backbone = args.backbone == "resnet50" and not args.weights
    args.name = args.name or f"{args.backbone}-{'untrained' if untrained_backbone else 'untrained-heads'}"
    cls, side, dim, grid = SPECS[args.backbone]
    model = (cls(dim, args.seed, args.weights) if args.backbone == "resnet50" else cls(dim, args.seed)).eval()
    os.makedirs(args.out, exist_ok=True)
    graph = os.path.join(args.out, "embed.onnx")
    x = torch.from_numpy(reference_pixels(side))
    with torch.no_grad():
        expected = [t.numpy() for t in model(x)]
        torch.onnx.export(
            model, x, graph + ".tmp", input_names=["image"], output_names=OUTPUTS, opset_version=13,
            dynamic_axes={"image": {0: "N"}, **{o: {0: "N"} for o in OUTPUTS}},
        )
    os.replace(graph + ".tmp", graph)
    check_and_write_reference(args.out, graph, x.numpy(), expected)
    digest = sha256(graph)
    with open(os.path.join(args.out, "manifest.toml.tmp"), "w") as f:
        f.write(manifest(args, side, dim, grid, digest))
    os.replace(os.path.join(args.out, "manifest.toml.tmp"), os.path.join(args.out, "manifest.toml"))
    print(f"wrote {args.out}: embed.onnx sha256 {digest}, {os.path.getsize(graph)} bytes")


def check_and_write_reference(out, graph, x, expected, outputs=OUTPUTS):
    import onnxruntime as ort

    sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    got = sess.run(outputs, {"image": x})
    for name, e, g in zip(outputs, expected, got):
        err = float(np.abs(e - g).max())
        print(f"  {name} {list(g.shape)} torch vs onnxruntime max abs {err:.2e}")
        if err > 1e-4:
            sys.exit(f"export check failed: {name} differs by {err}")
    ref = {"input": "reference_pixels", "outputs": {n: g[0].tolist() for n, g in zip(outputs, got)}}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main()
