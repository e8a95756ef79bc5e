"""Turn a PyTorch module into the list of layer calls the time model prices.

`extract_layers(module, example_inputs)` returns an `ExtractResult`: a `list[LayerCall]` in execution
order, with two extra attributes,

  * `traced` -- True when torch.fx symbolic tracing succeeded, so every module call AND every
    functional / method op (residual `a + b`, `torch.cat`, `F.relu`, `x.flatten(1)`, ...) is listed;
    False when tracing failed (data-dependent control flow, ...): the ops one forward on the example
    input runs are then recorded instead (`graph.record`: the same calls, on that input's path), and where
    that fails too, forward hooks on leaf modules list those alone (functional ops invisible); `warnings`
    says which.
  * `warnings` -- human-readable notes (fallback, approximated configurations, unmodelled ops).

Every call is one of three kinds:

  * 'layer'      -- priced by a family (`family`, `config` set),
  * 'free'       -- costs ~nothing for the time model: view / reshape / flatten / permute / transpose /
                    slicing / getitem of a tuple (an RNN output), dropout and identity in eval mode,
                    `contiguous` (a copy, small; noted in `note`),
  * 'unmodelled' -- an op no family covers (Conv3d, cumsum, ...; a custom module fx cannot trace
                    into). Never dropped silently: the caller decides (error / warn / ignore).

Custom modules (not torch.nn's) are traced into, so the ops their forward runs on their own parameters
(a layer scale `x * self.gamma`, a class token and a position embedding `torch.cat([self.cls, x], 1) +
self.pos`, the root module's own parameters included) are priced like any other op, the parameters read
through get_attr nodes; one that fx cannot trace into stays one unmodelled call (`graph.trace`).

Mapping to the family space (`approx=True` when the mapping is not exact):
  * Conv1d/2d -> conv1d/conv2d. The family pads kernel//2; a different padding, dilation != 1,
    a non-zeros padding mode, a non-square kernel/stride/input make the call approximate. Non-square
    kernels / inputs use round(sqrt(h*w)).
  * ConvTranspose1d/2d (groups 1) -> conv_transpose1d/2d, whose output is stride x its input; another padding or
    output padding, dilation != 1, or a kernel the family lacks at that stride (even at stride 1, smaller
    than the stride) make the call approximate; grouped ones stay unmodelled.
  * Linear -> linear, batch = product of all leading dims.
  * GRU/LSTM -> gru/lstm (batch_first honoured, unbatched input -> batch 1). Bidirectional RNNs are
    split into 2 * num_layers single-layer calls (`name`, `name#rev`, `name#l1`, `name#l1#rev`...),
    layer l > 0 reading 2 * hidden features, which is what the RNN computes.
  * BatchNorm1d/2d -> batchnorm (dims from the input rank; (N, C) -> dims=1, size=1).
  * Max/AvgPool1d/2d -> pool1d/pool2d; AdaptiveAvg/MaxPool(k), `x.mean((2, 3))` (sum: approx; amax /
    amin: max), the mean over time `x.mean(1)` of a (batch, time, features) tensor and `.mean((1, 2))` of
    a channels-last (batch, h, w, channels) one -> pool with
    kernel = stride = size // k (approx: the family's kernel space is [2, 3]; the model extrapolates);
    an adaptive pool whose output does not divide its input -> adaptive_pool.
  * ReLU/ReLU6/LeakyReLU/Hardswish/Sigmoid/Tanh/GELU/SiLU/Hardsigmoid modules, F.* and torch.*
    equivalents -> activation.
  * `a + b` / torch.add / Tensor.add of two same-shaped tensors -> add (what ORT fuses into a conv).
  * torch.cat of n tensors along dim 1 -> one concat call, priced as the two-input concat of the same
    bytes (the first n-1 inputs' channels, then the last input's; approx where n > 2).
  * Every other element-wise +, -, *, / (and their torch. / Tensor forms) -> mul, by the shapes it reads:
    mode same (two same-shaped tensors), channel (a (B, C, 1, ..) operand; other broadcasts are priced
    as channel on the output's shape, approx) or scalar (a number, also one traced from shapes such as
    `x.size(-1) ** -0.5`, or a one-element tensor). A subtraction, an addition that is not two
    same-shaped tensors and a division by a tensor are priced as the multiply of the same shapes
    (approx); a division with rounding stays unmodelled.
  * Softmax / LogSoftmax (modules, F., torch. and Tensor forms) -> softmax over the last dimension of
    (batch, rows, features) (another dimension: approx); `@` / torch.matmul / bmm of two batched
    tensors -> matmul (batch = the broadcast leading dimensions), by a 2-D tensor -> linear (the
    GEMM nn.Linear runs); a matmul with a vector stays unmodelled.
  * LayerNorm / F.layer_norm -> layernorm (rows = the leading dims), GroupNorm / F.group_norm and
    InstanceNorm1d/2d (a group per channel; with running statistics: unmodelled) -> groupnorm,
    Upsample / F.interpolate / F.upsample -> upsample (downsampling, bicubic / area /
    trilinear stay unmodelled), F.scaled_dot_product_attention -> attention, nn.MultiheadAttention ->
    mha and nn.TransformerEncoderLayer -> transformer_encoder (whole modules, also leaves of the hook
    fallback); nn.TransformerEncoder -> one transformer_encoder call per layer (`name.layers.i`) and a
    layernorm for its final norm (`name.norm`).
  * F.linear / F.conv1d / F.conv2d with a weight of known shape (a parameter read through get_attr) ->
    linear / conv1d / conv2d, as the module of that weight; torch.stack along dim 1 -> concat of the
    same tensors (the same bytes in the same order); torch.max / min over a dimension -> as amax / amin
    (approx); a two-operand torch.einsum that is a matrix product -> matmul (linear without a batch index;
    approx).
  * A clamp to numbers (Hardtanh, F.hardtanh, torch.clamp / clip, .clamp_min) -> activation relu6
    (exact for hardtanh(0, 6), approx otherwise: one compare-and-select pass, ONNX's Clip).
  * Element-wise ops of one tensor that no family times but whose time matches a profiled activation
    kind on both CPU backends (bench/standins.py): abs, neg, square, x ** 2, reciprocal -> relu; exp ->
    silu; sqrt -> sigmoid; rsqrt -> hardswish; erf, log -> gelu (approx, never fused). The rest
    (LogSigmoid, Hardshrink, sin, other powers, ...) stay unmodelled. ELU, SELU, Softplus, Mish and PReLU
    (modules, F. and torch. forms) are activation kinds of their own.
  * Pads, pixel (un)shuffle, channel shuffle and embedding lookups are free ops that copy (`note`
    'copies'), as `.contiguous()` is.
  * Arguments not known at trace time (computed by the network) make that one op of these mappings
    unmodelled rather than sending the whole network to the hook fallback.
  Element-wise families (batchnorm, activation, add, concat) read batch = shape[0], channels =
  shape[1], and dims/size from the rest (rank 2 -> dims 1, size 1; rank 3 -> dims 1, size = L;
  rank 4 -> dims 2, size = h (or round(sqrt(h*w)), approx)). What matters for their cost is the
  element count, which these keep exact for square inputs.

  ELU (and F.elu) is an activation whose kind is outside the activation family's space: unmodelled
  (the vocabulary names it; channel tracing passes it).
  Which rule prices an op is the op vocabulary's (`fastdeepiot.graph.ops`); tracing and shape
  propagation are `fastdeepiot.graph.trace`'s; the data classes live in `fastdeepiot.graph.calls`.

Cache. Extraction reads only the module's structure and the inputs' shapes, so its result is cached
per `graph.fingerprint` (every submodule's name, class, mode, attributes and parameter/buffer shapes,
plus the input shapes; weight values are not part of it): pricing the same network again skips the
trace and the forward, and a network pruned in place has another fingerprint. Each call returns its
own copy of the calls. Modules the fingerprint cannot vouch for (forward hooks, unusual attributes)
and hook-fallback extractions are not cached; `cache=False` bypasses it, `clear_cache()` empties it.

`fused_into` is left None here; `fusion_for_backend(calls, backend)` (module `fastdeepiot.graph.fusion`)
returns a copy annotated with the producer each op is fused into by that backend.
"""

from __future__ import annotations

import math
import warnings as _warnings
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastdeepiot.errors import UserError
from fastdeepiot.families import ACTIVATIONS, LayerConfig, conv_transpose_padding
from fastdeepiot.graph import ops
from fastdeepiot.graph.calls import FREE, INPUT, LAYER, NO_BIAS, UNMODELLED, ExtractResult, LayerCall
from fastdeepiot.graph.fingerprint import fingerprint
from fastdeepiot.graph.record import record
from fastdeepiot.graph.trace import arg as _arg
from fastdeepiot.graph.trace import is_leaf, meta_shape, target_name, tensor_arg_nodes, tensor_shape, trace

