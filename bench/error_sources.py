"""Where does a network's prediction error come from: the layer models, or the composition that adds them up?

    .venv/bin/python bench/error_sources.py measure --backend onnxruntime-cpu --db runs/gen11b/onnxruntime-cpu.db \
        --out runs/es/onnxruntime-cpu.json [--random-per-style 4] [--noise 60] [--seed 0]
    .venv/bin/python bench/error_sources.py report runs/es/torch-cpu.json runs/es/onnxruntime-cpu.json \
        [--out docs/results] [--name error_sources]

`measure` fits the store's time model with every style (`fit_time_model`, `--seed`), then, for every network of
the held-out suite (`bench/heldout_archs.py`) and `--random-per-style` of the store's own random networks per
style (drawn with `--seed`):

  * times each layer call the model prices on its own, as the profiler does (`profiling.runner.time_layer`;
    each distinct configuration once),
  * then times the whole network with the one network timer (`profiling.timer`, 3 rounds, in its own process),
    right after its layers, so both sides see the same state of the machine,
  * and prices the network twice through the model's composition (`TimeModel.compose`): with the layer
    models' standalone times (what `predict_network` returns) and with the measured standalone times.

The second price is what the composition would give with perfect layer models: the gap between the two
figures is the layer models' share of the error, what remains is the composition's. `--noise N` also times N
of the store's layer rows twice (two passes) and compares them with the stored medians: how repeatable the
labels the layer models learn from are.

`report` writes <out>/<name>.md and .json: per backend, within +-10% of the measured network with the model
and with measured layers, per group (held-out architectures by style; the store's random networks); the layer
models' error on the layers these networks hold, per family; and the label repeatability.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import code_version  # noqa: E402
from heldout_archs import heldout_networks  # noqa: E402

from fastdeepiot.devices import cpu_model, get_backend  # noqa: E402
from fastdeepiot.families import LayerConfig  # noqa: E402
from fastdeepiot.graph.randomnets import build_network, example_input  # noqa: E402
from fastdeepiot.profiling.harness import TimingPolicy  # noqa: E402
from fastdeepiot.profiling.runner import time_layer  # noqa: E402
from fastdeepiot.profiling.store import Store  # noqa: E402
from fastdeepiot.profiling.timer import NetworkTimer  # noqa: E402
from fastdeepiot.report.tables import markdown_table  # noqa: E402
from fastdeepiot.timemodel.model import fit_time_model, load_network_data  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results"
NETWORK_ROUNDS = 3


# ------------------------------------------------------------------------------ measuring


def pick_random(store, device: dict, per_style: int, seed: int) -> list[tuple[str, dict, float]]:
    """(style, spec, stored ms) of `per_style` random networks of each style the store holds."""
    by: dict[str, list] = {}
    for spec, ms in load_network_data(store, device):
        by.setdefault(spec.get("style", "plain"), []).append((spec, ms))
    rng = np.random.default_rng(seed)
    out = []
    for style, rows in sorted(by.items()):
        out += [(style, *rows[i]) for i in rng.permutation(len(rows))[:per_style]]
    return out


def layer_times(tm, backend, calls, cache: dict, policy: TimingPolicy) -> list[dict | None]:
    """Per call: None where the model does not price it, else its predicted and measured standalone ms
    (measured None where the backend cannot run it alone); `cache` holds each configuration's measurement."""
    predicted = tm._standalone_many([calls])[0]
    rows = []
    for c, pred in zip(calls, predicted):
        if c.kind != "layer" or pred is None:
            rows.append(None)
            continue
        key = c.config.key
        if key not in cache:
            try:
                cache[key] = time_layer(backend, c.config, policy).median_ms
            except Exception as e:  # noqa: BLE001 - a layer the backend cannot run alone is reported, not fatal
                print(f"  cannot time {key[:80]} alone: {type(e).__name__}: {e}", flush=True)
                cache[key] = None
        rows.append({"name": c.name, "family": c.family, "key": key, "fused_into": c.fused_into,
                     "predicted_ms": float(pred), "measured_ms": cache[key]})
    return rows


def price_both(tm, calls, rows) -> tuple[float, float]:
    """The network priced through the model's composition with the layer models' standalone times and with
    the measured ones (a layer that could not be timed alone keeps its predicted time in both)."""
    pred = [None if r is None else r["predicted_ms"] for r in rows]
    meas = [None if r is None else (r["measured_ms"] if r["measured_ms"] is not None else r["predicted_ms"])
            for r in rows]
    return tm.compose(tm.network_terms(calls, pred)), tm.compose(tm.network_terms(calls, meas))


