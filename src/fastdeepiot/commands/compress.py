"""CLI verb: compress a trained checkpoint for a device's time model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from fastdeepiot.compression.config import CompressConfig

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
    finetune_steps: int = typer.Option(D("finetune_steps"), help="fine-tuning steps per evaluated candidate"),
    final_epochs: float = typer.Option(D("final_epochs"), help="fine-tuning epochs at the end"),
    max_iters: int = typer.Option(D("max_iters"), help="search iterations at most"),
    measure: bool = typer.Option(D("measure"), "--measure/--no-measure", help="measure base and result on the device"),
    confidence: float = typer.Option(D("confidence"), help="accept a state only if this one-sided upper confidence bound "
                                               "on its validation accuracy drop is within the budget "
                                               "(0.5: the point estimate)"),
    seed: int = typer.Option(D("seed")),
) -> None:
    """Prune a trained network so that its time on the device drops fastest per accuracy lost."""
    import torch

    from fastdeepiot import tasks as tasks_mod
    from fastdeepiot.compression.checkpoint import save_compressed
    from fastdeepiot.compression.report import history_table, write_report
    from fastdeepiot.compression.search import compress as run
    from fastdeepiot.errors import UserError
    from fastdeepiot.timemodel.model import TimeModel

    if (max_accuracy_drop is None) == (target_ms is None):
        raise UserError("give exactly one of --max-accuracy-drop and --target-ms")
    config = CompressConfig(max_accuracy_drop=max_accuracy_drop, target_ms=target_ms, criterion=criterion, cost=cost,
                            distill=distill, finetune_steps=finetune_steps, final_epochs=final_epochs,
                            max_iters=max_iters, measure=measure, confidence=confidence, seed=seed)
    torch.set_num_threads(1)
    t = tasks_mod.get(task)
    model, meta = tasks_mod.load_checkpoint(checkpoint, task=t)
    tm = TimeModel.load(time_model)
    res = run(model, t, config, time_model=tm)  # progress: on stderr (compress's default)
    save_compressed(out, res.model, res.plan, t.name, meta["net"], meta["arch"], {"base": res.base, "final": res.final})
    stem = out.with_suffix("")
    res.plan.save(str(stem) + ".plan.json")
    write_report(res, str(stem))
    written = f"{stem}.plan.json, {stem}.report.json, {stem}.report.md, {stem}.png"
    if tm.backend == "onnxruntime-cpu":  # compressed for ONNX Runtime: the network as ONNX too
        from fastdeepiot.compression.export import write_onnx

        onnx = write_onnx(res.model, torch.zeros(1, *t.input_shape), str(stem) + ".onnx",
                          protect=(checkpoint, time_model, out))
        written += f", {onnx}"
    typer.echo(history_table(res))
    for n in res.notes:
        typer.echo(f"note: {n}")
    typer.echo(f"wrote {out}, {written}")
