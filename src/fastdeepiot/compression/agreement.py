"""Acceptance with few labels (`CompressConfig.acceptance="agreement"`): disagreement with the original.

    pool = AgreementPool.build(original, train_loader, val_loader, seed=0)
    rate, upper = pool.drop_upper(candidate, confidence=0.9)   # percentage points

Why it bounds the accuracy drop. On any input distribution, a network that agrees with the original's
top-1 prediction wherever the original is right is at least as accurate; so
accuracy_new >= accuracy_orig - P(disagree and original right) >= accuracy_orig - P(disagree). The
disagreement rate needs no labels, and it can be estimated on many more inputs than are labelled: the
one-sided Wilson upper bound of the rate at `confidence` (`disagreement_upper`) is the drop the search tests
against the budget. It is conservative twice over (a disagreement where the original was wrong costs
nothing, or gains) and blind to nothing the labels would see *on the pool's distribution*.

The pool (`AgreementPool.build`; seeded, fixed once per run so every candidate is judged on the same
inputs, at most `POOL_SIZE`):

- every labelled validation input, raw (up to a quarter of the pool);
- the rest, half and half, from inputs drawn from the training and validation splits: Gaussian noise of
  `NOISE_SCALE` (0.3) times each input feature's standard deviation (over those inputs), and mixup of two
  of them with lambda uniform in `MIXUP_LAMBDA` ([0.8, 1]: the first input dominates).

Raw training inputs are left out of the bound on purpose: fine-tuning distils the candidate onto the
original on exactly those inputs, so disagreement there is optimistic (`train_disagreement` is kept as a
diagnostic of that optimism). The augmentation strengths were chosen so that the pool's disagreement tracks
disagreement on held-out inputs (`bench/_agreement_augment.py`: userid's network pruned uniformly or with
its GRU dropped, fine-tuned 100 or 300 distilled steps, twelve networks; the target is the validation
split, which fine-tuning never sees). On the six networks within 2 test points of the original, raw
training inputs and noise of 0.1 std were optimistic (0.0 and 0.05-0.4% where validation disagreement was
0-2.4%); mixup with lambda in [0.7, 1] was 2-4x pessimistic
on good networks (3.1% for a GRU-dropped network at 0.2% on validation and 0.6% on test), which would reject
every move at a 0.5-1 point budget; noise of 0.5 std or more made even the fine-tuned original disagree on
12%. Noise of 0.3 std and mixup in [0.8, 1] sat at or a little above validation disagreement on every
network (e.g. 0.75% and 0.8% against 0.2% on validation; 2.35% and 1.7% against 1.2%; 7.2% and 8.9% against
6.2%; on the test split, printed alongside, neither was more than 0.4 points below). The validation inputs are held out by construction. Augmentations are generic (any float tensor
input) and say nothing about a shift between the pool and the test data (new people, later recordings):
the calibration record, on the labelled validation split, is where a user sees how the estimate relates to
labelled drops. Inputs derived from one source are correlated, so the binomial bound's n overstates the
independent evidence somewhat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch
import torch.nn as nn

from fastdeepiot.compression.finetune import logits_of, paired_drop_upper, take_samples
from fastdeepiot.errors import UserError

POOL_SIZE = 4096  # inputs in the pool at most (speed: every candidate is evaluated on all of them)
NOISE_SCALE = 0.3  # Gaussian noise, as a share of each input feature's standard deviation
MIXUP_LAMBDA = (0.8, 1.0)  # mixup weight of the first input
TRAIN_DIAGNOSTIC = 1024  # raw training inputs kept for the (optimistic) train_disagreement diagnostic
EVAL_BATCH = 512


def wilson_upper(k: int, n: int, confidence: float) -> float:
    """One-sided upper confidence bound, a fraction in [0, 1], of a binomial rate seen as `k` of `n`
    (Wilson score interval; `confidence` 0.5 gives the point estimate k / n, and n = 0 gives 1)."""
    if n <= 0:
        return 1.0
    p = k / n
    if confidence <= 0.5:
        return p
    z = NormalDist().inv_cdf(confidence)
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + half) / (1 + z * z / n))


def disagreement_upper(disagree: torch.Tensor, confidence: float) -> float:
    """The drop the agreement acceptance tests, in percentage points: the Wilson upper bound of the share
    of samples on which two networks' top-1 predictions differ (`disagree`: one bool per sample)."""
    return 100.0 * wilson_upper(int(disagree.sum()), len(disagree), confidence)


