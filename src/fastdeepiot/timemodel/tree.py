"""An interpretable execution-time model: a tree of non-negative linear cost models ("model tree").

One tree per layer family. Internal nodes split on configuration parameters and derived quantities
that explain staircases and cache effects; each leaf is a small linear model

    t_ms = overhead + sum_j c_j * feature_j         (overhead >= 0, c_j >= 0)

over physically meaningful features (FLOPs, bytes read and written, weight bytes, RNN steps). A
leaf's work term is either ``flops`` or one padded variant ``flops_pad{q}`` (the FLOPs the kernel
does when channel widths are rounded up to multiples of q); each leaf picks the variant that fits it
best, which turns a SIMD-width staircase into one linear term.

Fitting minimises *relative* error: the leaf fits are weighted least squares with weights 1/y^2
(squared relative residuals), solved with non-negativity by ``scipy.optimize.nnls``; splits are
chosen greedily by the reduction of the sum of squared relative residuals (candidates ranked by
unconstrained least squares from cumulative Gram matrices, the best few re-scored with NNLS), and
the grown tree is pruned by cost-complexity (weakest-link) pruning whose penalty is chosen by
k-fold cross-validation of the held-out relative error (or, with ``pruning="validation"``, by
reduced-error pruning on a held-out split). Both price held-out rows as ``predict`` does, with the
extrapolation guard; cross-validation scales alpha by each fold tree's root error (rpart's cp).

Design matrix
-------------
``featurize(configs)`` turns a list of ``LayerConfig`` of one family into a DataFrame with
  * the family parameters (numbers; string parameters such as an activation ``kind`` or pooling
    ``mode`` as string columns, split one-vs-rest),
  * the physical features from ``LayerConfig.features()`` (flops, input_bytes, output_bytes,
    weight_bytes, out_elements, steps, ...),
  * ``working_set_bytes`` = input_bytes + output_bytes + weight_bytes (splits on it find cache sizes),
  * ``{w}_mod{q}`` = w % q for every width parameter w of the family and q in 4, 8, 16, 32, 64
    (a split "w % q == 0" separates aligned from unaligned widths),
  * ``flops_pad{q}`` = flops * prod_w ceil(w/q)*q / w over the padded widths of the family (for
    convolutions out_channels and in_channels per group; linear: out/in_features; RNNs: hidden and
    input size; element-wise: channels) -- a leaf feature, not a split candidate.

The estimator itself works on any DataFrame (or dict of arrays) of numeric/string columns.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.optimize import nnls
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from fastdeepiot.timemodel.metrics import neg_median_abs_relative_error

DEFAULT_QUANTA = (4, 8, 16, 32, 64)
# Leaf regression features, in this order, when present (and not all zero).
# score_bytes (attention's seq_len x seq_len scores), activation_bytes (a whole module's intermediates)
# and rows (independent normalisations of LayerNorm / GroupNorm) exist only in issue 17's families.
DEFAULT_LEAF_FEATURES = ("flops", "input_bytes", "output_bytes", "weight_bytes", "steps", "score_bytes",
                         "activation_bytes", "rows")
WORK_FEATURE = "flops"
EXTRAPOLATION_SLACK = 1.5  # a leaf's equation is trusted up to 1.5x beyond the feature range it was fitted on
_PAD_RE = re.compile(r"^flops_pad(\d+)$")
_MOD_RE = re.compile(r"^(.+)_mod(\d+)$")
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------ featurization


def _pad_widths(family: str, columns: Iterable[str], width_params: Sequence[str]) -> list[str]:
    cols = set(columns)
    if family.startswith("conv"):
        out = [c for c in ("out_channels", "cin_per_group") if c in cols]
        return out
    return [w for w in width_params if w in cols]


def add_staircase_features(df, width_cols: Sequence[str], pad_cols: Sequence[str] | None = None,
                           quanta: Sequence[int] = DEFAULT_QUANTA, work_col: str = WORK_FEATURE):
    """Add the derived staircase/cache columns (in place; returns df). See the module docstring.

    width_cols get ``{w}_mod{q}`` columns; pad_cols (default width_cols) scale ``work_col`` into
    ``flops_pad{q}``. ``working_set_bytes`` is added when the three byte columns are present.
    """
    pad_cols = list(width_cols) if pad_cols is None else list(pad_cols)
    for w in width_cols:
        v = np.asarray(df[w], dtype=float)
        for q in quanta:
            df[f"{w}_mod{q}"] = np.mod(v, q)
    if work_col in df and pad_cols:
        work = np.asarray(df[work_col], dtype=float)
        for q in quanta:
            scale = np.ones(len(df))
            for w in pad_cols:
                v = np.maximum(np.asarray(df[w], dtype=float), 1.0)
                scale *= np.ceil(v / q) * q / v
            df[f"flops_pad{q}"] = work * scale
    if all(c in df for c in ("input_bytes", "output_bytes", "weight_bytes")):
        df["working_set_bytes"] = (np.asarray(df["input_bytes"], float) + np.asarray(df["output_bytes"], float)
                                   + np.asarray(df["weight_bytes"], float))
    return df


def featurize(configs, quanta: Sequence[int] = DEFAULT_QUANTA):
    """Design matrix (pandas DataFrame, one row per config) for configs of a single family."""
    import pandas as pd

    configs = list(configs)
    if not configs:
        raise ValueError("featurize: no configurations given")
    fams = {c.family for c in configs}
    if len(fams) != 1:
        raise ValueError(f"featurize: configurations of one family expected, got {sorted(fams)}")
    family = configs[0].family_obj
    rows = []
    for c in configs:
        r: dict[str, Any] = {k: v for k, v in c.params.items() if isinstance(v, str)}
        r.update(c.features())
        rows.append(r)
    df = pd.DataFrame(rows)
    widths = [w for w in family.width_params if w in df]
    add_staircase_features(df, widths, _pad_widths(family.name, df.columns, widths), quanta)
    return df


# ------------------------------------------------------------------------------ input checks


def as_frame(X, name: str = "X"):
    """DataFrame from a DataFrame or dict of arrays; raises ValueError on NaN / ragged input."""
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        df = X.reset_index(drop=True)
    elif isinstance(X, dict):
        lens = {k: len(np.atleast_1d(v)) for k, v in X.items()}
        if len(set(lens.values())) > 1:
            raise ValueError(f"{name}: columns have different lengths: {lens}")
        df = pd.DataFrame({k: np.atleast_1d(v) for k, v in X.items()})
    else:
        raise ValueError(f"{name} must be a pandas DataFrame or a dict of column arrays, "
                         f"got {type(X).__name__}")
    if df.shape[1] == 0:
        raise ValueError(f"{name} has no columns")
    if df.isna().any().any():
        bad = [c for c in df.columns if df[c].isna().any()]
        raise ValueError(f"{name} contains NaN/missing values in columns {bad}")
    for c in df.columns:
        if _is_numeric(df[c]):
            v = np.asarray(df[c], dtype=float)
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{name} contains inf in column {c!r}")
    return df


def _is_numeric(s) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def check_y(y, n: int, name: str = "y_ms") -> np.ndarray:
    y = np.asarray(y, dtype=float).ravel()
    if y.size != n:
        raise ValueError(f"X has {n} rows but {name} has {y.size} values")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name} contains NaN or inf")
    if np.any(y <= 0):
        raise ValueError(f"{name}: execution times must be positive (found {int(np.sum(y <= 0))} "
                         f"values <= 0, e.g. {y[y <= 0][0]!r})")
    return y


def check_weights(sample_weight, n: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n)
    w = np.asarray(sample_weight, dtype=float).ravel()
    if w.size != n:
        raise ValueError(f"X has {n} rows but sample_weight has {w.size} values")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("sample_weight must be finite and non-negative")
    return w


def check_columns(df, columns: Sequence[str], name: str = "X"):
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks columns the model was fitted with: {missing}")
    return df


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


# ------------------------------------------------------------------------------ the estimator


class ModelTree(RegressorMixin, BaseEstimator):
    """Tree-structured non-negative linear regression of execution time (ms) on layer features.

    Parameters
    ----------
    leaf_features : sequence of str or None
        Leaf regression features (besides the constant). None: those of ``DEFAULT_LEAF_FEATURES``
        present in X and not all zero.
    work_variants : "auto", sequence of str, or None
        Alternatives to ``flops`` a leaf may use instead of it (one per leaf, the best fitting).
        "auto": every ``flops_pad{q}`` column of X. None / (): plain flops only.
    split_features : sequence of str or None
        Columns the tree may split on. None: every column except the ``flops_pad{q}`` ones.
    max_depth, min_samples_leaf : tree size limits (min_samples_leaf counts growing samples).
    max_thresholds : cap on candidate thresholds per numeric feature and node (quantiles, plus
        multiples of 8/16/32/64 for integer features).
    min_gain : a split must cut the node's sum of squared relative residuals by this fraction.
    pruning : "cv" (default): grow on all samples, then cost-complexity (weakest-link) pruning
        with the complexity penalty alpha chosen by ``cv_folds``-fold cross-validation of the
        relative error (the largest alpha within ``cv_tolerance`` of the best, i.e. the
        simplest tree that is as good; ``cv_power`` 1 scores folds by the summed absolute
        relative error, robust to noisy timings, 2 by the squared one); "validation": grow on 1 - validation_fraction of the
        samples, reduced-error pruning on the rest, then refit the leaves on all; "none".
    validation_fraction : share held out by pruning="validation".
    positive_intercept : constrain the per-call overhead to be >= 0 (else free).
    top_k : candidate splits (ranked by unconstrained least squares) re-scored with NNLS.
    random_state : seed of the validation split.

    Attributes (after fit)
    ----------------------
    columns_, categorical_ (column -> levels), leaf_features_, work_variants_, split_features_,
    integer_features_, nodes_ (list of node dicts; JSON-ready: internal nodes have feature, kind
    "le" (x <= value goes left) or "eq" (x == value goes left), left, right; leaves have model =
    {features, intercept, coef}), n_leaves_, depth_, floor_ms_ (prediction floor, 0.1 * the
    smallest training time), leaf_stats_ (leaf -> n, share, median_abs_pct, rms_rel_pct),
    ccp_alpha_ (the chosen pruning penalty).

    ``score(X, y)`` is minus the median absolute relative error (0 is perfect).
    """

    def __init__(self, leaf_features=None, work_variants="auto", split_features=None, max_depth=8,
                 min_samples_leaf=10, max_thresholds=32, min_gain=0.01, validation_fraction=0.25,
                 positive_intercept=True, top_k=4, random_state=0, pruning="cv", cv_folds=3,
                 cv_tolerance=0.01, cv_power=1):
        self.leaf_features = leaf_features
        self.work_variants = work_variants
        self.split_features = split_features
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_thresholds = max_thresholds
        self.min_gain = min_gain
        self.validation_fraction = validation_fraction
        self.positive_intercept = positive_intercept
        self.top_k = top_k
        self.random_state = random_state
        self.pruning = pruning
        self.cv_folds = cv_folds
        self.cv_tolerance = cv_tolerance
        self.cv_power = cv_power

    # -------------------------------------------------------------------------------- fitting

    def fit(self, X, y_ms, sample_weight=None):
        df = as_frame(X)
        y = check_y(y_ms, len(df))
        w = check_weights(sample_weight, len(df))
        if self.min_samples_leaf < 1 or self.max_depth < 0:
            raise ValueError("min_samples_leaf must be >= 1 and max_depth >= 0")
        self.columns_ = [str(c) for c in df.columns]
        self.categorical_ = {c: sorted({str(v) for v in df[c]}) for c in self.columns_
                             if not _is_numeric(df[c])}
        numeric = [c for c in self.columns_ if c not in self.categorical_]

        if self.leaf_features is None:
            lf = [c for c in DEFAULT_LEAF_FEATURES if c in numeric and np.any(df[c].to_numpy(float) != 0)]
        else:
            lf = list(self.leaf_features)
            bad = [c for c in lf if c not in numeric]
            if bad:
                raise ValueError(f"leaf_features {bad} are not numeric columns of X")
        if self.work_variants == "auto":
            wv = sorted((c for c in numeric if _PAD_RE.match(c)), key=lambda c: int(_PAD_RE.match(c)[1]))
        elif self.work_variants is None:
            wv = []
        else:
            wv = list(self.work_variants)
            bad = [c for c in wv if c not in numeric]
            if bad:
                raise ValueError(f"work_variants {bad} are not numeric columns of X")
        if WORK_FEATURE not in lf:
            wv = []
        if self.split_features is None:
            sf = [c for c in self.columns_ if not _PAD_RE.match(c)]
        else:
            sf = list(self.split_features)
            bad = [c for c in sf if c not in self.columns_]
            if bad:
                raise ValueError(f"split_features {bad} are not columns of X")
        self.leaf_features_ = lf
        self.work_variants_ = wv
        self.split_features_ = sf
        self.integer_features_ = [c for c in numeric if np.all(np.mod(df[c].to_numpy(float), 1) == 0)]

        # raw matrices
        self._numeric_cols = numeric
        feats = sorted(set(lf) | set(wv))
        self._F = {c: df[c].to_numpy(float) for c in feats}
        # column scales so the relative design has O(1) entries
        self._scale = {}
        for c in feats:
            r = self._F[c] / y
            pos = r[r > 0]
            self._scale[c] = float(np.median(pos)) if pos.size else 1.0
        self._y, self._w = y, w
        self._split_vals = {c: (df[c].astype(str).to_numpy() if c in self.categorical_ else df[c].to_numpy(float))
                            for c in sf}

        n = len(y)
        rng = np.random.default_rng(self.random_state)
        nodes: list[dict] = []
        if self.pruning not in ("cv", "validation", "none", None):
            raise ValueError(f"pruning must be 'cv', 'validation' or 'none', got {self.pruning!r}")
        vf = float(self.validation_fraction)
        self.ccp_alpha_ = 0.0
        if self.pruning == "validation" and 0 < vf < 1 and n >= 4 * self.min_samples_leaf:
            perm = rng.permutation(n)
            nval = int(round(vf * n))
            val, grow = np.sort(perm[:nval]), np.sort(perm[nval:])
            self._grow(nodes, grow, depth=0)
            self._prune(nodes, val)
        else:
            self._grow(nodes, np.arange(n), depth=0)
            k = int(self.cv_folds)
            if self.pruning == "cv" and k >= 2 and n >= 2 * k and sum(not nd["leaf"] for nd in nodes):
                self.ccp_alpha_ = self._cv_alpha(nodes, rng, k)
                self._ccp_prune(nodes, self.ccp_alpha_)
        nodes = self._compact(nodes)
        # refit leaves on all samples routed to them; every node gets its own fit and the range of the
        # leaf features it saw (the extrapolation guard of _predict_nodes)
        leaf_of = self._route(nodes, {c: self._split_vals[c] for c in sf}, n)
        under = self._samples_under(nodes, leaf_of)
        for i, nd in enumerate(nodes):
            idx = under[i]
            if idx.size:
                nd["model"] = self._fit_leaf(idx)
                nd["range"] = self._feature_range(nd["model"], idx)
            nd["n"] = int(idx.size)
        self.nodes_ = nodes
        self.floor_ms_ = float(0.1 * y.min())
        self.n_leaves_ = sum(nd["leaf"] for nd in nodes)
        self.depth_ = max(nd["depth"] for nd in nodes)
        pred = self._predict_nodes(df)
        rel = (pred - y) / y
        self.leaf_stats_ = {}
        for i, nd in enumerate(nodes):
            if nd["leaf"]:
                m = leaf_of == i
                e = np.abs(rel[m]) * 100
                self.leaf_stats_[i] = {
                    "n": int(m.sum()), "share": float(m.mean()),
                    "median_abs_pct": float(np.median(e)) if e.size else float("nan"),
                    "rms_rel_pct": float(np.sqrt(np.mean(e**2))) if e.size else float("nan")}
        self.n_features_in_ = len(self.columns_)
        self.feature_names_in_ = np.asarray(self.columns_, dtype=object)
        for a in ("_F", "_scale", "_y", "_w", "_split_vals", "_numeric_cols"):
            delattr(self, a)
        return self

    # leaf model ------------------------------------------------------------------------------

    def _design(self, idx, feats):
        """Relative, scaled design: rows x_i / y_i * sqrt(w_i), target sqrt(w_i)."""
        y, sw = self._y[idx], np.sqrt(self._w[idx])
        cols = [np.ones(idx.size)] + [self._F[c][idx] / self._scale[c] for c in feats]
        A = np.column_stack(cols) * (sw / y)[:, None]
        return A, sw

    def _nnls(self, A, b):
        """NNLS with the first column (constant) free unless positive_intercept."""
        if self.positive_intercept:
            x, rn = nnls(A, b, maxiter=50 * A.shape[1])
            return x, float(rn**2)
        A2 = np.column_stack([A[:, :1], -A[:, :1], A[:, 1:]])
        x2, rn = nnls(A2, b, maxiter=50 * A2.shape[1])
        x = np.concatenate([[x2[0] - x2[1]], x2[2:]])
        return x, float(rn**2)

    def _leaf_feature_sets(self):
        sets = [list(self.leaf_features_)]
        if WORK_FEATURE in self.leaf_features_:
            for v in self.work_variants_:
                sets.append([v if c == WORK_FEATURE else c for c in self.leaf_features_])
        return sets

    def _fit_leaf(self, idx, feats=None) -> dict:
        best = None
        for fs in ([feats] if feats is not None else self._leaf_feature_sets()):
            A, b = self._design(idx, fs)
            x, sse = self._nnls(A, b)
            if best is None or sse < best[2] - 1e-12 * max(1.0, best[2]):
                best = (fs, x, sse)
        fs, x, sse = best
        coef = {c: float(x[j + 1] / self._scale[c]) for j, c in enumerate(fs)}
        return {"features": list(fs), "intercept": float(x[0]), "coef": coef, "sse": sse}

    # growth ----------------------------------------------------------------------------------

    def _thresholds(self, c, v):
        u = np.unique(v)
        if u.size < 2:
            return np.array([])
        mids = (u[:-1] + u[1:]) / 2
        if mids.size <= self.max_thresholds:
            return mids
        qs = np.quantile(v, np.linspace(0, 1, self.max_thresholds + 1)[1:-1])
        cand = mids[np.clip(np.searchsorted(mids, qs), 0, mids.size - 1)]
        if c in self.integer_features_:
            lo, hi = u[0], u[-1]
            for q in (8, 16, 32, 64, 128, 256, 512, 1024):
                a, b = math.ceil(lo / q), math.floor(hi / q)
                if 0 < b - a + 1 <= self.max_thresholds // 2:
                    cand = np.concatenate([cand, np.arange(a, b + 1) * q + 0.5])
                    break
        return np.unique(cand)

    def _split_search(self, idx, model):
        """Best split of node samples idx: (sse_children, split dict, left idx, right idx) or None."""
        m = self.min_samples_leaf
        n = idx.size
        A, b = self._design(idx, model["features"])
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
        for c in self.split_features_:
            v = self._split_vals[c][idx]
            if c in self.categorical_:
                levels = np.unique(v)
                if levels.size < 2:
                    continue
                for lev in levels:
                    mask = v == lev
                    nl = int(mask.sum())
                    if nl < m or n - nl < m:
                        continue
                    GL, cL, bL = outer[mask].sum(0), Ab[mask].sum(0), bb[mask].sum()
                    s = score(GL[None], cL[None], np.array([bL]), (G_tot - GL)[None], (c_tot - cL)[None],
                              np.array([b_tot - bL]))[0]
                    cands.append((s, c, "eq", str(lev)))
                continue
            thr = self._thresholds(c, v)
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
            v = self._split_vals[c][idx]
            mask = (v == val) if kind == "eq" else (v <= val)
            li, ri = idx[mask], idx[~mask]
            sse = self._nnls(*self._design(li, model["features"]))[1] + self._nnls(*self._design(ri, model["features"]))[1]
            if best is None or sse < best[0]:
                best = (sse, {"feature": c, "kind": kind, "value": val}, li, ri)
        return best

    def _grow(self, nodes, idx, depth) -> int:
        model = self._fit_leaf(idx)
        i = len(nodes)
        nodes.append({"leaf": True, "depth": depth, "n": int(idx.size), "model": model, "_idx": idx,
                      "range": self._feature_range(model, idx)})
        if depth >= self.max_depth or idx.size < 2 * self.min_samples_leaf or model["sse"] <= 1e-14 * idx.size:
            return i
        found = self._split_search(idx, model)
        if found is None:
            return i
        sse, split, li, ri = found
        if sse > (1.0 - self.min_gain) * model["sse"]:
            return i
        nodes[i].update(leaf=False, **split)
        nodes[i]["left"] = self._grow(nodes, li, depth + 1)
        nodes[i]["right"] = self._grow(nodes, ri, depth + 1)
        return i

    # pruning ---------------------------------------------------------------------------------

    def _feature_range(self, model, idx) -> dict:
        """[min, max] of each feature of `model`'s equation over samples idx (the extrapolation guard)."""
        return {c: [float(self._F[c][idx].min()), float(self._F[c][idx].max())] for c in model["features"]}

    def _leaf_sse(self, model, idx, power=2):
        """Weighted sum of |relative residual|**power of a node model on samples idx."""
        if idx.size == 0:
            return 0.0
        pred = self._linear(model, {c: self._F[c][idx] for c in model["features"]}, idx.size)
        r = np.abs(pred - self._y[idx]) / self._y[idx]
        return float(np.sum(self._w[idx] * r**power))

    def _routed_sse(self, nodes, at, idx, power=2) -> float:
        """Error on samples idx, each priced by the equation of the node `at` gives it."""
        return sum(self._leaf_sse(nodes[i]["model"], idx[at == i], power) for i in np.unique(at))

    def _prune(self, nodes, val):
        """Reduced-error pruning: bottom-up, a subtree becomes a leaf unless it prices the held-out
        samples routed to it better, both priced as predict would (with the extrapolation guard)."""
        vals = {c: self._split_vals[c][val] for c in self.split_features_}
        cols = {c: self._F[c][val] for nd in nodes for c in nd["model"]["features"]}

        def rec(i, sub):  # sub: positions into val
            nd = nodes[i]
            # node i as a leaf: its rows, guarded by its (still internal) ancestors
            at = self._guard(nodes, np.full(sub.size, i), {c: v[sub] for c, v in cols.items()})
            leaf_sse = self._routed_sse(nodes, at, val[sub])
            if nd["leaf"]:
                return leaf_sse
            v = vals[nd["feature"]][sub]
            mask = (v == nd["value"]) if nd["kind"] == "eq" else (v <= nd["value"])
            tree_sse = rec(nd["left"], sub[mask]) + rec(nd["right"], sub[~mask])
            if leaf_sse <= tree_sse:
                nd["leaf"] = True
                return leaf_sse
            return tree_sse

        rec(0, np.arange(val.size))

    # cost-complexity pruning (CART weakest link), alpha chosen by k-fold cross-validation ------

    @staticmethod
    def _weakest_links(nodes):
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

    def _ccp_prune(self, nodes, alpha) -> None:
        while True:
            links = self._weakest_links(nodes)
            if not links:
                return
            g, i = min(links)
            if g > alpha:
                return
            nodes[i]["leaf"] = True

    def _alpha_path(self, nodes) -> list[float]:
        saved = [nd["leaf"] for nd in nodes]
        alphas = [0.0]
        while True:
            links = self._weakest_links(nodes)
            if not links:
                break
            g, i = min(links)
            alphas.append(max(g, alphas[-1]))
            nodes[i]["leaf"] = True
        for nd, lf in zip(nodes, saved):
            nd["leaf"] = lf
        return alphas

    def _cv_alpha(self, nodes, rng, k) -> float:
        path = sorted(set(self._alpha_path(nodes)))
        # candidate alphas: geometric means between consecutive critical values (CART)
        cands = [0.0] + [math.sqrt(a * b) if a > 0 else b / 2 for a, b in zip(path[:-1], path[1:])] + [path[-1] * 1.0001 + 1e-300]
        n = len(self._y)
        folds = np.array_split(rng.permutation(n), k)
        err = np.zeros(len(cands))
        for f in folds:
            held = np.sort(f)
            grow = np.setdiff1d(np.arange(n), held)
            fn: list[dict] = []
            self._grow(fn, grow, depth=0)
            vals = {c: self._split_vals[c][held] for c in self.split_features_}
            saved = [nd["leaf"] for nd in fn]
            cols = {c: self._F[c][held] for nd in fn for c in nd["model"]["features"]}
            # alpha is in units of the root's error, as rpart's cp: a fold tree grown on fewer samples
            # has proportionally smaller errors, and the same absolute alpha would over-prune it
            scale = fn[0]["model"]["sse"] / nodes[0]["model"]["sse"] if nodes[0]["model"]["sse"] > 0 else 1.0
            for j, a in enumerate(cands):
                self._ccp_prune(fn, a * scale)  # alphas ascend: pruning accumulates
                # held-out rows are scored as predict() would price them: with the extrapolation guard
                at = self._guard(fn, self._route(fn, vals, held.size), cols)
                err[j] += self._routed_sse(fn, at, held, self.cv_power)
            for nd, lf in zip(fn, saved):
                nd["leaf"] = lf
        best = float(err.min())
        ok = [j for j in range(len(cands)) if err[j] <= best * (1 + self.cv_tolerance) + 1e-300]
        return float(cands[max(ok)])

    @staticmethod
    def _compact(nodes) -> list[dict]:
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

    # prediction ------------------------------------------------------------------------------

    @staticmethod
    def _linear(model, cols, n: int) -> np.ndarray:
        """The equation on n rows (cols: its feature columns; an intercept-only equation has none)."""
        pred = np.full(n, model["intercept"], dtype=float)
        for c in model["features"]:
            pred = pred + model["coef"][c] * cols[c]
        return pred

    @staticmethod
    def _samples_under(nodes, leaf_of) -> list[np.ndarray]:
        """Per node, the indices of the samples routed to a leaf below it (or to it)."""
        out: list[np.ndarray] = [np.empty(0, dtype=int)] * len(nodes)

        def rec(i):
            nd = nodes[i]
            out[i] = np.flatnonzero(leaf_of == i) if nd["leaf"] else np.concatenate([rec(nd["left"]), rec(nd["right"])])
            return out[i]

        rec(0)
        return out

    @staticmethod
    def _route(nodes, vals, n) -> np.ndarray:
        leaf_of = np.zeros(n, dtype=int)
        stack = [(0, np.arange(n))]
        while stack:
            i, sub = stack.pop()
            nd = nodes[i]
            if nd["leaf"]:
                leaf_of[sub] = i
                continue
            v = vals[nd["feature"]][sub]
            mask = (v == nd["value"]) if nd["kind"] == "eq" else (v <= nd["value"])
            stack.append((nd["left"], sub[mask]))
            stack.append((nd["right"], sub[~mask]))
        return leaf_of

    def _split_columns(self, df) -> dict:
        used = {nd["feature"] for nd in self.nodes_ if not nd["leaf"]}
        return {c: (df[c].astype(str).to_numpy() if c in self.categorical_ else df[c].to_numpy(float)) for c in used}

    def _predict_nodes(self, df) -> np.ndarray:
        """Each row gets the equation of its leaf, unless one of that equation's features lies outside
        the range the leaf was fitted on (by more than EXTRAPOLATION_SLACK): then the equation of the
        nearest ancestor whose samples cover the row. A leaf of 18 small 1x1 convolutions (ONNX Runtime)
        had fitted 5.8 us + 4.2e-7 ms/FLOP, and priced an 8->8 1x1 convolution at 32x32, 8x the FLOPs
        of any of its samples, at 60 us (measured: about 15 us)."""
        n = len(df)
        nodes = self.nodes_
        # every equation's feature columns, converted once (a node's "range" has its equation's features)
        features = {c for nd in nodes if "model" in nd for c in nd["model"]["features"]}
        cols = {c: df[c].to_numpy(float) for c in features}
        at = self._guard(nodes, self._route(nodes, self._split_columns(df), n), cols)
        pred = np.empty(n)
        for i in np.unique(at):
            m = at == i
            model = nodes[i]["model"]
            pred[m] = self._linear(model, {c: cols[c][m] for c in model["features"]}, int(m.sum()))
        return np.maximum(pred, self.floor_ms_)

    @classmethod
    def _guard(cls, nodes, at, cols) -> np.ndarray:
        """`at` (row -> leaf) with each row whose features lie outside its leaf's fitted range moved to
        the nearest ancestor that covers it (the extrapolation guard; see _predict_nodes)."""
        if not all("range" in nd for nd in nodes):
            return at
        at = at.copy()
        parent = {c: i for i, nd in enumerate(nodes) if not nd["leaf"] for c in (nd["left"], nd["right"])}
        for node in np.unique(at):
            rows = np.flatnonzero(at == node)
            rows = rows[cls._outside(nodes[node], cols, rows)]
            while rows.size and node in parent:  # climb until an ancestor covers each row
                node = parent[node]
                out = cls._outside(nodes[node], cols, rows)
                at[rows[~out]] = node
                rows = rows[out]
        return at

    @staticmethod
    def _outside(node, cols, rows) -> np.ndarray:
        """Mask over `rows`: a feature of `node`'s equation beyond its fitted range (times the slack)."""
        out = np.zeros(rows.size, dtype=bool)
        for c, (lo, hi) in node["range"].items():
            v = cols[c][rows]
            out |= (v > hi * EXTRAPOLATION_SLACK) | (v < lo / EXTRAPOLATION_SLACK)
        return out

    def _check_X(self, X):
        check_is_fitted(self, "nodes_")
        df = as_frame(X)
        return check_columns(df, self.columns_)

    def predict(self, X) -> np.ndarray:
        """Predicted execution time in ms (always > 0)."""
        return self._predict_nodes(self._check_X(X))

    def apply(self, X) -> np.ndarray:
        """Index (into nodes_) of the leaf each row falls into."""
        df = self._check_X(X)
        return self._route(self.nodes_, self._split_columns(df), len(df))

    def score(self, X, y, sample_weight=None) -> float:
        """Minus the median absolute relative error (0 is perfect; -0.05 is 5 %)."""
        df = self._check_X(X)
        return neg_median_abs_relative_error(check_y(y, len(df), "y"), self.predict(df))

    # explanation -----------------------------------------------------------------------------

    def _cond_text(self, feature, kind, value, left: bool) -> str:
        if kind == "eq":
            return f"{feature} {'==' if left else '!='} {value!r}"
        mm = _MOD_RE.match(feature)
        if mm and mm[1] in self.columns_ and value < 1:
            return f"{mm[1]} % {mm[2]} {'==' if left else '!='} 0"
        name = f"{mm[1]} % {mm[2]}" if mm and mm[1] in self.columns_ else feature
        if "bytes" in feature:
            return f"{name} {'<=' if left else '>'} {_fmt_bytes(value)}"
        if feature in self.integer_features_:
            t = math.floor(value)
            return f"{name} {'<=' if left else '>'} {t}"
        return f"{name} {'<=' if left else '>'} {_fmt_value(feature, value)}"

    def _paths(self):
        """(leaf index, list of (feature, kind, value, went_left))."""
        out = []

        def rec(i, path):
            nd = self.nodes_[i]
            if nd["leaf"]:
                out.append((i, path))
                return
            rec(nd["left"], path + [(nd["feature"], nd["kind"], nd["value"], True)])
            rec(nd["right"], path + [(nd["feature"], nd["kind"], nd["value"], False)])

        rec(0, [])
        return out

    def _simplify(self, path) -> tuple[list[str], dict]:
        """Merge repeated tests on one feature into a single range / set condition."""
        lo: dict[str, float] = {}
        hi: dict[str, float] = {}
        eq: dict[str, str] = {}
        neq: dict[str, list] = {}
        order: list[str] = []
        for f, kind, v, left in path:
            if f not in order:
                order.append(f)
            if kind == "eq":
                if left:
                    eq[f] = v
                else:
                    neq.setdefault(f, []).append(v)
            elif left:
                hi[f] = min(hi.get(f, np.inf), v)
            else:
                lo[f] = max(lo.get(f, -np.inf), v)
        conds = []
        for f in order:
            if f in eq:
                conds.append(f"{f} == {eq[f]!r}")
            elif f in neq:
                conds.append(f"{f} != {neq[f][0]!r}" if len(neq[f]) == 1
                             else f"{f} not in {{{', '.join(repr(x) for x in neq[f])}}}")
            else:
                if f in lo and f in hi:
                    a = self._cond_text(f, "le", lo[f], False)
                    b = self._cond_text(f, "le", hi[f], True)
                    mm = _MOD_RE.match(f)
                    if not (mm and lo[f] < 1):
                        # "a < x <= b" form
                        name, _, tb = b.partition(" <= ")
                        ta = a.partition(" > ")[2]
                        conds.append(f"{ta} < {name} <= {tb}")
                        continue
                    conds.extend([a, b])
                elif f in lo:
                    conds.append(self._cond_text(f, "le", lo[f], False))
                else:
                    conds.append(self._cond_text(f, "le", hi[f], True))
        return conds, {f: (lo.get(f, -np.inf), hi.get(f, np.inf)) for f in order if f not in eq and f not in neq}

    @staticmethod
    def equation(model) -> str:
        terms = [f"{model['intercept']:.4g}"]
        for c in model["features"]:
            if model["coef"][c] != 0:
                terms.append(f"{model['coef'][c]:.4g}*{c}")
        return "t_ms = " + " + ".join(terms)

    def rules(self) -> list[Rule]:
        """One Rule per leaf, in tree order (left to right)."""
        check_is_fitted(self, "nodes_")
        out = []
        for i, path in self._paths():
            model = self.nodes_[i]["model"]
            st = self.leaf_stats_.get(i, {"n": 0, "share": 0.0, "median_abs_pct": float("nan"),
                                          "rms_rel_pct": float("nan")})
            conds, bounds = self._simplify(path)
            out.append(Rule(leaf=i, conditions=conds, equation=self.equation(model),
                            intercept_ms=model["intercept"],
                            coefficients={c: model["coef"][c] for c in model["features"]},
                            n_samples=st["n"], share=st["share"], median_abs_pct=st["median_abs_pct"],
                            rms_rel_pct=st["rms_rel_pct"], bounds=bounds))
        return out

    def explain_text(self) -> str:
        rules = self.rules()
        head = (f"Model tree: {self.n_leaves_} leaves, depth {self.depth_}; leaf features: constant + "
                f"{', '.join(self.leaf_features_)}"
                + (f" (flops may be replaced by one of {', '.join(self.work_variants_)})" if self.work_variants_ else ""))
        return "\n".join([head] + [f"[{k + 1}] {r}" for k, r in enumerate(rules)])

    def split_points(self, feature: str) -> list[tuple[str, float]]:
        """Split tests on `feature` or its derived ``{feature}_mod{q}`` columns: (column, value)."""
        check_is_fitted(self, "nodes_")
        out = []
        for nd in self.nodes_:
            if nd["leaf"] or nd["kind"] != "le":
                continue
            f = nd["feature"]
            mm = _MOD_RE.match(f)
            if f == feature or (mm and mm[1] == feature):
                out.append((f, float(nd["value"])))
        return out

    # serialisation ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        check_is_fitted(self, "nodes_")
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        return {
            "type": "ModelTree", "version": FORMAT_VERSION, "params": params,
            "columns": list(self.columns_), "categorical": self.categorical_,
            "leaf_features": list(self.leaf_features_), "work_variants": list(self.work_variants_),
            "split_features": list(self.split_features_), "integer_features": list(self.integer_features_),
            "nodes": _jsonable(self.nodes_), "floor_ms": self.floor_ms_, "ccp_alpha": self.ccp_alpha_,
            "leaf_stats": {str(k): v for k, v in self.leaf_stats_.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelTree":
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


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items() if not str(k).startswith("_")}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o
