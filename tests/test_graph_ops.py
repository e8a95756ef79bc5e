"""The op vocabulary (graph/ops.py): every entry is understood by layer extraction and by channel
tracing, the way the entry says; an op it does not know stays unknown in both."""

from __future__ import annotations

import operator
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastdeepiot.families import ACTIVATIONS, FAMILIES
from fastdeepiot.graph import channels, extract, ops
from fastdeepiot.graph.calls import FREE, LAYER, UNMODELLED
from fastdeepiot.graph.channels import trace_channels
from fastdeepiot.graph.extract import extract_layers


def _expected_kind(entry: ops.Op) -> str:
    if entry.price == "free":
        return FREE
    if entry.price == "unmodelled" or (entry.price == "activation" and entry.params["kind"] not in ACTIVATIONS):
        return UNMODELLED
    return LAYER


def _all_entries():
    return ([(f"module:{k.__name__}", v) for k, v in ops.MODULES.items()]
            + [(f"function:{v.name}", v) for v in ops.FUNCTIONS.values()]
            + [(f"method:{k}", v) for k, v in ops.METHODS.items()])


@pytest.mark.parametrize("key,entry", _all_entries(), ids=[k for k, _ in _all_entries()])
def test_every_rule_has_an_implementation(key, entry):
    """Each entry's price rule is implemented by extraction and its channel rule by channel tracing
    (or is one of the rules the walker handles itself)."""
    if key.startswith("module:"):
        assert entry.price in extract._MODULE_PRICE
        assert entry.channels in channels._MODULE_RULES or entry.channels == "fix"
    else:
        assert entry.price in extract._FUNCTION_PRICE or entry.price == "unmodelled"
        assert entry.channels in channels._FUNCTION_RULES or entry.channels in ("getitem", "query", "fix")
    if entry.family is not None:
        assert entry.family in FAMILIES
    if entry.price == "activation":
        assert entry.family == "activation" and "kind" in entry.params


# ------------------------------------------------------------------------------------- modules


class _Net(nn.Module):
    """p (producer) -> op -> c (consumer): the op is a module attribute, so a call_module node `op`."""

    def __init__(self, p, op, c, call=None):
        super().__init__()
        self.p, self.op, self.c = p, op, c
        self.call = call

    def forward(self, x):
        y = self.p(x)
        y = self.call(self.op, y) if self.call is not None else self.op(y)
        return self.c(y)


def _img(op, cout=8):
    return _Net(nn.Conv2d(3, 8, 3, padding=1), op, nn.Conv2d(cout, 4, 1)), torch.randn(2, 3, 8, 8)


def _seq(op, cout=8):
    return _Net(nn.Conv1d(3, 8, 3, padding=1), op, nn.Conv1d(cout, 4, 1)), torch.randn(2, 3, 16)


def _rnn(op):
    return _Net(nn.Linear(5, 8), op, nn.Linear(8, 4), call=lambda m, y: m(y)[0]), torch.randn(2, 10, 5)


