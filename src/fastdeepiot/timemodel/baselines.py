"""Baseline execution-time models, with the same interface as ``ModelTree``.

* ``FlopsLinear``: t = a + b * flops (a, b >= 0), fitted to minimise squared relative error.
* ``LookupTable``: a per-layer table of measured configurations; an unseen configuration is priced
  by inverse-distance interpolation (in log time) of its nearest measured neighbours in normalised
  configuration space (log1p of every numeric parameter, z-scored; a string parameter must match).
* ``RandomForestTime``: a random forest on the same features (nn-Meter's choice), fitted to
  log time. Stored as plain arrays per tree (JSON, no pickle) and evaluated by our own traversal,
  so a reloaded forest predicts identically.

All: ``fit(X, y_ms, sample_weight=None) -> self``, ``predict(X) -> ms (> 0)``, ``score`` = minus the
median absolute relative error, ``to_dict()`` / ``from_dict(d)``.
"""

from __future__ import annotations

import numbers
import re

import numpy as np
from scipy.optimize import nnls
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestRegressor
from sklearn.utils.validation import check_is_fitted

from fastdeepiot.timemodel.metrics import neg_median_abs_relative_error
from fastdeepiot.timemodel.tree import as_frame, check_columns, check_weights, check_y, is_numeric

_DERIVED = re.compile(r"(_mod\d+|^flops_pad\d+|^working_set_bytes)$")


class _TimeBaseline(RegressorMixin, BaseEstimator):
    _type = "?"

    def _prep(self, X, fitted=True):
        if fitted:
            check_is_fitted(self, "columns_")
        df = as_frame(X)
        if fitted:
            check_columns(df, self.columns_)
        return df

    def score(self, X, y, sample_weight=None) -> float:
        """Minus the median absolute relative error (0 is perfect; -0.05 is 5 %)."""
        df = self._prep(X)
        return neg_median_abs_relative_error(check_y(y, len(df), "y"), self.predict(df))

    def _params_json(self):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}

    @classmethod
    def _check_dict(cls, d):
        if d.get("type") != cls._type:
            raise ValueError(f"not a {cls._type} dict (type {d.get('type')!r})")


class FlopsLinear(_TimeBaseline):
    """t_ms = intercept + slope * feature (both >= 0), minimising squared relative error."""

    _type = "FlopsLinear"

    def __init__(self, feature="flops"):
        self.feature = feature

    def fit(self, X, y_ms, sample_weight=None):
        df = self._prep(X, fitted=False)
        y = check_y(y_ms, len(df))
        w = np.sqrt(check_weights(sample_weight, len(df)))
        if self.feature not in df or not is_numeric(df[self.feature]):
            raise ValueError(f"FlopsLinear needs a numeric {self.feature!r} column")
        x = df[self.feature].to_numpy(float)
        s = float(np.median(x / y)) or 1.0
        A = np.column_stack([np.ones_like(x), x / s]) * (w / y)[:, None]
        coef, _ = nnls(A, w)
        self.columns_ = [self.feature]
        self.intercept_ = float(coef[0])
        self.slope_ = float(coef[1] / s)
        self.floor_ms_ = float(0.1 * y.min())
        return self

    def predict(self, X) -> np.ndarray:
        df = self._prep(X)
        return np.maximum(self.intercept_ + self.slope_ * df[self.feature].to_numpy(float), self.floor_ms_)

    def to_dict(self) -> dict:
        check_is_fitted(self, "columns_")
        return {"type": self._type, "params": self._params_json(), "intercept": self.intercept_,
                "slope": self.slope_, "floor_ms": self.floor_ms_}

    @classmethod
    def from_dict(cls, d):
        cls._check_dict(d)
        m = cls(**d["params"])
        m.columns_ = [m.feature]
        m.intercept_, m.slope_, m.floor_ms_ = float(d["intercept"]), float(d["slope"]), float(d["floor_ms"])
        return m


