"""Training (seeded, early stopping on validation accuracy).

Metrics live in `tasks.metrics`, checkpoints in `fastdeepiot.checkpoints`."""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fastdeepiot.errors import UserError, check_seed
from fastdeepiot.tasks.registry import get


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_accuracy: float = 0.0
    best_epoch: int = -1


def seed_everything(seed: int) -> None:
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def _val_scores(model: nn.Module, loader, n_classes: int) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on a loader."""
    model.eval()
    correct, loss, n = 0, 0.0, 0
    for x, y in loader:
        out = model(x)
        loss += nn.functional.cross_entropy(out, y, reduction="sum").item()
        correct += int((out.argmax(1) == y).sum())
        n += len(y)
    return (correct / n if n else 0.0), (loss / n if n else 0.0)


def _progress(enabled: bool):
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), disable=not enabled, transient=False)


def train(model: nn.Module, task, *, epochs: int | None = None, lr: float | None = None,
          patience: int | None = None, seed: int = 0, progress: bool = True, train_loader=None,
          val_loader=None, batch_size: int | None = None, weight_decay: float = 1e-4,
          label_smoothing: float = 0.05, threads: int | None = None,
          min_epochs: int | None = None) -> TrainResult:
    """Train `model` on `task` (a Task or its name) with AdamW + one-cycle cosine schedule; keep the
    weights of the epoch with the best validation accuracy (ties: lower validation loss) among epochs
    >= `min_epochs` (early epochs at a high learning rate can tie a saturated validation set while
    generalising worse); stop after `patience` epochs without improvement past `min_epochs`.
    Defaults come from `task.train_defaults`. Returns the model with the best weights."""
    task = get(task) if isinstance(task, str) else task
    d = task.train_defaults
    epochs = int(epochs if epochs is not None else d.get("epochs", 10))
    lr = float(lr if lr is not None else d.get("lr", 1e-3))
    patience = int(patience if patience is not None else d.get("patience", 5))
    batch_size = int(batch_size or d.get("batch_size", 64))
    min_epochs = max(1, min(epochs, int(min_epochs if min_epochs is not None else d.get("min_epochs", 1))))
    if epochs < 1:
        raise UserError("epochs must be at least 1")
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"the learning rate must be a positive finite number, got {lr}")
    if patience < 1 or batch_size < 1:
        raise UserError("patience and batch_size must be at least 1")
    prev_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(model, task, epochs, lr, patience, seed, progress, train_loader, val_loader, batch_size,
                      weight_decay, label_smoothing, min_epochs)
    finally:
        torch.set_num_threads(prev_threads)


def _train(model, task, epochs, lr, patience, seed, progress, train_loader, val_loader, batch_size,
           weight_decay, label_smoothing, min_epochs) -> TrainResult:
    seed_everything(seed)
    if train_loader is None or val_loader is None:
        tr, va, _ = task.loaders(batch_size=batch_size, seed=seed)
        train_loader = train_loader or tr
        val_loader = val_loader or va
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, epochs * len(train_loader))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    result = TrainResult(model)
    best_state, best_acc, best_loss, stale = None, -1.0, math.inf, 0
    with _progress(progress) as bar:
        job = bar.add_task(f"train {task.name}", total=epochs, info="")
        for epoch in range(epochs):
            model.train()
            total, n = 0.0, 0
            for x, y in train_loader:
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                if sched.last_epoch + 1 < steps:
                    sched.step()
                total += loss.item() * len(y)
                n += len(y)
            val, val_loss = _val_scores(model, val_loader, task.n_classes)
            train_loss = total / max(n, 1)
            result.history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                                   "val_accuracy": val})
            if not math.isfinite(train_loss):
                raise UserError(f"training diverged (loss {train_loss}); lower the learning rate")
            # best = highest validation accuracy, ties broken by lower validation loss
            if epoch + 1 < min_epochs:
                pass
            elif val > best_acc or (val == best_acc and val_loss < best_loss):
                best_acc, best_loss, stale, result.best_epoch = val, val_loss, 0, epoch + 1
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            bar.update(job, advance=1, info=f"loss {train_loss:.3f}  val acc {val:.3f}  best {best_acc:.3f}")
            if stale >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.best_val_accuracy = float(best_acc)
    return result