MODULE_CASES = {
    nn.Conv1d: lambda: _seq(nn.Conv1d(8, 8, 3, padding=1)),
    nn.Conv2d: lambda: _img(nn.Conv2d(8, 8, 3, padding=1)),
    nn.ConvTranspose2d: lambda: _img(nn.ConvTranspose2d(8, 8, 2, stride=2)),
    nn.ConvTranspose1d: lambda: _seq(nn.ConvTranspose1d(8, 8, 2, stride=2)),
    nn.Linear: lambda: (_Net(nn.Linear(5, 8), nn.Linear(8, 8), nn.Linear(8, 4)), torch.randn(2, 5)),
    nn.GRU: lambda: _rnn(nn.GRU(8, 8, batch_first=True)),
    nn.LSTM: lambda: _rnn(nn.LSTM(8, 8, batch_first=True)),
    nn.BatchNorm1d: lambda: _seq(nn.BatchNorm1d(8)),
    nn.BatchNorm2d: lambda: _img(nn.BatchNorm2d(8)),
    nn.MaxPool1d: lambda: _seq(nn.MaxPool1d(2)),
    nn.MaxPool2d: lambda: _img(nn.MaxPool2d(2)),
    nn.AvgPool1d: lambda: _seq(nn.AvgPool1d(2)),
    nn.AvgPool2d: lambda: _img(nn.AvgPool2d(2)),
    nn.AdaptiveAvgPool1d: lambda: _seq(nn.AdaptiveAvgPool1d(4)),
    nn.AdaptiveAvgPool2d: lambda: _img(nn.AdaptiveAvgPool2d(2)),
    nn.AdaptiveMaxPool1d: lambda: _seq(nn.AdaptiveMaxPool1d(4)),
    nn.AdaptiveMaxPool2d: lambda: _img(nn.AdaptiveMaxPool2d(2)),
    nn.ReLU: lambda: _img(nn.ReLU()),
    nn.ReLU6: lambda: _img(nn.ReLU6()),
    nn.LeakyReLU: lambda: _img(nn.LeakyReLU()),
    nn.Hardswish: lambda: _img(nn.Hardswish()),
    nn.Sigmoid: lambda: _img(nn.Sigmoid()),
    nn.Tanh: lambda: _img(nn.Tanh()),
    nn.GELU: lambda: _img(nn.GELU()),
    nn.SiLU: lambda: _img(nn.SiLU()),
    nn.ELU: lambda: _img(nn.ELU()),
    nn.SELU: lambda: _img(nn.SELU()),
    nn.Softplus: lambda: _img(nn.Softplus()),
    nn.Mish: lambda: _img(nn.Mish()),
    nn.PReLU: lambda: _img(nn.PReLU(8)),
    nn.Identity: lambda: _img(nn.Identity()),
    nn.Dropout: lambda: _img(nn.Dropout()),
    nn.Dropout1d: lambda: _seq(nn.Dropout1d()),
    nn.Dropout2d: lambda: _img(nn.Dropout2d()),
    nn.Dropout3d: lambda: (_Net(nn.Conv3d(3, 8, 1), nn.Dropout3d(), nn.Conv3d(8, 4, 1)), torch.randn(2, 3, 4, 4, 4)),
    nn.AlphaDropout: lambda: _img(nn.AlphaDropout()),
    nn.Flatten: lambda: (_Net(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16, 4)),
                         torch.randn(2, 3, 4, 4)),
    nn.Unflatten: lambda: (_Net(nn.Linear(5, 8), nn.Unflatten(1, (2, 4)), nn.Linear(4, 3)), torch.randn(2, 5)),
    # issue 17
    nn.Hardsigmoid: lambda: _img(nn.Hardsigmoid()),
    nn.FeatureAlphaDropout: lambda: _img(nn.FeatureAlphaDropout()),
    nn.LayerNorm: lambda: _seq(nn.LayerNorm(16)),
    nn.GroupNorm: lambda: _img(nn.GroupNorm(2, 8)),
    nn.Upsample: lambda: _img(nn.Upsample(scale_factor=2)),
    nn.MultiheadAttention: lambda: (_Net(nn.Linear(5, 8), nn.MultiheadAttention(8, 2, batch_first=True),
                                         nn.Linear(8, 4), call=lambda m, y: m(y, y, y)[0]), torch.randn(2, 10, 5)),
    nn.TransformerEncoderLayer: lambda: (_Net(nn.Linear(5, 8), nn.TransformerEncoderLayer(8, 2, 16, batch_first=True),
                                              nn.Linear(8, 4)), torch.randn(2, 10, 5)),
    nn.TransformerEncoder: lambda: (_Net(nn.Linear(5, 8), nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2, norm=nn.LayerNorm(8),
        enable_nested_tensor=False), nn.Linear(8, 4)), torch.randn(2, 10, 5)),
    nn.Softmax: lambda: _img(nn.Softmax(dim=1)),
    nn.InstanceNorm1d: lambda: _seq(nn.InstanceNorm1d(8)),
    nn.InstanceNorm2d: lambda: _img(nn.InstanceNorm2d(8, affine=True)),
    nn.LogSoftmax: lambda: _img(nn.LogSoftmax(dim=-1)),
    # a clamp, and free ops that copy
    nn.Hardtanh: lambda: _img(nn.Hardtanh()),
    nn.ZeroPad1d: lambda: _seq(nn.ZeroPad1d(1)), nn.ZeroPad2d: lambda: _img(nn.ZeroPad2d(1)),
    nn.ConstantPad1d: lambda: _seq(nn.ConstantPad1d(1, 0.5)), nn.ConstantPad2d: lambda: _img(nn.ConstantPad2d(1, 0.5)),
    nn.ReflectionPad1d: lambda: _seq(nn.ReflectionPad1d(1)), nn.ReflectionPad2d: lambda: _img(nn.ReflectionPad2d(1)),
    nn.ReplicationPad1d: lambda: _seq(nn.ReplicationPad1d(1)),
    nn.ReplicationPad2d: lambda: _img(nn.ReplicationPad2d(1)),
    nn.CircularPad1d: lambda: _seq(nn.CircularPad1d(1)), nn.CircularPad2d: lambda: _img(nn.CircularPad2d(1)),
    nn.PixelShuffle: lambda: _img(nn.PixelShuffle(2), cout=2),
    nn.PixelUnshuffle: lambda: _img(nn.PixelUnshuffle(2), cout=32),
    nn.ChannelShuffle: lambda: _img(nn.ChannelShuffle(2)),
    nn.Embedding: lambda: (_Net(nn.Identity(), nn.Embedding(10, 8), nn.Linear(8, 4)), torch.randint(0, 10, (2, 5))),
}