__all__ = ["extract_layers", "count_container_calls", "clear_cache"]

# ------------------------------------------------------------------------------------ helpers


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1] if len(v) > 1 else v[0]))
    return (int(v), int(v))


def _sq(a: int, b: int) -> tuple[int, bool]:
    """Size of a square with the same area; approx flag when a != b."""
    if a == b:
        return int(a), False
    return max(1, int(round(math.sqrt(a * b)))), True


def _ew_params(shape: tuple[int, ...]) -> tuple[dict, bool] | None:
    """batch/channels/dims/size of an element-wise op on `shape`; None for unsupported ranks."""
    r = len(shape)
    if r == 0:  # a number held in a tensor (a learnt temperature, a mean): one element
        return {"batch": 1, "channels": 1, "dims": 1, "size": 1}, True
    if r == 2:
        return {"batch": shape[0], "channels": shape[1], "dims": 1, "size": 1}, False
    if r == 3:
        return {"batch": shape[0], "channels": shape[1], "dims": 1, "size": shape[2]}, False
    if r == 4:
        s, ap = _sq(shape[2], shape[3])
        return {"batch": shape[0], "channels": shape[1], "dims": 2, "size": s}, ap
    if r == 1:
        return {"batch": 1, "channels": shape[0], "dims": 1, "size": 1}, True
    return None


class _Mapped:
    """What one op maps to: a list of (suffix, family, params, approx, note, input_shapes, out_shape)."""

    def __init__(self, kind: str, op: str, family: str | None = None, params: dict | None = None,
                 approx: bool = False, note: str | None = None):
        self.kind, self.op, self.family, self.params = kind, op, family, params
        self.approx, self.note = approx, note
        self.parts: list[dict] | None = None  # several calls for one op (bidirectional RNN, encoder stack)
        self.scalar: float | None = None  # an element-wise op's number operand, where written in the code


def _unmodelled(op: str, note: str) -> _Mapped:
    return _Mapped(UNMODELLED, op, note=note)