def label_noise(store, backend, n: int, seed: int, policy: TimingPolicy) -> list[dict]:
    """`n` of the store's layer rows, each timed twice now (two passes over the sample)."""
    rows = list(store.measurements(kind="layer"))
    pick = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))[:n]]
    out = [{"family": m.family, "key": m.config_key, "stored_ms": m.median_ms, "now_ms": []} for m in pick]
    for _ in range(2):
        for m, o in zip(pick, out):
            o["now_ms"].append(time_layer(backend, LayerConfig(m.family, m.config), policy).median_ms)
    return out


def measure_all(args) -> dict:
    torch.set_num_threads(args.threads)
    backend = get_backend(args.backend, threads=args.threads)
    policy = TimingPolicy()
    t0 = time.monotonic()
    with Store.open(args.db) as store:
        tm = fit_time_model(store, seed=args.seed, holdout=0.0)
        keep = set(args.styles.split(",")) if args.styles else None
        nets = [(name, style, "held-out", m.eval(), x, None) for name, style, m, x in heldout_networks(backend=args.backend)
                if keep is None or style in keep]
        nets += [(f"random-{style}-{i}", style, "random", build_network(spec), example_input(spec), ms)
                 for i, (style, spec, ms) in enumerate(pick_random(store, tm.device, args.random_per_style, args.seed))
                 if keep is None or style in keep]
        noise = label_noise(store, backend, args.noise, args.seed, policy) if args.noise else []
    records, cache = [], {}
    with NetworkTimer(backend, threads=args.threads) as timer:
        for name, style, group, m, x, stored in nets:
            _, calls = tm.extract(m, (x,))
            rows = layer_times(tm, backend, calls, cache, policy)
            model_ms, with_measured_ms = price_both(tm, calls, rows)
            try:
                now = timer.time([m], [x], rounds=NETWORK_ROUNDS)[0].median_ms
            except Exception as e:  # noqa: BLE001 - reported as not measured
                print(f"  {name}: cannot time the network: {type(e).__name__}: {e}", flush=True)
                now = None
            records.append({"network": name, "style": style, "group": group, "measured_ms": now, "stored_ms": stored,
                            "model_ms": model_ms, "with_measured_layers_ms": with_measured_ms, "calls": rows})
            print(f"{name:32s} measured {now}  model {model_ms:.4f}  with measured layers {with_measured_ms:.4f}  "
                  f"t={time.monotonic() - t0:.0f}s", flush=True)
    return {"backend": args.backend, "db": str(args.db), "seed": args.seed, "threads": args.threads,
            "commit": code_version(), "processor": cpu_model() or platform.processor(),
            "torch": torch.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
            "seconds": round(time.monotonic() - t0), "command": " ".join(sys.argv),
            "networks": records, "label_noise": noise}


# ------------------------------------------------------------------------------ report


def _within(errors) -> dict:
    e = np.abs(np.asarray(errors, float))
    if not e.size:
        return {"n": 0}
    return {"n": int(e.size), "within_10pct": round(float(np.mean(e < 0.1)), 3),
            "median_abs_pct": round(float(np.median(e)) * 100, 1)}


def summarise(run: dict) -> dict:
    """The figures of one backend's measurement (see the module doc)."""
    nets = [r for r in run["networks"] if r["measured_ms"]]
    held = [r for r in nets if r["group"] == "held-out"]
    groups = {"held-out: all": held}
    for style in sorted({r["style"] for r in held}):
        groups[f"held-out: {style}"] = [r for r in held if r["style"] == style]
    groups["random networks"] = [r for r in nets if r["group"] == "random"]
    rows = []
    for g, rs in groups.items():
        model = _within([r["model_ms"] / r["measured_ms"] - 1 for r in rs])
        meas = _within([r["with_measured_layers_ms"] / r["measured_ms"] - 1 for r in rs])
        sums = [sum(c["measured_ms"] or c["predicted_ms"] for c in r["calls"] if c) / r["measured_ms"] for r in rs]
        rows.append({"group": g, "n": len(rs), "model_within_10pct": model.get("within_10pct"),
                     "model_median_abs_pct": model.get("median_abs_pct"),
                     "measured_layers_within_10pct": meas.get("within_10pct"),
                     "measured_layers_median_abs_pct": meas.get("median_abs_pct"),
                     "standalone_sum_over_network": round(float(np.median(sums)), 2) if sums else None})
    layers: dict[str, dict] = {}
    for r in nets:
        for c in r["calls"]:
            if c and c["measured_ms"]:
                layers.setdefault(c["family"], {})[c["key"]] = c["predicted_ms"] / c["measured_ms"] - 1
    fam_rows = []
    for fam, errs in sorted(layers.items()):
        e = np.asarray(list(errs.values()))
        fam_rows.append({"family": fam, "configurations": len(e), **{k: v for k, v in _within(e).items() if k != "n"},
                         "median_error_pct": round(float(np.median(e)) * 100, 1)})
    drift = [r["measured_ms"] / r["stored_ms"] for r in nets if r["stored_ms"]]
    noise = {}
    if run.get("label_noise"):
        a = np.array([[x["stored_ms"], *x["now_ms"]] for x in run["label_noise"]], float)
        passes = np.abs(a[:, 1] / a[:, 2] - 1)
        scale = float(np.median(a[:, 1] / a[:, 0]))
        stored = np.abs(a[:, 1] / (a[:, 0] * scale) - 1)
        noise = {"rows": len(a), "pass_to_pass": _within(passes), "now_over_stored": round(scale, 3),
                 "stored_vs_now_after_scale": _within(stored)}
    return {"backend": run["backend"], "groups": rows, "layer_families": fam_rows,
            "random_now_over_stored": round(float(np.median(drift)), 3) if drift else None, "label_noise": noise}


