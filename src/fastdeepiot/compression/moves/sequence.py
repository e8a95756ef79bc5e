"""Sequence: make a GRU/LSTM run over half as many steps by average-pooling its input over time
(plan op "shorten_sequence"): its per-step cost is what width pruning cannot remove. Proposed while
the layer runs over at least 4 steps, the total factor stays within `max_seq_factor` and the
network keeps its output shape; priced on a modified copy.

    {"op": "shorten_sequence", "module": "gru", "factor": 2}

Also the recurrent-layer helpers the recurrence move shares: `rnn_names`, `rnn_at`, `seq_len`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastdeepiot.compression.moves.base import Candidate, Context, output_shape
from fastdeepiot.compression.surgery import PlanError, replace_module


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


def rnn_names(model: nn.Module) -> list[str]:
    """Recurrent layers (GRU/LSTM, or the SequencePool wrapping one), by the name a plan step uses."""
    wrapped = {n + ".rnn" for n, m in model.named_modules() if isinstance(m, SequencePool)}
    return [n for n, m in model.named_modules()
            if (isinstance(m, SequencePool) and isinstance(m.rnn, (nn.GRU, nn.LSTM)))
            or (isinstance(m, (nn.GRU, nn.LSTM)) and n not in wrapped)]


def rnn_at(model: nn.Module, name: str) -> nn.Module:
    """The recurrent layer a plan step's `module` names (inside its SequencePool, if any)."""
    m = model.get_submodule(name)
    return m.rnn if isinstance(m, SequencePool) else m


def seq_len(model: nn.Module, name: str, x: torch.Tensor) -> int | None:
    """The number of steps the recurrent layer at `name` runs over on `x`."""
    rnn = rnn_at(model, name)
    seen = {}

    def hook(mod, inp, out):
        seen.setdefault("t", int(inp[0].shape[1 if mod.batch_first else 0]))

    h = rnn.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        h.remove()
    return seen.get("t")


class Sequence:
    name = "sequence"
    ops = ("shorten_sequence",)
    bound_stage = 2
    title = "sequence shortening"

    def propose(self, model: nn.Module, ctx: Context) -> list[Candidate]:
        out = []
        for name in rnn_names(model):
            mod = model.get_submodule(name)
            factor = mod.stride if isinstance(mod, SequencePool) else 1
            t = seq_len(model, name, ctx.x)
            if factor * 2 > ctx.max_seq_factor or t is None or t < 4:
                continue
            m = copy.deepcopy(model)
            shorten_sequence(m, name, 2)
            if output_shape(m, ctx.x) != ctx.out_shape:
                continue
            s = ctx.cur_cost - ctx.pricer.price(m, ctx.x)
            if s > ctx.tol:
                out.append(Candidate(self.name, {"op": "shorten_sequence", "module": name, "factor": 2},
                                     f"shorten {name} {t}->{t // 2} steps", float(s)))
        return out

    def apply(self, model: nn.Module, step: dict, x: torch.Tensor) -> nn.Module:
        shorten_sequence(model, step["module"], int(step.get("factor", 2)))
        return model

    def describe(self, step: dict) -> str:
        return f"shorten {step['module']} x{step.get('factor', 2)}"

    def smallest(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Every recurrent layer shortened by halves while it keeps >= 4 steps, up to `max_seq_factor`."""
        for name in rnn_names(model):
            f = 1
            while f < ctx.max_seq_factor and (seq_len(model, name, ctx.x) or 0) >= 4:
                trial = copy.deepcopy(model)
                shorten_sequence(trial, name, 2)
                if output_shape(trial, ctx.x) != ctx.out_shape:
                    break
                model, f = trial, f * 2
        return model

    def finish(self, model: nn.Module, x: torch.Tensor) -> list[dict]:
        return []
