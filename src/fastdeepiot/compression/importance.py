"""Channel importance: magnitude (L1) and first-order Taylor (|sum of gradient x weight|).

A channel's parameters are every slice the surgery would delete with it: its producer's output rows
(conv / linear rows, the GRU/LSTM gate rows and recurrent columns), the BatchNorm entries, and the
consumers' input columns. The registry `CRITERIA` maps a name to a function
`(model, cg, groups, batches, loss_fn) -> {group name: np.ndarray of per-channel scores}`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from fastdeepiot.graph.channels import ChannelGraph, Group
from fastdeepiot.compression.surgery import GATES, _rnn_layers


def channel_slices(model: nn.Module, cg: ChannelGraph, group: Group):
    """[(parameter tensor, dim, [[positions of channel c] for c in group])] for every member."""
    root = cg.find(group.spaces[0])
    w = group.width
    out = []
    for mem in cg.members:
        mod = model.get_submodule(mem.module)
        if mem.space is not None:
            if cg.find(mem.space) != root:
                continue
            if mem.kind in ("conv_out", "linear_out"):
                out.append((mod.weight, 0, [[c] for c in range(w)]))
                if mod.bias is not None:
                    out.append((mod.bias, 0, [[c] for c in range(w)]))
            elif mem.kind == "rnn_hidden":
                g, h = GATES[type(mod).__name__], mod.hidden_size
                rows = [[k * h + c for k in range(g)] for c in range(w)]
                for layer, sfx, dirs in _rnn_layers(mod):
                    for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                        t = getattr(mod, f"{p}_l{layer}{sfx}", None)
                        if t is not None:
                            out.append((t, 0, rows))
                    out.append((getattr(mod, f"weight_hh_l{layer}{sfx}"), 1, [[c] for c in range(w)]))
            continue
        pos: list[list[int]] = [[] for _ in range(w)]
        off, hit = 0, False
        for s in mem.segs:
            if cg.find(s.space) == root:
                hit = True
                for c in range(s.n):
                    pos[c].extend(off + c * s.rep + j for j in range(s.rep))
            off += s.n * s.rep
        if not hit:
            continue
        if mem.kind in ("conv_in", "linear_in"):
            out.append((mod.weight, 1, pos))
        elif mem.kind == "rnn_in":
            for layer, sfx, _ in _rnn_layers(mod):  # the first layer reads the input (each direction)
                if layer == 0:
                    out.append((getattr(mod, f"weight_ih_l0{sfx}"), 1, pos))
        elif mem.kind == "bn":
            if mod.weight is not None:
                out.append((mod.weight, 0, pos))
                out.append((mod.bias, 0, pos))
        elif mem.kind == "dw":
            out.append((mod.weight, 0, pos))
            if mod.bias is not None:
                out.append((mod.bias, 0, pos))
    return out


def _per_channel(t: torch.Tensor, dim: int, pos: list[list[int]], reduce) -> np.ndarray:
    t = t.detach().movedim(dim, 0).reshape(t.shape[dim], -1)
    return np.array([float(reduce(t[p])) if p else 0.0 for p in pos])


def l1_importance(model, cg, groups, batches=None, loss_fn=None) -> dict[str, np.ndarray]:
    """Sum of |w| over each channel's parameters, normalised per parameter tensor by its mean |w| (so that
    a conv's weights and a BatchNorm's scales count alike)."""
    out = {}
    for g in groups:
        score = np.zeros(g.width)
        for t, dim, pos in channel_slices(model, cg, g):
            mean = float(t.detach().abs().mean()) or 1.0
            score += _per_channel(t, dim, pos, lambda v: v.abs().sum()) / mean / max(1, t.numel() // t.shape[dim])
        out[g.name] = score
    return out


def taylor_importance(model, cg, groups, batches, loss_fn=None) -> dict[str, np.ndarray]:
    """First-order Taylor (Molchanov et al. 2019): |sum over a channel's parameters of grad x weight|,
    the estimated loss change when the channel is removed, summed over `batches` (comparable across
    groups, in loss units)."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    slices = {g.name: channel_slices(model, cg, g) for g in groups}
    acc = {g.name: np.zeros(g.width) for g in groups}
    was = model.training
    model.eval()  # eval mode: no dropout noise, and BatchNorm running statistics stay untouched
    for xb, yb in batches:
        model.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        for g in groups:
            gw = np.zeros(g.width)
            for t, dim, pos in slices[g.name]:
                if t.grad is None:
                    continue
                gw += _per_channel(t.grad * t, dim, pos, lambda v: v.sum())
            acc[g.name] += np.abs(gw)
    model.zero_grad(set_to_none=True)
    model.train(was)
    return acc


CRITERIA: dict[str, Callable] = {"l1": l1_importance, "taylor": taylor_importance}
