"""Random networks assembled from the layer families, for fitting the network-level composition.

The profiler measures these whole networks (next to the single layers) so that the time model can
learn what composing layers adds or removes: per-call overhead, fusion effects, cache effects between
consecutive layers. They are not the zoo networks (`fastdeepiot.zoo`, used only for
evaluation): random block sequences, random kernels (1/3/5/7), odd widths, every activation kind,
pre-activation convs, standalone BN, multi-kernel conv forks joined by concat, single-conv residuals,
LSTM as well as GRU heads.

Each network draws a *style* first (version 2): how many activation kinds and kernel sizes it uses (a
real network uses one or two of each; a third of the random ones use any), how often its convs carry
BN, and how often a shape-preserving block repeats. This matters for the composition: on torch-cpu a
layer runs slower inside a network that mixes many different kernels than in a standalone loop or in a
network that repeats a few (GELU 9 us standalone, 19-25 us inside a mixed network; ReLU +1 us inside a
ResNet), so the fitted networks must span both homogeneous and mixed networks.

  random_network(seed, kind) -> (module, example_input, spec)   kind: 'image' | 'sensor'
  build_network(spec)        -> module                            identical architecture and weights
  example_input(spec)        -> tensor                            deterministic from spec['seed']

`spec` is plain JSON (ints, strings, lists, dicts). Weights are drawn from spec['seed'], so
`build_network(spec)` twice gives the same outputs on the same input. The architecture is sized by a
MAC budget (log-uniform 0.3M-25M multiply-accumulates) so a forward takes ~0.2-20 ms on one thread. Half
the MLPs have a weight budget instead (2.5M-20M weights, 10-80 MB) and three heads in ten are wide (up to
36 MiB): networks larger than a CPU's last-level cache, whose layers read their weights from memory inside
the network but from cache when timed alone (the composition's `cold_weights` term). A quarter of the
networks of every other style are deep (`DEEP_SHARE`): 3-6 times the repeats and the budget, 20-500 layer
calls, as deep as the CNNs people run.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn as nn

from fastdeepiot.families import conv_out_size

SPEC_VERSION = 3  # 2: per-network palettes and repeats; 3: architecture styles (STYLES), batch > 1
_ACT_CLS = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "leaky_relu": nn.LeakyReLU, "hardswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "hardsigmoid": nn.Hardsigmoid,
}


def _act(kind: str | None) -> nn.Module:
    return _ACT_CLS[kind]() if kind else nn.Identity()


def _conv_out(size: int, k: int, s: int) -> int:
    """A "same"-padded convolution's output size (the only padding the generator uses)."""
    return conv_out_size(size, k, s, k // 2)


# ------------------------------------------------------------------------------------ blocks


def _conv(dim, cin, cout, k, s=1, g=1, bias=False) -> nn.Module:
    return (nn.Conv2d if dim == 2 else nn.Conv1d)(cin, cout, k, stride=s, padding=k // 2, groups=g, bias=bias)


def _bn(dim, c) -> nn.Module:
    return (nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d)(c)


def _cba(dim, cin, cout, k, s=1, g=1, act=None) -> nn.Sequential:
    return nn.Sequential(_conv(dim, cin, cout, k, s, g), _bn(dim, cout), _act(act))


def _global_pool(dim, mode="avg") -> nn.Module:
    if mode == "avg":
        return nn.AdaptiveAvgPool2d(1) if dim == 2 else nn.AdaptiveAvgPool1d(1)
    return nn.AdaptiveMaxPool2d(1) if dim == 2 else nn.AdaptiveMaxPool1d(1)


class ConvBlock(nn.Module):
    """conv -> [bn] -> [act], or pre-activation: [bn] -> [act] -> conv."""

    def __init__(self, dim, cin, b):
        super().__init__()
        conv = _conv(dim, cin, b["cout"], b["k"], b["stride"], b["groups"], bias=not b["bn"])
        bn = _bn(dim, cin if b["preact"] else b["cout"])
        if b["preact"]:
            self.seq = nn.Sequential(*([bn] if b["bn"] else []), _act(b["act"]), conv)
        else:
            self.seq = nn.Sequential(conv, *([bn] if b["bn"] else []), _act(b["act"]))

    def forward(self, x):
        return self.seq(x)


class PoolBlock(nn.Module):
    def __init__(self, dim, b):
        super().__init__()
        if dim == 2:
            cls = nn.MaxPool2d if b["mode"] == "max" else nn.AvgPool2d
        else:
            cls = nn.MaxPool1d if b["mode"] == "max" else nn.AvgPool1d
        self.pool = cls(b["k"], b["stride"])

    def forward(self, x):
        return self.pool(x)


class BnActBlock(nn.Module):
    def __init__(self, dim, c, b):
        super().__init__()
        self.bn = _bn(dim, c)
        self.act = _act(b["act"])

    def forward(self, x):
        return self.act(self.bn(x))


class ResBlock(nn.Module):
    """x + bn(conv_k(x)) [-> act]: one (optionally depthwise) conv with a residual join."""

    def __init__(self, dim, c, b):
        super().__init__()
        self.conv = _conv(dim, c, c, b["k"], g=c if b["depthwise"] else 1)
        self.bn = _bn(dim, c)
        self.act = _act(b["act"])

    def forward(self, x):
        return self.act(x + self.bn(self.conv(x)))


class ForkCat(nn.Module):
    """Parallel conv -> act branches with different kernels, concatenated along channels."""

    def __init__(self, dim, cin, b):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(_conv(dim, cin, br["cout"], br["k"], bias=True), _act(b["act"]))
            for br in b["branches"])

    def forward(self, x):
        return torch.cat([br(x) for br in self.branches], dim=1)


class RNNBlock(nn.Module):
    """(B, C, L) -> RNN over L -> last step (B, hidden)."""

    def __init__(self, c, b):
        super().__init__()
        cls = nn.GRU if b["cell"] == "gru" else nn.LSTM
        self.rnn = cls(c, b["hidden"], num_layers=b["layers"], batch_first=True)

    def forward(self, x):
        out, _ = self.rnn(x.permute(0, 2, 1))
        return out[:, -1]


class SqueezeExcite(nn.Module):
    """x * gate(fc2(act(fc1(global average of x)))): 1x1 convs (MobileNet-V3, EfficientNet) or Linear."""

    def __init__(self, dim, c, squeeze, act, gate, impl):
        super().__init__()
        self.dim, self.impl = dim, impl
        self.pool = _global_pool(dim)
        if impl == "conv":
            self.fc1, self.fc2 = _conv(dim, c, squeeze, 1, bias=True), _conv(dim, squeeze, c, 1, bias=True)
        else:
            self.fc1, self.fc2 = nn.Linear(c, squeeze), nn.Linear(squeeze, c)
        self.act, self.gate = _act(act), _act(gate)

    def forward(self, x):
        s = self.pool(x)
        if self.impl != "conv":
            s = torch.flatten(s, 1)
        s = self.gate(self.fc2(self.act(self.fc1(s))))
        if self.impl != "conv":
            s = s.view(s.shape[0], s.shape[1], *([1] * self.dim))
        return x * s


class InvertedResidualBlock(nn.Module):
    def __init__(self, dim, cin, b):
        super().__init__()
        hid = cin * b["expand"]
        layers = [_cba(dim, cin, hid, 1, act=b["act"])] if b["expand"] != 1 else []
        layers.append(_cba(dim, hid, hid, b["k"], b["stride"], hid, b["act"]))
        if b["se"]:
            layers.append(SqueezeExcite(dim, hid, b["se"], b["act"], b["gate"], b["se_impl"]))
        layers.append(_cba(dim, hid, b["cout"], 1))
        self.body = nn.Sequential(*layers)
        self.residual = b["stride"] == 1 and cin == b["cout"]

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class ShuffleBlock(nn.Module):
    """ShuffleNet-V2 unit: stride 1 splits the channels and transforms one half; stride 2 transforms
    both (one branch depthwise + 1x1); concat, then a channel shuffle of two groups."""

    def __init__(self, dim, cin, b):
        super().__init__()
        half, k, s, act = b["cout"] // 2, b["k"], b["stride"], b["act"]
        self.split = s == 1
        bin_ = cin // 2 if self.split else cin
        self.branch = nn.Sequential(_cba(dim, bin_, half, 1, act=act), _cba(dim, half, half, k, s, half),
                                    _cba(dim, half, half, 1, act=act))
        self.shortcut = None if self.split else nn.Sequential(_cba(dim, cin, cin, k, s, cin),
                                                              _cba(dim, cin, half, 1, act=act))

    def forward(self, x):
        if self.split:
            a, b = x.chunk(2, dim=1)
            y = torch.cat([a, self.branch(b)], dim=1)
        else:
            y = torch.cat([self.shortcut(x), self.branch(x)], dim=1)
        return y.unflatten(1, (2, -1)).transpose(1, 2).flatten(1, 2)


class DenseBlock(nn.Module):
    """DenseNet: each layer (BN-act-1x1-BN-act-3x3, or BN-act-3x3) adds `growth` channels by concat."""

    def __init__(self, dim, cin, b):
        super().__init__()
        g, act = b["growth"], b["act"]
        self.layers = nn.ModuleList()
        for i in range(b["layers"]):
            c = cin + i * g
            if b["bottleneck"]:
                layer = nn.Sequential(_bn(dim, c), _act(act), _conv(dim, c, 4 * g, 1),
                                      _bn(dim, 4 * g), _act(act), _conv(dim, 4 * g, g, 3))
            else:
                layer = nn.Sequential(_bn(dim, c), _act(act), _conv(dim, c, g, 3))
            self.layers.append(layer)

    def forward(self, x):
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class SepBlock(nn.Module):
    """Depthwise k x k - BN - act, pointwise 1x1 - BN - act; a residual add when shapes allow."""

    def __init__(self, dim, cin, b):
        super().__init__()
        self.body = nn.Sequential(_cba(dim, cin, cin, b["k"], b["stride"], cin, b["act"]),
                                  _cba(dim, cin, b["cout"], 1, act=b["act"]))
        self.residual = b["residual"]

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class FcBlock(nn.Module):
    def __init__(self, f, b):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(f, b["out"]), *([nn.LayerNorm(b["out"])] if b["ln"] else []),
                                 _act(b["act"]), *([nn.Dropout(0.1)] if b["dropout"] else []))

    def forward(self, x):
        return self.seq(x)


