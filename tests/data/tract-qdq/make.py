"""Writes the minimal graphs of tract 0.23.9's quantised-chain fold bug (docs/tract-qdq.md) and
onnxruntime's outputs for them, which the tests in src/model/qdq.rs compare tract against.

    .venv/bin/python tests/data/tract-qdq/make.py      (needs onnx and onnxruntime)

Each graph takes a uint8 tensor [1, 4, 3], dequantizes it (scale 0.05, zero point 128), runs one
operator on the floats and quantizes the result again:
- softmax.onnx: Softmax over axis 1 (4 values per column), quantized with scale 1/255, zero point 0;
- pad.onnx: a Pad whose pads are all zero (it changes nothing), then the same quantization as the input.
The input is fixed (every byte value a column can hold mixes low and high); reference.json has
the input and each graph's output from onnxruntime.
"""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPE = [1, 4, 3]


def graph(name, middle, out_scale, out_zero, extra_inits=()):
    inits = [
        helper.make_tensor("x_scale", TensorProto.FLOAT, [], [0.05]),
        helper.make_tensor("x_zero", TensorProto.UINT8, [], [128]),
        helper.make_tensor("y_scale", TensorProto.FLOAT, [], [out_scale]),
        helper.make_tensor("y_zero", TensorProto.UINT8, [], [out_zero]),
        *extra_inits,
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zero"], ["xf"], name="dequantize"),
        middle,
        helper.make_node("QuantizeLinear", ["yf", "y_scale", "y_zero"], ["y"], name="quantize"),
    ]
    g = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.UINT8, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, SHAPE)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="lookd")
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m


def main():
    softmax = graph("softmax", helper.make_node("Softmax", ["xf"], ["yf"], axis=1, name="softmax"), 1 / 255, 0)
    pads = helper.make_tensor("pads", TensorProto.INT64, [6], [0] * 6)
    pad = graph("pad", helper.make_node("Pad", ["xf", "pads"], ["yf"], name="pad"), 0.05, 128, [pads])
    x = np.array([[[0, 128, 255], [64, 130, 200], [128, 132, 10], [192, 140, 90]]], dtype=np.uint8)
    reference = {"input": x.flatten().tolist(), "shape": SHAPE, "outputs": {}}
    for name, model in [("softmax", softmax), ("pad", pad)]:
        path = os.path.join(HERE, f"{name}.onnx")
        onnx.save(model, path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        reference["outputs"][name] = sess.run(None, {"x": x})[0].flatten().tolist()
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print(json.dumps(reference["outputs"]))


if __name__ == "__main__":
    main()
