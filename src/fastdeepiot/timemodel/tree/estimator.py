"""``ModelTree``: the scikit-learn estimator. It checks its input, resolves which columns play which
role, and hands the work to grow.py (growing), prune.py (pruning), route.py (routing, the extrapolation
guard, prediction) and export.py (rules, JSON). See the package docstring for the model."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from fastdeepiot.timemodel.metrics import neg_median_abs_relative_error
from fastdeepiot.timemodel.tree import export
from fastdeepiot.timemodel.tree._nodes import compact, samples_under
from fastdeepiot.timemodel.tree._validation import (as_frame, check_column_arrays, check_columns, check_weights,
                                                     check_y, fitted_columns)
from fastdeepiot.timemodel.tree.features import DEFAULT_LEAF_FEATURES, PAD_RE, PATH_COLUMN, WORK_FEATURE
from fastdeepiot.timemodel.tree.grow import Grower
from fastdeepiot.timemodel.tree.prune import PRUNINGS, grow_and_prune
from fastdeepiot.timemodel.tree.route import beyond_profile, predict_nodes, route, split_columns

# the deepest tree fit grows (the default is 8): a tree is read as rules, one per leaf with a test per
# level, and the loader refuses a deeper tree (timemodel.schema), whose rules would take time and memory
# quadratic in its depth to write
MAX_DEPTH = 64
# a level of the partition column (`partition_by`) gets a subtree of its own from this many leaves' worth of
# samples (times min_samples_leaf); smaller levels share one
MIN_PART_LEAVES = 2


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
    max_depth, min_samples_leaf : tree size limits (min_samples_leaf counts growing samples; max_depth at
        most MAX_DEPTH, 64).
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
    partition_by : a string column split first, one subtree per level ("kernel_path", the code path a backend
        runs a layer through: `graph.paths`). Each level of at least 2 * min_samples_leaf rows gets a subtree
        grown and pruned on its rows alone, under a chain of forced ``== level`` splits (the largest level
        first, at most max_depth of them); the smaller levels share the last subtree, which also takes a level
        unseen in fitting. Greedy splits chosen by the error on all rows may never separate two paths whose
        difference only wide layers show (most profile rows are narrow: their time is fixed overhead on any
        path). None, or X without the column: no forced split.

    Attributes (after fit)
    ----------------------
    columns_, categorical_ (column -> levels), leaf_features_, work_variants_, split_features_,
    integer_features_, nodes_ (list of node dicts, see ``_nodes``; JSON-ready: internal nodes have
    feature, kind "le" (x <= value goes left), "eq" (x == value goes left) or "in" (x in the list
    value goes left), left, right; leaves have model = {features, intercept, coef}), n_leaves_,
    depth_, floor_ms_ (prediction floor,
    0.1 * the smallest training time), leaf_stats_ (leaf -> n, share, median_abs_pct, rms_rel_pct),
    ccp_alpha_ (the chosen pruning penalty).

    ``score(X, y)`` is minus the median absolute relative error (0 is perfect).
    """

    def __init__(self, leaf_features=None, work_variants="auto", split_features=None, max_depth=8,
                 min_samples_leaf=10, max_thresholds=32, min_gain=0.01, validation_fraction=0.25,
                 positive_intercept=True, top_k=4, random_state=0, pruning="cv", cv_folds=3,
                 cv_tolerance=0.01, cv_power=1, partition_by=PATH_COLUMN):
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
        self.partition_by = partition_by

    # -------------------------------------------------------------------------------- fitting

    def fit(self, X, y_ms, sample_weight=None):
        df = as_frame(X)
        y = check_y(y_ms, len(df))
        w = check_weights(sample_weight, len(df))
        if self.min_samples_leaf < 1 or not 0 <= self.max_depth <= MAX_DEPTH:
            raise ValueError(f"min_samples_leaf must be >= 1 and max_depth in [0, {MAX_DEPTH}]")
        self.columns_, self.categorical_ = fitted_columns(df)
        numeric = [c for c in self.columns_ if c not in self.categorical_]
        self._resolve_roles(df, numeric)

        feats = sorted(set(self.leaf_features_) | set(self.work_variants_))
        split_vals = {c: (df[c].astype(str).to_numpy() if c in self.categorical_ else df[c].to_numpy(float))
                      for c in self.split_features_}
        grower = Grower({c: df[c].to_numpy(float) for c in feats}, y, w, split_vals,
                        leaf_features=self.leaf_features_, work_variants=self.work_variants_,
                        split_features=self.split_features_, categorical=self.categorical_,
                        integer_features=self.integer_features_, max_depth=self.max_depth,
                        min_samples_leaf=self.min_samples_leaf, max_thresholds=self.max_thresholds,
                        min_gain=self.min_gain, positive_intercept=self.positive_intercept, top_k=self.top_k)
        rng = np.random.default_rng(self.random_state)
        if self.pruning not in PRUNINGS:
            raise ValueError(f"pruning must be 'cv', 'validation' or 'none', got {self.pruning!r}")
        partition = self.partition_by if self.partition_by in self.split_features_ else None
        nodes, self.ccp_alpha_ = grow_and_prune(grower, rng, self.pruning, self.validation_fraction,
                                                self.cv_folds, self.cv_tolerance, self.cv_power,
                                                partition, MIN_PART_LEAVES * self.min_samples_leaf)
        nodes = compact(nodes)
        # refit leaves on all samples routed to them; every node gets its own fit and the range of the
        # leaf features it saw (the extrapolation guard of route.predict_nodes)
        leaf_of = route(nodes, split_vals, len(y))
        under = samples_under(nodes, leaf_of)
        for i, nd in enumerate(nodes):
            idx = under[i]
            if idx.size:
                nd["model"] = grower.fit_leaf(idx)
                nd["range"] = grower.feature_range(nd["model"], idx)
            nd["n"] = int(idx.size)
        self.nodes_ = nodes
        self.floor_ms_ = float(0.1 * y.min())
        self.n_leaves_ = sum(nd["leaf"] for nd in nodes)
        self.depth_ = max(nd["depth"] for nd in nodes)
        self.leaf_stats_ = self._leaf_stats(df, y, leaf_of)
        self.n_features_in_ = len(self.columns_)
        self.feature_names_in_ = np.asarray(self.columns_, dtype=object)
        return self

    def _resolve_roles(self, df, numeric) -> None:
        """Set leaf_features_, work_variants_, split_features_ and integer_features_ from the settings."""
        if self.leaf_features is None:
            lf = [c for c in DEFAULT_LEAF_FEATURES if c in numeric and np.any(df[c].to_numpy(float) != 0)]
        else:
            lf = list(self.leaf_features)
            bad = [c for c in lf if c not in numeric]
            if bad:
                raise ValueError(f"leaf_features {bad} are not numeric columns of X")
        if self.work_variants == "auto":
            wv = sorted((c for c in numeric if PAD_RE.match(c)), key=lambda c: int(PAD_RE.match(c)[1]))
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
            sf = [c for c in self.columns_ if not PAD_RE.match(c)]
        else:
            sf = list(self.split_features)
            bad = [c for c in sf if c not in self.columns_]
            if bad:
                raise ValueError(f"split_features {bad} are not columns of X")
        self.leaf_features_ = lf
        self.work_variants_ = wv
        self.split_features_ = sf
        self.integer_features_ = [c for c in numeric if np.all(np.mod(df[c].to_numpy(float), 1) == 0)]

    def _leaf_stats(self, df, y, leaf_of) -> dict:
        """leaf -> n, share, median_abs_pct, rms_rel_pct of the training rows it holds, priced as predict does."""
        pred = predict_nodes(self.nodes_, df, self.categorical_, self.floor_ms_)
        rel = (pred - y) / y
        stats = {}
        for i, nd in enumerate(self.nodes_):
            if nd["leaf"]:
                m = leaf_of == i
                e = np.abs(rel[m]) * 100
                stats[i] = {
                    "n": int(m.sum()), "share": float(m.mean()),
                    "median_abs_pct": float(np.median(e)) if e.size else float("nan"),
                    "rms_rel_pct": float(np.sqrt(np.mean(e**2))) if e.size else float("nan")}
        return stats

    # prediction ------------------------------------------------------------------------------

    def _check_X(self, X):
        check_is_fitted(self, "nodes_")
        df = as_frame(X)
        return check_columns(df, self.columns_)

    def predict(self, X) -> np.ndarray:
        """Predicted execution time in ms (always > 0). X: a DataFrame or a dict of column arrays (a
        dict of numpy arrays, as `featurize_columns` makes, is priced without building a DataFrame)."""
        if isinstance(X, dict) and all(isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "fO"
                                       for v in X.values()):
            check_is_fitted(self, "nodes_")
            check_column_arrays(X, self.columns_)
            return predict_nodes(self.nodes_, X, self.categorical_, self.floor_ms_)
        df = self._check_X(X)
        return predict_nodes(self.nodes_, df, self.categorical_, self.floor_ms_)

    def beyond_profile(self, X) -> list:
        """Per row: None, or (feature, value, largest fitted value) where the row lies beyond every
        configuration the tree was fitted on (`route.beyond_profile`): its price is an extrapolation."""
        if isinstance(X, dict) and all(isinstance(v, np.ndarray) for v in X.values()):
            check_is_fitted(self, "nodes_")
            return beyond_profile(self.nodes_, X)
        return beyond_profile(self.nodes_, self._check_X(X))

    def apply(self, X) -> np.ndarray:
        """Index (into nodes_) of the leaf each row falls into."""
        df = self._check_X(X)
        return route(self.nodes_, split_columns(self.nodes_, df, self.categorical_), len(df))

    def score(self, X, y, sample_weight=None) -> float:
        """Minus the median absolute relative error (0 is perfect; -0.05 is 5 %)."""
        df = self._check_X(X)
        return neg_median_abs_relative_error(check_y(y, len(df), "y"), self.predict(df))

    # explanation -----------------------------------------------------------------------------

    equation = staticmethod(export.equation)

    def rules(self) -> list[export.Rule]:
        """One Rule per leaf, in tree order (left to right)."""
        check_is_fitted(self, "nodes_")
        return export.rules(self)

    def explain_text(self) -> str:
        check_is_fitted(self, "nodes_")
        return export.explain_text(self)

    def split_points(self, feature: str) -> list[tuple[str, float]]:
        """Split tests on `feature` or its derived ``{feature}_mod{q}`` columns: (column, value)."""
        check_is_fitted(self, "nodes_")
        return export.split_points(self.nodes_, feature)

    # serialisation ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        check_is_fitted(self, "nodes_")
        return export.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelTree":
        return export.from_dict(cls, d)