class Tokens(nn.Module):
    """(B, C, *spatial) -> (B, tokens, C)."""

    def forward(self, x):
        return torch.flatten(x, 2).transpose(1, 2)


class EncoderBlock(nn.Module):
    """A transformer encoder layer on (B, tokens, d): nn.TransformerEncoderLayer (impl layer), or written
    out with nn.MultiheadAttention (mha) or Linear qkv + F.scaled_dot_product_attention (sdpa)."""

    def __init__(self, d, b):
        super().__init__()
        self.impl, self.heads, self.norm_first = b["impl"], b["heads"], b["norm_first"]
        if self.impl == "layer":
            self.layer = nn.TransformerEncoderLayer(d, b["heads"], b["ffn"], dropout=0.0, activation=b["act"],
                                                    batch_first=True, norm_first=b["norm_first"])
            return
        if self.impl == "mha":
            self.attn = nn.MultiheadAttention(d, b["heads"], batch_first=True)
        else:
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, b["ffn"]), _act(b["act"]), nn.Linear(b["ffn"], d))

    def _attend(self, x):
        if self.impl == "mha":
            return self.attn(x, x, x, need_weights=False)[0]
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(n, t, d))

    def forward(self, x):
        if self.impl == "layer":
            return self.layer(x)
        if self.norm_first:
            x = x + self._attend(self.ln1(x))
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self._attend(x))
        return self.ln2(x + self.mlp(x))


