"""How accurate is the time model, against FLOPs, a lookup table and a random forest?

    .venv/bin/python bench/predict_accuracy.py --backend torch-cpu --budget 25m
    .venv/bin/python bench/predict_accuracy.py --backend onnxruntime-cpu --budget 25m

1. profile the backend (1 thread) for --budget into runs/bench/<backend>.db (resumes; random whole
   networks are measured too, one after every 10 layers, for the composition);
2. fit the tree and each baseline (held-out 20% of each family's configurations);
   The tree model is saved beside the store (<db>.timemodel.json);
3. measure the zoo networks (MobileNet-, ResNet-, VGG-, ShuffleNet-, DeepSense-style, 4 widths each:
   none of them is used in fitting; timed by the one network timer, fastdeepiot.profiling.timer, as the
   profile's random networks are) and predict them with every model.

Writes docs/results/predict_accuracy_<backend>.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from fastdeepiot.commands.profile import parse_duration
from fastdeepiot.devices import cpu_model, get_backend
from fastdeepiot.families import parse_families
from fastdeepiot.profiling.harness import TimingPolicy
from fastdeepiot.profiling.runner import plan, profile
from fastdeepiot.profiling.store import Store
from fastdeepiot.profiling.timer import time_networks
from fastdeepiot.report.tables import markdown_table
from fastdeepiot.timemodel.metrics import relative_error_summary
from fastdeepiot.timemodel.model import ESTIMATORS, fit_time_model
from fastdeepiot.zoo import zoo_networks

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="torch-cpu")
    ap.add_argument("--budget", default="25m", help="profiling budget of this run (a resumed store keeps "
                    "what it has; --budget 0 fits and evaluates the store as it is)")
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5, help="network timer rounds for the zoo (best of)")
    a = ap.parse_args()

    db = a.db or ROOT / "runs" / "bench" / f"{a.backend}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    backend = get_backend(a.backend, threads=a.threads)
    budget_s = parse_duration(a.budget)
    t0 = time.monotonic()
    with Store.open(db, backend.fingerprint(), create=True) as store:
        s = profile(backend, store, plan(parse_families(None), seed=a.seed, network_every=10, backend=backend),
                    budget_s=budget_s, policy=TimingPolicy())
        n_meas = store.count()
        n_nets = sum(1 for _ in store.measurements(kind="network"))
        stamps = [m.measured_at for m in store.measurements()]  # ISO-8601, UTC: ordered as strings
    span_s = (datetime.fromisoformat(max(stamps)) - datetime.fromisoformat(min(stamps))).total_seconds()
    profile_s = time.monotonic() - t0
    print(f"profiled {s.new} new ({n_meas} in all, {n_nets} networks) in {profile_s:.0f} s", flush=True)

    models, layer_rows = {}, []
    with Store.open(db) as store:
        tm = fit_time_model(store, estimator="tree", compare=tuple(e for e in ESTIMATORS if e != "tree"),
                            seed=a.seed, keep_holdout=True, progress=lambda m: print(m, flush=True))
        models["tree"] = tm
        tm.save(db.with_suffix(".timemodel.json"))  # the tree model, for `fastdeepiot predict/compress`
        for kind in ESTIMATORS[1:]:
            t1 = time.monotonic()
            models[kind] = fit_time_model(store, estimator=kind, seed=a.seed, holdout=0.0)
            print(f"fitted {kind} in {time.monotonic() - t1:.0f} s", flush=True)
    for kind, (_, y, p) in tm.holdout.items():
        layer_rows.append({"model": kind, "n": len(y), **{k: round(v, 4) if isinstance(v, float) else v
                                                          for k, v in relative_error_summary(y, p).items()}})
    per_family = {f: r.get("models", {}) for f, r in tm.report["families"].items()}

    nets = zoo_networks()
    # the one network timer: every zoo network in one timing process of its own, interleaved rounds
    timed = time_networks([m for _, m, _ in nets], [x for _, _, x in nets], backend, rounds=a.rounds)
    net_rows, raw = [], []
    for (name, module, x), meas in zip(nets, timed):
        row = {"network": name, "measured_ms": meas.median_ms, "measured_spread": round(meas.spread, 4)}
        for kind, m in models.items():
            row[f"{kind}_ms"] = m.predict_network(module, x).total_ms
        net_rows.append(row)
        raw.append(row)
        print(json.dumps(row), flush=True)
    measured = np.array([r["measured_ms"] for r in net_rows])
    net_summary = []
    for kind in models:
        pred = np.array([r[f"{kind}_ms"] for r in net_rows])
        s_ = relative_error_summary(measured, pred)
        net_summary.append({"model": kind, "networks": len(net_rows),
                            "within_10pct": round(s_["within_10pct"], 3),
                            "median_abs_pct": round(s_["median_abs_pct"], 2),
                            "p90_abs_pct": round(s_["p90_abs_pct"], 2),
                            "spearman": round(s_["spearman"], 3)})

    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"command": f"bench/predict_accuracy.py --backend {a.backend} --budget {a.budget}",
            "backend": a.backend, "threads": a.threads, "processor": cpu_model(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d"),
            "measurements": n_meas, "random_networks": n_nets, "profile_seconds_this_run": round(profile_s),
            "store_profile_span_s": round(span_s),
            "composition": tm.composition}
    stem = OUT / f"predict_accuracy_{a.backend}"
    stem.with_suffix(".json").write_text(json.dumps(
        {"meta": meta, "layers_heldout": layer_rows, "per_family": per_family, "networks_summary": net_summary,
         "networks": raw, "random_networks_heldout": tm.report.get("networks")}, indent=2))
    fam_rows = []
    for f, mods in per_family.items():
        for kind, v in mods.items():
            fam_rows.append({"family": f, "model": kind, "median_abs_pct": round(v["median_abs_pct"], 2),
                             "p90_abs_pct": round(v["p90_abs_pct"], 2), "within_10pct": round(v["within_10pct"], 3)})
    md = [f"# Prediction accuracy on {a.backend}\n",
          f"`{meta['command']}` on {meta['processor']}, {a.threads} thread, {meta['date']}. "
          f"{n_meas} measurements ({n_nets} random networks) in the store, profiled over "
          f"{span_s / 60:.0f} min (first to last measurement).\n",
          "## Whole networks (zoo, never used in fitting)\n", markdown_table(net_summary),
          "\n## Held-out layer configurations (20% of each family, pooled)\n", markdown_table(layer_rows),
          "\n## Per family\n", markdown_table(fam_rows),
          "\n## Every zoo network (ms)\n", markdown_table([{k: (round(v, 4) if isinstance(v, float) else v)
                                                          for k, v in r.items()} for r in net_rows])]
    stem.with_suffix(".md").write_text("\n".join(md))
    _plot(net_rows, list(models), stem.with_suffix(".png"), a.backend)
    print((OUT / f"predict_accuracy_{a.backend}.md").read_text())


def _plot(rows, kinds, path, backend):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meas = np.array([r["measured_ms"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 6))
    for kind, marker in zip(kinds, "os^v"):
        ax.scatter(meas, [r[f"{kind}_ms"] for r in rows], label=kind, marker=marker, alpha=0.7)
    lo, hi = meas.min() * 0.5, meas.max() * 2
    xs = np.array([lo, hi])
    ax.plot(xs, xs, "k-", lw=1)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="grey", alpha=0.2, label="±10%")
    ax.set(xscale="log", yscale="log", xlabel="measured ms", ylabel="predicted ms",
           title=f"zoo networks on {backend}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
