"""CLI verb: compress a trained checkpoint for a device's time model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch
import typer

from fastdeepiot import tasks as tasks_mod
from fastdeepiot.checkpoints import continued_plan, load_checkpoint, save_compressed
from fastdeepiot.compression.config import MAX_EPOCHS, MAX_FINETUNE_STEPS, MAX_ITERS, CompressConfig
from fastdeepiot.compression.export import write_onnx
from fastdeepiot.compression.report import history_table, write_report
from fastdeepiot.compression.search import compress as run
from fastdeepiot.errors import UserError
from fastdeepiot.safeio import check_output, staged_folder
from fastdeepiot.timemodel.model import TimeModel

D = CompressConfig.default  # every option's default is the setting's default, written once

# This module's verbs; cli.py merges them into the one app (commands never import cli).
app = typer.Typer()


@app.command()
def compress(
    checkpoint: Path = typer.Argument(..., help="trained checkpoint (fastdeepiot train)"),
    task: str = typer.Option(..., "--task", help="task whose data fine-tunes and evaluates (har, userid, fashion)"),
    time_model: Path = typer.Option(..., "--time-model", help="the device's time model (fastdeepiot fit)"),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop",
                                                      help="accuracy budget, percentage points (validation)"),
    target_ms: Optional[float] = typer.Option(None, "--target-ms", help="predicted time target (ms)"),
    out: Path = typer.Option(..., "-o", "--out", help="pruned checkpoint; .plan.json / .report.json / .png beside it"),
    criterion: str = typer.Option(D("criterion"), help="channel importance: taylor or l1"),
    cost: str = typer.Option(D("cost"), help="cost to minimise: time (the time model) or flops (ablation)"),
    distill: bool = typer.Option(D("distill"), "--distill/--no-distill",
                                 help="fine-tune with knowledge distillation from the original network too"),
    finetune_steps: int = typer.Option(D("finetune_steps"), min=0, max=MAX_FINETUNE_STEPS,
                                       help="fine-tuning steps per evaluated candidate"),
    final_epochs: float = typer.Option(D("final_epochs"), min=0.0, max=MAX_EPOCHS,
                                       help="fine-tuning epochs at the end"),
    max_iters: int = typer.Option(D("max_iters"), min=0, max=MAX_ITERS, help="search iterations at most"),
    measure: bool = typer.Option(D("measure"), "--measure/--no-measure", help="measure base and result on the device"),
    confidence: float = typer.Option(D("confidence"), help="accept a state only if this one-sided upper confidence bound "
                                               "on its validation accuracy drop is within the budget "
                                               "(0.5: the point estimate)"),
    acceptance: str = typer.Option(D("acceptance"), help="what a state's accuracy drop is judged on: labels "
                                   "(validation accuracy) or agreement (top-1 disagreement with the original over "
                                   "validation and augmented inputs, for a small labelled split; needs "
                                   "--max-accuracy-drop)"),
    max_divergence: Optional[float] = typer.Option(None, "--max-divergence", metavar="NATS",
                                                   help="fidelity budget beside the accuracy budget: keep a state only "
                                                        "if its outputs' mean KL divergence from the original's on the "
                                                        "validation inputs is within it (needs no labels; see README)"),
    train_guard: bool = typer.Option(D("train_guard"), "--train-guard/--no-train-guard",
                                     help="also keep a state only if its accuracy on a sample of the training inputs "
                                          "fell by at most the budget (catches losses a small validation split "
                                          "of easy people does not show)"),
    compare_uniform: str = typer.Option("", "--compare-uniform", metavar="W,W,...",
                                        help="width multipliers (e.g. 0.25,0.5,0.75): uniformly narrower networks that "
                                             "replace the result when predicted faster at as high an accuracy"),
    compare_scratch: bool = typer.Option(D("compare_scratch"), "--compare-scratch/--no-compare-scratch",
                                         help="also train the result's architecture (and the faster ones given up, "
                                              "and the uniform widths) from scratch, and keep the best"),
    scratch_epochs: Optional[float] = typer.Option(None, "--scratch-epochs", max=MAX_EPOCHS,
                                                   help="epochs of training from scratch (default: the task's recipe; "
                                                        f"> 0, at most {MAX_EPOCHS})"),
    seed: int = typer.Option(D("seed")),
    force: bool = typer.Option(False, "--force", help="overwrite output files of another kind"),
) -> None:
    """Prune a trained network so that its time on the device drops fastest per accuracy lost."""
    if (max_accuracy_drop is None) == (target_ms is None):
        raise UserError("give exactly one of --max-accuracy-drop and --target-ms")
    config = CompressConfig(max_accuracy_drop=max_accuracy_drop, target_ms=target_ms, criterion=criterion, cost=cost,
                            distill=distill, finetune_steps=finetune_steps, final_epochs=final_epochs,
                            max_iters=max_iters, measure=measure, confidence=confidence, acceptance=acceptance,
                            max_divergence=max_divergence, train_guard=train_guard, seed=seed, compare_uniform=_widths(compare_uniform),
                            compare_scratch=compare_scratch, scratch_epochs=scratch_epochs)
    stem = out.with_suffix("")
    sidecars = {"plan": Path(f"{stem}.plan.json"), "report": Path(f"{stem}.report.json"),
                "text": Path(f"{stem}.report.md"), "png": Path(f"{stem}.png")}
    if any(Path(out).resolve() == p.resolve() for p in [*sidecars.values(), Path(f"{stem}.onnx")]):
        raise UserError(f"-o {out} collides with a report written beside it; give the checkpoint a .pt name")
    inputs = [checkpoint, time_model]
    check_output(out, kind="checkpoint", inputs=inputs, force=force, option="-o")
    for kind, p in sidecars.items():
        check_output(p, kind=kind, inputs=inputs, force=force, option="-o (beside it)")
    torch.set_num_threads(1)
    t = tasks_mod.get(task)
    tm = TimeModel.load(time_model)
    onnx = Path(f"{stem}.onnx")
    if tm.backend == "onnxruntime-cpu":  # compressed for ONNX Runtime: the network is written as ONNX too
        check_output(onnx, kind="onnx", inputs=inputs, force=force, option="-o (beside it)")
    model, meta = load_checkpoint(checkpoint, task=t)
    res = run(model, t, config, time_model=tm)  # progress: on stderr (compress's default)
    plan = continued_plan(meta, res.plan)  # replays onto the original architecture, as the checkpoint records it
    written = f"{stem}.plan.json, {stem}.report.json, {stem}.report.md, {stem}.png"
    # every file written in full first, then each renamed into place, the checkpoint last: a run stopped on the
    # way leaves the earlier outputs, never a new checkpoint beside an earlier run's plan and report
    with staged_folder(out.parent) as tmp:
        plan.save(tmp / "out.plan.json")
        write_report(res, str(tmp / "out"))
        moves = [(tmp / "out.plan.json", sidecars["plan"]), (tmp / "out.report.json", sidecars["report"]),
                 (tmp / "out.report.md", sidecars["text"]), (tmp / "out.png", sidecars["png"])]
        if tm.backend == "onnxruntime-cpu":
            moves.append((write_onnx(res.model, torch.zeros(1, *t.input_shape), tmp / "out.onnx"), onnx))
            written += f", {onnx}"
        save_compressed(tmp / "out.pt", res.model, plan, t.name, meta["net"], meta["arch"],
                        {"base": res.base, "final": res.final})
        for src, dst in (*moves, (tmp / "out.pt", out)):
            os.replace(src, dst)
    typer.echo(history_table(res))
    for n in res.notes:
        typer.echo(f"note: {n}")
    typer.echo(f"wrote {out}, {written}")


def _widths(text: str) -> tuple[float, ...]:
    """`--compare-uniform`'s comma-separated width multipliers (CompressConfig checks their range)."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--compare-uniform takes comma-separated numbers such as 0.25,0.5, got {text!r}") from None
