"""Compression with few labels: acceptance on labels against acceptance on agreement with the original.

    .venv/bin/python bench/few_labels.py --checkpoint runs/bench-tasks/userid.pt \
        --time-model runs/cbench/torch-cpu.timemodel.json [--n-labelled 54] [--seeds 0,1] [--budgets 1.0,0.5] \
        [--finetune-steps 100] [--final-epochs 8] [--max-iters 8] [--out docs/results]

The validation split is subsampled to `--n-labelled` samples (stratified by class, seeded by --label-seed);
fine-tuning uses the whole training split (its labels and distillation from the original, as compress
always does), and the result is judged on the FULL test split. For each compress seed and accuracy budget
(validation points), compress runs with acceptance="labels" (the paired 90% bound on the small validation
split) and acceptance="agreement" (the 90% Wilson bound of top-1 disagreement with the original over the
agreement pool, plus the labelled check at the split's resolution; `compression.agreement`).

Per run: predicted ms (the time model), measured ms (compress's own measurement at the end, measure=True:
the original and the result timed together with the one network timer), test accuracy drop on the full test
split, the result's top-1 disagreement with the original on the test split, and the calibration record
(agreement: every final state's pool disagreement and bound next to its labelled drop on the small split);
for both acceptances the result's drop on the full validation split (what 501 labels would have said).

Writes <out>/few_labels.json (every run, its settings and the conditions) and <out>/few_labels.md, naming the
commit; the JSON is rewritten after every run, so an interrupted run keeps what it finished. A smoke run
belongs under runs/ (--out).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from _provenance import code_version

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"




def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` indices drawn without replacement, each class in proportion to its share (systematic
    stratification: a sample's key is (its rank in a random order of its class + a uniform offset) /
    class size; the n smallest keys), sorted."""
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keys[rng.permutation(idx)] = (np.arange(len(idx)) + rng.random()) / len(idx)
    return np.sort(np.argsort(keys, kind="stable")[:n])


