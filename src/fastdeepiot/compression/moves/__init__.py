"""The compression moves and their registry.

    MOVES = {"width": Width(), "remove": Remove(), "sequence": Sequence(), "recurrence": Recurrence(),
             "fold_bn": FoldBatchNorm()}

Each move lives in one file (`moves/<name>.py`) and implements `base.Move`: `propose(model, ctx)`
-> [`Candidate`], `apply(model, step, x)` (replay one plan step), `describe(step)` (plan summary),
`smallest(model, ctx)` (its share of the lower bound) and `finish(model, x)` (steps applied before
the final fine-tune). The search proposes from the registered moves in this order; a plan replays
each step through the move that owns its op (`apply_step`, `describe_step`).

Adding a move: write `moves/<name>.py` with a class implementing `Move` (its plan op names in
`ops` must be new), and add an instance to `MOVES` below.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fastdeepiot.compression.moves.base import Candidate, Context, Move, output_shape
from fastdeepiot.compression.moves.fold_bn import FoldBatchNorm
from fastdeepiot.compression.moves.recurrence import Recurrence
from fastdeepiot.compression.moves.remove import Remove
from fastdeepiot.compression.moves.sequence import Sequence
from fastdeepiot.compression.moves.width import Width
from fastdeepiot.compression.surgery import PlanError

MOVES: dict[str, Move] = {mv.name: mv for mv in (Width(), Remove(), Sequence(), Recurrence(), FoldBatchNorm())}

# plan op -> the move that writes and replays it
OPS: dict[str, Move] = {op: mv for mv in MOVES.values() for op in mv.ops}


def move_for(step: dict) -> Move:
    """The registered move that owns a plan step's op (PlanError for an unknown op)."""
    op = step.get("op") if isinstance(step, dict) else None
    mv = OPS.get(op)
    if mv is None:
        raise PlanError(f"unknown plan step {op!r}; known: {', '.join(OPS)}")
    return mv


def apply_step(model: nn.Module, step: dict, example_input: torch.Tensor) -> nn.Module:
    """Replay one plan step onto `model`, in place, through the move that owns its op."""
    try:
        return move_for(step).apply(model, step, example_input)
    except KeyError as e:
        raise PlanError(f"plan step {step} lacks its field {e}") from None


def describe_step(step: dict) -> str:
    """A plan step in one line (`Plan.summary`)."""
    return move_for(step).describe(step)


__all__ = ["MOVES", "OPS", "Candidate", "Context", "Move", "apply_step", "describe_step", "move_for",
           "output_shape"]
