"""Physical surgery: make layers smaller (not masks), remove modules, shorten sequences, drop a recurrence,
fold BatchNorm.

Every function edits the model in place and is deterministic given its arguments, so a recorded step
replays onto a fresh copy of the same model to give identical weights (`fastdeepiot.compression.plan`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastdeepiot.graph.channels import ChannelGraph, Member, trace_channels
from fastdeepiot.graph.trace import Tracer
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
    for _, sfx, _ in _rnn_layers(m):
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


# ------------------------------------------------------------------------------ structural moves


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


def remove_module(model: nn.Module, name: str) -> None:
    """Replace a shape-preserving module (a block, a conv-bn-relu) by nn.Identity."""
    try:
        model.get_submodule(name)
    except AttributeError:
        raise PlanError(f"no module {name!r} to remove") from None
    replace_module(model, name, nn.Identity())


class SequencePool(nn.Module):
    """Average-pool a recurrent layer's input over time by `stride` before running it: the RNN runs
    over `stride` times fewer steps (its per-step cost is what width pruning cannot remove)."""

    def __init__(self, rnn: nn.RNNBase, stride: int):
        super().__init__()
        self.rnn = rnn
        self.stride = int(stride)

    def forward(self, x, *rest):
        if self.rnn.batch_first:  # (B, T, C)
            x = F.avg_pool1d(x.transpose(1, 2), self.stride, self.stride).transpose(1, 2)
        else:  # (T, B, C)
            x = F.avg_pool1d(x.permute(1, 2, 0), self.stride, self.stride).permute(2, 0, 1)
        return self.rnn(x, *rest)


def shorten_sequence(model: nn.Module, name: str, factor: int = 2) -> None:
    """Make the RNN at `name` run over `factor` times fewer steps (pool its input over time)."""
    try:
        m = model.get_submodule(name)
    except AttributeError:
        raise PlanError(f"no module {name!r}") from None
    if isinstance(m, SequencePool):
        m.stride *= int(factor)
    elif isinstance(m, (nn.GRU, nn.LSTM)):
        replace_module(model, name, SequencePool(m, factor))
    else:
        raise PlanError(f"{name!r} is a {type(m).__name__}, not a GRU/LSTM")


class StepDense(nn.Module):
    """A GRU/LSTM without its recurrence: every step computed independently, `tanh(W x_t + b)`, as one
    matrix product over all steps instead of T sequential cell updates. W and b start as the layer's own
    candidate (GRU) / cell (LSTM) gate input weights, i.e. the cell's new-state proposal with a zero
    previous state, so fine-tuning starts close. Returns what the RNN returned: (output, h_n) for a GRU,
    (output, (h_n, c_n)) for an LSTM, h_n being the last step's output (an initial state is ignored)."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        kind, h = type(rnn).__name__, rnn.hidden_size
        self.kind, self.batch_first = kind, rnn.batch_first
        self.proj = nn.Linear(rnn.input_size, h)
        rows = slice(2 * h, 3 * h)  # GRU gates (r, z, n), LSTM gates (i, f, g, o): the 3rd block
        with torch.no_grad():
            self.proj.weight.copy_(rnn.weight_ih_l0[rows])
            b = torch.zeros(h)
            if rnn.bias:
                b_hh = rnn.bias_hh_l0[rows]
                if kind == "GRU":  # n = tanh(W_in x + b_in + r * b_hn), r ~ sigmoid(b_ir + b_hr) at x = 0
                    b_hh = b_hh * torch.sigmoid(rnn.bias_ih_l0[:h] + rnn.bias_hh_l0[:h])
                b = rnn.bias_ih_l0[rows] + b_hh
            self.proj.bias.copy_(b)

    def forward(self, x, *rest):
        y = torch.tanh(self.proj(x))
        last = y[:, -1] if self.batch_first else y[-1]  # batched input (as the RNN's output, unbatched is not)
        hn = last.unsqueeze(0)
        return (y, hn) if self.kind == "GRU" else (y, (hn, torch.zeros_like(hn)))


