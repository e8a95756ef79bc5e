"""Calibrate the model tree on real torch-cpu conv2d timings (exploration, not part of the job).

    .venv/bin/python bench/_explore_tree.py measure --n 300 --out /tmp/conv2d_explore.json
    .venv/bin/python bench/_explore_tree.py evaluate --data /tmp/conv2d_explore.json

`measure` times random conv2d configurations (kernel 1/3/5, batch 1-4, size <= 28, channels 1..128)
and an out_channels sweep 1..128 on one thread; `evaluate` fits ModelTree and the three baselines on
a random 70/30 split of the random sample and reports held-out relative errors, then fits on the
sample and plots the sweep (tree split points marked).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import numpy as np


def _time_config(fam, params, reps=15):
    import torch

    m = fam.build(params).eval()
    inputs = fam.make_inputs(params)
    with torch.inference_mode():
        for _ in range(3):
            m(*inputs)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            m(*inputs)
            ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def measure(n: int, out: str, seed: int = 0) -> None:
    import torch

    from fastdeepiot.families import get_family

    torch.set_num_threads(1)
    fam = get_family("conv2d")
    rng = random.Random(seed)
    rows = []
    t_start = time.time()
    while len(rows) < n:
        p = {"batch": rng.choice([1, 2, 4]), "in_channels": rng.randint(1, 128),
             "out_channels": rng.randint(1, 128), "kernel": rng.choice([1, 3, 5]),
             "stride": rng.choice([1, 2]), "groups": 1, "size": rng.choice([4, 7, 8, 14, 16, 28])}
        if rng.random() < 0.15:  # some depthwise / grouped
            c = rng.randint(1, 128)
            p.update(in_channels=c, out_channels=c, groups=c)
        try:
            p = fam.check(p)
        except ValueError:
            continue
        rows.append({"params": p, "ms": _time_config(fam, p), "kind": "random"})
    base = {"batch": 1, "in_channels": 32, "kernel": 3, "stride": 1, "groups": 1, "size": 14}
    for c in range(1, 129):
        p = dict(base, out_channels=c)
        rows.append({"params": p, "ms": _time_config(fam, p), "kind": "sweep"})
    with open(out, "w") as f:
        json.dump(rows, f)
    print(f"measured {len(rows)} configs in {time.time() - t_start:.0f} s -> {out}")


def evaluate(data: str, plot: str | None, seed: int = 0) -> None:
    from fastdeepiot.families import LayerConfig
    from fastdeepiot.timemodel.baselines import FlopsLinear, LookupTable, RandomForestTime
    from fastdeepiot.timemodel.metrics import relative_error_summary
    from fastdeepiot.timemodel.tree import ModelTree, featurize

    rows = json.load(open(data))
    rand = [r for r in rows if r["kind"] == "random"]
    sweep = [r for r in rows if r["kind"] == "sweep"]
    X = featurize([LayerConfig("conv2d", r["params"]) for r in rand])
    y = np.array([r["ms"] for r in rand])
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    ntr = int(0.7 * len(y))
    tr, te = idx[:ntr], idx[ntr:]
    Xs = featurize([LayerConfig("conv2d", r["params"]) for r in sweep])
    ys = np.array([r["ms"] for r in sweep])
    print(f"{len(rand)} random configs ({ntr} train / {len(te)} held out), {len(sweep)} sweep points; "
          f"times {y.min():.4f}..{y.max():.2f} ms")
    print(f"{'model':<18}{'fit s':>7}{'med%':>8}{'p90%':>8}{'<=10%':>8}{'rho':>7}   sweep med%: unseen / interleaved")
    for name, est in [("ModelTree", ModelTree()), ("FlopsLinear", FlopsLinear()),
                      ("LookupTable", LookupTable()), ("RandomForestTime", RandomForestTime())]:
        t0 = time.time()
        est.fit(X.iloc[tr], y[tr])
        dt = time.time() - t0
        s = relative_error_summary(y[te], est.predict(X.iloc[te]))
        # sweep, unseen: fit on the random sample only, predict the whole sweep
        est1 = type(est)(**est.get_params()).fit(X, y)
        su = relative_error_summary(ys, est1.predict(Xs))
        # sweep, interleaved: fit on random + odd widths of the sweep, evaluate on even widths
        est2 = type(est)(**est.get_params()).fit(
            pd_concat(X, Xs.iloc[1::2]), np.concatenate([y, ys[1::2]]))
        ss = relative_error_summary(ys[0::2], est2.predict(Xs.iloc[0::2]))
        print(f"{name:<18}{dt:>7.2f}{s['median_abs_pct']:>8.2f}{s['p90_abs_pct']:>8.2f}"
              f"{s['within_10pct']:>8.2f}{s['spearman']:>7.3f}   {su['median_abs_pct']:>6.2f}"
              f"   {ss['median_abs_pct']:>6.2f}")
        if name == "ModelTree":
            tree = est2
    print(tree.explain_text())
    if plot:
        from fastdeepiot.timemodel.explain import plot_sweep

        plot_sweep(tree, [LayerConfig("conv2d", r["params"]) for r in sweep], ys, "out_channels", plot)
        print("plot ->", plot)


def pd_concat(a, b):
    import pandas as pd

    return pd.concat([a, b], ignore_index=True)


def main(argv=None):
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--n", type=int, default=300)
    m.add_argument("--out", default="/tmp/conv2d_explore.json")
    e = sub.add_parser("evaluate")
    e.add_argument("--data", default="/tmp/conv2d_explore.json")
    e.add_argument("--plot", default=None)
    a = ap.parse_args(argv)
    if a.cmd == "measure":
        measure(a.n, a.out)
    else:
        evaluate(a.data, a.plot)


if __name__ == "__main__":
    sys.exit(main())
