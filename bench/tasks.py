"""Train each task's reference network and record test accuracy, macro-F1, parameters, MACs and
batch-1 latency on torch-cpu (1 thread), into docs/results/tasks.{json,md}.

    .venv/bin/python bench/tasks.py [--tasks har,userid,fashion] [--out docs/results] [--threads 1]

Training runs on `--threads` intra-op threads (1 by default: on a shared 2-core machine, two
threads oversubscribe and run several times slower). Fashion-MNIST trains on a seeded subsample
(`--fashion-train`, default 30000 of 55000 images); every test set is used in full.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from fastdeepiot import checkpoints, tasks
from fastdeepiot.profiling.timer import time_network
from fastdeepiot.tasks.training import seed_everything

BARS = {"har": 0.93, "userid": 0.85, "fashion": 0.90}
# training budgets: the task defaults (Task.train_defaults), the same as `fastdeepiot train`


def latency_ms(model: torch.nn.Module, shape, rounds: int = 5) -> dict:
    """Batch-1 latency on torch-cpu, 1 thread: the one network timer's measured time
    (fastdeepiot.profiling.timer: block-median per-call time under inference mode, best of rounds, in a
    process that runs only the network, quiet guard on)."""
    t = time_network(model, torch.randn(1, *shape), "torch-cpu", threads=1, rounds=rounds)
    return {"median_ms": t.median_ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms, "rounds_ms": list(t.rounds_ms),
            "spread": t.spread, "timer": "fastdeepiot.profiling.timer", "rounds": rounds}


def run_task(name: str, args) -> dict:
    t = tasks.get(name)
    t0 = time.time()
    train_ds, val_ds, test_ds = t.datasets()
    batch = t.train_defaults.get("batch_size", 64)
    g = torch.Generator().manual_seed(args.seed)
    if name == "fashion" and args.fashion_train and args.fashion_train < len(train_ds):
        idx = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(args.seed))[: args.fashion_train]
        train_ds = torch.utils.data.Subset(train_ds, idx.tolist())
    train_dl = torch.utils.data.DataLoader(train_ds, batch_size=batch, shuffle=True, generator=g, drop_last=True)
    _, val_dl, test_dl = t.loaders(batch_size=batch, seed=args.seed)
    seed_everything(args.seed)
    model = t.make_model()
    res = tasks.train(model, t, seed=args.seed, progress=not args.quiet, train_loader=train_dl, val_loader=val_dl,
                      threads=args.threads)
    train_s = time.time() - t0
    m = tasks.evaluate(model, test_dl, t.n_classes, t.class_names)
    if args.checkpoints:
        Path(args.checkpoints).mkdir(parents=True, exist_ok=True)
        checkpoints.save_checkpoint(Path(args.checkpoints) / f"{name}.pt", model, name,
                              metrics={k: m[k] for k in ("accuracy", "macro_f1", "n")})
    row = {
        "task": name, "net": model.net_name, "arch": model.arch, "n_classes": t.n_classes,
        "input_shape": list(t.input_shape),
        "sizes": {"train": len(train_ds), "val": len(val_ds), "test": len(test_ds)},
        "test_accuracy": m["accuracy"], "test_macro_f1": m["macro_f1"], "test_n": m["n"],
        "bar": BARS[name], "passes_bar": m["accuracy"] >= BARS[name],
        "best_val_accuracy": res.best_val_accuracy, "best_epoch": res.best_epoch, "epochs_run": len(res.history),
        "train_seconds": round(train_s, 1), "params": tasks.count_params(model),
        "macs": tasks.count_macs(model, t.input_shape),
        "latency_torch_cpu_1thread_batch1": latency_ms(model, t.input_shape),
        "per_class": m["per_class"], "confusion": m["confusion"], "history": res.history,
    }
    print(f"{name}: test accuracy {m['accuracy']:.4f} (bar {BARS[name]}), macro-F1 {m['macro_f1']:.4f}, "
          f"{row['params']} params, {row['macs']} MACs, "
          f"{row['latency_torch_cpu_1thread_batch1']['median_ms']:.3f} ms, trained in {train_s:.0f} s", flush=True)
    return row


def write_markdown(rows: list[dict], meta: dict, path: Path) -> None:
    lines = ["# Tasks: reference networks", "",
             f"Produced by `bench/tasks.py` ({meta['date']}, torch {meta['torch']}, {meta['machine']}, "
             f"training on {meta['train_threads']} thread(s), seed {meta['seed']}; total {meta['total_seconds']:.0f} s).",
             "Latency: torch-cpu, 1 thread, batch 1, the network timer's measured time (`fastdeepiot.profiling.timer`: "
             "per-call median over timed blocks under inference mode, best of 5 rounds, in a process of its own). "
             "MACs: multiply-accumulates of Conv/Linear/GRU at batch 1, counted with forward hooks.", "",
             "| task | network | train/val/test | test accuracy | bar | macro-F1 | params | MACs | latency (ms) | epochs (best) | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["sizes"]
        lines.append(
            f"| {r['task']} | {r['net']} | {s['train']}/{s['val']}/{s['test']} | {r['test_accuracy']:.4f} | "
            f"{r['bar']:.2f} {'ok' if r['passes_bar'] else 'MISSED'} | {r['test_macro_f1']:.4f} | {r['params']:,} | "
            f"{r['macs']:,} | {r['latency_torch_cpu_1thread_batch1']['median_ms']:.3f} | "
            f"{r['epochs_run']} ({r['best_epoch']}) | {r['train_seconds']:.0f} |")
    lines += ["", "Splits: har by person (test = UCI HAR's 9 test people, val = 5 others); userid (walking, upstairs and downstairs windows) by time "
              "(per recording and activity: first 60% / next 20% / last 20%, 32-sample gaps); fashion: "
              "official test set, 5000 training images held out for validation"
              + (f", training on a seeded subsample of {meta['fashion_train']} images" if meta.get("fashion_train") else "")
              + ".", "", "Architectures (`arch`, as recorded in checkpoints):", ""]
    for r in rows:
        lines.append(f"- {r['task']}: `{json.dumps(r['arch'])}`")
    lines += ["", "Per-class F1:", ""]
    for r in rows:
        if r["n_classes"] <= 10:
            lines.append(f"- {r['task']}: " + ", ".join(f"{c['name']} {c['f1']:.3f}" for c in r["per_class"]))
        else:
            f1 = sorted(c["f1"] for c in r["per_class"])
            lines.append(f"- {r['task']}: min {f1[0]:.3f}, median {f1[len(f1) // 2]:.3f}, max {f1[-1]:.3f} over {len(f1)} classes")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="har,userid,fashion")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fashion-train", type=int, default=30000)
    ap.add_argument("--checkpoints", default="runs/bench-tasks", help="where to save the trained checkpoints")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = [run_task(n.strip(), args) for n in args.tasks.split(",") if n.strip()]
    meta = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "python": sys.version.split()[0],
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads available",
            "train_threads": args.threads, "seed": args.seed, "fashion_train": args.fashion_train,
            "total_seconds": time.time() - t0}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tasks.json").write_text(json.dumps({"meta": meta, "tasks": rows}, indent=2) + "\n")
    write_markdown(rows, meta, out / "tasks.md")
    print(f"wrote {out / 'tasks.json'} and {out / 'tasks.md'} in {meta['total_seconds']:.0f} s")
    return 0 if all(r["passes_bar"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
