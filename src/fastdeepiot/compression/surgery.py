"""Physical surgery's slicing primitives: make layers smaller (not masks) by keeping some channels of
each channel group (`prune_channels`, which the width move and the pricing use), and replace a
submodule (`replace_module`, which the structural moves use). Each structural move's own surgery
(block removal, sequence shortening, dropping a recurrence, BatchNorm folding) lives in its file
under `compression/moves/`.

Every function edits the model in place and is deterministic given its arguments, so a recorded step
replays onto a fresh copy of the same model to give identical weights (`fastdeepiot.compression.plan`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fastdeepiot.graph.channels import ChannelGraph, Member, trace_channels
from fastdeepiot.errors import UserError


class PlanError(UserError):
    """A pruning plan does not fit the model it is applied to."""


GATES = {"GRU": 3, "LSTM": 4}


def _set(mod: nn.Module, pname: str, new: torch.Tensor) -> None:
    old = getattr(mod, pname)
    if isinstance(old, nn.Parameter):
        setattr(mod, pname, nn.Parameter(new.contiguous(), requires_grad=old.requires_grad))
    else:
        setattr(mod, pname, new.contiguous())


def _select(mod: nn.Module, pname: str, idx: list[int], dim: int) -> None:
    p = getattr(mod, pname, None)
    if p is None:
        return
    _set(mod, pname, p.data.index_select(dim, torch.as_tensor(idx, dtype=torch.long)).clone())


def seg_indices(cg: ChannelGraph, segs, keep: dict[int, list[int]]) -> list[int]:
    """Input positions kept by a consumer reading `segs`, given kept channels per group root."""
    idx, off = [], 0
    for s in segs:
        k = keep.get(cg.find(s.space))
        for c in (range(s.n) if k is None else k):
            idx.extend(off + c * s.rep + j for j in range(s.rep))
        off += s.n * s.rep
    return idx


def _rnn_layers(m: nn.RNNBase):
    dirs = 2 if m.bidirectional else 1
    for layer in range(m.num_layers):
        for d in range(dirs):
            yield layer, ("_reverse" if d else ""), dirs


def _gate_rows(idx: list[int], h: int, gates: int) -> list[int]:
    return [g * h + i for g in range(gates) for i in idx]


def prune_rnn_hidden(m: nn.RNNBase, idx: list[int]) -> None:
    """Keep hidden units `idx` of every layer (and direction) of a GRU/LSTM: weight_ih / weight_hh /
    bias rows in the 3 (GRU) or 4 (LSTM) gate blocks, weight_hh columns, later layers' input columns."""
    gates, h = GATES[type(m).__name__], m.hidden_size
    rows = _gate_rows(idx, h, gates)
    for layer, sfx, dirs in _rnn_layers(m):
        _select(m, f"weight_ih_l{layer}{sfx}", rows, 0)
        _select(m, f"weight_hh_l{layer}{sfx}", rows, 0)
        _select(m, f"weight_hh_l{layer}{sfx}", idx, 1)
        _select(m, f"bias_ih_l{layer}{sfx}", rows, 0)
        _select(m, f"bias_hh_l{layer}{sfx}", rows, 0)
        if layer > 0:
            cols = idx if dirs == 1 else idx + [h + i for i in idx]
            _select(m, f"weight_ih_l{layer}{sfx}", cols, 1)
    m.hidden_size = len(idx)
    _refresh_rnn(m)


def prune_rnn_input(m: nn.RNNBase, idx: list[int]) -> None:
    """Keep input features `idx` of a GRU/LSTM: the columns of its first layer's weight_ih (each direction);
    later layers read the hidden units below them."""
    for layer, sfx, _ in _rnn_layers(m):
        if layer == 0:
            _select(m, f"weight_ih_l0{sfx}", idx, 1)
    m.input_size = len(idx)
    _refresh_rnn(m)


def _refresh_rnn(m: nn.RNNBase) -> None:
    if hasattr(m, "_init_flat_weights"):
        m._init_flat_weights()


def apply_member(model: nn.Module, cg: ChannelGraph, mem: Member, keep: dict[int, list[int]]) -> None:
    mod = model.get_submodule(mem.module)
    if mem.space is not None:  # producer
        idx = keep.get(cg.find(mem.space))
        if idx is None:
            return
        if mem.kind == "conv_out":
            _select(mod, "weight", idx, 0)
            _select(mod, "bias", idx, 0)
            mod.out_channels = len(idx)
        elif mem.kind == "linear_out":
            _select(mod, "weight", idx, 0)
            _select(mod, "bias", idx, 0)
            mod.out_features = len(idx)
        elif mem.kind == "rnn_hidden":
            prune_rnn_hidden(mod, list(idx))
        return
    if not any(cg.find(s.space) in keep for s in mem.segs):
        return
    idx = seg_indices(cg, mem.segs, keep)
    if mem.kind == "conv_in":
        _select(mod, "weight", idx, 1)
        mod.in_channels = len(idx)
    elif mem.kind == "linear_in":
        _select(mod, "weight", idx, 1)
        mod.in_features = len(idx)
    elif mem.kind == "rnn_in":
        prune_rnn_input(mod, idx)
    elif mem.kind == "bn":
        for p in ("weight", "bias", "running_mean", "running_var"):
            _select(mod, p, idx, 0)
        mod.num_features = len(idx)
    elif mem.kind == "dw":
        _select(mod, "weight", idx, 0)
        _select(mod, "bias", idx, 0)
        mod.in_channels = mod.out_channels = mod.groups = len(idx)


def prune_channels(model: nn.Module, example_input, keep_by_group: dict[str, list[int]],
                   cg: ChannelGraph | None = None) -> nn.Module:
    """Keep only the listed channels of each named group (group names from `trace_channels(...).groups()`).
    Edits `model` in place and returns it."""
    cg = cg or trace_channels(model, example_input)
    groups = {g.name: g for g in cg.groups()}
    keep: dict[int, list[int]] = {}
    for name, idx in keep_by_group.items():
        g = groups.get(name)
        if g is None:
            raise PlanError(f"no prunable channel group {name!r} in this model (groups: {', '.join(groups)})")
        idx = sorted(int(i) for i in idx)
        if not idx or idx[0] < 0 or idx[-1] >= g.width or len(set(idx)) != len(idx):
            raise PlanError(f"group {name!r}: kept indices must be distinct, in 0..{g.width - 1}, at least one")
        keep[cg.find(g.spaces[0])] = idx
    for mem in cg.members:
        apply_member(model, cg, mem, keep)
    return model


# ------------------------------------------------------------------------------ the module tree


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    if "." in name:
        p, _, last = name.rpartition(".")
        return model.get_submodule(p), last
    return model, name


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, last = _parent(model, name)
    if last not in parent._modules:
        raise PlanError(f"no module {name!r}")
    parent._modules[last] = new