def test_every_module_entry_has_a_case():
    assert set(MODULE_CASES) == set(ops.MODULES)


def _prunable(cg, name: str) -> bool:
    return any(m.module == name for g in cg.groups() for m in g.producers)


@pytest.mark.parametrize("cls", list(MODULE_CASES), ids=lambda c: c.__name__)
def test_module_entry_understood_by_both(cls):
    entry = ops.MODULES[cls]
    net, x = MODULE_CASES[cls]()
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calls = {c.name: c for c in extract_layers(net, x)}
        cg = trace_channels(net, x)
    if cls is nn.TransformerEncoder:  # one call per layer, then its final norm
        assert [(n, c.family) for n, c in calls.items() if n.startswith("op.")] == [
            ("op.layers.0", "transformer_encoder"), ("op.layers.1", "transformer_encoder"), ("op.norm", "layernorm")]
        calls["op"] = calls["op.layers.0"]
    assert calls["op"].kind == _expected_kind(entry), calls["op"]
    if calls["op"].kind == LAYER:
        assert calls["op"].family == entry.family
    why = " | ".join(cg.why_fixed.values())
    assert "not understood" not in why
    if cls is nn.Embedding:  # it reads indices: no channel space flows into it
        assert not _prunable(cg, "p")
    elif entry.channels == "fix":
        assert not _prunable(cg, "p") and "channels are not followed" in why
    elif cls is nn.Dropout3d:  # Conv3d is not in the vocabulary: its channels are fixed
        assert not _prunable(cg, "p")
    else:  # the producer's channels flow through the op into a consumer: prunable
        assert _prunable(cg, "p"), why


# ------------------------------------------------------------------------------ functions, methods


class _Fn(nn.Module):
    """Two conv producers (2, 8, 6, 6), or (2, 8, 36) for the 1-D ops; `fn(x, y)` the op under test; the
    result is the output."""

    def __init__(self, fn, conv=nn.Conv2d):
        super().__init__()
        self.p, self.q = conv(3, 8, 3, padding=1), conv(3, 8, 3, padding=1)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.p(x), self.q(x))