class SpecNet(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        dim = 2 if spec["kind"] == "image" else 1
        c = spec["input"][0]
        blocks = []
        for b in spec["blocks"]:
            t = b["type"]
            if t == "conv":
                blocks.append(ConvBlock(dim, c, b))
                c = b["cout"]
            elif t == "pool":
                blocks.append(PoolBlock(dim, b))
            elif t == "bn_act":
                blocks.append(BnActBlock(dim, c, b))
            elif t == "res":
                blocks.append(ResBlock(dim, c, b))
            elif t == "fork_cat":
                blocks.append(ForkCat(dim, c, b))
                c = sum(br["cout"] for br in b["branches"])
            elif t == "rnn":
                blocks.append(RNNBlock(c, b))
                c = b["hidden"]
            elif t == "ir":
                blocks.append(InvertedResidualBlock(dim, c, b))
                c = b["cout"]
            elif t == "shuffle":
                blocks.append(ShuffleBlock(dim, c, b))
                c = b["cout"]
            elif t == "dense":
                blocks.append(DenseBlock(dim, c, b))
                c += b["growth"] * b["layers"]
            elif t == "sep":
                blocks.append(SepBlock(dim, c, b))
                c = b["cout"]
            elif t == "flatten":
                blocks.append(nn.Flatten())
                c = math.prod(spec["input"])
            elif t == "fc":
                blocks.append(FcBlock(c, b))
                c = b["out"]
            elif t == "tokens":
                blocks.append(Tokens())
            elif t == "tfm":
                blocks.append(EncoderBlock(c, b))
            else:
                raise ValueError(f"unknown block type {t!r}")
        self.blocks = nn.Sequential(*blocks)
        h = spec["head"]
        self.head_pool = None
        self.token_mean = h["pool"] == "tokens"  # (B, tokens, d).mean(1)
        if h["pool"] not in ("none", "tokens"):
            self.head_pool = _global_pool(dim, h["pool"])
        layers, f = [], h["in_features"]
        for hid in h["hidden"]:
            layers += [nn.Linear(f, hid), _act(h["act"])]
            f = hid
        layers.append(nn.Linear(f, h["classes"]))
        self.head = nn.Sequential(*layers)

    def forward(self, x):
        y = self.blocks(x)
        if self.token_mean:
            y = y.mean(1)
        if self.head_pool is not None:
            y = self.head_pool(y)
        return self.head(torch.flatten(y, 1))


# ------------------------------------------------------------------------------ generation


def _width(rng: random.Random, lo: int = 4, hi: int = 128) -> int:
    c = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
    step = rng.choice([1, 1, 2, 4, 8, 8, 16])
    return max(lo, min(hi, (c // step) * step or step))


def _conv_macs(dim, cin, cout, k, s, groups, size) -> int:
    out = _conv_out(size, k, s)
    return cout * out**dim * (cin // groups) * k**dim


def _gen_plain(rng: random.Random, kind: str, recurrent: bool, depth: int = 1) -> dict:
    """Style plain (or recurrent: the same conv stack, then a GRU/LSTM): conv stacks, residual convs,
    multi-kernel forks joined by concat, pools, standalone BN; palettes of activations and kernels."""
    dim, size, inp, batch, acc = _start(rng, kind, depth, image_channels=(1, 3, 3, 4), image_sizes=(16, 24, 28, 32))
    c, budget = inp[0], acc.budget
    n_blocks = rng.randint(4, 12) * depth
    macs = 0.0
    blocks: list[dict] = []
    # the kinds of _ACT_CLS (the activation family's first nine, in its order: a seed draws the networks it
    # drew before session 23 added kinds), hardsigmoid aside: a gate (squeeze-excitation), not a body activation
    acts = [a for a in _ACT_CLS if a != "hardsigmoid"]
    all_kernels = [1, 3, 3, 5, 7] if dim == 2 else [1, 3, 5, 5, 7]
    # the style: palettes a real network would use (one or two kinds), or anything for a third of them
    mixed = rng.random() < 0.35
    act_palette = acts if mixed else rng.sample(["relu"] * 3 + acts, rng.choice([1, 1, 2]))
    k_palette = all_kernels if mixed else sorted({rng.choice(all_kernels) for _ in range(rng.choice([1, 2]))})
    p_bn = rng.choice([0.0, 0.7, 0.7, 1.0, 1.0])
    p_repeat = 0.0 if mixed else rng.choice([0.0, 0.5, 0.8])

    def pick_act(p_none=0.15):
        if rng.random() < p_none:
            return None
        return rng.choice(act_palette)

    def pick_k(choices):
        own = [k for k in choices if k in k_palette]
        return rng.choice(own or choices)

    for i in range(n_blocks):
        choices = ["conv"] * 5 + ["pool"] * 2 + ["bn_act", "res", "res", "fork_cat", "fork_cat"]
        if i == 0:
            choices = ["conv"]
        t = rng.choice(choices)
        if t == "pool":
            k, s = rng.choice([2, 3]), rng.choice([1, 2, 2, 3])
            if size < k or (size - k) // s + 1 < 2:
                continue
            blocks.append({"type": "pool", "mode": rng.choice(["max", "avg"]), "k": k, "stride": s})
            size = (size - k) // s + 1
            macs += c * size**dim * k**dim / 4
        elif t == "conv":
            k = pick_k(all_kernels)
            s = 2 if (rng.random() < 0.3 and size >= 8) else 1
            cout = _width(rng)
            g = 1
            r = rng.random()
            if r < 0.15 and i > 0:
                g, cout = c, c  # depthwise
            elif r < 0.3:
                for cand in (2, 4, 8):
                    if c % cand == 0 and cout % cand == 0 and rng.random() < 0.5:
                        g = cand
            m = _conv_macs(dim, c, cout, k, s, g, size)
            while macs + m > budget and cout > 4 and g == 1:
                cout = max(4, cout // 2)
                m = _conv_macs(dim, c, cout, k, s, g, size)
            if macs + m > budget and blocks:
                break
            blocks.append({"type": "conv", "cout": cout, "k": k, "stride": s, "groups": g,
                           "bn": rng.random() < p_bn, "act": pick_act(), "preact": rng.random() < 0.15 and i > 0})
            macs += m
            c, size = cout, _conv_out(size, k, s)
            # a stage: the same stride-1 conv repeated at the new width (cheap when it fits the budget)
            while rng.random() < p_repeat and g == 1:
                m = _conv_macs(dim, c, c, k, 1, 1, size)
                if macs + m > budget:
                    break
                blocks.append({**blocks[-1], "cout": c, "stride": 1, "preact": False})
                macs += m
        elif t == "bn_act":
            blocks.append({"type": "bn_act", "act": pick_act(0.0)})
        elif t == "res":
            k = pick_k([1, 3, 5])
            dw = rng.random() < 0.4
            m = _conv_macs(dim, c, c, k, 1, c if dw else 1, size)
            reps = 1 + sum(1 for _ in range(3) if rng.random() < p_repeat)
            if macs + m > budget:
                continue
            reps = min(reps, int((budget - macs) // max(m, 1)))
            blocks += [{"type": "res", "k": k, "depthwise": dw, "act": pick_act(0.3)}] * reps
            macs += m * reps
        elif t == "fork_cat":
            nb = rng.choice([2, 2, 3])
            ks = rng.sample([1, 3, 5], nb)  # a fork mixes kernels by design
            brs = [{"cout": _width(rng, 4, 64), "k": k} for k in ks]
            m = sum(_conv_macs(dim, c, br["cout"], br["k"], 1, 1, size) for br in brs)
            if macs + m > budget:
                continue
            blocks.append({"type": "fork_cat", "branches": brs, "act": pick_act()})
            macs += m
            c = sum(br["cout"] for br in brs)
    # top up small networks with stride-1 convs until they use half their budget
    while macs < 0.5 * budget and len(blocks) < 18 * depth:
        k = pick_k([1, 3, 3, 5])
        cout = _width(rng, 8, 128)
        m = _conv_macs(dim, c, cout, k, 1, 1, size)
        while macs + m > budget and cout > 4:
            cout = max(4, cout // 2)
            m = _conv_macs(dim, c, cout, k, 1, 1, size)
        blocks.append({"type": "conv", "cout": cout, "k": k, "stride": 1, "groups": 1,
                       "bn": rng.random() < p_bn, "act": pick_act(), "preact": False})
        macs += m
        c = cout
    head_pool = "avg"
    feat = c
    if recurrent:
        hidden = _width(rng, 8, 128)
        layers = rng.choice([1, 1, 2])
        blocks.append({"type": "rnn", "cell": rng.choice(["gru", "gru", "lstm"]), "hidden": hidden,
                       "layers": layers})
        head_pool, feat = "none", hidden
    else:
        r = rng.random()
        if r < 0.25 and c * size**dim <= 4096:
            head_pool, feat = "none", c * size**dim  # flatten everything
        elif r < 0.45:
            head_pool = "max"
    head = {"pool": head_pool, "in_features": feat,
            "hidden": [_width(rng, 16, 256) for _ in range(rng.choice([0, 1, 1, 2]))],
            "act": pick_act(0.0), "classes": rng.choice([2, 6, 10, 12])}
    return {"batch": batch, "input": inp, "blocks": blocks, "head": head, "est_macs": int(macs * batch)}


def _batch(rng: random.Random, choices=(1, 1, 1, 1, 2, 4, 8, 16, 32)) -> int:
    return rng.choice(list(choices))


def _budget(rng: random.Random, batch: int) -> float:
    """Per-sample MAC budget: the whole batch spends 1M-25M multiply-accumulates (log-uniform)."""
    return max(1.5e5, math.exp(rng.uniform(math.log(1e6), math.log(2.5e7))) / batch)


def _input(rng: random.Random, kind: str, image_channels=(1, 3, 3, 3, 4),
           image_sizes=(16, 24, 28, 32, 32, 48)) -> tuple[int, list[int]]:
    if kind == "image":
        c, size = rng.choice(image_channels), rng.choice(image_sizes)
        return size, [c, size, size]
    c, size = rng.choice([3, 6, 6, 9]), rng.choice([32, 50, 64, 100, 128, 256])
    return size, [c, size]


def _div(c: int, d: int = 4) -> int:
    return max(d, int(round(c / d)) * d)


class _Acc:
    """MAC accounting against a per-sample budget."""

    def __init__(self, budget: float, dim: int):
        self.budget, self.dim, self.macs = budget, dim, 0.0

    def conv(self, cin, cout, k, s, g, size) -> float:
        return _conv_macs(self.dim, cin, cout, k, s, g, size)

    def fits(self, m: float) -> bool:
        return self.macs + m <= self.budget


def _start(rng: random.Random, kind: str, depth: int = 1, **input_choices) -> tuple[int, int, list[int], int, _Acc]:
    """What every style draws first: (dims, input size, input shape, batch, MAC accounting; a deep network's
    budget is `depth` times the budget drawn)."""
    dim = 2 if kind == "image" else 1
    size, inp = _input(rng, kind, **input_choices)
    batch = _batch(rng)
    return dim, size, inp, batch, _Acc(_budget(rng, batch) * depth, dim)


def _stem(rng, acc: _Acc, c: int, size: int, act: str, lo=8, hi=32) -> tuple[dict, int, int]:
    k = rng.choice([3, 3, 5, 7]) if acc.dim == 2 else rng.choice([3, 5, 7])
    s = 2 if size >= 24 and rng.random() < 0.7 else 1
    cout = _div(_width(rng, lo, hi))
    acc.macs += acc.conv(c, cout, k, s, 1, size)
    return ({"type": "conv", "cout": cout, "k": k, "stride": s, "groups": 1, "bn": True, "act": act,
             "preact": False}, cout, _conv_out(size, k, s))


def _head(rng, c: int, pool: str, act: str) -> dict:
    """The classifier: [pool], 0-2 hidden Linear layers, the output Linear. Three heads in ten are wide (hidden
    layers of 256-3072 features, up to 36 MiB of weights, like VGG's or AlexNet's): the networks the
    composition is fitted on must reach past the CPU's last-level cache, where a layer reads its weights
    from memory inside the network and from cache when it is timed alone."""
    if rng.random() < 0.3:
        hidden = [_width(rng, 256, 3072) for _ in range(rng.choice([1, 2]))]
    else:
        hidden = [_width(rng, 16, 256) for _ in range(rng.choice([0, 1, 1, 2]))]
    return {"pool": pool, "in_features": c, "hidden": hidden, "act": act, "classes": rng.choice([2, 6, 10, 12, 100])}


def _gen_mobile(rng, kind, depth=1):
    """Inverted residual blocks (1x1 expand, depthwise, [squeeze-excitation], 1x1 project, residual add)."""
    dim, size, inp, batch, acc = _start(rng, kind, depth)
    act = rng.choice(["relu6", "relu6", "hardswish", "silu", "relu"])
    gate = rng.choice(["hardsigmoid", "sigmoid"])
    p_se = rng.choice([0.0, 0.5, 1.0])
    se_impl = rng.choice(["conv", "linear"])
    stem, c, size = _stem(rng, acc, inp[0], size, act)
    blocks = [stem]
    for stage in range(rng.randint(2, 5)):
        cout = _div(_width(rng, 8, 96))
        expand = rng.choice([1, 3, 4, 6])
        k = rng.choice([3, 3, 5]) if dim == 2 else rng.choice([3, 5, 7])
        for r in range(rng.randint(1, 3) * depth):
            s = 2 if r == 0 and size >= 8 and rng.random() < 0.6 else 1
            hid = c * expand
            out_size = _conv_out(size, k, s)
            m = (c * hid * size**dim if expand != 1 else 0) + hid * k**dim * out_size**dim + hid * cout * out_size**dim
            if not acc.fits(m):
                break
            se = _div(max(8, hid // 4), 8) if rng.random() < p_se else 0
            blocks.append({"type": "ir", "cout": cout, "expand": expand, "k": k, "stride": s, "act": act,
                           "se": se, "gate": gate, "se_impl": se_impl})
            acc.macs += m
            c, size = cout, out_size
    if rng.random() < 0.5:  # the last 1x1 conv to a wide feature map
        cout = _div(c * rng.choice([2, 4, 6]), 8)
        if acc.fits(acc.conv(c, cout, 1, 1, 1, size)):
            blocks.append({"type": "conv", "cout": cout, "k": 1, "stride": 1, "groups": 1, "bn": True, "act": act,
                           "preact": False})
            acc.macs += acc.conv(c, cout, 1, 1, 1, size)
            c = cout
    return {"batch": batch, "input": inp, "blocks": blocks, "head": _head(rng, c, "avg", act),
            "est_macs": int(acc.macs * batch)}


def _gen_shuffle(rng, kind, depth=1):
    """ShuffleNet-V2 units: channel split, 1x1 - depthwise - 1x1 branch, concat, channel shuffle."""
    dim, size, inp, batch, acc = _start(rng, kind, depth)
    act = rng.choice(["relu", "relu", "hardswish", "relu6"])
    stem, c, size = _stem(rng, acc, inp[0], size, act, 8, 24)
    blocks = [stem]
    if size >= 16 and rng.random() < 0.5:
        blocks.append({"type": "pool", "mode": "max", "k": 3, "stride": 2})
        size = (size - 3) // 2 + 1
    for stage in range(rng.randint(2, 4)):
        cout = _div(_width(rng, 16, 192), 4)
        for r in range(rng.randint(1, 4) * depth):
            s = 2 if r == 0 and size >= 4 else 1
            if r == 0 and s == 1 and c != cout:
                s = 2 if size >= 2 else 1
            if s == 1 and c != cout:
                break
            half = cout // 2
            out_size = _conv_out(size, 3, s)
            m = 2 * half * half * out_size**dim + half * 9 * out_size**dim + (c * half * size**dim if s == 2 else 0)
            if not acc.fits(m):
                break
            blocks.append({"type": "shuffle", "cout": cout, "stride": s, "act": act, "k": 3})
            acc.macs += m
            c, size = cout, out_size
    return {"batch": batch, "input": inp, "blocks": blocks, "head": _head(rng, c, "avg", act),
            "est_macs": int(acc.macs * batch)}


def _gen_dense(rng, kind, depth=1):
    """DenseNet: dense blocks (BN-act-1x1-BN-act-3x3, concatenated growth), 1x1 + avg-pool transitions."""
    dim, size, inp, batch, acc = _start(rng, kind, depth)
    act = rng.choice(["relu", "relu", "relu6", "silu"])
    growth = rng.choice([4, 8, 12, 16, 24, 32])
    bottleneck = rng.random() < 0.7
    stem, c, size = _stem(rng, acc, inp[0], size, act, 2 * growth, 2 * growth)
    blocks = [stem]
    for stage in range(rng.randint(1, 3)):
        n = 0
        for _ in range(rng.randint(2, 6) * depth):
            m = (c * 4 * growth * size**dim + 4 * growth * growth * 9 * size**dim) if bottleneck \
                else c * growth * 9 * size**dim
            if not acc.fits(m):
                break
            acc.macs += m
            c += growth
            n += 1
        if n:
            blocks.append({"type": "dense", "growth": growth, "layers": n, "bottleneck": bottleneck, "act": act})
        if size >= 4 and stage < 2:
            cout = _div(c // 2, 4)
            blocks.append({"type": "conv", "cout": cout, "k": 1, "stride": 1, "groups": 1, "bn": True,
                           "act": act, "preact": True})
            blocks.append({"type": "pool", "mode": "avg", "k": 2, "stride": 2})
            acc.macs += acc.conv(c, cout, 1, 1, 1, size)
            c, size = cout, (size - 2) // 2 + 1
    blocks.append({"type": "bn_act", "act": act})
    return {"batch": batch, "input": inp, "blocks": blocks, "head": _head(rng, c, "avg", act),
            "est_macs": int(acc.macs * batch)}


def _gen_sepconv(rng, kind, depth=1):
    """Depthwise-separable stacks (MobileNet-V1, Xception's residual middle flow)."""
    dim, size, inp, batch, acc = _start(rng, kind, depth)
    act = rng.choice(["relu", "relu", "relu6", "hardswish", "leaky_relu"])
    k = rng.choice([3, 3, 5]) if dim == 2 else rng.choice([3, 5, 7])
    p_res = rng.choice([0.0, 0.7])
    stem, c, size = _stem(rng, acc, inp[0], size, act)
    blocks = [stem]
    for _ in range(rng.randint(3, 10) * depth):
        s = 2 if size >= 8 and rng.random() < 0.3 else 1
        cout = c if s == 1 and rng.random() < 0.5 else _div(min(512, c * rng.choice([1, 2, 2])))
        out_size = _conv_out(size, k, s)
        m = c * k**dim * out_size**dim + c * cout * out_size**dim
        if not acc.fits(m):
            break
        blocks.append({"type": "sep", "cout": cout, "k": k, "stride": s, "act": act,
                       "residual": s == 1 and cout == c and rng.random() < p_res})
        acc.macs += m
        c, size = cout, out_size
    return {"batch": batch, "input": inp, "blocks": blocks,
            "head": _head(rng, c, rng.choice(["avg", "avg", "max"]), act), "est_macs": int(acc.macs * batch)}


def _gen_mlp(rng, kind):
    """Fully connected stacks on the flattened input: wide layers, batch up to 64, LayerNorm, Dropout."""
    size, inp = _input(rng, kind)
    if kind == "image":
        inp = [rng.choice([1, 1, 3]), rng.choice([8, 14, 16, 28])] * 1
        inp = [inp[0], inp[1], inp[1]]
    big = rng.random() < 0.5  # weights of 10-80 MiB: past the last-level cache (see `_head`)
    batch = _batch(rng, (1, 1, 4, 8, 16) if big else (1, 8, 16, 32, 64))
    f = math.prod(inp)
    act = rng.choice(["relu", "relu", "gelu", "silu", "tanh", "leaky_relu"])
    ln, drop = rng.random() < 0.3, rng.random() < 0.4
    blocks = [{"type": "flatten"}]
    budget = math.exp(rng.uniform(math.log(2.5e6), math.log(2e7))) if big else _budget(rng, batch)
    macs = 0.0
    for _ in range(rng.randint(2, 4) if big else rng.randint(1, 4)):
        out = _width(rng, 1024, 6144) if big else _width(rng, 32, 1024)
        if big and blocks[1:]:  # as wide as the budget lets it, at least 256
            out = min(out, int((budget - macs) / f) // 8 * 8)
            if out < 256:
                break
        elif macs + f * out > budget and blocks[1:]:
            break
        blocks.append({"type": "fc", "out": out, "act": act, "ln": ln, "dropout": drop})
        macs += f * out
        f = out
    return {"batch": batch, "input": inp, "blocks": blocks,
            "head": {"pool": "none", "in_features": f, "hidden": [], "act": act, "classes": rng.choice([2, 6, 10, 100])},
            "est_macs": int(macs * batch)}


def _gen_transformer(rng, kind, depth=1):
    """A conv stem to tokens, then encoder blocks: nn.MultiheadAttention, scaled_dot_product_attention
    written out (Linear qkv, heads, projection), or nn.TransformerEncoderLayer; pre- or post-norm; mean
    over tokens, a linear head."""
    dim = 2 if kind == "image" else 1
    size, inp = _input(rng, kind)
    batch = _batch(rng, (1, 1, 2, 4, 8, 16))
    budget = _budget(rng, batch)
    d = rng.choice([16, 24, 32, 48, 64, 96, 128])
    act = rng.choice(["gelu", "gelu", "relu"])
    impl = rng.choice(["mha", "sdpa", "layer"])
    norm_first = rng.random() < 0.6
    ffn_mult = rng.choice([2, 4])
    stem_draws = [(rng.random(), rng.choice([3, 5]), rng.random()) for _ in range(8)]
    while True:  # the widest embedding whose one block fits the budget (d 16 at least)
        blocks, sz = [], size
        for i, (r_s, k2, r_stop) in enumerate(stem_draws):  # strided stem convs: at most 256 tokens
            tokens = sz**dim
            s = 2 if (tokens > 256 or (tokens > 16 and r_s < 0.4)) and sz >= 4 else 1
            k = k2 if s == 2 else 3
            blocks.append({"type": "conv", "cout": d, "k": k, "stride": s, "groups": 1, "bn": r_stop < 0.5,
                           "act": act if s == 2 else None, "preact": False})
            sz = _conv_out(sz, k, s)
            if s == 1 or (sz**dim <= 256 and r_stop < 0.5):
                break
        tokens, ffn = sz**dim, d * ffn_mult
        per_block = tokens * (4 * d * d + 2 * d * ffn) + 2 * tokens * tokens * d
        if per_block <= budget or d <= 16:
            break
        d = max(16, _div(d // 2, 8))
    heads = rng.choice([h for h in (1, 2, 4, 8) if d % h == 0 and d // h >= 8])
    blocks.append({"type": "tokens"})
    for _ in range(max(1, min(rng.randint(1, 4) * depth, int(depth * budget // max(per_block, 1))))):
        blocks.append({"type": "tfm", "impl": impl, "heads": heads, "ffn": ffn, "act": act, "norm_first": norm_first})
    return {"batch": batch, "input": inp, "blocks": blocks, "head": _head(rng, d, "tokens", act),
            "est_macs": int(per_block * sum(b["type"] == "tfm" for b in blocks) * batch)}


# style -> (generator, the input kinds it draws)
STYLES = {
    "plain": (lambda rng, kind, depth=1: _gen_plain(rng, kind, False, depth), ("image", "sensor")),
    "mobile": (_gen_mobile, ("image", "sensor")),
    "shuffle": (_gen_shuffle, ("image",)),
    "dense": (_gen_dense, ("image", "sensor")),
    "sepconv": (_gen_sepconv, ("image", "sensor")),
    "mlp": (_gen_mlp, ("image", "sensor")),
    "recurrent": (lambda rng, kind, depth=1: _gen_plain(rng, kind, True, depth), ("sensor",)),
    "transformer": (_gen_transformer, ("image", "sensor")),
}
# what the profiler measures, in turn (network_stream): plain and recurrent carry the zoo's commonest
# layers, the others one turn each
STREAM = [("plain", "image"), ("mobile", "image"), ("recurrent", "sensor"), ("shuffle", "image"),
          ("transformer", "sensor"), ("dense", "image"), ("sepconv", "sensor"), ("mlp", "image"),
          ("plain", "sensor"), ("mobile", "sensor"), ("transformer", "image"), ("sepconv", "image"),
          ("recurrent", "sensor"), ("dense", "sensor"), ("mlp", "sensor")]


# Deep networks. A style's generator draws a few stages of 1-4 blocks (a median of 26 layer calls and 0.2 MB of
# weights), while the CNNs people run hold 60-420 calls and 1-11 MB (ResNet-50, RegNet, MobileNet, Xception).
# Inside such a network a call costs 8-15 us more than alone where the random networks show 3-9 us (measured:
# bench/error_sources.py, session 28): the composition can only learn it from networks that deep. So a share of
# the networks of every style but mlp is drawn deep: each stage's repeats (the blocks of a plain stack, the
# layers of a dense block, the encoder blocks) and the MAC budget times DEEP_FACTORS. The draw has its own
# random stream, so every network that is not deep is the one its seed drew before.
DEEP_SHARE = 0.25
DEEP_FACTORS = (3, 4, 6)
DEEP_STYLES = ("plain", "mobile", "shuffle", "dense", "sepconv", "recurrent", "transformer")


def _depth(seed: int, kind: str, style: str) -> int:
    """1, or the factor a deep network of this seed multiplies its repeats and its budget by."""
    rng = random.Random(f"depth:{kind}:{seed}")
    deep, factor = rng.random() < DEEP_SHARE, rng.choice(DEEP_FACTORS)
    return factor if deep and style in DEEP_STYLES else 1


def _gen_spec(seed: int, kind: str, style: str | None = None) -> dict:
    rng = random.Random(f"{kind}:{seed}")
    if style is None:
        style = rng.choice([s for s, (_, kinds) in STYLES.items() if kind in kinds])
    gen, kinds = STYLES[style]
    if kind not in kinds:
        raise ValueError(f"style {style!r} draws {' or '.join(kinds)} networks, not {kind!r}")
    depth = _depth(seed, kind, style)
    spec = gen(rng, kind, depth) if depth > 1 else gen(rng, kind)
    return {"version": SPEC_VERSION, "kind": kind, "style": style, "seed": seed, **spec,
            **({"depth": depth} if depth > 1 else {})}


def spec_families(spec: dict) -> set[str]:
    """The whole-module layer families a spec's network holds (a backend that cannot run one of them
    cannot run the network: `Backend.unsupported_family`)."""
    return {"transformer_encoder" for b in spec["blocks"] if b["type"] == "tfm" and b["impl"] == "layer"}

def build_network(spec: dict) -> nn.Module:
    """The network described by `spec`, eval mode, weights and BN statistics drawn from spec['seed']."""
    with torch.random.fork_rng():
        torch.manual_seed(int(spec["seed"]))
        net = SpecNet(spec)
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                with torch.no_grad():
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def example_input(spec: dict) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(spec["seed"]) + 7919)
    return torch.randn(int(spec.get("batch", 1)), *spec["input"], generator=gen)


def random_network(seed: int, kind: str = "image", style: str | None = None):
    """(module, example_input, spec) of the random network number `seed` of `kind` ('image'|'sensor')
    and `style` (one of STYLES; drawn from the seed when None)."""
    if kind not in ("image", "sensor"):
        raise ValueError(f"kind must be 'image' or 'sensor', not {kind!r}")
    if style is not None and style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
    spec = _gen_spec(int(seed), kind, style)
    return build_network(spec), example_input(spec), spec
