"""A fitted model tree as readable rules (one per leaf, repeated tests merged) and as JSON.

Reads a fitted ``ModelTree``'s learned attributes; writes nothing but the text and the dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fastdeepiot.jsonutil import to_jsonable
from fastdeepiot.timemodel.tree._nodes import leaf_paths
from fastdeepiot.timemodel.tree.features import MOD_RE

FORMAT_VERSION = 1

# ------------------------------------------------------------------------------ formatting


def _fmt_num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v - round(v)) < 1e-9 and abs(v) < 1e7:
        return str(int(round(v)))
    return f"{v:.4g}"


def _fmt_bytes(v: float) -> str:
    for unit, s in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(v) >= s:
            return f"{v / s:.3g} {unit}"
    return f"{v:.0f} B"


def _fmt_value(feature: str, v: float) -> str:
    if "bytes" in feature:
        return _fmt_bytes(v)
    if "flops" in feature and abs(v) >= 1e4:
        for unit, s in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
            if abs(v) >= s:
                return f"{v / s:.3g} {unit}"
    return _fmt_num(v)


# ------------------------------------------------------------------------------ rules


@dataclass
class Rule:
    """One leaf of the tree: where it applies, its cost equation, and how well it fits."""

    leaf: int
    conditions: list[str]
    equation: str
    intercept_ms: float
    coefficients: dict[str, float]
    n_samples: int
    share: float  # fraction of the training samples in this leaf
    median_abs_pct: float  # median absolute relative error on its training samples, percent
    rms_rel_pct: float  # root-mean-square relative error on its training samples, percent
    bounds: dict[str, tuple] = field(default_factory=dict, repr=False)

    @property
    def condition(self) -> str:
        return " and ".join(self.conditions) if self.conditions else "always"

    def __str__(self) -> str:
        return (f"if {self.condition}:\n    {self.equation}\n"
                f"    ({self.n_samples} samples, {100 * self.share:.1f}% of training; "
                f"median error {self.median_abs_pct:.1f}%)")


def cond_text(tree, feature, kind, value, left: bool) -> str:
    """One split test as text ("w % 16 == 0", "input_bytes <= 1.5 MiB", "kind != 'gelu'")."""
    if kind == "eq":
        return f"{feature} {'==' if left else '!='} {value!r}"
    if kind == "in":
        return f"{feature} {'in' if left else 'not in'} {{{', '.join(repr(x) for x in value)}}}"
    mm = MOD_RE.match(feature)
    if mm and mm[1] in tree.columns_ and value < 1:
        return f"{mm[1]} % {mm[2]} {'==' if left else '!='} 0"
    name = f"{mm[1]} % {mm[2]}" if mm and mm[1] in tree.columns_ else feature
    if "bytes" in feature:
        return f"{name} {'<=' if left else '>'} {_fmt_bytes(value)}"
    if feature in tree.integer_features_:
        t = math.floor(value)
        return f"{name} {'<=' if left else '>'} {t}"
    return f"{name} {'<=' if left else '>'} {_fmt_value(feature, value)}"


def simplify(tree, path) -> tuple[list[str], dict]:
    """Merge repeated tests on one feature into a single range / set condition."""
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    allowed: dict[str, list] = {}  # categorical column -> the fitted levels the path lets through
    unseen: dict[str, bool] = {}  # ... and whether a level unseen in fitting goes this way (it goes right)
    order: list[str] = []
    for f, kind, v, left in path:
        if f not in order:
            order.append(f)
        if kind in ("eq", "in"):
            levels = allowed.setdefault(f, list(tree.categorical_.get(f, [])))
            test = {v} if kind == "eq" else set(v)
            allowed[f] = [x for x in levels if (x in test) == left]
            unseen[f] = unseen.get(f, True) and not left
        elif left:
            hi[f] = min(hi.get(f, np.inf), v)
        else:
            lo[f] = max(lo.get(f, -np.inf), v)
    conds = []
    for f in order:
        if f in allowed:
            ok = allowed[f]
            out = [x for x in tree.categorical_.get(f, []) if x not in ok]
            if not unseen[f]:  # only the levels named
                conds.append(f"{f} == {ok[0]!r}" if len(ok) == 1 else f"{f} in {{{', '.join(map(repr, ok))}}}")
            elif len(out) == 1:  # every level but these, unseen ones too
                conds.append(f"{f} != {out[0]!r}")
            elif len(ok) < len(out):
                conds.append(f"{f} in {{{', '.join(map(repr, ok))}}} (or unseen)")
            else:
                conds.append(f"{f} not in {{{', '.join(map(repr, out))}}}")
        else:
            if f in lo and f in hi:
                a = cond_text(tree, f, "le", lo[f], False)
                b = cond_text(tree, f, "le", hi[f], True)
                mm = MOD_RE.match(f)
                if not (mm and lo[f] < 1):
                    # "a < x <= b" form
                    name, _, tb = b.partition(" <= ")
                    ta = a.partition(" > ")[2]
                    conds.append(f"{ta} < {name} <= {tb}")
                    continue
                conds.extend([a, b])
            elif f in lo:
                conds.append(cond_text(tree, f, "le", lo[f], False))
            else:
                conds.append(cond_text(tree, f, "le", hi[f], True))
    return conds, {f: (lo.get(f, -np.inf), hi.get(f, np.inf)) for f in order if f not in allowed}


def equation(model) -> str:
    terms = [f"{model['intercept']:.4g}"]
    for c in model["features"]:
        if model["coef"][c] != 0:
            terms.append(f"{model['coef'][c]:.4g}*{c}")
    return "t_ms = " + " + ".join(terms)


def rules(tree) -> list[Rule]:
    """One Rule per leaf of a fitted tree, in tree order (left to right)."""
    out = []
    for i, path in leaf_paths(tree.nodes_):
        model = tree.nodes_[i]["model"]
        st = tree.leaf_stats_.get(i, {"n": 0, "share": 0.0, "median_abs_pct": float("nan"),
                                      "rms_rel_pct": float("nan")})
        conds, bounds = simplify(tree, path)
        out.append(Rule(leaf=i, conditions=conds, equation=equation(model),
                        intercept_ms=model["intercept"],
                        coefficients={c: model["coef"][c] for c in model["features"]},
                        n_samples=st["n"], share=st["share"], median_abs_pct=st["median_abs_pct"],
                        rms_rel_pct=st["rms_rel_pct"], bounds=bounds))
    return out


def explain_text(tree) -> str:
    head = (f"Model tree: {tree.n_leaves_} leaves, depth {tree.depth_}; leaf features: constant + "
            f"{', '.join(tree.leaf_features_)}"
            + (f" (flops may be replaced by one of {', '.join(tree.work_variants_)})" if tree.work_variants_ else ""))
    return "\n".join([head] + [f"[{k + 1}] {r}" for k, r in enumerate(rules(tree))])


def split_points(nodes, feature: str) -> list[tuple[str, float]]:
    """Split tests on `feature` or its derived ``{feature}_mod{q}`` columns: (column, value)."""
    out = []
    for nd in nodes:
        if nd["leaf"] or nd["kind"] != "le":
            continue
        f = nd["feature"]
        mm = MOD_RE.match(f)
        if f == feature or (mm and mm[1] == feature):
            out.append((f, float(nd["value"])))
    return out


# ------------------------------------------------------------------------------ JSON


def to_dict(tree) -> dict:
    """A fitted tree as a JSON-ready dict (type "ModelTree", FORMAT_VERSION)."""
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in tree.get_params().items()}
    return {
        "type": "ModelTree", "version": FORMAT_VERSION, "params": params,
        "columns": list(tree.columns_), "categorical": tree.categorical_,
        "leaf_features": list(tree.leaf_features_), "work_variants": list(tree.work_variants_),
        "split_features": list(tree.split_features_), "integer_features": list(tree.integer_features_),
        "nodes": to_jsonable(tree.nodes_), "floor_ms": tree.floor_ms_, "ccp_alpha": tree.ccp_alpha_,
        "leaf_stats": {str(k): v for k, v in tree.leaf_stats_.items()},
    }


def from_dict(cls, d: dict):
    """An instance of `cls` (ModelTree) with the learned attributes of a to_dict dict."""
    if d.get("type") != "ModelTree":
        raise ValueError(f"not a ModelTree dict (type {d.get('type')!r})")
    if d.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported ModelTree format version {d.get('version')!r}")
    m = cls(**d["params"])
    m.columns_ = list(d["columns"])
    m.categorical_ = {k: list(v) for k, v in d["categorical"].items()}
    m.leaf_features_ = list(d["leaf_features"])
    m.work_variants_ = list(d["work_variants"])
    m.split_features_ = list(d["split_features"])
    m.integer_features_ = list(d["integer_features"])
    m.nodes_ = [dict(nd) for nd in d["nodes"]]
    m.floor_ms_ = float(d["floor_ms"])
    m.ccp_alpha_ = float(d.get("ccp_alpha", 0.0))
    m.leaf_stats_ = {int(k): v for k, v in d["leaf_stats"].items()}
    m.n_leaves_ = sum(nd["leaf"] for nd in m.nodes_)
    m.depth_ = max(nd["depth"] for nd in m.nodes_)
    m.n_features_in_ = len(m.columns_)
    m.feature_names_in_ = np.asarray(m.columns_, dtype=object)
    return m
