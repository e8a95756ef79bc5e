"""``BaggedModelTrees``: the geometric mean of a few model trees, each fitted on a random subsample.

One model tree fitted on one profile is a high-variance estimate: a few rows more or less move a split,
and a leaf's linear costs then extrapolate differently to configurations the profile did not sample
(issue 17 measured single held-out networks moving 10-30 points between two profiles of the same
length). Averaging trees fitted on subsamples (without replacement, so that the cross-validated
pruning inside each tree never sees a row in two folds) smooths that variance while every member stays
a readable model tree: ``explain_text`` prints each one.

The average is geometric (the mean of log times), as the trees minimise relative error.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from fastdeepiot.timemodel.metrics import neg_median_abs_relative_error
from fastdeepiot.timemodel.tree._validation import as_frame, check_columns, check_weights, check_y, fitted_columns
from fastdeepiot.timemodel.tree.estimator import ModelTree


class BaggedModelTrees(RegressorMixin, BaseEstimator):
    """Geometric mean of `n_estimators` ModelTrees, each fitted on `subsample` of the rows drawn without
    replacement (tree k: seed random_state + k for its rows and its pruning folds); `tree_params` are
    the trees' ModelTree settings.

    Attributes (after fit): trees_ (the fitted ModelTrees), columns_, categorical_ (the levels of the
    whole training set: what the model covers), n_leaves_ (leaves over all trees)."""

    _type = "BaggedModelTrees"

    def __init__(self, n_estimators: int = 5, subsample: float = 0.8, random_state: int = 0,
                 tree_params: dict | None = None):
        self.n_estimators = n_estimators
        self.subsample = subsample
        self.random_state = random_state
        self.tree_params = tree_params

    def fit(self, X, y_ms, sample_weight=None):
        df = as_frame(X)
        y = check_y(y_ms, len(df))
        w = check_weights(sample_weight, len(df))
        if isinstance(self.n_estimators, bool) or not (isinstance(self.n_estimators, int) and self.n_estimators >= 1):
            raise ValueError(f"n_estimators must be a positive integer, got {self.n_estimators!r}")
        if isinstance(self.subsample, bool) or not (isinstance(self.subsample, (int, float)) and 0 < self.subsample <= 1):
            raise ValueError(f"subsample must be in (0, 1], got {self.subsample!r}")
        if isinstance(self.random_state, bool) or not (isinstance(self.random_state, int) and self.random_state >= 0):
            raise ValueError(f"random_state must be a whole number >= 0, got {self.random_state!r}")
        n = len(df)
        m = max(1, int(round(self.subsample * n)))
        self.trees_ = []
        for k in range(self.n_estimators):
            rng = np.random.default_rng(self.random_state + k)
            idx = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
            tree = ModelTree(**{**(self.tree_params or {}), "random_state": self.random_state + k})
            self.trees_.append(tree.fit(df.iloc[idx], y[idx], None if w is None else w[idx]))
        self.columns_, self.categorical_ = fitted_columns(df)
        self.n_leaves_ = int(sum(t.n_leaves_ for t in self.trees_))
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted execution time in ms: the geometric mean of the trees' (X as ModelTree.predict takes it)."""
        check_is_fitted(self, "trees_")
        logs = [np.log(np.asarray(t.predict(X), dtype=float)) for t in self.trees_]
        return np.exp(np.mean(logs, axis=0))

    def beyond_profile(self, X) -> list:
        """Per row: None, or the first tree's (feature, value, largest fitted value) where the row lies beyond
        what every tree was fitted on (`ModelTree.beyond_profile`)."""
        check_is_fitted(self, "trees_")
        per_tree = [t.beyond_profile(X) for t in self.trees_]
        return [rows[0] if all(r is not None for r in rows) else None for rows in zip(*per_tree)]

    def score(self, X, y, sample_weight=None) -> float:
        df = check_columns(as_frame(X), self.columns_)
        return neg_median_abs_relative_error(check_y(y, len(df), "y"), self.predict(df))

    def explain_text(self) -> str:
        check_is_fitted(self, "trees_")
        parts = [f"geometric mean of {len(self.trees_)} model trees, each fitted on "
                 f"{self.subsample:.0%} of the measurements (drawn without replacement)"]
        for k, t in enumerate(self.trees_):
            parts.append(f"\n--- tree {k + 1} of {len(self.trees_)} ---\n{t.explain_text()}")
        return "\n".join(parts)

    def to_dict(self) -> dict:
        check_is_fitted(self, "trees_")
        return {"type": self._type, "n_estimators": len(self.trees_), "subsample": self.subsample,
                "random_state": self.random_state, "tree_params": self.tree_params, "columns": self.columns_,
                "categorical": self.categorical_, "trees": [t.to_dict() for t in self.trees_]}

    @classmethod
    def from_dict(cls, d: dict) -> "BaggedModelTrees":
        if d.get("type") != cls._type:
            raise ValueError(f"not a {cls._type} dict (type {d.get('type')!r})")
        est = cls(n_estimators=int(d["n_estimators"]), subsample=float(d["subsample"]),
                  random_state=int(d["random_state"]), tree_params=d.get("tree_params"))
        est.trees_ = [ModelTree.from_dict(t) for t in d["trees"]]
        est.columns_ = list(d["columns"])
        est.categorical_ = {k: list(v) for k, v in d["categorical"].items()}
        est.n_leaves_ = int(sum(t.n_leaves_ for t in est.trees_))
        return est
