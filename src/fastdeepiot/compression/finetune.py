"""Training helpers: short fine-tuning and the full training recipe (both optionally distilled from the
original network), re-initialisation, and evaluation helpers."""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastdeepiot.errors import UserError


def accuracy(model: nn.Module, loader) -> float:
    """Top-1 accuracy in [0, 1] (the default metric)."""
    return mask_accuracy(correct_mask(model, loader))


def fraction_metric(metric: Callable) -> Callable:
    """A user's `metric(model, loader)` whose every value is checked: a finite number in [0, 1], the
    fraction the default metric (top-1 accuracy) gives. Drops, budgets and the reports' percentages are 100x
    it, so a metric on a 0-100 scale read 93 as 9300% (and any budget as met); it is a UserError instead."""
    def checked(model, loader) -> float:
        v = metric(model, loader)
        if torch.is_tensor(v) and v.numel() == 1:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
            raise UserError(f"the metric returned {v!r} ({type(v).__name__}); it must return a number in [0, 1] "
                            "(the fraction correct, as top-1 accuracy does)")
        f = float(v)
        if not math.isfinite(f) or not 0.0 <= f <= 1.0:
            hint = f" (on a 0-100 scale? return {f / 100:g} for {f:g}%)" if 1.0 < f <= 100.0 else ""
            raise UserError(f"the metric returned {f:g}; it must return a fraction in [0, 1]{hint}: accuracy "
                            "drops and budgets are percentage points of 100 x the metric")
        return f

    checked.__wrapped__ = metric
    return checked


