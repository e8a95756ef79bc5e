"""Plots that explain a time model: measured vs predicted time along a width sweep."""

from __future__ import annotations

import os

import numpy as np

from fastdeepiot.timemodel.tree import featurize


def plot_sweep(model, configs, measured_ms, sweep_param: str, path, title: str | None = None,
               paths=None) -> str:
    """Plot measured (`measured_ms`; None: predictions alone) and predicted time (ms) against `sweep_param`
    for a sweep of configurations.

    Split points of a ``ModelTree`` on the swept parameter are marked as vertical lines: both its
    thresholds on the parameter itself (solid) and the places along the sweep where the predicting
    leaf changes (dotted; these include splits on derived quantities such as bytes or ``w % q``).
    Works with any estimator that has ``predict`` (baselines get no split lines). `paths`: the
    configurations' kernel paths where the model was fitted with them (``TimeModel.kernel_paths``).
    Writes a PNG to `path` and returns the path.
    """
    # matplotlib is imported here, on purpose: it is heavy and only plotting needs it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(configs)
    measured = None if measured_ms is None else np.asarray(measured_ms, dtype=float).ravel()
    if measured is not None and len(configs) != measured.size:
        raise ValueError(f"{len(configs)} configurations but {measured.size} measured times")
    if not configs:
        raise ValueError("plot_sweep: no configurations")
    if any(sweep_param not in c.params for c in configs):
        raise ValueError(f"sweep parameter {sweep_param!r} is not a parameter of every configuration")
    X = featurize(configs, paths=paths)
    x = np.asarray([float(c.params[sweep_param]) for c in configs])
    order = np.argsort(x, kind="stable")
    x = x[order]
    measured = None if measured is None else measured[order]
    X = X.iloc[order].reset_index(drop=True)
    pred = model.predict(X)

    fig, ax = plt.subplots(figsize=(9, 4.5))
    if measured is not None:
        ax.plot(x, measured, "o", ms=3, color="tab:blue", label="measured")
    ax.plot(x, pred, "-", lw=1.5, color="tab:orange", label="predicted")
    if hasattr(model, "split_points") and hasattr(model, "apply"):
        lo, hi = x.min(), x.max()
        drawn = False
        for feat, v in model.split_points(sweep_param):
            if feat == sweep_param and lo <= v <= hi:
                ax.axvline(v, color="tab:red", lw=1, alpha=0.7,
                           label=None if drawn else f"split on {sweep_param}")
                drawn = True
        leaves = model.apply(X)
        change = np.flatnonzero(leaves[1:] != leaves[:-1])
        labelled = False
        for j in change:
            ax.axvline((x[j] + x[j + 1]) / 2, color="gray", ls=":", lw=1,
                       label=None if labelled else "leaf change")
            labelled = True
    ax.set_xlabel(sweep_param)
    ax.set_ylabel("time (ms)")
    if title is None:
        title = f"{configs[0].family}: sweep of {sweep_param}"
        if measured is not None:
            title += f" (median error {np.median(np.abs(pred - measured) / measured) * 100:.1f}%)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    d = os.path.dirname(os.fspath(path))
    if d:
        os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)
