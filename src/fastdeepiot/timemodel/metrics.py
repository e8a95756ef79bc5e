"""Relative-error metrics for execution-time predictions.

Execution times span orders of magnitude (microseconds to hundreds of milliseconds), so every
metric here is relative: the error of a prediction is ``(pred - true) / true``.
"""

from __future__ import annotations

import numpy as np


def relative_errors(y_true, y_pred) -> np.ndarray:
    """Signed relative errors ``(pred - true) / true``; raises ValueError on bad input."""
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("no values to compare")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValueError("y_true and y_pred must be finite (found NaN or inf)")
    if np.any(t <= 0):
        raise ValueError("measured times (y_true) must be positive")
    return (p - t) / t


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2:
        return float("nan")
    from scipy.stats import spearmanr

    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def relative_error_summary(y_true, y_pred) -> dict:
    """Summary of relative prediction errors.

    Returns a dict with
      * ``median_abs_pct``, ``p90_abs_pct``, ``mean_abs_pct``, ``max_abs_pct``: absolute relative
        error in percent (median, 90th percentile, mean, maximum),
      * ``within_5pct``, ``within_10pct``: fraction (0..1) of predictions within 5 % / 10 %,
      * ``spearman``: Spearman rank correlation of predicted and measured times (ranking quality,
        what a compression search needs),
      * ``n``: number of samples.
    """
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    e = np.abs(relative_errors(t, p)) * 100.0
    return {
        "n": int(e.size),
        "median_abs_pct": float(np.median(e)),
        "p90_abs_pct": float(np.percentile(e, 90)),
        "mean_abs_pct": float(np.mean(e)),
        "max_abs_pct": float(np.max(e)),
        "within_5pct": float(np.mean(e <= 5.0)),
        "within_10pct": float(np.mean(e <= 10.0)),
        "spearman": _spearman(t, p),
    }


def neg_median_abs_relative_error(y_true, y_pred) -> float:
    """The ``score`` of every time estimator: minus the median absolute relative error (a
    fraction, so 0 is perfect and -0.05 means a 5 % median error). Higher is better, as sklearn
    expects of a score."""
    return -float(np.median(np.abs(relative_errors(y_true, y_pred))))