FUNCTION_CASES = {
    F.relu: lambda x, y: F.relu(x), torch.relu: lambda x, y: torch.relu(x), torch.relu_: lambda x, y: torch.relu_(x),
    F.relu6: lambda x, y: F.relu6(x), F.leaky_relu: lambda x, y: F.leaky_relu(x),
    F.hardswish: lambda x, y: F.hardswish(x), F.sigmoid: lambda x, y: F.sigmoid(x),
    torch.sigmoid: lambda x, y: torch.sigmoid(x), F.tanh: lambda x, y: F.tanh(x),
    torch.tanh: lambda x, y: torch.tanh(x), F.gelu: lambda x, y: F.gelu(x), F.silu: lambda x, y: F.silu(x),
    F.elu: lambda x, y: F.elu(x), F.selu: lambda x, y: F.selu(x), torch.selu: lambda x, y: torch.selu(x),
    F.softplus: lambda x, y: F.softplus(x), F.mish: lambda x, y: F.mish(x),
    F.prelu: lambda x, y: F.prelu(x, torch.full((8,), 0.25)), torch.prelu: lambda x, y: torch.prelu(x, torch.full((1,), 0.25)),
    F.hardtanh: lambda x, y: F.hardtanh(x, 0.0, 6.0),
    F.hardtanh_: lambda x, y: F.hardtanh_(x, 0.0, 6.0),
    F.max_pool1d: lambda x, y: F.max_pool1d(x, 2), F.max_pool2d: lambda x, y: F.max_pool2d(x, 2),
    F.avg_pool1d: lambda x, y: F.avg_pool1d(x, 2), F.avg_pool2d: lambda x, y: F.avg_pool2d(x, 2),
    F.adaptive_avg_pool1d: lambda x, y: F.adaptive_avg_pool1d(x, 4),
    F.adaptive_avg_pool2d: lambda x, y: F.adaptive_avg_pool2d(x, 3),
    F.adaptive_max_pool1d: lambda x, y: F.adaptive_max_pool1d(x, 4),
    F.adaptive_max_pool2d: lambda x, y: F.adaptive_max_pool2d(x, 3),
    F.dropout: lambda x, y: F.dropout(x, 0.5, False), F.dropout1d: lambda x, y: F.dropout1d(x, 0.5, False),
    F.dropout2d: lambda x, y: F.dropout2d(x, 0.5, False), torch.clone: lambda x, y: torch.clone(x),
    operator.add: lambda x, y: x + y, operator.iadd: lambda x, y: operator.iadd(x, y),
    operator.gt: lambda x, y: x > 0.5, operator.ge: lambda x, y: x >= 0.5, operator.lt: lambda x, y: x < 0.5,
    operator.le: lambda x, y: x <= 0.5, operator.eq: lambda x, y: x == 0, operator.ne: lambda x, y: x != 0,
    torch.gt: lambda x, y: torch.gt(x, 0.5), torch.ge: lambda x, y: torch.ge(x, 0.5),
    torch.lt: lambda x, y: torch.lt(x, 0.5), torch.le: lambda x, y: torch.le(x, 0.5),
    torch.eq: lambda x, y: torch.eq(x, 0), torch.ne: lambda x, y: torch.ne(x, 0),
    torch.add: lambda x, y: torch.add(x, y), operator.sub: lambda x, y: x - y, torch.sub: lambda x, y: torch.sub(x, y),
    operator.isub: lambda x, y: operator.isub(x, y), torch.subtract: lambda x, y: torch.subtract(x, y),
    operator.mul: lambda x, y: x * y, torch.mul: lambda x, y: torch.mul(x, y),
    operator.imul: lambda x, y: operator.imul(x, y), torch.multiply: lambda x, y: torch.multiply(x, y),
    operator.truediv: lambda x, y: x / 2.0, torch.div: lambda x, y: torch.div(x, 2.0),
    operator.itruediv: lambda x, y: operator.itruediv(x, 2.0), torch.true_divide: lambda x, y: torch.true_divide(x, 2.0),
    # issue 17
    F.hardsigmoid: lambda x, y: F.hardsigmoid(x),
    F.dropout3d: lambda x, y: F.dropout3d(x.unsqueeze(2), 0.5, False),
    F.alpha_dropout: lambda x, y: F.alpha_dropout(x, 0.5, False),
    F.feature_alpha_dropout: lambda x, y: F.feature_alpha_dropout(x, 0.5, False),
    F.layer_norm: lambda x, y: F.layer_norm(x, (6,)), F.group_norm: lambda x, y: F.group_norm(x, 2),
    F.interpolate: lambda x, y: F.interpolate(x, scale_factor=2),
    F.upsample: lambda x, y: F.upsample(x, scale_factor=2),
    F.scaled_dot_product_attention: lambda x, y: F.scaled_dot_product_attention(x, y, y),
    torch.cat: lambda x, y: torch.cat([x, y], 1), torch.concat: lambda x, y: torch.concat([x, y], 1),
    torch.concatenate: lambda x, y: torch.concatenate([x, y], 1),
    torch.permute: lambda x, y: torch.permute(x, (0, 2, 3, 1)), torch.transpose: lambda x, y: torch.transpose(x, 1, 3),
    torch.flatten: lambda x, y: torch.flatten(x, 1), torch.unsqueeze: lambda x, y: torch.unsqueeze(x, 0),
    torch.reshape: lambda x, y: torch.reshape(x, (2, 288)), operator.getitem: lambda x, y: x[:, :, 0],
    torch.squeeze: lambda x, y: torch.squeeze(x, 0), torch.chunk: lambda x, y: torch.chunk(x, 2, 1)[0],
    torch.split: lambda x, y: torch.split(x, 4, 1)[0], torch.unbind: lambda x, y: torch.unbind(x, 1)[0],
    torch.t: lambda x, y: torch.t(x[0, 0]), torch.narrow: lambda x, y: torch.narrow(x, 1, 0, 4),
    torch.mean: lambda x, y: torch.mean(x, (2, 3)), torch.sum: lambda x, y: torch.sum(x, (2, 3)),
    torch.amax: lambda x, y: torch.amax(x, (2, 3)), torch.amin: lambda x, y: torch.amin(x, (2, 3)),
    F.softmax: lambda x, y: F.softmax(x, -1), torch.softmax: lambda x, y: torch.softmax(x, 1),
    F.log_softmax: lambda x, y: F.log_softmax(x, dim=-1), torch.log_softmax: lambda x, y: torch.log_softmax(x, -1),
    operator.matmul: lambda x, y: x @ y.transpose(-2, -1), torch.matmul: lambda x, y: torch.matmul(x, y),
    torch.bmm: lambda x, y: torch.bmm(x.flatten(0, 1), y.flatten(0, 1)),
    torch.clamp: lambda x, y: torch.clamp(x, 0.0, 1.0), torch.clip: lambda x, y: torch.clip(x, -1.0, 1.0),
    torch.abs: lambda x, y: torch.abs(x), torch.neg: lambda x, y: torch.neg(x), operator.neg: lambda x, y: -x,
    torch.square: lambda x, y: torch.square(x), torch.reciprocal: lambda x, y: torch.reciprocal(x),
    torch.pow: lambda x, y: torch.pow(x, 2), operator.pow: lambda x, y: x ** 2, torch.exp: lambda x, y: torch.exp(x),
    torch.sqrt: lambda x, y: torch.sqrt(x), torch.rsqrt: lambda x, y: torch.rsqrt(x),
    torch.erf: lambda x, y: torch.erf(x), torch.log: lambda x, y: torch.log(x),
    torch.max: lambda x, y: torch.max(x.flatten(2), 2)[0], torch.min: lambda x, y: torch.min(x.flatten(2), 2)[0],
    F.linear: lambda x, y: F.linear(x, y.flatten(0, 2)[:6]),
    F.conv1d: lambda x, y: F.conv1d(x.flatten(2), y[:, :, 0, :3]), F.conv2d: lambda x, y: F.conv2d(x, y[:, :, :3, :3]),
    F.pad: lambda x, y: F.pad(x, (1, 1)), F.pixel_shuffle: lambda x, y: F.pixel_shuffle(x, 2),
    F.pixel_unshuffle: lambda x, y: F.pixel_unshuffle(x, 2), F.channel_shuffle: lambda x, y: F.channel_shuffle(x, 2),
    F.embedding: lambda x, y: F.embedding(torch.zeros(2, 3, dtype=torch.long), y.flatten(1)),
    torch.stack: lambda x, y: torch.stack([x, y], 1),
    torch.einsum: lambda x, y: torch.einsum("bcij,bcjk->bcik", x, y),
    getattr: lambda x, y: x.mT, torch.clamp_min: lambda x, y: torch.clamp_min(x, 0.0),
    torch.clamp_max: lambda x, y: torch.clamp_max(x, 6.0), torch.special.erf: lambda x, y: torch.special.erf(x),
}
METHOD_CASES = {
    "gt": lambda x, y: x.gt(0.5), "ge": lambda x, y: x.ge(0.5), "lt": lambda x, y: x.lt(0.5),
    "le": lambda x, y: x.le(0.5), "eq": lambda x, y: x.eq(0), "ne": lambda x, y: x.ne(0),
    "relu": lambda x, y: x.relu(), "relu_": lambda x, y: x.relu_(), "sigmoid": lambda x, y: x.sigmoid(),
    "sigmoid_": lambda x, y: x.sigmoid_(), "tanh": lambda x, y: x.tanh(), "tanh_": lambda x, y: x.tanh_(),
    "contiguous": lambda x, y: x.contiguous(), "clone": lambda x, y: x.clone(), "float": lambda x, y: x.float(),
    "detach": lambda x, y: x.detach(), "add": lambda x, y: x.add(y), "add_": lambda x, y: x.add_(y),
    "sub": lambda x, y: x.sub(y), "sub_": lambda x, y: x.sub_(y), "mul": lambda x, y: x.mul(y),
    "mul_": lambda x, y: x.mul_(y),
    "multiply": lambda x, y: x.multiply(y), "div": lambda x, y: x.div(2.0), "div_": lambda x, y: x.div_(2.0),
    "true_divide": lambda x, y: x.true_divide(2.0), "softmax": lambda x, y: x.softmax(-1),
    "log_softmax": lambda x, y: x.log_softmax(1), "matmul": lambda x, y: x.matmul(y),
    "bmm": lambda x, y: x.flatten(0, 1).bmm(y.flatten(0, 1)), "view": lambda x, y: x.view(2, 288),
    "reshape": lambda x, y: x.reshape(2, 288),
    "flatten": lambda x, y: x.flatten(1), "permute": lambda x, y: x.permute(0, 2, 3, 1),
    "transpose": lambda x, y: x.transpose(1, 3), "unsqueeze": lambda x, y: x.unsqueeze(0),
    "squeeze": lambda x, y: x.squeeze(0), "chunk": lambda x, y: x.chunk(2, 1)[0],
    "split": lambda x, y: x.split(4, 1)[0], "unbind": lambda x, y: x.unbind(1)[0],
    "view_as": lambda x, y: x.view_as(y), "reshape_as": lambda x, y: x.reshape_as(y),
    "expand": lambda x, y: x.expand(2, 8, 6, 6), "t": lambda x, y: x[0, 0].t(),
    "narrow": lambda x, y: x.narrow(1, 0, 4), "unflatten": lambda x, y: x.unflatten(1, (2, 4)),
    "mean": lambda x, y: x.mean((2, 3)), "sum": lambda x, y: x.sum((2, 3)), "amax": lambda x, y: x.amax((2, 3)),
    "amin": lambda x, y: x.amin((2, 3)), "size": lambda x, y: x.view(x.size(0), -1),
    "dim": lambda x, y: x.reshape(2, x.dim() * 72),
    "clamp": lambda x, y: x.clamp(0, 1), "clip": lambda x, y: x.clip(-1, 1), "clamp_min": lambda x, y: x.clamp_min(0),
    "abs": lambda x, y: x.abs(), "neg": lambda x, y: x.neg(), "square": lambda x, y: x.square(),
    "reciprocal": lambda x, y: x.reciprocal(), "pow": lambda x, y: x.pow(2), "exp": lambda x, y: x.exp(),
    "sqrt": lambda x, y: x.sqrt(), "rsqrt": lambda x, y: x.rsqrt(), "erf": lambda x, y: x.erf(),
    "log": lambda x, y: x.log(), "max": lambda x, y: x.flatten(2).max(2)[0], "min": lambda x, y: x.flatten(2).min(2)[0],
    "clamp_max": lambda x, y: x.clamp_max(6), "clamp_": lambda x, y: x.clamp_(0, 6), "clip_": lambda x, y: x.clip_(0, 6),
    "clamp_min_": lambda x, y: x.clamp_min_(0), "clamp_max_": lambda x, y: x.clamp_max_(6),
    "abs_": lambda x, y: x.abs_(), "neg_": lambda x, y: x.neg_(), "square_": lambda x, y: x.square_(),
    "reciprocal_": lambda x, y: x.reciprocal_(), "pow_": lambda x, y: x.pow_(2), "exp_": lambda x, y: x.exp_(),
    "sqrt_": lambda x, y: x.sqrt_(), "rsqrt_": lambda x, y: x.rsqrt_(), "erf_": lambda x, y: x.erf_(),
    "log_": lambda x, y: x.log_(),
}


