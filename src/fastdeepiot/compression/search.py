"""Execution-time-aware compression: `compress(model, task_or_loaders, time_model=tm, ...)`.

The search (what the README says)
---------------------------------
We use an iterative, NetAdapt-style search whose candidates come from the time model, ranked the HALP
way. Each iteration:

1. *Price.* The current network's layer calls are extracted once and each channel group (a conv's
   channels with their BatchNorm and consumers, a GRU's hidden units with their gate blocks, residual-
   coupled convs together, ...) is probed, so the predicted network time at *every* width of every group
   is one batched call of the time model (`PricedNetwork.curve`).
2. *Snap.* On each curve we keep only widths where predicted time actually drops: walking down from the
   current width, a width is a candidate only if it is faster than every wider width by more than a
   tolerance (`snap_widths`). On a staircase these are the step edges; a width just below an edge, which
   costs as much as the edge, is never chosen, nor one whose wider neighbour is faster.
3. *Propose.* Every registered move (`compression.moves`, one file each) proposes `Candidate`s.
   Width: per group, the widest snapped width that saves at least this iteration's time budget
   (a fraction of the current time), cutting at most half the group (an edge farther below only through
   stepping stones). Channels kept are the most important by L1 or first-order Taylor.
   Besides width, structural moves, each priced by the time model on a modified copy: remove a
   shape-preserving block (Identity), halve the number of steps a GRU/LSTM runs over (average-pool its
   input over time; the per-step cost is what width cannot remove), or drop its recurrence altogether
   (`moves.recurrence.StepDense`: the same width computed on every step at once, started from the
   layer's own candidate-gate weights).
4. *Choose.* Width proposals are ranked by predicted time saved per unit of importance lost (the greedy
   knapsack step of HALP); the best few plus the structural moves are each fine-tuned for a few steps and
   evaluated on the validation split (NetAdapt), and we keep the one with the smallest accuracy loss per
   millisecond saved. A structural step that lost more than `HOPELESS` times what a candidate may drop is
   not proposed again in the run (`mark_hopeless`).
5. *Stop* when the time target is met, or when the best candidate would exceed the accuracy budget
   (plus a slack that the final fine-tune recovers) even after trying stepping stones (a width part of the
   way to a step edge too far below to fine-tune back in one move; credited with its share of the edge's
   saving) and smaller steps; then fold BatchNorm into convs (unless the time model says that is slower),
   fine-tune longer, back off to an earlier state if the final accuracy misses the budget, let networks
   a user could have had instead compete with the result (`compare_uniform`, `compare_scratch`:
   uniformly narrower, and trained from scratch at the found architectures; `best_of`), and measure the
   result on the device.

This file only orchestrates (`_Search` holds one run's state): what each move proposes, how its plan
steps replay and its share of the lower bound are in the move's file; every setting is a field of
`config.CompressConfig`, which the result records.

Why this and not a one-shot knapsack: the time of a layer depends on its neighbours' widths (a conv's
cost moves with its input width too) and accuracy after fine-tuning is not additive in channel importance,
so re-pricing and re-scoring after every step is worth its cost on the small networks this targets; the
knapsack-style ratio keeps the number of fine-tuned candidates per step small.

Accuracy drops are in percentage points; `metric(model, loader)` returns a fraction in [0, 1] (checked on
every call: `finetune.fraction_metric`; a value outside it, e.g. a metric on a 0-100 scale, is a UserError). With the
default metric (top-1 accuracy), the final acceptance is statistical: a state is kept only if the
`confidence` (default 90%) one-sided upper bound on its validation accuracy drop, paired on the same
samples, is within `max_accuracy_drop` -- a near-saturated validation split (99% on a few people)
otherwise lets a point estimate of "0.1 points lost" pass a network that lost 3 points on new people.

With few labels (`acceptance="agreement"`; `compression.agreement`), that bound can reject every move (54
samples: one flipped sample is 1.85 points). The drop tested against the budget, for candidates and final
states alike, is then the upper bound of the state's top-1 disagreement with the original over a fixed pool
of validation and augmented inputs, which bounds the accuracy drop on that pool without labels; candidates
are ranked by the disagreement rate they add per unit saved. A final state must also pass the labelled check
`agreement.labelled_confirms` (its labelled drop not shown to exceed the budget), and each final state's
agreement figures next to its labelled ones go to `run["acceptance"]["calibration"]`.

The training guard (`train_guard`, on by default, budget runs with the default metric): every state, candidates
and final states alike, must also keep its top-1 accuracy on a fixed sample of training inputs within the same
limit as on validation (its point drop from the original's). A validation split of a few people can be easier
than the people the network will meet: on har, removing one of two blocks, fine-tuned as a candidate, lost
2.2-2.6 points on the training sample and 3.3-5.8 on the test people but 0.06-0.48 on the five validation
people (docs/results/guard_steps_har.md), and the final fine-tune later refits the training people, not the
new ones. Fine-tuning sees the sample, so the check errs towards passing; it only ever rejects more.

Every state's divergence from the original (the mean KL divergence of its outputs from the original's over the
validation inputs; no labels) is recorded. With a fidelity budget (`max_divergence`) it is also a condition of
acceptance, for candidates (within `DIVERGENCE_SLACK` times the budget) and final states (within it), under
either acceptance: it keeps ranking networks where a saturated validation split cannot (README, "A fidelity
budget").
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from fastdeepiot import tasks
from fastdeepiot.compression.agreement import AgreementPool, labelled_confirms, labelled_lower, labelled_tolerance
from fastdeepiot.compression.config import DIVERGENCE_SLACK, CompressConfig
from fastdeepiot.compression.cost import FlopsCost, TimeCost, unmodelled_ops
from fastdeepiot.compression.finetune import (LabelChecked, accuracy, correctness, divergence, finetune, forward_all,
                                              fraction_metric,
                                              logits_of, mask_accuracy, outputs, paired_drop_upper, recipe,
                                              reinitialise, take_samples, train_recipe)
from fastdeepiot.compression.importance import l1_importance
from fastdeepiot.compression.moves import MOVES, Candidate, Context, Move, apply_step, output_shape
from fastdeepiot.compression.plan import Plan
from fastdeepiot.compression.progress import reporter
from fastdeepiot.compression.surgery import prune_channels
from fastdeepiot.devices import check_available
from fastdeepiot.graph.channels import trace_channels
from fastdeepiot.errors import TargetUnreachableError, UserError
from fastdeepiot.jsonutil import to_jsonable
from fastdeepiot.profiling.timer import time_networks
from fastdeepiot.timemodel.model import TimeModel


TRAIN_GUARD_SAMPLES = 4096  # training samples the training guard judges states on (`CompressConfig.train_guard`)
TRAIN_GUARD_BYTES = 256 * 2**20  # ... and no more input bytes than this (large images: fewer samples)
HOPELESS = 2.0  # a structural step losing this many times the search's limit is not tried again (`mark_hopeless`)


def _key(step: dict) -> str:
    """A plan step as a hashable key."""
    return json.dumps(step, sort_keys=True)


@dataclass
class CompressResult:
    """What `compress` returns: the pruned network, its plan, the stage history, the original's and
    the result's measures, notes, the settings it ran with (`dataclasses.asdict(CompressConfig)`
    plus `elapsed_s`; also in `plan.meta["settings"]`), and what the run did (`run`: `optimizer_steps`
    of fine-tuning in all, `steps_per_epoch`, `compared`: what `best_of` compared; with agreement acceptance,
    `acceptance`: the pool's composition, the labelled split's size and tolerance, and the calibration
    records)."""

    model: nn.Module
    plan: Plan
    history: list[dict]
    base: dict
    final: dict
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)  # optimizer_steps taken (the baselines' budget), compared

    def to_json(self) -> dict:
        """The result as plain JSON values (a setting given as a numpy number is written as a number)."""
        return to_jsonable({"base": self.base, "final": self.final, "history": self.history, "notes": self.notes,
                            "settings": self.settings, "run": self.run, "plan": self.plan.to_json()})


def _task_of(task_or_loaders):
    """The task object `task_or_loaders` names or is, or None (loaders)."""
    if isinstance(task_or_loaders, str):
        return tasks.get(task_or_loaders)
    if hasattr(task_or_loaders, "loaders") and hasattr(task_or_loaders, "n_classes"):
        return task_or_loaders
    return None


def _resolve_data(task_or_loaders, metric, batch_size, seed):
    """(train, val, test loaders, metric): a user's metric checked on every call (`fraction_metric`)."""
    if metric is not None:
        metric = fraction_metric(metric)
    task = _task_of(task_or_loaders)
    if task is not None:
        tr, va, te = task.loaders(batch_size=batch_size, seed=seed)
        return tr, va, te, metric or task.metric
    if isinstance(task_or_loaders, (tuple, list)) and len(task_or_loaders) in (2, 3):
        loaders = list(task_or_loaders) + [None] * (3 - len(task_or_loaders))
        shapes = {}
        for dl, name in zip(loaders, ("training", "validation", "test")):
            if dl is not None or name != "test":
                shapes[name] = tuple(_first_batch(dl, name)[0].shape[1:])
        odd = [n for n, sh in shapes.items() if sh != shapes["validation"]]
        if odd:  # the network is priced and judged at the validation shape
            raise UserError(f"the {odd[0]} loader's inputs have shape (batch, {', '.join(map(str, shapes[odd[0]]))}) "
                            f"but the validation loader's (batch, {', '.join(map(str, shapes['validation']))}): "
                            "every loader must feed the network the same input shape")
        return loaders[0], loaders[1], loaders[2], metric or accuracy
    raise UserError("task_or_loaders must be a task (name or object) or (train_loader, val_loader[, test_loader])")