def mask_accuracy(mask: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1] from per-sample correctness."""
    return int(mask.sum()) / max(len(mask), 1)


def correct_mask(model: nn.Module, loader) -> torch.Tensor:
    """Per-sample top-1 correctness (bool), in loader order (the loader must not shuffle)."""
    return correctness(*forward_all(model, loader))


def forward_all(model: nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """`model`'s outputs (logits) on every input of `loader` and the labels beside them, in loader order, in
    eval mode without gradients (the model's mode is restored)."""
    was = model.training
    model.eval()
    out, ys = [], []
    with torch.no_grad():
        for xb, yb in loader:
            out.append(model(xb))
            ys.append(yb)
    model.train(was)
    return (torch.cat(out), torch.cat(ys)) if out else (torch.zeros(0), torch.zeros(0, dtype=torch.long))


def outputs(model: nn.Module, loader) -> torch.Tensor:
    """`model`'s outputs (logits) on every input of `loader`, in loader order, in eval mode."""
    return forward_all(model, loader)[0]


def take_samples(loader, limit: int | None = None, max_bytes: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first samples of `loader` as tensors (inputs, labels; labels None for a loader of bare inputs):
    at most `limit` of them, and no further batch once the inputs reach `max_bytes`. A shuffling loader's
    generator is put back afterwards, so what fine-tuning later draws is what it would have drawn."""
    gen = getattr(loader, "generator", None)
    state = gen.get_state() if isinstance(gen, torch.Generator) else None
    xs, ys, got, nbytes = [], [], 0, 0
    try:
        for batch in loader:
            labelled = isinstance(batch, (tuple, list))
            xb = (batch[0] if labelled else batch).detach().cpu()
            xs.append(xb)
            if labelled and len(batch) > 1:
                ys.append(batch[1].detach().cpu())
            got += len(xb)
            nbytes += xb.element_size() * xb.numel()
            if (limit is not None and got >= limit) or (max_bytes is not None and nbytes >= max_bytes):
                break
    finally:
        if state is not None:
            gen.set_state(state)
    if not xs:
        return torch.zeros(0), None
    x, y = torch.cat(xs), (torch.cat(ys) if len(ys) == len(xs) else None)
    if limit is not None:
        x, y = x[:limit], (None if y is None else y[:limit])
    return x, y


def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """`model`'s outputs on the inputs `x`, in batches, in eval mode without gradients (mode restored)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) \
                else torch.zeros(0)
    finally:
        model.train(was)


class LabelChecked:
    """A user's loader whose labels are checked as they are read: integer class indices in [0, n_classes) for
    a network with n_classes outputs, beside finite inputs. A label outside would make top-1 accuracy silently 0 for it, or
    cross-entropy fail deep inside torch; here it is a UserError naming the loader. Labels of any integer dtype
    are yielded as int64, the one dtype cross-entropy takes (int32 labels failed inside torch). Iterates and
    measures (len) like the loader it wraps."""

    def __init__(self, loader, n_classes: int, name: str, label_dims: int = 1):
        # label_dims: the axes of one batch of labels, the network's output axes less the class axis
        self.loader, self.n_classes, self.name, self.label_dims = loader, int(n_classes), name, int(label_dims)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def generator(self):
        """The wrapped loader's shuffling generator (or None): `take_samples` puts it back after a sample."""
        return getattr(self.loader, "generator", None)

    def __iter__(self):
        for xb, yb in self.loader:
            self._check(xb, yb)
            yield xb, yb.long()

    def _check(self, xb, yb) -> None:
        where = f"the {self.name} loader"
        if not torch.is_tensor(yb) or yb.dtype.is_floating_point or yb.dtype.is_complex or yb.dtype == torch.bool:
            raise UserError(f"{where}: labels must be a tensor of integer class indices, got "
                            f"{yb.dtype if torch.is_tensor(yb) else type(yb).__name__} (one-hot or soft labels "
                            f"are not supported)")
        if yb.dim() != self.label_dims:  # (N, 1) labels broadcast against (N,) predictions: thousands of percent
            want = "one class index per sample, shape (batch,)" if self.label_dims == 1 else \
                f"{self.label_dims}-D class indices, the network's output without its class axis"
            raise UserError(f"{where}: labels must be {want}; got shape {tuple(yb.shape)}" + (
                " (squeeze the last axis)" if yb.dim() == self.label_dims + 1 and yb.shape[-1] == 1 else ""))
        n = len(xb) if torch.is_tensor(xb) else None
        if n is not None and xb.dtype.is_floating_point and not bool(torch.isfinite(xb).all()):
            # a network fed NaN computes NaN, and every accuracy would silently read as that of class 0
            raise UserError(f"{where}: its inputs hold NaN or infinite values (a batch of shape {tuple(xb.shape)}); "
                            "clean or impute them first")
        if n is not None and len(yb) != n:
            raise UserError(f"{where}: a batch holds {n} inputs and {len(yb)} labels")
        if yb.numel() and (int(yb.min()) < 0 or int(yb.max()) >= self.n_classes):
            raise UserError(f"{where}: labels must be class indices in [0, {self.n_classes}) for a network with "
                            f"{self.n_classes} outputs; found {int(yb.min())}..{int(yb.max())}")


def correctness(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample top-1 correctness (bool) of `logits` against `labels`."""
    if len(logits) == 0:
        return torch.zeros(0, dtype=torch.bool)
    return logits.argmax(1) == labels


def divergence(reference: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean KL divergence KL(softmax(reference) || softmax(logits)) in nats per sample (class axis 1; any
    further axes averaged): how far a network's output distribution moved from the reference network's on
    the same inputs. Needs no labels. 0 for identical outputs."""
    if len(reference) == 0:
        return 0.0
    kl = (F.softmax(reference, 1) * (F.log_softmax(reference, 1) - F.log_softmax(logits, 1))).sum(1)
    return max(0.0, float(kl.mean()))


def paired_drop_upper(base: torch.Tensor, new: torch.Tensor, confidence: float) -> float:
    """One-sided upper confidence bound, in percentage points, on the accuracy drop from `base` to `new`
    (per-sample correctness on the same samples): the paired difference of proportions, whose variance
    comes only from the samples the two models disagree on (McNemar's discordant pairs). `confidence`
    0.5 gives the point estimate; below 0.5 a lower bound (0.1: the one-sided 90% lower bound)."""
    from statistics import NormalDist

    n = len(base)
    if n == 0:
        return 0.0
    b = float((base & ~new).sum())  # right before, wrong now
    c = float((~base & new).sum())  # wrong before, right now
    d = (b - c) / n
    var = max(0.0, (b + c) / n**2 - d**2 / n)
    z = NormalDist().inv_cdf(confidence) if 0 < confidence < 1 else 0.0
    return 100.0 * (d + z * var**0.5)


def _cycle(loader):
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:  # an endless loop over nothing otherwise
            raise UserError("the training loader yields no batch")


def distilled_loss(out, yb, ce, teacher, xb, temperature: float, distill_weight: float):
    """`ce(out, yb)`, mixed with the KL divergence to `teacher`'s softened outputs on `xb` when a teacher is
    given (Hinton et al.: weight `distill_weight`, scaled by temperature squared)."""
    loss = ce(out, yb)
    if teacher is None:
        return loss
    with torch.no_grad():
        t = teacher(xb)
    kd = F.kl_div(F.log_softmax(out / temperature, 1), F.softmax(t / temperature, 1),
                  reduction="batchmean") * temperature**2
    return (1 - distill_weight) * loss + distill_weight * kd


def finetune(model: nn.Module, train_loader, steps: int, *, lr: float = 1e-3, teacher: nn.Module | None = None,
             distill_weight: float = 0.5, temperature: float = 4.0, seed: int = 0,
             weight_decay: float = 1e-4) -> nn.Module:
    """`steps` AdamW steps with a cosine learning rate; with a `teacher`, the loss mixes cross-entropy and
    the KL divergence to the teacher's softened outputs (Hinton et al.)."""
    if steps <= 0:
        return model.eval()
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    ce = nn.CrossEntropyLoss()
    if teacher is not None:
        teacher.eval()
    model.train()
    it = _cycle(train_loader)
    for _ in range(steps):
        xb, yb = next(it)
        loss = distilled_loss(model(xb), yb, ce, teacher, xb, temperature, distill_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
    return model.eval()


RECIPE = dict(epochs=25, lr=2e-3, min_epochs=8, weight_decay=1e-4, label_smoothing=0.05)  # tasks' default recipe


def recipe(task) -> dict:
    """The training recipe of `task` (its `train_defaults` over `RECIPE`); `RECIPE` for None."""
    d = dict(RECIPE)
    if task is not None:
        d.update({k: v for k, v in task.train_defaults.items() if k in d})
    return d


def train_distilled(model: nn.Module, train_dl, val_dl, steps: int, *, lr: float, teacher: nn.Module | None,
                    metric: Callable, weight_decay: float = 1e-4, label_smoothing: float = 0.05,
                    min_epochs: int = 1, distill_weight: float = 0.5, temperature: float = 4.0,
                    seed: int = 0) -> tuple[nn.Module, dict]:
    """The task training recipe (AdamW, one-cycle with 15% warm-up, label smoothing, gradient clipping,
    the weights of the best validation epoch at or after `min_epochs`) for `steps` optimizer steps, with
    the loss mixed with distillation from `teacher` as in `finetune`."""
    torch.manual_seed(seed)
    steps = max(1, int(steps))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    per_epoch = max(1, len(train_dl))
    done, epoch, best = 0, 0, (-1.0, None, 0)
    while done < steps:
        model.train()
        for xb, yb in train_dl:
            if done >= steps:
                break
            loss = distilled_loss(model(xb), yb, ce, teacher, xb, temperature, distill_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            if sched.last_epoch + 1 < steps:
                sched.step()
            done += 1
        epoch += 1
        model.eval()
        acc = float(metric(model, val_dl))
        if (epoch >= min_epochs or done >= steps) and acc > best[0]:
            best = (acc, copy.deepcopy(model.state_dict()), epoch)
    if best[1] is not None:
        model.load_state_dict(best[1])
    return model.eval(), {"optimizer_steps": done, "epochs": math.ceil(done / per_epoch), "best_epoch": best[2],
                          "best_val_accuracy": 100.0 * best[0]}


def train_recipe(model: nn.Module, train_dl, val_dl, steps: int, r: dict, *, teacher: nn.Module | None,
                 metric: Callable, seed: int = 0) -> tuple[nn.Module, dict]:
    """`train_distilled` with the settings of recipe `r` (`recipe(task)`: lr, weight decay, label smoothing,
    min_epochs)."""
    return train_distilled(model, train_dl, val_dl, steps, lr=float(r["lr"]), teacher=teacher, metric=metric,
                           weight_decay=float(r["weight_decay"]), label_smoothing=float(r["label_smoothing"]),
                           min_epochs=int(r["min_epochs"]), seed=seed)


def reinitialise(model: nn.Module, seed: int = 0) -> bool:
    """Re-initialise every parameter of `model` in place with its module's own `reset_parameters` (seeded).
    False, and `model` unchanged, when some parameter belongs to a module without `reset_parameters` (its
    initialisation is unknown)."""
    owners = [m for m in model.modules() if callable(getattr(m, "reset_parameters", None))]
    covered = {id(p) for m in owners for p in m.parameters(recurse=False)}
    if any(id(p) not in covered for p in model.parameters()):
        return False
    torch.manual_seed(seed)
    for m in owners:
        m.reset_parameters()  # BatchNorm's resets its running statistics too
    return True
