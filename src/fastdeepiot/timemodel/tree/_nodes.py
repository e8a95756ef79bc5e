"""The node structure of a model tree: a flat list of JSON-ready dicts, the root at index 0.

Every node has
  * ``leaf`` (bool), ``depth`` (root 0), ``n`` (training samples routed to or below it);
  * ``model``: its linear equation ``{"features": [...], "intercept": float, "coef": {feature: float}}``
    (after fitting also ``sse``, the weighted sum of squared relative residuals it was fitted with);
  * ``range``: ``{feature: [lo, hi]}`` over its training samples, for each feature of its equation
    (the extrapolation guard of ``route.guard``; trees saved before the guard have none).
An internal node also has ``feature``, ``kind`` ("le": x <= value goes left; "eq": x == value goes
left; "in": x in value, a list of a categorical column's levels, goes left), ``value``, and the indices
``left`` and ``right`` of its children.

During growing a node also carries ``_idx`` (its sample indices), and pruning only flips ``leaf`` to
True: ``compact`` then drops the nodes below pruned subtrees, renumbers, and strips the scratch.
"""

from __future__ import annotations

import numpy as np


def linear(model, cols, n: int) -> np.ndarray:
    """The equation on n rows (cols: its feature columns; an intercept-only equation has none)."""
    pred = np.full(n, model["intercept"], dtype=float)
    for c in model["features"]:
        pred = pred + model["coef"][c] * cols[c]
    return pred


def goes_left(nd, v: np.ndarray) -> np.ndarray:
    """Which of the values v of an internal node's split column go to its left child."""
    if nd["kind"] == "eq":
        return v == nd["value"]
    if nd["kind"] == "in":
        return np.isin(v, nd["value"])
    return v <= nd["value"]


def samples_under(nodes, leaf_of) -> list[np.ndarray]:
    """Per node, the indices of the samples routed to a leaf below it (or to it)."""
    out: list[np.ndarray] = [np.empty(0, dtype=int)] * len(nodes)

    def rec(i):
        nd = nodes[i]
        out[i] = np.flatnonzero(leaf_of == i) if nd["leaf"] else np.concatenate([rec(nd["left"]), rec(nd["right"])])
        return out[i]

    rec(0)
    return out


def compact(nodes) -> list[dict]:
    """Drop nodes below pruned subtrees, renumber, and strip fit-time scratch."""
    out: list[dict] = []

    def rec(i, depth):
        nd = nodes[i]
        j = len(out)
        new = {"leaf": bool(nd["leaf"]), "depth": depth, "n": nd["n"]}
        if nd["leaf"]:
            m = nd["model"]
            new["model"] = {"features": m["features"], "intercept": m["intercept"], "coef": m["coef"]}
            out.append(new)
            return j
        new.update(feature=nd["feature"], kind=nd["kind"], value=nd["value"])
        out.append(new)
        out[j]["left"] = rec(nd["left"], depth + 1)
        out[j]["right"] = rec(nd["right"], depth + 1)
        return j

    rec(0, 0)
    return out


def parents(nodes) -> dict[int, int]:
    """child index -> parent index."""
    return {c: i for i, nd in enumerate(nodes) if not nd["leaf"] for c in (nd["left"], nd["right"])}


def leaf_paths(nodes):
    """(leaf index, list of (feature, kind, value, went_left)) for every leaf, left to right."""
    out = []

    def rec(i, path):
        nd = nodes[i]
        if nd["leaf"]:
            out.append((i, path))
            return
        rec(nd["left"], path + [(nd["feature"], nd["kind"], nd["value"], True)])
        rec(nd["right"], path + [(nd["feature"], nd["kind"], nd["value"], False)])

    rec(0, [])
    return out