def labelled_tolerance(n_labelled: int) -> float:
    """The resolution of a labelled split of `n_labelled` samples, in percentage points: one sample."""
    return 100.0 / max(n_labelled, 1)


def labelled_lower(base_correct: torch.Tensor, new_correct: torch.Tensor, confidence: float) -> float:
    """The one-sided lower confidence bound at `confidence`, in percentage points, of the paired labelled
    accuracy drop (per-sample correctness of the original and the state on the same samples)."""
    return paired_drop_upper(base_correct, new_correct, 1.0 - confidence)


def labelled_confirms(budget: float, *, lower: float | None = None, drop: float | None = None,
                      n_labelled: int = 0) -> bool:
    """The labelled check a final state passes besides the agreement bound: the labels must not show that
    it misses the budget. With per-sample correctness (the default metric): the one-sided lower bound of
    its paired validation drop at the run's confidence (`labelled_lower`) is within the budget. With a
    custom metric (a point estimate only): the drop exceeds the budget by at most one sample
    (`labelled_tolerance`).

    Why a lower bound, and not the upper bound labels acceptance tests: at small n every upper bound at a
    useful confidence exceeds the budget even for a network that lost nothing (n = 54: one discordant
    sample puts the 90% paired upper bound at 4.2 points), which is what agreement acceptance exists to get
    round; there the labels can only *falsify* the agreement estimate, and the lower bound says when they
    do at the run's confidence. It vetoes a clean net loss the split resolves (at n = 54 and a 1-point
    budget: three samples lost, none gained; at n = 501: nine), but not a few flips each way on samples the
    original was unsure of, whose point drop is noise at this n. It is no stricter than labels acceptance
    at any n, and approaches the point estimate as n grows."""
    if lower is not None:
        return lower <= budget
    return drop is None or drop <= budget + labelled_tolerance(n_labelled) + 1e-9


def _inputs(loader, limit: int | None = None) -> torch.Tensor:
    """The inputs of `loader` (its first `limit` samples), its shuffling generator left as it was."""
    return take_samples(loader, limit)[0]


