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
3. *Propose.* Per group, the widest snapped width that saves at least this iteration's time budget
   (a fraction of the current time). Channels kept are the most important by L1 or first-order Taylor.
   Besides width, structural moves, each priced by the time model on a modified copy: remove a
   shape-preserving block (Identity), halve the number of steps a GRU/LSTM runs over (average-pool its
   input over time; the per-step cost is what width cannot remove), or drop its recurrence altogether
   (`surgery.StepDense`: the same width computed on every step at once, started from the layer's own
   candidate-gate weights).
4. *Choose.* Width proposals are ranked by predicted time saved per unit of importance lost (the greedy
   knapsack step of HALP); the best few plus the structural moves are each fine-tuned for a few steps and
   evaluated on the validation split (NetAdapt), and we keep the one with the smallest accuracy loss per
   millisecond saved.
4. *Stop* when the time target is met, or when the best candidate would exceed the accuracy budget
   (plus a slack that the final fine-tune recovers) even after trying stepping stones (a width part of the
   way to a step edge too far below to fine-tune back in one move; credited with its share of the edge's
   saving) and smaller steps; then fold BatchNorm into convs (unless the time model says that is slower),
   fine-tune longer, back off to an earlier state if the final accuracy misses the budget, and measure
   the result on the device.

Why this and not a one-shot knapsack: the time of a layer depends on its neighbours' widths (a conv's
cost moves with its input width too) and accuracy after fine-tuning is not additive in channel importance,
so re-pricing and re-scoring after every step is worth its cost on the small networks this targets; the
knapsack-style ratio keeps the number of fine-tuned candidates per step small.

Accuracy drops are in percentage points; `metric(model, loader)` returns a fraction in [0, 1]. With the
default metric (top-1 accuracy), the final acceptance is statistical: a state is kept only if the
`confidence` (default 90%) one-sided upper bound on its validation accuracy drop, paired on the same
samples, is within `max_accuracy_drop` -- a near-saturated validation split (99% on a few people)
otherwise lets a point estimate of "0.1 points lost" pass a network that lost 3 points on new people.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from fastdeepiot.compression import surgery
from fastdeepiot.compression.cost import FlopsCost, PricedNetwork, TimeCost, snap_widths
from fastdeepiot.compression.deps import trace_channels
from fastdeepiot.compression.finetune import accuracy, correct_mask, finetune, mask_accuracy, paired_drop_upper
from fastdeepiot.compression.importance import CRITERIA
from fastdeepiot.compression.plan import Plan, apply_step
from fastdeepiot.errors import TargetUnreachableError, UserError
from fastdeepiot.profiling.timer import time_networks

MOVES = ("width", "remove", "sequence", "recurrence", "fold_bn")


@dataclass
class CompressResult:
    model: nn.Module
    plan: Plan
    history: list[dict]
    base: dict
    final: dict
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"base": self.base, "final": self.final, "history": self.history, "notes": self.notes,
                "settings": self.settings, "plan": self.plan.to_json()}


def _resolve_data(task_or_loaders, metric, batch_size, seed):
    task = None
    if isinstance(task_or_loaders, str):
        from fastdeepiot import tasks

        task = tasks.get(task_or_loaders)
    elif hasattr(task_or_loaders, "loaders") and hasattr(task_or_loaders, "n_classes"):
        task = task_or_loaders
    if task is not None:
        tr, va, te = task.loaders(batch_size=batch_size, seed=seed)
        return tr, va, te, metric or task.metric
    if isinstance(task_or_loaders, (tuple, list)) and len(task_or_loaders) in (2, 3):
        loaders = list(task_or_loaders) + [None] * (3 - len(task_or_loaders))
        return loaders[0], loaders[1], loaders[2], metric or accuracy
    raise UserError("task_or_loaders must be a task (name or object) or (train_loader, val_loader[, test_loader])")


def measure_models(models: list[nn.Module], x: torch.Tensor, backend: str, threads: int = 1,
                   rounds: int = 5) -> list[float]:
    """Measured ms of each model on `backend`: the one network timer (`profiling.timer.time_networks`),
    all models in one fresh timing process, `rounds` interleaved rounds, best of rounds. The models are
    not changed."""
    return [t.median_ms for t in time_networks(models, x, backend, threads=threads, rounds=rounds)]