def _map_conv(m, shape: tuple[int, ...], dim: int | None = None, op: str | None = None) -> _Mapped:
    """A convolution from its attributes (an nn.Conv1d/2d, or `_ConvArgs` for F.conv1d/2d)."""
    dim = dim or (2 if isinstance(m, nn.Conv2d) else 1)
    op = op or type(m).__name__
    notes, approx = [], False
    if len(shape) == dim + 1:  # unbatched
        shape = (1,) + tuple(shape)
    if len(shape) != dim + 2:
        return _unmodelled(op, f"input rank {len(shape)}")
    if dim == 2:
        kh, kw = _pair(m.kernel_size)
        sh, sw = _pair(m.stride)
        k, a1 = _sq(kh, kw)
        s, a2 = _sq(sh, sw)
        size, a3 = _sq(shape[2], shape[3])
        dil = _pair(m.dilation)
        pad = m.padding if isinstance(m.padding, str) else _pair(m.padding)
        expect_pad = (kh // 2, kw // 2)
        if a1 or a2 or a3:
            approx = True
            notes.append("non-square kernel/stride/input")
    else:
        k, s, size = int(_pair(m.kernel_size)[0]), int(_pair(m.stride)[0]), int(shape[2])
        dil = (int(_pair(m.dilation)[0]),)
        pad = m.padding if isinstance(m.padding, str) else (int(_pair(m.padding)[0]),)
        expect_pad = (k // 2,)
    if isinstance(pad, str):
        if not (pad == "same" and all(x % 2 == 1 for x in _pair(m.kernel_size)[:dim])):
            approx = True
            notes.append(f"padding={pad!r}")
    elif tuple(pad) != expect_pad:
        approx = True
        notes.append(f"padding={tuple(pad)} (family uses kernel//2)")
    if any(d != 1 for d in dil):
        approx = True
        notes.append(f"dilation={tuple(dil)}")
    if m.padding_mode != "zeros":
        approx = True
        notes.append(f"padding_mode={m.padding_mode}")
    params = {"batch": int(shape[0]), "in_channels": m.in_channels, "out_channels": m.out_channels,
              "kernel": k, "stride": s, "groups": m.groups, "size": size}
    return _Mapped(LAYER, op, f"conv{dim}d", params, approx, "; ".join(notes) or None)


def _map_conv_transpose(m, shape: tuple[int, ...]) -> _Mapped:
    """nn.ConvTranspose1d/2d: the conv_transpose1d/2d family (groups 1); the family's padding makes the output
    stride x the input, any other padding, output padding or dilation is priced as that configuration (approx)."""
    op = type(m).__name__
    dim = 2 if isinstance(m, nn.ConvTranspose2d) else 1
    if len(shape) == dim + 1:  # unbatched
        shape = (1,) + tuple(shape)
    if len(shape) != dim + 2:
        return _unmodelled(op, f"input rank {len(shape)}")
    if m.groups != 1:
        return _unmodelled(op, f"groups={m.groups} (the conv_transpose{dim}d family has groups 1)")
    notes = []
    if dim == 2:
        (kh, kw), (sh, sw) = _pair(m.kernel_size), _pair(m.stride)
        k, a1 = _sq(kh, kw)
        s, a2 = _sq(sh, sw)
        size, a3 = _sq(shape[2], shape[3])
        if a1 or a2 or a3:
            notes.append("non-square kernel/stride/input")
    else:
        k, s, size = int(m.kernel_size[0]), int(m.stride[0]), int(shape[2])
        kh, sh = k, s
    if k < s or (s == 1 and k % 2 == 0):  # no family configuration: the nearest kernel that has one
        k = s if s > 1 else k + 1
        notes.append(f"kernel {kh} at stride {sh} as kernel {k}")
    pad, out_pad = conv_transpose_padding(k, s)
    if tuple(m.padding) != (pad,) * dim or tuple(m.output_padding) != (out_pad,) * dim:
        notes.append(f"padding={tuple(m.padding)}, output_padding={tuple(m.output_padding)} "
                     f"(the family's output is stride x the input)")
    if any(d != 1 for d in m.dilation):
        notes.append(f"dilation={tuple(m.dilation)}")
    params = {"batch": int(shape[0]), "in_channels": m.in_channels, "out_channels": m.out_channels,
              "kernel": k, "stride": s, "size": size}
    return _Mapped(LAYER, op, f"conv_transpose{dim}d", params, bool(notes), "; ".join(notes) or None)


def _map_linear(m: nn.Linear, shape, op: str = "Linear", bias: bool | None = None) -> _Mapped:
    batch = int(math.prod(shape[:-1])) if len(shape) > 1 else 1
    bias = getattr(m, "bias", None) is not None if bias is None else bias
    return _Mapped(LAYER, op, "linear", {"batch": batch, "in_features": m.in_features, "out_features": m.out_features},
                   note=None if bias else NO_BIAS)


class _ConvArgs:
    """The attributes `_map_conv` / `_map_linear` read, from a functional call's weight shape and arguments."""

    def __init__(self, weight_shape, stride=1, padding=0, dilation=1, groups=1):
        self.out_channels, cin_per_group = int(weight_shape[0]), int(weight_shape[1])
        self.kernel_size = tuple(int(k) for k in weight_shape[2:])
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, int(groups)
        self.in_channels, self.padding_mode = cin_per_group * self.groups, "zeros"
        self.in_features, self.out_features = cin_per_group, self.out_channels


def _map_rnn(m: nn.RNNBase, shape) -> _Mapped:
    op = type(m).__name__
    fam = "gru" if isinstance(m, nn.GRU) else "lstm"
    if getattr(m, "proj_size", 0):
        return _unmodelled(op, "LSTM with proj_size")
    if len(shape) == 2:
        batch, seq = 1, shape[0]
    elif m.batch_first:
        batch, seq = shape[0], shape[1]
    else:
        seq, batch = shape[0], shape[1]
    base = {"batch": int(batch), "input_size": m.input_size, "hidden_size": m.hidden_size,
            "seq_len": int(seq)}
    if not m.bidirectional:
        return _Mapped(LAYER, op, fam, {**base, "num_layers": m.num_layers})
    mp = _Mapped(LAYER, op, fam, None, note="bidirectional: split into single-layer calls")
    mp.parts = []
    for layer in range(m.num_layers):
        isz = m.input_size if layer == 0 else 2 * m.hidden_size
        for rev in (False, True):
            suffix = ("" if layer == 0 else f"#l{layer}") + ("#rev" if rev else "")
            mp.parts.append({"suffix": suffix, "layer": layer,
                             "params": {**base, "input_size": isz, "num_layers": 1}})
    return mp


def _map_bn(m: nn.Module, shape) -> _Mapped:
    ew = _ew_params(tuple(shape))
    if ew is None:
        return _unmodelled(type(m).__name__, f"input rank {len(shape)}")
    p, ap = ew
    return _Mapped(LAYER, type(m).__name__, "batchnorm", p, ap)


def _map_pool(mode: str, dim: int, kernel, stride, padding, ceil_mode, shape, op: str) -> _Mapped:
    if len(shape) == dim + 1:
        shape = (1,) + tuple(shape)
    if len(shape) != dim + 2:
        return _unmodelled(op, f"input rank {len(shape)}")
    notes, approx = [], False
    if dim == 2:
        k, a1 = _sq(*_pair(kernel))
        s, a2 = _sq(*_pair(stride if stride is not None and stride != [] else kernel))
        size, a3 = _sq(shape[2], shape[3])
        approx = a1 or a2 or a3
        pad = _pair(padding)
    else:
        k = int(kernel[0] if isinstance(kernel, (tuple, list)) else kernel)
        st = stride if stride is not None and stride != [] else kernel
        s = int(st[0] if isinstance(st, (tuple, list)) else st)
        size = int(shape[2])
        pad = (int(padding[0] if isinstance(padding, (tuple, list)) else padding),)
    if any(pad):
        approx = True
        notes.append(f"padding={pad}")
    if ceil_mode:
        approx = True
        notes.append("ceil_mode")
    if k not in (2, 3) or s not in (1, 2, 3):
        approx = True
        notes.append("kernel/stride outside the family space")
    params = {"batch": int(shape[0]), "mode": mode, "channels": int(shape[1]), "kernel": k,
              "stride": s, "size": size}
    return _Mapped(LAYER, op, f"pool{dim}d", params, approx, "; ".join(notes) or None)


def _map_adaptive(mode: str, dim: int, output_size, shape, op: str) -> _Mapped:
    if len(shape) == dim + 1:
        shape = (1,) + tuple(shape)
    if len(shape) != dim + 2:
        return _unmodelled(op, f"input rank {len(shape)}")
    outs = _pair(output_size) if dim == 2 else (
        (int(output_size[0]) if isinstance(output_size, (tuple, list)) else int(output_size)),)
    spatial = tuple(int(x) for x in shape[2:])
    if any(o is None for o in outs) or any(sz % o for sz, o in zip(spatial, outs)):
        return _map_adaptive_any(mode, dim, outs, shape, op)
    ks = [sz // o for sz, o in zip(spatial, outs)]
    k = ks[0] if dim == 1 else _sq(ks[0], ks[1])[0]
    size = spatial[0] if dim == 1 else _sq(*spatial)[0]
    params = {"batch": int(shape[0]), "mode": mode, "channels": int(shape[1]), "kernel": k,
              "stride": k, "size": size}
    return _Mapped(LAYER, op, f"pool{dim}d", params, True,
                   "adaptive pool as kernel = stride = size // output (outside the family space)")


def _map_ew(family: str, op: str, shape, extra: dict | None = None) -> _Mapped:
    ew = _ew_params(tuple(shape))
    if ew is None:
        return _unmodelled(op, f"input rank {len(shape)}")
    p, ap = ew
    return _Mapped(LAYER, op, family, {**(extra or {}), **p}, ap)


def _map_clamp(lo, hi, op: str, shape) -> _Mapped:
    """A clamp of one tensor to numbers (hardtanh, torch.clamp / clip, .clamp_min): one pass that compares and
    selects, as ReLU6 does (it is hardtanh(0, 6)); exact for hardtanh(0, 6), approx otherwise. ONNX exports
    every one as Clip, which ORT fuses as it fuses ReLU6."""
    if lo is None and hi is None:
        return _unmodelled(op, "a clamp without bounds")
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in (lo, hi)):
        return _unmodelled(op, "a clamp to bounds that are not numbers (tensors, bools, values computed when "
                               "the network runs)")
    mp = _map_ew("activation", op, shape, {"kind": "relu6"})
    if mp.kind == LAYER and not (op in ("hardtanh", "hardtanh_", "Hardtanh") and (lo, hi) == (0.0, 6.0)):
        mp.approx = True
        mp.note = f"{op} to [{lo}, {hi}] priced as ReLU6 (one clamp pass)"
    return mp


def _map_standin(kind: str, op: str, shape) -> _Mapped:
    """An element-wise op of one tensor that no family times, priced as the activation `kind` of its cost
    class on the same shape (approx; `graph.fusion` fuses none of them)."""
    mp = _map_activation(kind, op, shape)
    if mp.kind == LAYER:
        mp.approx = True
        mp.note = f"{op}: no family times it; priced as a {kind} pass over the same elements"
    return mp


def _map_activation(kind: str, op: str, shape) -> _Mapped:
    if kind not in ACTIVATIONS:
        return _unmodelled(op, f"activation {kind!r} is outside the activation family's space "
                               f"({', '.join(ACTIVATIONS)}): no family times it")
    return _map_ew("activation", op, shape, {"kind": kind})


_INTERP_MODES = {"nearest": "nearest", "nearest-exact": "nearest", "linear": "linear", "bilinear": "linear"}


def _map_adaptive_any(mode: str, dim: int, outs, shape, op: str) -> _Mapped:
    """An adaptive pool whose output does not divide its input (or has None entries): adaptive_pool."""
    spatial = tuple(int(x) for x in shape[2:])
    outs = tuple(sz if o is None else int(o) for sz, o in zip(spatial, outs))
    if dim == 1:
        size, out, approx = spatial[0], outs[0], False
    else:
        size, a1 = _sq(*spatial)
        out, a2 = _sq(*outs)
        approx = a1 or a2
    params = {"batch": int(shape[0]), "mode": mode, "channels": int(shape[1]), "dims": dim, "size": size,
              "out_size": out}
    return _Mapped(LAYER, op, "adaptive_pool", params, approx,
                   "non-square input/output as squares of the same area" if approx else None)


def _map_layernorm(shape, normalized_shape, op: str) -> _Mapped:
    ns = (int(normalized_shape),) if isinstance(normalized_shape, int) else tuple(int(v) for v in normalized_shape)
    r, k = len(shape), len(ns)
    if r < k or tuple(shape[r - k:]) != ns:
        return _unmodelled(op, f"normalized_shape {ns} does not end input shape {tuple(shape)}")
    lead = tuple(shape[:r - k])
    params = {"batch": int(lead[0]) if lead else 1, "seq_len": int(math.prod(lead[1:])),
              "features": int(math.prod(ns))}
    return _Mapped(LAYER, op, "layernorm", params, k > 1,
                   f"LayerNorm over {k} trailing dimensions as one of {params['features']}" if k > 1 else None)


def _map_groupnorm(shape, groups: int, op: str) -> _Mapped:
    mp = _map_ew("groupnorm", op, shape, {"groups": int(groups)})
    if mp.kind == LAYER and int(groups) not in (1, 2, 4, 8, 16, 32):
        mp.approx, mp.note = True, f"groups={groups} outside the family space"
    return mp


def _map_upsample(shape, size, scale, mode, op: str) -> _Mapped:
    r = len(shape)
    if r not in (3, 4) or mode not in _INTERP_MODES:
        return _unmodelled(op, f"interpolate mode {mode!r} on a rank-{r} input")
    dims = r - 2
    spatial = tuple(int(x) for x in shape[2:])
    if size is not None:
        outs = (int(size),) * dims if isinstance(size, int) else tuple(int(v) for v in size)
        scales = [o / i for o, i in zip(outs, spatial)]
    elif scale is not None:
        scales = [float(scale)] * dims if isinstance(scale, (int, float)) else [float(v) for v in scale]
    else:
        return _unmodelled(op, "interpolate without size or scale_factor")
    if min(scales) < 1:
        return _unmodelled(op, f"interpolate downsampling (scale {scales})")
    s = max(1, int(round(math.prod(scales) ** (1 / dims))))
    approx = any(abs(x - s) > 1e-9 for x in scales)
    p, ap = _ew_params(tuple(shape))
    return _Mapped(LAYER, op, "upsample", {"mode": _INTERP_MODES[mode], "scale": s, **p}, approx or ap,
                   f"scale {scales} as {s}" if approx else None)


def _map_softmax(shape, dim, kind: str, op: str) -> _Mapped:
    """Softmax / LogSoftmax along `dim`: rows = every other element, features = that dimension's length
    (the family softmaxes the last dimension of (batch, seq_len, features); another dimension is approx)."""
    if dim is None or not shape:
        return _unmodelled(op, "softmax without a dimension")
    r = len(shape)
    d = int(dim) % r
    feats, rows = int(shape[d]), math.prod(shape) // max(1, int(shape[d]))
    batch = int(shape[0]) if r > 1 and d != 0 else 1
    approx = d != r - 1
    return _Mapped(LAYER, op, "softmax", {"kind": kind, "batch": batch, "seq_len": rows // batch,
                                          "features": feats}, approx,
                   f"softmax over dimension {d} of {r} priced as over the last" if approx else None)


def _map_matmul(sa, sb, op: str) -> _Mapped:
    """a @ b: (.., m, k) by (.., k, n) -> matmul with batch = the broadcast leading dimensions; by a 2-D
    b (a weight) -> linear without bias (the GEMM nn.Linear runs: rows = every leading element of a)."""
    if len(sa) < 2 or len(sb) < 2:
        return _unmodelled(op, "matmul with a vector")
    if len(sb) == 2:
        return _Mapped(LAYER, op, "linear", {"batch": math.prod(sa[:-1]), "in_features": int(sa[-1]),
                                             "out_features": int(sb[-1])}, False,
                       f"a matmul by a 2-D tensor priced as a Linear {NO_BIAS}")
    lead = torch.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))
    return _Mapped(LAYER, op, "matmul", {"batch": math.prod(lead), "m": int(sa[-2]), "k": int(sa[-1]),
                                         "n": int(sb[-1])})


