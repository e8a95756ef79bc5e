"""External baselines: what a user would do instead of `compress`, each given the same fine-tuning budget.

    from fastdeepiot.compression.baselines import run_baseline, METHODS
    res = run_baseline("torch-pruning-taylor-global", model, task, ratio=0.5, budget_steps=res_ours.budget_steps,
                       time_model=tm)
    res.model, res.final["measured_ms"], res.settings["optimizer_steps"]

Methods (`METHODS`):

* ``torch-pruning-{l1,taylor}-{uniform,global}``: torch-pruning's MetaPruner with magnitude (L1) or
  first-order Taylor importance, one ratio per layer (uniform) or ranked across layers (global), on an
  iterative schedule: `iterative_steps` pruning steps, each followed by an equal share of the budget's
  fine-tuning steps (distilled from the original). The layers feeding a GRU/LSTM and the recurrent layers
  themselves are added to `ignored_layers` (torch-pruning 1.6 raises an IndexError on Conv1d -> GRU
  otherwise), as is the classifier. `ratio` is torch-pruning's `pruning_ratio` (share of channels removed).
* ``netadapt-flops``: our own search with FLOPs as the cost and width as the only move (NetAdapt, without
  our structural moves), at `max_accuracy_drop`.
* ``width-scratch``: the network at width multiplier ``1 - ratio`` trained from scratch with the task's
  full training recipe (AdamW, one-cycle, label smoothing, best validation epoch) and distillation from the
  original; it trains for the recipe's epochs or the budget, whichever is more.

Budget: optimizer steps. Our search records what it took in ``CompressResult.run["optimizer_steps"]``
(`finetune_steps` per evaluated candidate + the final fine-tune(s)); `budget_from(result)` reads it.
Every baseline takes at least `budget_steps` optimizer steps (torch-pruning exactly; NetAdapt's own search
plus a top-up fine-tune when it took fewer; width-scratch max(recipe, budget)) and records its count in
``settings["optimizer_steps"]``. Taylor importance's gradient passes are not optimizer steps (recorded as
``gradient_passes``).

Every returned network has its BatchNorms folded (`moves.fold_bn.fold_all_batchnorm`), and is timed with
the one network timer (`search.measure_models`) when `measure` and a backend are available.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastdeepiot.compression.config import BASELINES, CompressConfig
from fastdeepiot.compression.cost import FlopsCost, TimeCost
from fastdeepiot.compression.finetune import distilled_loss, finetune, recipe, train_recipe
from fastdeepiot.compression.moves.fold_bn import fold_all_batchnorm
from fastdeepiot.compression.plan import Plan
from fastdeepiot.compression.search import (_resolve_data, _task_of, check_arguments, check_measurable, compress,
                                            example_and_output, label_checked, measure_models, measure_threads)
from fastdeepiot.errors import UserError
from fastdeepiot.graph.trace import Tracer
from fastdeepiot.safeio import KIND_NAMES, sniff
from fastdeepiot.tasks.nets import build

METHODS = BASELINES
TP_METHODS = tuple(m for m in METHODS if m.startswith("torch-pruning-"))
_RNN = (nn.GRU, nn.LSTM, nn.RNN)


@dataclass
class BaselineResult:
    """A baseline's network (BatchNorm folded), its measures and settings (`optimizer_steps` taken)."""

    method: str
    model: nn.Module
    base: dict
    final: dict
    settings: dict
    notes: list[str] = field(default_factory=list)
    plan: Plan | None = None  # replays onto `arch` (None: the original's) to this architecture; None for torch-pruning
    arch: dict | None = None  # width-scratch: the narrower reference network's constructor arguments

    def to_json(self) -> dict:
        return {"method": self.method, "base": self.base, "final": self.final, "settings": self.settings,
                "notes": self.notes, "plan": self.plan.to_json() if self.plan is not None else None,
                "arch": self.arch}