def _first_batch(loader, name: str):
    """The first batch of a user's loader, checked to be (inputs, labels) tensors: an empty loader or one of
    another shape is a UserError before any work."""
    try:
        it = iter(loader)
    except TypeError as e:
        raise UserError(f"the {name} loader is not iterable ({e})") from None
    if it is loader:  # a generator or iterator: the search reads every loader many times
        raise UserError(f"the {name} loader is a one-shot iterator ({type(loader).__name__}); give a DataLoader or "
                        "a list of (inputs, labels) batches, which can be read again")
    try:
        batch = next(it)
    except StopIteration:
        raise UserError(f"the {name} loader yields no batch") from None
    except TypeError as e:
        raise UserError(f"the {name} loader is not iterable ({e})") from None
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(torch.is_tensor(b) for b in batch)):
        got = type(batch).__name__ + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise UserError(f"the {name} loader must yield (inputs, labels) pairs of tensors, got a {got}")
    return batch


def label_checked(loaders, out_shape):
    """`loaders` (training, validation, test or None) wrapped so that their labels are checked against a
    network with output shape `out_shape` (classes on axis 1) as they are read (`finetune.LabelChecked`); a loader
    already wrapped (netadapt-flops hands run_baseline's loaders to compress) is kept as it is."""
    if len(out_shape) < 2:
        return loaders
    return tuple(dl if dl is None or isinstance(dl, LabelChecked) else
                 LabelChecked(dl, out_shape[1], name, label_dims=len(out_shape) - 1)
                 for dl, name in zip(loaders, ("training", "validation", "test")))


def measure_models(models: list[nn.Module], x: torch.Tensor, backend: str, threads: int = 1,
                   rounds: int = 5) -> list[float]:
    """Measured ms of each model on `backend`: the one network timer (`profiling.timer.time_networks`),
    all models in one fresh timing process, `rounds` interleaved rounds, best of rounds. The models are
    not changed."""
    return [t.median_ms for t in time_networks(models, x, backend, threads=threads, rounds=rounds)]


def measure_threads(backend: str, time_model) -> int:
    """The thread count a result is measured at on `backend`: the time model's when `backend` is its device
    (its predictions are for that count; predict --measure and the main job time at it too), else 1."""
    if time_model is not None and backend == time_model.backend:
        return int(time_model.device.get("threads", 1))
    return 1


