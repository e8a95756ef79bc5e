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

from fastdeepiot.errors import UnknownNameError

BYTES_PER_ELEMENT = 4  # float32 everywhere (the dtype is recorded in the measurement conditions)


@dataclass(frozen=True)
class LayerConfig:
    family: str
    params: dict[str, Any] = field(hash=False, compare=False)

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


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@dataclass
class Family:
    name: str
    description: str
    space: dict[str, list]  # parameter -> allowed values (ints in increasing order, or strings)
    width_params: list[str]  # parameters swept one value at a time by the profiler
    build: Callable[[dict], Any]  # params -> nn.Module
    input_shapes: Callable[[dict], list[tuple[int, ...]]]
    raw_features: Callable[[dict], dict[str, float]]
    valid: Callable[[dict], bool] = lambda p: True
    # Parameters that may be fixed by `normalize` from others (e.g. depthwise groups = channels).
    normalize: Callable[[dict], dict] = lambda p: p

    def features(self, params: dict) -> dict[str, float]:
        """FLOPs, bytes read/written, weight bytes, output elements, and the raw parameters."""
        f = {k: float(v) for k, v in params.items() if isinstance(v, (int, float))}
        f.update({k: float(v) for k, v in self.raw_features(params).items()})
        return f

    def make_inputs(self, params: dict, device: str = "cpu"):
        import torch

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
            raise ValueError(f"{self.name}: invalid configuration {p}")
        return p


# ----------------------------------------------------------------------------------- builders


