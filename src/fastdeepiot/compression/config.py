"""`CompressConfig`: every setting of the compression search, in one dataclass that checks itself.

    config = CompressConfig(max_accuracy_drop=0.5, final_epochs=8)
    compress(model, data, config, time_model=tm)
    compress(model, data, time_model=tm, max_accuracy_drop=0.5, final_epochs=8)   # the same

`compress()` builds one from its keyword arguments (they override a given config), the CLI's
`compress` options take their defaults from here, and a result records `dataclasses.asdict(config)`.
Construction raises `UserError` with one sentence for a value out of its range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from numbers import Real

from fastdeepiot.compression.importance import CRITERIA
from fastdeepiot.compression.moves import MOVES
from fastdeepiot.errors import UserError, check_seed, check_whole

COSTS = ("time", "flops")  # the time model's predicted ms, or FLOPs (the ablation)
# the external baselines (`compression.baselines`; named here so that the CLI lists them without importing it)
BASELINES = tuple(f"torch-pruning-{imp}-{scope}" for imp in ("l1", "taylor") for scope in ("uniform", "global")) + (
    "netadapt-flops", "width-scratch")
DIVERGENCE_SLACK = 2.0  # a candidate's divergence after its short fine-tune may reach this x max_divergence
ACCEPTANCES = ("labels", "agreement")  # what a state's accuracy drop is judged on (`compression.agreement`)
# Upper bounds of the settings that say how long a run is: far beyond any run the benches or the README make,
# so that a typo (1000000 for 100) is refused in a line rather than running for days. The CLI's options
# (compress, baseline, train) show them as their ranges.
MAX_EPOCHS = 1000  # final_epochs, scratch_epochs; train's --epochs and --patience
MAX_FINETUNE_STEPS = 10_000  # finetune_steps (per candidate; the default is 100)
MAX_ITERS = 1000  # max_iters (default 25); baseline's --iterative-steps (default 4)
MAX_BUDGET_STEPS = 200_000  # baseline's --budget-steps (the compress runs in docs/results took up to ~12,000)


@dataclass(frozen=True)
class CompressConfig:
    """The search's settings (see `compression.search` for what each does).

    Budget (exactly one): `max_accuracy_drop` in validation accuracy points [0, 100], or
    `target_ms` > 0 of predicted time (then `cost` must be "time"; the search then stops at the target,
    whatever the accuracy).
    Search: `criterion` (channel importance: "taylor" or "l1"), `cost` ("time" or "flops"),
    `moves` (names in `compression.moves.MOVES`), `max_iters`, `step_fraction` in (0, 1) (the saving
    each iteration aims for, as a share of the current cost; halved when every step is over budget),
    `evaluate_top` width candidates fine-tuned per iteration, `search_slack` points above the budget a
    step may drop during the search (the final fine-tune recovers it), `max_seq_factor` (how many
    times a recurrent layer's sequence may be shortened), `importance_batches` (Taylor importance).
    Fine-tuning: `distill` from the original network, `finetune_steps` per candidate, `final_epochs`
    at the end, `lr`, `batch_size` (task loaders), `seed`.
    Acceptance: `confidence` in [0.5, 1), of the one-sided bound on the accuracy drop (default metric).
    `acceptance`: "labels" (the default) judges every state by its labelled validation accuracy (the paired
    bound at the end); "agreement" (needs `max_accuracy_drop`; for a small labelled split) by the upper bound
    of its top-1 disagreement with the original over a fixed pool of validation and augmented inputs, the
    final state also passing a labelled check at the split's resolution (`compression.agreement`).
    `max_divergence` (nats, > 0; off by default): a fidelity budget beside the accuracy budget. A state is
    also kept only if the mean KL divergence of its outputs from the original's over the validation inputs
    is within it (candidates during the search within `DIVERGENCE_SLACK` times it, as `search_slack` allows
    for points). It needs no labels and still moves where a saturated validation split does not: over har's
    bench networks it ranked the test-accuracy changes with Spearman -0.68 where validation accuracy ranked
    them at +0.08 (docs/results/fidelity_har.md). Its scale is the task's: the README says how to set it.
    `train_guard` (on by default; budget runs with the default metric): a state is also kept only if its
    accuracy on a fixed sample of the training inputs (`search.TRAIN_GUARD_SAMPLES`) fell by at most the
    budget from the original's (candidates: by at most the search's limit). A validation split of a few
    people can be easier than the people a network will meet; a network that no longer fits the training
    data as well as the original did has lost accuracy such a split need not show. Fine-tuning sees these
    samples, so the check errs towards passing: it only ever rejects more.
    Measurement: `measure` the base and the result on `backend` (default: the time model's).
    Best of: `compare_uniform` width multipliers in (0, 1) (e.g. (0.25, 0.5, 0.75)): after the search, the
    original pruned uniformly to each (top-L1 channels of every group, BatchNorm folded) is priced with
    the time model; each predicted faster than the result gets the same final fine-tune and replaces the
    result if its validation accuracy is as high and within the budget. Off by default: each such
    network costs one more final fine-tune. `compare_scratch`: the architectures of the result, of the two
    faster states the final back-off gave up, and of each `compare_uniform` width are also re-initialised
    and trained from scratch with the full training recipe and distillation (`scratch_epochs`, default the
    task's recipe epochs, else 25), and compete the same way (a network from scratch at the result's own
    architecture replaces it when more accurate). Off by default: each costs a full training."""

    max_accuracy_drop: float | None = None
    target_ms: float | None = None
    criterion: str = "taylor"
    cost: str = "time"
    distill: bool = True
    finetune_steps: int = 100
    final_epochs: float = 4.0
    lr: float = 1e-3
    max_iters: int = 25
    step_fraction: float = 0.08
    evaluate_top: int = 2
    search_slack: float = 1.0
    moves: tuple[str, ...] = tuple(MOVES)
    max_seq_factor: int = 8
    measure: bool = True
    confidence: float = 0.9
    acceptance: str = "labels"
    max_divergence: float | None = None
    train_guard: bool = True
    backend: str | None = None
    batch_size: int = 64
    importance_batches: int = 8
    seed: int = 0
    compare_uniform: tuple[float, ...] = ()
    compare_scratch: bool = False
    scratch_epochs: float | None = None

    def __post_init__(self):
        if isinstance(self.moves, str):
            raise UserError(f"moves must be a list of move names, not the string {self.moves!r}")
        object.__setattr__(self, "moves", tuple(self.moves))
        if isinstance(self.compare_uniform, str) or not all(
                isinstance(w, Real) and not isinstance(w, bool) and 0 < w < 1 for w in self.compare_uniform):
            raise UserError(f"compare_uniform must be width multipliers in (0, 1), got {self.compare_uniform!r}")
        object.__setattr__(self, "compare_uniform", tuple(float(w) for w in self.compare_uniform))
        if (self.max_accuracy_drop is None) == (self.target_ms is None):
            raise UserError("give exactly one of max_accuracy_drop (percentage points) and target_ms (a target "
                            f"time reached whatever the accuracy), got {self.max_accuracy_drop!r} and {self.target_ms!r}")
        if self.max_accuracy_drop is not None:
            _real(self, "max_accuracy_drop", lo=0.0, hi=100.0)
        if self.target_ms is not None:
            _real(self, "target_ms", lo=0.0, lo_open=True)
        _name(self, "criterion", CRITERIA)
        _name(self, "cost", COSTS)
        _name(self, "acceptance", ACCEPTANCES)
        if self.acceptance == "agreement" and self.max_accuracy_drop is None:
            raise UserError("acceptance='agreement' judges states against the accuracy budget: give max_accuracy_drop")
        if self.max_divergence is not None:
            _real(self, "max_divergence", lo=0.0, lo_open=True)
            if self.max_accuracy_drop is None:
                raise UserError("max_divergence judges states beside the accuracy budget: give max_accuracy_drop")
        bad = [m for m in self.moves if m not in MOVES]
        if bad:
            raise UserError(f"unknown moves {bad}; known: {', '.join(MOVES)}")
        if self.target_ms is not None and self.cost != "time":
            raise UserError("target_ms needs cost='time'")
        for name in ("distill", "measure", "compare_scratch", "train_guard"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be True or False, got {getattr(self, name)!r}")
        check_whole(self.finetune_steps, "finetune_steps", 0, MAX_FINETUNE_STEPS)
        check_whole(self.max_iters, "max_iters", 0, MAX_ITERS)
        check_whole(self.evaluate_top, "evaluate_top", 1)
        check_whole(self.max_seq_factor, "max_seq_factor", 1)
        check_whole(self.batch_size, "batch_size", 1)
        check_whole(self.importance_batches, "importance_batches", 0)
        check_seed(self.seed)
        _real(self, "final_epochs", lo=0.0, hi=MAX_EPOCHS)
        _real(self, "lr", lo=0.0, hi=10.0, lo_open=True)  # train caps its --lr there too
        _real(self, "step_fraction", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        _real(self, "search_slack", lo=0.0)
        _real(self, "confidence", lo=0.5, hi=1.0, hi_open=True)
        if self.scratch_epochs is not None:
            _real(self, "scratch_epochs", lo=0.0, hi=MAX_EPOCHS, lo_open=True)
        if self.backend is not None and not isinstance(self.backend, str):
            raise UserError(f"backend must be a backend name, got {self.backend!r}")

    @classmethod
    def build(cls, config: CompressConfig | None = None, **settings) -> CompressConfig:
        """`config` (or the defaults) with `settings` replacing its values; TypeError for a name that is
        no setting, as a function's unknown keyword argument would be."""
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"compress() got unexpected keyword argument(s) {', '.join(unknown)}")
        if config is None:
            return cls(**settings)
        if not isinstance(config, cls):
            raise UserError(f"config must be a CompressConfig, got {type(config).__name__}")
        return dataclasses.replace(config, **settings)

    @classmethod
    def default(cls, name: str):
        """The default of one setting (the CLI's option defaults)."""
        return next(f.default for f in fields(cls) if f.name == name)


def _real(cfg, name, lo=None, hi=None, lo_open=False, hi_open=False):
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
        raise UserError(f"{name} must be a finite number, got {v!r}")
    if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and (v >= hi if hi_open else v > hi)):
        rng = f"{'(' if lo_open else '['}{_g(lo)}, {_g(hi)}{')' if hi_open or hi is None else ']'}"
        raise UserError(f"{name} must be in {rng}, got {v!r}")


def _g(v):
    return "inf" if v is None else f"{v:g}"


def _name(cfg, name, known):
    v = getattr(cfg, name)
    if not isinstance(v, str) or v not in known:
        raise UserError(f"unknown {name} {v!r}; known: {', '.join(known)}")