def test_every_function_and_method_entry_has_a_case():
    assert set(FUNCTION_CASES) == set(ops.FUNCTIONS)
    assert set(METHOD_CASES) == set(ops.METHODS)


def _fn_cases():
    return ([(f"function:{ops.FUNCTIONS[f].name}", ops.FUNCTIONS[f], fn) for f, fn in FUNCTION_CASES.items()]
            + [(f"method:{m}", ops.METHODS[m], fn) for m, fn in METHOD_CASES.items()])


@pytest.mark.parametrize("key,entry,fn", _fn_cases(), ids=[k for k, _, _ in _fn_cases()])
def test_function_entry_understood_by_both(key, entry, fn):
    if entry.family == "pool1d" or entry.name == "F.dropout1d":
        net, x = _Fn(fn, nn.Conv1d).eval(), torch.randn(2, 3, 36)
    else:
        net, x = _Fn(fn).eval(), torch.randn(2, 3, 6, 6)
    calls = [c for c in extract_layers(net, x) if c.name not in ("p", "q")]
    cg = trace_channels(net, x)
    assert calls
    if entry.channels != "query":  # the op under test is the first call after the producers (and their views)
        if _expected_kind(entry) != FREE:
            calls = [c for c in calls if c.kind != FREE] or calls
        assert calls[0].kind == _expected_kind(entry), calls[0]
        if calls[0].kind == LAYER and entry.family is not None:
            assert calls[0].family == entry.family
    why = list(cg.why_fixed.values())
    assert not any("unknown op" in w for w in why), why
    if entry.channels == "fix":  # channels are fixed at the op, before the network output
        assert not any(w == "network output" for w in why), why


