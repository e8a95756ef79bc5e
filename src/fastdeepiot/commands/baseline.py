"""CLI verb: run one external baseline (what a user would do instead of `compress`) on a checkpoint."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Optional

import torch
import typer

from fastdeepiot import tasks as tasks_mod
from fastdeepiot.checkpoints import continued_plan, load_checkpoint, save_compressed
from fastdeepiot.compression.baselines import TP_METHODS, budget_from_file, run_baseline
from fastdeepiot.compression.config import BASELINES as METHODS
from fastdeepiot.compression.config import MAX_BUDGET_STEPS, MAX_EPOCHS, MAX_FINETUNE_STEPS, MAX_ITERS, CompressConfig
from fastdeepiot.compression.export import write_onnx
from fastdeepiot.errors import UserError
from fastdeepiot.jsonutil import dump_json
from fastdeepiot.safeio import atomic_write_bytes, check_output
from fastdeepiot.timemodel.model import TimeModel

D = CompressConfig.default

app = typer.Typer()


@app.command()
def baseline(
    checkpoint: Path = typer.Argument(..., help="trained checkpoint (fastdeepiot train)"),
    task: str = typer.Option(..., "--task", help="task whose data fine-tunes and evaluates (har, userid, fashion)"),
    method: str = typer.Option(..., "--method", help="one of: " + ", ".join(METHODS)),
    out: Path = typer.Option(..., "-o", "--out", help="the network (.report.json beside it; .onnx on onnxruntime-cpu)"),
    ratio: Optional[float] = typer.Option(None, "--ratio", help="torch-pruning: share of channels removed; "
                                                               "width-scratch: width multiplier 1 - ratio"),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop",
                                                      help="netadapt-flops: accuracy budget (validation points)"),
    time_model: Optional[Path] = typer.Option(None, "--time-model",
                                              help="the device's time model: predicted ms, and the backend measured"),
    budget_steps: Optional[int] = typer.Option(None, "--budget-steps", min=1, max=MAX_BUDGET_STEPS,
                                               help="fine-tuning budget in optimizer steps"),
    budget_from: Optional[Path] = typer.Option(None, "--budget-from",
                                               help="a compress run's .report.json: use the optimizer steps it took"),
    iterative_steps: int = typer.Option(4, min=1, max=MAX_ITERS,
                                        help="torch-pruning: pruning steps, each followed by fine-tuning"),
    distill: bool = typer.Option(D("distill"), "--distill/--no-distill", help="distil from the original network"),
    finetune_steps: int = typer.Option(D("finetune_steps"), min=0, max=MAX_FINETUNE_STEPS,
                                       help="netadapt-flops: steps per evaluated candidate"),
    final_epochs: float = typer.Option(D("final_epochs"), min=0.0, max=MAX_EPOCHS,
                                       help="netadapt-flops: final fine-tune epochs"),
    max_iters: int = typer.Option(D("max_iters"), min=0, max=MAX_ITERS, help="netadapt-flops: search iterations at most"),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="measure base and result on the device"),
    seed: int = typer.Option(D("seed")),
    force: bool = typer.Option(False, "--force", help="overwrite output files of another kind"),
) -> None:
    """Run an external baseline with the same fine-tuning budget as a compress run (BatchNorm folded).

    `--out` is, for torch-pruning-*, an exported program (`torch.export.load(out).module()`; its pruned
    shapes have no plan), and for netadapt-flops and width-scratch a compressed checkpoint like the one
    `compress` writes (`fastdeepiot evaluate` reads it)."""
    if budget_steps is not None and budget_from is not None:
        raise UserError("give at most one of --budget-steps and --budget-from")
    if budget_from is not None:
        budget_steps = budget_from_file(budget_from)
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if method == "netadapt-flops" and ratio is not None:
        raise UserError("--ratio does not apply to netadapt-flops: it prunes as far as --max-accuracy-drop allows")
    if method != "netadapt-flops" and max_accuracy_drop is not None:
        raise UserError(f"--max-accuracy-drop applies to netadapt-flops only; {method} goes as far as --ratio says")
    inputs = [p for p in (checkpoint, time_model, budget_from) if p is not None]
    stem = out.with_suffix("")
    report, onnx = Path(f"{stem}.report.json"), Path(f"{stem}.onnx")
    if out.resolve() in (report.resolve(), onnx.resolve()):
        raise UserError(f"-o {out} collides with a file written beside it; give the network a .pt name")
    # torch-pruning's networks have no plan: they are written as torch.export programs, not checkpoints
    check_output(out, kind="exported" if method in TP_METHODS else "checkpoint", inputs=inputs, force=force,
                 option="-o")
    check_output(report, kind="report", inputs=inputs, force=force, option="-o (beside it)")
    torch.set_num_threads(1)
    t = tasks_mod.get(task)
    model, meta = load_checkpoint(checkpoint, task=t)
    tm = TimeModel.load(time_model) if time_model is not None else None
    if tm is not None and tm.backend == "onnxruntime-cpu":
        check_output(onnx, kind="onnx", inputs=inputs, force=force, option="-o (beside it)")
    config = CompressConfig(max_accuracy_drop=max_accuracy_drop if max_accuracy_drop is not None else 1.0,
                            distill=distill, finetune_steps=finetune_steps, final_epochs=final_epochs,
                            max_iters=max_iters, seed=seed)
    res = run_baseline(method, model, t, ratio=ratio, max_accuracy_drop=max_accuracy_drop, budget_steps=budget_steps,
                       time_model=tm, config=config, iterative_steps=iterative_steps, measure=measure,
                       progress=lambda s: typer.echo(s, err=True))
    x = torch.zeros(1, *t.input_shape)
    written = [out, report]
    if res.plan is not None:
        # a network pruned from the checkpoint continues its plan; one trained from scratch (res.arch) starts anew
        save_compressed(out, res.model, res.plan if res.arch else continued_plan(meta, res.plan), t.name, meta["net"],
                        res.arch or meta["arch"], {"base": res.base, "final": res.final})
    else:  # torch-pruning's shapes have no plan: an exported program (torch.export.load(out).module())
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.export.save(torch.export.export(res.model.eval(), (x,)), buf)
        atomic_write_bytes(out, buf.getvalue())
    dump_json(report, res.to_json())
    if tm is not None and tm.backend == "onnxruntime-cpu":
        written.append(write_onnx(res.model, x, onnx))
    b, f = res.base, res.final

    def ms(d):
        return "-" if d.get("measured_ms") is None else f"{d['measured_ms']:.4f} ms"

    typer.echo(f"{method}: {res.settings['optimizer_steps']} optimizer steps (budget {res.settings['budget_steps']})")
    typer.echo(f"base:  {ms(b)}, val {b['val_accuracy']:.2f}%, test {b.get('test_accuracy', float('nan')):.2f}%, "
               f"{b['params']} params")
    typer.echo(f"final: {ms(f)}, val {f['val_accuracy']:.2f}%, test {f.get('test_accuracy', float('nan')):.2f}%, "
               f"{f['params']} params")
    for n in res.notes:
        typer.echo(f"note: {n}")
    typer.echo("wrote " + ", ".join(str(p) for p in written))