def _conv_build(dim: int):
    def build(p: dict):
        import torch.nn as nn

        cls = nn.Conv2d if dim == 2 else nn.Conv1d
        return cls(p["in_channels"], p["out_channels"], p["kernel"], stride=p["stride"],
                   padding=p["kernel"] // 2, groups=p["groups"], bias=True)

    return build


def _conv_features(dim: int):
    def feats(p: dict) -> dict:
        size = p["size"]
        k, s, pad = p["kernel"], p["stride"], p["kernel"] // 2
        out = _conv_out(size, k, s, pad)
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


def _conv_valid(p: dict) -> bool:
    g = p["groups"]
    return (p["in_channels"] % g == 0 and p["out_channels"] % g == 0
            and p["size"] + 2 * (p["kernel"] // 2) >= p["kernel"])


def _rnn_build(kind: str):
    def build(p: dict):
        import torch.nn as nn

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
        }

    return feats


def _linear_build(p: dict):
    import torch.nn as nn

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
        import torch.nn as nn

        if dim == 2:
            cls = nn.MaxPool2d if p["mode"] == "max" else nn.AvgPool2d
        else:
            cls = nn.MaxPool1d if p["mode"] == "max" else nn.AvgPool1d
        return cls(p["kernel"], stride=p["stride"])

    return build


def _pool_features(dim: int):
    def feats(p: dict) -> dict:
        out = _conv_out(p["size"], p["kernel"], p["stride"], 0)
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
    import torch.nn as nn

    m = (nn.BatchNorm2d if p["dims"] == 2 else nn.BatchNorm1d)(p["channels"])
    return m.eval()


ACTIVATIONS = ["relu", "relu6", "leaky_relu", "hardswish", "sigmoid", "tanh", "gelu"]


def _act_build(p: dict):
    import torch.nn as nn

    return {
        "relu": nn.ReLU, "relu6": nn.ReLU6, "leaky_relu": nn.LeakyReLU, "hardswish": nn.Hardswish,
        "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
    }[p["kind"]]()


class _Add:
    """nn.Module that adds its two inputs (a residual join)."""

    def __new__(cls):
        import torch.nn as nn

        class Add(nn.Module):
            def forward(self, a, b):
                return a + b

        return Add()


class _Concat:
    def __new__(cls):
        import torch
        import torch.nn as nn

        class Concat(nn.Module):
            def forward(self, a, b):
                return torch.cat([a, b], dim=1)

        return Concat()


def _concat_features(p: dict) -> dict:
    spatial = p["size"] ** p["dims"]
    n = p["batch"] * (p["channels"] + p["channels_b"]) * spatial
    return {"flops": 0.0, "input_bytes": BYTES_PER_ELEMENT * n, "output_bytes": BYTES_PER_ELEMENT * n,
            "weight_bytes": 0.0, "out_elements": n}


# ------------------------------------------------------------------------------- the registry

_CH = list(range(1, 257))  # every width 1..256: sweeps see every step of the staircase
_BATCH = [1, 2, 4, 8, 16, 32]
_SIZES2D = [4, 7, 8, 14, 16, 28, 32, 56]
_LEN1D = [8, 16, 32, 50, 64, 100, 128, 256]

FAMILIES: dict[str, Family] = {}


def register(f: Family) -> Family:
    FAMILIES[f.name] = f
    return f


for _dim, _sizes in ((2, _SIZES2D), (1, _LEN1D)):
    register(Family(
        name=f"conv{_dim}d",
        description=f"Conv{_dim}d, padding kernel//2; groups 1, grouped, or depthwise (groups = channels)",
        space={"batch": _BATCH, "in_channels": _CH, "out_channels": _CH, "kernel": [1, 3, 5, 7],
               "stride": [1, 2], "groups": [1, 2, 4, 8, 16, 32, 64, 128, 256], "size": _sizes},
        width_params=["out_channels", "in_channels"],
        build=_conv_build(_dim),
        input_shapes=(lambda d: lambda p: [(p["batch"], p["in_channels"]) + (p["size"],) * d])(_dim),
        raw_features=_conv_features(_dim),
        valid=_conv_valid,
    ))

register(Family(
    name="linear",
    description="Linear on a (batch, in_features) input",
    space={"batch": _BATCH + [64, 128], "in_features": list(range(1, 1025)),
           "out_features": list(range(1, 1025))},
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
        valid=lambda p: p["size"] >= p["kernel"],
    ))

_EW_SPACE = {"batch": _BATCH, "channels": _CH, "dims": [1, 2], "size": sorted(set(_SIZES2D + _LEN1D))}
_EW_VALID = lambda p: p["dims"] == 1 or p["size"] <= 56  # noqa: E731  (bounded 2-D tensors)

register(Family(
    name="batchnorm",
    description="BatchNorm1d/2d in eval mode (what a deployed network runs)",
    space=dict(_EW_SPACE), width_params=["channels"], build=_bn_build,
    input_shapes=lambda p: [_spatial_shape(p)],
    raw_features=_elementwise_features(reads=1, flops_per_element=2, weights_per_channel=4),
    valid=_EW_VALID,
))
register(Family(
    name="activation",
    description="ReLU-family and other point-wise activations",
    space={"kind": ACTIVATIONS, **_EW_SPACE}, width_params=["channels"], build=_act_build,
    input_shapes=lambda p: [_spatial_shape(p)],
    raw_features=_elementwise_features(reads=1, flops_per_element=1),
    valid=_EW_VALID,
))
register(Family(
    name="add",
    description="Element-wise add of two tensors of the same shape (residual join)",
    space=dict(_EW_SPACE), width_params=["channels"], build=lambda p: _Add(),
    input_shapes=lambda p: [_spatial_shape(p), _spatial_shape(p)],
    raw_features=_elementwise_features(reads=2, flops_per_element=1),
    valid=_EW_VALID,
))
register(Family(
    name="concat",
    description="Concatenation of two tensors along channels",
    space={**_EW_SPACE, "channels_b": _CH}, width_params=["channels", "channels_b"],
    build=lambda p: _Concat(),
    input_shapes=lambda p: [_spatial_shape(p), _spatial_shape({**p, "channels": p["channels_b"]})],
    raw_features=_concat_features,
    valid=_EW_VALID,
))


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown layer family {name!r}; known: {', '.join(FAMILIES)}") from None


def parse_families(spec: str | None) -> list[str]:
    """'conv2d,gru' -> ['conv2d', 'gru']; None or 'all' -> every family. Unknown names raise."""
    if spec is None or spec.strip() in ("", "all"):
        return list(FAMILIES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        get_family(n)
    return names
