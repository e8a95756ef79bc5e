"""Width: keep the most important channels of one channel group (plan op "prune").

Candidates come from the cost model's curves: every group (a conv's channels with their BatchNorm
and consumers, a GRU's hidden units with their gate blocks, residual-coupled convs together, ...)
is priced at every width in one batched call (`cost.PricedNetwork`), the curve is snapped to the
widths where predicted time actually drops (`cost.snap_widths`: on a staircase, the step edges),
and per group the widest snapped width that saves this iteration's budget is proposed, keeping the
channels ranked highest by L1 or first-order Taylor importance. Candidates are ranked by saving per
unit of importance lost (HALP's greedy knapsack step). No step cuts more than `max_cut` of a group's
channels: a step edge farther below is approached only through stepping stones (also offered beside a
direct step that goes far). The surgery is `surgery.prune_channels` (the slicing primitives).

    {"op": "prune", "keep": {"merge.0.0": [0, 3, 5, ...]}}
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from fastdeepiot.compression.cost import PricedNetwork, snap_widths
from fastdeepiot.graph.channels import Group, trace_channels
from fastdeepiot.compression.importance import CRITERIA
from fastdeepiot.compression.moves.base import Candidate, Context
from fastdeepiot.compression.surgery import prune_channels


class Width:
    name = "width"
    ops = ("prune",)
    bound_stage = 1
    title = "width pruning"
    max_cut = 0.5  # at most this share of a group's channels per step (gentle steps fine-tune back)
    stone_cut = 0.25  # a stepping stone goes this share of the way down

    def propose(self, model: nn.Module, ctx: Context) -> list[Candidate]:
        cg = trace_channels(model, ctx.x)
        groups = [g for g in cg.groups() if g.width > 1]
        if not groups:
            return []
        priced = PricedNetwork(model, ctx.x, ctx.pricer, cg, groups)
        batches = []
        if ctx.criterion == "taylor":
            for i, b in enumerate(ctx.train_dl):
                if i >= ctx.importance_batches:
                    break
                batches.append(b)
        imp = CRITERIA[ctx.criterion](model, cg, groups, batches)
        total_imp = sum(float(v.sum()) for v in imp.values()) or 1.0
        budget, tol = ctx.budget, ctx.tol
        out: list[Candidate] = []
        for g in groups:
            curve = priced.curve(g.name)
            snapped = snap_widths(curve, tol)
            if not snapped:
                continue
            savings = {w: priced.total - curve[w - 1] for w in snapped}
            allowed = [w for w in snapped if w >= g.width * (1 - self.max_cut)]
            ok = [w for w in allowed if savings[w] >= budget]
            # the edge this group steps to; one beyond `max_cut` only through stepping stones (a jump from 64 to
            # 2 channels, which a staircase the time model learned can ask for, is no step to fine-tune back)
            w = (ok[0] if ok else allowed[-1]) if allowed else snapped[0]
            if savings[w] < budget / 4:
                continue
            score = imp[g.name]
            order = np.argsort(-score, kind="stable")

            def lost(width: int) -> float:
                dropped = float(score[order[width:]].sum())
                if ctx.criterion == "taylor":
                    return dropped / total_imp
                return dropped / (float(score.sum()) or 1.0) / len(groups)

            if allowed:
                out.append(self._candidate(g, order, w, savings[w], lost(w), f"{g.name} {g.width}->{w}"))
            # A step edge far below (ONNX Runtime: 32 -> 16 channels, nothing saved in between) can also
            # be approached gradually, NetAdapt-style: a stepping stone `stone_cut` of the way down,
            # credited with its share of the edge's saving. The search tries stones only when every
            # direct move exceeds the accuracy budget (a cut too deep to fine-tune back in one step).
            ws = int(round(g.width * (1 - self.stone_cut)))
            if w < ws < g.width and g.width - w > self.stone_cut * g.width:
                saving = savings[w] * (g.width - ws) / (g.width - w)
                out.append(self._candidate(g, order, ws, saving, lost(ws), f"{g.name} {g.width}->{ws} (toward {w})",
                                           stone=True))
        return out

    def _candidate(self, g: Group, order: np.ndarray, width: int, saving: float, lost: float, desc: str,
                   stone: bool = False) -> Candidate:
        step = {"op": "prune", "keep": {g.name: sorted(int(i) for i in order[:width])}}
        return Candidate(self.name, step, desc, float(saving), ratio=float(saving) / (lost + 1e-9), stone=stone)

    def apply(self, model: nn.Module, step: dict, x: torch.Tensor) -> nn.Module:
        return prune_channels(model, x, {k: list(v) for k, v in step["keep"].items()})

    def describe(self, step: dict) -> str:
        return "prune " + ", ".join(f"{k}->{len(v)}" for k, v in step["keep"].items())

    def smallest(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Every channel group at width 1."""
        cg = trace_channels(model, ctx.x)
        return prune_channels(model, ctx.x, {g.name: [0] for g in cg.groups()}, cg)

    def finish(self, model: nn.Module, x: torch.Tensor) -> list[dict]:
        return []
