"""What every compression move implements (`Move`), what it proposes (`Candidate`) and what it reads
while proposing (`Context`).

A move is one kind of change the search can make to a network. Its file holds all of it: the
candidates it proposes on the current network (each priced by the cost model), the plan op(s) it
writes and how they replay onto a fresh model, how a step reads in a plan summary, and its share of
the search's lower bound (the smallest network it can reach). The registry in `moves/__init__.py`
lists the moves; the search and the plan only go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn as nn


@dataclass
class Candidate:
    """One proposed step: the plan `step` (JSON) of the move named `move`, its text in the search's
    history (`desc`), and the cost it saves on the current network (`saving`, in the pricer's unit).

    `ratio` (saving per unit of importance lost) is set by moves whose candidates are ranked by it
    (width); the others are ranked by `saving`. A `stone` is a step part of the way toward a saving
    that is tried only when every direct step exceeds the accuracy budget. The search fills in
    `val_accuracy` and `score` when it evaluates the candidate (and, with agreement acceptance,
    `disagreement` with the original on the pool and its upper bound `drop_upper`, percentage points), and
    `divergence`, the mean KL divergence of its outputs from the original's on the validation inputs (nats),
    and `train_drop`, its accuracy drop on the training guard's samples (points; None without the guard)."""

    move: str
    step: dict
    desc: str
    saving: float
    ratio: float | None = None
    stone: bool = False
    val_accuracy: float | None = None
    score: float | None = None
    disagreement: float | None = None
    drop_upper: float | None = None
    divergence: float | None = None
    train_drop: float | None = None


@dataclass
class Context:
    """What a move reads while proposing or shrinking: the example input `x`, the network's output
    shape (every move keeps it), the cost model (`pricer`: `cost.TimeCost` or `cost.FlopsCost`) and
    the current network's cost, this iteration's step size, and the search settings moves use."""

    x: torch.Tensor
    out_shape: tuple[int, ...]
    pricer: Any = None
    cur_cost: float = 0.0
    step_fraction: float = 0.08
    criterion: str = "taylor"
    train_dl: Any = ()
    importance_batches: int = 8
    max_seq_factor: int = 8

    @property
    def budget(self) -> float:
        """The saving this iteration aims for (a fraction of the current cost)."""
        return self.step_fraction * self.cur_cost

    @property
    def tol(self) -> float:
        """Savings at or below this are noise, not candidates."""
        return 0.002 * self.cur_cost


class Move(Protocol):
    """A compression move, registered by `name` in `moves.MOVES`.

    `ops`: the plan op names it writes and replays (a plan step is `{"op": one of ops, ...}`).
    `bound_stage`: where it acts in the lower bound, lower first (blocks are removed before widths
    shrink to 1, at which every conv would look shape-preserving).
    `title`: the move in prose, for notes ("BatchNorm folding skipped: ...")."""

    name: str
    ops: tuple[str, ...]
    bound_stage: int
    title: str

    def propose(self, model: nn.Module, ctx: Context) -> list[Candidate]:
        """Candidate steps on `model` (not modified), each priced with `ctx.pricer`."""

    def apply(self, model: nn.Module, step: dict, x: torch.Tensor) -> nn.Module:
        """Replay one of its plan steps onto `model`, in place (deterministic: the same step onto
        the same weights gives the same weights)."""

    def describe(self, step: dict) -> str:
        """One line for a plan summary."""

    def smallest(self, model: nn.Module, ctx: Context) -> nn.Module:
        """`model` (or a replacement) taken as far as this move could take it: the lower bound."""

    def finish(self, model: nn.Module, x: torch.Tensor) -> list[dict]:
        """Steps applied in place to the final state before its last fine-tune (the search keeps
        them only when the time model does not price the result slower); [] for most moves."""


def output_shape(model: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """The network's output shape on `x` (in eval mode)."""
    with torch.no_grad():
        return tuple(model.eval()(x).shape)
