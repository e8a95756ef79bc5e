"""Which code path a backend runs for a layer configuration: `kernel_paths(backend, threads, configs)`.

The backend, not the configuration's size, decides some of where time goes: the same convolution runs
through a different library depending on its batch, kernel and input size. A time model that must find
such a switch from FLOPs and widths needs a conjunction of several splits, which cross-validated pruning
tends to cut; given the path as a categorical column (``kernel_path``), one split separates the two cost
regimes.

torch-cpu, Conv1d/Conv2d (ATen's ``ConvParams::use_mkldnn``, what ``torch._C._select_conv_backend``
  answers, checked against it by the tests; a Conv1d is viewed as a Conv2d of height 1): oneDNN
  ("mkldnn") when
    (strided or batch >= 16 or the kernel is not 1x1 or threads > 1)
    and (groups > 1 or both kernel sides > 3 or batch > 1 or batch * channels * H * W > 20480),
  else ATen's native im2col + GEMM (``Slow2d``). So at batch 1 a convolution whose input has
  at most 20480 elements (a late MobileNet layer at 7x7, a sensor network's Conv1d) runs natively, and
  at one thread so does a non-strided 1x1 conv below batch 16.
  The native path multiplies image by image: weights (out x in*k*k) times a matrix with one column per
  output pixel, and how fast that GEMM runs depends on its column count (session 26, 3x3 convolutions of
  256 channels at batch 1 on this repository's AMD EPYC, torch 2.13's BLAS): one column is a matrix-vector
  product, bound by reading the weights (0.10 ms, 12 GFLOP/s; "native_gemv"); 4 and 9 columns run at 5-8
  GFLOP/s ("native_small", below ``SMALL_GEMM_COLUMNS``), so a 2x2 map takes 0.88 ms and a 3x3 map 1.27 ms
  while a 4x4 map takes 0.42 ms (45 GFLOP/s; "native", 16 columns and more, up to 65 GFLOP/s). A late layer
  of a CNN sits in one of the three; a tree that must find them from sizes and widths, on profile rows
  whose narrow layers cost their fixed overhead whatever the path, did not (held-out 1x1 convolutions of
  ShuffleNet/MNASNet on 1x1 maps priced 2.2-10x over, on 2x2 and 3x3 maps 0.5-0.7x).
  Within oneDNN a depthwise convolution whose output is smaller than its padding (kernel // 2: a 5x5 on a
  1x1 map, a 7x7 on 2x2, a 5x5 of stride 2 on 2x2) is refused by the depthwise kernel and runs through
  oneDNN's im2col + GEMM, group by group ("mkldnn_gemm"; ``ONEDNN_VERBOSE`` names ``gemm:jit`` instead
  of ``jit_dw``, checked by the tests): 10x the time of the 3x3 beside it (576 channels at batch 4 on a 1x1
  map, 1.14 against 0.10 ms; session 24), where EfficientNet-B0 at a small input spends a third of its time.

A fitted tree grows one subtree per path (``ModelTree(partition_by="kernel_path")``): each path's costs
are fitted on its own rows.

Other families and backends have no path column. Measured and not kept: ONNX Runtime's Conv2d NCHWc /
plain path (the rule `graph.fusion` applies to networks) as the column of onnxruntime-cpu's conv2d
model priced its held-out rows better but moved the held-out networks both ways (docs/history.md, session 11).
"""

from __future__ import annotations

from typing import Sequence

from fastdeepiot.families import LayerConfig, conv_out_size

_NATIVE_MAX_ELEMENTS = 20480  # ATen: "for some case, native is faster"
SMALL_GEMM_COLUMNS = 16  # the native path's GEMM is a slow one below this many output columns (measured, session 26)


def torch_conv_path(p: dict, dim: int, threads: int) -> str:
    """"mkldnn", "mkldnn_gemm", "native", "native_small" or "native_gemv": the kernel torch on CPU runs a
    float32 Conv1d/Conv2d with parameters p (ATen's choice is the part before "_")."""
    kh, kw = (p["kernel"], p["kernel"]) if dim == 2 else (1, p["kernel"])
    n, spatial = p["batch"], p["size"] ** dim
    first = p["stride"] > 1 or n >= 16 or kh != 1 or kw != 1 or threads > 1
    second = (p["groups"] > 1 or (kh > 3 and kw > 3) or n > 1
              or n * p["in_channels"] * spatial > _NATIVE_MAX_ELEMENTS)
    out = conv_out_size(p["size"], p["kernel"], p["stride"], p["kernel"] // 2)
    if not (first and second):
        columns = out**dim  # of each image's GEMM: ATen's native path multiplies image by image
        return "native_gemv" if columns == 1 else "native_small" if columns < SMALL_GEMM_COLUMNS else "native"
    depthwise = p["groups"] > 1 and p["groups"] == p["in_channels"] == p["out_channels"]
    return "mkldnn_gemm" if depthwise and out < p["kernel"] // 2 else "mkldnn"


def kernel_path(backend: str, threads: int, config: LayerConfig) -> str | None:
    """The path `backend` runs `config` through, or None where no rule distinguishes paths."""
    fam = config.family
    if backend == "torch-cpu" and fam in ("conv1d", "conv2d"):
        return torch_conv_path(config.params, 1 if fam == "conv1d" else 2, threads)
    return None


def kernel_paths(backend: str, threads: int, configs: Sequence[LayerConfig]) -> list[str] | None:
    """`kernel_path` of each configuration (all of one family), or None where the family has no rule."""
    if not configs or kernel_path(backend, threads, configs[0]) is None:
        return None
    return [kernel_path(backend, threads, c) for c in configs]
