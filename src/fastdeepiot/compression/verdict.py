"""Compare methods at matched accuracy, over seeds: Pareto fronts, time at <= X points of drop, the ratio
ours / best external baseline with a confidence interval.

    points = [{"method": "ours", "seed": 0, "test_accuracy": 94.6, "measured_ms": 0.22}, ...,
              {"method": "original", "seed": 0, "test_accuracy": 95.2, "measured_ms": 0.69}, ...]
    v = verdict(points, max_drop=0.5)
    v["ratio"], v["ratio_ci"], v["best_baseline"], v["methods"]["ours"]["ms_ci"]

Definitions (accuracies in percent, drops in percentage points, times in ms):

* A seed's *base accuracy* is the test accuracy of its "original" point (the network before compression;
  the mean of all original points for a seed that has none).
* A method's *Pareto front* on a seed: its points not dominated by another (one as fast or faster with
  accuracy as high or higher, one of the two strictly).
* A method's *time at <= X points* on a seed: the measured time of the fastest point of its front whose drop
  (base accuracy - accuracy) is at most X. When none is (the method produced nothing that accurate on that
  seed) it is the original's time on that seed: a user who cannot get a network within the budget keeps
  the original. A method with no point at all on a seed is missing on that seed.
* Over seeds: the mean, with a two-sided `confidence` Student-t interval (none from one seed).
* The *best baseline*: of the methods other than `ours` and `exclude` (the original, ablations), the one
  with the smallest mean time at <= X. The *ratio* is ours' mean / the best baseline's mean; its
  interval is a bootstrap over seeds (each method's seeds resampled independently; the best baseline
  re-chosen in every replicate, so the selection is part of the uncertainty); none from one seed.
* `meets_bar`: the ratio <= `bar`; `meets_bar_ci`: the interval's upper end <= `bar` as well.
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import mean

import numpy as np
from scipy.stats import t as student_t

ORIGINAL = "original"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated (ms, accuracy) points, fastest first (duplicates kept once)."""
    front: list[tuple[float, float]] = []
    for ms, acc in sorted(set(points), key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((ms, acc))
    return front


def t_interval(values: list[float], confidence: float = 0.9) -> tuple[float, float] | None:
    """Two-sided Student-t interval of the mean; None for fewer than two values."""
    if len(values) < 2:
        return None
    m, s = float(np.mean(values)), float(np.std(values, ddof=1))
    h = float(student_t.ppf(0.5 + confidence / 2, len(values) - 1)) * s / math.sqrt(len(values))
    return (m - h, m + h)


def _by_method_seed(points):
    out: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for p in points:
        if p.get("measured_ms") is None or p.get("test_accuracy") is None:
            continue
        out[p["method"]][p.get("seed", 0)].append((float(p["measured_ms"]), float(p["test_accuracy"])))
    return out


def times_at_drop(points: list[dict], max_drop: float) -> tuple[dict[str, dict], list[str]]:
    """{method: {seed: ms}}: each method's time at <= `max_drop` points per seed (module doc), and notes."""
    grouped = _by_method_seed(points)
    notes: list[str] = []
    orig = grouped.get(ORIGINAL, {})
    all_orig = [p for pts in orig.values() for p in pts]
    if not all_orig:
        raise ValueError("verdict needs the original network's points (method 'original')")
    mean_base = (mean(a for _, a in all_orig), mean(ms for ms, _ in all_orig))
    out: dict[str, dict] = {}
    for method, seeds in grouped.items():
        out[method] = {}
        for seed, pts in seeds.items():
            o = orig.get(seed)
            base_acc, base_ms = ((mean(a for _, a in o), mean(ms for ms, _ in o)) if o else mean_base)
            within = [ms for ms, acc in pareto_front(pts) if base_acc - acc <= max_drop + 1e-9]
            if within:
                out[method][seed] = min(within)
            else:
                out[method][seed] = base_ms
                if method != ORIGINAL:
                    notes.append(f"{method} seed {seed}: nothing within {max_drop:g} points; the original's time counts")
    return out, notes


def _ratio_boot(ours: list[float], baselines: dict[str, list[float]], n_boot: int, confidence: float,
                seed: int) -> tuple[float, float] | None:
    if len(ours) < 2 or any(len(v) < 2 for v in baselines.values()):
        return None
    rng = np.random.default_rng(seed)
    o = np.asarray(ours)
    om = o[rng.integers(0, len(o), (n_boot, len(o)))].mean(1)
    bm = np.full(n_boot, np.inf)
    for v in baselines.values():
        a = np.asarray(v)
        bm = np.minimum(bm, a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1))
    r = om / bm
    lo, hi = np.quantile(r, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return (float(lo), float(hi))


def verdict(points: list[dict], *, max_drop: float = 0.5, ours: str = "ours", exclude: tuple[str, ...] = (),
            confidence: float = 0.9, bar: float = 0.5, n_boot: int = 4000, seed: int = 0) -> dict:
    """The comparison at <= `max_drop` points of test-accuracy drop (module doc). Returns a JSON-able dict:
    max_drop, methods {name: {seeds, ms_by_seed, ms, ms_ci}}, ours_ms, ours_ci, best_baseline,
    best_baseline_ms, best_baseline_ci, ratio, ratio_ci, meets_bar, meets_bar_ci, bar, confidence, notes.
    Without any point of ours or of a baseline, ratio is None and meets_bar False (with a note)."""
    times, notes = times_at_drop(points, max_drop)
    methods = {}
    for m, by_seed in times.items():
        vals = [by_seed[s] for s in sorted(by_seed)]
        methods[m] = {"seeds": sorted(by_seed), "ms_by_seed": vals, "ms": float(np.mean(vals)),
                      "ms_ci": t_interval(vals, confidence)}
    skip = {ours, ORIGINAL, *exclude}
    baselines = {m: times[m] for m in times if m not in skip}
    res = {"max_drop": max_drop, "confidence": confidence, "bar": bar, "methods": methods, "ours_ms": None,
           "ours_ci": None, "best_baseline": None, "best_baseline_ms": None, "best_baseline_ci": None,
           "ratio": None, "ratio_ci": None, "meets_bar": False, "meets_bar_ci": False, "notes": notes}
    if ours in methods:
        res["ours_ms"], res["ours_ci"] = methods[ours]["ms"], methods[ours]["ms_ci"]
    else:
        notes.append(f"no points of {ours!r}")
    if not baselines:
        notes.append("no external baseline has points")
    else:
        best = min(baselines, key=lambda m: (methods[m]["ms"], m))
        res.update(best_baseline=best, best_baseline_ms=methods[best]["ms"], best_baseline_ci=methods[best]["ms_ci"])
    if res["ours_ms"] is None or res["best_baseline"] is None:
        return res
    res["ratio"] = res["ours_ms"] / res["best_baseline_ms"]
    ours_vals = [times[ours][s] for s in sorted(times[ours])]
    res["ratio_ci"] = _ratio_boot(ours_vals, {m: list(v.values()) for m, v in baselines.items()}, n_boot,
                                  confidence, seed)
    if res["ratio_ci"] is None:
        notes.append("fewer than two seeds of ours or of a baseline: no interval on the ratio")
    res["meets_bar"] = res["ratio"] <= bar
    res["meets_bar_ci"] = res["meets_bar"] and res["ratio_ci"] is not None and res["ratio_ci"][1] <= bar
    return res


def curves(points: list[dict], drops, confidence: float = 0.9) -> dict[str, list[dict]]:
    """Per method, its mean time at <= X points (with the t interval over seeds) for each X in `drops`:
    the Pareto curves at matched accuracy that the benchmark plots."""
    out: dict[str, list[dict]] = defaultdict(list)
    for d in drops:
        times, _ = times_at_drop(points, d)
        for m, by_seed in times.items():
            vals = list(by_seed.values())
            out[m].append({"max_drop": d, "ms": float(np.mean(vals)), "ms_ci": t_interval(vals, confidence)})
    return dict(out)
