"""The schema of each estimator in a time-model JSON document (`TimeModel.load` -> `validate_dict` ->
`check_estimator`): what a fit can produce, so that a damaged or hand-edited file is refused with a
UserError naming the first problem, before anything routes a row through it."""

from __future__ import annotations

import math

from fastdeepiot.errors import UserError


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
    large for a float); None if there is none."""
    stack = [(obj, where)]
    while stack:
        o, p = stack.pop()
        if isinstance(o, (int, float)) and not isinstance(o, bool) and not finite(o):
            return p
        if isinstance(o, dict):
            stack.extend((v, f"{p}.{k}") for k, v in o.items())
        elif isinstance(o, list):
            stack.extend((v, f"{p}[{i}]") for i, v in enumerate(o))
    return None


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_tree(fam: str, e: dict) -> None:
    nodes = e.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise UserError(f"damaged time model: the {fam} tree has no nodes")
    positive_intercept = (e.get("params") or {}).get("positive_intercept", True) if isinstance(
        e.get("params"), dict) else True
    for i, nd in enumerate(nodes):
        if not isinstance(nd, dict):
            raise UserError(f"damaged time model: {fam} node {i} is not an object")
        if not nd.get("leaf"):
            for side in ("left", "right"):
                j = nd.get(side)
                if not isinstance(j, int) or isinstance(j, bool) or not i < j < len(nodes):
                    raise UserError(f"damaged time model: {fam} node {i} has no valid {side} child")
        model = nd.get("model")
        if nd.get("leaf") and not isinstance(model, dict):
            raise UserError(f"damaged time model: {fam} leaf {i} has no model")
        if isinstance(model, dict):
            coef = model.get("coef")
            if not isinstance(coef, dict) or not all(number(v) for v in coef.values()):
                raise UserError(f"damaged time model: {fam} node {i} has no numeric coefficients")
            if any(v < 0 for v in coef.values()):
                raise UserError(f"damaged time model: {fam} node {i} has a negative coefficient "
                                f"(times are non-negative sums of costs)")
            b = model.get("intercept")
            if not number(b) or (positive_intercept and b < 0):
                raise UserError(f"damaged time model: {fam} node {i} has an invalid intercept ({shown(b)})")


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
        for t in trees:
            check_tree(fam, t)
