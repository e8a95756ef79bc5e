"""The op vocabulary: what every module type, function and tensor method a traced network may call is.

One table, read by every consumer of a traced graph (`fastdeepiot.graph.trace`):

  * layer extraction (`graph.extract`) reads `price`: which rule turns the call into a family
    configuration (`family`, `params`), or that it is free, or known but priced by no family;
  * backend fusion (`graph.fusion`) reads `vanishes`: calls that are no-ops in eval mode and disappear
    from an exported graph (`NOOP_OPS`);
  * channel dependency tracing (`graph.channels`) reads `channels`: how the call treats the channel
    axis of its input (opens a channel space, passes it through, unites operands, concatenates, moves
    or folds the axis, reduces over other axes), or `fix` (the channels flowing in are never pruned).

An op missing from the table is *unknown*: extraction lists it as 'unmodelled' (never 0 ms) and channel
tracing fixes every channel flowing into it (never element-wise by default).

Rules. `price` (extraction, `graph.extract`):
  conv, linear, rnn, batchnorm  -- the module's own family (the entry's `family`)
  convtranspose                 -- ConvTranspose1d/2d of groups 1: conv_transpose1d/2d (a padding other than the
                                   family's, `families.conv_transpose_padding`, or dilation: approx)
  pool, adaptive                -- pool1d/pool2d (`params`: mode); adaptive = kernel = stride = size//out
                                   (an output that does not divide the input: adaptive_pool)
  activation                    -- the activation family with `params['kind']`; a kind outside the
                                   family's space (families.ACTIVATIONS) is unmodelled until profiled
  hardtanh                      -- activation relu6 when (min, max) = (0, 6); other bounds, torch.clamp / clip:
                                   relu6 (one clamp pass, approx where the kernel differs)
  standin                       -- an element-wise op of one tensor that no family times (abs, exp, rsqrt,
                                   erf, x ** 2, ...): the profiled activation kind (`params` kind) whose time
                                   it matches on both CPU backends, on the same shape, approx; never fused
  flinear, fconv                -- F.linear / F.conv1d / F.conv2d with a weight of known shape: the linear /
                                   conv family, as the module of that weight would be
  stack                         -- torch.stack as the cat of the same tensors along `dim`
  einsum                        -- a two-operand torch.einsum that is a matrix product: matmul (linear
                                   without a batch index), approx
  add, cat, mean                -- two-tensor add; concat along channels; global/temporal mean as a pool
  mul, div                      -- mul: same shapes / per-channel broadcast / by a number; div: by a
                                   number as a mul (scalar), a tensor / tensor division is unmodelled
  layernorm, groupnorm          -- layernorm (rows = leading dims), groupnorm
  upsample                      -- nearest / (bi)linear upsampling (downsampling is unmodelled)
  sdpa                          -- F.scaled_dot_product_attention: attention
  mha, transformer_layer        -- nn.MultiheadAttention / nn.TransformerEncoderLayer priced whole (mha,
                                   transformer_encoder); these modules have children and are leaves of
                                   extraction's hook fallback too
  transformer                   -- nn.TransformerEncoder: one transformer_encoder per layer and a
                                   layernorm for its final norm
  free                          -- views, reshapes, eval dropout, copies (`params['copies']`: pads, pixel and
                                   channel shuffles, embedding lookups, .contiguous())
  unmodelled                    -- a known op no family prices (x - y, x.sum(...), ...)
`channels` (channel tracing, `graph.channels`):
  conv, linear, rnn             -- open a space (out channels / features / hidden units), read one
  bn                            -- reads the space on axis 1 (sliced with it)
  pass                          -- element-wise: the output carries the input's channels
  pool                          -- pass, unless it pools the channel axis
  binary                        -- two tensors: unite their spaces (they keep the same channels)
  cat                           -- along the channel axis: spaces side by side
  permute, transpose, unsqueeze -- move the channel axis
  flatten, view                 -- fold the axes after the channel axis into it (repeats each channel)
  reduce                        -- over axes other than the channel axis
  getitem                       -- tuple element, or slicing that leaves the channel axis whole
  query                         -- returns no tensor (x.size(), x.dim())
  fix                           -- known, but channels are not followed through it: fixed

Adding a layer type: one entry below (in MODULES, FUNCTIONS or METHODS) naming its rules; when it is
timed, its family in `fastdeepiot.families` too; a new rule (a new way to price, or to treat channels)
is one function in `graph.extract` / `graph.channels`, registered under the rule's name there.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

PRICE_RULES = ("conv", "convtranspose", "linear", "rnn", "batchnorm", "pool", "adaptive", "activation", "hardtanh", "add",
               "cat", "mean", "free", "unmodelled", "mul", "sub", "div", "layernorm", "groupnorm", "upsample", "sdpa",
               "mha", "transformer_layer", "transformer", "softmax", "matmul", "instancenorm", "standin",
               "flinear", "fconv", "stack", "einsum")
CHANNEL_RULES = ("conv", "linear", "rnn", "bn", "pass", "pool", "binary", "cat", "permute", "transpose",
                 "unsqueeze", "flatten", "view", "reduce", "getitem", "query", "fix")


@dataclass(frozen=True)
class Op:
    name: str  # how the vocabulary names it ('Conv2d', 'F.relu', '.view')
    price: str  # extraction rule (PRICE_RULES)
    channels: str  # channel rule (CHANNEL_RULES)
    family: str | None = None  # the family a 'layer' call of this op is priced with
    params: dict[str, Any] = field(default_factory=dict)  # fixed parameters (activation kind, pool mode)
    exact: bool = False  # module entries: only this exact type (a subclass is unknown)
    vanishes: bool = False  # a no-op in eval mode: dropped from exported graphs (fusion sees through it)

    def __post_init__(self):
        if self.price not in PRICE_RULES or self.channels not in CHANNEL_RULES:
            raise ValueError(f"op {self.name}: unknown rule {self.price!r} / {self.channels!r}")


def _act(name: str, kind: str, *, exact: bool = False) -> Op:
    return Op(name, "activation", "pass", "activation", {"kind": kind}, exact=exact)


def _standin(name: str, kind: str, *, square: bool = False) -> Op:
    """`square`: priced only as a square (a power of 2); any other exponent is unmodelled."""
    return Op(name, "standin", "pass", "activation", {"kind": kind, **({"square": True} if square else {})})


def _free(name: str, channels: str, *, copies: bool = False, vanishes: bool = False) -> Op:
    return Op(name, "free", channels, params={"copies": True} if copies else {}, vanishes=vanishes)


def _pool(name: str, rule: str, dim: int, mode: str) -> Op:
    return Op(name, rule, "pool", f"pool{dim}d", {"mode": mode})


# ---------------------------------------------------------------------------------------- modules
# Matched on the module's class and its bases (a Conv2d subclass is a Conv2d), except `exact` entries.

MODULES: dict[type, Op] = {
    nn.Conv1d: Op("Conv1d", "conv", "conv", "conv1d"),
    nn.Conv2d: Op("Conv2d", "conv", "conv", "conv2d"),
    nn.Linear: Op("Linear", "linear", "linear", "linear"),
    # (its channels are not followed: a decoder's upsampling layers are never pruned)
    nn.ConvTranspose1d: Op("ConvTranspose1d", "convtranspose", "fix", "conv_transpose1d"),
    nn.ConvTranspose2d: Op("ConvTranspose2d", "convtranspose", "fix", "conv_transpose2d"),
    nn.GRU: Op("GRU", "rnn", "rnn", "gru"),
    nn.LSTM: Op("LSTM", "rnn", "rnn", "lstm"),
    nn.BatchNorm1d: Op("BatchNorm1d", "batchnorm", "bn", "batchnorm"),
    nn.BatchNorm2d: Op("BatchNorm2d", "batchnorm", "bn", "batchnorm"),
    nn.MaxPool1d: _pool("MaxPool1d", "pool", 1, "max"),
    nn.MaxPool2d: _pool("MaxPool2d", "pool", 2, "max"),
    nn.AvgPool1d: _pool("AvgPool1d", "pool", 1, "avg"),
    nn.AvgPool2d: _pool("AvgPool2d", "pool", 2, "avg"),
    nn.AdaptiveAvgPool1d: _pool("AdaptiveAvgPool1d", "adaptive", 1, "avg"),
    nn.AdaptiveAvgPool2d: _pool("AdaptiveAvgPool2d", "adaptive", 2, "avg"),
    nn.AdaptiveMaxPool1d: _pool("AdaptiveMaxPool1d", "adaptive", 1, "max"),
    nn.AdaptiveMaxPool2d: _pool("AdaptiveMaxPool2d", "adaptive", 2, "max"),
    # normalisation, resampling, attention: channels not followed through them (unprunable)
    nn.LayerNorm: Op("LayerNorm", "layernorm", "fix", "layernorm"),
    nn.GroupNorm: Op("GroupNorm", "groupnorm", "fix", "groupnorm"),
    # InstanceNorm: groupnorm with a group per channel (with running statistics: unmodelled)
    nn.InstanceNorm1d: Op("InstanceNorm1d", "instancenorm", "fix", "groupnorm", {"dims": 1}),
    nn.InstanceNorm2d: Op("InstanceNorm2d", "instancenorm", "fix", "groupnorm", {"dims": 2}),
    nn.Upsample: Op("Upsample", "upsample", "fix", "upsample"),  # UpsamplingNearest2d / Bilinear2d too
    nn.MultiheadAttention: Op("MultiheadAttention", "mha", "fix", "mha"),
    nn.TransformerEncoderLayer: Op("TransformerEncoderLayer", "transformer_layer", "fix", "transformer_encoder"),
    nn.TransformerEncoder: Op("TransformerEncoder", "transformer", "fix", "transformer_encoder"),
    nn.Softmax: Op("Softmax", "softmax", "fix", "softmax", {"kind": "softmax"}, exact=True),
    nn.LogSoftmax: Op("LogSoftmax", "softmax", "fix", "softmax", {"kind": "log_softmax"}, exact=True),
    # activations: the exact class (a subclass may compute something else)
    nn.ReLU: _act("ReLU", "relu", exact=True),
    nn.ReLU6: _act("ReLU6", "relu6", exact=True),
    nn.LeakyReLU: _act("LeakyReLU", "leaky_relu", exact=True),
    nn.Hardswish: _act("Hardswish", "hardswish", exact=True),
    nn.Sigmoid: _act("Sigmoid", "sigmoid", exact=True),
    nn.Tanh: _act("Tanh", "tanh", exact=True),
    nn.GELU: _act("GELU", "gelu", exact=True),
    nn.SiLU: _act("SiLU", "silu", exact=True),
    nn.Hardsigmoid: _act("Hardsigmoid", "hardsigmoid", exact=True),
    nn.Hardtanh: Op("Hardtanh", "hardtanh", "pass", "activation", exact=True),
    nn.ELU: _act("ELU", "elu", exact=True),
    nn.SELU: _act("SELU", "selu", exact=True),
    nn.Softplus: _act("Softplus", "softplus", exact=True),  # any beta / threshold: the same pass
    nn.Mish: _act("Mish", "mish", exact=True),
    # a learned slope per channel: compression does not follow channels through it (it would have to slice
    # the slopes)
    nn.PReLU: Op("PReLU", "activation", "fix", "activation", {"kind": "prelu"}, exact=True),
    # copies: a new tensor written from the input's elements (priced as free ops, as .contiguous() is)
    nn.ZeroPad1d: _free("ZeroPad1d", "fix", copies=True), nn.ZeroPad2d: _free("ZeroPad2d", "fix", copies=True),
    nn.ConstantPad1d: _free("ConstantPad1d", "fix", copies=True),
    nn.ConstantPad2d: _free("ConstantPad2d", "fix", copies=True),
    nn.ReflectionPad1d: _free("ReflectionPad1d", "fix", copies=True),
    nn.ReflectionPad2d: _free("ReflectionPad2d", "fix", copies=True),
    nn.ReplicationPad1d: _free("ReplicationPad1d", "fix", copies=True),
    nn.ReplicationPad2d: _free("ReplicationPad2d", "fix", copies=True),
    nn.CircularPad1d: _free("CircularPad1d", "fix", copies=True),
    nn.CircularPad2d: _free("CircularPad2d", "fix", copies=True),
    nn.PixelShuffle: _free("PixelShuffle", "fix", copies=True),
    nn.PixelUnshuffle: _free("PixelUnshuffle", "fix", copies=True),
    nn.ChannelShuffle: _free("ChannelShuffle", "fix", copies=True),
    nn.Embedding: _free("Embedding", "fix", copies=True),
    nn.Identity: _free("Identity", "pass", vanishes=True),
    nn.Dropout: _free("Dropout", "pass", vanishes=True),
    nn.Dropout1d: _free("Dropout1d", "pass", vanishes=True),
    nn.Dropout2d: _free("Dropout2d", "pass", vanishes=True),
    nn.Dropout3d: _free("Dropout3d", "pass", vanishes=True),
    nn.AlphaDropout: _free("AlphaDropout", "pass", vanishes=True),
    nn.FeatureAlphaDropout: _free("FeatureAlphaDropout", "pass", vanishes=True),
    nn.Flatten: _free("Flatten", "flatten"),
    nn.Unflatten: _free("Unflatten", "fix"),
}

# -------------------------------------------------------------------------------------- functions

FUNCTIONS: dict[Callable, Op] = {
    F.relu: _act("F.relu", "relu"), torch.relu: _act("torch.relu", "relu"),
    F.relu_: _act("F.relu_", "relu"), torch.relu_: _act("torch.relu_", "relu"),
    F.relu6: _act("F.relu6", "relu6"), F.leaky_relu: _act("F.leaky_relu", "leaky_relu"),
    F.hardswish: _act("F.hardswish", "hardswish"),
    F.sigmoid: _act("F.sigmoid", "sigmoid"), torch.sigmoid: _act("torch.sigmoid", "sigmoid"),
    F.tanh: _act("F.tanh", "tanh"), torch.tanh: _act("torch.tanh", "tanh"),
    F.gelu: _act("F.gelu", "gelu"), F.silu: _act("F.silu", "silu"),
    F.hardsigmoid: _act("F.hardsigmoid", "hardsigmoid"),
    F.hardtanh: Op("F.hardtanh", "hardtanh", "pass", "activation"),
    F.hardtanh_: Op("F.hardtanh_", "hardtanh", "pass", "activation"),
    torch.clamp: Op("torch.clamp", "hardtanh", "pass", "activation"),
    torch.clip: Op("torch.clip", "hardtanh", "pass", "activation"),
    F.elu: _act("F.elu", "elu"), F.selu: _act("F.selu", "selu"), torch.selu: _act("torch.selu", "selu"),
    F.softplus: _act("F.softplus", "softplus"), F.mish: _act("F.mish", "mish"),
    F.prelu: Op("F.prelu", "activation", "fix", "activation", {"kind": "prelu"}),
    torch.prelu: Op("torch.prelu", "activation", "fix", "activation", {"kind": "prelu"}),
    # element-wise ops of one tensor no family times, priced as the profiled kind whose time they match on
    # both CPU backends (within 1.6x over three shapes: docs/results/standins_*.md); those that match none
    # (LogSigmoid, Hardshrink, sin, x ** 0.5, ...) stay unmodelled (ELU, Softplus and Mish, 2-13x apart from
    # every kind on one backend, became kinds of their own in session 23)
    torch.abs: _standin("torch.abs", "relu"), torch.neg: _standin("torch.neg", "relu"),
    operator.neg: _standin("-x", "relu"), torch.square: _standin("torch.square", "relu"),
    torch.reciprocal: _standin("torch.reciprocal", "relu"),
    torch.pow: _standin("torch.pow", "relu", square=True), operator.pow: _standin("**", "relu", square=True),
    torch.exp: _standin("torch.exp", "silu"), torch.sqrt: _standin("torch.sqrt", "sigmoid"),
    # comparisons with a number (masks: `tokens == 0`, `x > t`) as Sigmoid: bench/standins.py, session 23, found no
    # kind nearer on both backends (torch-cpu writes bools slowly: 2-5x a ReLU; ONNX Runtime's Greater is a ReLU);
    # a comparison of two tensors stays unmodelled
    **{f: _standin(n, "sigmoid") for n, f in (
        (">", operator.gt), (">=", operator.ge), ("<", operator.lt), ("<=", operator.le), ("==", operator.eq),
        ("!=", operator.ne), ("torch.gt", torch.gt), ("torch.ge", torch.ge), ("torch.lt", torch.lt),
        ("torch.le", torch.le), ("torch.eq", torch.eq), ("torch.ne", torch.ne))},
    torch.rsqrt: _standin("torch.rsqrt", "hardswish"), torch.erf: _standin("torch.erf", "gelu"),
    torch.log: _standin("torch.log", "gelu"),
    F.linear: Op("F.linear", "flinear", "fix", "linear"),
    F.conv1d: Op("F.conv1d", "fconv", "fix", "conv1d"), F.conv2d: Op("F.conv2d", "fconv", "fix", "conv2d"),
    F.pad: _free("F.pad", "fix", copies=True), F.pixel_shuffle: _free("F.pixel_shuffle", "fix", copies=True),
    F.pixel_unshuffle: _free("F.pixel_unshuffle", "fix", copies=True),
    F.channel_shuffle: _free("F.channel_shuffle", "fix", copies=True),
    F.embedding: _free("F.embedding", "fix", copies=True),
    torch.stack: Op("torch.stack", "stack", "fix", "concat"),
    torch.einsum: Op("torch.einsum", "einsum", "fix", "matmul"),
    getattr: _free("getattr", "fix"),  # an attribute read fx records as a call: x.mT, torch.max(..).values
    torch.clamp_min: Op("torch.clamp_min", "hardtanh", "pass", "activation"),
    torch.clamp_max: Op("torch.clamp_max", "hardtanh", "pass", "activation"),
    torch.special.erf: _standin("torch.special.erf", "gelu"),
    F.max_pool1d: _pool("F.max_pool1d", "pool", 1, "max"),
    F.max_pool2d: _pool("F.max_pool2d", "pool", 2, "max"),
    F.avg_pool1d: _pool("F.avg_pool1d", "pool", 1, "avg"),
    F.avg_pool2d: _pool("F.avg_pool2d", "pool", 2, "avg"),
    F.adaptive_avg_pool1d: _pool("F.adaptive_avg_pool1d", "adaptive", 1, "avg"),
    F.adaptive_avg_pool2d: _pool("F.adaptive_avg_pool2d", "adaptive", 2, "avg"),
    F.adaptive_max_pool1d: _pool("F.adaptive_max_pool1d", "adaptive", 1, "max"),
    F.adaptive_max_pool2d: _pool("F.adaptive_max_pool2d", "adaptive", 2, "max"),
    F.dropout: _free("F.dropout", "pass", vanishes=True),
    F.dropout1d: _free("F.dropout1d", "pass", vanishes=True),
    F.dropout2d: _free("F.dropout2d", "pass", vanishes=True),
    F.dropout3d: _free("F.dropout3d", "pass", vanishes=True),
    F.alpha_dropout: _free("F.alpha_dropout", "pass", vanishes=True),
    F.feature_alpha_dropout: _free("F.feature_alpha_dropout", "pass", vanishes=True),
    torch.clone: _free("torch.clone", "pass", copies=True),
    operator.add: Op("+", "add", "binary", "add"), operator.iadd: Op("+=", "add", "binary", "add"),
    torch.add: Op("torch.add", "add", "binary", "add"),
    operator.sub: Op("-", "sub", "binary", "mul"), operator.isub: Op("-=", "sub", "binary", "mul"),
    torch.sub: Op("torch.sub", "sub", "binary", "mul"),
    torch.subtract: Op("torch.subtract", "sub", "binary", "mul"),
    operator.mul: Op("*", "mul", "binary", "mul"), operator.imul: Op("*=", "mul", "binary", "mul"),
    torch.mul: Op("torch.mul", "mul", "binary", "mul"), torch.multiply: Op("torch.multiply", "mul", "binary", "mul"),
    operator.truediv: Op("/", "div", "binary", "mul"), operator.itruediv: Op("/=", "div", "binary", "mul"),
    torch.div: Op("torch.div", "div", "binary", "mul"),
    torch.true_divide: Op("torch.true_divide", "div", "binary", "mul"),
    F.layer_norm: Op("F.layer_norm", "layernorm", "fix", "layernorm"),
    F.group_norm: Op("F.group_norm", "groupnorm", "fix", "groupnorm"),
    F.interpolate: Op("F.interpolate", "upsample", "fix", "upsample"),
    F.upsample: Op("F.upsample", "upsample", "fix", "upsample"),
    F.scaled_dot_product_attention: Op("F.scaled_dot_product_attention", "sdpa", "fix", "attention"),
    F.softmax: Op("F.softmax", "softmax", "fix", "softmax", {"kind": "softmax"}),
    torch.softmax: Op("torch.softmax", "softmax", "fix", "softmax", {"kind": "softmax"}),
    F.log_softmax: Op("F.log_softmax", "softmax", "fix", "softmax", {"kind": "log_softmax"}),
    torch.log_softmax: Op("torch.log_softmax", "softmax", "fix", "softmax", {"kind": "log_softmax"}),
    operator.matmul: Op("@", "matmul", "fix", "matmul"), torch.matmul: Op("torch.matmul", "matmul", "fix", "matmul"),
    torch.bmm: Op("torch.bmm", "matmul", "fix", "matmul"),
    torch.cat: Op("torch.cat", "cat", "cat", "concat"),
    torch.concat: Op("torch.concat", "cat", "cat", "concat"),
    torch.concatenate: Op("torch.concatenate", "cat", "cat", "concat"),
    torch.permute: _free("torch.permute", "permute"),
    torch.transpose: _free("torch.transpose", "transpose"),
    torch.flatten: _free("torch.flatten", "flatten"),
    torch.unsqueeze: _free("torch.unsqueeze", "unsqueeze"),
    torch.reshape: _free("torch.reshape", "view"),
    operator.getitem: _free("[]", "getitem"),
    torch.squeeze: _free("torch.squeeze", "fix"), torch.chunk: _free("torch.chunk", "fix"),
    torch.split: _free("torch.split", "fix"), torch.unbind: _free("torch.unbind", "fix"),
    torch.t: _free("torch.t", "fix"), torch.narrow: _free("torch.narrow", "fix"),
    # reductions: pool1d or pool2d, the rule decides (a sum / amin priced as the mean / amax, approx)
    torch.mean: Op("torch.mean", "mean", "reduce", params={"mode": "avg"}),
    torch.sum: Op("torch.sum", "mean", "reduce", params={"mode": "avg", "exact": False}),
    torch.amax: Op("torch.amax", "mean", "reduce", params={"mode": "max"}),
    torch.amin: Op("torch.amin", "mean", "reduce", params={"mode": "max", "exact": False}),
    # torch.max(x, dim) / min: (values, indices) over one dimension, priced as the amax / amin (approx);
    # torch.max(a, b) of two tensors is element-wise and stays unmodelled (channels: fixed, either way)
    torch.max: Op("torch.max", "mean", "fix", params={"mode": "max", "exact": False}),
    torch.min: Op("torch.min", "mean", "fix", params={"mode": "max", "exact": False}),
}

# ---------------------------------------------------------------------------------------- methods

METHODS: dict[str, Op] = {
    "relu": _act(".relu", "relu"), "relu_": _act(".relu_", "relu"),
    "sigmoid": _act(".sigmoid", "sigmoid"), "sigmoid_": _act(".sigmoid_", "sigmoid"),
    "tanh": _act(".tanh", "tanh"), "tanh_": _act(".tanh_", "tanh"),
    "contiguous": _free(".contiguous", "pass", copies=True), "clone": _free(".clone", "pass", copies=True),
    "float": _free(".float", "pass"), "detach": _free(".detach", "pass"),
    "add": Op(".add", "add", "binary", "add"), "add_": Op(".add_", "add", "binary", "add"),
    "sub": Op(".sub", "sub", "binary", "mul"), "sub_": Op(".sub_", "sub", "binary", "mul"),
    "mul": Op(".mul", "mul", "binary", "mul"),
    "mul_": Op(".mul_", "mul", "binary", "mul"), "multiply": Op(".multiply", "mul", "binary", "mul"),
    "div": Op(".div", "div", "binary", "mul"), "div_": Op(".div_", "div", "binary", "mul"),
    "true_divide": Op(".true_divide", "div", "binary", "mul"),
    "softmax": Op(".softmax", "softmax", "fix", "softmax", {"kind": "softmax"}),
    "log_softmax": Op(".log_softmax", "softmax", "fix", "softmax", {"kind": "log_softmax"}),
    "matmul": Op(".matmul", "matmul", "fix", "matmul"), "bmm": Op(".bmm", "matmul", "fix", "matmul"),
    "view": _free(".view", "view"), "reshape": _free(".reshape", "view"),
    "flatten": _free(".flatten", "flatten"), "permute": _free(".permute", "permute"),
    "transpose": _free(".transpose", "transpose"), "unsqueeze": _free(".unsqueeze", "unsqueeze"),
    "squeeze": _free(".squeeze", "fix"), "chunk": _free(".chunk", "fix"), "split": _free(".split", "fix"),
    "unbind": _free(".unbind", "fix"), "view_as": _free(".view_as", "fix"),
    "reshape_as": _free(".reshape_as", "fix"), "expand": _free(".expand", "fix"), "t": _free(".t", "fix"),
    "narrow": _free(".narrow", "fix"), "unflatten": _free(".unflatten", "fix"),
    "mean": Op(".mean", "mean", "reduce", params={"mode": "avg"}),  # as torch.mean and the rest above
    "sum": Op(".sum", "mean", "reduce", params={"mode": "avg", "exact": False}),
    "amax": Op(".amax", "mean", "reduce", params={"mode": "max"}),
    "amin": Op(".amin", "mean", "reduce", params={"mode": "max", "exact": False}),
    "max": Op(".max", "mean", "fix", params={"mode": "max", "exact": False}),
    "min": Op(".min", "mean", "fix", params={"mode": "max", "exact": False}),
    "size": Op(".size", "free", "query"), "dim": Op(".dim", "free", "query"),
    "clamp": Op(".clamp", "hardtanh", "pass", "activation"), "clip": Op(".clip", "hardtanh", "pass", "activation"),
    "clamp_min": Op(".clamp_min", "hardtanh", "pass", "activation"),
    "clamp_max": Op(".clamp_max", "hardtanh", "pass", "activation"),
    "clamp_": Op(".clamp_", "hardtanh", "pass", "activation"), "clip_": Op(".clip_", "hardtanh", "pass", "activation"),
    "clamp_min_": Op(".clamp_min_", "hardtanh", "pass", "activation"),
    "clamp_max_": Op(".clamp_max_", "hardtanh", "pass", "activation"),
    "abs_": _standin(".abs_", "relu"), "neg_": _standin(".neg_", "relu"), "square_": _standin(".square_", "relu"),
    "reciprocal_": _standin(".reciprocal_", "relu"), "pow_": _standin(".pow_", "relu", square=True),
    "exp_": _standin(".exp_", "silu"), "sqrt_": _standin(".sqrt_", "sigmoid"),
    "rsqrt_": _standin(".rsqrt_", "hardswish"), "erf_": _standin(".erf_", "gelu"), "log_": _standin(".log_", "gelu"),
    "abs": _standin(".abs", "relu"), "neg": _standin(".neg", "relu"), "square": _standin(".square", "relu"),
    "reciprocal": _standin(".reciprocal", "relu"), "pow": _standin(".pow", "relu", square=True),
    "exp": _standin(".exp", "silu"), "sqrt": _standin(".sqrt", "sigmoid"), "rsqrt": _standin(".rsqrt", "hardswish"),
    "erf": _standin(".erf", "gelu"), "log": _standin(".log", "gelu"),
    **{m: _standin(f".{m}", "sigmoid") for m in ("gt", "ge", "lt", "le", "eq", "ne")},  # as the operators
}

# op names (LayerCall.op) of the calls that vanish from an exported eval-mode graph
NOOP_OPS = frozenset({op.name for op in MODULES.values() if op.vanishes}
                     | {f.__name__ for f, op in FUNCTIONS.items() if op.vanishes})
# op names (LayerCall.op) of the reductions priced as global pools (x.mean((2, 3)), torch.amax, ...): ONNX
# exports them as Reduce* ops, not as the pools they are priced as (graph.fusion: they run on NCHW in ORT)
# op names (LayerCall.op) priced as another kind's pass (`standin`): a backend fuses none of them
STANDIN_OPS = frozenset({op.name for op in MODULES.values() if op.price == "standin"}
                        | {getattr(f, "__name__", op.name) for f, op in FUNCTIONS.items() if op.price == "standin"}
                        | {name for name, op in METHODS.items() if op.price == "standin"})
REDUCTION_OPS = frozenset({f.__name__ for f, op in FUNCTIONS.items() if op.price == "mean"}
                          | {name for name, op in METHODS.items() if op.price == "mean"})


_PACK = _free("NamedTuple", "fix")  # what fx records when a forward builds a NamedTuple: no work


def module_op(m: nn.Module) -> Op | None:
    """The vocabulary entry of a module (its class or nearest registered base); None when unknown."""
    for cls in type(m).__mro__:
        op = MODULES.get(cls)
        if op is not None:
            return op if (cls is type(m) or not op.exact) else None
    return None


def node_op(node, modules: dict[str, nn.Module]) -> Op | None:
    """The vocabulary entry of an fx call node; None when unknown (and for placeholders, outputs)."""
    if node.op == "call_module":
        return module_op(modules[node.target])
    if node.op == "call_function":
        if isinstance(node.target, type) and issubclass(node.target, tuple) and hasattr(node.target, "_fields"):
            return _PACK  # a NamedTuple of the forward's values (torchvision's InceptionOutputs), a call of its class
        try:
            return FUNCTIONS.get(node.target)
        except TypeError:  # an unhashable target
            return None
    if node.op == "call_method":
        return METHODS.get(node.target)
    return None
