"""Kernel paths (graph.paths): the rules agree with the libraries, and the time model splits on them."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from fastdeepiot.families import LayerConfig, get_family
from fastdeepiot.graph.paths import SMALL_GEMM_COLUMNS, kernel_path, kernel_paths, torch_conv_path
from fastdeepiot.timemodel.model import TimeModel
from fastdeepiot.timemodel.tree import ModelTree, featurize


def _random_conv(rng: random.Random, fam: str, min_size: int = 1) -> LayerConfig:
    f = get_family(fam)
    while True:
        p = {k: rng.choice(v) for k, v in f.space.items()}
        p["batch"] = rng.choice([1, 1, 1, 2, 8, 15, 16, 32])
        p["size"] = rng.choice([s for s in f.space["size"] if min_size <= s <= 64])
        p["in_channels"] = rng.choice([1, 3, 4, 12, 16, 17, 32, 64, 109, 160])
        if rng.random() < 0.3:
            p["groups"] = p["out_channels"] = p["in_channels"]
        elif rng.random() < 0.8:
            p["groups"] = 1
        try:
            return LayerConfig(fam, f.check(p))
        except ValueError:
            continue


@pytest.mark.parametrize("threads", [1, 2])
def test_torch_conv_path_is_what_aten_selects(threads):
    """The rule is ATen's: checked against torch._C._select_conv_backend on a sample of the space."""
    rng = random.Random(threads)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    seen = set()
    try:
        for _ in range(600):
            fam = rng.choice(["conv1d", "conv2d"])
            c = _random_conv(rng, fam)
            p, d = c.params, 1 if fam == "conv1d" else 2
            x = torch.empty(1).expand(p["batch"], p["in_channels"], *([p["size"]] * d))
            w = torch.empty(1).expand(p["out_channels"], p["in_channels"] // p["groups"], *([p["kernel"]] * d))
            got = torch._C._select_conv_backend(x, w, None, [p["stride"]] * d, [p["kernel"] // 2] * d, [1] * d,
                                                False, [0] * d, p["groups"], None)
            got = {"Mkldnn": "mkldnn", "Slow2d": "native"}.get(str(got).split(".")[-1], str(got))
            path = torch_conv_path(p, d, threads)
            # oneDNN inside: below; the native path's GEMM widths are ours (test_native_paths_name_the_gemm_width)
            assert path.split("_")[0] == got, (c.key, threads)
            seen.add(got)
    finally:
        torch.set_num_threads(old)
    assert seen == {"mkldnn", "native"}


_ONEDNN_CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
for line in sys.stdin:
    p = json.loads(line)
    cls = torch.nn.Conv2d if p["dim"] == 2 else torch.nn.Conv1d
    m = cls(p["c"], p["c"], p["kernel"], stride=p["stride"], padding=p["kernel"] // 2, groups=p["c"]).eval()
    print("CFG", p["i"], flush=True)
    with torch.inference_mode():
        m(torch.randn(p["batch"], p["c"], *([p["size"]] * p["dim"])))
"""


def test_depthwise_gemm_fallback_is_what_onednn_runs():
    """"mkldnn_gemm" is where oneDNN's depthwise kernel refuses a convolution and its im2col + GEMM runs it:
    checked against the implementation ONEDNN_VERBOSE names, over kernels 3/5/7, strides 1/2, maps 1-6."""
    import json
    import os
    import subprocess
    import sys
    cases = [dict(i=i, dim=dim, c=32, kernel=k, stride=s, size=size, batch=b)
             for i, (dim, k, s, size, b) in enumerate(
                 (dim, k, s, size, b) for dim in (2, 1) for k in (3, 5, 7) for s in (1, 2)
                 for size in range(1, 7) for b in (1, 4))]
    out = subprocess.run([sys.executable, "-c", _ONEDNN_CHILD], input="".join(json.dumps(c) + "\n" for c in cases),
                         capture_output=True, text=True, env=dict(os.environ, ONEDNN_VERBOSE="1"), timeout=120)
    impl, cur = {}, None
    for line in out.stdout.splitlines():
        if line.startswith("CFG "):
            cur = int(line.split()[1])
        elif cur is not None and ",exec," in line and ",convolution," in line:
            impl[cur] = line.split(",convolution,")[1].split(",")[0]
    if not impl:
        pytest.skip("this torch build's oneDNN prints no verbose lines")
    assert len(impl) == len(cases), out.stderr[-2000:]
    kinds = set()
    for c in cases:
        p = dict(c, groups=c["c"], in_channels=c["c"], out_channels=c["c"])
        path = torch_conv_path(p, c["dim"], 1)
        assert path in ("mkldnn", "mkldnn_gemm"), (c, path)  # depthwise runs in oneDNN at any size
        kind = "mkldnn_gemm" if "gemm" in impl[c["i"]] else "mkldnn"
        assert path == kind, (c, impl[c["i"]])
        kinds.add(kind)
    assert kinds == {"mkldnn", "mkldnn_gemm"}


def test_kernel_path_per_backend():
    conv = LayerConfig("conv2d", {"batch": 1, "in_channels": 32, "out_channels": 64, "kernel": 3, "stride": 1,
                                  "groups": 1, "size": 7})
    assert kernel_path("torch-cpu", 1, conv) == "native"  # 32 * 7 * 7 = 1568 elements at batch 1
    assert kernel_path("torch-cpu", 2, conv) == "native"  # threads only matter for 1x1 convs
    big = LayerConfig("conv2d", {**conv.params, "size": 28})
    assert kernel_path("torch-cpu", 1, big) == "mkldnn"
    pointwise = LayerConfig("conv2d", {**big.params, "kernel": 1, "batch": 8})
    assert kernel_path("torch-cpu", 1, pointwise) == "native"  # ATen: THNN is faster single-threaded
    assert kernel_path("torch-cpu", 2, pointwise) == "mkldnn"
    conv1 = LayerConfig("conv1d", {**conv.params, "size": 25})
    assert kernel_path("torch-cpu", 1, conv1) == "native"  # a sensor network's Conv1d at batch 1
    assert kernel_path("onnxruntime-cpu", 1, conv) is None  # no path column on other backends
    assert kernel_path("fake", 1, conv) is None
    lin = LayerConfig("linear", {"batch": 1, "in_features": 8, "out_features": 8})
    assert kernel_paths("torch-cpu", 1, [lin]) is None
    assert kernel_paths("torch-cpu", 1, [conv, big]) == ["native", "mkldnn"]


def test_native_paths_name_the_gemm_width():
    """ATen's native path multiplies image by image, a GEMM with one column per output pixel: one column is a
    matrix-vector product, fewer than SMALL_GEMM_COLUMNS a slow GEMM (session 26: 5-8 GFLOP/s against 45-65)."""
    base = {"batch": 1, "in_channels": 256, "out_channels": 256, "kernel": 3, "stride": 1, "groups": 1}
    paths = {s: kernel_path("torch-cpu", 1, LayerConfig("conv2d", {**base, "size": s})) for s in (1, 2, 3, 4, 8)}
    assert paths == {1: "native_gemv", 2: "native_small", 3: "native_small", 4: "native", 8: "native"}
    assert SMALL_GEMM_COLUMNS == 16
    # the output's size decides, not the input's: a stride-2 conv of a 2x2 map has one column
    assert kernel_path("torch-cpu", 1, LayerConfig("conv2d", {**base, "size": 2, "stride": 2})) == "native_gemv"
    # a batched 1x1 conv runs natively image by image too
    pw = LayerConfig("conv2d", {**base, "kernel": 1, "batch": 4, "size": 2})
    assert kernel_path("torch-cpu", 1, pw) == "native_small"
    # a Conv1d's columns are its output length
    seq = LayerConfig("conv1d", {**base, "in_channels": 16, "out_channels": 32, "size": 8})
    assert kernel_path("torch-cpu", 1, seq) == "native_small"
    assert kernel_path("torch-cpu", 1, LayerConfig("conv1d", {**seq.params, "size": 32})) == "native"


def test_a_model_fitted_before_the_gemm_widths_prices_them_as_native():
    """A time model saved before the native path was named by its GEMM's width knows "native" only: a
    configuration now on "native_small" or "native_gemv" is priced by its "native" branch, not sent down the
    unseen-level branch (oneDNN's)."""
    cs, paths, y = _regimes()
    old_paths = [p.split("_")[0] if p.startswith("native") else p for p in paths]
    tree = ModelTree(max_depth=1, partition_by=None).fit(featurize(cs, paths=old_paths), y)
    tm = TimeModel({"conv2d": tree}, device={"backend": "torch-cpu", "threads": 1})
    small = LayerConfig("conv2d", {"batch": 1, "in_channels": 64, "out_channels": 64, "kernel": 3, "stride": 1,
                                   "groups": 1, "size": 2})
    assert kernel_path("torch-cpu", 1, small) == "native_small" and tm.kernel_paths([small]) == ["native"]
    fl = featurize([small])["flops"].to_numpy()[0]
    assert tm.predict_configs([small])[0] == pytest.approx(0.01 + fl * 3e-9, rel=0.02)
    # a model that knows the width paths keeps them
    new = TimeModel({"conv2d": ModelTree(max_depth=2).fit(featurize(cs, paths=paths), y)},
                    device={"backend": "torch-cpu", "threads": 1})
    assert new.kernel_paths([small]) == (["native_small"] if "native_small" in paths else ["native"])


def _regimes(n=400, seed=0):
    """3x3 Conv2d configurations at batch 1-2 timed as if the native path cost 3x oneDNN's per FLOP."""
    rng = random.Random(seed)
    cs = []
    while len(cs) < n:
        c = _random_conv(rng, "conv2d", min_size=4)
        # 3x3 only: the path is then batch 1 with a small input (native) against the rest, a conjunction no
        # single split on the parameters makes (with 1x1 convs in the sample a split on the kernel could)
        if c.params["batch"] <= 2 and c.params["groups"] == 1 and c.params["kernel"] == 3:
            cs.append(c)
    paths = kernel_paths("torch-cpu", 1, cs)
    f = featurize(cs)["flops"].to_numpy()
    y = np.array([0.01 + fl * (3e-9 if p.startswith("native") else 1e-9) for fl, p in zip(f, paths)])
    return cs, paths, y


def test_tree_separates_paths_by_one_split():
    cs, paths, y = _regimes()
    assert 50 < sum(p.startswith("native") for p in paths) < 350
    tr = slice(0, 300)
    te = slice(300, None)
    with_paths = ModelTree(max_depth=1).fit(featurize(cs[tr], paths=paths[tr]), y[tr])
    without = ModelTree(max_depth=1).fit(featurize(cs[tr]), y[tr])
    err_with = np.median(np.abs(with_paths.predict(featurize(cs[te], paths=paths[te])) / y[te] - 1))
    err_without = np.median(np.abs(without.predict(featurize(cs[te])) / y[te] - 1))
    assert err_with < 0.02 < err_without
    assert with_paths.nodes_[0]["feature"] == "kernel_path"


def test_time_model_prices_each_path():
    """TimeModel featurizes with its backend's paths when predicting, so a fitted split routes a layer."""
    cs, paths, y = _regimes()
    tree = ModelTree(max_depth=1).fit(featurize(cs, paths=paths), y)
    tm = TimeModel({"conv2d": tree}, device={"backend": "torch-cpu", "threads": 1})
    native = LayerConfig("conv2d", {"batch": 1, "in_channels": 16, "out_channels": 16, "kernel": 3, "stride": 1,
                                    "groups": 1, "size": 16})  # 4096 elements: native
    mkl = LayerConfig("conv2d", {**native.params, "batch": 2})
    fl = featurize([native, mkl])["flops"].to_numpy()
    got = tm.predict_configs([native, mkl])
    np.testing.assert_allclose(got, [0.01 + fl[0] * 3e-9, 0.01 + fl[1] * 1e-9], rtol=0.02)
    # a model fitted without the column (an earlier file) still predicts: the extra column is ignored
    old = TimeModel({"conv2d": ModelTree(max_depth=1).fit(featurize(cs), y)},
                    device={"backend": "torch-cpu", "threads": 1})
    assert np.all(old.predict_configs([native, mkl]) > 0)