def _rnn_names(model: nn.Module) -> list[str]:
    """Recurrent layers (GRU/LSTM, or the SequencePool wrapping one), by the name a plan step uses."""
    wrapped = {n + ".rnn" for n, m in model.named_modules() if isinstance(m, surgery.SequencePool)}
    return [n for n, m in model.named_modules()
            if (isinstance(m, surgery.SequencePool) and isinstance(m.rnn, (nn.GRU, nn.LSTM)))
            or (isinstance(m, (nn.GRU, nn.LSTM)) and n not in wrapped)]


def _rnn(model: nn.Module, name: str) -> nn.Module:
    m = model.get_submodule(name)
    return m.rnn if isinstance(m, surgery.SequencePool) else m


def _seq_len(model, name, x) -> int | None:
    rnn = _rnn(model, name)
    seen = {}

    def hook(mod, inp, out):
        seen.setdefault("t", int(inp[0].shape[1 if mod.batch_first else 0]))

    h = rnn.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        h.remove()
    return seen.get("t")


def _without_recurrence(model, name, x, out_shape) -> nn.Module | None:
    """A copy of `model` with the recurrence at `name` dropped, or None where it cannot be (not a
    single-layer one-direction GRU/LSTM, or the network then fails or changes its output shape)."""
    if not surgery.droppable_recurrence(_rnn(model, name)):
        return None
    m = copy.deepcopy(model)
    surgery.drop_recurrence(m, name)
    try:
        return m if _output_shape(m, x) == out_shape else None
    except Exception:  # noqa: BLE001 - the model uses the RNN's state in a way StepDense cannot mimic
        return None


def _output_shape(model, x):
    with torch.no_grad():
        return tuple(model.eval()(x).shape)


def lower_bound(model, x, cost, moves=MOVES, max_seq_factor: int = 8) -> float:
    """Predicted cost of the smallest network the search could reach (every group at width 1, every
    removable block removed, every RNN shortened as far as allowed and then its recurrence dropped)."""
    m = copy.deepcopy(model)
    out = _output_shape(m, x)
    if "remove" in moves:
        for name in surgery.removable_modules(m, x):
            surgery.remove_module(m, name)
    if "width" in moves:
        cg = trace_channels(m, x)
        surgery.prune_channels(m, x, {g.name: [0] for g in cg.groups()}, cg)
    if "sequence" in moves:
        for name in _rnn_names(m):
            f = 1
            while f < max_seq_factor and (_seq_len(m, name, x) or 0) >= 4:
                trial = copy.deepcopy(m)
                surgery.shorten_sequence(trial, name, 2)
                if _output_shape(trial, x) != out:
                    break
                m, f = trial, f * 2
    if "recurrence" in moves:
        for name in _rnn_names(m):
            m = _without_recurrence(m, name, x, out) or m
    if "fold_bn" in moves:
        surgery.fold_all_batchnorm(m, x)
    return cost.price(m, x)


