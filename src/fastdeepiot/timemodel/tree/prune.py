"""Pruning a grown model tree.

Cost-complexity (CART weakest-link) pruning whose penalty alpha is chosen by k-fold cross-validation
of the held-out relative error, or reduced-error pruning on a held-out split. Both price held-out rows
as ``predict`` does, with the extrapolation guard; cross-validation scales alpha by each fold tree's
root error (rpart's cp). Pruning turns internal nodes into leaves (``leaf = True``) and leaves the
nodes below them in place; ``_nodes.compact`` drops them.
"""

from __future__ import annotations

import math

import numpy as np

from fastdeepiot.timemodel.tree._nodes import goes_left
from fastdeepiot.timemodel.tree.grow import Grower
from fastdeepiot.timemodel.tree.route import guard, route

PRUNINGS = ("cv", "validation", "none", None)


def grow_and_prune(g: Grower, rng, pruning, validation_fraction: float, cv_folds: int, cv_tolerance: float,
                   cv_power, partition_by: str | None = None, min_part: int = 0) -> tuple[list[dict], float]:
    """(nodes, ccp_alpha): the tree grown on g's samples and pruned as `pruning` says (see ModelTree).

    With `partition_by` (a categorical split column of g), each of its levels that holds at least `min_part`
    samples gets a subtree of its own, grown and pruned on its samples alone, under a chain of forced splits
    `partition_by == level` (the levels by count, the largest first); the samples of the smaller levels share
    the last subtree, which also takes a level unseen in fitting (it goes right at every split). The chain
    holds at most g.max_depth forced splits, and each subtree grows only as deep as the tree may. The returned
    alpha is then the largest subtree's."""
    if partition_by is not None and partition_by in g.categorical:
        v = g.split_vals[partition_by]
        levels, counts = np.unique(v, return_counts=True)
        big = [str(lev) for lev, c in sorted(zip(levels, counts), key=lambda t: (-t[1], str(t[0]))) if c >= min_part]
        big = big[:g.max_depth]  # one forced split a level: the chain stays within the tree's depth
        rest = ~np.isin(v, big)
        if len(big) + bool(rest.any()) >= 2:
            parts = [(lev, np.flatnonzero(v == lev)) for lev in big]
            if rest.any():
                parts.append((None, np.flatnonzero(rest)))
            return _partitioned(g, parts, partition_by, rng, pruning, validation_fraction, cv_folds, cv_tolerance,
                                cv_power)
    return _grow_and_prune(g, rng, pruning, validation_fraction, cv_folds, cv_tolerance, cv_power)


def _partitioned(g: Grower, parts, column: str, rng, *args) -> tuple[list[dict], float]:
    """The forced chain of `grow_and_prune`'s partition: parts = [(level or None for the rest, sample
    indices)], the last one the right end of the chain. (Its nodes carry no equations: the estimator fits
    every node on the samples routed to it once the tree is compacted.)"""
    nodes: list[dict] = []
    alphas = []
    for k, (level, idx) in enumerate(parts):
        last = k == len(parts) - 1
        depth = k + (0 if last else 1)  # the depth of this part's subtree root
        if not last:
            nodes.append({"leaf": False, "depth": k, "n": int(sum(p[1].size for p in parts[k:])),
                          "feature": column, "kind": "eq", "value": level})
        sub_nodes, a = _grow_and_prune(g.subset(idx, max_depth=max(0, g.max_depth - depth)), rng, *args)
        alphas.append(a)
        off = len(nodes)
        for nd in sub_nodes:  # into the whole tree's numbering
            nd = dict(nd, depth=nd["depth"] + depth)
            if "left" in nd:  # split while growing (pruning may have made it a leaf since)
                nd["left"], nd["right"] = nd["left"] + off, nd["right"] + off
            nodes.append(nd)
        if not last:
            nodes[off - 1]["left"] = off
            nodes[off - 1]["right"] = len(nodes)
    return nodes, float(alphas[0])


def _grow_and_prune(g: Grower, rng, pruning, validation_fraction: float, cv_folds: int, cv_tolerance: float,
                    cv_power) -> tuple[list[dict], float]:
    n = len(g.y)
    nodes: list[dict] = []
    vf = float(validation_fraction)
    alpha = 0.0
    if pruning == "validation" and 0 < vf < 1 and n >= 4 * g.min_samples_leaf:
        perm = rng.permutation(n)
        nval = int(round(vf * n))
        val, grow = np.sort(perm[:nval]), np.sort(perm[nval:])
        g.grow(nodes, grow, depth=0)
        reduced_error_prune(g, nodes, val)
    else:
        g.grow(nodes, np.arange(n), depth=0)
        k = int(cv_folds)
        if pruning == "cv" and k >= 2 and n >= 2 * k and sum(not nd["leaf"] for nd in nodes):
            alpha = cv_alpha(g, nodes, rng, k, cv_tolerance, cv_power)
            ccp_prune(nodes, alpha)
    return nodes, alpha


