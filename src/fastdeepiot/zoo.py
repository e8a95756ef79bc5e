"""Network zoo for evaluating whole-network time prediction.

Five styles, each with a width multiplier, on small inputs (images 3x32x32, sensor windows 6x128) so
that one forward takes roughly 0.5-20 ms on one CPU thread:

  mobilenet   inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 project, residual add), ReLU6
  resnet      basic blocks (two 3x3 convs + BN, residual add, 1x1 projection shortcut on downsampling)
  vgg         plain conv-BN-ReLU stacks with max pooling, two linear layers
  shufflenet  ShuffleNetV2-like units: channel split (chunk), grouped 1x1 + depthwise 3x3 branch,
              concat, channel shuffle (view/transpose/reshape)
  deepsense   1-D sensor net: per-sensor Conv1d branches, concat, merge convs, GRU, linear

Only module types the layer families cover are used, plus add / cat / flatten / reshape / transpose /
chunk / getitem (free ops). `ZOO[name](width=...)` builds one network (eval mode);
`zoo_networks()` lists (name, module, example_input) for every style x width.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from fastdeepiot.errors import UnknownNameError
from fastdeepiot.tasks.nets import zoo_deepsense

ZOO_WIDTHS = (0.25, 0.5, 0.75, 1.0)
IMAGE_INPUT = (3, 32, 32)
SENSOR_INPUT = (6, 128)


def _ch(c: float, width: float, div: int = 4) -> int:
    return max(div, int(round(c * width / div)) * div)


def _cbr(cin, cout, k=3, stride=1, groups=1, act: type[nn.Module] | None = nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------- mobilenet


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hid = cin * expand
        layers = []
        if expand != 1:
            layers.append(_cbr(cin, hid, 1, act=nn.ReLU6))
        layers += [_cbr(hid, hid, 3, stride, groups=hid, act=nn.ReLU6), _cbr(hid, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNet(nn.Module):
    # (expansion, channels, repeats, stride)
    SETTINGS = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2)]

    def __init__(self, width: float = 1.0, num_classes: int = 10):
        super().__init__()
        c = _ch(32, width, 8)
        layers = [_cbr(3, c, 3, 1, act=nn.ReLU6)]
        for t, ch, n, s in self.SETTINGS:
            out = _ch(ch, width, 8)
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        last = _ch(256, width, 8)
        layers.append(_cbr(c, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# ---------------------------------------------------------------------------------- resnet


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        s = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(y + s)


class ResNet(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 10, blocks=(2, 2, 2)):
        super().__init__()
        c = _ch(16, width, 4)
        self.stem = _cbr(3, c, 3)
        layers = []
        for stage, n in enumerate(blocks):
            out = _ch(16 * 2**stage, width, 4)
            for i in range(n):
                layers.append(BasicBlock(c, out, 2 if (i == 0 and stage > 0) else 1))
                c = out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


# ------------------------------------------------------------------------------------- vgg


class VGG(nn.Module):
    CFG = [32, "M", 64, "M", 128, 128, "M", 256, 256, "M"]

    def __init__(self, width: float = 1.0, num_classes: int = 10):
        super().__init__()
        layers, c = [], 3
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = _ch(v, width, 4)
                layers.append(_cbr(c, out, 3))
                c = out
        self.features = nn.Sequential(*layers)
        hid = _ch(256, width, 8)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * 2 * 2, hid), nn.ReLU(),
                                        nn.Dropout(0.5), nn.Linear(hid, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


# ------------------------------------------------------------------------------ shufflenet


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride, groups=2):
        super().__init__()
        self.stride = stride
        half = cout // 2
        bin_ = cin // 2 if stride == 1 else cin
        if stride == 2:
            self.left = nn.Sequential(_cbr(cin, cin, 3, 2, groups=cin, act=None), _cbr(cin, half, 1))
        g = groups if bin_ % groups == 0 and half % groups == 0 else 1
        self.right = nn.Sequential(_cbr(bin_, half, 1, groups=g), _cbr(half, half, 3, stride, groups=half, act=None),
                                   _cbr(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.right(b)], dim=1)
        else:
            out = torch.cat([self.left(x), self.right(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNet(nn.Module):
    STAGES = [(64, 2), (128, 3), (256, 2)]  # (channels, units)

    def __init__(self, width: float = 1.0, num_classes: int = 10):
        super().__init__()
        c = _ch(24, width, 8)
        self.stem = _cbr(3, c, 3)
        units = []
        for ch, n in self.STAGES:
            out = _ch(ch, width, 8)
            for i in range(n):
                units.append(ShuffleUnit(c, out, 2 if i == 0 else 1))
                c = out
        self.units = nn.Sequential(*units)
        last = _ch(256, width, 8)
        self.head = _cbr(c, last, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.head(self.units(self.stem(x)))), 1))


# --------------------------------------------------------------------------------- registry


ZOO: dict[str, Callable[..., nn.Module]] = {
    "mobilenet": MobileNet,
    "resnet": ResNet,
    "vgg": VGG,
    "shufflenet": ShuffleNet,
    "deepsense": zoo_deepsense,  # the task network's class, in the zoo's layout (tasks/nets.py)
}
ZOO_INPUT_SHAPES = {"mobilenet": IMAGE_INPUT, "resnet": IMAGE_INPUT, "vgg": IMAGE_INPUT,
                    "shufflenet": IMAGE_INPUT, "deepsense": SENSOR_INPUT}


def build_zoo_network(name: str, width: float = 1.0, batch: int = 1, seed: int = 0):
    """(module in eval mode, example input) for style `name` at width multiplier `width`."""
    if name not in ZOO:
        raise UnknownNameError(f"unknown zoo network {name!r}; known: {', '.join(ZOO)}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        m = ZOO[name](width=width).eval()
        x = torch.randn(batch, *ZOO_INPUT_SHAPES[name])
    return m, x


def zoo_networks(widths=ZOO_WIDTHS, batch: int = 1, styles=None) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """[(f'{style}_w{width}', module, example_input)] for every style x width (20 by default)."""
    out = []
    for name in (styles or ZOO):
        for w in widths:
            m, x = build_zoo_network(name, w, batch)
            out.append((f"{name}_w{w:g}", m, x))
    return out