class LookupTable(_TimeBaseline):
    """Measured table + nearest-neighbour interpolation in normalised configuration space.

    features: columns spanning the configuration space (None: every numeric column except the
    derived staircase columns; string columns must match exactly). Prediction: geometric
    inverse-distance-weighted mean of the n_neighbors nearest measured times (an exact match
    returns its measured time).
    """

    _type = "LookupTable"

    def __init__(self, features=None, n_neighbors=3):
        self.features = features
        self.n_neighbors = n_neighbors

    def fit(self, X, y_ms, sample_weight=None):
        df = self._prep(X, fitted=False)
        y = check_y(y_ms, len(df))
        check_weights(sample_weight, len(df))  # validated; a table has no use for weights
        k = self.n_neighbors
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"n_neighbors must be a whole number >= 1, got {k!r}")
        cols = list(self.features) if self.features is not None else [
            c for c in df.columns if not _DERIVED.search(str(c))]
        missing = [c for c in cols if c not in df]
        if missing:
            raise ValueError(f"LookupTable: X lacks columns {missing}")
        self.num_cols_ = [c for c in cols if is_numeric(df[c])]
        self.cat_cols_ = [c for c in cols if c not in self.num_cols_]
        Z = np.log1p(np.abs(df[self.num_cols_].to_numpy(float))) if self.num_cols_ else np.zeros((len(df), 0))
        self.mean_ = Z.mean(0)
        sd = Z.std(0)
        self.std_ = np.where(sd > 0, sd, 1.0)
        self.table_ = (Z - self.mean_) / self.std_
        self.cats_ = df[self.cat_cols_].astype(str).to_numpy() if self.cat_cols_ else np.zeros((len(df), 0), dtype=object)
        self.log_y_ = np.log(y)
        self.columns_ = self.num_cols_ + self.cat_cols_
        return self

    def predict(self, X) -> np.ndarray:
        df = self._prep(X)
        Z = np.log1p(np.abs(df[self.num_cols_].to_numpy(float))) if self.num_cols_ else np.zeros((len(df), 0))
        Q = (Z - self.mean_) / self.std_
        cats = df[self.cat_cols_].astype(str).to_numpy() if self.cat_cols_ else None
        k = max(1, min(int(self.n_neighbors), len(self.log_y_)))
        out = np.empty(len(df))
        for s in range(0, len(df), 512):
            q = Q[s:s + 512]
            d2 = ((q[:, None, :] - self.table_[None, :, :]) ** 2).sum(-1)
            if cats is not None:
                d2 = d2 + 1e6 * (cats[s:s + 512, None, :] != self.cats_[None, :, :]).sum(-1)
            nn = np.argsort(d2, axis=1, kind="stable")[:, :k]
            d = np.sqrt(np.take_along_axis(d2, nn, axis=1))
            ly = self.log_y_[nn]
            exact = d[:, 0] <= 1e-12
            wts = 1.0 / np.maximum(d, 1e-12)
            est = (wts * ly).sum(1) / wts.sum(1)
            out[s:s + 512] = np.where(exact, ly[:, 0], est)
        return np.exp(out)

    def to_dict(self) -> dict:
        check_is_fitted(self, "columns_")
        return {"type": self._type, "params": self._params_json(), "num_cols": self.num_cols_,
                "cat_cols": self.cat_cols_, "mean": self.mean_.tolist(), "std": self.std_.tolist(),
                "table": self.table_.tolist(), "cats": self.cats_.tolist(), "log_y": self.log_y_.tolist()}

    @classmethod
    def from_dict(cls, d):
        cls._check_dict(d)
        m = cls(**d["params"])
        m.num_cols_, m.cat_cols_ = list(d["num_cols"]), list(d["cat_cols"])
        m.columns_ = m.num_cols_ + m.cat_cols_
        m.mean_, m.std_ = np.asarray(d["mean"], float), np.asarray(d["std"], float)
        m.table_ = np.asarray(d["table"], float).reshape(len(d["log_y"]), len(m.num_cols_))
        m.cats_ = np.asarray(d["cats"], dtype=object).reshape(len(d["log_y"]), len(m.cat_cols_)).astype(str) \
            if m.cat_cols_ else np.zeros((len(d["log_y"]), 0), dtype=object)
        m.log_y_ = np.asarray(d["log_y"], float)
        return m


class RandomForestTime(_TimeBaseline):
    """Random forest regression of log time on all features (string columns one-hot)."""

    _type = "RandomForestTime"

    def __init__(self, n_estimators=100, max_features=1.0, min_samples_leaf=1, max_depth=None,
                 random_state=0):
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.max_depth = max_depth
        self.random_state = random_state

    def _matrix(self, df) -> np.ndarray:
        cols = [df[c].to_numpy(float) for c in self.num_cols_]
        for c, levels in self.cat_levels_.items():
            v = df[c].astype(str).to_numpy()
            cols.extend((v == lev).astype(float) for lev in levels)
        return np.column_stack(cols).astype(np.float32).astype(float)

    def fit(self, X, y_ms, sample_weight=None):
        df = self._prep(X, fitted=False)
        y = check_y(y_ms, len(df))
        w = check_weights(sample_weight, len(df))
        self.num_cols_ = [c for c in df.columns if is_numeric(df[c])]
        self.cat_levels_ = {c: sorted({str(v) for v in df[c]}) for c in df.columns if c not in self.num_cols_}
        self.columns_ = self.num_cols_ + list(self.cat_levels_)
        rf = RandomForestRegressor(n_estimators=self.n_estimators, max_features=self.max_features,
                                   min_samples_leaf=self.min_samples_leaf, max_depth=self.max_depth,
                                   random_state=self.random_state, n_jobs=1)
        rf.fit(self._matrix(df), np.log(y), sample_weight=w)
        self.trees_ = []
        for est in rf.estimators_:
            t = est.tree_
            self.trees_.append({"left": t.children_left.astype(int), "right": t.children_right.astype(int),
                                "feature": t.feature.astype(int), "threshold": t.threshold.astype(float),
                                "value": t.value[:, 0, 0].astype(float)})
        return self

    def predict(self, X) -> np.ndarray:
        df = self._prep(X)
        M = self._matrix(df)
        n = len(df)
        total = np.zeros(n)
        rows = np.arange(n)
        for t in self.trees_:
            node = np.zeros(n, dtype=int)
            while True:
                inner = t["left"][node] >= 0
                if not inner.any():
                    break
                f = t["feature"][node]
                go_left = M[rows, np.maximum(f, 0)] <= t["threshold"][node]
                nxt = np.where(go_left, t["left"][node], t["right"][node])
                node = np.where(inner, nxt, node)
            total += t["value"][node]
        return np.exp(total / len(self.trees_))

    def to_dict(self) -> dict:
        check_is_fitted(self, "columns_")
        return {"type": self._type, "params": self._params_json(), "num_cols": self.num_cols_,
                "cat_levels": self.cat_levels_,
                "trees": [{k: v.tolist() for k, v in t.items()} for t in self.trees_]}

    @classmethod
    def from_dict(cls, d):
        cls._check_dict(d)
        m = cls(**d["params"])
        m.num_cols_ = list(d["num_cols"])
        m.cat_levels_ = {k: list(v) for k, v in d["cat_levels"].items()}
        m.columns_ = m.num_cols_ + list(m.cat_levels_)
        m.trees_ = [{k: np.asarray(v, dtype=float if k in ("threshold", "value") else int) for k, v in t.items()}
                    for t in d["trees"]]
        return m
