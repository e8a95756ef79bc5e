"""Layer families: what a layer configuration is, how to build it, and what it costs physically.

A `LayerConfig` is a family name plus a flat dict of integer/string parameters (batch size included).
Each `Family` knows
  * its configuration space (`space`: parameter -> allowed values, and `valid` for joint constraints),
  * how to build a PyTorch module and example inputs for a configuration,
  * the physically meaningful features of a configuration (FLOPs, bytes moved, ...), which the
    time model uses in its leaf regressions, and
  * which parameters are widths (`width_params`), swept one at a time by the profiler, where the
    staircase shows.

The registry `FAMILIES` is the single list every other module iterates over (profiler, time model,
graph extraction, tests).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastdeepiot.errors import UnknownNameError, UserError

BYTES_PER_ELEMENT = 4  # float32 everywhere (the dtype is recorded in the measurement conditions)


@dataclass(frozen=True)
class LayerConfig:
    family: str
    params: dict[str, Any] = field(hash=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.family, str) or self.family not in FAMILIES:
            get_family(str(self.family))  # UnknownNameError, naming the known families
        if not isinstance(self.params, dict):
            raise UserError(f"a {self.family} configuration's parameters must be a dict, got "
                            f"{type(self.params).__name__}")

    @property
    def key(self) -> str:
        """Canonical, stable text key: one row per key and device conditions in the store."""
        return self.family + ":" + json.dumps(self.params, sort_keys=True, separators=(",", ":"))

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerConfig) and other.key == self.key

    def to_json(self) -> dict:
        return {"family": self.family, "params": dict(self.params)}

    @classmethod
    def from_key(cls, key: str) -> "LayerConfig":
        family, _, params = key.partition(":")
        return cls(family, json.loads(params))

    @property
    def family_obj(self) -> "Family":
        return get_family(self.family)

    def features(self) -> dict[str, float]:
        return self.family_obj.features(self.params)

    @property
    def kernel_kind(self) -> str:
        """Which kernel the layer runs, coarsely: its family, refined by what selects different code (an
        activation's kind, a pool's mode, a convolution's depthwise/grouped/dense path); not its widths."""
        p = self.params
        kind = self.family
        if "kind" in p:
            kind += ":" + str(p["kind"])
        if "mode" in p:
            kind += ":" + str(p["mode"])
        g = p.get("groups", 1)
        if g > 1:
            kind += ":depthwise" if g == p.get("in_channels") else ":grouped"
        return kind


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length along one dimension of a convolution or pool: torch's formula."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@dataclass
class Family:
    name: str
    description: str
    space: dict[str, list]  # parameter -> allowed values (ints in increasing order, or strings)
    width_params: list[str]  # parameters swept one value at a time by the profiler
    build: Callable[[dict], Any]  # params -> nn.Module
    input_shapes: Callable[[dict], list[tuple[int, ...]]]
    raw_features: Callable[[dict], dict[str, float]]
    # `valid`: a joint rule every layer of the family keeps (groups divide the channels, ...), stated in
    # `valid_rule`; `check_config` applies it to every configuration it is given. `bounded`: the profiler's
    # cap on what it measures (tensor sizes), not a rule of the layer: a real network's larger layers are
    # priced all the same (the models extrapolate). `check` (the profiler's) applies both.
    valid: Callable[[dict], bool] = lambda p: True
    valid_rule: str = ""
    bounded: Callable[[dict], bool] = lambda p: True
    # Parameters that may be fixed by `normalize` from others (e.g. depthwise groups = channels).
    normalize: Callable[[dict], dict] = lambda p: p

    def features(self, params: dict) -> dict[str, float]:
        """FLOPs, bytes read/written, weight bytes, output elements, and the raw parameters."""
        f = {k: float(v) for k, v in params.items() if isinstance(v, (int, float))}
        f.update({k: float(v) for k, v in self.raw_features(params).items()})
        return f

    def make_inputs(self, params: dict, device: str = "cpu"):
        gen = torch.Generator().manual_seed(0)
        return tuple(torch.randn(*s, generator=gen).to(device) for s in self.input_shapes(params))

    def check(self, params: dict) -> dict:
        """Validate a configuration against the space; return it normalised."""
        missing = [k for k in self.space if k not in params]
        extra = [k for k in params if k not in self.space]
        if missing or extra:
            raise ValueError(f"{self.name}: missing parameters {missing}, unknown parameters {extra}")
        p = self.normalize(dict(params))
        if not self.valid(p):
            raise ValueError(f"{self.name}: invalid configuration {p} ({self.valid_rule})")
        if not self.bounded(p):
            raise ValueError(f"{self.name}: configuration {p} is beyond what the profiler measures")
        return p


# ----------------------------------------------------------------------------------- builders


def _conv_build(dim: int):
    def build(p: dict):
        cls = nn.Conv2d if dim == 2 else nn.Conv1d
        return cls(p["in_channels"], p["out_channels"], p["kernel"], stride=p["stride"],
                   padding=p["kernel"] // 2, groups=p["groups"], bias=True)

    return build


def _conv_features(dim: int):
    def feats(p: dict) -> dict:
        size = p["size"]
        k, s, pad = p["kernel"], p["stride"], p["kernel"] // 2
        out = conv_out_size(size, k, s, pad)
        out_spatial = out**dim
        in_spatial = size**dim
        cin_g = p["in_channels"] // p["groups"]
        kvol = k**dim
        macs = p["batch"] * p["out_channels"] * out_spatial * cin_g * kvol
        weight = p["out_channels"] * cin_g * kvol + p["out_channels"]
        return {
            "flops": 2.0 * macs,
            "input_bytes": BYTES_PER_ELEMENT * p["batch"] * p["in_channels"] * in_spatial,
            "output_bytes": BYTES_PER_ELEMENT * p["batch"] * p["out_channels"] * out_spatial,
            "weight_bytes": BYTES_PER_ELEMENT * weight,
            "out_elements": p["batch"] * p["out_channels"] * out_spatial,
            "out_size": out,
            "cin_per_group": cin_g,
            "depthwise": float(p["groups"] == p["in_channels"] == p["out_channels"] and p["groups"] > 1),
        }

    return feats


def conv_transpose_padding(kernel: int, stride: int) -> tuple[int, int]:
    """(padding, output_padding) of the conv_transpose2d family: the output is stride x the input, what the
    upsampling layers of decoders and U-Nets use (2x2 or 4x4 with stride 2, 3x3 with stride 2 and output
    padding 1, odd kernels with stride 1)."""
    pad = -(-(kernel - stride) // 2)  # ceil
    return pad, 2 * pad - (kernel - stride)


def _conv_transpose_build(dim: int):
    def build(p: dict):
        pad, out_pad = conv_transpose_padding(p["kernel"], p["stride"])
        cls = nn.ConvTranspose2d if dim == 2 else nn.ConvTranspose1d
        return cls(p["in_channels"], p["out_channels"], p["kernel"], stride=p["stride"], padding=pad,
                   output_padding=out_pad, bias=True)

    return build


def _conv_transpose_features(dim: int):
    def feats(p: dict) -> dict:
        size, k = p["size"], p["kernel"]
        out = p["stride"] * size
        # each input element scatters k (per dimension) taps into every output channel
        macs = p["batch"] * p["in_channels"] * size**dim * p["out_channels"] * k**dim
        return {
            "flops": 2.0 * macs,
            "input_bytes": BYTES_PER_ELEMENT * p["batch"] * p["in_channels"] * size**dim,
            "output_bytes": BYTES_PER_ELEMENT * p["batch"] * p["out_channels"] * out**dim,
            "weight_bytes": BYTES_PER_ELEMENT * (p["in_channels"] * p["out_channels"] * k**dim + p["out_channels"]),
            "out_elements": p["batch"] * p["out_channels"] * out**dim,
            "out_size": out,
            "cin_per_group": p["in_channels"],
        }

    return feats


def _conv_transpose_valid(p: dict) -> bool:
    # output padding stays below the stride (torch's rule): at stride 1 the kernel is odd
    return p["kernel"] >= p["stride"] and (p["stride"] > 1 or p["kernel"] % 2 == 1)


def _conv_valid(p: dict) -> bool:
    g = p["groups"]
    return (p["in_channels"] % g == 0 and p["out_channels"] % g == 0
            and p["size"] + 2 * (p["kernel"] // 2) >= p["kernel"])


def _rnn_build(kind: str):
    def build(p: dict):
        cls = nn.GRU if kind == "gru" else nn.LSTM
        return cls(p["input_size"], p["hidden_size"], num_layers=p["num_layers"], batch_first=True)

    return build


def _rnn_features(gates: int):
    def feats(p: dict) -> dict:
        h, i, n, t, b = p["hidden_size"], p["input_size"], p["num_layers"], p["seq_len"], p["batch"]
        # weights: first layer input->gates, later layers hidden->gates, every layer hidden->gates
        w_in = gates * h * (i + (n - 1) * h)
        w_hh = gates * h * h * n
        macs = b * t * (w_in + w_hh)
        return {
            "flops": 2.0 * macs,
            "input_bytes": BYTES_PER_ELEMENT * b * t * i,
            "output_bytes": BYTES_PER_ELEMENT * b * t * h,
            "weight_bytes": BYTES_PER_ELEMENT * (w_in + w_hh + 2 * gates * h * n),
            "out_elements": b * t * h,
            "steps": t * n,  # sequential steps: the fixed per-step cost that width pruning cannot remove
            "recurrent_flops": 2.0 * b * t * w_hh,
            # the recurrent weights every step reads again, whatever the batch: at batch 1 a step is a
            # matrix-vector product bound by reading them, at batch 16 a small matrix product bound by its
            # flops; with flops alone a leaf fitted on mostly batch-1 rows priced a batch-16 2-layer
            # LSTM(64, 128) at 1.5x its time (torch-cpu, session 29)
            "step_weight_bytes": BYTES_PER_ELEMENT * t * w_hh,
        }

    return feats


def _linear_build(p: dict):
    return nn.Linear(p["in_features"], p["out_features"])


def _linear_features(p: dict) -> dict:
    b, i, o = p["batch"], p["in_features"], p["out_features"]
    return {
        "flops": 2.0 * b * i * o,
        "input_bytes": BYTES_PER_ELEMENT * b * i,
        "output_bytes": BYTES_PER_ELEMENT * b * o,
        "weight_bytes": BYTES_PER_ELEMENT * (i * o + o),
        "out_elements": b * o,
    }


def _pool_build(dim: int):
    def build(p: dict):
        if dim == 2:
            cls = nn.MaxPool2d if p["mode"] == "max" else nn.AvgPool2d
        else:
            cls = nn.MaxPool1d if p["mode"] == "max" else nn.AvgPool1d
        return cls(p["kernel"], stride=p["stride"])

    return build


def _pool_features(dim: int):
    def feats(p: dict) -> dict:
        out = conv_out_size(p["size"], p["kernel"], p["stride"])
        n_out = p["batch"] * p["channels"] * out**dim
        n_in = p["batch"] * p["channels"] * p["size"] ** dim
        return {
            "flops": float(n_out * p["kernel"] ** dim),
            "input_bytes": BYTES_PER_ELEMENT * n_in,
            "output_bytes": BYTES_PER_ELEMENT * n_out,
            "weight_bytes": 0.0,
            "out_elements": n_out,
            "out_size": out,
        }

    return feats


def _spatial_shape(p: dict) -> tuple[int, ...]:
    """(batch, channels, *spatial) for element-wise families; dims=1 or 2."""
    return (p["batch"], p["channels"]) + (p["size"],) * p["dims"]


def _elementwise_features(reads: int, flops_per_element: float, weights_per_channel: int = 0):
    def feats(p: dict) -> dict:
        n = math.prod(_spatial_shape(p))
        return {
            "flops": flops_per_element * n,
            "input_bytes": BYTES_PER_ELEMENT * reads * n,
            "output_bytes": BYTES_PER_ELEMENT * n,
            "weight_bytes": BYTES_PER_ELEMENT * weights_per_channel * p["channels"],
            "out_elements": n,
        }

    return feats


def _bn_build(p: dict):
    m = (nn.BatchNorm2d if p["dims"] == 2 else nn.BatchNorm1d)(p["channels"])
    return m.eval()


# silu (Swish) and hardsigmoid were added for issue 17; elu, selu, prelu (per channel), softplus and mish in
# session 23 (no profiled kind stood in for them: bench/standins.py). Random networks draw from the first nine
# (graph/randomnets.py pins them, so a seed draws the networks it drew before).
ACTIVATIONS = ["relu", "relu6", "leaky_relu", "hardswish", "sigmoid", "tanh", "gelu", "silu", "hardsigmoid",
               "elu", "selu", "prelu", "softplus", "mish"]


def _act_build(p: dict):
    if p["kind"] == "prelu":
        return nn.PReLU(p["channels"])  # a slope per channel (nn.PReLU() shares one: the same pass)
    return {
        "relu": nn.ReLU, "relu6": nn.ReLU6, "leaky_relu": nn.LeakyReLU, "hardswish": nn.Hardswish,
        "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU,
        "hardsigmoid": nn.Hardsigmoid, "elu": nn.ELU, "selu": nn.SELU, "softplus": nn.Softplus, "mish": nn.Mish,
    }[p["kind"]]()


class Add(nn.Module):
    """Adds its two inputs (a residual join)."""

    def forward(self, a, b):
        return a + b


class Concat(nn.Module):
    """Concatenates its two inputs along channels."""

    def forward(self, a, b):
        return torch.cat([a, b], dim=1)


def _concat_features(p: dict) -> dict:
    spatial = p["size"] ** p["dims"]
    n = p["batch"] * (p["channels"] + p["channels_b"]) * spatial
    return {"flops": 0.0, "input_bytes": BYTES_PER_ELEMENT * n, "output_bytes": BYTES_PER_ELEMENT * n,
            "weight_bytes": 0.0, "out_elements": n}


# ------------------------------------------------------------------ issue 17: layers people run today
# Each family below is what one kernel (or, for mha / transformer_encoder, one nn.Module as users
# call it) costs.


class Mul(nn.Module):
    """Multiplies its input by a second tensor (broadcast) or, alone, by a number."""

    def forward(self, a, b=None):
        return a * (0.5 if b is None else b)


def _mul_build(p: dict):
    return Mul()


def _mul_shapes(p: dict) -> list[tuple[int, ...]]:
    full = _spatial_shape(p)
    if p["mode"] == "same":
        return [full, full]
    if p["mode"] == "channel":  # squeeze-excitation: (batch, channels, 1, ...) scales every position
        return [full, (p["batch"], p["channels"]) + (1,) * p["dims"]]
    return [full]  # scalar


def _mul_features(p: dict) -> dict:
    n = math.prod(_spatial_shape(p))
    other = {"same": n, "channel": p["batch"] * p["channels"], "scalar": 0}[p["mode"]]
    return {"flops": float(n), "input_bytes": BYTES_PER_ELEMENT * (n + other),
            "output_bytes": BYTES_PER_ELEMENT * n, "weight_bytes": 0.0, "out_elements": n}


class Softmax(nn.Module):
    """Softmax (or log-softmax) over the last dimension."""

    def __init__(self, log: bool = False):
        super().__init__()
        self.log = log

    def forward(self, x):
        return torch.log_softmax(x, -1) if self.log else torch.softmax(x, -1)


def _softmax_features(p: dict) -> dict:
    rows = p["batch"] * p["seq_len"]
    n = rows * p["features"]
    return {"flops": 5.0 * n, "input_bytes": BYTES_PER_ELEMENT * n, "output_bytes": BYTES_PER_ELEMENT * n,
            "weight_bytes": 0.0, "out_elements": n, "rows": rows}


class MatMul(nn.Module):
    """torch.matmul of its two inputs."""

    def forward(self, a, b):
        return torch.matmul(a, b)


def _matmul_features(p: dict) -> dict:
    b, m, k, n = p["batch"], p["m"], p["k"], p["n"]
    return {"flops": 2.0 * b * m * k * n, "input_bytes": BYTES_PER_ELEMENT * b * (m * k + k * n),
            "output_bytes": BYTES_PER_ELEMENT * b * m * n, "weight_bytes": 0.0, "out_elements": b * m * n}


def _adaptive_bins(size: int, out: int) -> int:
    """Input elements adaptive pooling reads along one axis: bin i spans [floor(i*S/O), ceil((i+1)*S/O))."""
    return sum(-(-(i + 1) * size // out) - (i * size) // out for i in range(out))


def _adaptive_build(p: dict):
    cls = {(1, "avg"): nn.AdaptiveAvgPool1d, (1, "max"): nn.AdaptiveMaxPool1d,
           (2, "avg"): nn.AdaptiveAvgPool2d, (2, "max"): nn.AdaptiveMaxPool2d}[(p["dims"], p["mode"])]
    return cls(p["out_size"])


def _adaptive_features(p: dict) -> dict:
    bc = p["batch"] * p["channels"]
    n_in, n_out = bc * p["size"] ** p["dims"], bc * p["out_size"] ** p["dims"]
    return {"flops": float(bc * _adaptive_bins(p["size"], p["out_size"]) ** p["dims"]),
            "input_bytes": BYTES_PER_ELEMENT * n_in, "output_bytes": BYTES_PER_ELEMENT * n_out,
            "weight_bytes": 0.0, "out_elements": n_out}


def _layernorm_build(p: dict):
    return nn.LayerNorm(p["features"])


def _layernorm_features(p: dict) -> dict:
    rows = p["batch"] * p["seq_len"]
    n = rows * p["features"]
    return {"flops": 8.0 * n, "input_bytes": BYTES_PER_ELEMENT * n, "output_bytes": BYTES_PER_ELEMENT * n,
            "weight_bytes": BYTES_PER_ELEMENT * 2 * p["features"], "out_elements": n, "rows": rows}


def _groupnorm_build(p: dict):
    return nn.GroupNorm(p["groups"], p["channels"])


def _groupnorm_features(p: dict) -> dict:
    f = _elementwise_features(reads=1, flops_per_element=8, weights_per_channel=2)(p)
    f["rows"] = p["batch"] * p["groups"]  # independent normalisations
    return f


def _upsample_build(p: dict):
    mode = "nearest" if p["mode"] == "nearest" else ("linear" if p["dims"] == 1 else "bilinear")
    return nn.Upsample(scale_factor=p["scale"], mode=mode)


def _upsample_features(p: dict) -> dict:
    n_in = math.prod(_spatial_shape(p))
    n_out = n_in * p["scale"] ** p["dims"]
    taps = 1 if p["mode"] == "nearest" else 2 ** p["dims"]
    return {"flops": float(2 * taps * n_out), "input_bytes": BYTES_PER_ELEMENT * n_in,
            "output_bytes": BYTES_PER_ELEMENT * n_out, "weight_bytes": 0.0, "out_elements": n_out}


class SDPA(nn.Module):
    """F.scaled_dot_product_attention on (q, k, v)."""

    def __init__(self, causal: bool):
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


def _attention_build(p: dict):
    return SDPA(bool(p["causal"]))


def _attention_features(p: dict) -> dict:
    b, h, n, d = p["batch"], p["heads"], p["seq_len"], p["head_dim"]
    scores = b * h * n * n
    qkv = b * h * n * d
    return {"flops": 4.0 * scores * d + 5.0 * scores,  # QK^T and AV (2 MACs each), softmax and scaling
            "input_bytes": BYTES_PER_ELEMENT * 3 * qkv, "output_bytes": BYTES_PER_ELEMENT * qkv,
            "weight_bytes": 0.0, "out_elements": qkv, "score_bytes": BYTES_PER_ELEMENT * scores}


class SelfAttention(nn.Module):
    """nn.MultiheadAttention called as users write it: attn(x, x, x) on a batch_first input."""

    def __init__(self, embed_dim: int, heads: int, need_weights: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dim, heads, batch_first=True)
        self.need_weights = need_weights

    def forward(self, x):
        return self.attn(x, x, x, need_weights=self.need_weights)[0]


def _mha_build(p: dict):
    return SelfAttention(p["embed_dim"], p["heads"], bool(p["need_weights"])).eval()


def _mha_parts(b: int, n: int, e: int, h: int) -> dict:
    """FLOPs/bytes of one self-attention block: QKV projection, attention, output projection."""
    att = _attention_features({"batch": b, "heads": h, "seq_len": n, "head_dim": e // h, "causal": 0})
    tok = b * n
    proj = 2.0 * tok * e * 4 * e
    return {"flops": proj + att["flops"], "input_bytes": BYTES_PER_ELEMENT * tok * e,
            "output_bytes": BYTES_PER_ELEMENT * tok * e,
            "weight_bytes": BYTES_PER_ELEMENT * (4 * e * e + 4 * e), "out_elements": tok * e,
            "score_bytes": att["score_bytes"],
            "activation_bytes": BYTES_PER_ELEMENT * tok * 5 * e + att["score_bytes"]}  # intermediates


def _mha_features(p: dict) -> dict:
    f = _mha_parts(p["batch"], p["seq_len"], p["embed_dim"], p["heads"])
    f["head_dim"] = p["embed_dim"] / p["heads"]
    return f


def _tel_build(p: dict):
    return nn.TransformerEncoderLayer(p["d_model"], p["heads"], p["ffn"], dropout=0.1,
                                      activation=p["activation"], batch_first=True,
                                      norm_first=bool(p["norm_first"])).eval()


def _tel_features(p: dict) -> dict:
    b, n, e, ff = p["batch"], p["seq_len"], p["d_model"], p["ffn"]
    f = _mha_parts(b, n, e, p["heads"])
    tok = b * n
    f["flops"] += 4.0 * tok * e * ff + 20.0 * tok * e + 8.0 * tok * ff  # MLP, 2 norms + 2 adds, activation
    f["weight_bytes"] += BYTES_PER_ELEMENT * (2 * e * ff + ff + e + 4 * e)
    f["activation_bytes"] += BYTES_PER_ELEMENT * tok * (2 * ff + 6 * e)
    f["head_dim"] = e / p["heads"]
    return f


def _multiple_of(key: str, of: str):
    return lambda p: p[key] % p[of] == 0


# ------------------------------------------------------------------------------- the registry

_CH = list(range(1, 257))  # every width 1..256: sweeps see every step of the staircase
# a Conv2d's channels also past 256, in steps of 8 up to 1024: the late layers of published CNNs (1x1 convs of
# 320-1280 channels on 1x1-7x7 maps) read weights that do not fit a core's cache, a regime no narrower layer shows
# (session 30: held-out 1x1 convolutions on 1x1 maps of more than 256 channels were priced +70% (median) by a
# model whose widest such profiled layer held 71 KB of weights). Conv1d keeps 1..256: sensor networks' widths.
_CONV2D_CH = _CH + list(range(264, 1025, 8))
_BATCH = [1, 2, 4, 8, 16, 32]
_SIZES2D = [4, 7, 8, 14, 16, 28, 32, 56]
# a convolution's maps also 1x1 and 2x2, the last maps of small-input networks, where a backend's kernel choice
# changes (graph.paths: oneDNN's depthwise kernel refuses an output smaller than the padding; session 24)
_CONV_SIZES2D = [1, 2] + _SIZES2D
_LEN1D = [8, 16, 32, 50, 64, 100, 128, 256]

FAMILIES: dict[str, Family] = {}


def register(f: Family) -> Family:
    FAMILIES[f.name] = f
    return f


for _dim, _sizes, _chs in ((2, _CONV_SIZES2D, _CONV2D_CH), (1, _LEN1D, _CH)):
    register(Family(
        name=f"conv{_dim}d",
        description=f"Conv{_dim}d, padding kernel//2; groups 1, grouped, or depthwise (groups = channels)",
        space={"batch": _BATCH, "in_channels": _chs, "out_channels": _chs, "kernel": [1, 3, 5, 7],
               "stride": [1, 2], "groups": [1, 2, 4, 8, 16, 32, 64, 128, 256], "size": _sizes},
        width_params=["out_channels", "in_channels"],
        build=_conv_build(_dim),
        input_shapes=(lambda d: lambda p: [(p["batch"], p["in_channels"]) + (p["size"],) * d])(_dim),
        raw_features=_conv_features(_dim),
        valid=_conv_valid, valid_rule="in_channels and out_channels are multiples of groups",
    ))

for _dim, _sizes in ((2, _SIZES2D), (1, _LEN1D)):
    register(Family(
        name=f"conv_transpose{_dim}d",
        description=f"ConvTranspose{_dim}d, groups 1, output stride x the input (padding and output padding from "
                    "the kernel: `conv_transpose_padding`)",
        space={"batch": _BATCH, "in_channels": _CH, "out_channels": _CH, "kernel": [1, 2, 3, 4, 5],
               "stride": [1, 2], "size": _sizes},
        width_params=["out_channels", "in_channels"],
        build=_conv_transpose_build(_dim),
        input_shapes=(lambda d: lambda p: [(p["batch"], p["in_channels"]) + (p["size"],) * d])(_dim),
        raw_features=_conv_transpose_features(_dim),
        valid=_conv_transpose_valid,
        valid_rule="kernel >= stride, and an odd kernel at stride 1 (the output is stride x the input)",
    ))

register(Family(
    name="linear",
    description="Linear on a (batch, in_features) input",
    # widths to 4096: the wide heads of VGG-, AlexNet- and ViT-style networks and wide MLPs (up to 64 MiB of
    # weights, past a CPU's last-level cache). There a batch of 2 takes 2.5x the time of a batch of 1
    # (torch-cpu, 1 thread, Linear(3072, 2048): 2.9 ms, 7.1 ms at batch 2, 12.3 ms at batch 8), which the
    # profile's 1024-wide grid never showed: the wide MLP head of the held-out suite was priced 48% under
    space={"batch": _BATCH + [64, 128], "in_features": list(range(1, 4097)),
           "out_features": list(range(1, 4097))},
    width_params=["out_features", "in_features"],
    build=_linear_build,
    input_shapes=lambda p: [(p["batch"], p["in_features"])],
    raw_features=_linear_features,
))

for _kind, _gates in (("gru", 3), ("lstm", 4)):
    register(Family(
        name=_kind,
        description=f"{_kind.upper()}, batch_first, unidirectional",
        space={"batch": _BATCH, "input_size": _CH, "hidden_size": _CH, "num_layers": [1, 2, 3],
               "seq_len": [1, 2, 4, 8, 10, 16, 20, 25, 32, 50, 64, 100, 128]},
        width_params=["hidden_size", "input_size"],
        build=_rnn_build(_kind),
        input_shapes=lambda p: [(p["batch"], p["seq_len"], p["input_size"])],
        raw_features=_rnn_features(_gates),
    ))

for _dim, _sizes in ((2, _SIZES2D), (1, _LEN1D)):
    register(Family(
        name=f"pool{_dim}d",
        description=f"MaxPool{_dim}d / AvgPool{_dim}d without padding",
        space={"batch": _BATCH, "mode": ["max", "avg"], "channels": _CH, "kernel": [2, 3],
               "stride": [1, 2, 3], "size": _sizes},
        width_params=["channels"],
        build=_pool_build(_dim),
        input_shapes=(lambda d: lambda p: [(p["batch"], p["channels"]) + (p["size"],) * d])(_dim),
        raw_features=_pool_features(_dim),
        valid=lambda p: p["size"] >= p["kernel"], valid_rule="size >= kernel (no padding)",
    ))

_EW_SPACE = {"batch": _BATCH, "channels": _CH, "dims": [1, 2], "size": sorted(set(_SIZES2D + _LEN1D))}
_EW_BOUNDED = lambda p: p["dims"] == 1 or p["size"] <= 56  # noqa: E731  (the profiler's 2-D tensors are bounded)

register(Family(
    name="batchnorm",
    description="BatchNorm1d/2d in eval mode (what a deployed network runs)",
    space=dict(_EW_SPACE), width_params=["channels"], build=_bn_build,
    input_shapes=lambda p: [_spatial_shape(p)],
    raw_features=_elementwise_features(reads=1, flops_per_element=2, weights_per_channel=4),
    bounded=_EW_BOUNDED,
))
register(Family(
    name="activation",
    description="ReLU-family and other point-wise activations",
    space={"kind": ACTIVATIONS, **_EW_SPACE}, width_params=["channels"], build=_act_build,
    input_shapes=lambda p: [_spatial_shape(p)],
    raw_features=_elementwise_features(reads=1, flops_per_element=1),
    bounded=_EW_BOUNDED,
))
register(Family(
    name="add",
    description="Element-wise add of two tensors of the same shape (residual join)",
    space=dict(_EW_SPACE), width_params=["channels"], build=lambda p: Add(),
    input_shapes=lambda p: [_spatial_shape(p), _spatial_shape(p)],
    raw_features=_elementwise_features(reads=2, flops_per_element=1),
    bounded=_EW_BOUNDED,
))
register(Family(
    name="concat",
    description="Concatenation of two tensors along channels",
    space={**_EW_SPACE, "channels_b": _CH}, width_params=["channels", "channels_b"],
    build=lambda p: Concat(),
    input_shapes=lambda p: [_spatial_shape(p), _spatial_shape({**p, "channels": p["channels_b"]})],
    raw_features=_concat_features,
    bounded=_EW_BOUNDED,
))


# ---- issue 17 families
register(Family(
    name="mul",
    description="Element-wise multiply: two same-shaped tensors (mode same), a tensor by a per-channel "
                "(batch, channels, 1, ...) tensor (mode channel: squeeze-excitation's scaling), or by a "
                "number (mode scalar)",
    space={"mode": ["same", "channel", "scalar"], **_EW_SPACE}, width_params=["channels"],
    build=_mul_build, input_shapes=_mul_shapes, raw_features=_mul_features, bounded=_EW_BOUNDED,
))
register(Family(
    name="adaptive_pool",
    description="AdaptiveAvgPool / AdaptiveMaxPool 1d/2d to an output size the pool family's integer "
                "kernel = stride cannot express (7 -> 3, 1 -> 7, ...)",
    space={"batch": _BATCH, "mode": ["avg", "max"], "channels": _CH, "dims": [1, 2],
           "size": sorted(set(_SIZES2D + _LEN1D)), "out_size": [1, 2, 3, 4, 5, 6, 7, 8, 14]},
    width_params=["channels"], build=_adaptive_build,
    input_shapes=lambda p: [_spatial_shape(p)], raw_features=_adaptive_features,
    bounded=_EW_BOUNDED,
))
register(Family(
    name="layernorm",
    description="LayerNorm over the last dimension (features) of (batch, seq_len, features)",
    space={"batch": _BATCH + [64], "seq_len": list(range(1, 257)), "features": list(range(1, 1025))},
    width_params=["features"],
    build=_layernorm_build,
    input_shapes=lambda p: [(p["batch"], p["seq_len"], p["features"])],
    raw_features=_layernorm_features,
))
register(Family(
    name="groupnorm",
    description="GroupNorm (channels in groups) on (batch, channels, *spatial); groups 1 = LayerNorm "
                "over (C, H, W), groups = channels = InstanceNorm",
    space={"groups": [1, 2, 4, 8, 16, 32], **_EW_SPACE}, width_params=["channels"],
    build=_groupnorm_build, input_shapes=lambda p: [_spatial_shape(p)],
    raw_features=_groupnorm_features,
    valid=lambda p: p["channels"] % p["groups"] == 0, valid_rule="channels is a multiple of groups",
    bounded=_EW_BOUNDED,
))
register(Family(
    name="upsample",
    description="nn.Upsample / F.interpolate by an integer scale: nearest, or (bi)linear (mode linear)",
    space={"mode": ["nearest", "linear"], "scale": [2, 3, 4], **_EW_SPACE}, width_params=["channels"],
    build=_upsample_build, input_shapes=lambda p: [_spatial_shape(p)],
    raw_features=_upsample_features, bounded=_EW_BOUNDED,
))
register(Family(
    name="attention",
    description="F.scaled_dot_product_attention on (batch, heads, seq_len, head_dim) queries, keys and "
                "values of one length (self-attention), optionally causal",
    space={"batch": _BATCH, "heads": [1, 2, 3, 4, 6, 8, 12, 16], "seq_len": list(range(1, 257)),
           "head_dim": list(range(1, 129)), "causal": [0, 1]},
    width_params=["head_dim", "seq_len"], build=_attention_build,
    input_shapes=lambda p: [(p["batch"], p["heads"], p["seq_len"], p["head_dim"])] * 3,
    raw_features=_attention_features,
))
register(Family(
    name="mha",
    description="nn.MultiheadAttention as a whole module, self-attention attn(x, x, x) on "
                "(batch, seq_len, embed_dim) (QKV projection, attention, output projection)",
    space={"batch": _BATCH, "seq_len": list(range(1, 257)), "embed_dim": list(range(1, 513)),
           "heads": [1, 2, 4, 8], "need_weights": [0, 1]},
    width_params=["embed_dim"], build=_mha_build,
    input_shapes=lambda p: [(p["batch"], p["seq_len"], p["embed_dim"])],
    raw_features=_mha_features, valid=_multiple_of("embed_dim", "heads"),
    valid_rule="embed_dim is a multiple of heads",
))
register(Family(
    name="transformer_encoder",
    description="nn.TransformerEncoderLayer as a whole module (eval; self-attention, two LayerNorms, "
                "an MLP with relu or gelu; post-norm or norm_first) on (batch, seq_len, d_model)",
    space={"batch": _BATCH, "seq_len": list(range(1, 257)), "d_model": list(range(1, 513)),
           "heads": [1, 2, 4, 8], "ffn": list(range(1, 2049)), "activation": ["relu", "gelu"],
           "norm_first": [0, 1]},
    width_params=["d_model", "ffn"], build=_tel_build,
    input_shapes=lambda p: [(p["batch"], p["seq_len"], p["d_model"])],
    raw_features=_tel_features, valid=_multiple_of("d_model", "heads"),
    valid_rule="d_model is a multiple of heads",
))


register(Family(
    name="softmax",
    description="Softmax / LogSoftmax over the last dimension (features) of (batch, seq_len, features): "
                "attention scores written by hand, a classifier's probabilities",
    space={"kind": ["softmax", "log_softmax"], "batch": _BATCH + [64], "seq_len": list(range(1, 1025)),
           "features": list(range(1, 1025))},
    width_params=["features"],
    build=lambda p: Softmax(p["kind"] == "log_softmax"),
    input_shapes=lambda p: [(p["batch"], p["seq_len"], p["features"])],
    raw_features=_softmax_features,
    bounded=lambda p: p["batch"] * p["seq_len"] * p["features"] <= 1 << 22,  # <= 16 MB a tensor
))
register(Family(
    name="matmul",
    description="torch.matmul / bmm / @ of two tensors, (batch, m, k) by (batch, k, n): attention's "
                "scores and weighted values written by hand (a matmul by a 2-D weight is priced as Linear)",
    space={"batch": [1, 2, 4, 8, 16, 32, 64, 128], "m": list(range(1, 257)), "k": list(range(1, 257)),
           "n": list(range(1, 257))},
    width_params=["k", "n"],
    build=lambda p: MatMul(),
    input_shapes=lambda p: [(p["batch"], p["m"], p["k"]), (p["batch"], p["k"], p["n"])],
    raw_features=_matmul_features,
))


def check_config(config: LayerConfig) -> None:
    """Raise UserError unless `config` is a configuration a time model can price: every parameter of its
    family's space and no other, each a whole number >= 1 (0 or 1 for a flag such as causal) or one of the
    family's strings, and together keeping the family's `valid` rule (groups dividing the channels, ...).
    Sizes outside the profiled ranges are accepted (the models extrapolate, as they do for
    the layers of real networks: batch 1000, 2048 channels); `Family.check` is the profiler's stricter test."""
    space = get_family(config.family).space
    params = config.params
    missing = [k for k in space if k not in params]
    extra = [k for k in params if k not in space]
    if missing or extra:
        raise UserError(f"a {config.family} configuration needs the parameters {', '.join(space)}"
                        + (f"; missing {', '.join(map(str, missing))}" if missing else "")
                        + (f"; unknown {', '.join(map(str, extra))}" if extra else ""))
    for k, allowed in space.items():
        v = params[k]
        if isinstance(allowed[0], str):
            if v not in allowed:
                raise UserError(f"{config.family} parameter {k} must be one of {', '.join(allowed)}, got {v!r}")
        elif allowed == [0, 1]:
            if type(v) is not int or v not in (0, 1):
                raise UserError(f"{config.family} parameter {k} must be 0 or 1, got {v!r}")
        elif type(v) is not int or v < 1:
            raise UserError(f"{config.family} parameter {k} must be a whole number >= 1, got {v!r}")
    fam = get_family(config.family)
    if not fam.valid(dict(params)):  # the family's own joint rule (its `bounded` cap is the profiler's only)
        raise UserError(f"{config.key}: no {config.family} layer has this configuration: {fam.valid_rule}")


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown layer family {name!r}; known: {', '.join(FAMILIES)}") from None


def parse_families(spec: str | None) -> list[str]:
    """'conv2d,gru' -> ['conv2d', 'gru']; None or 'all' -> every family. Unknown names raise, and so does a
    spec naming none ('', ','): an empty variable in a script is not a request for every family."""
    if spec is None or spec.strip() == "all":
        return list(FAMILIES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UserError(f"no layer family named in {spec!r} (give names separated by commas, or 'all')")
    for n in names:
        get_family(n)
    return names
