"""Pricing a network as its widths change, without rebuilding it for every width.

`PricedNetwork(model, x, cost, cg)` extracts the network's layer calls once, then probes each channel
group by pruning it by one channel on a copy: the layer parameters that change (out_channels, the next
layer's in_channels, a BatchNorm's channels, a flattened Linear's in_features = rep x channels, a
concat's channels_b, ...) change linearly with the group's width, so every layer configuration is
known for any width vector. `curve(group)` prices the whole network at every width of one group in a
single batched call of the cost model: that is where the staircase shows.

Cost models: `TimeCost(tm)` (the device's time model, its fusion rules and composition, in ms) and
`FlopsCost()` (FLOPs of the same calls, in MFLOPs: the ablation baseline).
"""

from __future__ import annotations

import copy

import numpy as np
import torch.nn as nn

from fastdeepiot.graph.channels import ChannelGraph, Group
from fastdeepiot.graph.extract import extract_layers
from fastdeepiot.compression.surgery import prune_channels
from fastdeepiot.families import LayerConfig


class TimeCost:
    name = "time"
    unit = "ms"

    def __init__(self, tm):
        self.tm = tm

    def extract(self, model, x):
        return self.tm.extract(model, (x,))[1]

    def layer_costs(self, configs: list[LayerConfig]) -> np.ndarray:
        return self.tm.predict_configs(configs) if configs else np.zeros(0)

    def compose(self, calls, costs: dict[str, float]) -> float:
        return self.tm.compose(self.tm.network_terms(calls, [costs.get(c.name) if c.kind == "layer" else None
                                                             for c in calls]))

    def price(self, model, x) -> float:
        calls = self.extract(model, x)
        return _price_calls(self, calls)


class FlopsCost:
    name = "flops"
    unit = "MFLOPs"

    def extract(self, model, x):
        return list(extract_layers(model, (x,)))

    def layer_costs(self, configs: list[LayerConfig]) -> np.ndarray:
        return np.array([c.features()["flops"] / 1e6 for c in configs])

    def compose(self, calls, costs: dict[str, float]) -> float:
        return float(sum(costs[c.name] for c in calls if c.kind == "layer"))

    def price(self, model, x) -> float:
        return _price_calls(self, self.extract(model, x))


def _price_calls(cost, calls) -> float:
    # unmodelled ops (e.g. a mean over time) are left out of the price; `unmodelled_ops` names them so
    # the search reports them (they are not layers the search changes the width of)
    layers = [c for c in calls if c.kind == "layer"]
    ms = cost.layer_costs([c.config for c in layers])
    return cost.compose(calls, {c.name: float(m) for c, m in zip(layers, ms)})


def unmodelled_ops(cost, model, x) -> list[str]:
    return [f"{c.name} ({c.op})" for c in cost.extract(model, x) if c.kind == "unmodelled"]


def _num(params: dict) -> dict:
    return {k: v for k, v in params.items() if isinstance(v, int) and not isinstance(v, bool)}


class PricedNetwork:
    def __init__(self, model: nn.Module, x, cost, cg: ChannelGraph, groups: list[Group]):
        self.cost, self.x = cost, x
        self.calls = cost.extract(model, x)
        self.layers = [c for c in self.calls if c.kind == "layer"]
        self.base_costs = dict(zip([c.name for c in self.layers],
                                   map(float, cost.layer_costs([c.config for c in self.layers]))))
        self.total = cost.compose(self.calls, self.base_costs)
        self.widths = {g.name: g.width for g in groups}
        # coef[g][layer index] = {param: change per channel removed}
        self.coef: dict[str, dict[int, dict[str, int]]] = {}
        base = [_num(c.config.params) for c in self.layers]
        for g in groups:
            if g.width < 2:
                continue
            m2 = prune_channels(copy.deepcopy(model), x, {g.name: list(range(g.width - 1))})
            calls2 = {c.name: c for c in cost.extract(m2, x) if c.kind == "layer"}
            d = {}
            for i, c in enumerate(self.layers):
                c2 = calls2.get(c.name)
                if c2 is None:
                    continue
                p2 = _num(c2.config.params)
                diff = {k: base[i][k] - p2.get(k, base[i][k]) for k in base[i] if p2.get(k) != base[i][k]}
                if diff:
                    d[i] = diff
            self.coef[g.name] = d

    def configs_at(self, i: int, removed: dict[str, int]) -> LayerConfig:
        c = self.layers[i]
        p = dict(c.config.params)
        for g, r in removed.items():
            for k, dk in self.coef.get(g, {}).get(i, {}).items():
                p[k] = max(1, p[k] - dk * r)
        return LayerConfig(c.family, p)

    def curve(self, group: str) -> np.ndarray:
        """Network cost with `group` at width w (index w - 1), everything else as it is."""
        w0 = self.widths[group]
        affected = sorted(self.coef.get(group, {}))
        out = np.full(w0, self.total)
        if not affected:
            return out
        configs = [self.configs_at(i, {group: w0 - w}) for w in range(1, w0 + 1) for i in affected]
        ms = self.cost.layer_costs(configs).reshape(w0, len(affected))
        names = [self.layers[i].name for i in affected]
        for wi in range(w0):
            costs = dict(self.base_costs)
            costs.update(zip(names, map(float, ms[wi])))
            out[wi] = self.cost.compose(self.calls, costs)
        return out

    def total_at(self, widths: dict[str, int]) -> float:
        removed = {g: self.widths[g] - w for g, w in widths.items() if g in self.widths}
        idx = sorted({i for g in removed for i in self.coef.get(g, {})})
        if not idx:
            return self.total
        ms = self.cost.layer_costs([self.configs_at(i, removed) for i in idx])
        costs = dict(self.base_costs)
        costs.update({self.layers[i].name: float(m) for i, m in zip(idx, ms)})
        return self.cost.compose(self.calls, costs)


def snap_widths(curve: np.ndarray, tol: float) -> list[int]:
    """Widths worth pruning to on a cost curve (index w - 1 = width w), widest first.

    The lower convex hull of the curve seen from the current width: from the last chosen width, the
    next is the width with the largest cost saved per channel removed (widest on ties), among widths
    cheaper by more than `tol`. On a staircase these are the step edges (the widest width of each lower
    step); a width just below an edge costs as much as the edge and saves less per channel, so it is
    never chosen, and every chosen width is faster than every wider width."""
    c = np.asarray(curve, dtype=float)
    cur = len(c)
    out = []
    while cur > 1:
        ws = np.arange(1, cur)
        save = c[cur - 1] - c[ws - 1]
        ok = save > tol
        if not ok.any():
            break
        rate = np.where(ok, save / (cur - ws), -np.inf)
        best = rate.max()
        w = int(ws[np.flatnonzero(rate >= best * (1 - 1e-9))].max())
        out.append(w)
        cur = w
    return out
