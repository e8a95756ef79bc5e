"""Which validation signal sees the test-accuracy drops of compressed networks, and a fidelity budget read off it.

    .venv/bin/python bench/fidelity.py --task har --parts runs/a/part.pt runs/b/part.pt \\
        [--check runs/new/part.pt] [--drop 0.5] [--out docs/results]

Reads the networks that `bench/compress.py --defer-timing` saved (ours, the baselines, the control, the
original), evaluates each on the task's validation and test splits, and asks of every signal a search could
use without the test split how well it ranks the networks' test-accuracy drops (Spearman, over every
network except the original):

  val accuracy       labelled validation accuracy (what the accuracy budget judges)
  val NLL            mean cross-entropy on the validation labels
  val divergence     mean KL(original || network) of the softmax outputs on the validation inputs, in nats
                     (`compression.finetune.divergence`; needs no labels; CompressConfig.max_divergence)
  val disagreement   share of validation inputs whose top-1 class differs from the original's
  train accuracy, train divergence, train disagreement
                     the same on the training split's inputs (every one, in order): fine-tuning saw them, so
                     they are optimistic for a compressed network, but they are many and from more people

It also reads off a fidelity budget two ways: the envelope (halfway from the most divergent network within
`--drop` test points below the first network beyond it to that network, rounded down to one significant
digit) and the slope (test points lost per nat, least squares through the origin: the divergence at which
the expected drop reaches `--drop`). With `--check` (networks of a later run, never used to read them), it
says how that run's networks on each side of the `--budget` it ran with fared. A budget read here is
calibrated on the task's test split: a development figure for that task, not a held-out one.

A network that appears in two parts (the same seed and settings give the same network) counts once.

Writes <out>/fidelity_<task>.json (every network's signals) and .md, and <out>/fidelity_<task>.png
(test drop against validation divergence and validation accuracy).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from _provenance import code_version

ROOT = Path(__file__).resolve().parents[1]
SIGNALS = ("val_accuracy", "val_nll", "val_divergence", "val_disagreement", "train_accuracy", "train_divergence",
           "train_disagreement")


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for val in np.unique(v):  # ties share their mean rank
            r[v == val] = r[v == val].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def read_off_budget(rows: list[dict], drop: float) -> float | None:
    """Halfway between the most divergent network that lost at most `drop` test points below the first that
    lost more, and that first one, rounded down to one significant digit; None when even the closest network
    lost more."""
    rows = sorted(rows, key=lambda r: r["val_divergence"])
    first_bad = next((r["val_divergence"] for r in rows if r["test_drop"] > drop), None)
    if first_bad is None:
        return None if not rows else _round_down(rows[-1]["val_divergence"])
    below = [r["val_divergence"] for r in rows if r["val_divergence"] < first_bad]
    if not below:
        return None
    return _round_down(min(below[-1] + 0.5 * (first_bad - below[-1]), first_bad * 0.999))


def unique(rows: list[dict]) -> list[dict]:
    """`rows` without repeats of one network (the same seed and settings in two parts give the same network)."""
    seen, out = set(), []
    for r in rows:
        key = (r["method"], r["seed"], r["setting"], r["backend"], round(r["val_divergence"], 7),
               round(r["test_drop"], 4))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _round_down(v: float) -> float:
    if v <= 0:
        return 0.0
    e = math.floor(math.log10(v))
    return math.floor(v / 10**e) * 10**e


def evaluate(task, paths: list[str], part_name: str) -> list[dict]:
    tr_ds, _, _ = task.datasets()
    _, va, te = task.loaders(batch_size=256, seed=0)
    tr = torch.utils.data.DataLoader(tr_ds, batch_size=512)  # in order: the same inputs for every network

    def outs(m, loader):
        with torch.no_grad():
            return torch.cat([m(x) for x, _ in loader])

    yv, yt, ytr = (torch.cat([y for _, y in ld]) for ld in (va, te, tr))
    from fastdeepiot.compression.finetune import divergence
    rows = []
    for path in paths:
        part = torch.load(path, weights_only=False)  # our own bench's file
        orig = next(m for m, p in zip(part["models"], part["points"]) if p["method"] == "original").eval()
        ov, ot, otr = outs(orig, va), outs(orig, te), outs(orig, tr)
        base_train = 100 * float((otr.argmax(1) == ytr).float().mean())
        base_val, base_test = [100 * float((o.argmax(1) == y).float().mean()) for o, y in ((ov, yv), (ot, yt))]
        for m, p in zip(part["models"], part["points"]):
            if p["method"] == "original" or "failed" in p:
                continue
            m.eval()
            v, t, r = outs(m, va), outs(m, te), outs(m, tr)
            rows.append({"part": part_name, "path": str(path), "code": part["meta"].get("code"),
                         "method": p["method"], "seed": p["seed"], "setting": p["setting"],
                         "backend": p.get("backend"),
                         "val_accuracy": 100 * float((v.argmax(1) == yv).float().mean()),
                         "val_drop": base_val - 100 * float((v.argmax(1) == yv).float().mean()),
                         "val_nll": float(F.cross_entropy(v, yv)),
                         "val_divergence": divergence(ov, v),
                         "val_disagreement": 100 * float((v.argmax(1) != ov.argmax(1)).float().mean()),
                         "train_accuracy": 100 * float((r.argmax(1) == ytr).float().mean()),
                         "train_drop": base_train - 100 * float((r.argmax(1) == ytr).float().mean()),
                         "train_divergence": divergence(otr, r),
                         "train_disagreement": 100 * float((r.argmax(1) != otr.argmax(1)).float().mean()),
                         "test_drop": base_test - 100 * float((t.argmax(1) == yt).float().mean())})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--parts", nargs="+", required=True, help="part.pt files of earlier bench/compress.py runs")
    ap.add_argument("--check", nargs="*", default=[], help="part.pt files of a later run: the budget's check")
    ap.add_argument("--drop", type=float, default=0.5, help="test points a network may lose (the bar's)")
    ap.add_argument("--budget", type=float, help="the fidelity budget the --check run ran with (nats)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    args = ap.parse_args(argv)
    for p in args.parts + args.check:
        if not Path(p).is_file():
            print(f"error: no such part file: {p}", file=sys.stderr)
            return 2
    torch.set_num_threads(1)
    from fastdeepiot import tasks
    t = tasks.get(args.task)
    dev = unique(evaluate(t, args.parts, "earlier"))
    check = unique(evaluate(t, args.check, "check")) if args.check else []
    corr = {s: spearman([r[s] for r in dev], [-r["test_drop"] for r in dev]) for s in SIGNALS}
    corr_check = ({s: spearman([r[s] for r in check], [-r["test_drop"] for r in check]) for s in SIGNALS}
                  if len(check) > 2 else {})
    envelope = read_off_budget(dev, args.drop)
    d, y = np.array([r["val_divergence"] for r in dev]), np.array([r["test_drop"] for r in dev])
    slope = float((d * y).sum() / (d * d).sum())  # test points lost per nat
    budget = args.budget
    sides = {}
    if check and budget is not None:
        for name, keep in (("within", lambda r: r["val_divergence"] <= budget),
                           ("beyond", lambda r: r["val_divergence"] > budget)):
            rs = [r for r in check if keep(r)]
            sides[name] = {"networks": len(rs), "within_drop": sum(r["test_drop"] <= args.drop for r in rs),
                           "median_test_drop": float(np.median([r["test_drop"] for r in rs])) if rs else None}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"fidelity_{t.name}"
    meta = {"task": t.name, "code": code_version(), "parts": args.parts, "check": args.check, "drop": args.drop,
            "machine": "2-vCPU AMD EPYC VM, no GPU (accuracy only: nothing is timed)"}
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "spearman_vs_test_accuracy_change": corr,
                                                     "spearman_check": corr_check, "envelope_budget": envelope,
                                                     "points_per_nat": slope, "slope_budget": args.drop / slope,
                                                     "check_budget": budget,
                                                     "check_sides": sides, "networks": dev + check}, indent=1))
    lines = [f"# Which validation signal sees the test drops: {t.name}", "",
             f"`bench/fidelity.py` at **{meta['code']}** (see its docstring); networks from "
             + ", ".join(f"`{p}`" for p in args.parts)
             + f" (bench/compress.py at {', '.join(sorted({str(r['code']) for r in dev}))})"
             + (f"; check: {', '.join(f'`{p}`' for p in args.check)}" if args.check else "") + ".", "",
             "Spearman correlation of each validation signal with the test-accuracy *change* (negative drop) over "
             f"the {len(dev)} earlier networks (every method and seed; the original left out). A signal that sees "
             "test losses correlates positively for accuracy and negatively for the others.", "",
             "| signal | Spearman, earlier networks |" + (" Spearman, check networks |" if corr_check else ""),
             "|---|---|" + ("---|" if corr_check else "")]
    for s in SIGNALS:
        lines.append(f"| {s.replace('_', ' ')} | {corr[s]:+.2f} |" + (f" {corr_check[s]:+.2f} |" if corr_check else ""))
    lines += ["", f"Fidelity budgets read off the earlier networks: envelope (every network below it lost <= "
                  f"{args.drop:g} test points) **{envelope if envelope is not None else 'none'} nats**; slope "
                  f"{slope:.1f} test points per nat, so an expected drop of {args.drop:g} points at "
                  f"**{args.drop / slope:.4f} nats**.", ""]
    if sides:
        lines += [f"Check networks (a later run, with a fidelity budget of {budget:g} nats for ours; never used "
                  f"to read the budgets above) on each side of {budget:g} nats:", "",
                  "| side | networks | within the drop | median test drop |", "|---|---|---|---|"]
        for name, s in sides.items():
            md = "-" if s["median_test_drop"] is None else f"{s['median_test_drop']:+.2f}"
            lines.append(f"| {name} | {s['networks']} | {s['within_drop']} | {md} |")
        lines.append("")
    lines += ["| run | method | seed | setting | backend | val acc % | val drop | val divergence | val disagreement % "
              "| train drop | train divergence | test drop |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(dev + check, key=lambda r: (r["part"], r["val_divergence"])):
        lines.append(f"| {r['part']} | {r['method']} | {r['seed']} | {r['setting']} | {r['backend'] or ''} | "
                     f"{r['val_accuracy']:.2f} | {r['val_drop']:+.2f} | {r['val_divergence']:.4f} | "
                     f"{r['val_disagreement']:.2f} | {r['train_drop']:+.2f} | {r['train_divergence']:.4f} | "
                     f"{r['test_drop']:+.2f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, s in zip(axes, ("val_divergence", "val_accuracy")):
        for rows, mk, lab in ((dev, "o", "earlier runs"), (check, "x", "check run")):
            ours = [r for r in rows if r["method"] == "ours"]
            other = [r for r in rows if r["method"] != "ours"]
            for pts, colour, who in ((other, "tab:gray", "baselines, control"), (ours, "tab:red", "ours")):
                if pts:
                    ax.scatter([r[s] for r in pts], [-r["test_drop"] for r in pts], marker=mk, c=colour,
                               label=f"{who} ({lab})")
        ax.axhline(-args.drop, ls=":", c="k")
        if s == "val_divergence":
            ax.axline((0, 0), slope=-slope, ls="--", c="tab:blue", lw=0.8, label=f"{slope:.0f} points per nat")
            if budget is not None:
                ax.axvline(budget, ls=":", c="tab:blue", label=f"check run's budget {budget:g}")
        ax.set_xlabel(s.replace("_", " ") + (" (nats)" if s == "val_divergence" else " (%)"))
        ax.set_ylabel("test accuracy change (points)")
        ax.set_title(f"{t.name}: Spearman {corr[s]:+.2f}")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    print(f"wrote {stem}.json, .md, .png; Spearman {json.dumps({k: round(v, 2) for k, v in corr.items()})}; "
          f"envelope {envelope}, slope {slope:.1f} points per nat -> {args.drop / slope:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
