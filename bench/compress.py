"""Compression benchmark: ours against external baselines at matched accuracy, over seeds, per task and backend.

    .venv/bin/python bench/compress.py --task har --backend torch-cpu,onnxruntime-cpu \
        --time-model runs/bench/torch-cpu.timemodel.json,runs/bench/onnxruntime-cpu.timemodel.json \
        [--seeds 3] [--budgets 0.5,1.0] [--out docs/results]

One run serves several backends (`--backend` and `--time-model` are matched lists): only ours depends on
the time model, so ours runs once per backend, every other method once, and every network is timed on
every backend; each backend gets its own entry (its ours, the shared baselines).

For each seed (fine-tuning shuffles, pruning and training from scratch all seeded; the checkpoint is the same):
  ours          compress() at each accuracy budget (validation points), returning a uniformly narrower network
                when one is predicted faster at as high a validation accuracy (--compare-uniform); its optimizer
                steps (those fine-tunes included) are the budget
  flops-ablation  the same search ranked by FLOPs (what the time model adds; excluded from the verdict)
  netadapt-flops  our search, FLOPs cost, width moves only (NetAdapt), at each accuracy budget
  torch-pruning-{l1,taylor}-{uniform,global}  at each of --ratios, iterative (--iterative-steps)
  width-scratch   width multipliers --widths from scratch, task recipe (or the budget if longer) + distillation
  control       the original given ours' final fine-tune (how far fine-tuning alone moves test accuracy)
Every baseline gets the largest number of optimizer steps any of ours' runs took on that seed (equal budgets,
counted in optimizer steps; `compression.baselines`), distils from the original, has BatchNorm folded, and
every network is timed together at the end with the one network timer (`search.measure_models`).

The verdict (`compression.verdict.verdict`): per method and seed, the fastest point of the method's Pareto
front within X points of the original's *test* accuracy (the original's time if none), mean over seeds with a
t interval, ratio ours / best external baseline with a bootstrap interval over seeds; X = each --verdict-drops.

Seeds may be split over processes (one per core) whose networks are timed later, all together, on a quiet machine:
`--seed-list 0,1 --defer-timing --out runs/a`, `--seed-list 2 --defer-timing --out runs/b`, then
`bench/compress.py --merge runs/a/part.pt runs/b/part.pt --out docs/results` (training two processes at once is
fine; timing while another process trains is not: on this VM a busy sibling vCPU slows a measurement).

Writes <out>/compress.json (one entry per task x backend, every point with its seed and settings),
<out>/compress.md (tables naming the commit) and <out>/compress_<task>_<backend>.png (points, and time at
matched accuracy with intervals). A smoke run belongs under runs/, not docs/results (--out).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from _provenance import code_version

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
TP = ("torch-pruning-l1-uniform", "torch-pruning-l1-global", "torch-pruning-taylor-uniform",
      "torch-pruning-taylor-global")
NOT_BASELINES = ("flops-ablation", "control")  # reported, not external baselines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task")
    ap.add_argument("--backend", help="backend(s), comma-separated")
    ap.add_argument("--time-model", help="one time model per backend, comma-separated, same order")
    ap.add_argument("--checkpoint")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per method (>= 3 for an interval worth the name)")
    ap.add_argument("--seed-list", help="these seeds instead of 0..seeds-1 (comma-separated; to split seeds over processes)")
    ap.add_argument("--defer-timing", action="store_true", help="save the networks to <out>/part.pt instead of timing "
                    "them (time them with --merge, on a quiet machine, with the other seeds' parts)")
    ap.add_argument("--merge", nargs="+", metavar="PART", help="time and judge the part.pt files of --defer-timing runs "
                    "(over different seeds) together, writing to --out")
    ap.add_argument("--budgets", default="0.5,1.0", help="ours' and NetAdapt's accuracy budgets (validation points)")
    ap.add_argument("--ratios", default="0.3,0.5,0.7", help="torch-pruning ratios (share of channels removed)")
    ap.add_argument("--widths", default="0.25,0.5,0.75", help="width multipliers trained from scratch")
    ap.add_argument("--methods", default="all", help="comma list of methods to run (ours runs unless --budget-from)")
    ap.add_argument("--budget-from", nargs="+", metavar="PART", help="more baselines for the seeds of an earlier --defer-timing "
                    "run: ours is not run again, each seed's budget is that run's (merge the two parts)")
    ap.add_argument("--finetune-steps", type=int, default=100)
    ap.add_argument("--final-epochs", type=float, default=8.0)
    ap.add_argument("--max-iters", type=int, default=10)
    ap.add_argument("--compare-uniform", default="0.25,0.5,0.75",
                    help="ours: width multipliers of uniformly narrower networks it must beat (CompressConfig.compare_uniform)")
    ap.add_argument("--compare-scratch", action="store_true",
                    help="ours: also networks trained from scratch at the found architectures (CompressConfig.compare_scratch)")
    ap.add_argument("--no-train-guard", action="store_true",
                    help="searches (ours, the ablation, NetAdapt) without the training guard (CompressConfig.train_guard)")
    ap.add_argument("--max-divergence", type=float, help="ours: the fidelity budget (CompressConfig.max_divergence, nats)")
    ap.add_argument("--iterative-steps", type=int, default=4, help="torch-pruning's pruning steps")
    ap.add_argument("--recipe-epochs", type=int, help="width-scratch epochs instead of the task recipe's (smoke only)")
    ap.add_argument("--no-distill", dest="distill", action="store_false")
    ap.add_argument("--verdict-drops", default="0.5,1.0", help="test-accuracy drops the verdict is taken at")
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds over all models (min of medians)")
    ap.add_argument("--out", default=str(OUT), help="folder for compress.json/.md/.png (smoke runs: runs/...)")
    args = ap.parse_args(argv)
    drops = [float(v) for v in args.verdict_drops.split(",")]
    if args.merge:
        return merge(args.merge, Path(args.out), drops, args.rounds)
    if not (args.task and args.backend and args.time_model):
        ap.error("--task, --backend and --time-model are required (unless --merge)")
    seeds = [int(v) for v in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    torch.set_num_threads(1)

    from fastdeepiot import checkpoints, tasks
    from fastdeepiot.compression.baselines import run_baseline
    from fastdeepiot.compression.config import CompressConfig
    from fastdeepiot.compression.cost import FlopsCost, TimeCost
    from fastdeepiot.compression.finetune import divergence, finetune, outputs
    from fastdeepiot.compression.search import compress
    from fastdeepiot.timemodel.model import TimeModel

    t0, code = time.time(), code_version()  # the code this run starts with (the tree may move while it runs)
    t = tasks.get(args.task)
    ckpt = Path(args.checkpoint) if args.checkpoint else next(
        p for p in (ROOT / f"runs/compress/{t.name}.pt", ROOT / f"runs/bench-tasks/{t.name}.pt") if p.exists())
    model, _ = checkpoints.load_checkpoint(ckpt, task=t)
    backends, tm_paths = args.backend.split(","), args.time_model.split(",")
    if len(backends) != len(tm_paths):
        print("error: give one --time-model per --backend", file=sys.stderr)
        return 2
    tms = [TimeModel.load(p) for p in tm_paths]
    for b, tm in zip(backends, tms):
        if tm.backend != b:
            print(f"warning: time model fitted on {tm.backend}, timing on {b}", file=sys.stderr)
    want = None if args.methods == "all" else set(args.methods.split(","))
    run = (lambda m: want is None or m in want)
    prior = None  # --budget-from: {seed: ours' largest optimizer steps} of the earlier run
    if args.budget_from:
        prior = {}
        for path in args.budget_from:
            for p in torch.load(path, weights_only=False)["points"]:  # our own bench's file
                if p["method"] == "ours":
                    prior[p["seed"]] = max(prior.get(p["seed"], 0), p["optimizer_steps"])
        if set(seeds) - set(prior):
            print(f"error: --budget-from has no ours run for seed(s) {sorted(set(seeds) - set(prior))}",
                  file=sys.stderr)
            return 2
    budgets = [float(v) for v in args.budgets.split(",") if v]
    ratios = [float(v) for v in args.ratios.split(",") if v]
    widths = [float(v) for v in args.widths.split(",") if v]
    _, va, te = t.loaders(batch_size=64, seed=0)
    x = next(iter(va))[0][:1]
    tcosts, fcost = [TimeCost(tm) for tm in tms], FlopsCost()
    models, points = [], []  # every model is timed at the end, together, on every backend
    base_out = outputs(model, va)  # the original's validation outputs: each network's divergence from them

    def add(method, seed, m, setting, extra=None, backend=None):
        # backend: the one backend a point belongs to (ours, searched with that backend's time model);
        # None: every backend's entry shows it
        r = {"method": method, "seed": seed, "setting": setting, "backend": backend,
             "predicted_ms": {b: c.price(m, x) for b, c in zip(backends, tcosts)},
             "mflops": fcost.price(m, x), "params": sum(p.numel() for p in m.parameters()),
             "val_accuracy": 100 * t.metric(m, va), "test_accuracy": 100 * t.metric(m, te),
             "val_divergence": divergence(base_out, outputs(m, va))}
        r.update(extra or {})
        models.append(copy.deepcopy(m).eval())
        points.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("plan", "notes")}, default=str), flush=True)

    def failed(method, seed, setting, e):
        tb = traceback.extract_tb(e.__traceback__)[-1]
        points.append({"method": method, "seed": seed, "setting": setting,
                       "failed": f"{type(e).__name__}: {str(e)[:160]} (at {Path(tb.filename).name}:{tb.lineno})"})
        print("failed:", method, setting, points[-1]["failed"], flush=True)

    kw = dict(finetune_steps=args.finetune_steps, final_epochs=args.final_epochs, max_iters=args.max_iters,
              distill=args.distill, measure=False, train_guard=not args.no_train_guard)
    add("original", seeds[0], model, "checkpoint")  # one network, timed once, the same point on every seed
    for seed in seeds:
        budget = 0 if prior is None else prior[seed]
        for b in budgets:
            # ours once per backend (its time model), the FLOPs ablation once (it never asks a time model)
            runs = [("ours", "time", bk, tm) for bk, tm in zip(backends, tms)] if prior is None else []
            runs += [("flops-ablation", "flops", None, tms[0])] if run("flops-ablation") else []
            for method, cost, bk, tm in runs:
                s0 = time.time()
                best_of = tuple(float(v) for v in args.compare_uniform.split(",") if v) if method == "ours" else ()
                res = compress(model, t, time_model=tm, max_accuracy_drop=b, cost=cost, seed=seed, progress=False,
                               compare_uniform=best_of, compare_scratch=args.compare_scratch and method == "ours",
                               max_divergence=args.max_divergence if method == "ours" else None, **kw)
                steps = res.run["optimizer_steps"]
                if method == "ours":
                    budget = max(budget, steps)
                add(method, seed, res.model, f"budget {b:g}", {"optimizer_steps": steps, "run_s": time.time() - s0,
                                                             "plan": "; ".join(res.plan.summary()), "notes": res.notes,
                                                             "compared": res.run["compared"]},
                    backend=bk)
        cfg = CompressConfig(max_accuracy_drop=budgets[0], seed=seed, **kw)
        common = dict(budget_steps=budget, time_model=tms[0], config=cfg, measure=False, example_input=x)
        if run("control"):
            m = copy.deepcopy(model)
            final_steps = int(round(args.final_epochs * len(t.loaders(batch_size=cfg.batch_size, seed=seed)[0])))
            finetune(m, t.loaders(batch_size=cfg.batch_size, seed=seed)[0], final_steps,
                     teacher=copy.deepcopy(model).eval() if args.distill else None, seed=seed)
            add("control", seed, m, f"{args.final_epochs:g} epochs", {"optimizer_steps": final_steps})
        jobs = ([("netadapt-flops", dict(max_accuracy_drop=b), f"budget {b:g}") for b in budgets]
                + [(mth, dict(ratio=r, iterative_steps=args.iterative_steps), f"ratio {r:g}") for mth in TP for r in ratios]
                + [("width-scratch", dict(ratio=1 - w, recipe_epochs=args.recipe_epochs), f"width {w:g}") for w in widths])
        for method, extra, setting in jobs:
            if not run(method):
                continue
            s0 = time.time()
            try:
                res = run_baseline(method, model, t, **common, **extra)
            except Exception as e:  # noqa: BLE001 - a baseline that fails is recorded, as the issue asks
                failed(method, seed, setting, e)
                continue
            add(method, seed, res.model, setting, {"optimizer_steps": res.settings["optimizer_steps"],
                                                  "budget_steps": budget, "run_s": time.time() - s0,
                                                  "notes": res.notes})

    run_meta = {"task": t.name, "backends": backends, "time_models": tm_paths, "checkpoint": str(ckpt),
                "code": code, "settings": vars(args), "elapsed_s": time.time() - t0, "seeds": seeds}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.defer_timing:  # timed later, with the other parts' networks (--merge)
        part = out / "part.pt"
        torch.save({"meta": run_meta, "points": points, "models": models, "x": x}, part)
        print(f"elapsed {time.time() - t0:.0f} s; wrote {part} (not timed yet: --merge it)")
        return 0
    return write_results([(run_meta, points, models)], x, out, drops, args.rounds)


def write_results(parts: list[tuple[dict, list, list]], x: torch.Tensor, out: Path, drops: list[float],
                  rounds: int) -> int:
    """Time every network of every part on each backend, together (one timing process per backend,
    interleaved rounds), judge, and write compress.json/.md and the plots. A part: (run meta, points,
    the networks of its points that did not fail, in order)."""
    from fastdeepiot.compression.search import measure_models

    meta = parts[0][0]
    seeds = sorted({s for m, _, _ in parts for s in m["seeds"]})
    keys = [(p["method"], p["seed"], p["setting"], p["backend"]) for _, points, _ in parts for p in points
            if p["method"] != "original"]
    if len(set(keys)) != len(keys) or any((m["task"], m["backends"]) != (meta["task"], meta["backends"])
                                          for m, _, _ in parts):
        print("error: the parts must be runs of one task and backends, no method run twice on a seed", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "compress.json"
    data = json.loads(jpath.read_text()) if jpath.exists() else {"entries": []}
    for bk, tm_path in zip(meta["backends"], meta["time_models"]):
        per_part = []  # (run meta, [(point for this backend, its network or None)])
        for m, points, models in parts:
            nets = iter(models)
            pairs = [(p, None if "failed" in p else next(nets)) for p in points]
            per_part.append((m, [(dict(p, backend=bk, predicted_ms=p["predicted_ms"][bk]) if net is not None
                                  else dict(p), net) for p, net in pairs if p["backend"] in (None, bk)]))
        timed = [(p, net) for _, pairs in per_part for p, net in pairs if net is not None]
        for (p, _), ms in zip(timed, measure_models([net for _, net in timed], x, bk, rounds=rounds)):
            p["measured_ms"] = ms
        mine, covered = [], set()
        for m, pairs in per_part:
            part = [p for p, _ in pairs]
            part[1:1] = [dict(part[0], seed=s) for s in m["seeds"][1:]]  # the original, on every seed
            mine += [p for p in part if p["method"] != "original" or p["seed"] not in covered]
            covered |= set(m["seeds"])
        entry = judged({"task": meta["task"], "backend": bk, "checkpoint": meta["checkpoint"], "time_model": tm_path,
                        "code": meta["code"], "settings": dict(meta["settings"], seeds=len(seeds)),
                        "elapsed_s": max(m["elapsed_s"] for m, _, _ in parts),
                        "parts": [{"code": m["code"], "seeds": m["seeds"], "elapsed_s": m["elapsed_s"]}
                                  for m, _, _ in parts],
                        "points": mine}, drops)
        data["entries"] = [e for e in data.get("entries", []) if "points" in e and
                           (e["task"], e["backend"]) != (meta["task"], bk)] + [entry]
        plot(entry, out / f"compress_{meta['task']}_{bk}.png")
        for v in entry["verdicts"]:
            print(bk, json.dumps({k: v[k] for k in ("max_drop", "ours_ms", "best_baseline", "best_baseline_ms",
                                                    "ratio", "ratio_ci", "meets_bar", "meets_bar_ci")}, default=float))
    jpath.write_text(json.dumps(data, indent=1, default=float))
    write_md(data, out / "compress.md")
    print(f"wrote {jpath}, {out / 'compress.md'}")
    return 0


def judged(entry: dict, drops: list[float]) -> dict:
    """`entry` with its verdicts (at each drop) and curves computed from its points."""
    from fastdeepiot.compression.verdict import curves, verdict

    good = [p for p in entry["points"] if "failed" not in p]
    grid = sorted({0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, *drops})
    return dict(entry, verdicts=[verdict(good, max_drop=d, exclude=NOT_BASELINES) for d in drops],
                curves=curves(good, grid))


def merge(paths: list[str], out: Path, drops: list[float], rounds: int) -> int:
    """Time and judge the parts written by --defer-timing runs (over different seeds) together."""
    parts, x = [], None
    for path in paths:
        d = torch.load(path, weights_only=False)  # our own bench's file: networks pickled whole
        parts.append((d["meta"], d["points"], d["models"]))
        x = d["x"]
    return write_results(parts, x, out, drops, rounds)




COLORS = {"ours": "tab:red", "original": "black", "control": "grey", "flops-ablation": "tab:blue",
          "netadapt-flops": "tab:cyan", "width-scratch": "tab:green", "torch-pruning-l1-uniform": "tab:orange",
          "torch-pruning-l1-global": "tab:brown", "torch-pruning-taylor-uniform": "tab:purple",
          "torch-pruning-taylor-global": "tab:pink"}


def plot(entry, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for p in entry["points"]:
        if "failed" in p:
            continue
        a1.plot(p["measured_ms"], p["test_accuracy"], "*" if p["method"] == "ours" else "o",
                color=COLORS.get(p["method"], "tab:olive"), ms=9 if p["method"] == "ours" else 5, alpha=0.8)
    for m, c in COLORS.items():
        if any(p["method"] == m for p in entry["points"] if "failed" not in p):
            a1.plot([], [], "o", color=c, label=m)
    a1.set_xlabel(f"measured ms ({entry['backend']}, batch 1, 1 thread)")
    a1.set_ylabel("test accuracy (%)")
    a1.set_title(f"{entry['task']}: every network, every seed")
    a1.legend(fontsize=6)
    a1.grid(alpha=0.3)
    for m, pts in entry["curves"].items():
        if m == "original":
            continue
        xs = [p["max_drop"] for p in pts]
        ys = [p["ms"] for p in pts]
        a2.plot(xs, ys, "-o", ms=3, color=COLORS.get(m, "tab:olive"), label=m, lw=2.2 if m == "ours" else 1.2)
        lo = [p["ms_ci"][0] if p["ms_ci"] else p["ms"] for p in pts]
        hi = [p["ms_ci"][1] if p["ms_ci"] else p["ms"] for p in pts]
        a2.fill_between(xs, lo, hi, color=COLORS.get(m, "tab:olive"), alpha=0.15)
    a2.set_xlabel("test-accuracy drop allowed (points)")
    a2.set_ylabel("ms of the fastest network within it (mean over seeds, 90% CI)")
    a2.set_title(f"time at matched accuracy; code {entry['code']}")
    a2.legend(fontsize=6)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ci(ci, fmt="{:.4f}"):
    return "-" if not ci else f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def write_md(data, path):
    lines = ["# Compression results", "",
             "Generated by `bench/compress.py` (see its docstring). Measured ms: batch 1, 1 thread. Drops: test-accuracy "
             "points against the original checkpoint. Times at matched accuracy, intervals over seeds "
             "(`compression.verdict`).", ""]
    for e in data["entries"]:
        s = e["settings"]
        lines += [f"## {e['task']} on {e['backend']}", "",
                  f"code **{e['code']}**; time model `{e['time_model']}`; checkpoint `{e['checkpoint']}`; seeds "
                  f"{s['seeds']}; final fine-tune {s['final_epochs']:g} epochs, {s['finetune_steps']} steps per "
                  f"candidate; {e['elapsed_s'] / 60:.0f} min", ""]
        if e.get("parts"):
            lines += ["Runs merged (`--merge`; every network timed together afterwards, on a quiet machine): "
                      + "; ".join(f"seeds {', '.join(map(str, pt['seeds']))} at {pt['code']} "
                                  f"({pt['elapsed_s'] / 60:.0f} min)" for pt in e["parts"]), ""]
        if e.get("note"):
            lines += [e["note"], ""]
        lines += [
                  "| drop <= | ours ms [CI] | best baseline | its ms [CI] | ratio [CI] | bar met (point / CI) |",
                  "|---|---|---|---|---|---|"]
        for v in e["verdicts"]:
            r = "-" if v["ratio"] is None else f"{v['ratio']:.2f} {_ci(v['ratio_ci'], '{:.2f}')}"
            lines.append(f"| {v['max_drop']:g} | {'-' if v['ours_ms'] is None else format(v['ours_ms'], '.4f')} "
                         f"{_ci(v['ours_ci'])} | {v['best_baseline']} | "
                         f"{'-' if v['best_baseline_ms'] is None else format(v['best_baseline_ms'], '.4f')} "
                         f"{_ci(v['best_baseline_ci'])} | {r} | {v['meets_bar']} / {v['meets_bar_ci']} |")
        v = e["verdicts"][0]
        lines += ["", f"Time at <= {v['max_drop']:g} points, every method:", "", "| method | ms per seed | mean [CI] |",
                  "|---|---|---|"]
        for m, d in sorted(v["methods"].items(), key=lambda kv: kv[1]["ms"]):
            lines.append(f"| {m} | {', '.join(f'{x:.4f}' for x in d['ms_by_seed'])} | {d['ms']:.4f} {_ci(d['ms_ci'])} |")
        lines += ["", "| method | seed | setting | measured ms | predicted ms | MFLOPs | params | test acc % | steps |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for p in e["points"]:
            if "failed" in p:
                lines.append(f"| {p['method']} | {p['seed']} | {p['setting']} | failed: {p['failed']} | | | | | |")
                continue
            lines.append(f"| {p['method']} | {p['seed']} | {p['setting']} | {p['measured_ms']:.4f} | "
                         f"{p['predicted_ms']:.4f} | {p['mflops']:.2f} | {p['params']} | {p['test_accuracy']:.2f} | "
                         f"{p.get('optimizer_steps', '')} |")
        lines += ["", f"![{e['task']} {e['backend']}](compress_{e['task']}_{e['backend']}.png)", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