def predictions(model: nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Top-1 predictions (argmax over dim 1) of `model` in eval mode on `x`."""
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.long)
    y = logits_of(model, x, batch_size)
    if y.ndim < 2 or y.shape[1] < 2:
        raise UserError(f"acceptance='agreement' compares top-1 predictions and needs a classifier's "
                        f"(batch, classes) output; the network returns shape {tuple(y.shape)}")
    return y.argmax(1)


def _rate(d: torch.Tensor) -> float | None:
    return 100.0 * float(d.float().mean()) if len(d) else None


@dataclass
class AgreementPool:
    """A run's fixed inputs and the original network's top-1 predictions on them.

    `x` holds the validation inputs first (`n_val`), then `n_noise` noisy and `n_mixup` mixed inputs;
    `train_x` is a sample of raw training inputs, used only for the `train_disagreement` diagnostic."""

    x: torch.Tensor
    reference: torch.Tensor
    n_val: int
    n_noise: int
    n_mixup: int
    train_x: torch.Tensor
    train_reference: torch.Tensor
    seed: int
    n_labelled: int
    noise_scale: float = NOISE_SCALE
    mixup_lambda: tuple[float, float] = MIXUP_LAMBDA

    @classmethod
    def build(cls, original: nn.Module, train_loader, val_loader, *, size: int | None = None, seed: int = 0,
              noise_scale: float = NOISE_SCALE, mixup_lambda: tuple[float, float] = MIXUP_LAMBDA) -> AgreementPool:
        """The pool of `size` inputs (default `POOL_SIZE`) from the loaders' inputs, seeded by `seed`, and
        `original`'s top-1 predictions on it (see the module doc)."""
        size = POOL_SIZE if size is None else int(size)
        g = torch.Generator().manual_seed(int(seed))
        val = _inputs(val_loader)
        n_labelled = len(val)
        train = _inputs(train_loader, limit=size)
        src = torch.cat([t for t in (train, val) if len(t)])
        if len(src) == 0:
            raise UserError("acceptance='agreement' needs inputs: the training and validation loaders are empty")
        if not src.is_floating_point():
            raise UserError(f"acceptance='agreement' adds noise to inputs and mixes them, so it needs floating-point "
                            f"inputs, not {src.dtype}")
        n_val = min(len(val), size // 4)
        if n_val < len(val):
            val = val[torch.randperm(len(val), generator=g)[:n_val]]
        rest = max(size - n_val, 0)
        n_noise = rest // 2
        n_mixup = rest - n_noise
        std = src.std(0, keepdim=True) if len(src) > 1 else torch.ones_like(src[:1])
        i = torch.randint(len(src), (n_noise,), generator=g)
        noisy = src[i] + noise_scale * std * torch.randn((n_noise, *src.shape[1:]), generator=g)
        a = torch.randint(len(src), (n_mixup,), generator=g)
        b = torch.randint(len(src), (n_mixup,), generator=g)
        if len(src) > 1:  # never an input with itself (that would be the raw input again)
            b = torch.where(b == a, (a + 1 + torch.randint(len(src) - 1, (n_mixup,), generator=g)) % len(src), b)
        lo, hi = mixup_lambda
        lam = (lo + (hi - lo) * torch.rand(n_mixup, generator=g)).view(-1, *([1] * (src.ndim - 1)))
        mixed = lam * src[a] + (1 - lam) * src[b]
        x = torch.cat([val, noisy, mixed])
        train_x = train[torch.randperm(len(train), generator=g)[:TRAIN_DIAGNOSTIC]] if len(train) else train
        return cls(x, predictions(original, x), n_val, n_noise, n_mixup, train_x,
                   predictions(original, train_x) if len(train_x) else torch.zeros(0, dtype=torch.long), int(seed),
                   n_labelled, float(noise_scale), (float(lo), float(hi)))

    def __len__(self) -> int:
        return len(self.x)

    def disagreement(self, model: nn.Module) -> torch.Tensor:
        """Per pool input: whether `model`'s top-1 prediction differs from the original's."""
        return predictions(model, self.x) != self.reference

    def drop_upper(self, model: nn.Module, confidence: float) -> tuple[float, float]:
        """(disagreement rate, its one-sided upper bound at `confidence`), both in percentage points."""
        j = self.judge(model, confidence)
        return j["pool_disagreement"], j["drop_upper_bound"]

    def judge(self, model: nn.Module, confidence: float) -> dict:
        """`model`'s disagreement with the original, percentage points: on the whole pool
        (`pool_disagreement`) with its upper bound at `confidence` (`drop_upper_bound`, what acceptance
        tests), and on each part (`val_`, `noise_`, `mixup_disagreement`; None for an empty part)."""
        d = self.disagreement(model)
        parts = {"val": d[:self.n_val], "noise": d[self.n_val:self.n_val + self.n_noise],
                 "mixup": d[self.n_val + self.n_noise:]}
        out = {"pool_disagreement": _rate(d), "drop_upper_bound": disagreement_upper(d, confidence)}
        out.update({f"{k}_disagreement": _rate(v) for k, v in parts.items()})
        return out

    def train_disagreement(self, model: nn.Module) -> float | None:
        """Disagreement on raw training inputs, percentage points (optimistic: distillation fits them)."""
        return _rate(predictions(model, self.train_x) != self.train_reference) if len(self.train_x) else None

    def describe(self) -> dict:
        """The pool's composition, for the result's `run`."""
        return {"size": len(self.x), "n_labelled": self.n_labelled, "val": self.n_val, "noise": self.n_noise,
                "mixup": self.n_mixup, "noise_scale": self.noise_scale, "mixup_lambda": list(self.mixup_lambda),
                "train_diagnostic": len(self.train_x), "seed": self.seed}