def _map_sdpa(q, k, v, masked: bool, causal, op: str) -> _Mapped:
    if len(q) < 3 or len(k) != len(q):
        return _unmodelled(op, f"attention on query rank {len(q)}")
    batch = int(math.prod(q[:-3])) if len(q) > 3 else int(q[0])
    heads = int(q[-3]) if len(q) > 3 else 1
    n, approx, notes = int(q[-2]), False, []
    if k[-2] != q[-2]:
        n, approx = max(1, int(round(math.sqrt(q[-2] * k[-2])))), True
        notes.append(f"query length {q[-2]}, key length {k[-2]} as {n}")
    if v[-1] != q[-1]:
        approx = True
        notes.append("value width differs from the query's")
    if masked:
        approx = True
        notes.append("with an attention mask")
    params = {"batch": batch, "heads": heads, "seq_len": n, "head_dim": int(q[-1]),
              "causal": int(bool(causal) if isinstance(causal, bool) else 0)}
    return _Mapped(LAYER, op, "attention", params, approx, "; ".join(notes) or None)


def _tokens(shape, batch_first: bool) -> tuple[int, int, int] | None:
    """(batch, seq_len, width) of a transformer input (batched either way, or unbatched)."""
    if len(shape) == 2:
        return 1, int(shape[0]), int(shape[1])
    if len(shape) != 3:
        return None
    b, n = (shape[0], shape[1]) if batch_first else (shape[1], shape[0])
    return int(b), int(n), int(shape[2])


def _tel_params(m: nn.TransformerEncoderLayer, shape) -> dict | None:
    tok = _tokens(shape, m.self_attn.batch_first)
    if tok is None:
        return None
    act = {1: "relu", 2: "gelu"}.get(getattr(m, "activation_relu_or_gelu", 0), "gelu")
    return {"batch": tok[0], "seq_len": tok[1], "d_model": m.self_attn.embed_dim,
            "heads": m.self_attn.num_heads, "ffn": m.linear1.out_features, "activation": act,
            "norm_first": int(bool(m.norm_first))}


# ---- modules: one pricing function per `price` rule of the vocabulary (graph.ops)
# Each takes (module, vocabulary entry, tensor input shapes, fx call node or None in the hook fallback).


def _first(in_shapes) -> tuple:
    return in_shapes[0] if in_shapes else ()


def _module_conv(m, entry: ops.Op, in_shapes, node) -> _Mapped:
    return _map_conv(m, _first(in_shapes))


def _module_conv_transpose(m, entry, in_shapes, node) -> _Mapped:
    return _map_conv_transpose(m, _first(in_shapes))


def _module_linear(m, entry, in_shapes, node) -> _Mapped:
    return _map_linear(m, _first(in_shapes))


def _module_rnn(m, entry, in_shapes, node) -> _Mapped:
    return _map_rnn(m, _first(in_shapes))


def _module_batchnorm(m, entry, in_shapes, node) -> _Mapped:
    return _map_bn(m, _first(in_shapes))


def _module_pool(m, entry, in_shapes, node) -> _Mapped:
    dim, mode, op = int(entry.family[-2]), entry.params["mode"], type(m).__name__
    mp = _map_pool(mode, dim, m.kernel_size, m.stride, m.padding, m.ceil_mode, _first(in_shapes), op)
    if mode == "max" and _pair(getattr(m, "dilation", 1)) != (1, 1):
        mp.approx = True
    return mp


def _module_adaptive(m, entry, in_shapes, node) -> _Mapped:
    return _map_adaptive(entry.params["mode"], int(entry.family[-2]), m.output_size, _first(in_shapes),
                         type(m).__name__)


def _module_activation(m, entry, in_shapes, node) -> _Mapped:
    return _map_activation(entry.params["kind"], type(m).__name__, _first(in_shapes))


def _module_free(m, entry, in_shapes, node) -> _Mapped:
    return _Mapped(FREE, type(m).__name__, note="copies" if entry.params.get("copies") else None)


def _module_hardtanh(m, entry, in_shapes, node) -> _Mapped:
    return _map_clamp(float(m.min_val), float(m.max_val), type(m).__name__, _first(in_shapes))


def _module_layernorm(m, entry, in_shapes, node) -> _Mapped:
    return _map_layernorm(_first(in_shapes), m.normalized_shape, type(m).__name__)


def _module_softmax(m, entry, in_shapes, node) -> _Mapped:
    return _map_softmax(_first(in_shapes), m.dim, entry.params["kind"], type(m).__name__)


def _module_instancenorm(m, entry, in_shapes, node) -> _Mapped:
    """InstanceNorm1d/2d normalising by the instance's own statistics (the default) is GroupNorm with one
    group per channel -> groupnorm; with running statistics it stays unmodelled (neither BatchNorm, which
    ONNX Runtime folds into a convolution, nor GroupNorm)."""
    shape = _first(in_shapes)
    if len(shape) == entry.params["dims"] + 1:  # unbatched
        shape = (1,) + tuple(shape)
    if m.track_running_stats:
        return _unmodelled(type(m).__name__, "InstanceNorm with running statistics")
    mp = _map_groupnorm(shape, int(shape[1]), type(m).__name__)
    mp.note = (mp.note + "; " if mp.note else "") + "InstanceNorm priced as GroupNorm with a group per channel"
    return mp


def _module_groupnorm(m, entry, in_shapes, node) -> _Mapped:
    return _map_groupnorm(_first(in_shapes), m.num_groups, type(m).__name__)


def _module_upsample(m, entry, in_shapes, node) -> _Mapped:  # UpsamplingNearest2d / Bilinear2d too
    return _map_upsample(_first(in_shapes), m.size, m.scale_factor, m.mode, type(m).__name__)


def _module_mha(m, entry, in_shapes, node) -> _Mapped:
    op = type(m).__name__
    tok = _tokens(_first(in_shapes), m.batch_first)
    if tok is None or len(in_shapes) < 3:
        return _unmodelled(op, "MultiheadAttention input not (batch, seq, embed)")
    need = _arg(node, 4, "need_weights", True) if node is not None else True
    params = {"batch": tok[0], "seq_len": tok[1], "embed_dim": m.embed_dim, "heads": m.num_heads,
              "need_weights": int(bool(need))}
    notes = []
    if in_shapes[1] != in_shapes[0] or in_shapes[2] != in_shapes[0]:
        notes.append("keys/values of another shape priced as self-attention")
    if len(in_shapes) > 3:
        notes.append("with masks")
    if m.kdim != m.embed_dim or m.vdim != m.embed_dim or m.bias_k is not None:
        notes.append("kdim/vdim/bias_kv")
    return _Mapped(LAYER, op, "mha", params, bool(notes), "; ".join(notes) or None)


def _module_transformer_layer(m, entry, in_shapes, node) -> _Mapped:
    op, shape = type(m).__name__, _first(in_shapes)
    p = _tel_params(m, shape)
    if p is None:
        return _unmodelled(op, f"input rank {len(shape)}")
    notes = ["with masks"] if len(in_shapes) > 1 else []
    if getattr(m, "activation_relu_or_gelu", 0) == 0:
        notes.append("custom activation priced as gelu")
    return _Mapped(LAYER, op, "transformer_encoder", p, bool(notes), "; ".join(notes) or None)


def _module_transformer(m, entry, in_shapes, node) -> _Mapped:
    """nn.TransformerEncoder: one transformer_encoder call per layer, a layernorm for its final norm."""
    op, shape = type(m).__name__, _first(in_shapes)
    mp = _Mapped(LAYER, op, "transformer_encoder", None,
                 note="TransformerEncoder as its layers (and its final norm), one call each")
    mp.parts = []
    for i, layer in enumerate(m.layers):
        p = _tel_params(layer, shape)
        if p is None:
            return _unmodelled(op, f"input rank {len(shape)}")
        mp.parts.append({"suffix": f".layers.{i}", "family": "transformer_encoder", "params": p,
                         "op": type(layer).__name__})
    if m.norm is not None:
        tok = _tokens(shape, m.layers[0].self_attn.batch_first)
        norm = _map_layernorm(tok, m.norm.normalized_shape, "LayerNorm")
        if norm.kind != LAYER:
            return norm
        mp.parts.append({"suffix": ".norm", "family": "layernorm", "params": norm.params, "op": "LayerNorm"})
    return mp