_WHICH_REPORT = "the .report.json that `fastdeepiot compress` writes beside its -o"


def budget_from(result) -> int:
    """The optimizer steps our search took (`CompressResult` or its JSON report): the baselines' budget."""
    if isinstance(result, dict) and "run" not in result and "method" in result:
        raise UserError(f"a baseline's report (method {result['method']!r}), not a compress report; give "
                        + _WHICH_REPORT)
    run = result.run if hasattr(result, "run") else (result.get("run") if isinstance(result, dict) else None)
    if not isinstance(run, dict):
        what = ("has no \"run\" entry" if isinstance(result, dict) and "run" not in result
                else f"is a {type(result).__name__}, not a JSON object" if not isinstance(result, dict)
                else f"has a \"run\" entry of type {type(run).__name__}, not an object")
        raise UserError(f"not a compress report: it {what} (a compress report is a JSON object whose \"run\" "
                        f"records optimizer_steps); give {_WHICH_REPORT}")
    if "optimizer_steps" not in run:
        raise UserError("this compress result does not record optimizer_steps (made by an older version)")
    steps = run["optimizer_steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"the compress report's optimizer_steps must be a whole number >= 1, got {steps!r}")
    return steps


def budget_from_file(path, option: str = "--budget-from") -> int:
    """`budget_from` of the compress report at `path`; a UserError naming the file and what it is (missing,
    a folder, a file of another kind, not JSON, another JSON document) otherwise."""
    label = f"{option} {path}"
    p = Path(path)
    if not p.exists():
        raise UserError(f"{label}: no such file; give {_WHICH_REPORT}")
    if p.is_dir():
        raise UserError(f"{label} is a directory; give {_WHICH_REPORT}")
    try:
        kind = sniff(p)
        text = p.read_text(encoding="utf-8") if kind in ("report", "json", "text") else None
    except OSError as e:
        raise UserError(f"{label}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        kind, text = "binary", None
    if text is None:
        raise UserError(f"{label} is {KIND_NAMES.get(kind, kind)}, not a compress report; give {_WHICH_REPORT}")
    try:
        report = json.loads(text)
    except ValueError as e:  # JSONDecodeError; numbers Python refuses
        raise UserError(f"{label} is not valid JSON ({str(e).splitlines()[0][:200]}); give {_WHICH_REPORT}") from None
    except RecursionError:
        raise UserError(f"{label}: JSON nested too deeply to read; give {_WHICH_REPORT}") from None
    try:
        return budget_from(report)
    except UserError as e:
        raise UserError(f"{label}: {e}") from None


def nominal_budget(config: CompressConfig, steps_per_epoch: int, candidates: int) -> int:
    """Our search's budget for `candidates` evaluated candidates: finetune_steps x candidates + the final
    fine-tune (one try, no back-off)."""
    return config.finetune_steps * candidates + int(round(config.final_epochs * steps_per_epoch))


def recurrent_feeders(model: nn.Module) -> list[nn.Module]:
    """The recurrent layers and the Conv/Linear layers whose output reaches one of them through
    channel-preserving ops (BatchNorm, activations, pooling, dropout, permute, cat, ...): the layers
    torch-pruning must not prune (it cannot map their channels onto an RNN's input)."""
    gm = Tracer().trace(model)
    mods = dict(model.named_modules())
    out: dict[int, nn.Module] = {}
    for node in gm.graph.nodes if hasattr(gm, "graph") else gm.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _RNN):
            continue
        out[id(mods[node.target])] = mods[node.target]
        todo, seen = [a for a in node.args[:1] if isinstance(a, torch.fx.Node)], set()
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            mod = mods.get(n.target) if n.op == "call_module" else None
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear) + _RNN):
                out[id(mod)] = mod
                continue
            if n.op == "placeholder":
                continue
            args = list(n.args) + list(n.kwargs.values())
            flat = []
            for a in args:
                flat.extend(a if isinstance(a, (list, tuple)) else [a])
            todo.extend(a for a in flat if isinstance(a, torch.fx.Node))
    return list(out.values())


