"""Fold BatchNorm: fold an eval-mode BatchNorm into the conv (or transposed conv, groups 1) before it (exact; plan
op "fold_bn").
Not proposed during the search: the search folds every foldable BatchNorm of the final state before
its last fine-tune (`finish`), unless the time model prices the folded network slower. Folding first
helps the fine-tune recover from structural moves: har, GRU dropped and three convs removed, 25
distilled epochs: 94.8-95.3% test folded first, 93.9% with BatchNorm kept (runs/diag/fold_first.py,
2 seeds; no difference at 8 epochs). On a backend that fuses BatchNorm itself (onnxruntime-cpu) the
time is the same either way.

    {"op": "fold_bn", "conv": "acc.0.0", "bn": "acc.0.1"}
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fastdeepiot.graph.trace import Tracer
from fastdeepiot.compression.moves.base import Candidate, Context
from fastdeepiot.compression.surgery import PlanError, replace_module


def _plain_transpose(m) -> bool:
    """A ConvTranspose1d/2d of groups 1 (a grouped one's output channels are spread over its weight's groups)."""
    return isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d)) and m.groups == 1


@torch.no_grad()
def fold_batchnorm(model: nn.Module, conv_name: str, bn_name: str) -> None:
    """Fold an eval-mode BatchNorm into the preceding conv / linear (exact), BatchNorm -> Identity."""
    conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
    if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or not (
            isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Linear)) or _plain_transpose(conv)):
        raise PlanError(f"cannot fold {bn_name!r} into {conv_name!r}")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    # output channels: the weight's first axis, a transposed conv's second (its weight is in x out x k..)
    axis = 1 if _plain_transpose(conv) else 0
    w = conv.weight.data * scale.reshape(*([1] * axis), -1, *([1] * (conv.weight.dim() - 1 - axis)))
    b = (conv.bias.data if conv.bias is not None else torch.zeros_like(bn.running_mean)) * scale + shift
    frozen = not conv.weight.requires_grad  # a frozen layer stays frozen (its new bias too, if it had none)
    conv.bias = nn.Parameter(b.clone(), requires_grad=(conv.bias.requires_grad if conv.bias is not None else not frozen))
    conv.weight = nn.Parameter(w.clone(), requires_grad=not frozen)
    replace_module(model, bn_name, nn.Identity())


def foldable_pairs(model: nn.Module, example_input) -> list[tuple[str, str]]:
    """(conv, bn) pairs where a BatchNorm reads only a conv's output that nothing else reads."""
    graph = Tracer().trace(model)
    mods = dict(model.named_modules())
    out = []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(mods.get(node.target), (nn.BatchNorm1d, nn.BatchNorm2d)):
            src = node.args[0]
            if (isinstance(src, torch.fx.Node) and src.op == "call_module" and len(src.users) == 1
                    and (isinstance(mods.get(src.target), (nn.Conv1d, nn.Conv2d)) or _plain_transpose(mods.get(src.target)))):
                out.append((src.target, node.target))
    return out


def fold_all_batchnorm(model: nn.Module, example_input) -> list[tuple[str, str]]:
    """Fold every foldable BatchNorm (`foldable_pairs`) into its conv, in place; returns the pairs."""
    pairs = foldable_pairs(model, example_input)
    for conv, bn in pairs:
        fold_batchnorm(model, conv, bn)
    return pairs


class FoldBatchNorm:
    name = "fold_bn"
    ops = ("fold_bn",)
    bound_stage = 4
    title = "BatchNorm folding"

    def propose(self, model: nn.Module, ctx: Context) -> list[Candidate]:
        return []  # exact and never slower on its own terms: applied once, at the end (`finish`)

    def apply(self, model: nn.Module, step: dict, x: torch.Tensor) -> nn.Module:
        fold_batchnorm(model, step["conv"], step["bn"])
        return model

    def describe(self, step: dict) -> str:
        return f"fold {step['bn']} into {step['conv']}"

    def smallest(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Every foldable BatchNorm folded."""
        fold_all_batchnorm(model, ctx.x)
        return model

    def finish(self, model: nn.Module, x: torch.Tensor) -> list[dict]:
        return [{"op": "fold_bn", "conv": cv, "bn": bn} for cv, bn in fold_all_batchnorm(model, x)]
