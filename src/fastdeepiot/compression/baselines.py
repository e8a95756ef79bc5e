"""Baselines for the compression benchmark, each fine-tuned with the same budget as ours.

* FLOPs ablation: `compress(..., cost="flops")` (our pipeline, FLOPs in place of the time model).
* torch-pruning magnitude pruning (L1), uniform per-layer ratio chosen by bisection to reach a FLOPs target,
  and a global ratio; on networks where torch-pruning 1.6 fails (Conv1d -> GRU: IndexError while building
  groups) the failure is returned, not hidden.
* uniform width scaling of the reference network, trained from scratch.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from fastdeepiot.compression.cost import FlopsCost


def torch_pruning_magnitude(model: nn.Module, x: torch.Tensor, ratio: float, *, global_pruning: bool = False,
                            output_layers: list[nn.Module] | None = None) -> nn.Module:
    """Prune a copy with torch-pruning's MagnitudePruner (L1); raises what torch-pruning raises."""
    import torch_pruning as tp

    m = copy.deepcopy(model).eval()
    ignored = output_layers if output_layers is not None else [
        [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]]
    if output_layers is not None:  # map to the copy
        names = {id(mod): n for n, mod in model.named_modules()}
        ignored = [m.get_submodule(names[id(mod)]) for mod in output_layers]
    rnns = [mod for mod in m.modules() if isinstance(mod, (nn.GRU, nn.LSTM))]
    pruner = tp.pruner.MagnitudePruner(m, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=ignored + rnns,
                                       global_pruning=global_pruning)
    pruner.step()
    return m


def ratio_for_flops(model, x, target_mflops: float, global_pruning=False, tol=0.01) -> tuple[float, nn.Module]:
    """Bisection on torch-pruning's ratio so that the pruned network's FLOPs reach `target_mflops`."""
    cost = FlopsCost()
    lo, hi, best = 0.0, 0.95, None
    for _ in range(10):
        mid = (lo + hi) / 2
        m = torch_pruning_magnitude(model, x, mid, global_pruning=global_pruning)
        f = cost.price(m, x)
        best = (mid, m)
        if abs(f - target_mflops) / target_mflops < tol:
            break
        if f > target_mflops:
            lo = mid
        else:
            hi = mid
    return best