def _guarded(rule):
    """Arguments computed at run time (fx Nodes in place of numbers) or odd shapes make a call priced by
    one of issue 17's rules unmodelled, instead of failing the trace (and falling back to hooks)."""

    def guarded(*args):
        try:
            return rule(*args)
        except (TypeError, ValueError, IndexError):
            name = type(args[0]).__name__ if isinstance(args[0], nn.Module) else str(args[2])
            return _unmodelled(name, "arguments not known when tracing")

    guarded.__name__ = guarded.__qualname__ = rule.__name__
    guarded.__doc__ = rule.__doc__
    return guarded


_MODULE_PRICE = {"conv": _module_conv, "convtranspose": _module_conv_transpose, "linear": _module_linear, "rnn": _module_rnn,
                 "batchnorm": _module_batchnorm, "pool": _module_pool, "adaptive": _module_adaptive,
                 "activation": _module_activation, "free": _module_free,
                 "hardtanh": _guarded(_module_hardtanh),
                 "layernorm": _guarded(_module_layernorm), "groupnorm": _guarded(_module_groupnorm),
                 "upsample": _guarded(_module_upsample), "mha": _guarded(_module_mha),
                 "transformer_layer": _guarded(_module_transformer_layer),
                 "transformer": _guarded(_module_transformer), "softmax": _guarded(_module_softmax),
                 "instancenorm": _guarded(_module_instancenorm)}
# modules priced whole (they have children): leaves of the hook fallback too
_WHOLE_MODULE_PRICES = frozenset({"mha", "transformer_layer", "transformer"})


def _map_module(m: nn.Module, in_shapes: list[tuple[int, ...]], node=None) -> _Mapped:
    entry = ops.module_op(m)
    if isinstance(m, torch.jit.ScriptModule):  # a leaf of the trace (its compiled forward is opaque)
        return _unmodelled(f"TorchScript {getattr(m, 'original_name', type(m).__name__)}",
                           "a TorchScript module is not priced; give its eager nn.Module")
    if entry is None or entry.price not in _MODULE_PRICE:
        return _unmodelled(type(m).__name__, "no family covers this module")
    return _MODULE_PRICE[entry.price](m, entry, in_shapes, node)


# ---- functions and methods: one pricing function per `price` rule of the vocabulary


def _is_tensor_shape(s) -> bool:
    return isinstance(s, tuple)