# ------------------------------------------------------------------------------------ unknown ops


class _Scale(nn.Module):
    """A custom module with its own parameter: traced into (a multiply by a parameter)."""

    def __init__(self, n):
        super().__init__()
        self.w = nn.Parameter(torch.ones(n, 1, 1))

    def forward(self, x):
        return x * self.w


class _MyReLU(nn.ReLU):
    """A subclass of an exact activation entry, with a parameter of its own: traced into."""

    def __init__(self):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.relu(x + self.shift)


@pytest.mark.parametrize("make", [lambda: _img(_Scale(8)), lambda: _img(_MyReLU())], ids=["custom", "relu-subclass"])
def test_custom_module_is_traced_into_by_both(make):
    """A custom module (not torch.nn's) holding a parameter is traced into: extraction prices its ops
    (a multiply or a broadcast add of the parameter, priced as mul), channel tracing fixes the channels
    that meet the parameter (surgery cannot prune it)."""
    net, x = make()
    net.eval()
    assert ops.module_op(net.op) is None
    calls = extract_layers(net, x)
    assert not calls.unmodelled() and any(c.family == "mul" for c in calls if c.kind == LAYER)
    cg = trace_channels(net, x)
    assert not _prunable(cg, "p")
    assert any("fixed tensor" in w for w in cg.why_fixed.values()), cg.why_fixed


