"""The timing harness: warm-up, repeat until the median is stable, re-measure noisy results.

Method (the README states it too):
1. Warm-up: call the workload until `warmup_calls` calls *and* `warmup_ms` of its own time have passed,
   so first-call costs (allocation, kernel selection, lazy init, ONNX session set-up) are not measured.
2. Timed rounds of `round_calls` calls, each call timed by the backend's clock. After each round the
   median and the inter-quartile range of all calls so far give the median's relative uncertainty
   (~1.57 IQR / (median sqrt n), the notched-box-plot interval). Stop when it is below `target_rel_ci`
   with at least `min_calls` calls, or at `max_calls`, or when the calls have used `max_ms`.
   On CPU backends every round is bracketed by the quiet guard (`devices.quiet`): the harness waits
   until the machine runs at its uncontended speed before a round and drops a round after which it does
   not (a shared host switches this VM between two speed states ~1.6x apart every few seconds). Rounds
   last at least `min_round_ms` so that the guard's ~60 us probe is a small overhead.
3. If the whole measurement is noisy (IQR / median above `remeasure_rel_iqr`, e.g. another process
   stole the CPU), measure again, up to `max_remeasures` times, and keep the quietest measurement.
The Python garbage collector is off while timing so a collection does not land inside one call.
"""

from __future__ import annotations

import gc
import math
from dataclasses import asdict, dataclass

import numpy as np

from fastdeepiot.devices.base import Runner


@dataclass(frozen=True)
class TimingPolicy:
    warmup_calls: int = 3
    warmup_ms: float = 20.0
    round_calls: int = 10
    min_calls: int = 10
    max_calls: int = 300
    max_ms: float = 400.0
    target_rel_ci: float = 0.01
    remeasure_rel_iqr: float = 0.15
    max_remeasures: int = 2
    wait_quiet: bool = True  # use the runner's quiet guard, if it has one
    min_round_ms: float = 1.0
    max_dropped_rounds: int = 20
    max_wait_s: float = 10.0  # waiting for quiet, per measurement; then it goes on unguarded

    @classmethod
    def quick(cls) -> "TimingPolicy":
        """For short budgets: fewer calls, looser target."""
        return cls(warmup_calls=2, warmup_ms=5.0, min_calls=7, max_calls=60, max_ms=150.0,
                   target_rel_ci=0.02)


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    rel_iqr: float  # (q75 - q25) / median of the kept measurement
    n_calls: int
    remeasured: int  # how many extra measurements were made because the first was noisy
    dropped_rounds: int = 0  # rounds discarded because the machine was not quiet after them

    def to_dict(self) -> dict:
        return asdict(self)


def _one_measurement(runner: Runner, policy: TimingPolicy) -> tuple[np.ndarray, float, int]:
    guard = getattr(runner, "guard", None) if policy.wait_quiet else None
    spent_ms, calls, last = 0.0, 0, 0.0
    while calls < policy.warmup_calls or spent_ms < policy.warmup_ms:
        last = runner.time_calls(1)[0]
        spent_ms += last
        calls += 1
        if calls >= 10 * policy.warmup_calls and calls >= 50:  # very fast op: enough warm-up
            break
    round_calls = policy.round_calls
    if guard is not None and last > 0:
        round_calls = max(round_calls, min(policy.max_calls // 2, int(np.ceil(policy.min_round_ms / last))))
    times: list[float] = []
    dropped = 0
    waited0 = guard.waited_s if guard is not None else 0.0
    while True:
        if guard is not None and guard.waited_s - waited0 > policy.max_wait_s:
            guard = None  # a machine that stays busy: measure anyway rather than stall the profile
        if guard is not None:
            guard.wait_quiet()
        t = runner.time_calls(round_calls)
        if guard is not None and dropped < policy.max_dropped_rounds and not guard.quiet():
            dropped += 1
            continue
        times.extend(t)
        q25, med, q75 = _quantiles(sorted(times), (0.25, 0.5, 0.75))
        rel_iqr = (q75 - q25) / med if med > 0 else 0.0
        rel_ci = 1.57 * rel_iqr / math.sqrt(len(times))
        if len(times) >= policy.min_calls and rel_ci <= policy.target_rel_ci:
            break
        if len(times) >= policy.max_calls or sum(times) >= policy.max_ms:
            break
    return np.asarray(times), rel_iqr, dropped


def _quantiles(xs: list[float], qs: tuple[float, ...]) -> list[float]:
    """numpy's default (linear) percentiles of an ascending list, in plain Python: the harness asks for the
    quartiles of up to a few hundred calls after every round, and numpy's median and percentile calls there cost
    9.8 ms of CPU per measurement (1.2 ms this way), as much as the timed calls of a fast layer."""
    n, out = len(xs), []
    for q in qs:
        pos = q * (n - 1)
        i = int(pos)
        j = min(i + 1, n - 1)
        out.append(xs[i] + (xs[j] - xs[i]) * (pos - i))
    return out


def measure(runner: Runner, policy: TimingPolicy = TimingPolicy()) -> Timing:
    """Time one prepared workload according to `policy` (see the module docstring)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        best, best_iqr, dropped = _one_measurement(runner, policy)
        remeasured = 0
        while best_iqr > policy.remeasure_rel_iqr and remeasured < policy.max_remeasures:
            remeasured += 1
            a, iqr, d = _one_measurement(runner, policy)
            dropped += d
            if iqr < best_iqr:
                best, best_iqr = a, iqr
    finally:
        if gc_was_enabled:
            gc.enable()
    p10, p50, p90 = np.percentile(best, [10, 50, 90])
    return Timing(median_ms=float(p50), p10_ms=float(p10), p90_ms=float(p90), rel_iqr=best_iqr,
                  n_calls=int(len(best)), remeasured=remeasured, dropped_rounds=dropped)
