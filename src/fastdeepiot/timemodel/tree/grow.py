"""Greedy growing of a model tree, and the leaf fits it is made of.

Fitting minimises *relative* error: the leaf fits are weighted least squares with weights 1/y^2
(squared relative residuals), solved with non-negativity by ``scipy.optimize.nnls``; splits are
chosen greedily by the reduction of the sum of squared relative residuals (candidates ranked by
unconstrained least squares from cumulative Gram matrices, the best few re-scored with NNLS). A
categorical column splits one level against the rest, or a set of levels against the rest: the levels
ordered by the node equation's mean error on them, cut at every point.

A ``Grower`` holds one fit's training arrays and settings; the estimator makes one per ``fit`` and
drops it afterwards (pruning, in prune.py, grows its cross-validation trees with it too).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from fastdeepiot.timemodel.tree._nodes import goes_left, linear
from fastdeepiot.timemodel.tree.features import WORK_FEATURE


class Grower:
    """Training data (X as float columns, y, weights) and the growing settings of one fit.

    F: the leaf feature columns (leaf features and work variants) as float arrays; split_vals: the
    split columns (categorical ones as str arrays). Each leaf feature column is divided by a scale
    (the median of x / y over its positive entries) so the relative design has O(1) entries.
    """

    def __init__(self, F: dict, y: np.ndarray, w: np.ndarray, split_vals: dict, *,
                 leaf_features: Sequence[str], work_variants: Sequence[str], split_features: Sequence[str],
                 categorical: dict, integer_features: Sequence[str], max_depth: int, min_samples_leaf: int,
                 max_thresholds: int, min_gain: float, positive_intercept: bool, top_k: int):
        self.F, self.y, self.w, self.split_vals = F, y, w, split_vals
        self.leaf_features, self.work_variants = list(leaf_features), list(work_variants)
        self.split_features, self.categorical = list(split_features), categorical
        self.integer_features = integer_features
        self.max_depth, self.min_samples_leaf = max_depth, min_samples_leaf
        self.max_thresholds, self.min_gain = max_thresholds, min_gain
        self.positive_intercept, self.top_k = positive_intercept, top_k
        # column scales so the relative design has O(1) entries
        self.scale = {}
        for c in F:
            r = F[c] / y
            pos = r[r > 0]
            self.scale[c] = float(np.median(pos)) if pos.size else 1.0

    def subset(self, idx, **changes) -> "Grower":
        """A Grower of samples idx alone, with the same settings but `changes` (e.g. max_depth)."""
        settings = dict(leaf_features=self.leaf_features, work_variants=self.work_variants,
                        split_features=self.split_features, categorical=self.categorical,
                        integer_features=self.integer_features, max_depth=self.max_depth,
                        min_samples_leaf=self.min_samples_leaf, max_thresholds=self.max_thresholds,
                        min_gain=self.min_gain, positive_intercept=self.positive_intercept, top_k=self.top_k)
        settings.update(changes)
        return Grower({c: v[idx] for c, v in self.F.items()}, self.y[idx], self.w[idx],
                      {c: v[idx] for c, v in self.split_vals.items()}, **settings)

    # leaf model ------------------------------------------------------------------------------

    def design(self, idx, feats):
        """Relative, scaled design: rows x_i / y_i * sqrt(w_i), target sqrt(w_i)."""
        y, sw = self.y[idx], np.sqrt(self.w[idx])
        cols = [np.ones(idx.size)] + [self.F[c][idx] / self.scale[c] for c in feats]
        A = np.column_stack(cols) * (sw / y)[:, None]
        return A, sw

    def nnls(self, A, b):
        """NNLS with the first column (constant) free unless positive_intercept."""
        if self.positive_intercept:
            x, rn = nnls(A, b, maxiter=50 * A.shape[1])
            return x, float(rn**2)
        A2 = np.column_stack([A[:, :1], -A[:, :1], A[:, 1:]])
        x2, rn = nnls(A2, b, maxiter=50 * A2.shape[1])
        x = np.concatenate([[x2[0] - x2[1]], x2[2:]])
        return x, float(rn**2)

    def leaf_feature_sets(self):
        sets = [list(self.leaf_features)]
        if WORK_FEATURE in self.leaf_features:
            for v in self.work_variants:
                sets.append([v if c == WORK_FEATURE else c for c in self.leaf_features])
        return sets

    def fit_leaf(self, idx, feats=None) -> dict:
        """The best equation on samples idx (over the work variants unless feats is given)."""
        best = None
        for fs in ([feats] if feats is not None else self.leaf_feature_sets()):
            A, b = self.design(idx, fs)
            x, sse = self.nnls(A, b)
            if best is None or sse < best[2] - 1e-12 * max(1.0, best[2]):
                best = (fs, x, sse)
        fs, x, sse = best
        coef = {c: float(x[j + 1] / self.scale[c]) for j, c in enumerate(fs)}
        return {"features": list(fs), "intercept": float(x[0]), "coef": coef, "sse": sse}

    def feature_range(self, model, idx) -> dict:
        """[min, max] of each feature of `model`'s equation over samples idx (the extrapolation guard)."""
        return {c: [float(self.F[c][idx].min()), float(self.F[c][idx].max())] for c in model["features"]}

    # errors, as predict prices rows ----------------------------------------------------------

    def leaf_sse(self, model, idx, power=2):
        """Weighted sum of |relative residual|**power of a node model on samples idx."""
        if idx.size == 0:
            return 0.0
        pred = linear(model, {c: self.F[c][idx] for c in model["features"]}, idx.size)
        r = np.abs(pred - self.y[idx]) / self.y[idx]
        return float(np.sum(self.w[idx] * r**power))

    def routed_sse(self, nodes, at, idx, power=2) -> float:
        """Error on samples idx, each priced by the equation of the node `at` gives it."""
        return sum(self.leaf_sse(nodes[i]["model"], idx[at == i], power) for i in np.unique(at))

    # growth ----------------------------------------------------------------------------------

    def thresholds(self, c, v):
        u = np.unique(v)
        if u.size < 2:
            return np.array([])
        mids = (u[:-1] + u[1:]) / 2
        if mids.size <= self.max_thresholds:
            return mids
        qs = np.quantile(v, np.linspace(0, 1, self.max_thresholds + 1)[1:-1])
        cand = mids[np.clip(np.searchsorted(mids, qs), 0, mids.size - 1)]
        if c in self.integer_features:
            lo, hi = u[0], u[-1]
            for q in (8, 16, 32, 64, 128, 256, 512, 1024):
                a, b = math.ceil(lo / q), math.floor(hi / q)
                if 0 < b - a + 1 <= self.max_thresholds // 2:
                    cand = np.concatenate([cand, np.arange(a, b + 1) * q + 0.5])
                    break
        return np.unique(cand)

    def split_search(self, idx, model):
        """Best split of node samples idx: (sse_children, split dict, left idx, right idx) or None."""
        m = self.min_samples_leaf
        n = idx.size
        A, b = self.design(idx, model["features"])
        k = A.shape[1]
        outer = A[:, :, None] * A[:, None, :]
        Ab = A * b[:, None]
        bb = b * b
        ridge = 1e-9 * np.eye(k)
        cands = []  # (approx sse, feature, kind, value)

        def score(GL, cL, bL, GR, cR, bR):
            xL = np.linalg.solve(GL + ridge * np.trace(GL, axis1=-2, axis2=-1)[:, None, None] + 1e-12 * np.eye(k), cL[..., None])[..., 0]
            xR = np.linalg.solve(GR + ridge * np.trace(GR, axis1=-2, axis2=-1)[:, None, None] + 1e-12 * np.eye(k), cR[..., None])[..., 0]
            return (bL - np.einsum("ij,ij->i", xL, cL)) + (bR - np.einsum("ij,ij->i", xR, cR))

        G_tot, c_tot, b_tot = outer.sum(0), Ab.sum(0), bb.sum()
        for c in self.split_features:
            v = self.split_vals[c][idx]
            if c in self.categorical:
                levels = np.unique(v)
                if levels.size < 2:
                    continue
                sums = {}  # level -> (Gram, A'b, b'b, count) of its samples
                for lev in levels:
                    mask = v == lev
                    sums[lev] = (outer[mask].sum(0), Ab[mask].sum(0), bb[mask].sum(), int(mask.sum()))
                parts = [(lev,) for lev in levels]  # one level against the rest
                if levels.size > 2:
                    # and the levels in the order of the node equation's mean relative error on them, split
                    # at every point (CART's partition of a categorical column: sorting by the mean
                    # response finds the best of its 2^(L-1) partitions in L-1 tries for constant leaves)
                    err = (linear(model, {f: self.F[f][idx] for f in model["features"]}, n) - self.y[idx]) / self.y[idx]
                    order = sorted(levels, key=lambda lev: float(np.average(err[v == lev], weights=self.w[idx][v == lev])))
                    parts += [tuple(sorted(order[:k])) for k in range(2, levels.size - 1)]
                for part in parts:
                    GL, cL, bL, nl = (sum(sums[lev][j] for lev in part) for j in range(4))
                    if nl < m or n - nl < m:
                        continue
                    s = score(GL[None], cL[None], np.array([bL]), (G_tot - GL)[None], (c_tot - cL)[None],
                              np.array([b_tot - bL]))[0]
                    cands.append((s, c, "eq", str(part[0])) if len(part) == 1
                                 else (s, c, "in", [str(lev) for lev in part]))
                continue
            thr = self.thresholds(c, v)
            if thr.size == 0:
                continue
            order = np.argsort(v, kind="stable")
            vs = v[order]
            pos = np.searchsorted(vs, thr, side="right")
            ok = (pos >= m) & (pos <= n - m)
            if not ok.any():
                continue
            pos, thr = pos[ok], thr[ok]
            pos, first = np.unique(pos, return_index=True)
            thr = thr[first]
            cg = np.cumsum(outer[order], axis=0)[pos - 1]
            cc = np.cumsum(Ab[order], axis=0)[pos - 1]
            cb = np.cumsum(bb[order])[pos - 1]
            s = score(cg, cc, cb, G_tot[None] - cg, c_tot[None] - cc, b_tot - cb)
            for j in range(pos.size):
                # threshold: midpoint between the neighbouring values actually present
                t = float((vs[pos[j] - 1] + vs[pos[j]]) / 2)
                cands.append((float(s[j]), c, "le", t))
        if not cands:
            return None
        cands.sort(key=lambda t: t[0])
        best = None
        for _, c, kind, val in cands[: max(1, self.top_k)]:
            mask = goes_left({"kind": kind, "value": val}, self.split_vals[c][idx])
            li, ri = idx[mask], idx[~mask]
            sse = self.nnls(*self.design(li, model["features"]))[1] + self.nnls(*self.design(ri, model["features"]))[1]
            if best is None or sse < best[0]:
                best = (sse, {"feature": c, "kind": kind, "value": val}, li, ri)
        return best

    def grow(self, nodes, idx, depth) -> int:
        """Grow the subtree of samples idx into `nodes` (appending); returns its root's index."""
        model = self.fit_leaf(idx)
        i = len(nodes)
        nodes.append({"leaf": True, "depth": depth, "n": int(idx.size), "model": model, "_idx": idx,
                      "range": self.feature_range(model, idx)})
        if depth >= self.max_depth or idx.size < 2 * self.min_samples_leaf or model["sse"] <= 1e-14 * idx.size:
            return i
        found = self.split_search(idx, model)
        if found is None:
            return i
        sse, split, li, ri = found
        if sse > (1.0 - self.min_gain) * model["sse"]:
            return i
        nodes[i].update(leaf=False, **split)
        nodes[i]["left"] = self.grow(nodes, li, depth + 1)
        nodes[i]["right"] = self.grow(nodes, ri, depth + 1)
        return i
