"""Recurrence: drop a GRU/LSTM's recurrence (plan op "drop_recurrence"): `StepDense` computes the same
width on every step at once, `tanh(W x_t + b)`, started from the layer's own candidate-gate weights.
Its per-step sequential cost, which no width pruning removes, goes. Proposed for single-layer,
one-direction layers whose replacement keeps the network's output shape; priced on a modified copy.

    {"op": "drop_recurrence", "module": "gru"}
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from fastdeepiot.compression.moves.base import Candidate, Context, output_shape
from fastdeepiot.compression.moves.sequence import SequencePool, rnn_at, rnn_names
from fastdeepiot.compression.surgery import PlanError, replace_module


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


def without_recurrence(model: nn.Module, name: str, x: torch.Tensor, out_shape) -> nn.Module | None:
    """A copy of `model` with the recurrence at `name` dropped, or None where it cannot be (not a
    single-layer one-direction GRU/LSTM, or the network then fails or changes its output shape)."""
    if not droppable_recurrence(rnn_at(model, name)):
        return None
    m = copy.deepcopy(model)
    drop_recurrence(m, name)
    try:
        return m if output_shape(m, x) == out_shape else None
    except Exception:  # noqa: BLE001 - the model uses the RNN's state in a way StepDense cannot mimic
        return None


class Recurrence:
    name = "recurrence"
    ops = ("drop_recurrence",)
    bound_stage = 3  # after sequence: a shortened layer's recurrence can still be dropped
    title = "dropping a recurrence"

    def propose(self, model: nn.Module, ctx: Context) -> list[Candidate]:
        out = []
        for name in rnn_names(model):
            m = without_recurrence(model, name, ctx.x, ctx.out_shape)
            s = ctx.cur_cost - ctx.pricer.price(m, ctx.x) if m is not None else 0.0
            if s > ctx.tol:
                out.append(Candidate(self.name, {"op": "drop_recurrence", "module": name},
                                     f"drop recurrence {name}", float(s)))
        return out

    def apply(self, model: nn.Module, step: dict, x: torch.Tensor) -> nn.Module:
        drop_recurrence(model, step["module"])
        return model

    def describe(self, step: dict) -> str:
        return f"drop recurrence {step['module']}"

    def smallest(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Every droppable recurrence dropped."""
        for name in rnn_names(model):
            model = without_recurrence(model, name, ctx.x, ctx.out_shape) or model
        return model

    def finish(self, model: nn.Module, x: torch.Tensor) -> list[dict]:
        return []