def droppable_recurrence(m: nn.Module) -> bool:
    """A single-layer, one-direction GRU/LSTM without projection (what StepDense can stand in for)."""
    return (isinstance(m, (nn.GRU, nn.LSTM)) and m.num_layers == 1 and not m.bidirectional
            and not getattr(m, "proj_size", 0))


def drop_recurrence(model: nn.Module, name: str) -> None:
    """Replace the GRU/LSTM at `name` (or inside the SequencePool at `name`) by a StepDense: its per-step
    sequential cost, which no width pruning removes, goes; a per-step dense layer of the same width stays."""
    try:
        m = model.get_submodule(name)
    except AttributeError:
        raise PlanError(f"no module {name!r}") from None
    if isinstance(m, SequencePool):
        owner, rnn = m, m.rnn
    else:
        owner, rnn = None, m
    if not droppable_recurrence(rnn):
        raise PlanError(f"{name!r} is a {type(rnn).__name__}, not a single-layer one-direction GRU/LSTM")
    if owner is not None:
        owner.rnn = StepDense(rnn)
    else:
        replace_module(model, name, StepDense(rnn))


@torch.no_grad()
def fold_batchnorm(model: nn.Module, conv_name: str, bn_name: str) -> None:
    """Fold an eval-mode BatchNorm into the preceding conv / linear (exact), BatchNorm -> Identity."""
    conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
    if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        raise PlanError(f"cannot fold {bn_name!r} into {conv_name!r}")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    w = conv.weight.data * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    b = (conv.bias.data if conv.bias is not None else torch.zeros_like(bn.running_mean)) * scale + shift
    conv.weight = nn.Parameter(w.clone())
    conv.bias = nn.Parameter(b.clone())
    replace_module(model, bn_name, nn.Identity())


def foldable_pairs(model: nn.Module, example_input) -> list[tuple[str, str]]:
    """(conv, bn) pairs where a BatchNorm reads only a conv's output that nothing else reads."""
    tracer = Tracer()
    graph = tracer.trace(model)
    mods = dict(model.named_modules())
    out = []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(mods.get(node.target), (nn.BatchNorm1d, nn.BatchNorm2d)):
            src = node.args[0]
            if (isinstance(src, torch.fx.Node) and src.op == "call_module"
                    and isinstance(mods.get(src.target), (nn.Conv1d, nn.Conv2d)) and len(src.users) == 1):
                out.append((src.target, node.target))
    return out


def fold_all_batchnorm(model: nn.Module, example_input) -> list[tuple[str, str]]:
    """Fold every foldable BatchNorm (`foldable_pairs`) into its conv, in place; returns the pairs."""
    pairs = foldable_pairs(model, example_input)
    for conv, bn in pairs:
        fold_batchnorm(model, conv, bn)
    return pairs


def removable_modules(model: nn.Module, example_input, protect: set[str] = frozenset()) -> list[str]:
    """Submodules with parameters whose output has the input's shape (one tensor in, one out), outermost
    first; removing one (-> Identity) keeps every shape in the network."""
    x = example_input if isinstance(example_input, torch.Tensor) else example_input[0]
    shapes: dict[str, bool] = {}
    hooks = []
    for name, m in model.named_modules():
        if not name or isinstance(m, (nn.GRU, nn.LSTM, SequencePool)) or not any(
                isinstance(c, (nn.Conv1d, nn.Conv2d, nn.Linear)) for c in m.modules()):
            continue  # only blocks that compute (a lone BatchNorm is folded, not removed)

        def hook(mod, inp, out, name=name):
            ok = (len(inp) == 1 and isinstance(inp[0], torch.Tensor) and isinstance(out, torch.Tensor)
                  and tuple(inp[0].shape) == tuple(out.shape))
            shapes[name] = shapes.get(name, True) and ok

        hooks.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    names = [n for n, ok in shapes.items() if ok and n not in protect]
    return [n for n in names if not any(n.startswith(o + ".") for o in names)]