def lower_bound(model: nn.Module, x: torch.Tensor, cost, moves=tuple(MOVES), max_seq_factor: int = 8) -> float:
    """Predicted cost of the smallest network the search could reach: each move in `moves` takes a copy
    as far as it can (`Move.smallest`: every removable block removed, every group at width 1, every RNN
    shortened as far as allowed and then its recurrence dropped, BatchNorm folded), in `bound_stage`
    order."""
    m = copy.deepcopy(model)
    ctx = Context(x, output_shape(m, x), max_seq_factor=max_seq_factor)
    for mv in sorted((MOVES[name] for name in moves), key=lambda mv: mv.bound_stage):
        m = mv.smallest(m, ctx)
    return cost.price(m, x)


def compress(model: nn.Module, task_or_loaders, config: CompressConfig | None = None, *, time_model=None,
             example_input: torch.Tensor | None = None, metric: Callable | None = None,
             progress: bool | Callable[[str], Any] | None = True, **settings) -> CompressResult:
    """Prune `model` (a copy) so that its predicted time on `time_model`'s device drops as far as possible
    within `max_accuracy_drop` percentage points of validation accuracy, or until it reaches
    `target_ms` (TargetUnreachableError when the search space cannot reach it). See the module doc.

    The settings are a `CompressConfig` (`config`), keyword arguments (any field of it, e.g.
    `max_accuracy_drop=0.5, final_epochs=8`), or both: keyword arguments override the config.

    Fine-tuning distils from the original network by default (`distill`): on userid (torch-cpu), the
    search with distillation and an 8-epoch final fine-tune found a network at 0.50x the original's
    measured time with no test accuracy lost, where labels alone and 1.5 epochs lost 0.6-2 validation
    points on every pruned state (docs/results/compress_earlier.md).

    cost="flops" uses FLOPs in place of the time model (the ablation; `time_model` is then still used,
    when given, to report predicted ms). The model must be torch.fx-traceable and built from the
    supported families (Conv1d/2d, BatchNorm, Linear, GRU, LSTM, pooling, activations, add, concat).

    With a small labelled validation split, `acceptance="agreement"` judges states by their disagreement
    with the original over unlabelled and augmented inputs instead (`compression.agreement`; the module
    doc above). `max_divergence` (nats) also holds every kept state's outputs near the original's on the
    validation inputs (a fidelity budget; no labels needed); each state's divergence is recorded either way.

    `progress`: True (the default) writes the search's progress to stderr (a line per candidate and
    step, under a bar of iterations on a terminal), False writes nothing, a callable gets each line."""
    config = CompressConfig.build(config, **settings)
    check_arguments(model, time_model, example_input)
    if config.cost == "time" and time_model is None:
        raise UserError("cost='time' needs a time_model")
    if config.measure:
        check_measurable(config.backend, time_model)
    with reporter(progress, config.max_iters) as report:
        run = _Search(model, task_or_loaders, config, time_model, example_input, metric, report)
        stop_reason = run.search()
        return run.finish(stop_reason)


def check_arguments(model, time_model, example_input) -> None:
    """compress()'s and run_baseline's objects of the wrong kind are a UserError before any work (not an
    AttributeError deep inside the search)."""
    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise UserError(f"model must be a torch.nn.Module (not TorchScript), got {type(model).__name__}")
    if time_model is not None and not isinstance(time_model, TimeModel):
        raise UserError(f"time_model must be a fastdeepiot.TimeModel (TimeModel.load(path)), got "
                        f"{type(time_model).__name__}")
    if example_input is not None and not torch.is_tensor(example_input):
        raise UserError(f"example_input must be one input tensor with its batch dimension, got "
                        f"{type(example_input).__name__}")


def check_measurable(backend: str | None, time_model) -> None:
    """The device a run measures on at its end (`backend`, else the time model's) known and available here,
    asked before any work: a torch-cuda time model on a CPU machine was refused only after the whole search,
    its result thrown away. Nothing to ask when there is no device to measure on."""
    name = backend or (time_model.backend if time_model is not None else None)
    if name is not None:
        check_available(name)


