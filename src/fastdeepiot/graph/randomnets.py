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
MAC budget (log-uniform 0.3M-25M multiply-accumulates) so a forward takes ~0.2-20 ms on one thread.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn as nn

from fastdeepiot.families import ACTIVATIONS

SPEC_VERSION = 2  # 2: per-network style (palettes, repeats); the spec format is unchanged
_ACT_CLS = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "leaky_relu": nn.LeakyReLU, "hardswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
}


def _act(kind: str | None) -> nn.Module:
    return _ACT_CLS[kind]() if kind else nn.Identity()


def _conv_out(size: int, k: int, s: int) -> int:
    return (size + 2 * (k // 2) - k) // s + 1


# ------------------------------------------------------------------------------------ blocks


class ConvBlock(nn.Module):
    """conv -> [bn] -> [act], or pre-activation: [bn] -> [act] -> conv."""

    def __init__(self, dim, cin, b):
        super().__init__()
        conv = (nn.Conv2d if dim == 2 else nn.Conv1d)(cin, b["cout"], b["k"], stride=b["stride"],
                                                      padding=b["k"] // 2, groups=b["groups"],
                                                      bias=not b["bn"])
        bn = (nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d)(cin if b["preact"] else b["cout"])
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
        self.bn = (nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d)(c)
        self.act = _act(b["act"])

    def forward(self, x):
        return self.act(self.bn(x))


class ResBlock(nn.Module):
    """x + bn(conv_k(x)) [-> act]: one (optionally depthwise) conv with a residual join."""

    def __init__(self, dim, c, b):
        super().__init__()
        conv = nn.Conv2d if dim == 2 else nn.Conv1d
        self.conv = conv(c, c, b["k"], padding=b["k"] // 2, groups=c if b["depthwise"] else 1, bias=False)
        self.bn = (nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d)(c)
        self.act = _act(b["act"])

    def forward(self, x):
        return self.act(x + self.bn(self.conv(x)))


class ForkCat(nn.Module):
    """Parallel conv -> act branches with different kernels, concatenated along channels."""

    def __init__(self, dim, cin, b):
        super().__init__()
        conv = nn.Conv2d if dim == 2 else nn.Conv1d
        self.branches = nn.ModuleList(
            nn.Sequential(conv(cin, br["cout"], br["k"], padding=br["k"] // 2), _act(b["act"]))
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
            else:
                raise ValueError(f"unknown block type {t!r}")
        self.blocks = nn.Sequential(*blocks)
        h = spec["head"]
        self.head_pool = None
        if h["pool"] != "none":
            self.head_pool = (nn.AdaptiveAvgPool2d(1) if dim == 2 else nn.AdaptiveAvgPool1d(1)) \
                if h["pool"] == "avg" else (nn.AdaptiveMaxPool2d(1) if dim == 2 else nn.AdaptiveMaxPool1d(1))
        layers, f = [], h["in_features"]
        for hid in h["hidden"]:
            layers += [nn.Linear(f, hid), _act(h["act"])]
            f = hid
        layers.append(nn.Linear(f, h["classes"]))
        self.head = nn.Sequential(*layers)

    def forward(self, x):
        y = self.blocks(x)
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


def _gen_spec(seed: int, kind: str) -> dict:
    rng = random.Random(f"{kind}:{seed}")
    dim = 2 if kind == "image" else 1
    if dim == 2:
        c, size = rng.choice([1, 3, 3, 4]), rng.choice([16, 24, 28, 32])
        inp = [c, size, size]
    else:
        c, size = rng.choice([3, 6, 6, 9]), rng.choice([50, 64, 100, 128, 256])
        inp = [c, size]
    budget = math.exp(rng.uniform(math.log(1e6), math.log(2.5e7)))
    n_blocks = rng.randint(4, 12)
    macs = 0.0
    blocks: list[dict] = []
    # the kinds random networks can build (_ACT_CLS): the seven before issue 17, so a seed's network stays the same
    acts = [a for a in ACTIVATIONS if a in _ACT_CLS]
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
    while macs < 0.5 * budget and len(blocks) < 18:
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
    if dim == 1 and rng.random() < 0.5:
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
    return {"version": SPEC_VERSION, "kind": kind, "seed": seed, "batch": 1, "input": inp,
            "blocks": blocks, "head": head, "est_macs": int(macs)}


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


def random_network(seed: int, kind: str = "image"):
    """(module, example_input, spec) of the random network number `seed` of `kind` ('image'|'sensor')."""
    if kind not in ("image", "sensor"):
        raise ValueError(f"kind must be 'image' or 'sensor', not {kind!r}")
    spec = _gen_spec(int(seed), kind)
    return build_network(spec), example_input(spec), spec
