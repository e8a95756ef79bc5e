"""Reference networks, built only from module types the time model and the pruner understand:
Conv1d/Conv2d, BatchNorm1d/2d, ReLU, MaxPool1d/2d, GRU (batch_first), Linear, Dropout; the forward
only flattens, permutes, concatenates, slices channels and averages, and is torch.fx-traceable.

Every network records its constructor arguments as `model.arch` (a plain dict) and its registry
name as `model.net_name`, so a checkpoint can rebuild it with `build(net_name, **arch)`.
Widths come as explicit per-layer channel lists, scaled by `width_mult`; the scaled lists are what
`arch` records (with width_mult reset to 1.0), so a pruned network can be described exactly.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

from fastdeepiot.errors import UnknownNameError, UserError


def _scale(channels: Sequence[int], width_mult: float) -> list[int]:
    return [max(1, int(round(c * width_mult))) for c in channels]


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm1d(cout), nn.ReLU(inplace=False))


class DeepSense(nn.Module):
    """DeepSense-style network for (B, 6, T) windows: accelerometer = channels 0-2, gyroscope = 3-5.

    acc / gyro branches: Conv1d-BN-ReLU per entry of `sensor_channels` (the first with stride
    `sensor_stride`); concatenate; merge: Conv1d-BN-ReLU per entry of `merge_channels` (the first
    with stride `time_stride // sensor_stride`); GRU over the remaining T / time_stride steps;
    mean over time; Dropout; Linear.

    The same design also gives the network zoo's ``deepsense`` timing network (``zoo_deepsense``),
    which differs in more than widths; the keyword arguments after `width_mult` express it and are
    recorded in `arch` only when they differ from their defaults (so the task networks' `arch`, and
    their checkpoints, are as they were):
      sensor_kernels / merge_kernels   per-layer kernel sizes (default: `kernel` for every layer)
      sensor_pool                      MaxPool1d(p, p) at the end of each branch when p > 1
      merge_strides                    per-layer strides of the merge (default: the first
                                       time_stride // sensor_stride, the others 1)
      gru_layers                       stacked GRU layers
      readout                          "mean" over time, or the "last" step
      layout                           module names and where the dropout sits: "task" (branches
                                       `acc`, `gyro`; `dropout` before the head `classifier`) or "zoo"
                                       (an nn.ModuleList `branches`; the Dropout ends `merge`; head `fc`)
    """

    # the keyword arguments only the zoo layout sets, with the defaults that give the task network
    ZOO_OPTIONS = dict(sensor_kernels=None, sensor_pool=1, merge_kernels=None, merge_strides=None, gru_layers=1,
                       readout="mean", layout="task")

    def __init__(self, n_classes: int = 6, in_channels: int = 6, length: int = 128, *,
                 sensor_channels: Sequence[int] = (32, 32), merge_channels: Sequence[int] = (64, 64),
                 gru_hidden: int = 64, kernel: int = 5, time_stride: int = 4, sensor_stride: int = 2,
                 dropout: float = 0.2, width_mult: float = 1.0, sensor_kernels: Sequence[int] | None = None,
                 sensor_pool: int = 1, merge_kernels: Sequence[int] | None = None,
                 merge_strides: Sequence[int] | None = None, gru_layers: int = 1, readout: str = "mean",
                 layout: str = "task"):
        super().__init__()
        if in_channels != 6:
            raise UserError("DeepSense expects 6 input channels (acc xyz + gyro xyz)")
        if time_stride % sensor_stride or time_stride < 1:
            raise UserError(f"time_stride ({time_stride}) must be a multiple of sensor_stride ({sensor_stride})")
        if not sensor_channels or not merge_channels:
            raise UserError("sensor_channels and merge_channels need at least one layer each")
        if readout not in ("mean", "last") or layout not in ("task", "zoo"):
            raise UserError(f"readout must be 'mean' or 'last' and layout 'task' or 'zoo' (got {readout!r}, {layout!r})")
        sc, mc = _scale(sensor_channels, width_mult), _scale(merge_channels, width_mult)
        gh = max(1, int(round(gru_hidden * width_mult)))
        sk = list(sensor_kernels) if sensor_kernels is not None else [kernel] * len(sc)
        mk = list(merge_kernels) if merge_kernels is not None else [kernel] * len(mc)
        ms = (list(merge_strides) if merge_strides is not None
              else [time_stride // sensor_stride] + [1] * (len(mc) - 1))
        if len(sk) != len(sc) or len(mk) != len(mc) or len(ms) != len(mc):
            raise UserError("sensor_kernels / merge_kernels / merge_strides need one entry per layer")
        self.arch = dict(n_classes=n_classes, in_channels=in_channels, length=length, sensor_channels=sc,
                         merge_channels=mc, gru_hidden=gh, kernel=kernel, time_stride=time_stride,
                         sensor_stride=sensor_stride, dropout=dropout, width_mult=1.0)
        given = dict(sensor_kernels=sensor_kernels, sensor_pool=sensor_pool, merge_kernels=merge_kernels,
                     merge_strides=merge_strides, gru_layers=gru_layers, readout=readout, layout=layout)
        self.arch.update({k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in given.items()
                          if v != self.ZOO_OPTIONS[k]})
        self.net_name = "deepsense"
        self.readout = readout

        def branch() -> nn.Sequential:
            layers, cin = [], 3
            for i, (c, k) in enumerate(zip(sc, sk)):
                layers.append(_conv_bn_relu(cin, c, k, sensor_stride if i == 0 else 1))
                cin = c
            if sensor_pool > 1:
                layers.append(nn.MaxPool1d(sensor_pool, sensor_pool))
            return nn.Sequential(*layers)

        if layout == "task":
            self.acc = branch()
            self.gyro = branch()
        else:
            self.branches = nn.ModuleList(branch() for _ in range(2))
        layers, cin = [], 2 * sc[-1]
        for c, k, s in zip(mc, mk, ms):
            layers.append(_conv_bn_relu(cin, c, k, s))
            cin = c
        if layout == "zoo":
            layers.append(nn.Dropout(dropout))
        self.merge = nn.Sequential(*layers)
        self.gru = nn.GRU(mc[-1], gh, num_layers=gru_layers, batch_first=True)
        if layout == "task":
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(gh, n_classes)
        else:
            self.fc = nn.Linear(gh, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.acc, self.gyro] if hasattr(self, "acc") else self.branches
        parts = [br(x[:, 3 * i:3 * (i + 1)]) for i, br in enumerate(branches)]  # acc: 0-2, gyro: 3-5
        h = self.merge(torch.cat(parts, dim=1))  # (B, C, T')
        out, _ = self.gru(h.permute(0, 2, 1))  # (B, T', H)
        z = out.mean(dim=1) if self.readout == "mean" else out[:, -1]
        if hasattr(self, "classifier"):
            return self.classifier(self.dropout(z))
        return self.fc(z)


def zoo_deepsense(width: float = 1.0, num_classes: int = 6) -> DeepSense:
    """The network zoo's ``deepsense`` style at width multiplier `width`, on (B, 6, 128) windows:
    per-sensor branches Conv1d(k5, stride 2)-BN-ReLU, Conv1d(k3)-BN-ReLU, MaxPool(2); concat; merge
    Conv1d(k3)-BN-ReLU, Conv1d(k3, stride 2)-BN-ReLU, Dropout(0.2); a 2-layer GRU read at its last
    step; Linear. Widths are 64 * width rounded to a multiple of 4 (at least 4)."""
    c = max(4, int(round(64 * width / 4)) * 4)
    return DeepSense(num_classes, 6, 128, sensor_channels=(c, c), merge_channels=(c, c), gru_hidden=c,
                     sensor_stride=2, time_stride=2, dropout=0.2, sensor_kernels=(5, 3), sensor_pool=2,
                     merge_kernels=(3, 3), merge_strides=(1, 2), gru_layers=2, readout="last", layout="zoo")


class SmallCNN(nn.Module):
    """Small CNN for (B, C, H, W) images: per entry of `channels`, Conv2d(3x3)-BN-ReLU-MaxPool(2);
    flatten; Linear(hidden)-ReLU-Dropout; Linear(n_classes)."""

    def __init__(self, n_classes: int = 10, in_channels: int = 1, size: int = 28, *,
                 channels: Sequence[int] = (16, 32, 64), hidden: int = 64, dropout: float = 0.3,
                 width_mult: float = 1.0):
        super().__init__()
        ch = _scale(channels, width_mult)
        hid = max(1, int(round(hidden * width_mult)))
        self.arch = dict(n_classes=n_classes, in_channels=in_channels, size=size, channels=ch, hidden=hid,
                         dropout=dropout, width_mult=1.0)
        self.net_name = "smallcnn"
        layers, cin, s = [], in_channels, size
        for c in ch:
            layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=False),
                       nn.MaxPool2d(2)]
            cin, s = c, s // 2
        if s < 1:
            raise UserError(f"{len(ch)} pooling stages are too many for {size}x{size} images")
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin * s * s, hid)
        self.relu = nn.ReLU(inplace=False)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hid, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(self.features(x), 1)
        return self.classifier(self.dropout(self.relu(self.fc(h))))


NETS = {"deepsense": DeepSense, "smallcnn": SmallCNN}


def build(net_name: str, **arch) -> nn.Module:
    """Rebuild a reference network from its registry name and recorded `arch` kwargs."""
    try:
        cls = NETS[net_name]
    except KeyError:
        raise UnknownNameError(f"unknown network {net_name!r}; known: {', '.join(NETS)}") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = cls(**arch)
        except TypeError as e:
            raise UserError(f"cannot build {net_name} from {arch}: {e}") from None
    for w in caught:
        if "zero-element" in str(w.message):  # torch builds a layer of size 0 with only a warning
            raise UserError(f"cannot build {net_name} from {arch}: a layer would have a size of 0")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass at batch 1, from module shapes via forward hooks
    (Conv, Linear, GRU; BN/ReLU/pooling are not counted)."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            k = int(torch.tensor(mod.kernel_size).prod())
            total += out.numel() * (mod.in_channels // mod.groups) * k
        elif isinstance(mod, nn.Linear):
            total += out.numel() // out.shape[-1] * mod.in_features * mod.out_features
        elif isinstance(mod, nn.GRU):
            x = inp[0]
            steps = x.shape[1] if mod.batch_first else x.shape[0]
            batch = x.shape[0] if mod.batch_first else x.shape[1]
            dirs = 2 if mod.bidirectional else 1
            h = mod.hidden_size
            per_step = 0
            for layer in range(mod.num_layers):
                i = mod.input_size if layer == 0 else h * dirs
                per_step += 3 * h * (i + h) * dirs
            total += batch * steps * per_step

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.GRU))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)
