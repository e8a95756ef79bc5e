"""What each of a network's single compression steps costs on the training, validation and test splits, right
after a candidate's short fine-tune: which split sees a step's damage (the training guard's evidence).

    .venv/bin/python bench/guard_steps.py --task har [--checkpoint runs/bench-tasks/har.pt] [--seeds 1,2]
        [--steps 60] [--out docs/results]

Every structural step the search can propose on the checkpoint (each removable block, each recurrence dropped)
and one width step per channel group (halved, top-L1 channels) is applied to the checkpoint alone and fine-tuned
as the search fine-tunes a candidate (`--steps` distilled steps at lr 1e-3, seeded), then scored on the training
guard's sample (`search.TRAIN_GUARD_SAMPLES` inputs of the training split, taken as the search takes them),
the whole validation split and the whole test split. Reported per step and seed: the accuracy drop on each
(points, original minus step) and the validation divergence (nats). Nothing is timed. The test column is what
a search must not see; it is here to say which of the other two tracks it (Spearman over every step and seed).

Writes <out>/guard_steps_<task>.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _provenance import code_version
from fidelity import spearman  # bench/ is on sys.path, as for _provenance

ROOT = Path(__file__).resolve().parents[1]


def candidate_steps(model, x) -> list[dict]:
    """The structural candidates the search's moves propose on `model` (each removable block, each recurrence
    dropped; priced by FLOPs, which only decides that they save something) and each channel group halved
    (top-L1 channels)."""
    from fastdeepiot.compression.cost import FlopsCost
    from fastdeepiot.compression.importance import l1_importance
    from fastdeepiot.compression.moves import MOVES, Context, output_shape
    from fastdeepiot.graph.channels import trace_channels

    pricer = FlopsCost()
    ctx = Context(x, output_shape(model, x), pricer, pricer.price(model, x))
    steps = [c.step for name in ("remove", "recurrence") for c in MOVES[name].propose(model, ctx)]
    cg = trace_channels(model, x)
    groups = [g for g in cg.groups() if g.width > 1]
    imp = l1_importance(model, cg, groups)
    for g in groups:
        keep = sorted(int(i) for i in np.argsort(-imp[g.name], kind="stable")[:max(1, g.width // 2)])
        steps.append({"op": "prune", "keep": {g.name: keep}})
    return steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="har")
    ap.add_argument("--checkpoint", help="default: runs/bench-tasks/<task>.pt")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--steps", type=int, default=60, help="distilled fine-tuning steps per candidate")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from fastdeepiot import tasks
    from fastdeepiot.checkpoints import load_checkpoint
    from fastdeepiot.compression.finetune import correctness, divergence, finetune, forward_all, logits_of, take_samples
    from fastdeepiot.compression.moves import apply_step, describe_step
    from fastdeepiot.compression.search import TRAIN_GUARD_BYTES, TRAIN_GUARD_SAMPLES

    t = tasks.get(args.task)
    ckpt = args.checkpoint or str(ROOT / "runs" / "bench-tasks" / f"{t.name}.pt")
    if not Path(ckpt).is_file():
        print(f"error: no checkpoint {ckpt}: train one with `fastdeepiot train {t.name} -o {ckpt}`", file=sys.stderr)
        return 2
    model, _ = load_checkpoint(ckpt, task=t)
    model.eval()
    tr, va, te = t.loaders(batch_size=64, seed=0)
    tx, ty = take_samples(tr, TRAIN_GUARD_SAMPLES, TRAIN_GUARD_BYTES)
    x = tx[:1]

    def scores(m):
        ov, yv = forward_all(m, va)
        ot, yt = forward_all(m, te)
        return {"train": 100 * float(correctness(logits_of(m, tx), ty).float().mean()),
                "val": 100 * float(correctness(ov, yv).float().mean()),
                "test": 100 * float(correctness(ot, yt).float().mean())}, ov

    base, base_out = scores(model)
    rows, t0 = [], time.time()
    for step in candidate_steps(model, x):
        for seed in (int(s) for s in args.seeds.split(",")):
            m = copy.deepcopy(model)
            apply_step(m, step, x)
            finetune(m, tr, args.steps, lr=1e-3, teacher=model, seed=seed)
            s, out = scores(m)
            rows.append({"step": describe_step(step), "seed": seed, **{f"{k}_drop": base[k] - s[k] for k in s},
                         "val_divergence": divergence(base_out, out)})
            print(json.dumps(rows[-1]), flush=True)
    test = [r["test_drop"] for r in rows]
    corr = {k: spearman([r[k] for r in rows], test) for k in ("train_drop", "val_drop", "val_divergence")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"guard_steps_{t.name}"
    meta = {"task": t.name, "checkpoint": ckpt, "code": code_version(), "seeds": args.seeds, "steps": args.steps,
            "train_sample": len(ty), "base": base, "elapsed_s": time.time() - t0,
            "machine": "2-vCPU AMD EPYC VM, no GPU (accuracy only: nothing is timed)"}
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "spearman_vs_test_drop": corr, "rows": rows},
                                                    indent=1))
    lines = [f"# Which split sees a compression step's damage: {t.name}", "",
             f"`bench/guard_steps.py --task {t.name} --seeds {args.seeds} --steps {args.steps}` at **{meta['code']}** "
             f"(see its docstring); checkpoint `{ckpt}`. The checkpoint: training sample {base['train']:.2f}% "
             f"({len(ty)} inputs), validation {base['val']:.2f}%, test {base['test']:.2f}%. Each step alone, then "
             f"{args.steps} distilled fine-tuning steps, as the search fine-tunes a candidate. Drops in points "
             "(original minus step).", "",
             "Spearman correlation with the test drop over every step and seed: "
             + ", ".join(f"{k.replace('_', ' ')} {v:+.2f}" for k, v in corr.items()) + ".", "",
             "| step | seed | training drop | validation drop | test drop | validation divergence |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (-r["test_drop"], r["step"], r["seed"])):
        lines.append(f"| {r['step']} | {r['seed']} | {r['train_drop']:+.2f} | {r['val_drop']:+.2f} | "
                     f"{r['test_drop']:+.2f} | {r['val_divergence']:.4f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.md, .json; Spearman vs test drop {json.dumps({k: round(v, 2) for k, v in corr.items()})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