def report(paths: list[Path], out: Path, name: str) -> dict:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    summaries = [summarise(r) for r in runs]
    lines = ["# Where the network error comes from: layer models or composition", "",
             "`bench/error_sources.py` (see its doc). Each network is priced by the store's all-styles time model "
             "twice: with its layer models (what `predict_network` returns) and with every priced layer's standalone "
             "time measured, through the same composition. Both are compared with the network measured by the network "
             "timer right after its layers. The held-out architectures were never used in fitting; the random networks "
             "are the store's own (in the composition's fit).", ""]
    for run, s in zip(runs, summaries):
        lines += [f"## {s['backend']}", "",
                  f"Commit {run['commit']}, {run['date']}, {run['processor']}, {run['threads']} thread(s), torch "
                  f"{run['torch']}, store `{run['db']}`, fit seed {run['seed']}, {run['seconds']} s. The store's random "
                  f"networks now run {s['random_now_over_stored']}x the time the profile stored (the host's drift; "
                  f"the model prices as stored).", "",
                  markdown_table(s["groups"]), "", "Layer models on the layers of these networks (each configuration "
                  "once; error = predicted / measured standalone - 1):", "", markdown_table(s["layer_families"]), ""]
        if s["label_noise"]:
            n = s["label_noise"]
            lines += [f"Label repeatability: {n['rows']} store rows timed twice now: pass to pass median "
                      f"{n['pass_to_pass']['median_abs_pct']}% ({n['pass_to_pass']['within_10pct']:.0%} within 10%); "
                      f"against the stored medians (scaled by the median now/stored ratio {n['now_over_stored']}) "
                      f"{n['stored_vs_now_after_scale']['median_abs_pct']}% "
                      f"({n['stored_vs_now_after_scale']['within_10pct']:.0%} within 10%).", ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text("\n".join(lines))
    payload = {"runs": [{k: v for k, v in r.items() if k != "networks"} | {"networks": [
        {k: v for k, v in n.items() if k != "calls"} for n in r["networks"]]} for r in runs], "summaries": summaries}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1))
    return payload


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--backend", required=True)
    m.add_argument("--db", type=Path, required=True)
    m.add_argument("--out", type=Path, required=True, help="raw measurements (JSON)")
    m.add_argument("--random-per-style", type=int, default=4)
    m.add_argument("--noise", type=int, default=0, help="store rows to time twice (label repeatability)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--styles", help="only these styles (comma-separated; default: all)")
    r = sub.add_parser("report")
    r.add_argument("runs", nargs="+", type=Path)
    r.add_argument("--out", type=Path, default=OUT)
    r.add_argument("--name", default="error_sources")
    args = ap.parse_args(argv)
    if args.cmd == "measure":
        if not args.db.is_file():
            print(f"error: {args.db}: no such store", file=sys.stderr)
            return 2
        if args.out.exists():
            print(f"error: {args.out} exists; name another file (raw measurements are never overwritten)", file=sys.stderr)
            return 2
        run = measure_all(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(run))
        print(f"wrote {args.out}")
        return 0
    missing = [p for p in args.runs if not p.is_file()]
    if missing:
        print(f"error: {missing[0]}: no such measurement file", file=sys.stderr)
        return 2
    for p in args.runs:
        try:
            run = json.loads(p.read_text())
            ok = isinstance(run, dict) and isinstance(run.get("networks"), list) and "backend" in run
        except (UnicodeDecodeError, json.JSONDecodeError):
            ok = False
        if not ok:
            print(f"error: {p}: not a measurement file of `error_sources.py measure`", file=sys.stderr)
            return 2
    outputs = {(args.out / f"{args.name}{ext}").resolve() for ext in (".md", ".json")}
    clash = [p for p in args.runs if p.resolve() in outputs]
    if clash:
        print(f"error: the report would overwrite its input {clash[0]}; give another --name or --out", file=sys.stderr)
        return 2
    report(args.runs, args.out, args.name)
    print(f"wrote {args.out / args.name}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