def _output_layers(model: nn.Module) -> list[nn.Module]:
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return lin[-1:]


def _taylor_grads(model: nn.Module, loader, batches: int) -> int:
    """Accumulate gradients of the cross-entropy over `batches` training batches (Taylor importance)."""
    model.zero_grad(set_to_none=True)
    model.eval()
    n = 0
    for xb, yb in loader:
        F.cross_entropy(model(xb), yb).backward()
        n += 1
        if n >= batches:
            break
    return n


def split_steps(total: int, parts: int) -> list[int]:
    """`total` steps in `parts` near-equal shares summing to `total`."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def torch_pruning(model: nn.Module, train_dl, x: torch.Tensor, ratio: float, *, importance: str = "l1",
                  global_pruning: bool = False, budget_steps: int = 0, iterative_steps: int = 4,
                  teacher: nn.Module | None = None, lr: float = 1e-3, seed: int = 0, taylor_batches: int = 8,
                  log: Callable[[str], Any] | None = None) -> tuple[nn.Module, dict]:
    """Prune a copy with torch-pruning in `iterative_steps` steps to `ratio`, fine-tuning `budget_steps`
    optimizer steps in all (an equal share after each step). Returns (network, record). Raises what
    torch-pruning raises."""
    # deferred: torch_pruning is an optional, heavy dependency only this baseline needs
    import torch_pruning as tp

    if not 0.0 < ratio < 1.0:
        raise UserError(f"ratio must be in (0, 1), got {ratio!r}")
    if importance not in ("l1", "taylor"):
        raise UserError(f"importance must be 'l1' or 'taylor', got {importance!r}")
    m = copy.deepcopy(model).eval()
    ignored = _output_layers(m) + recurrent_feeders(m)
    imp = tp.importance.MagnitudeImportance(p=1) if importance == "l1" else tp.importance.TaylorImportance()
    with warnings.catch_warnings():  # "unwrapped parameters" of the recurrent layers: ignored anyway
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(m, x, importance=imp, pruning_ratio=ratio, iterative_steps=iterative_steps,
                                      ignored_layers=ignored, global_pruning=global_pruning)
    shares = split_steps(budget_steps, iterative_steps)
    record = {"ratio": ratio, "iterative_steps": iterative_steps, "steps_per_pruning_step": shares,
              "ignored_layers": [n for n, mod in m.named_modules() if any(mod is i for i in ignored)],
              "optimizer_steps": 0, "gradient_passes": 0}
    for i, steps in enumerate(shares):
        if importance == "taylor":
            record["gradient_passes"] += _taylor_grads(m, train_dl, taylor_batches)
        pruner.step()
        m.zero_grad(set_to_none=True)
        finetune(m, train_dl, steps, lr=lr, teacher=teacher, seed=seed + i)
        record["optimizer_steps"] += steps
        if log:
            log(f"torch-pruning step {i + 1}/{iterative_steps}: {steps} fine-tuning steps")
    return m.eval(), record


def width_scratch(make_model: Callable[[float], nn.Module], width: float, train_dl, val_dl, *, budget_steps: int,
                  teacher: nn.Module | None, metric: Callable, task=None, seed: int = 0,
                  recipe_epochs: int | None = None) -> tuple[nn.Module, dict]:
    """The network at width multiplier `width`, trained from scratch with the task's recipe and
    distillation, for max(recipe epochs, `budget_steps`) optimizer steps (`recipe_epochs` overrides the
    recipe's epochs: smoke runs only)."""
    r = recipe(task)
    if recipe_epochs is not None:
        r.update(epochs=int(recipe_epochs), min_epochs=min(int(r["min_epochs"]), int(recipe_epochs)))
    torch.manual_seed(seed)
    m = make_model(width)
    recipe_steps = int(r["epochs"]) * len(train_dl)
    steps = max(recipe_steps, int(budget_steps))
    m, rec = train_recipe(m, train_dl, val_dl, steps, r, teacher=teacher, metric=metric, seed=seed)
    return m, {"width_mult": width, "recipe_steps": recipe_steps, **rec}


def _make_model_for(model: nn.Module) -> Callable[[float], nn.Module] | None:
    """A builder of `model`'s reference network at a width multiplier (reference networks record
    `net_name` and `arch`), or None."""
    net, arch = getattr(model, "net_name", None), getattr(model, "arch", None)
    if net is None or not isinstance(arch, dict):
        return None
    return lambda w: build(net, **{**arch, "width_mult": w})


def run_baseline(method: str, model: nn.Module, task_or_loaders, *, ratio: float | None = None,
                 max_accuracy_drop: float | None = None, budget_steps: int | None = None, time_model=None,
                 example_input: torch.Tensor | None = None, metric: Callable | None = None,
                 config: CompressConfig | None = None, make_model: Callable[[float], nn.Module] | None = None,
                 iterative_steps: int = 4, backend: str | None = None, measure: bool = True,
                 recipe_epochs: int | None = None, progress: bool | Callable[[str], Any] | None = False) -> BaselineResult:
    """Run one baseline (`METHODS`) on a copy of `model`. `ratio` (torch-pruning: share of channels
    removed; width-scratch: width multiplier 1 - ratio) or `max_accuracy_drop` (netadapt-flops) sets how
    far it goes. `budget_steps`: optimizer steps of fine-tuning (default: `nominal_budget(config, ...)`
    with 20 candidates). `config`: our search's settings (lr, distill, seed, batch_size; netadapt-flops
    runs with them). `recipe_epochs`: width-scratch's training epochs instead of the task recipe's
    (smoke runs). The result's network has BatchNorm folded; measured on `backend` (default: the
    time model's) when `measure`."""
    if method not in METHODS:
        raise UserError(f"unknown baseline {method!r}; known: {', '.join(METHODS)}")
    if method == "netadapt-flops":
        if max_accuracy_drop is None:
            raise UserError("netadapt-flops needs max_accuracy_drop")
    elif ratio is None or not 0.0 < float(ratio) < 1.0:
        raise UserError(f"{method} needs a ratio in (0, 1), got {ratio!r}")
    if isinstance(iterative_steps, bool) or not isinstance(iterative_steps, int) or iterative_steps < 1:
        raise UserError(f"iterative_steps (torch-pruning's pruning steps) must be a whole number >= 1, "
                        f"got {iterative_steps!r}")
    if budget_steps is not None and (isinstance(budget_steps, bool) or not isinstance(budget_steps, int)
                                     or budget_steps < 1):
        raise UserError(f"budget_steps (--budget-steps, or the steps of the --budget-from run) must be a whole "
                        f"number of optimizer steps >= 1, got {budget_steps!r}")
    cfg = config or CompressConfig(max_accuracy_drop=max_accuracy_drop if max_accuracy_drop is not None else 1.0)
    if max_accuracy_drop is not None:
        cfg = CompressConfig.build(cfg, max_accuracy_drop=max_accuracy_drop)
    log = progress if callable(progress) else ((lambda s: print(s, flush=True)) if progress else (lambda s: None))
    check_arguments(model, time_model, example_input)
    if measure:
        check_measurable(backend, time_model)
    t0 = time.time()
    task = _task_of(task_or_loaders)
    train_dl, val_dl, test_dl, metric_fn = _resolve_data(task if task is not None else task_or_loaders, metric,
                                                         cfg.batch_size, cfg.seed)
    if budget_steps is None:
        budget_steps = nominal_budget(cfg, len(train_dl), 20)
    budget_steps = int(budget_steps)
    teacher = copy.deepcopy(model).eval() if cfg.distill else None
    base_model = copy.deepcopy(model).eval()
    # the example input and the network's outputs checked as compress checks them (classes of the task)
    x, out_shape = example_and_output(base_model, example_input, val_dl, task, metric is None)
    if task is None:  # a user's loaders: labels checked as they are read
        train_dl, val_dl, test_dl = label_checked((train_dl, val_dl, test_dl), out_shape)
    notes: list[str] = []
    plan_steps: list[dict] | None = None
    arch = None
    settings: dict = {"method": method, "ratio": ratio, "max_accuracy_drop": max_accuracy_drop,
                      "budget_steps": budget_steps, "distill": cfg.distill, "lr": cfg.lr, "seed": cfg.seed,
                      "steps_per_epoch": len(train_dl)}

    if method in TP_METHODS:
        _, _, imp, scope = method.split("-")
        m, rec = torch_pruning(model, train_dl, x, float(ratio), importance=imp, global_pruning=scope == "global",
                               budget_steps=budget_steps, iterative_steps=iterative_steps, teacher=teacher,
                               lr=cfg.lr, seed=cfg.seed, log=log)
        settings.update(rec)
    elif method == "netadapt-flops":
        res = compress(model, (train_dl, val_dl, test_dl), cfg, cost="flops", moves=("width",), measure=False,
                       time_model=time_model, example_input=x, metric=metric, progress=progress or False)
        m = res.model
        used = int(res.run["optimizer_steps"])
        top_up = max(0, budget_steps - used)
        finetune(m, train_dl, top_up, lr=cfg.lr, teacher=teacher, seed=cfg.seed + 1)
        settings.update({"optimizer_steps": used + top_up, "search_steps": used, "top_up_steps": top_up})
        plan_steps = list(res.plan.steps)
        notes += res.notes
        if used > budget_steps:
            notes.append(f"NetAdapt's own search took {used} steps, more than the budget's {budget_steps}")
    else:  # width-scratch
        make = make_model or _make_model_for(model)
        if make is None:
            raise UserError("width-scratch needs a reference network (with net_name/arch) or make_model")
        m, rec = width_scratch(make, 1.0 - float(ratio), train_dl, val_dl, budget_steps=budget_steps,
                               teacher=teacher, metric=metric_fn, task=task, seed=cfg.seed,
                               recipe_epochs=recipe_epochs)
        settings.update(rec)
        plan_steps, arch = [], copy.deepcopy(getattr(m, "arch", None))
    m.eval()
    folded = fold_all_batchnorm(m, x)
    settings["folded_batchnorm"] = [list(p) for p in folded]
    plan = None
    if plan_steps is not None:
        plan = Plan(list(x.shape[1:]), plan_steps + [{"op": "fold_bn", "conv": c, "bn": b} for c, b in folded])
    pricer = TimeCost(time_model) if time_model is not None else None
    flops = FlopsCost()

    def measures(net):
        d = {"val_accuracy": 100.0 * float(metric_fn(net, val_dl)), "mflops": flops.price(net, x),
             "params": sum(p.numel() for p in net.parameters()),
             "predicted_ms": pricer.price(net, x) if pricer is not None else None}
        if test_dl is not None:
            d["test_accuracy"] = 100.0 * float(metric_fn(net, test_dl))
        return d

    base, final = measures(base_model), measures(m)
    bk = backend or (time_model.backend if time_model is not None else None)
    if measure and bk:
        try:
            base["measured_ms"], final["measured_ms"] = measure_models([base_model, m], x, bk,
                                                                       threads=measure_threads(bk, time_model))
            base["backend"] = final["backend"] = bk
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - a backend that cannot run the network: say so, keep the result
            notes.append(f"measurement on {bk} failed: {type(e).__name__}: {e}")
    settings["elapsed_s"] = time.time() - t0
    return BaselineResult(method, m, base, final, settings, notes, plan, arch)
