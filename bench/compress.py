"""Compression benchmark: ours vs baselines, measured time and test accuracy, per task and CPU backend.

    .venv/bin/python bench/compress.py --task har --backend torch-cpu \
        --time-model runs/bench/torch-cpu.timemodel.json [--budgets 0.5,1.0] [--rounds 5]

Writes / updates docs/results/compress.json (one entry per task x backend), compress.md and
compress_<task>_<backend>.png (Pareto: measured ms vs test accuracy). Methods:
  ours (time model, Taylor, all moves), flops-ablation (same pipeline, FLOPs as cost),
  torch-pruning uniform / global L1 at ours' FLOPs (failures recorded), width-scaled reference
  networks trained from scratch, and a control: the unpruned network given the same final fine-tune (how
  far fine-tuning alone moves test accuracy). Every pruned network gets the same fine-tuning budget
  (`--final-epochs`, distilled from the original unless `--no-distill`).
Accuracy drops are percentage points of *test* accuracy against the original checkpoint.
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

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--time-model", required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--budgets", default="0.5,1.0")
    ap.add_argument("--widths", default="0.25,0.5")
    ap.add_argument("--finetune-steps", type=int, default=100)
    ap.add_argument("--final-epochs", type=float, default=8.0)
    ap.add_argument("--no-distill", dest="distill", action="store_false",
                    help="fine-tune on labels only (default: distil from the original network too)")
    ap.add_argument("--max-iters", type=int, default=10)
    ap.add_argument("--scratch-epochs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds over all models (min of medians)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from fastdeepiot import checkpoints, tasks
    from fastdeepiot.compression.baselines import ratio_for_flops
    from fastdeepiot.compression.cost import FlopsCost, TimeCost
    from fastdeepiot.compression.finetune import finetune
    from fastdeepiot.compression.search import compress, measure_models
    from fastdeepiot.timemodel.model import TimeModel

    t = tasks.get(args.task)
    ckpt = args.checkpoint or next(p for p in (ROOT / f"runs/compress/{t.name}.pt", ROOT / f"runs/bench-tasks/{t.name}.pt")
                                   if p.exists())
    model, meta = checkpoints.load_checkpoint(ckpt, task=t)
    tm = TimeModel.load(args.time_model)
    tr, va, te = t.loaders(batch_size=64, seed=0)
    x = next(iter(va))[0][:1]
    tcost, fcost = TimeCost(tm), FlopsCost()

    models = []  # (row, module): every model is timed at the end, together (measure_models)

    def row(method, m, budget=None, note=None, extra=None):
        r = {"method": method, "budget": budget, "predicted_ms": tcost.price(m, x), "mflops": fcost.price(m, x),
             "params": sum(p.numel() for p in m.parameters()),
             "val_accuracy": 100 * t.metric(m, va), "test_accuracy": 100 * t.metric(m, te), "note": note}
        r.update(extra or {})
        models.append((r, copy.deepcopy(m).eval()))
        print(json.dumps(r), flush=True)
        return r

    rows = [row("original", model)]
    base_test = rows[0]["test_accuracy"]
    kw = dict(finetune_steps=args.finetune_steps, final_epochs=args.final_epochs, max_iters=args.max_iters,
              distill=args.distill, measure=False, seed=0)
    final_steps = int(round(args.final_epochs * len(tr)))
    teacher = copy.deepcopy(model).eval() if args.distill else None
    # control: the unpruned network given the same final fine-tune -- how far fine-tuning alone moves
    # test accuracy (the noise floor under every pruned row)
    m = copy.deepcopy(model)
    finetune(m, tr, final_steps, teacher=teacher, seed=0)
    rows.append(row("original, fine-tuned (control)", m, None, f"{args.final_epochs:g} epochs"))
    ours_flops = {}
    for b in [float(v) for v in args.budgets.split(",")]:
        for method, cost in (("ours", "time"), ("flops-ablation", "flops")):
            t0 = time.time()
            res = compress(model, t, time_model=tm, max_accuracy_drop=b, cost=cost, **kw)
            r = row(method, res.model, b, "; ".join(res.plan.summary()),
                    {"search_s": time.time() - t0, "notes": res.notes})
            rows.append(r)
            if method == "ours":
                ours_flops[b] = r["mflops"]
    for b, mf in ours_flops.items():
        for glob in (False, True):
            name = f"torch-pruning {'global' if glob else 'uniform'} L1"
            try:
                ratio, m = ratio_for_flops(model, x, mf, global_pruning=glob)
                finetune(m, tr, final_steps, teacher=teacher, seed=0)
                rows.append(row(name, m, b, f"ratio {ratio:.3f} to reach {mf:.2f} MFLOPs"))
            except Exception as e:  # noqa: BLE001 - record the failure, as the issue asks
                msg = f"{type(e).__name__}: {str(e)[:160]}"
                tb = traceback.extract_tb(e.__traceback__)[-1]
                rows.append({"method": name, "budget": b, "failed": f"{msg} (at {Path(tb.filename).name}:{tb.lineno})"})
                print("failed:", name, msg, flush=True)
    for w in [float(v) for v in args.widths.split(",")]:
        m = t.make_model(width_mult=w)
        tasks.train(m, t, epochs=args.scratch_epochs, seed=0, progress=False, train_loader=tr, val_loader=va)
        rows.append(row(f"width x{w:g} from scratch", m, None, f"{args.scratch_epochs} epochs"))

    # every model timed together, round-robin, in a process that runs only networks (measure_models)
    for (r, _), ms in zip(models, measure_models([m for _, m in models], x, args.backend, rounds=args.rounds)):
        r["measured_ms"] = ms
    entry = {"task": t.name, "backend": args.backend, "checkpoint": str(ckpt), "time_model": args.time_model,
             "code": code_version(), "settings": vars(args), "base_test_accuracy": base_test, "rows": rows, "verdict": verdict(rows, base_test)}
    OUT.mkdir(parents=True, exist_ok=True)
    jpath = OUT / "compress.json"
    data = json.loads(jpath.read_text()) if jpath.exists() else {"entries": []}
    data["entries"] = [e for e in data["entries"] if (e["task"], e["backend"]) != (t.name, args.backend)] + [entry]
    jpath.write_text(json.dumps(data, indent=1))
    plot(entry, OUT / f"compress_{t.name}_{args.backend}.png")
    write_md(data, OUT / "compress.md")
    print(json.dumps(entry["verdict"], indent=1))
    return 0


def code_version() -> str:
    """The commit the run used (`-dirty` when src/ had uncommitted changes), so that entries made by
    different versions of the pipeline can be told apart in one results file."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def verdict(rows, base_test, max_drop=0.5):
    ok = [r for r in rows if "failed" not in r and base_test - r["test_accuracy"] <= max_drop]
    ours = [r for r in ok if r["method"] == "ours"]
    others = [r for r in ok if r["method"] != "ours"]  # the original counts: it meets any budget
    b = min(others, key=lambda r: r["measured_ms"])
    if not ours:
        return {"max_test_drop": max_drop, "ours_ms": None, "best_baseline": b["method"],
                "best_baseline_ms": b["measured_ms"], "ratio": None, "meets_bar": False,
                "why": "no run of ours kept test accuracy within the budget"}
    o = min(ours, key=lambda r: r["measured_ms"])
    ratio = o["measured_ms"] / b["measured_ms"]
    return {"max_test_drop": max_drop, "ours_ms": o["measured_ms"], "best_baseline": b["method"],
            "best_baseline_ms": b["measured_ms"], "ratio": ratio, "meets_bar": ratio <= 0.6}