def example_and_output(model: nn.Module, example_input: torch.Tensor | None, val_dl, task,
                       paired: bool) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(x, output shape): the network's example input (`example_input` at its own batch, as predict_network
    prices it; the first validation input, batch 1, when none is given), checked against the validation
    inputs, and its output checked against what the default metric (top-1 accuracy over classes) and the task
    need."""
    xb, _ = next(iter(val_dl))
    x = (xb[:1] if example_input is None else example_input).detach().cpu()
    if x.numel() == 0 or not x.is_floating_point():
        raise UserError(f"example_input must be a non-empty floating-point tensor, got shape {tuple(x.shape)} "
                        f"of {x.dtype}")
    if tuple(x.shape[1:]) != tuple(xb.shape[1:]):
        raise UserError(f"example_input has shape {tuple(x.shape)}, but the validation inputs are "
                        f"{tuple(xb.shape)} (batch first): the network is priced at the shape it will run at")
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as e:  # noqa: BLE001 - the user's network refusing its input: their error, named
        raise UserError(f"the model fails on the example input {tuple(x.shape)}: {type(e).__name__}: {e}") from None
    if not torch.is_tensor(out):
        raise UserError(f"the model must return one tensor of outputs, got {type(out).__name__}")
    if paired and out.dim() != 2:
        raise UserError(f"the model's output has shape {tuple(out.shape)}; top-1 accuracy needs (batch, classes) "
                        "logits (or pass your own metric)")
    if paired and task is not None and out.shape[1] != task.n_classes:
        raise UserError(f"the model outputs {out.shape[1]} classes, task {task.name!r} has {task.n_classes}")
    return x, tuple(out.shape)


class _Search:
    """One compress() run: the data, the pricing, the current state and what has been recorded."""

    def __init__(self, model: nn.Module, task_or_loaders, config: CompressConfig, time_model,
                 example_input: torch.Tensor | None, metric: Callable | None, report):
        c = self.config = config
        self.report = report
        self.time_model = time_model
        self.paired = metric is None  # the default metric is top-1 accuracy: per-sample correctness is available
        self.task = _task_of(task_or_loaders)  # its training recipe, for networks trained from scratch
        self.train_dl, self.val_dl, self.test_dl, self.metric = _resolve_data(task_or_loaders, metric,
                                                                              c.batch_size, c.seed)
        self.pricer = TimeCost(time_model) if c.cost == "time" else FlopsCost()
        self.timer = TimeCost(time_model) if time_model is not None else None
        self.teacher = copy.deepcopy(model).eval() if c.distill else None
        self.model = copy.deepcopy(model).eval()
        if not any(p.requires_grad for p in self.model.parameters()):
            raise UserError("the model has no trainable parameters (none, or all with requires_grad=False); "
                            "compression prunes and fine-tunes them")
        self.x, self.out_shape = example_and_output(self.model, example_input, self.val_dl, self.task, self.paired)
        if self.task is None:  # a user's loaders: labels checked as they are read (ours are class indices)
            self.train_dl, self.val_dl, self.test_dl = label_checked(
                (self.train_dl, self.val_dl, self.test_dl), self.out_shape)
        self.moves: list[Move] = [mv for name, mv in MOVES.items() if name in c.moves]
        self.t0 = time.time()
        self.unmodelled = unmodelled_ops(self.pricer, self.model, self.x)
        # the original's validation outputs (every state's divergence is measured from them) and labels
        self.base_out, self.val_y = forward_all(self.model, self.val_dl)
        self.base_correct = correctness(self.base_out, self.val_y) if self.paired else None
        self.base_acc = (100.0 * mask_accuracy(self.base_correct) if self.paired
                         else self.acc(self.model, self.val_dl))
        # the training guard: a fixed sample of labelled training inputs and the original's correctness on it
        self.train_x = self.train_y = self.base_train_correct = None
        if c.train_guard and self.paired and self.budget_mode:
            tx, ty = take_samples(self.train_dl, TRAIN_GUARD_SAMPLES, TRAIN_GUARD_BYTES)
            if ty is not None and len(ty):
                self.train_x, self.train_y = tx, ty
                self.base_train_correct = correctness(logits_of(self.model, tx), ty)
        self.base_cost = self.pricer.price(self.model, self.x)
        self.base = {"val_accuracy": self.base_acc, "cost": self.base_cost, "predicted_ms": self.pred_ms(self.model),
                     "params": sum(p.numel() for p in self.model.parameters())}
        self.history = [{"stage": "base", "move": None, "cost": self.base_cost,
                         "predicted_ms": self.base["predicted_ms"], "val_accuracy": self.base_acc}]
        self.notes: list[str] = []
        self.compared: list[dict] = []  # what best_of compared
        self.given_up: list[tuple] = []  # snapshots the final back-off gave up, the deepest first
        self.hopeless: dict[str, str] = {}  # structural steps far over the search's limit: not tried again
        self.optimizer_steps = 0  # every fine-tuning step taken (candidates + final): the baselines' budget
        self.plan = Plan(list(self.x.shape[1:]), [], {"criterion": c.criterion, "cost": c.cost})
        self.cur_acc, self.cur_cost = self.base_acc, self.base_cost
        # (model, plan steps, validation accuracy, cost) of every accepted state, the original first
        self.snapshots = [(copy.deepcopy(self.model), list(self.plan.steps), self.cur_acc, self.cur_cost)]
        # an unreachable target is the run's one line: said before any progress line (it printed 'base: ...'
        # first, two lines for one error) and before the agreement pool is built
        self.check_target()
        self.log(f"base: {self.base_cost:.4g} {self.pricer.unit}, val accuracy {self.base_acc:.2f}%")
        # agreement acceptance: the pool every state is judged on, built once (None: judged on labels)
        self.pool = (AgreementPool.build(self.model, self.train_dl, self.val_dl, seed=c.seed)
                     if c.acceptance == "agreement" and self.budget_mode else None)
        self.cur_disagree = 0.0  # the current state's disagreement rate on the pool (agreement), points
        self.calibration: list[dict] = []  # agreement: every final state's pool and labelled figures
        if self.pool is not None:
            self.log(f"agreement acceptance: {len(self.pool)} pool inputs ({self.pool.n_val} validation, "
                     f"{self.pool.n_noise} noisy, {self.pool.n_mixup} mixed), {self.pool.n_labelled} labelled")

    # ---------------------------------------------------------------- measures

    def log(self, text: str) -> None:
        self.report.message(text)

    def acc(self, m: nn.Module, loader) -> float:
        return 100.0 * float(self.metric(m, loader))

    def divergence(self, m: nn.Module) -> float:
        """Mean KL divergence of `m`'s outputs from the original's over the validation inputs (nats)."""
        return divergence(self.base_out, outputs(m, self.val_dl))

    def diverges(self, div: float, slack: float = 1.0) -> bool:
        """`div` exceeds the fidelity budget (`max_divergence`, times `slack`); False without one."""
        c = self.config
        return self.budget_mode and c.max_divergence is not None and div > c.max_divergence * slack

    def over_text(self) -> str:
        """What a candidate must stay within during the search, in words."""
        c = self.config
        text = f"> {self.search_limit:g} points"
        if c.max_divergence is not None:
            text += f" or divergence > {c.max_divergence * DIVERGENCE_SLACK:g} nats"
        return text

    def train_drop(self, m: nn.Module) -> float | None:
        """`m`'s top-1 accuracy drop from the original's on the training guard's sample, in points (None: no
        guard)."""
        if self.base_train_correct is None:
            return None
        now = correctness(logits_of(m, self.train_x), self.train_y)
        return 100.0 * (mask_accuracy(self.base_train_correct) - mask_accuracy(now))

    def guard_fails(self, train_drop: float | None, limit: float) -> bool:
        """The training guard rejects a drop over `limit`; never without a guard (`train_drop` None: no sample,
        which is taken only in budget runs with the default metric)."""
        return train_drop is not None and train_drop > limit

    def pred_ms(self, m: nn.Module) -> float | None:
        return self.timer.price(m, self.x) if self.timer is not None else None

    @property
    def search_limit(self) -> float:
        """What a candidate may drop during the search (budget mode): the budget plus `search_slack` points,
        which the final fine-tune recovers."""
        return self.config.max_accuracy_drop + self.config.search_slack

    @property
    def budget_mode(self) -> bool:
        """The run keeps an accuracy budget (rather than aiming for a time target)."""
        return self.config.max_accuracy_drop is not None and self.config.target_ms is None

    def final_accuracy(self, m: nn.Module) -> tuple[float, float]:
        """A final state's validation accuracy and the drop its acceptance tests: with the default metric
        the paired upper bound (both from one pass's per-sample correctness), else the point estimate."""
        a, bound, _, _ = self._labelled(m)
        return a, bound

    def _labelled(self, m: nn.Module) -> tuple[float, float, torch.Tensor | None, float]:
        """`final_accuracy`'s figures, the per-sample correctness they came from (None: custom metric) and the
        divergence from the original, from one pass over the validation inputs (default metric)."""
        if self.base_correct is None:
            a = self.acc(m, self.val_dl)
            return a, self.base_acc - a, None, self.divergence(m)
        out, _ = forward_all(m, self.val_dl)
        mask = correctness(out, self.val_y)
        a = 100.0 * mask_accuracy(mask)
        bound = max(self.base_acc - a, paired_drop_upper(self.base_correct, mask, self.config.confidence))
        return a, bound, mask, divergence(self.base_out, out)

    def judge_final(self, m: nn.Module, stage: str) -> tuple[float, float, bool, dict]:
        """A final state's validation accuracy, the drop its acceptance tests, whether it is accepted, and
        (agreement) its calibration record, which also goes to `self.calibration`. Labels: the paired bound
        within the budget. Agreement: the pool's disagreement bound within the budget, and the labelled
        validation drop not shown to exceed the budget (`agreement.labelled_confirms`)."""
        c = self.config
        fa, bound, mask, div = self._labelled(m)
        td = self.train_drop(m)
        guard_ok = not self.guard_fails(td, c.max_accuracy_drop)  # (no guard sample outside budget mode)
        if self.pool is None:
            ok = (not self.budget_mode or bound <= c.max_accuracy_drop) and not self.diverges(div) and guard_ok
            return fa, bound, ok, {"val_divergence": div, "train_drop": td}
        lower = None if mask is None else labelled_lower(self.base_correct, mask, c.confidence)
        rec = {"stage": stage, **self.pool.judge(m, c.confidence), "train_disagreement": self.pool.train_disagreement(m),
               "val_accuracy": fa, "val_drop": self.base_acc - fa, "val_drop_upper": bound, "val_drop_lower": lower,
               "val_divergence": div, "train_drop": td}
        rec["labelled_ok"] = labelled_confirms(c.max_accuracy_drop, lower=lower, drop=rec["val_drop"],
                                               n_labelled=self.pool.n_labelled)
        rec["accepted"] = (rec["drop_upper_bound"] <= c.max_accuracy_drop and rec["labelled_ok"]
                           and not self.diverges(div) and guard_ok)
        self.calibration.append(rec)
        return fa, rec["drop_upper_bound"], rec["accepted"], rec

    # ---------------------------------------------------------------- the search

    def check_target(self) -> None:
        """TargetUnreachableError when even the smallest reachable network misses `target_ms`."""
        c = self.config
        if c.target_ms is None:
            return
        lb = lower_bound(self.model, self.x, TimeCost(self.time_model), c.moves, c.max_seq_factor)
        if lb > c.target_ms:
            raise TargetUnreachableError(
                f"target {c.target_ms:g} ms cannot be met: even the smallest network the search can reach "
                f"(every layer at width 1, removable blocks removed, sequences shortened, recurrences dropped) "
                f"is predicted at "
                f"{lb:.3f} ms on {self.time_model.backend}; the network starts at {self.base_cost:.3f} ms")

    def propose(self, step_fraction: float) -> list[Candidate]:
        c = self.config
        ctx = Context(self.x, self.out_shape, self.pricer, self.cur_cost, step_fraction, c.criterion,
                      self.train_dl, c.importance_batches, c.max_seq_factor)
        return [cand for mv in self.moves for cand in mv.propose(self.model, ctx)
                if cand.ratio is not None or _key(cand.step) not in self.hopeless]

    def mark_hopeless(self, cand: Candidate, drop: float, it: int) -> None:
        """A structural step whose short fine-tune lost more than `HOPELESS` times what a candidate may drop
        during the search (the budget plus its slack) is not proposed again in this run: removing a block or a
        recurrence the network needs loses the same 24-39 points at every iteration (userid on onnxruntime-cpu:
        two of five fine-tunes per iteration went to such steps). Widths are proposed anew each iteration."""
        if cand.ratio is not None or not self.budget_mode or drop <= HOPELESS * self.search_limit:
            return
        self.hopeless[_key(cand.step)] = cand.desc
        self.log(f"  iter {it}: {cand.desc} lost {drop:.2f} points (> {HOPELESS:g} x {self.search_limit:g}): "
                 "not tried again")

    def search(self) -> str:
        """Take steps until the target is met, no candidate saves time, the budget stops it or
        `max_iters`; returns why it stopped."""
        c = self.config
        step_fraction = c.step_fraction
        for it in range(1, c.max_iters + 1):
            self.report.iteration(it - 1)
            if c.target_ms is not None and self.cur_cost <= c.target_ms:
                return "target met"
            cands = self.propose(step_fraction)
            if not cands:
                return "no candidate saves time"
            cand, m, over = self.choose(cands, it)
            if self.budget_mode and over:
                if step_fraction > 0.01:  # NetAdapt: smaller steps before giving up
                    step_fraction /= 2
                    self.log(f"iter {it}: every candidate is over budget ({self.over_text()}); "
                             f"step fraction -> {step_fraction:.3f}")
                    continue
                if self.diverges(cand.divergence, DIVERGENCE_SLACK):
                    return (f"next step's outputs would diverge from the original's by {cand.divergence:.4f} nats "
                            f"(budget {c.max_divergence:g}, {DIVERGENCE_SLACK:g}x during the search)")
                if self.guard_fails(cand.train_drop, self.search_limit):
                    return (f"next step would drop {cand.train_drop:.2f} points on the training guard's "
                            f"{len(self.train_y)} training samples")
                if self.pool is not None:
                    return (f"next step would disagree with the original on up to {cand.drop_upper:.2f}% of the "
                            "agreement pool")
                return f"next step would drop {self.base_acc - cand.val_accuracy:.2f} points"
            self.accept(cand, m, it, len(cands))
        self.report.iteration(c.max_iters)
        return "max_iters"

    def choose(self, cands: list[Candidate], it: int) -> tuple[Candidate, nn.Module, bool]:
        """The best of the top candidates after a short fine-tune (and of the stepping stones when
        every direct step is over budget): (candidate, its fine-tuned network, over budget)."""
        c = self.config
        plain = [cd for cd in cands if not cd.stone]
        widths = sorted([cd for cd in plain if cd.ratio is not None], key=lambda cd: -cd.ratio)[:c.evaluate_top]
        struct = sorted([cd for cd in plain if cd.ratio is None], key=lambda cd: -cd.saving)[:3]
        stones = sorted([cd for cd in cands if cd.stone], key=lambda cd: -cd.ratio)[:c.evaluate_top]
        if not widths + struct:  # only stones left
            widths, stones = stones, []
        cand, m, over = self.evaluate(widths + struct, it)
        if over and stones and self.budget_mode:
            self.log(f"iter {it}: every candidate is over budget ({self.over_text()}); "
                     "approaching the distant step edges gradually")
            cand2, m2, over2 = self.evaluate(stones, it)
            if not over2:
                cand, m, over = cand2, m2, over2
        return cand, m, over

    def evaluate(self, group: list[Candidate], it: int) -> tuple[Candidate, nn.Module, bool]:
        """Fine-tune each candidate briefly; the best by accuracy lost per unit saved, within budget first."""
        c = self.config
        best = None
        for cand in group:
            m = copy.deepcopy(self.model)
            MOVES[cand.move].apply(m, cand.step, self.x)
            finetune(m, self.train_dl, c.finetune_steps, lr=c.lr, teacher=self.teacher, seed=c.seed + it)
            self.optimizer_steps += c.finetune_steps
            a = self.acc(m, self.val_dl)
            cand.val_accuracy = a
            cand.divergence = self.divergence(m)
            cand.train_drop = self.train_drop(m)
            guard = "" if cand.train_drop is None else f", training drop {cand.train_drop:.2f}"
            if self.pool is None:
                cand.score = (max(0.0, self.cur_acc - a) + 0.1) / cand.saving
                self.log(f"  iter {it}: {cand.desc}: -{cand.saving:.4g} {self.pricer.unit}, val {a:.2f}%, "
                         f"divergence {cand.divergence:.4f}{guard}")
                drop = self.base_acc - a
                within = not self.budget_mode or drop <= self.search_limit
            else:  # ranked by the disagreement it adds, judged by its bound (not by the few labels)
                j = self.pool.judge(m, c.confidence)
                cand.drop_upper, cand.disagreement = j["drop_upper_bound"], j["pool_disagreement"]
                cand.score = (max(0.0, cand.disagreement - self.cur_disagree) + 0.1) / cand.saving
                self.log(f"  iter {it}: {cand.desc}: -{cand.saving:.4g} {self.pricer.unit}, val {a:.2f}%, "
                         f"disagrees on {cand.disagreement:.2f}% of the pool (bound {cand.drop_upper:.2f}){guard}")
                drop = cand.drop_upper
                within = drop <= self.search_limit
            self.mark_hopeless(cand, drop, it)
            within = (within and not self.diverges(cand.divergence, DIVERGENCE_SLACK)
                      and not (self.budget_mode and self.guard_fails(cand.train_drop, self.search_limit)))
            key = (not within, cand.score)
            if best is None or key < best[2]:
                best = (cand, m, key)
        return best[0], best[1], best[2][0]

    def accept(self, cand: Candidate, m: nn.Module, it: int, n_cands: int) -> None:
        self.model, self.cur_acc = m, cand.val_accuracy
        self.cur_cost = self.pricer.price(self.model, self.x)
        self.plan.steps.append(cand.step)
        self.snapshots.append((copy.deepcopy(self.model), list(self.plan.steps), self.cur_acc, self.cur_cost))
        self.history.append({"stage": f"iter {it}", "move": cand.desc, "cost": self.cur_cost,
                             "predicted_ms": self.pred_ms(self.model), "val_accuracy": self.cur_acc,
                             "val_divergence": cand.divergence, "candidates": n_cands, "elapsed_s": time.time() - self.t0})
        if cand.train_drop is not None:
            self.history[-1]["train_drop"] = cand.train_drop
        if self.pool is not None:
            self.cur_disagree = cand.disagreement
            self.history[-1].update(pool_disagreement=cand.disagreement, drop_upper_bound=cand.drop_upper)
        self.log(f"iter {it}: {cand.desc} -> {self.cur_cost:.4g} {self.pricer.unit}, val {self.cur_acc:.2f}%")

    # ---------------------------------------------------------------- the end

    def finish_moves(self, m: nn.Module) -> tuple[nn.Module, list[dict]]:
        """The moves' `finish` steps (BatchNorm folded) on `m` before the final fine-tune, each kept
        unless the time model prices its result slower (none without a time model to ask)."""
        if self.timer is None:
            return m, []
        steps: list[dict] = []
        for mv in self.moves:
            trial = copy.deepcopy(m)
            done = mv.finish(trial, self.x)
            if not done:
                continue
            before, after = self.timer.price(m, self.x), self.timer.price(trial, self.x)
            if after > before * 1.005:
                note = f"{mv.title} skipped: predicted {before:.4f} -> {after:.4f} ms"
                if note not in self.notes:
                    self.notes.append(note)
                continue
            m, steps = trial, steps + done
        return m, steps

    def drop_trailing(self) -> None:
        """A state that saved nothing over the one before it (a stepping stone whose edge was never
        reached) only lost accuracy: end at the last state that saved time."""
        trailing = 0
        while len(self.snapshots) > 1 and self.snapshots[-1][3] >= self.snapshots[-2][3] * (1 - 1e-3):
            self.snapshots.pop()
            trailing += 1
        if trailing:
            self.notes.append(f"dropped {trailing} trailing step(s) that saved no {self.pricer.unit} "
                              "(stepping stones short of their edge)")

    def final_state(self) -> tuple[nn.Module, list[dict]]:
        """Fine-tune the last state longer; back off to earlier states while the accuracy budget is
        missed. Returns the final network and its plan steps."""
        c = self.config
        while True:
            model, steps, _, _ = self.snapshots[-1]
            model, finish_steps = self.finish_moves(copy.deepcopy(model))
            self.final_tune(model)
            fa, bound, ok, rec = self.judge_final(model, f"final fine-tune of {len(steps)} steps")
            self.history.append({"stage": "final fine-tune", "move": f"{len(steps)} steps",
                                 "cost": self.pricer.price(model, self.x), "predicted_ms": self.pred_ms(model),
                                 "val_accuracy": fa, "drop_upper_bound": bound, "val_divergence": rec["val_divergence"],
                                 "within_budget": ok})
            if rec["train_drop"] is not None:
                self.history[-1]["train_drop"] = rec["train_drop"]
            if self.pool is not None:
                self.history[-1].update(pool_disagreement=rec["pool_disagreement"], labelled_ok=rec["labelled_ok"])
            self.log(f"final fine-tune of {len(steps)}-step state: val {fa:.2f}%, divergence {rec['val_divergence']:.4f}")
            if ok or len(self.snapshots) == 1:
                break
            self.given_up.append(self.snapshots.pop())
            self.notes.append(f"backed off: {len(steps)} steps gave {self.base_acc - fa:.2f} points drop after "
                              + (f"fine-tuning (upper bound {bound:.2f})" if self.pool is None else
                                 f"fine-tuning on the labelled split ({'within' if rec['labelled_ok'] else 'beyond'} "
                                 f"its tolerance), disagreement bound {bound:.2f} points")
                              + (f", divergence {rec['val_divergence']:.4f} nats (budget {c.max_divergence:g})"
                                 if c.max_divergence is not None else "")
                              + (f", {rec['train_drop']:.2f} points on the training guard's samples"
                                 if rec["train_drop"] is not None else ""))
        if len(self.snapshots) == 1 and self.budget_mode and not ok:
            # even the unpruned fine-tuned model misses: keep the original
            self.notes.append("no pruned state met the accuracy budget; returning the original model")
            if self.guard_fails(rec["train_drop"], c.max_accuracy_drop):
                self.notes.append(f"the training guard rejected the fine-tuned original too: it lost "
                                  f"{rec['train_drop']:.2f} points on {len(self.train_y)} training samples")
            return copy.deepcopy(self.snapshots[0][0]), list(steps)
        return model, list(steps) + finish_steps

    def best_of(self, model: nn.Module, steps: list[dict]) -> tuple[nn.Module, list[dict]]:
        """Networks a user could have had instead compete with the search's result (`model`):
        `compare_uniform`, the original pruned uniformly to each width multiplier (top-L1 channels of every
        group) and fine-tuned as the result was; `compare_scratch`, the architectures of the result, of the
        two faster states the final back-off gave up, and of each uniform width, re-initialised and trained
        from scratch with the training recipe and distillation (BatchNorm folded after training). Each is
        priced with the time model; one predicted faster than the result (or, from scratch at the result's
        own architecture, as fast) is trained, and replaces the result when its validation accuracy is at
        least the result's and its drop within the budget; the fastest such wins. What was compared goes to
        `self.compared` (the result's `run["compared"]`)."""
        c = self.config
        if not (c.compare_uniform or c.compare_scratch) or self.timer is None:
            return model, steps
        ours_ms = self.timer.price(model, self.x)
        ours_acc, _ = self.final_accuracy(model)
        original = self.snapshots[0][0]
        # (name, network before the finish moves, its plan steps, trained from scratch)
        contenders: list[tuple[str, nn.Module, list[dict], bool]] = []
        uniform = []
        if c.compare_uniform:
            cg = trace_channels(original, self.x)
            groups = [g for g in cg.groups() if g.width > 1]
            imp = l1_importance(original, cg, groups)
            for w in c.compare_uniform:
                keep = {g.name: sorted(int(i) for i in np.argsort(-imp[g.name], kind="stable")[:max(1, round(w * g.width))])
                        for g in groups}
                uniform.append((f"uniform x{w:g}", prune_channels(copy.deepcopy(original), self.x, keep),
                                [{"op": "prune", "keep": keep}]))
        contenders += [(name, m, st, False) for name, m, st in uniform]
        if c.compare_scratch:
            archs = ([("result", *self.snapshots[-1][:2])] if len(self.snapshots) > 1 else [])
            archs += [(f"given-up {len(st)}-step state", m, st) for m, st, _, _ in self.given_up[-2:]]
            contenders += [(f"{name}, from scratch", m, st, True) for name, m, st in archs + uniform]
        best = None
        for name, net, plan_steps, scratch in contenders:
            m, finish = self.finish_moves(copy.deepcopy(net))
            ms = self.timer.price(m, self.x)
            same = scratch and plan_steps == self.snapshots[-1][1]  # the result's own architecture
            rec = {"candidate": name, "from_scratch": scratch, "predicted_ms": ms, "faster": ms < ours_ms}
            if ms < ours_ms or (same and ms <= ours_ms):
                m = self.train_from_scratch(copy.deepcopy(net), finish) if scratch else self.final_tune(m)
                if m is None:
                    rec["skipped"] = "a module without reset_parameters: its initialisation is unknown"
                else:
                    acc, bound, within, judged = self.judge_final(m, name)
                    ok = within and (acc > ours_acc if ms >= ours_ms else acc >= ours_acc)
                    rec.update(val_accuracy=acc, drop_upper_bound=bound, val_divergence=judged["val_divergence"],
                               beats_result=ok)
                    if ok and (best is None or (ms, -acc) < (best[2], -best[3])):
                        best = (m, plan_steps + finish, ms, acc, name)
            self.compared.append(rec)
            self.log(f"{name}: predicted {ms:.4f} ms (result {ours_ms:.4f})"
                     + (f", val {rec['val_accuracy']:.2f}%" if "val_accuracy" in rec else ""))
        if best is None:
            return model, steps
        self.notes.append(f"{best[4]} was predicted at {best[2]:.4f} ms against the search's {ours_ms:.4f} ms, at "
                          f"{best[3]:.2f}% validation accuracy against {ours_acc:.2f}%: returned instead of the "
                          "search's result")
        return best[0], best[1]

    def final_tune(self, m: nn.Module) -> nn.Module:
        """The final fine-tune (`final_epochs`, distilled), counted in the optimizer steps."""
        c = self.config
        steps = int(round(c.final_epochs * len(self.train_dl)))
        finetune(m, self.train_dl, steps, lr=c.lr, teacher=self.teacher, seed=c.seed)
        self.optimizer_steps += steps
        return m

    def train_from_scratch(self, m: nn.Module, finish: list[dict]) -> nn.Module | None:
        """`m` re-initialised and trained with the task's recipe (`scratch_epochs` when set) and distillation,
        its best validation epoch kept, then the `finish` steps (BatchNorm folded) replayed; None when `m`
        cannot be re-initialised."""
        c = self.config
        if not reinitialise(m, seed=c.seed):
            return None
        r = recipe(self.task)
        epochs = c.scratch_epochs if c.scratch_epochs is not None else float(r["epochs"])
        r["min_epochs"] = min(int(r["min_epochs"]), max(1, int(epochs)))
        steps = max(1, int(round(epochs * len(self.train_dl))))
        m, rec = train_recipe(m, self.train_dl, self.val_dl, steps, r, teacher=self.teacher, metric=self.metric,
                              seed=c.seed)
        self.optimizer_steps += rec["optimizer_steps"]
        for step in finish:
            apply_step(m, step, self.x)
        return m.eval()

    def measure(self, model: nn.Module, final: dict) -> None:
        """Measure the original and the result on the device (a failure is a note, not an error)."""
        c = self.config
        if not (c.measure and (c.backend or self.time_model is not None)):
            return
        bk = c.backend or self.time_model.backend
        self.base["backend"] = final["backend"] = bk
        try:
            self.base["measured_ms"], final["measured_ms"] = measure_models(
                [self.snapshots[0][0], model], self.x, bk, threads=measure_threads(bk, self.time_model))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - a backend that cannot run the network: say so, keep the result
            self.notes.append(f"measurement on {bk} failed: {type(e).__name__}: {e}")

    def finish(self, stop_reason: str) -> CompressResult:
        c = self.config
        if c.target_ms is not None and self.cur_cost > c.target_ms:
            raise TargetUnreachableError(
                f"target {c.target_ms:g} ms not reached: the search stopped ({stop_reason}) at a predicted "
                f"{self.cur_cost:.3f} ms (start {self.base_cost:.3f} ms)")
        self.notes.append(f"search stopped: {stop_reason}")
        if self.hopeless:
            self.notes.append(f"not tried again after losing more than {HOPELESS:g}x the search's limit: "
                              + ", ".join(self.hopeless.values()))
        if self.unmodelled:
            self.notes.append("not priced by the cost model (left out of predicted times): "
                              + ", ".join(self.unmodelled))
        self.drop_trailing()
        model, self.plan.steps = self.best_of(*self.final_state())
        final = {"val_accuracy": self.acc(model, self.val_dl), "val_divergence": self.divergence(model),
                 "cost": self.pricer.price(model, self.x),
                 "predicted_ms": self.pred_ms(model), "params": sum(p.numel() for p in model.parameters())}
        if self.base_train_correct is not None:
            final["train_drop"] = self.train_drop(model)
        if self.test_dl is not None:
            self.base["test_accuracy"] = self.acc(self.snapshots[0][0], self.test_dl)
            final["test_accuracy"] = self.acc(model, self.test_dl)
        self.measure(model, final)
        if "measured_ms" in final:
            self.history.append({"stage": "measured", "move": final["backend"], "cost": final["cost"],
                                 "predicted_ms": final["predicted_ms"], "measured_ms": final["measured_ms"],
                                 "val_accuracy": final["val_accuracy"]})
        assert output_shape(model, self.x) == self.out_shape
        settings = {**dataclasses.asdict(c), "moves": list(c.moves), "elapsed_s": time.time() - self.t0}
        run = {"optimizer_steps": self.optimizer_steps, "steps_per_epoch": len(self.train_dl),
               "compared": self.compared}
        if self.pool is not None:
            j = self.pool.judge(model, c.confidence)
            final.update(pool_disagreement=j["pool_disagreement"], drop_upper_bound=j["drop_upper_bound"],
                         val_disagreement=j["val_disagreement"])
            run["acceptance"] = {"mode": "agreement", "confidence": c.confidence, "pool": self.pool.describe(),
                                 "n_labelled": self.pool.n_labelled,
                                 "labelled_check": (f"paired {c.confidence:g} lower bound of the validation drop "
                                                    "within the budget" if self.base_correct is not None else
                                                    "validation drop within the budget plus one sample "
                                                    f"({labelled_tolerance(self.pool.n_labelled):.3g} points)"),
                                 "calibration": self.calibration}
        self.plan.meta.update({"base": self.base, "final": final, "settings": settings, "run": run})
        return CompressResult(model.eval(), self.plan, self.history, self.base, final, self.notes, settings, run)