def compress(model: nn.Module, task_or_loaders, *, time_model=None, example_input: torch.Tensor | None = None,
             max_accuracy_drop: float | None = None, target_ms: float | None = None,
             metric: Callable | None = None, criterion: str = "taylor", cost: str = "time",
             distill: bool = True, finetune_steps: int = 100, final_epochs: float = 4.0, lr: float = 1e-3,
             max_iters: int = 25, step_fraction: float = 0.08, evaluate_top: int = 2, search_slack: float = 1.0,
             moves: tuple[str, ...] = MOVES, max_seq_factor: int = 8, measure: bool = True,
             confidence: float = 0.9,
             backend: str | None = None, batch_size: int = 64, importance_batches: int = 8, seed: int = 0,
             progress: Callable[[str], Any] | None = None) -> CompressResult:
    """Prune `model` (a copy) so that its predicted time on `time_model`'s device drops as far as possible
    within `max_accuracy_drop` percentage points of validation accuracy, or until it reaches
    `target_ms` (TargetUnreachableError when the search space cannot reach it). See the module doc.

    Fine-tuning distils from the original network by default (`distill`): on userid (torch-cpu), the
    search with distillation and an 8-epoch final fine-tune found a network at 0.50x the original's
    measured time with no test accuracy lost, where labels alone and 1.5 epochs lost 0.6-2 validation
    points on every pruned state (docs/results/compress.md).

    cost="flops" uses FLOPs in place of the time model (the ablation; `time_model` is then still used,
    when given, to report predicted ms). The model must be torch.fx-traceable and built from the
    supported families (Conv1d/2d, BatchNorm, Linear, GRU, LSTM, pooling, activations, add, concat)."""
    if max_accuracy_drop is None and target_ms is None:
        raise UserError("give max_accuracy_drop (percentage points) or target_ms")
    if cost == "time" and time_model is None:
        raise UserError("cost='time' needs a time_model")
    if criterion not in CRITERIA:
        raise UserError(f"unknown importance criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    bad = [m for m in moves if m not in MOVES]
    if bad:
        raise UserError(f"unknown moves {bad}; known: {', '.join(MOVES)}")
    log = progress or (lambda s: None)
    paired = metric is None  # the default metric is top-1 accuracy: per-sample correctness is available
    train_dl, val_dl, test_dl, metric = _resolve_data(task_or_loaders, metric, batch_size, seed)
    if example_input is None:
        xb, _ = next(iter(val_dl))
        example_input = xb[:1]
    x = example_input[:1].detach().cpu()
    pricer = TimeCost(time_model) if cost == "time" else FlopsCost()
    timer = TimeCost(time_model) if time_model is not None else None
    teacher = copy.deepcopy(model).eval() if distill else None
    model = copy.deepcopy(model).eval()
    out_shape = _output_shape(model, x)
    t0 = time.time()

    def acc(m, loader):
        return 100.0 * float(metric(m, loader))

    def pred_ms(m):
        return timer.price(m, x) if timer is not None else None

    from fastdeepiot.compression.cost import unmodelled_ops

    unm = unmodelled_ops(pricer, model, x)
    base_correct = correct_mask(model, val_dl) if paired else None
    base_acc = 100.0 * mask_accuracy(base_correct) if paired else acc(model, val_dl)

    def final_accuracy(m):
        """A final state's validation accuracy and the drop its acceptance tests: with the default metric
        the paired upper bound (both from one pass's per-sample correctness), else the point estimate."""
        if base_correct is None:
            a = acc(m, val_dl)
            return a, base_acc - a
        mask = correct_mask(m, val_dl)
        a = 100.0 * mask_accuracy(mask)
        return a, max(base_acc - a, paired_drop_upper(base_correct, mask, confidence))
    base_cost = pricer.price(model, x)
    base = {"val_accuracy": base_acc, "cost": base_cost, "predicted_ms": pred_ms(model),
            "params": sum(p.numel() for p in model.parameters())}
    history = [{"stage": "base", "move": None, "cost": base_cost, "predicted_ms": base["predicted_ms"],
                "val_accuracy": base_acc}]
    log(f"base: {base_cost:.4g} {pricer.unit}, val accuracy {base_acc:.2f}%")
    if target_ms is not None:
        tcost = TimeCost(time_model) if cost == "time" else None
        if tcost is None:
            raise UserError("target_ms needs cost='time'")
        lb = lower_bound(model, x, tcost, moves, max_seq_factor)
        if lb > target_ms:
            raise TargetUnreachableError(
                f"target {target_ms:g} ms cannot be met: even the smallest network the search can reach "
                f"(every layer at width 1, removable blocks removed, sequences shortened, recurrences dropped) "
                f"is predicted at "
                f"{lb:.3f} ms on {time_model.backend}; the network starts at {base_cost:.3f} ms")
    plan = Plan(list(x.shape[1:]), [], {"criterion": criterion, "cost": cost})
    cur_acc, cur_cost = base_acc, base_cost
    snapshots = [(copy.deepcopy(model), list(plan.steps), cur_acc, cur_cost)]
    stop_reason = "max_iters"
    for it in range(1, max_iters + 1):
        if target_ms is not None and cur_cost <= target_ms:
            stop_reason = "target met"
            break
        cands = _candidates(model, x, pricer, cur_cost, step_fraction, criterion, train_dl,
                            importance_batches, moves, out_shape, max_seq_factor)
        if not cands:
            stop_reason = "no candidate saves time"
            break
        def evaluate(group):
            """Fine-tune each candidate briefly; the best by accuracy lost per unit saved, within budget first."""
            best = None
            for c in group:
                m = copy.deepcopy(model)
                apply_step(m, c["step"], x)
                finetune(m, train_dl, finetune_steps, lr=lr, teacher=teacher, seed=seed + it)
                a = acc(m, val_dl)
                c["val_accuracy"] = a
                c["score"] = (max(0.0, cur_acc - a) + 0.1) / c["saving"]
                log(f"  iter {it}: {c['desc']}: -{c['saving']:.4g} {pricer.unit}, val {a:.2f}%")
                within = max_accuracy_drop is None or target_ms is not None or (
                    base_acc - a <= max_accuracy_drop + search_slack)
                key = (not within, c["score"])
                if best is None or key < best[2]:
                    best = (c, m, key)
            return best[0], best[1], best[2][0]

        plain = [c for c in cands if not c.get("stone")]
        widths = sorted([c for c in plain if c["kind"] == "prune"], key=lambda c: -c["ratio"])[:evaluate_top]
        struct = sorted([c for c in plain if c["kind"] != "prune"], key=lambda c: -c["saving"])[:3]
        stones = sorted([c for c in cands if c.get("stone")], key=lambda c: -c["ratio"])[:evaluate_top]
        if not widths + struct:  # only stones left
            widths, stones = stones, []
        c, m, over = evaluate(widths + struct)
        if over and stones and max_accuracy_drop is not None and target_ms is None:
            log(f"iter {it}: every candidate drops > {max_accuracy_drop + search_slack:g} points; "
                "approaching the distant step edges gradually")
            c2, m2, over2 = evaluate(stones)
            if not over2:
                c, m, over = c2, m2, over2
        drop = base_acc - c["val_accuracy"]
        if max_accuracy_drop is not None and target_ms is None and over:
            if step_fraction > 0.01:  # NetAdapt: smaller steps before giving up
                step_fraction /= 2
                log(f"iter {it}: every candidate drops > {max_accuracy_drop + search_slack:g} points; "
                    f"step fraction -> {step_fraction:.3f}")
                continue
            stop_reason = f"next step would drop {drop:.2f} points"
            break
        model, cur_acc = m, c["val_accuracy"]
        cur_cost = pricer.price(model, x)
        plan.steps.append(c["step"])
        snapshots.append((copy.deepcopy(model), list(plan.steps), cur_acc, cur_cost))
        history.append({"stage": f"iter {it}", "move": c["desc"], "cost": cur_cost, "predicted_ms": pred_ms(model),
                        "val_accuracy": cur_acc, "candidates": len(cands), "elapsed_s": time.time() - t0})
        log(f"iter {it}: {c['desc']} -> {cur_cost:.4g} {pricer.unit}, val {cur_acc:.2f}%")
    else:
        stop_reason = "max_iters"
    if target_ms is not None and cur_cost > target_ms:
        raise TargetUnreachableError(
            f"target {target_ms:g} ms not reached: the search stopped ({stop_reason}) at a predicted "
            f"{cur_cost:.3f} ms (start {base_cost:.3f} ms)")

    def fold_for_finetune(m: nn.Module) -> tuple[nn.Module, list[dict]]:
        """Fold every BatchNorm into its conv before the final fine-tune, unless the time model says the
        folded network is slower. Exact, and it helps the fine-tune recover from structural moves: har,
        GRU dropped and three convs removed, 25 distilled epochs: 94.8-95.3% test folded first, 93.9%
        with BatchNorm kept (runs/diag/fold_first.py, 2 seeds; no difference at 8 epochs). On a
        backend that fuses BatchNorm itself (onnxruntime-cpu) the time is the same either way."""
        if "fold_bn" not in moves or timer is None:
            return m, []
        folded = copy.deepcopy(m)
        pairs = surgery.fold_all_batchnorm(folded, x)
        if not pairs:
            return m, []
        before, after = timer.price(m, x), timer.price(folded, x)
        if after > before * 1.005:
            note = f"BatchNorm folding skipped: predicted {before:.4f} -> {after:.4f} ms"
            if note not in notes:
                notes.append(note)
            return m, []
        return folded, [{"op": "fold_bn", "conv": cv, "bn": bn} for cv, bn in pairs]

    # final fine-tune; back off to earlier states while the accuracy budget is missed
    final_steps = int(round(final_epochs * len(train_dl)))
    notes = [f"search stopped: {stop_reason}"]
    if unm:
        notes.append(f"not priced by the cost model (left out of predicted times): {', '.join(unm)}")
    # a state that saved nothing over the one before it (a stepping stone whose edge was never reached)
    # only lost accuracy: end at the last state that saved time
    trailing = 0
    while len(snapshots) > 1 and snapshots[-1][3] >= snapshots[-2][3] * (1 - 1e-3):
        snapshots.pop()
        trailing += 1
    if trailing:
        notes.append(f"dropped {trailing} trailing step(s) that saved no {pricer.unit} (stepping stones short of their edge)")
    while True:
        model, steps, _, _ = snapshots[-1]
        model, fold_steps = fold_for_finetune(copy.deepcopy(model))
        finetune(model, train_dl, final_steps, lr=lr, teacher=teacher, seed=seed)
        fa, bound = final_accuracy(model)
        ok = max_accuracy_drop is None or target_ms is not None or bound <= max_accuracy_drop
        history.append({"stage": "final fine-tune", "move": f"{len(steps)} steps", "cost": pricer.price(model, x),
                        "predicted_ms": pred_ms(model), "val_accuracy": fa, "drop_upper_bound": bound,
                        "within_budget": ok})
        log(f"final fine-tune of {len(steps)}-step state: val {fa:.2f}%")
        if ok or len(snapshots) == 1:
            break
        snapshots.pop()
        notes.append(f"backed off: {len(steps)} steps gave {base_acc - fa:.2f} points drop after fine-tuning"
                     f" (upper bound {bound:.2f})")
    plan.steps = list(steps) + fold_steps
    if len(snapshots) == 1 and max_accuracy_drop is not None and target_ms is None and not ok:
        # even the unpruned fine-tuned model misses: keep the original
        model, fa = copy.deepcopy(snapshots[0][0]), base_acc
        plan.steps = list(steps)
        notes.append("no pruned state met the accuracy budget; returning the original model")

    final = {"val_accuracy": acc(model, val_dl), "cost": pricer.price(model, x), "predicted_ms": pred_ms(model),
             "params": sum(p.numel() for p in model.parameters())}
    if test_dl is not None:
        base["test_accuracy"] = acc(snapshots[0][0], test_dl)
        final["test_accuracy"] = acc(model, test_dl)
    if measure and (backend or time_model is not None):
        bk = backend or time_model.backend
        base["backend"] = final["backend"] = bk
        try:
            base["measured_ms"], final["measured_ms"] = measure_models([snapshots[0][0], model], x, bk)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - a backend that cannot run the network: say so, keep the result
            notes.append(f"measurement on {bk} failed: {type(e).__name__}: {e}")
    if "measured_ms" in final:
        history.append({"stage": "measured", "move": final["backend"], "cost": final["cost"], "predicted_ms": final["predicted_ms"],
                        "measured_ms": final["measured_ms"], "val_accuracy": final["val_accuracy"]})
    assert _output_shape(model, x) == out_shape
    settings = dict(criterion=criterion, cost=cost, distill=distill, finetune_steps=finetune_steps,
                    final_epochs=final_epochs, lr=lr, max_accuracy_drop=max_accuracy_drop, target_ms=target_ms,
                    step_fraction=step_fraction, moves=list(moves), seed=seed, confidence=confidence if paired else None,
                    elapsed_s=time.time() - t0)
    plan.meta.update({"base": base, "final": final})
    return CompressResult(model.eval(), plan, history, base, final, notes, settings)


def _candidates(model, x, pricer, cur_cost, step_fraction, criterion, train_dl, n_batches, moves, out_shape,
                max_seq_factor, max_cut: float = 0.5, stone_cut: float = 0.25) -> list[dict]:
    budget = step_fraction * cur_cost
    tol = 0.002 * cur_cost
    cands: list[dict] = []
    if "width" in moves:
        cg = trace_channels(model, x)
        groups = [g for g in cg.groups() if g.width > 1]
        if groups:
            priced = PricedNetwork(model, x, pricer, cg, groups)
            batches = []
            if criterion == "taylor":
                for i, b in enumerate(train_dl):
                    if i >= n_batches:
                        break
                    batches.append(b)
            imp = CRITERIA[criterion](model, cg, groups, batches)
            total_imp = sum(float(v.sum()) for v in imp.values()) or 1.0
            for g in groups:
                curve = priced.curve(g.name)
                snapped = snap_widths(curve, tol)
                if not snapped:
                    continue
                savings = {w: priced.total - curve[w - 1] for w in snapped}
                # at most `max_cut` of a group's channels per step (gentle steps fine-tune back)
                allowed = [w for w in snapped if w >= g.width * (1 - max_cut)] or snapped[:1]
                ok = [w for w in allowed if savings[w] >= budget]
                w = ok[0] if ok else allowed[-1]
                if savings[w] < budget / 4:
                    continue
                score = imp[g.name]
                order = np.argsort(-score, kind="stable")

                def propose(width, saving, desc):
                    lost = float(score[order[width:]].sum())
                    lost = lost / total_imp if criterion == "taylor" else lost / (float(score.sum()) or 1.0) / len(groups)
                    cands.append({"kind": "prune", "step": {"op": "prune", "keep": {g.name: sorted(int(i) for i in order[:width])}},
                                  "desc": desc, "saving": float(saving), "ratio": float(saving) / (lost + 1e-9)})

                propose(w, savings[w], f"{g.name} {g.width}->{w}")
                # A step edge far below (ONNX Runtime: 32 -> 16 channels, nothing saved in between) can also
                # be approached gradually, NetAdapt-style: a stepping stone `stone_cut` of the way down,
                # credited with its share of the edge's saving. The search tries stones only when every
                # direct move exceeds the accuracy budget (a cut too deep to fine-tune back in one step).
                ws = int(round(g.width * (1 - stone_cut)))
                if w < ws < g.width and g.width - w > stone_cut * g.width:
                    propose(ws, savings[w] * (g.width - ws) / (g.width - w), f"{g.name} {g.width}->{ws} (toward {w})")
                    cands[-1]["stone"] = True
    if "remove" in moves:
        for name in surgery.removable_modules(model, x):
            m = copy.deepcopy(model)
            surgery.remove_module(m, name)
            s = cur_cost - pricer.price(m, x)
            if s > tol:
                cands.append({"kind": "remove", "step": {"op": "remove", "module": name}, "desc": f"remove {name}",
                              "saving": float(s), "ratio": 0.0})
    if "sequence" in moves:
        for name in _rnn_names(model):
            mod = model.get_submodule(name)
            factor = mod.stride if isinstance(mod, surgery.SequencePool) else 1
            t = _seq_len(model, name, x)
            if factor * 2 > max_seq_factor or t is None or t < 4:
                continue
            m = copy.deepcopy(model)
            surgery.shorten_sequence(m, name, 2)
            if _output_shape(m, x) != out_shape:
                continue
            s = cur_cost - pricer.price(m, x)
            if s > tol:
                cands.append({"kind": "sequence", "step": {"op": "shorten_sequence", "module": name, "factor": 2},
                              "desc": f"shorten {name} {t}->{t // 2} steps", "saving": float(s), "ratio": 0.0})
    if "recurrence" in moves:
        for name in _rnn_names(model):
            m = _without_recurrence(model, name, x, out_shape)
            s = cur_cost - pricer.price(m, x) if m is not None else 0.0
            if s > tol:
                cands.append({"kind": "recurrence", "step": {"op": "drop_recurrence", "module": name},
                              "desc": f"drop recurrence {name}", "saving": float(s), "ratio": 0.0})
    return cands
