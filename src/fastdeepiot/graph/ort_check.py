"""Check `fusion_for_backend(..., 'onnxruntime-cpu')` against what onnxruntime actually does.

Exports a network with torch.onnx.export(dynamo=False), lets ORT optimise it
(SessionOptions.optimized_model_filepath), and counts the element-wise ops that survive as separate
nodes -- activations, adds, batch norms -- against the calls our rules leave unfused.

    python -m fastdeepiot.graph.ort_check            # zoo + 20 random networks
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections import Counter

import torch

from fastdeepiot.graph.extract import extract_layers
from fastdeepiot.graph.fusion import fusion_for_backend
from fastdeepiot.graph.randomnets import random_network
from fastdeepiot.zoo import zoo_networks

_ACT_OPS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Gelu", "QuickGelu"}  # QuickGelu: SiLU


def ort_optimized_nodes(module, example, level: str = "all") -> list:
    import onnx
    import onnxruntime as ort

    lv = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src, dst = os.path.join(d, "m.onnx"), os.path.join(d, "opt.onnx")
        torch.onnx.export(module.eval(), (example,), src, dynamo=False, opset_version=17)
        so = ort.SessionOptions()
        so.graph_optimization_level = lv
        so.optimized_model_filepath = dst
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        return list(onnx.load(dst).graph.node)


def ort_counts(nodes) -> Counter:
    c = Counter()
    for n in nodes:
        if n.op_type in _ACT_OPS and n.op_type != "HardSigmoid":  # HardSwish = HardSigmoid + Mul
            c["activation"] += 1
        elif n.op_type == "Mul" and any(m.op_type == "HardSigmoid" and m.output[0] in n.input for m in nodes):
            c["activation"] += 1
        elif n.op_type == "Add" and not any(m.op_type in ("Erf",) for m in nodes if m.output[0] in n.input):
            c["add"] += 1
        elif n.op_type == "BatchNormalization" or (
                n.op_type == "Conv" and len(n.input) > 1 and "bn_scale" in n.input[1]):
            c["batchnorm"] += 1
    return c


def predicted_counts(module, example, level: str = "all") -> Counter:
    calls = fusion_for_backend(extract_layers(module, example), "onnxruntime-cpu", level=level)
    return Counter(c.family for c in calls if c.kind == "layer" and c.fused_into is None
                   and c.family in ("activation", "add", "batchnorm"))


def check(module, example, level: str = "all") -> tuple[Counter, Counter]:
    return predicted_counts(module, example, level), ort_counts(ort_optimized_nodes(module, example, level))


def main() -> int:

    nets = [(n, m, x) for n, m, x in zoo_networks()]
    for seed in range(10):
        for kind in ("image", "sensor"):
            m, x, _ = random_network(seed, kind)
            nets.append((f"random_{kind}_{seed}", m, x))
    bad = 0
    for level in ("all", "extended"):
        for name, m, x in nets:
            pred, got = check(m, x, level)
            ok = all(pred[k] == got[k] for k in ("activation", "add", "batchnorm"))
            bad += not ok
            print(f"{level:8s} {name:22s} {'ok ' if ok else 'MISMATCH'} predicted {dict(pred)} ort {dict(got)}")
    print(f"{bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