@pytest.mark.parametrize("make", [lambda: _img(nn.Hardshrink()), lambda: _img(nn.LogSigmoid())],
                         ids=["hardshrink", "logsigmoid"])
def test_unknown_module_stays_unknown_in_both(make):
    net, x = make()
    net.eval()
    assert ops.module_op(net.op) is None
    calls = {c.name: c for c in extract_layers(net, x)}
    assert calls["op"].kind == UNMODELLED
    cg = trace_channels(net, x)
    assert not _prunable(cg, "p")
    assert any("not understood" in w for w in cg.why_fixed.values())


def test_unknown_function_stays_unknown_in_both():
    net, x = _Fn(lambda a, b: torch.sin(a)).eval(), torch.randn(2, 3, 6, 6)
    calls = [c for c in extract_layers(net, x) if c.name not in ("p", "q")]
    assert calls[0].kind == UNMODELLED and calls[0].op == "sin"
    cg = trace_channels(net, x)
    assert any("unknown op sin" in w for w in cg.why_fixed.values())


def test_silu_is_one_entry_for_both():
    """SiLU: channel tracing passes it; extraction prices it as an activation (kind silu, issue 17)."""
    net, x = _img(nn.SiLU())
    calls = {c.name: c for c in extract_layers(net.eval(), x)}
    assert calls["op"].kind == LAYER and calls["op"].config.params["kind"] == "silu"
    assert _prunable(trace_channels(net, x), "p")


def test_session_23_activation_kinds_are_layers():
    """ELU, SELU, Softplus and Mish are activation kinds (channels pass through them: prunable); PReLU too, but
    its per-channel slopes fix the channels (compression would have to slice them)."""
    for act, kind in ((nn.ELU(), "elu"), (nn.SELU(), "selu"), (nn.Softplus(beta=2.0), "softplus"), (nn.Mish(), "mish")):
        net, x = _img(act)
        op = {c.name: c for c in extract_layers(net.eval(), x)}["op"]
        assert op.kind == LAYER and op.config.params["kind"] == kind and not op.approx
        assert _prunable(trace_channels(net, x), "p")
    net, x = _img(nn.PReLU(8))
    op = {c.name: c for c in extract_layers(net.eval(), x)}["op"]
    assert op.kind == LAYER and op.config.params["kind"] == "prelu"
    assert not _prunable(trace_channels(net, x), "p")


