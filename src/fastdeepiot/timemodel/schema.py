"""The schema of each estimator in a time-model JSON document (`TimeModel.load` -> `validate_dict` ->
`check_estimator`): what a fit can produce, so that a damaged or hand-edited file is refused with a
UserError naming the first problem, before anything routes a row through it."""

from __future__ import annotations

import math

import numpy as np

from fastdeepiot.errors import UserError
from fastdeepiot.timemodel.tree.estimator import MAX_DEPTH, ModelTree


def finite(v) -> bool:
    """Whether a JSON number is one a model can compute with: a finite float, or an integer that converts
    to one (json reads a 400-digit literal as an int that float() cannot hold)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def shown(v) -> str:
    """repr(v) for a message, a long one (a 400-digit integer) cut short."""
    r = repr(v)
    return r if len(r) <= 40 else f"{r[:12]}... ({len(r)} characters)"


def non_finite(obj, where: str) -> str | None:
    """The path of the first number in a JSON value that is not finite (NaN, infinite, or an integer too
    large for a float); None if there is none. (Paths are spelled for containers only: a forest holds
    millions of numbers.)"""
    stack = [(obj, where)]
    while stack:
        o, p = stack.pop()
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        for k, v in items:
            if isinstance(v, (dict, list)):
                stack.append((v, f"{p}.{k}" if isinstance(o, dict) else f"{p}[{k}]"))
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and not finite(v):
                return f"{p}.{k}" if isinstance(o, dict) else f"{p}[{k}]"
        if isinstance(o, (int, float)) and not isinstance(o, bool) and not finite(o):
            return p
    return None


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _strings(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _levels(v) -> bool:
    """A column -> list of string levels mapping (`categorical`, `cat_levels`)."""
    return isinstance(v, dict) and all(_strings(x) for x in v.values())


def check_tree(fam: str, e: dict, label: str | None = None) -> None:
    """A ModelTree dict: a proper binary tree in the flat layout `tree._nodes` describes (the root at 0, each
    child after its parent, every other node the child of exactly one node, `depth` its distance from the
    root and at most the tree's `max_depth`), splits "le" on a numeric column or "eq" / "in" on a categorical one,
    and equations with non-negative costs. O(nodes). `label` names the tree in messages."""
    name = label or f"the {fam} tree"
    params = e.get("params")
    if not isinstance(params, dict):
        raise UserError(f"damaged time model: {name} has no params")
    max_depth = params.get("max_depth", ModelTree().max_depth)
    if not number(max_depth) or not 0 <= max_depth <= MAX_DEPTH:
        raise UserError(f"damaged time model: the max_depth of {name} must be in [0, {MAX_DEPTH}], "
                        f"got {shown(max_depth)}")
    positive_intercept = params.get("positive_intercept", True)
    columns, categorical = e.get("columns"), e.get("categorical")
    if not _strings(columns) or not _levels(categorical) or not set(categorical) <= set(columns):
        raise UserError(f"damaged time model: the columns or categorical levels of {name} are not "
                        f"lists of names")
    columns = set(columns)
    nodes = e.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise UserError(f"damaged time model: {name} has no nodes")
    n = len(nodes)
    parent: list[int | None] = [None] * n
    depth = [0] * n
    for i, nd in enumerate(nodes):
        if not isinstance(nd, dict):
            raise UserError(f"damaged time model: node {i} of {name} is not an object")
        if i and parent[i] is None:  # its parent, if any, comes before it and has been read
            raise UserError(f"damaged time model: node {i} of {name} is no node's child (not a tree)")
        if nd.get("depth") != depth[i] or isinstance(nd.get("depth"), bool):
            raise UserError(f"damaged time model: node {i} of {name} is at depth {depth[i]}, it says "
                            f"{shown(nd.get('depth'))}")
        if depth[i] > max_depth:
            raise UserError(f"damaged time model: {name} is deeper than its max_depth {max_depth}")
        if not nd.get("leaf"):
            for side in ("left", "right"):
                j = nd.get(side)
                if not isinstance(j, int) or isinstance(j, bool) or not i < j < n:
                    raise UserError(f"damaged time model: node {i} of {name} has no valid {side} child")
                if side == "right" and j == nd["left"]:
                    raise UserError(f"damaged time model: node {i} of {name} has node {j} as both children "
                                    f"(not a tree)")
                if parent[j] is not None:
                    raise UserError(f"damaged time model: node {j} of {name} is the child of node {parent[j]} and "
                                    f"of node {i} (not a tree)")
                parent[j], depth[j] = i, depth[i] + 1
            kind, feature, value = nd.get("kind"), nd.get("feature"), nd.get("value")
            if kind not in ("le", "eq", "in"):
                raise UserError(f"damaged time model: node {i} of {name} has split kind {shown(kind)} "
                                f"(\"le\", \"eq\" or \"in\")")
            if not isinstance(feature, str) or feature not in columns:
                raise UserError(f"damaged time model: node {i} of {name} splits on {shown(feature)}, not a column "
                                f"of the tree")
            if kind == "eq" and not (isinstance(value, str) and feature in categorical):
                raise UserError(f"damaged time model: node {i} of {name} tests {feature} == {shown(value)}, not a "
                                f"level of a categorical column")
            if kind == "in" and not (isinstance(value, list) and value and all(isinstance(x, str) for x in value)
                                     and feature in categorical):
                raise UserError(f"damaged time model: node {i} of {name} tests {feature} in {shown(value)}, not "
                                f"levels of a categorical column")
            if kind == "le" and not (number(value) and feature not in categorical):
                raise UserError(f"damaged time model: node {i} of {name} tests {feature} <= {shown(value)}, not a "
                                f"number on a numeric column")
        model = nd.get("model")
        if nd.get("leaf") and not isinstance(model, dict):
            raise UserError(f"damaged time model: leaf {i} of {name} has no model")
        if isinstance(model, dict):
            coef = model.get("coef")
            if not isinstance(coef, dict) or not all(number(v) for v in coef.values()):
                raise UserError(f"damaged time model: node {i} of {name} has no numeric coefficients")
            if any(v < 0 for v in coef.values()):
                raise UserError(f"damaged time model: node {i} of {name} has a negative coefficient "
                                f"(times are non-negative sums of costs)")
            b = model.get("intercept")
            if not number(b) or (positive_intercept and b < 0):
                raise UserError(f"damaged time model: node {i} of {name} has an invalid intercept ({shown(b)})")
        rng = nd.get("range")  # [min, max] of each equation feature over the node's samples
        if rng is not None and not (isinstance(rng, dict) and all(
                isinstance(r, list) and len(r) == 2 and number(r[0]) and number(r[1]) and r[0] <= r[1]
                for r in rng.values())):
            raise UserError(f"damaged time model: node {i} of {name} has a range that is not [low, high] per "
                            f"feature")


def _array(v, kinds: str):
    """v as a 1-D numpy array whose dtype kind is one of `kinds` ("i": integers, "f": floats), or None."""
    if not isinstance(v, list) or not v:
        return None
    try:
        a = np.asarray(v)
    except (ValueError, TypeError):  # ragged
        return None
    return a if a.ndim == 1 and a.dtype.kind in kinds else None


def check_forest(fam: str, e: dict) -> None:
    """A RandomForestTime dict: per tree, the arrays of scikit-learn's tree layout (`left`, `right`: the
    children, -1 for both at a leaf; `feature`, `threshold`, `value`) of one length, each inner node's
    children after it and every node but the root the child of exactly one node (so that the traversal of
    `predict` ends), each inner node's feature a column of the forest's matrix. Vectorised: O(nodes)."""
    num_cols, cat_levels = e.get("num_cols"), e.get("cat_levels")
    if not _strings(num_cols) or not _levels(cat_levels):
        raise UserError(f"damaged time model: the columns of the {fam} forest are not lists of names")
    n_features = len(num_cols) + sum(len(v) for v in cat_levels.values())
    trees = e.get("trees")
    if not isinstance(trees, list) or not trees or not all(isinstance(t, dict) for t in trees):
        raise UserError(f"damaged time model: the {fam} model has no trees")
    for k, t in enumerate(trees):
        name = f"tree {k + 1} of the {fam} forest"
        a = {key: _array(t.get(key), "i" if key in ("left", "right", "feature") else "if")
             for key in ("left", "right", "feature", "threshold", "value")}
        bad = [key for key, v in a.items() if v is None]
        if bad:
            raise UserError(f"damaged time model: {name} has no list of "
                            f"{'integers' if bad[0] in ('left', 'right', 'feature') else 'numbers'} {bad[0]!r}")
        n = len(a["left"])
        if any(len(v) != n for v in a.values()):
            raise UserError(f"damaged time model: the arrays of {name} differ in length")
        left, right, idx = a["left"], a["right"], np.arange(n)
        leaf = left == -1
        inner = ~leaf
        if np.any(right[leaf] != -1) or np.any((left[inner] <= idx[inner]) | (right[inner] <= idx[inner])
                                               | (left[inner] >= n) | (right[inner] >= n)):
            raise UserError(f"damaged time model: {name} has a node whose children are not nodes after it")
        parents = np.bincount(np.concatenate([left[inner], right[inner]]), minlength=n)
        if parents[0] or np.any(parents[1:] != 1):
            raise UserError(f"damaged time model: in {name} a node is the child of "
                            f"{'two nodes' if np.any(parents > 1) else 'no node'} (not a tree)")
        f = a["feature"][inner]
        if np.any((f < 0) | (f >= n_features)):
            raise UserError(f"damaged time model: {name} splits on a feature outside its {n_features} columns")


def check_flops(fam: str, e: dict) -> None:
    """A FlopsLinear dict: intercept and slope are non-negative (fit solves for them by NNLS)."""
    for key in ("intercept", "slope"):
        if not number(e.get(key)) or e[key] < 0:
            raise UserError(f"damaged time model: the {fam} FLOPs model's {key} must be a non-negative number, "
                            f"got {shown(e.get(key))}")


def check_lookup(fam: str, e: dict) -> None:
    """A LookupTable dict: n_neighbors a whole number >= 1, a table of measured rows (numeric columns
    z-scored by `mean` and a positive `std`; string columns; log times) of consistent shapes."""
    if not isinstance(e.get("params"), dict):
        raise UserError(f"damaged time model: the {fam} lookup table has no params")
    k = e["params"].get("n_neighbors", 3)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UserError(f"damaged time model: the {fam} lookup table's n_neighbors must be a whole number >= 1, "
                        f"got {shown(k)}")
    num_cols, cat_cols = e.get("num_cols"), e.get("cat_cols")
    if not _strings(num_cols) or not _strings(cat_cols):
        raise UserError(f"damaged time model: the columns of the {fam} lookup table are not lists of names")
    log_y = _array(e.get("log_y"), "if")
    if log_y is None:
        raise UserError(f"damaged time model: the {fam} lookup table has no measured times")
    n, m = len(log_y), len(num_cols)
    mean, std = _array(e.get("mean"), "if"), _array(e.get("std"), "if")
    if m and (mean is None or std is None or len(mean) != m or len(std) != m):
        raise UserError(f"damaged time model: the {fam} lookup table's mean and std are not one number per "
                        f"numeric column")
    if m and np.any(std <= 0):
        raise UserError(f"damaged time model: the {fam} lookup table has a standard deviation <= 0")
    for key, width, kinds in (("table", m, "if"), ("cats", len(cat_cols), "U")):
        try:
            a = np.asarray(e.get(key))
        except (ValueError, TypeError):
            a = None
        if width and (a is None or a.shape != (n, width) or a.dtype.kind not in kinds):
            raise UserError(f"damaged time model: the {fam} lookup table's {key} is not {n} rows of {width} "
                            f"{'numbers' if kinds == 'if' else 'strings'}")


def check_estimator(fam: str, e: dict) -> None:
    """Refuse the `fam` estimator dict `e` (its "type" already known) unless a fit could have written it."""
    bad = non_finite(e, f"families.{fam}")
    if bad:
        raise UserError(f"damaged time model: {bad} is not a finite number")
    if "floor_ms" in e and (not number(e["floor_ms"]) or e["floor_ms"] < 0):
        raise UserError(f"damaged time model: families.{fam}.floor_ms must be a non-negative number")
    if e["type"] == "ModelTree":
        check_tree(fam, e)
    if e["type"] == "BaggedModelTrees":
        trees = e.get("trees")
        if not isinstance(trees, list) or not trees or not all(isinstance(t, dict) for t in trees):
            raise UserError(f"damaged time model: the {fam} model has no trees")
        if not _strings(e.get("columns")) or not _levels(e.get("categorical")):
            raise UserError(f"damaged time model: the columns or categorical levels of the {fam} model are not "
                            f"lists of names")
        for k, t in enumerate(trees):
            check_tree(fam, t, f"tree {k + 1} of the {fam} model")
    if e["type"] == "FlopsLinear":
        check_flops(fam, e)
    if e["type"] == "LookupTable":
        check_lookup(fam, e)
    if e["type"] == "RandomForestTime":
        check_forest(fam, e)