def plot(entry, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    marks = {"ours": "r*", "flops-ablation": "bo", "original": "ks"}
    for r in entry["rows"]:
        if "failed" in r:
            continue
        ax.plot(r["measured_ms"], r["test_accuracy"], marks.get(r["method"], "g^"), ms=10 if r["method"] == "ours" else 7)
        ax.annotate(r["method"] + (f" ({r['budget']:g})" if r.get("budget") is not None else ""),
                    (r["measured_ms"], r["test_accuracy"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"measured ms per inference ({entry['backend']}, batch 1, 1 thread)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{entry['task']}: time vs accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_md(data, path):
    lines = ["# Compression results", "",
             "Generated by `bench/compress.py` (see its docstring for the command). Measured ms: batch 1, 1 thread; "
             "accuracy drops in test-accuracy percentage points against the original checkpoint.", ""]
    for e in data["entries"]:
        lines += [f"## {e['task']} on {e['backend']}", "",
                  f"time model: `{e['time_model']}`; checkpoint `{e['checkpoint']}`; code {e.get('code', 'unknown')}; "
                  f"final fine-tune {e['settings']['final_epochs']:g} epochs", "",
                  "| method | budget (val pts) | measured ms | predicted ms | MFLOPs | params | test acc % | drop | plan / note |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in e["rows"]:
            if "failed" in r:
                lines.append(f"| {r['method']} | {r.get('budget')} | failed | | | | | | {r['failed']} |")
                continue
            lines.append(f"| {r['method']} | {'' if r.get('budget') is None else r['budget']} | {r['measured_ms']:.3f} | "
                         f"{r['predicted_ms']:.3f} | {r['mflops']:.2f} | {r['params']} | {r['test_accuracy']:.2f} | "
                         f"{e['base_test_accuracy'] - r['test_accuracy']:.2f} | {r.get('note') or ''} |")
        v = e["verdict"]
        def ms(k):
            return "none" if v.get(k) is None else f"{v[k]:.4f} ms"

        lines += ["", f"Verdict (<= {v['max_test_drop']} point test drop): ours {ms('ours_ms')}, best baseline "
                  f"{v.get('best_baseline')} {ms('best_baseline_ms')}, ratio "
                  f"{'none' if v.get('ratio') is None else format(v['ratio'], '.2f')}, "
                  f"bar (<= 0.6) met: {v['meets_bar']}" + (f" ({v['why']})" if v.get("why") else ""), "",
                  f"![{e['task']} {e['backend']}](compress_{e['task']}_{e['backend']}.png)", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