def top1(model, loader) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(xb).argmax(1) for xb, _ in loader])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="userid")
    ap.add_argument("--checkpoint", default=str(ROOT / "runs" / "bench-tasks" / "userid.pt"))
    ap.add_argument("--time-model", default=str(ROOT / "runs" / "cbench" / "torch-cpu.timemodel.json"))
    ap.add_argument("--n-labelled", type=int, default=54, help="labelled validation samples kept")
    ap.add_argument("--label-seed", type=int, default=0, help="seed of the validation subsample")
    ap.add_argument("--seeds", default="0,1", help="compress seeds, comma-separated")
    ap.add_argument("--budgets", default="1.0,0.5", help="max_accuracy_drop values (validation points)")
    ap.add_argument("--acceptances", default="labels,agreement")
    ap.add_argument("--finetune-steps", type=int, default=100)
    ap.add_argument("--final-epochs", type=float, default=8.0)
    ap.add_argument("--max-iters", type=int, default=8)
    ap.add_argument("--conditions", default="", help="free text on the machine's state, written with the results")
    ap.add_argument("--out", default=str(OUT), help="folder for few_labels.json/.md (smoke runs: runs/...)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from torch.utils.data import DataLoader, Subset

    from fastdeepiot import checkpoints, tasks
    from fastdeepiot.compression.search import compress
    from fastdeepiot.timemodel.model import TimeModel

    t = tasks.get(args.task)
    model, _ = checkpoints.load_checkpoint(args.checkpoint, task=t)
    tm = TimeModel.load(args.time_model)
    _, va_full, te = t.datasets()
    idx = stratified_subset(va_full.y.numpy(), args.n_labelled, args.label_seed)
    val_small = DataLoader(Subset(va_full, idx.tolist()), batch_size=256)
    val_dl = DataLoader(va_full, batch_size=256)
    test_dl = DataLoader(te, batch_size=256)
    base_test_pred, base_val_pred = top1(model, test_dl), top1(model, val_dl)
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"commit": code_version(), "task": t.name, "checkpoint": args.checkpoint, "time_model": args.time_model,
            "backend": tm.backend, "n_labelled": len(idx), "label_seed": args.label_seed,
            "labelled_classes": int(len(np.unique(va_full.y.numpy()[idx]))), "n_val_full": len(va_full),
            "n_test": len(te), "settings": {"finetune_steps": args.finetune_steps, "final_epochs": args.final_epochs,
                                             "max_iters": args.max_iters, "seeds": seeds, "budgets": budgets},
            "conditions": args.conditions, "host": platform.node(), "torch": torch.__version__,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": []}
    t0 = time.time()
    for seed in seeds:
        for budget in budgets:
            for acc in args.acceptances.split(","):
                t1 = time.time()
                train_dl = t.loaders(batch_size=64, seed=seed)[0]
                res = compress(model, (train_dl, val_small, test_dl), time_model=tm, max_accuracy_drop=budget,
                               acceptance=acc, finetune_steps=args.finetune_steps, final_epochs=args.final_epochs,
                               max_iters=args.max_iters, seed=seed, measure=True, progress=False)
                test_pred, val_pred = top1(res.model, test_dl), top1(res.model, val_dl)
                val_full_drop = 100.0 * (float((base_val_pred == va_full.y).float().mean())
                                         - float((val_pred == va_full.y).float().mean()))
                b, f = res.base, res.final
                run = {"seed": seed, "budget": budget, "acceptance": acc,
                       "predicted_ms": [b.get("predicted_ms"), f.get("predicted_ms")],
                       "measured_ms": [b.get("measured_ms"), f.get("measured_ms")],
                       "test_accuracy": [b.get("test_accuracy"), f.get("test_accuracy")],
                       "test_drop": b["test_accuracy"] - f["test_accuracy"],
                       "test_disagreement": 100.0 * float((test_pred != base_test_pred).float().mean()),
                       "val_small_drop": b["val_accuracy"] - f["val_accuracy"], "val_full_drop": val_full_drop,
                       "pool_disagreement": f.get("pool_disagreement"), "drop_upper_bound": f.get("drop_upper_bound"),
                       "plan": res.plan.summary(), "pruned": bool(res.plan.steps), "notes": res.notes,
                       "history": res.history, "acceptance_record": res.run.get("acceptance"),
                       "optimizer_steps": res.run["optimizer_steps"], "elapsed_s": time.time() - t1}
                data["runs"].append(run)
                data["elapsed_s"] = time.time() - t0
                (out / "few_labels.json").write_text(json.dumps(data, indent=1, default=float))
                write_md(data, out / "few_labels.md")
                print(f"seed {seed} budget {budget} {acc}: {f.get('predicted_ms'):.4f} ms predicted "
                      f"(from {b.get('predicted_ms'):.4f}), test drop {run['test_drop']:.2f}, "
                      f"{run['elapsed_s']:.0f} s", flush=True)
    print(f"elapsed {time.time() - t0:.0f} s; wrote {out / 'few_labels.json'}, {out / 'few_labels.md'}")
    return 0


def _f(v, fmt="{:.3f}"):
    return "-" if v is None else fmt.format(v)


def write_md(data: dict, path: Path) -> None:
    s = data["settings"]
    lines = [
        "# Compression with few labels: labels against agreement acceptance", "",
        f"Generated by `bench/few_labels.py` at commit {data['commit']} ({data['started']}, torch {data['torch']}). "
        f"Task {data['task']}, checkpoint `{data['checkpoint']}`, time model `{data['time_model']}` "
        f"({data['backend']}). The validation split is cut to {data['n_labelled']} labelled samples "
        f"({data['labelled_classes']} classes, stratified, seed {data['label_seed']}) of {data['n_val_full']}; "
        f"fine-tuning uses the full training split; test figures are on the full test split "
        f"({data['n_test']} samples). Settings: finetune_steps {s['finetune_steps']}, final_epochs "
        f"{s['final_epochs']}, max_iters {s['max_iters']}, seeds {s['seeds']}, confidence 0.9, everything else "
        f"CompressConfig's default. Measured ms: compress's measurement at the end (measure=True: original and "
        f"result timed together, batch 1, 1 thread). Elapsed {data.get('elapsed_s', 0) / 60:.1f} min.",
        "", f"Conditions: {data['conditions'] or 'not given'}.", "",
        "Columns: predicted and measured ms of the result (the original's in the header row); test drop: the "
        "original's test accuracy minus the result's, points; test disagr.: share of test samples whose top-1 "
        "prediction differs from the original's; pool bound: the 90% upper bound of the disagreement on the "
        "agreement pool (agreement only); val drop (n): the labelled drop on the small validation split; val drop "
        "(full): on the whole validation split, which the run never saw.", "",
    ]
    runs = data["runs"]
    if runs:
        r0 = runs[0]
        lines.append(f"Original: predicted {_f(r0['predicted_ms'][0], '{:.4f}')} ms, measured "
                     f"{_f(r0['measured_ms'][0], '{:.4f}')} ms, test accuracy {_f(r0['test_accuracy'][0], '{:.2f}')}%.")
        lines.append("")
    lines += ["| budget | acceptance | seed | pruned | predicted ms | measured ms | test drop | test disagr. % | "
              "pool bound | val drop (n) | val drop (full) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['budget']:g} | {r['acceptance']} | {r['seed']} | {'yes' if r['pruned'] else 'no'} | "
                     f"{_f(r['predicted_ms'][1], '{:.4f}')} | {_f(r['measured_ms'][1], '{:.4f}')} | "
                     f"{r['test_drop']:+.2f} | {r['test_disagreement']:.2f} | {_f(r['drop_upper_bound'], '{:.2f}')} | "
                     f"{r['val_small_drop']:+.2f} | {r['val_full_drop']:+.2f} |")
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["budget"], r["acceptance"]), []).append(r)
    if groups:
        lines += ["", "Means over seeds:", "", "| budget | acceptance | runs | pruned | predicted ms | measured ms | "
                  "measured / original | test drop |", "|---|---|---|---|---|---|---|---|"]
        for (bud, acc), rs in groups.items():
            meas = [r["measured_ms"][1] / r["measured_ms"][0] for r in rs
                    if None not in r["measured_ms"]]
            lines.append(f"| {bud:g} | {acc} | {len(rs)} | {sum(r['pruned'] for r in rs)} | "
                         f"{np.mean([r['predicted_ms'][1] for r in rs]):.4f} | "
                         f"{_f(np.mean([r['measured_ms'][1] for r in rs]) if meas else None, '{:.4f}')} | "
                         f"{_f(np.mean(meas) if meas else None, '{:.2f}')} | "
                         f"{np.mean([r['test_drop'] for r in rs]):+.2f} |")
    cal = [(r, c) for r in runs if r.get("acceptance_record") for c in r["acceptance_record"]["calibration"]]
    if cal:
        lines += ["", "## Calibration (agreement runs: every final state judged)", "",
                  "Disagreement with the original, %: on the pool (and its 90% bound), on the labelled validation "
                  "inputs, on the noisy and mixed inputs, on raw training inputs (optimistic: distillation fits "
                  "them); the labelled drop on the small split with its paired 90% upper bound (what labels "
                  "acceptance tests) and lower bound (the labelled check: within the budget); whether the labelled "
                  "check and the state passed.", "",
                  "| budget | seed | state | pool | pool bound | val | noise | mixup | train | val drop | "
                  "val drop upper | val drop lower | labelled ok | accepted |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r, c in cal:
            lines.append(f"| {r['budget']:g} | {r['seed']} | {c['stage']} | {_f(c['pool_disagreement'], '{:.2f}')} | "
                         f"{c['drop_upper_bound']:.2f} | {_f(c['val_disagreement'], '{:.2f}')} | "
                         f"{_f(c['noise_disagreement'], '{:.2f}')} | {_f(c['mixup_disagreement'], '{:.2f}')} | "
                         f"{_f(c['train_disagreement'], '{:.2f}')} | {c['val_drop']:+.2f} | {c['val_drop_upper']:.2f} | "
                         f"{_f(c.get('val_drop_lower'), '{:.2f}')} | "
                         f"{'yes' if c['labelled_ok'] else 'no'} | {'yes' if c['accepted'] else 'no'} |")
    lines += ["", "## Plans and notes", ""]
    for r in runs:
        lines.append(f"- budget {r['budget']:g}, {r['acceptance']}, seed {r['seed']} ({r['elapsed_s'] / 60:.1f} min, "
                     f"{r['optimizer_steps']} optimizer steps): " + ("; ".join(r["plan"]) or "unpruned")
                     + ". Notes: " + " / ".join(r["notes"]))
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