def _fn_cat(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    tensors = _arg(node, 0, "tensors")
    dim = _arg(node, 1, "dim", 0)
    shapes = [arg_shapes.get(x) for x in tensors] if isinstance(tensors, (list, tuple)) else []
    if not shapes or not all(_is_tensor_shape(s) for s in shapes):
        return _unmodelled("cat", "cat of unknown tensors")
    if dim < 0:
        dim += len(shapes[0])
    return _cat_of("cat", shapes, dim)


def _cat_of(op: str, shapes: list, dim: int) -> _Mapped:
    """The concat family's call for joining tensors of `shapes` along `dim`. Along channels (dim 1) as the family
    does; along another axis as the channel concat that copies the same blocks (a cat along `dim` copies, for each
    of the prod(shape[:dim]) leading positions, each input's shape[dim:] elements in turn: a concat of batch
    prod(shape[:dim]), channels shape[dim] and a length of the rest; approx)."""
    rank = len(shapes[0])
    if not 0 <= dim < rank or any(len(s) != rank for s in shapes):
        return _unmodelled(op, f"{op} along dim {dim} of rank {rank}")
    if dim != 1 or rank < 2:
        if len(shapes) == 1:
            return _Mapped(FREE, op, note="copies" if op == "stack" else None)
        mp = _cat_of(op, [(math.prod(s[:dim]), s[dim], math.prod(s[dim + 1:])) for s in shapes], 1)
        if mp.kind == LAYER:
            mp.approx = True
            mp.note = f"{op} along dim {dim} priced as the channel concat that copies the same blocks"
        return mp
    if len(shapes) == 1:
        return _Mapped(FREE, op, note="copies" if op == "stack" else None)
    # One call, as the backend runs it: a cat of k tensors reads each once and writes the output once, so
    # it is priced as the 2-input concat of the same bytes (all but the last input, then the last). Priced
    # as k-1 chained 2-input concats, it had been charged every growing prefix again: DenseNet-121 (k=8)
    # held 535 such concats for its 120 cats, 31% of its layers' standalone time, and was priced +40%.
    head = (shapes[0][0], sum(s[1] for s in shapes[:-1])) + tuple(shapes[0][2:])
    ew = _ew_params(head)
    if ew is None:
        return _unmodelled(op, f"input rank {rank}")
    p, ap = ew
    mp = _Mapped(LAYER, op, "concat", {**p, "channels_b": shapes[-1][1]}, approx=ap or len(shapes) > 2)
    if len(shapes) > 2:
        mp.note = f"{op} of {len(shapes)} tensors priced as one 2-input concat of the same bytes"
    return mp


def _fn_activation(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    return _map_activation(entry.params["kind"], name, in_shapes[0])


def _fn_hardtanh(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    if name.startswith("hardtanh"):
        lo, hi = _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)
        if (lo, hi) == (0.0, 6.0):
            return _map_ew("activation", "relu6", in_shapes[0], {"kind": "relu6"})
    elif name.startswith("clamp_min"):
        lo, hi = _arg(node, 1, "min"), None
    elif name.startswith("clamp_max"):
        lo, hi = None, _arg(node, 1, "max")
    else:  # torch.clamp / clip and their methods (in place too)
        lo, hi = _arg(node, 1, "min"), _arg(node, 2, "max")
    if len(in_shapes) != 1:
        return _unmodelled(name, "a clamp to tensor bounds")
    return _map_clamp(lo, hi, name, in_shapes[0])


def _fn_standin(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    """`_map_standin` for a function or method of one tensor (another argument may be a number: a power of 2)."""
    if len(in_shapes) != 1 or not _is_tensor_shape(in_shapes[0]):
        return _unmodelled(name, "an element-wise op of several tensors")
    if entry.params.get("square") and _arg(node, 1, "exponent") not in (2, 2.0):
        return _unmodelled(name, "a power other than 2; no family times it")
    return _map_standin(entry.params["kind"], name, in_shapes[0])


def _fn_flinear(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    """F.linear(x, weight[, bias]) with a 2-D weight: the linear family, as an nn.Linear of that weight."""
    w = arg_shapes.get(_arg(node, 1, "weight"))
    x = arg_shapes.get(_arg(node, 0, "input"))
    if not (_is_tensor_shape(w) and _is_tensor_shape(x) and len(w) == 2 and x and x[-1] == w[1]):
        return _unmodelled(name, "F.linear with a weight of unknown shape")
    return _map_linear(_ConvArgs(w), x, op=name, bias=_arg(node, 2, "bias") is not None)


def _fn_fconv(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    """F.conv1d / F.conv2d(x, weight, bias, stride, padding, dilation, groups): the conv family, as the module."""
    w = arg_shapes.get(_arg(node, 1, "weight"))
    x = arg_shapes.get(_arg(node, 0, "input"))
    dim = int(entry.family[-2])
    if not (_is_tensor_shape(w) and _is_tensor_shape(x) and len(w) == dim + 2):
        return _unmodelled(name, f"{name} with a weight of unknown shape")
    args = _ConvArgs(w, _arg(node, 3, "stride", 1), _arg(node, 4, "padding", 0), _arg(node, 5, "dilation", 1),
                     _arg(node, 6, "groups", 1))
    return _map_conv(args, x, dim=dim, op=name)


def _fn_stack(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    """torch.stack(tensors, dim): in memory the cat of the same tensors along `dim` (both lay out blocks of
    prod(shape[dim:]) elements input by input), so it is priced as that cat."""
    tensors = _arg(node, 0, "tensors")
    shapes = [arg_shapes.get(x) for x in tensors] if isinstance(tensors, (list, tuple)) else []
    if not shapes or not all(_is_tensor_shape(s) for s in shapes):
        return _unmodelled(name, "stack of unknown tensors")
    dim = _arg(node, 1, "dim", 0)
    dim = dim + len(shapes[0]) + 1 if dim < 0 else dim
    return _cat_of(name, shapes, dim)


def _fn_pool(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    k = _arg(node, 1, "kernel_size")
    s = _arg(node, 2, "stride", None)
    pad = _arg(node, 3, "padding", 0)
    ceil = node.kwargs.get("ceil_mode", False)
    return _map_pool(entry.params["mode"], int(entry.family[-2]), k, s, pad, ceil, in_shapes[0], name)


def _fn_adaptive(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    return _map_adaptive(entry.params["mode"], int(entry.family[-2]), _arg(node, 1, "output_size"),
                         in_shapes[0], name)


def _fn_mean(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    """A reduction over the trailing dimensions -- mean (and sum) as a global average pool, amax (and amin)
    as a global max pool: (B, C, H, W) over (2, 3), (B, C, L) over 2, (B, T, F) over time (1) as a pool
    over time on (B, F, T), and channels-last (B, H, W, C) over (1, 2) as a pool on (B, C, H, W). A sum
    and an amin (and torch.max / min over a dimension) are priced as the mean / amax of the same elements (approx)."""
    dims = _arg(node, 1, "dim", None)
    shape = in_shapes[0]
    mode, exact = entry.params.get("mode", "avg"), entry.params.get("exact", True)
    if isinstance(dims, torch.fx.Node) and _is_tensor_shape(arg_shapes.get(dims)):
        return _unmodelled(name, f"an element-wise {name} of two tensors")
    if isinstance(dims, int):
        dims = (dims,)
    mp = None
    if isinstance(dims, (tuple, list)) and _is_tensor_shape(shape) and all(isinstance(d, int) for d in dims):
        dims = tuple(sorted(d % len(shape) for d in dims))
        if (len(shape) == 4 and dims == (2, 3)) or (len(shape) == 3 and dims == (2,)):
            mp = _map_adaptive(mode, len(shape) - 2, 1, shape, name)
            mp.note = f"global {name} as a{'n average' if mode == 'avg' else ' max'} pool (kernel = stride = size)"
        elif len(shape) == 3 and dims == (1,):
            # (batch, time, features).mean(1): over time after a batch_first RNN or over a transformer's tokens
            mp = _map_adaptive(mode, 1, 1, (shape[0], shape[2], shape[1]), name)
            mp.note = f"{name} over time of (batch, time, features) as a pool over time"
        elif len(shape) == 4 and dims == (1, 2):
            mp = _map_adaptive(mode, 2, 1, (shape[0], shape[3], shape[1], shape[2]), name)
            mp.note = f"{name} over (H, W) of a channels-last tensor as a global pool"
    if mp is None:
        return _unmodelled(name, f"{name} other than over the trailing (or token) dimensions")
    if mp.kind == LAYER and not exact:
        mp.approx = True
        mp.note = f"{mp.note}; priced as the {'mean' if mode == 'avg' else 'amax'} of the same elements"
    return mp


def _fn_free(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    return _Mapped(FREE, name, note="copies" if entry.params.get("copies") else None)


_NUMBER = "number"  # an operand that is a number: a literal, or a value traced from shapes (x.size(-1) ** -0.5)


def _operand(x, arg_shapes):
    """A binary op's operand: its tensor shape, _NUMBER, or None (unknown: a tuple, a bool, ...)."""
    if isinstance(x, torch.fx.Node):
        s = arg_shapes.get(x)
        if _is_tensor_shape(s):
            return s
        return _NUMBER if s is None else None  # no shape: the traced value is not a tensor
    return _NUMBER if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _fn_binary(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    """An element-wise binary op (+, -, *, / and their torch / method forms), priced by the shapes it
    reads: `a + b` of two same-shaped tensors -> add (the family ORT fuses into a convolution); every
    other case -> mul, whose modes span what a broadcast reads: same (two same-shaped tensors),
    channel (a (B, C, 1, ..) operand; other broadcasts are priced as channel, approx, on the output's
    shape) and scalar (a number, traced or not, or a one-element tensor). A subtraction, an addition
    that is not two same-shaped tensors, and a division are priced as the multiply of the same shapes
    (one memory-bound pass, as a multiply is; approx, except a division by a number, which ORT and
    torch run as a multiply)."""
    op = entry.price  # add, sub, mul, div
    a, b = _arg(node, 0, "input"), _arg(node, 1, "other")
    sa, sb = _operand(a, arg_shapes), _operand(b, arg_shapes)
    if sa is None or sb is None or (sa == _NUMBER and sb == _NUMBER):
        return _unmodelled(op, f"{op} of unknown operands")
    if op == "div" and node.kwargs.get("rounding_mode") is not None:
        return _unmodelled(op, "division with rounding")
    if sa == _NUMBER or sb == _NUMBER:
        mp = _map_ew("mul", op, sa if sb == _NUMBER else sb, {"mode": "scalar"})
        number = b if sb == _NUMBER else a
        mp.scalar = float(number) if isinstance(number, (int, float)) else None  # (not one traced from shapes)
        exact = op == "mul" or (op == "div" and sb == _NUMBER)
    elif sa == sb:
        if op == "add" and node.kwargs.get("alpha", 1) == 1:
            return _map_ew("add", "add", sa)
        mp, exact = _map_ew("mul", op, sa, {"mode": "same"}), op == "mul"
    else:
        out = tensor_shape(node) or (sa if math.prod(sa) >= math.prod(sb) else sb)
        small = sb if out == sa else sa
        if math.prod(small) == 1:
            mp, exact = _map_ew("mul", op, out, {"mode": "scalar"}), op == "mul"
        else:
            mp = _map_ew("mul", op, out, {"mode": "channel"})
            se = len(small) == len(out) and small[:2] == out[:2] and all(x == 1 for x in small[2:])
            exact = op == "mul" and se
            if mp.kind == LAYER and not se:
                mp.note = f"broadcast {small} with {out} priced as a per-channel scale"
    if mp.kind == LAYER and not exact:
        mp.approx = True
        mp.note = mp.note or f"{op} priced as a multiply of the same shapes"
    return mp


def _fn_layernorm(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    return _map_layernorm(in_shapes[0], _arg(node, 1, "normalized_shape"), "layer_norm")


def _fn_softmax(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    dim = _arg(node, 1, "dim")
    if isinstance(dim, torch.fx.Node):
        raise TypeError("a traced dimension")  # (_guarded: unmodelled)
    return _map_softmax(in_shapes[0], dim, entry.params["kind"], name)


def _fn_matmul(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    a, b = _arg(node, 0, "input"), _arg(node, 1, "other")
    sa, sb = _operand(a, arg_shapes), _operand(b, arg_shapes)
    if not (_is_tensor_shape(sa) and _is_tensor_shape(sb)):  # (a number is not a matmul operand)
        return _unmodelled(name, "matmul of unknown operands")
    return _map_matmul(sa, sb, name)


def _fn_einsum(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    """torch.einsum of two operands that is a matrix product: every index either shared by both operands and the
    output (batch), one operand's and the output's (m from the first, n from the second), or shared by the operands
    and summed (k). Priced as the matmul (batch, m, k, n) it computes, or, with no batch index, as the GEMM a Linear
    runs; approx (the operands may be laid out otherwise: einsum then copies them)."""
    eq, ops_ = node.args[0] if node.args else None, list(node.args[1:])
    if len(ops_) == 1 and isinstance(ops_[0], (list, tuple)):
        ops_ = list(ops_[0])
    shapes = [arg_shapes.get(x) for x in ops_]
    if not isinstance(eq, str) or len(shapes) != 2 or not all(_is_tensor_shape(x) for x in shapes):
        return _unmodelled(name, "einsum of other than two tensors")
    eq = eq.replace(" ", "")
    if "..." in eq or eq.count("->") != 1 or eq.count(",") != 1:
        return _unmodelled(name, f"einsum {eq!r}: only explicit two-operand equations are priced")
    lhs, out = eq.split("->")
    ia, ib = lhs.split(",")
    (sa, sb) = shapes
    if len(ia) != len(sa) or len(ib) != len(sb) or any(len(set(t)) != len(t) for t in (ia, ib, out)):
        return _unmodelled(name, f"einsum {eq!r} with repeated indices")
    size: dict = {}
    for idx, shp in ((ia, sa), (ib, sb)):
        for c, n in zip(idx, shp):
            if size.setdefault(c, int(n)) != int(n):
                return _unmodelled(name, f"einsum {eq!r} broadcasting index {c}")
    batch = [c for c in out if c in ia and c in ib]
    m = [c for c in out if c in ia and c not in ib]
    n = [c for c in out if c in ib and c not in ia]
    k = [c for c in ia if c in ib and c not in out]
    if not k or set(out) - set(ia) - set(ib) or set(ia) | set(ib) != set(batch + m + n + k):
        return _unmodelled(name, f"einsum {eq!r} is not a matrix product")
    B, M, K, N = (math.prod(size[c] for c in idx) for idx in (batch, m, k, n))
    if not batch:
        mp = _Mapped(LAYER, name, "linear", {"batch": M, "in_features": K, "out_features": N}, True)
    else:
        mp = _Mapped(LAYER, name, "matmul", {"batch": B, "m": M, "k": K, "n": N}, True)
    mp.note = f"einsum {eq!r} priced as the {'GEMM' if not batch else 'batched matrix product'} it computes" + (
        f", {NO_BIAS}" if not batch else "")
    return mp


def _fn_groupnorm(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    return _map_groupnorm(in_shapes[0], _arg(node, 1, "num_groups"), "group_norm")


def _fn_upsample(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    """F.interpolate / F.upsample: the size from the traced output (it may be computed at run time)."""
    out_shape = arg_shapes.get(node)
    size = tuple(out_shape[2:]) if _is_tensor_shape(out_shape) else _arg(node, 1, "size")
    return _map_upsample(in_shapes[0], size, None if size is not None else _arg(node, 2, "scale_factor"),
                         _arg(node, 3, "mode", "nearest"), "interpolate")


def _fn_sdpa(node, entry, name, in_shapes, arg_shapes) -> _Mapped:
    q, k, v = (arg_shapes.get(_arg(node, i, n)) for i, n in enumerate(("query", "key", "value")))
    if not all(_is_tensor_shape(x) for x in (q, k, v)):
        return _unmodelled("scaled_dot_product_attention", "unknown operands")
    mask = _arg(node, 3, "attn_mask")
    return _map_sdpa(q, k, v, mask is not None, _arg(node, 5, "is_causal", False),
                     "scaled_dot_product_attention")


_WEIGHTED_FUNCTIONS = frozenset((F.linear, F.conv1d, F.conv2d))
_BINARY = _guarded(_fn_binary)
_FUNCTION_PRICE = {"add": _BINARY, "sub": _BINARY, "mul": _BINARY, "div": _BINARY, "cat": _guarded(_fn_cat),
                   "activation": _fn_activation, "pool": _guarded(_fn_pool),
                   "adaptive": _guarded(_fn_adaptive), "mean": _guarded(_fn_mean), "free": _fn_free, "layernorm": _guarded(_fn_layernorm),
                   "groupnorm": _guarded(_fn_groupnorm), "upsample": _guarded(_fn_upsample),
                   "sdpa": _guarded(_fn_sdpa), "softmax": _guarded(_fn_softmax),
                   "matmul": _guarded(_fn_matmul), "hardtanh": _guarded(_fn_hardtanh),
                   "standin": _fn_standin, "flinear": _guarded(_fn_flinear), "fconv": _guarded(_fn_fconv),
                   "stack": _guarded(_fn_stack), "einsum": _guarded(_fn_einsum)}


def _map_function(node, modules, in_shapes, arg_shapes) -> _Mapped:
    name = target_name(node)
    entry = ops.node_op(node, modules)
    if entry is None or entry.price not in _FUNCTION_PRICE:  # unknown, or known and priced by no family
        return _unmodelled(str(name), "no family covers this op")
    return _FUNCTION_PRICE[entry.price](node, entry, name, in_shapes, arg_shapes)


def _emit(calls: list[LayerCall], base: str, mp: _Mapped, in_shapes, out_shape, inputs: list[str]):
    """Append the LayerCall(s) for one mapped op; returns the name of the last one (the output)."""
    if mp.parts:
        prev = None
        for j, part in enumerate(mp.parts):
            nm = base + part["suffix"]
            params = part["params"]
            ins = part.get("input_shapes", in_shapes)
            if "family" in part:  # a chain of calls of their own families (TransformerEncoder)
                ins_names = list(inputs) if j == 0 else [prev]
            else:  # bidirectional RNN: layer 0 reads the input, layer l both directions of l-1
                layer = part.get("layer", 0)
                ins_names = list(inputs) if layer == 0 else [
                    base + q["suffix"] for q in mp.parts if q.get("layer", 0) == layer - 1]
            fam = part.get("family", mp.family)
            calls.append(LayerCall(nm, fam, LayerConfig(fam, params), part.get("op", mp.op), LAYER,
                                   None, [tuple(s) for s in ins if _is_tensor_shape(s)],
                                   out_shape if j == len(mp.parts) - 1 else None,
                                   bool(mp.approx or part.get("approx")), mp.note, ins_names))
            prev = nm
        return prev
    config = LayerConfig(mp.family, mp.params) if mp.kind == LAYER else None
    calls.append(LayerCall(base, mp.family if mp.kind == LAYER else None, config, mp.op, mp.kind, None,
                           [tuple(s) for s in in_shapes if _is_tensor_shape(s)],
                           out_shape if _is_tensor_shape(out_shape) else None, mp.approx, mp.note,
                           list(inputs), scalar=mp.scalar))
    return base


class _Bare1(nn.Module):
    """A one-module wrapper traced in place of a bare leaf module (its child is named '0'), called on as many
    inputs as the module (nn.MultiheadAttention takes query, key and value)."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.add_module("0", m)

    def forward(self, a):
        return self._modules["0"](a)


class _Bare2(_Bare1):
    def forward(self, a, b):
        return self._modules["0"](a, b)


class _Bare3(_Bare1):
    def forward(self, a, b, c):
        return self._modules["0"](a, b, c)


class _Bare4(_Bare1):
    def forward(self, a, b, c, d):
        return self._modules["0"](a, b, c, d)


class _Bare5(_Bare1):
    def forward(self, a, b, c, d, e):
        return self._modules["0"](a, b, c, d, e)


class _Bare6(_Bare1):
    def forward(self, a, b, c, d, e, f):
        return self._modules["0"](a, b, c, d, e, f)


_BARE = {1: _Bare1, 2: _Bare2, 3: _Bare3, 4: _Bare4, 5: _Bare5, 6: _Bare6}


def _extract_fx(module: nn.Module, inputs: tuple) -> ExtractResult:
    if is_leaf(module):
        # a bare leaf module (nn.GRU, nn.Conv2d, ...): trace a one-module wrapper, then rename
        alias = type(module).__name__.lower()
        if len(inputs) not in _BARE or (ops.module_op(module) is None and next(module.children(), None) is not None):
            # (the hook fallback then prices what it can: the children of a torch.nn container no rule prices)
            raise TypeError(f"a bare {type(module).__name__} on {len(inputs)} input(s) cannot be traced as one call")
        res = _extract_fx(_BARE[len(inputs)](module), inputs)

        def rename(n: str) -> str:
            return alias + n[1:] if n == "0" or n.startswith(("0#", "0.")) else n

        for c in res:
            c.name, c.inputs = rename(c.name), [rename(i) for i in c.inputs]
            c.fused_into = rename(c.fused_into) if c.fused_into else None
        res.outputs = frozenset(rename(o) for o in res.outputs) if res.outputs is not None else None
        res.warnings = []
        _add_notes(res, res.warnings)  # (written with the wrapper's names)
        res.module_calls = None  # the wrapper's count is not the module's
        return res
    return _from_graph(trace(module, inputs))


def _from_graph(tg) -> ExtractResult:
    """The calls of a traced (`graph.trace.trace`) or recorded (`graph.record.record`) graph, each node's shape
    in its meta."""
    outputs: frozenset = frozenset()
    calls: list[LayerCall] = []
    warns: list[str] = []
    out_name: dict = {}  # fx node -> name of the call that produced it
    shapes: dict = {}
    module_uses: dict[str, int] = {}
    for node in tg.nodes:
        shp = meta_shape(node)
        shapes[node] = shp
        if node.op == "placeholder":
            out_name[node] = INPUT
            continue
        if node.op == "output":
            outputs = frozenset(out_name[a] for a in tensor_arg_nodes(node) if out_name.get(a) not in (None, INPUT))
            out_name[node] = None
            continue
        if node.op == "get_attr":
            out_name[node] = INPUT
            continue
        args = tensor_arg_nodes(node)
        tensor_args = [a for a in args if shapes.get(a) is not None]
        if shp is None:
            # produces no tensor (x.size(), shape arithmetic): not a layer, not listed
            out_name[node] = None
            continue
        in_shapes = [shapes[a] for a in tensor_args]
        producers = []
        for a in tensor_args:
            p = out_name.get(a)
            if p is not None and p not in producers:
                producers.append(p)
        if node.op == "call_module":
            m = tg.modules[node.target]
            k = module_uses.get(node.target, 0)
            module_uses[node.target] = k + 1
            base = node.target if k == 0 else f"{node.target}#{k}"
            mp = _map_module(m, [s for s in in_shapes if _is_tensor_shape(s)], node)
        elif node.meta.get("condition"):  # (recorded graphs) a value the forward branches on
            base = node.name
            mp = _Mapped(FREE, target_name(node), note="condition")
        else:
            base = node.name
            mp = _map_function(node, tg.modules, in_shapes, shapes)
        if mp.kind == LAYER and mp.family == "concat":
            producers = [out_name.get(a) or INPUT for a in _arg(node, 0, "tensors")]
        elif mp.kind == LAYER and node.op == "call_function" and node.target in _WEIGHTED_FUNCTIONS:
            producers = [out_name.get(_arg(node, 0, "input")) or INPUT]  # the weight is not a producer
        out_name[node] = _emit(calls, base, mp, in_shapes, shp, producers)
    _add_notes(calls, warns)
    made = [t for t in tg.constants.values() if isinstance(t, torch.Tensor)]
    made_bytes = sum(t.numel() * t.element_size() for t in made)
    if made_bytes >= CONSTANT_NOTE_BYTES:
        warns.append(f"the forward builds {len(made)} tensor{'s' if len(made) > 1 else ''} that do not depend on its "
                     f"inputs ({made_bytes / 2**10:.0f} KiB, e.g. a position encoding from torch.arange): torch.fx "
                     "computed them once while tracing and they are priced as constants (free), as ONNX Runtime "
                     "folds them; eager PyTorch computes them on every call, which the total leaves out")
    return ExtractResult(calls, True, warns, tg.container_calls, outputs=outputs)


CONSTANT_NOTE_BYTES = 64 * 2**10  # tensors a forward builds from constants, above which extraction warns


# --------------------------------------------------------------------------- fallbacks


def _extract_recorded(module: nn.Module, inputs: tuple, reason: str) -> ExtractResult:
    """fx failed: the ops one forward on the example inputs runs (`graph.record`), mapped as a trace's are; where
    that fails too, forward hooks on the leaf modules."""
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            res = _from_graph(record(module, inputs))
    except Exception:  # noqa: BLE001 - the forward's own failure is reported by the hooks' run, as the user's
        return _extract_hooks(module, inputs, reason)
    res.traced, res.untraced_reason = False, reason
    res.warnings.insert(0, f"torch.fx tracing failed ({reason}); the ops were recorded from one forward on the "
                           "example input instead: where control flow depends on values, this is that input's path")
    cond = [c.name for c in res if c.note == "condition"]
    if cond:
        res.warnings.insert(1, f"{len(cond)} op(s) computing only values the forward branches on ("
                               f"{', '.join(cond[:6])}{' ...' if len(cond) > 6 else ''}) are priced as free ops")
    return res



def _is_hook_leaf(m: nn.Module) -> bool:
    if not any(True for _ in m.children()):
        return True
    entry = ops.module_op(m)
    if entry is not None and entry.price in _WHOLE_MODULE_PRICES:  # priced as a whole module
        return True
    return not type(m).__module__.startswith("torch.nn") and (
        any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)))


def _first_tensor_shape(x):
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (tuple, list)):
        for y in x:
            s = _first_tensor_shape(y)
            if s is not None:
                return s
    return None


def _extract_hooks(module: nn.Module, inputs: tuple, reason: str) -> ExtractResult:
    calls: list[LayerCall] = []
    uses: dict[str, int] = {}
    leaves = {}
    for name, m in module.named_modules():
        if name and _is_hook_leaf(m) and not any(name.startswith(p + ".") for p in leaves):
            leaves[name] = m

    def make_hook(name):
        def hook(m, args, output):
            in_shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
            out_shape = _first_tensor_shape(output)
            k = uses.get(name, 0)
            uses[name] = k + 1
            base = name if k == 0 else f"{name}#{k}"
            prev = [calls[-1].name] if calls else [INPUT]
            _emit(calls, base, _map_module(m, in_shapes), in_shapes, out_shape, prev)

        return hook

    _forward_with_hooks(module, inputs, [m.register_forward_hook(make_hook(name)) for name, m in leaves.items()])
    warns = [f"torch.fx tracing failed ({reason}); fell back to forward hooks: only leaf module calls "
             "are listed, functional ops (residual adds, torch.cat, F.relu, ...) are invisible, and "
             "data flow is approximated by execution order"]
    _add_notes(calls, warns)
    return ExtractResult(calls, False, warns, untraced_reason=reason)


# A copy (.contiguous(), .clone(), an axis move) is a free op: the composition prices it per element copied
# (`calls.copied_elements`), at a rate fitted on the small copies of random networks (ShuffleNet's channel
# shuffle, attention's head splits: ~0.4-0.6 ns an element); a big permuted copy runs slower than that (a 16 MiB
# one took ~18 ms here, ~4 ns an element). Above this size the extraction says so.
LARGE_COPY_BYTES = 1 << 20


def _add_notes(calls: list[LayerCall], warns: list[str]) -> None:
    big = [c for c in calls if c.kind == FREE and c.note == "copies" and c.output_shape is not None
           and 4 * math.prod(c.output_shape) >= LARGE_COPY_BYTES]
    if big:
        mib = sum(4 * math.prod(c.output_shape) for c in big) / 2**20
        warns.append(f"{len(big)} large cop{'y' if len(big) == 1 else 'ies'} ({', '.join(c.name for c in big[:4])}"
                     f"{' ...' if len(big) > 4 else ''}; {mib:.1f} MiB written) priced at the copy rate fitted on "
                     "small copies: a large strided copy can take several times longer")
    unm = [c for c in calls if c.kind == UNMODELLED]
    if unm:
        warns.append("unmodelled ops: " + ", ".join(f"{c.name} ({c.op})" for c in unm))
    apx = [c for c in calls if c.approx]
    if apx:
        warns.append(f"{len(apx)} calls approximated by the nearest family configuration: "
                     + ", ".join(c.name for c in apx[:8]) + (" ..." if len(apx) > 8 else ""))


_CACHE: OrderedDict = OrderedDict()  # fingerprint -> ExtractResult (least recently used first)
CACHE_SIZE = 256


def clear_cache() -> None:
    """Forget every cached extraction."""
    _CACHE.clear()


def extract_layers(module: nn.Module, example_inputs, *, cache: bool = True, copy: bool = True) -> ExtractResult:
    """Every module call and functional op of `module` on `example_inputs`, in execution order.

    Tries torch.fx (symbolic trace + shape propagation); on any tracing failure falls back to forward
    hooks (`result.traced` False, see module doc). On a cache miss the module is run once on the example
    inputs (no_grad); its train/eval mode is left as it is. `cache`: look the structure up in (and add
    it to) the extraction cache (see module doc). `copy=False` returns the cached result itself, which
    the caller must not change (for callers that copy the calls at once, as `fusion_for_backend` does).
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    key = fingerprint(module, example_inputs) if cache else None
    hit = _CACHE.get(key) if key is not None else None
    if hit is not None:
        _CACHE.move_to_end(key)
        return _copy(hit) if copy else hit
    res = _extract(module, example_inputs)
    if key is not None and res.traced:
        _CACHE[key] = res
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return _copy(res) if copy else res
    return res


INPUT_COPY_BYTES = 256 * 2**20  # an extraction keeps a copy of each example input up to this size


def _extract(module: nn.Module, example_inputs: tuple) -> ExtractResult:
    """The extraction on a cache miss. The module runs on the example inputs here (the trace's shape
    propagation, or hooks): a forward that works on its input in place (x.relu_()) would change the caller's
    tensor, so each input up to INPUT_COPY_BYTES is put back afterwards (a larger one is left as such a forward
    leaves it; inference tensors cannot change here)."""
    kept = [(t, t._version, t.detach().clone()) for t in example_inputs
            if isinstance(t, torch.Tensor) and not t.is_inference()
            and t.numel() * t.element_size() <= INPUT_COPY_BYTES]
    try:
        try:
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore")
                res = _extract_fx(module, example_inputs)
        except Exception as e:  # fx raises TraceError, TypeError, RuntimeError, ... on dynamic code
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            res = _extract_recorded(module, example_inputs, reason)
        if res.module_calls is None or not res.traced:  # the trace could not count them
            res.module_calls = count_container_calls(module, example_inputs)
        return res
    finally:
        with torch.no_grad():
            for t, version, copy in kept:
                if t._version != version:
                    t.copy_(copy)


def _copy(res: ExtractResult) -> ExtractResult:
    """A copy whose calls (and their lists) the caller may change without touching the original."""
    return res.like([c.copy(inputs=list(c.inputs), input_shapes=list(c.input_shapes)) for c in res])


def count_container_calls(module: nn.Module, example_inputs: tuple) -> int:
    """How many times one forward calls a module that has children (the network itself included)."""
    n = 0

    def hook(*_):
        nonlocal n
        n += 1

    containers = [m for m in module.modules() if next(m.children(), None) is not None]
    if not containers:  # (a bare nn.LSTM: nothing to count, and no forward to run for it)
        return 0
    _forward_with_hooks(module, example_inputs, [m.register_forward_pre_hook(hook) for m in containers])
    return n


def _forward_with_hooks(module: nn.Module, inputs: tuple, handles: list) -> None:
    """Run `module` once on `inputs` (no_grad) with hooks registered, then remove them (also on error). A
    forward that fails is the user's error (UserError): the network does not run on its example input."""
    try:
        with torch.no_grad():
            module(*inputs)
    except Exception as e:  # noqa: BLE001 - any failure of the user's forward is theirs
        msg = str(e).strip()
        raise UserError(f"the network does not run on its example input "
                        f"{[tuple(t.shape) for t in inputs if isinstance(t, torch.Tensor)]}: {type(e).__name__}: "
                        f"{msg.splitlines()[0][:200] if msg else ''}") from None
    finally:
        for h in handles:
            h.remove()
