"""Input checks shared by the model tree and its baselines: X as a DataFrame, y as positive times,
sample weights, and the fitted columns."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def as_frame(X, name: str = "X"):
    """DataFrame from a DataFrame or dict of arrays; raises ValueError on NaN / ragged input."""
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
        if is_numeric(df[c]):
            v = np.asarray(df[c], dtype=float)
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{name} contains inf in column {c!r}")
    return df


def is_numeric(s) -> bool:
    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def fitted_columns(df) -> tuple[list[str], dict[str, list[str]]]:
    """(columns_, categorical_) of an estimator fitted on df: every column's name, and the levels of each
    string column (what the estimator can route; a level it never saw is not covered)."""
    columns = [str(c) for c in df.columns]
    return columns, {c: sorted({str(v) for v in df[c]}) for c in columns if not is_numeric(df[c])}


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


def check_column_arrays(cols: dict, columns: Sequence[str], name: str = "X") -> dict:
    """`as_frame` + `check_columns` for a dict of 1-D numpy arrays (float, or object holding strings),
    without building a DataFrame: the same errors for ragged, missing, NaN and inf values."""
    lens = {k: len(v) for k, v in cols.items()}
    if len(set(lens.values())) > 1:
        raise ValueError(f"{name}: columns have different lengths: {lens}")
    if not cols:
        raise ValueError(f"{name} has no columns")
    missing = [c for c in columns if c not in cols]
    numeric = [v for v in cols.values() if v.dtype != object]
    if (not missing and (not numeric or np.isfinite(np.stack(numeric)).all())
            and not any(pd.isna(v).any() for v in cols.values() if v.dtype == object)):
        return cols  # the common case, checked in one pass; otherwise find the first problem below
    nan = [k for k, v in cols.items() if (pd.isna(v).any() if v.dtype == object else np.isnan(v).any())]
    if nan:
        raise ValueError(f"{name} contains NaN/missing values in columns {nan}")
    for k, v in cols.items():
        if v.dtype != object and not np.all(np.isfinite(v)):
            raise ValueError(f"{name} contains inf in column {k!r}")
    missing = [c for c in columns if c not in cols]
    if missing:
        raise ValueError(f"{name} lacks columns the model was fitted with: {missing}")
    return cols
