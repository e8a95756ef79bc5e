"""CLI verbs: tasks, train, evaluate."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from fastdeepiot import tasks
from fastdeepiot.checkpoints import MAX_NETWORK_BYTES, estimate_parameters, load_checkpoint, save_checkpoint
from fastdeepiot.compression.config import MAX_EPOCHS
from fastdeepiot.devices import check_threads
from fastdeepiot.errors import UserError, check_seed
from fastdeepiot.safeio import atomic_write_text, check_output
from fastdeepiot.tasks import fashion, hapt
from fastdeepiot.tasks.training import seed_everything


# This module's verbs; cli.py merges them into the one app (commands never import cli).
app = typer.Typer()


@app.command("tasks")
def tasks_cmd(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    download: Optional[str] = typer.Option(None, "--download", help="download a task's data (har, userid, fashion) "
                                           "into the cache folder instead of listing"),
):
    """List the tasks: data source, sizes, classes, reference network."""
    if download is not None:  # an empty name is an unknown task, not "list them"
        tasks.get(download)  # unknown name -> exit 2
        if download in ("har", "userid"):
            print(f"downloaded {hapt.download()}")
        else:
            print(f"downloaded into {fashion.download()}")
        return
    infos = tasks.list_tasks()
    if as_json:
        print(json.dumps([{"name": i.name, "description": i.description, "source": i.source,
                           "n_classes": i.n_classes, "input_shape": list(i.input_shape), "sizes": i.sizes,
                           "net": i.net} for i in infos], indent=2))
        return
    t = Table(title="fastdeepiot tasks")
    for col in ("task", "classes", "input", "train/val/test", "network", "source"):
        t.add_column(col, overflow="fold")
    for i in infos:
        sizes = "/".join(str(i.sizes[k]) for k in ("train", "val", "test")) if i.sizes else "data missing"
        t.add_row(i.name, str(i.n_classes), "x".join(map(str, i.input_shape)), sizes, i.net,
                  i.source)
    Console().print(t)
    for i in infos:
        print(f"  {i.name}: {i.description}")


def _parse_channels(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"cannot read channel list {text!r}; use e.g. 32,64") from None
    if not vals or min(vals) < 1:
        raise UserError(f"channel list {text!r} must hold positive integers")
    return vals


@app.command()
def train(
    task: str = typer.Argument(..., help="task name (see `fastdeepiot tasks`)"),
    out: Path = typer.Option(..., "--out", "-o", help="checkpoint to write (.pt)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, max=MAX_EPOCHS,
                                         help="maximum epochs (default: per task)"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    width_mult: float = typer.Option(1.0, "--width-mult", min=0.01, help="scale every layer's width"),
    lr: Optional[float] = typer.Option(None, "--lr", help="peak learning rate (default: per task)"),
    patience: Optional[int] = typer.Option(None, "--patience", min=1, max=MAX_EPOCHS,
                                           help="early-stopping patience in epochs"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch intra-op threads for training "
                                          "(default: 2, or the number of cores if fewer)"),
    time_stride: Optional[int] = typer.Option(None, "--time-stride", help="DeepSense: time downsampling before the GRU"),
    channels: Optional[str] = typer.Option(None, "--channels", help="SmallCNN: conv channels, e.g. 32,64,128"),
    metrics_json: Optional[Path] = typer.Option(None, "--metrics-json", help="write test metrics here "
                                                "(default: OUT with .json)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    force: bool = typer.Option(False, "--force", help="overwrite outputs of another kind"),
):
    """Train a task's reference network; print test accuracy; write the checkpoint and metrics JSON."""
    t = tasks.get(task)
    check_seed(seed, "--seed")
    if not math.isfinite(width_mult) or width_mult > 64:
        raise UserError(f"--width-mult must be a finite number in [0.01, 64], got {width_mult}")
    if lr is not None and (not math.isfinite(lr) or not 0 < lr <= 10):
        raise UserError(f"--lr must be a finite number in (0, 10], got {lr}")
    if time_stride is not None and time_stride < 1:
        raise UserError(f"--time-stride must be at least 1, got {time_stride}")
    threads = check_threads(threads, "--threads") if threads is not None else min(2, os.cpu_count() or 1)
    mpath = metrics_json or out.with_suffix(".json")
    if Path(mpath).resolve() == Path(out).resolve():
        raise UserError(f"--metrics-json {mpath} is the checkpoint path -o; give two different files")
    out = check_output(out, kind="checkpoint", force=force, option="-o")
    mpath = check_output(mpath, kind="metrics", force=force, option="--metrics-json")
    arch: dict = {"width_mult": width_mult}
    if time_stride is not None:
        arch["time_stride"] = time_stride
    if channels is not None:
        arch["channels"] = _parse_channels(channels)
    n = estimate_parameters(t.net, {**t.default_arch, **arch})
    if n is not None and 4 * n > MAX_NETWORK_BYTES:
        raise UserError(f"this {t.net} would have {n:.3g} parameters (about {4 * n / 2**30:.1f} GB); "
                        f"choose a smaller --width-mult or --channels")
    seed_everything(seed)  # the initial weights too
    model = t.make_model(**arch)
    res = tasks.train(model, t, epochs=epochs, lr=lr, patience=patience, seed=seed, progress=not quiet,
                      threads=threads)
    _, _, test_dl = t.loaders()
    m = tasks.evaluate(model, test_dl, t.n_classes, t.class_names)
    m.update({"task": t.name, "best_val_accuracy": res.best_val_accuracy, "best_epoch": res.best_epoch,
              "epochs_run": len(res.history), "seed": seed, "arch": model.arch, "net": model.net_name,
              "params": tasks.count_params(model), "macs": tasks.count_macs(model, t.input_shape),
              "history": res.history})
    save_checkpoint(out, model, t.name, metrics={k: m[k] for k in ("accuracy", "macro_f1", "n")})
    atomic_write_text(mpath, json.dumps(m, indent=2) + "\n")
    print(f"{t.name}: test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} (n={m['n']}); "
          f"best val {res.best_val_accuracy:.4f} at epoch {res.best_epoch}")
    print(f"wrote {out} and {mpath}")


@app.command()
def evaluate(
    task: str = typer.Argument(..., help="task name"),
    checkpoint: Path = typer.Argument(..., help="checkpoint written by `fastdeepiot train`"),
    split: str = typer.Option("test", "--split", help="test, val or train"),
    as_json: bool = typer.Option(False, "--json", help="print the full metrics as JSON"),
):
    """Evaluate a checkpoint on a task's test (or val/train) split."""
    t = tasks.get(task)
    if split not in ("train", "val", "test"):
        raise UserError(f"unknown split {split!r}; use test, val or train")
    model, meta = load_checkpoint(checkpoint, task=t)
    dls = dict(zip(("train", "val", "test"), t.loaders()))
    m = tasks.evaluate(model, dls[split], t.n_classes, t.class_names)
    m["task"], m["split"], m["checkpoint"] = t.name, split, str(checkpoint)
    if as_json:
        print(json.dumps(m, indent=2))
        return
    print(f"{t.name} ({split}, n={m['n']}): accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}")
    for c in m["per_class"]:
        print(f"  {c['name']:>14}: f1 {c['f1']:.3f}  precision {c['precision']:.3f}  recall {c['recall']:.3f}"
              f"  support {c['support']}")