def test_whole_modules_are_hook_leaves():
    """MultiheadAttention / TransformerEncoder(Layer) have children but are priced whole, also when
    tracing fails and extraction falls back to forward hooks."""
    assert all(extract._is_hook_leaf(m) for m in (nn.MultiheadAttention(8, 2), nn.TransformerEncoderLayer(8, 2, 16),
                                                   nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 1,
                                                                         enable_nested_tensor=False)))
    assert not extract._is_hook_leaf(nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize("fn,mode,approx", [
    (lambda a, b: a / b, "same", True),  # a division by a tensor: priced as the multiply
    (lambda a, b: a - b, "same", True),
    (lambda a, b: 1.0 - a, "scalar", True),
    (lambda a, b: a * (a.size(-1) ** -0.5), "scalar", False),  # a number traced from a shape
    (lambda a, b: a / a.size(1), "scalar", False),
    (lambda a, b: a + b.mean((2, 3), keepdim=True), "channel", True),  # a broadcast add
    (lambda a, b: a * b.mean((2, 3), keepdim=True), "channel", False),  # squeeze-excitation's scale
    (lambda a, b: a * b[:, :1], "channel", True),  # another broadcast: priced as a per-channel scale
    (lambda a, b: a + b[:1, :1, :1, :1], "scalar", True),
], ids=["div", "sub", "rsub-number", "mul-traced-number", "div-traced-number", "add-broadcast", "mul-se",
        "mul-broadcast", "add-one-element"])
def test_element_wise_binary_ops_are_priced_as_mul(fn, mode, approx):
    net, x = _Fn(fn).eval(), torch.randn(2, 3, 6, 6)
    calls = [c for c in extract_layers(net, x) if c.name not in ("p", "q") and c.kind != FREE]
    binary = [c for c in calls if c.op in ("add", "sub", "mul", "div")]
    assert len(binary) == 1 and binary[0].kind == LAYER, calls
    c = binary[0]
    assert c.family == "mul" and c.config.params["mode"] == mode and c.approx == approx, (c.config, c.note)
    assert c.config.params["channels"] == 8 and c.config.params["batch"] == 2


def test_a_plain_add_stays_the_add_family_and_rounding_division_unmodelled():
    net, x = _Fn(lambda a, b: a + b).eval(), torch.randn(2, 3, 6, 6)
    assert [c.family for c in extract_layers(net, x) if c.op == "add"] == ["add"]
    net = _Fn(lambda a, b: torch.div(a, b, rounding_mode="floor")).eval()
    assert [c.kind for c in extract_layers(net, x) if c.op == "div"] == [UNMODELLED]


def test_noop_ops_are_the_vanishing_entries():
    assert {"Identity", "Dropout", "dropout"} <= ops.NOOP_OPS
    assert "ReLU" not in ops.NOOP_OPS


@pytest.mark.parametrize("fn,family,params,approx", [
    (lambda a, b: a @ b.transpose(-2, -1), "matmul", {"batch": 16, "m": 6, "k": 6, "n": 6}, False),
    (lambda a, b: torch.matmul(a.flatten(2), b.flatten(2).transpose(1, 2)), "matmul",
     {"batch": 2, "m": 8, "k": 36, "n": 8}, False),
    (lambda a, b: a.flatten(2).transpose(1, 2) @ torch.ones(8, 5), "linear",
     {"batch": 72, "in_features": 8, "out_features": 5}, False),  # by a weight: the Linear's GEMM
    (lambda a, b: a.softmax(-1), "softmax", {"kind": "softmax", "batch": 2, "seq_len": 48, "features": 6}, False),
    (lambda a, b: F.log_softmax(a, dim=1), "softmax", {"kind": "log_softmax", "batch": 2, "seq_len": 36,
                                                        "features": 8}, True),
], ids=["scores", "flattened", "by-weight", "softmax-last", "log-softmax-channels"])
def test_hand_written_attention_ops_are_priced(fn, family, params, approx):
    """matmul (batched: the matmul family; by a 2-D tensor: linear) and softmax over any dimension."""
    net, x = _Fn(fn).eval(), torch.randn(2, 3, 6, 6)
    calls = [c for c in extract_layers(net, x) if c.name not in ("p", "q") and c.kind != FREE]
    assert len(calls) == 1 and calls[0].kind == LAYER, calls
    assert (calls[0].family, calls[0].config.params, calls[0].approx) == (family, params, approx)
    assert FAMILIES[family].check(dict(params))  # inside the family's space


@pytest.mark.parametrize("fn,mode,approx", [
    (lambda a, b: a.mean((2, 3)), "avg", True), (lambda a, b: a.sum((2, 3), keepdim=True), "avg", True),
    (lambda a, b: torch.amax(a, (-2, -1)), "max", True), (lambda a, b: a.permute(0, 2, 3, 1).mean((1, 2)), "avg", True),
], ids=["mean", "sum", "amax", "channels-last-mean"])
def test_reductions_over_the_trailing_dimensions_are_global_pools(fn, mode, approx):
    net, x = _Fn(fn).eval(), torch.randn(2, 3, 6, 6)
    calls = [c for c in extract_layers(net, x) if c.name not in ("p", "q") and c.kind != FREE]
    assert calls[0].family == "pool2d" and calls[0].approx == approx
    assert {k: calls[0].config.params[k] for k in ("mode", "channels", "kernel", "size")} == {
        "mode": mode, "channels": 8, "kernel": 6, "size": 6}
    whole = [c for c in extract_layers(_Fn(lambda a, b: a.sum()).eval(), x) if c.op == "sum"]
    assert whole[0].kind == UNMODELLED  # a reduction to one number: not a pool


def test_instance_norm_is_groupnorm_with_a_group_per_channel():
    net, x = _img(nn.InstanceNorm2d(8))
    c = {c.name: c for c in extract_layers(net.eval(), x)}["op"]
    assert (c.family, c.config.params["groups"], c.config.params["channels"]) == ("groupnorm", 8, 8)
    net, x = _img(nn.InstanceNorm2d(8, track_running_stats=True))
    assert {c.name: c for c in extract_layers(net.eval(), x)}["op"].kind == UNMODELLED
