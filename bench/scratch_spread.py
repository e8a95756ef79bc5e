"""How far from the checkpoint does training from scratch land? DeepSense variants trained from scratch.

    .venv/bin/python bench/scratch_spread.py train --task har --seeds 0,1 [--variants x1:gru,x0.5:dense]
    .venv/bin/python bench/scratch_spread.py time --task har        # on a quiet machine
    .venv/bin/python bench/scratch_spread.py report --task har [--out docs/results]

Each variant is the task's reference network (runs/bench-tasks/<task>.pt's architecture) at a width multiplier
(`x0.5`) with structural changes of the kind our search makes (`+`-joined): `gru` (none), `seqN` (the GRU runs
over N times fewer steps), `dense` (its recurrence dropped: `moves.recurrence.StepDense`), `rm2` (the second
conv of each sensor branch and of the merge removed). It is re-initialised and trained with the task's recipe
and distillation from the checkpoint (`finetune.train_recipe`, what `compare_scratch` and the width-scratch
baseline do), one run per seed (the seed sets the initialisation and the data order). Recorded per run: test
accuracy, best validation accuracy, and the mean KL divergence of its validation outputs from the checkpoint's
(`finetune.divergence`). `time` measures every variant, BatchNorm folded, on torch-cpu and onnxruntime-cpu
with the one network timer (batch 1, 1 thread, 5 interleaved rounds). `x1:gru` is the checkpoint's own
architecture: its spread over seeds is how far retraining alone moves test accuracy.

Results accumulate in --cache (runs/scratch_spread/<task>.json; training resumes where it stopped, one
process per seed list can run at once when each writes its own --cache file, merged by `report --cache A B`).
`report` writes <out>/scratch_spread_<task>.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from _provenance import code_version

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [f"x{w:g}:{k}" for w in (1.0, 0.5, 0.25) for k in ("gru", "seq2", "seq4", "dense", "seq2+dense", "dense+rm2")]


def variant(arch: dict, name: str) -> torch.nn.Module:
    """The reference network at `name` ("x0.5:dense+rm2"), eval mode."""
    from fastdeepiot.compression.moves.recurrence import drop_recurrence
    from fastdeepiot.compression.moves.sequence import shorten_sequence
    from fastdeepiot.compression.surgery import replace_module
    from fastdeepiot.tasks.nets import DeepSense

    width, kinds = name[1:].split(":")
    m = DeepSense(**{**arch, "width_mult": float(width)})
    for part in kinds.split("+"):
        if part.startswith("seq"):
            shorten_sequence(m, "gru", int(part[3:]))
        elif part == "dense":
            drop_recurrence(m, "gru")
        elif part == "rm2":
            for n in ("acc.1", "gyro.1", "merge.1"):
                replace_module(m, n, torch.nn.Identity())
        elif part != "gru":
            raise ValueError(f"unknown part {part!r} in variant {name!r}")
    return m.eval()


def _load(paths: list[Path]) -> dict:
    res: dict = {"runs": {}, "time": {}}
    for p in paths:
        if p.exists():
            d = json.loads(p.read_text())
            res["runs"].update(d.get("runs", {}))
            res["time"].update(d.get("time", {}))
            res.setdefault("teacher_test", d.get("teacher_test"))
            res.setdefault("code", d.get("code"))
            res.setdefault("conditions", d.get("conditions"))
    return res


def train(task, teacher, arch, seeds, names, cache: Path) -> None:
    from fastdeepiot.compression.finetune import (accuracy, divergence, forward_all, recipe, reinitialise,
                                                  train_recipe)
    res = _load([cache])
    r = recipe(task)
    for seed in seeds:
        tr, va, te = task.loaders(batch_size=64, seed=seed)
        base_out, _ = forward_all(teacher, va)
        res["teacher_test"] = 100 * accuracy(teacher, te)
        for name in names:
            key = f"{name}@{seed}"
            if key in res["runs"]:
                continue
            m = variant(arch, name)
            reinitialise(m, seed=seed)
            t0 = time.time()
            m, rec = train_recipe(m, tr, va, int(round(float(r["epochs"]) * len(tr))), r, teacher=teacher,
                                  metric=task.metric, seed=seed)
            vo, _ = forward_all(m, va)
            res["runs"][key] = {"test": 100 * accuracy(m, te), "val": rec["best_val_accuracy"],
                                "divergence": divergence(base_out, vo), "train_s": time.time() - t0}
            res["code"] = code_version()
            print(key, res["runs"][key], flush=True)
            cache.write_text(json.dumps(res, indent=1))


def measure(arch, names, cache: Path, rounds: int) -> None:
    from fastdeepiot.compression.moves import MOVES
    from fastdeepiot.compression.search import measure_models

    res = _load([cache])
    x = torch.randn(1, arch["in_channels"], arch["length"])
    nets = []
    for name in names:
        m = copy.deepcopy(variant(arch, name))
        MOVES["fold_bn"].finish(m, x)
        nets.append(m)
    for bk in ("torch-cpu", "onnxruntime-cpu"):
        for name, ms in zip(names, measure_models(nets, x, bk, rounds=rounds)):
            res["time"].setdefault(name, {})[bk] = ms
            print(bk, name, f"{ms:.4f} ms", flush=True)
    cache.write_text(json.dumps(res, indent=1))


def report(task_name: str, caches: list[Path], out: Path) -> None:
    res = _load(caches)
    base = res["teacher_test"]
    names = sorted({k.split("@")[0] for k in res["runs"]}, key=VARIANTS.index)
    orig = res["time"].get("x1:gru", {})
    rows = []
    for name in names:
        runs = {int(k.split("@")[1]): v for k, v in res["runs"].items() if k.split("@")[0] == name}
        drops = [runs[s]["test"] - base for s in sorted(runs)]
        divs = [runs[s]["divergence"] for s in sorted(runs) if runs[s].get("divergence") is not None]
        t = res["time"].get(name, {})
        rows.append({"variant": name, "seeds": sorted(runs), "test_drops": drops, "mean_drop": statistics.mean(drops),
                     "within_0.5": sum(d >= -0.5 for d in drops), "divergence": divs,
                     "ms": t, "x_original": {bk: t[bk] / orig[bk] for bk in t if bk in orig}})
    out.mkdir(parents=True, exist_ok=True)
    doc = {"task": task_name, "teacher_test_accuracy": base, "code": res.get("code"),
           "conditions": res.get("conditions"), "rows": rows}
    (out / f"scratch_spread_{task_name}.json").write_text(json.dumps(doc, indent=1))
    lines = [f"# Training from scratch: how far from the checkpoint ({task_name})", "",
             f"Generated by `bench/scratch_spread.py` (code {res.get('code')}); the checkpoint "
             f"runs/bench-tasks/{task_name}.pt tests at {base:.2f}%. Each run: re-initialised, the task's recipe with "
             "distillation from the checkpoint, one seed. Drops are test points against the checkpoint; divergence "
             "is the mean KL of the validation outputs from the checkpoint's (nats); times are measured, BatchNorm "
             "folded, batch 1, 1 thread, all variants in one timing process per backend."
             + (f" Conditions: {res['conditions']}" if res.get("conditions") else ""), "",
             "| variant | seeds | test drop per seed | mean | within 0.5 | divergence per seed | torch-cpu ms (x orig) "
             "| onnxruntime-cpu ms (x orig) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tm = " | ".join(f"{r['ms'][bk]:.4f} ({r['x_original'][bk]:.2f})" if bk in r["ms"] else ""
                        for bk in ("torch-cpu", "onnxruntime-cpu"))
        lines.append(f"| {r['variant']} | {len(r['seeds'])} | {', '.join(f'{d:+.2f}' for d in r['test_drops'])} | "
                     f"{r['mean_drop']:+.2f} | {r['within_0.5']}/{len(r['seeds'])} | "
                     f"{', '.join(f'{d:.4f}' for d in r['divergence']) or 'n/a'} | {tm} |")
    (out / f"scratch_spread_{task_name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("train", "time", "report"))
    ap.add_argument("--task", default="har")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cache", nargs="+", help="result files (default runs/scratch_spread/<task>.json)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    a = ap.parse_args(argv)
    caches = [Path(p) for p in (a.cache or [ROOT / f"runs/scratch_spread/{a.task}.json"])]
    if a.mode == "report":
        missing = [str(p) for p in caches if not p.exists()]
        if missing:
            print(f"error: no results at {', '.join(missing)} (run `train` first)", file=sys.stderr)
            return 2
        report(a.task, caches, Path(a.out))
        return 0
    from fastdeepiot import checkpoints, tasks

    torch.set_num_threads(1)
    names = [n for n in a.variants.split(",") if n]
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        print(f"error: unknown variants {', '.join(bad)}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    task = tasks.get(a.task)
    teacher, _ = checkpoints.load_checkpoint(ROOT / f"runs/bench-tasks/{a.task}.pt", task=task)
    teacher.eval()
    caches[0].parent.mkdir(parents=True, exist_ok=True)
    if a.mode == "train":
        train(task, teacher, dict(teacher.arch), [int(s) for s in a.seeds.split(",")], names, caches[0])
    else:
        measure(dict(teacher.arch), names, caches[0], a.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