def reduced_error_prune(g: Grower, nodes, val) -> None:
    """Reduced-error pruning: bottom-up, a subtree becomes a leaf unless it prices the held-out
    samples routed to it better, both priced as predict would (with the extrapolation guard)."""
    vals = {c: g.split_vals[c][val] for c in g.split_features}
    cols = {c: g.F[c][val] for nd in nodes for c in nd["model"]["features"]}

    def rec(i, sub):  # sub: positions into val
        nd = nodes[i]
        # node i as a leaf: its rows, guarded by its (still internal) ancestors
        at = guard(nodes, np.full(sub.size, i), {c: v[sub] for c, v in cols.items()})
        leaf_sse = g.routed_sse(nodes, at, val[sub])
        if nd["leaf"]:
            return leaf_sse
        v = vals[nd["feature"]][sub]
        mask = goes_left(nd, v)
        tree_sse = rec(nd["left"], sub[mask]) + rec(nd["right"], sub[~mask])
        if leaf_sse <= tree_sse:
            nd["leaf"] = True
            return leaf_sse
        return tree_sse

    rec(0, np.arange(val.size))


# cost-complexity pruning (CART weakest link), alpha chosen by k-fold cross-validation ----------


def weakest_links(nodes):
    """(g, node) for every internal node reachable from the root; g = (R(t) - R(T_t)) / (L - 1)."""
    out = []

    def rec(i):
        nd = nodes[i]
        if nd["leaf"]:
            return nd["model"]["sse"], 1
        rl, ll = rec(nd["left"])
        rr, lr = rec(nd["right"])
        r, leaves = rl + rr, ll + lr
        out.append(((nd["model"]["sse"] - r) / (leaves - 1), i))
        return r, leaves

    rec(0)
    return out


def ccp_prune(nodes, alpha) -> None:
    """Cut weakest links while their g is at most alpha (in place)."""
    while True:
        links = weakest_links(nodes)
        if not links:
            return
        g, i = min(links)
        if g > alpha:
            return
        nodes[i]["leaf"] = True


def alpha_path(nodes) -> list[float]:
    """The critical alphas of the weakest-link sequence, from 0 (nodes are left as they were)."""
    saved = [nd["leaf"] for nd in nodes]
    alphas = [0.0]
    while True:
        links = weakest_links(nodes)
        if not links:
            break
        g, i = min(links)
        alphas.append(max(g, alphas[-1]))
        nodes[i]["leaf"] = True
    for nd, lf in zip(nodes, saved):
        nd["leaf"] = lf
    return alphas


def cv_alpha(g: Grower, nodes, rng, k, cv_tolerance, cv_power) -> float:
    """The largest alpha whose k-fold held-out error is within cv_tolerance of the best."""
    path = sorted(set(alpha_path(nodes)))
    # candidate alphas: geometric means between consecutive critical values (CART)
    cands = [0.0] + [math.sqrt(a * b) if a > 0 else b / 2 for a, b in zip(path[:-1], path[1:])] + [path[-1] * 1.0001 + 1e-300]
    n = len(g.y)
    folds = np.array_split(rng.permutation(n), k)
    err = np.zeros(len(cands))
    for f in folds:
        held = np.sort(f)
        grow = np.setdiff1d(np.arange(n), held)
        fn: list[dict] = []
        g.grow(fn, grow, depth=0)
        vals = {c: g.split_vals[c][held] for c in g.split_features}
        saved = [nd["leaf"] for nd in fn]
        cols = {c: g.F[c][held] for nd in fn for c in nd["model"]["features"]}
        # alpha is in units of the root's error, as rpart's cp: a fold tree grown on fewer samples
        # has proportionally smaller errors, and the same absolute alpha would over-prune it
        scale = fn[0]["model"]["sse"] / nodes[0]["model"]["sse"] if nodes[0]["model"]["sse"] > 0 else 1.0
        for j, a in enumerate(cands):
            ccp_prune(fn, a * scale)  # alphas ascend: pruning accumulates
            # held-out rows are scored as predict() would price them: with the extrapolation guard
            at = guard(fn, route(fn, vals, held.size), cols)
            err[j] += g.routed_sse(fn, at, held, cv_power)
        for nd, lf in zip(fn, saved):
            nd["leaf"] = lf
    best = float(err.min())
    ok = [j for j in range(len(cands)) if err[j] <= best * (1 + cv_tolerance) + 1e-300]
    return float(cands[max(ok)])
