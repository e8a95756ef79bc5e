"""The profiler: walks a deterministic plan of configurations, times each new one, stores it at once.

The plan for (families, seed) is always the same sequence, so a second run of the same command skips
what the store already holds and continues where the first stopped (resume after kill -9).
Families take turns (weighted round-robin), so a short budget still covers every family.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from fastdeepiot.devices import quiet
from fastdeepiot.devices.base import Backend
from fastdeepiot.errors import UserError, check_whole
from fastdeepiot.families import LayerConfig, get_family
from fastdeepiot.graph.extract import extract_layers
from fastdeepiot.graph.paths import kernel_path
from fastdeepiot.graph.randomnets import STREAM, build_network, example_input, random_network, spec_families
from fastdeepiot.profiling.harness import Timing, TimingPolicy, measure
from fastdeepiot.profiling.timer import NetworkTimer, TimerPolicy
from fastdeepiot.profiling.space import family_stream
from fastdeepiot.profiling.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workload:
    """One thing to measure: a layer configuration, or a whole network given by a JSON-able spec."""

    kind: str  # 'layer' | 'network'
    family: str  # layer family, or 'network'
    key: str
    config: dict
    source: str  # 'random' | 'sweep' | 'adaptive' | 'network' | 'network:<style>' (a layer of a random network)
    layer: LayerConfig | None = None


def layer_workload(c: LayerConfig, source: str) -> Workload:
    return Workload("layer", c.family, c.key, dict(c.params), source, c)


def network_workload(spec: dict) -> Workload:
    return Workload("network", "network", "network:" + json.dumps(spec, sort_keys=True), spec, "network")


def network_stream(seed: int) -> Iterator[Workload]:
    """Random networks assembled from the families (never the evaluation zoo), the architecture styles
    in turn (`randomnets.STREAM`)."""
    i = 0
    while True:
        style, kind = STREAM[i % len(STREAM)]
        _, _, spec = random_network(seed * 100003 + i, kind, style)
        yield network_workload(spec)
        i += 1


# Turns per round-robin cycle. Convolutions have the largest configuration spaces (channels x kernel x
# stride x groups x size x batch) and the most staircase structure, and they carry most of the time of
# image and sensor networks: measured on both CPU backends, their held-out error with equal turns was
# 2-5x that of the other families, which reach ~2% median error with far fewer samples.
# Turns count configurations, not seconds, and a Conv2d configuration is cheap to time (alone, 15 a second on
# this repository's 2-vCPU host): at 3 turns a 10-minute torch-cpu profile held 527 Conv2d rows, about 35 s of
# its budget, while convolutions are most of a CNN's time. Session 30 gave Conv2d the last 150 s of each backend's
# 10-minute profile instead of the other families and networks (about 2,300 more Conv2d rows, the others' rows
# after 7.5 minutes dropped): held-out architectures, their style left out, 41% -> 51% within +-10% on torch-cpu
# and 40% -> 48% on onnxruntime-cpu with the channels of the time (1..256); 52.5% and 51.6% with Conv2d's channels
# to 1024 (`families`; docs/results/session30). 16 turns give Conv2d about that share.
FAMILY_TURNS = {"conv2d": 16, "conv1d": 2}


def network_layer_configs(spec: dict, families: list[str], k: int) -> list[LayerConfig]:
    """Up to `k` distinct layer configurations the random network `spec` runs (of `families`, exact:
    not approximated by a nearest configuration), drawn at random with the network's seed."""
    calls = extract_layers(build_network(spec), example_input(spec))
    found: dict[str, LayerConfig] = {}
    for c in calls.layers():
        if not c.approx and c.family in families:
            found.setdefault(c.config.key, c.config)
    keys = sorted(found)
    return [found[key] for key in random.Random(f"{spec['seed']}:{spec.get('style')}").sample(keys, min(k, len(keys)))]


def plan(families: list[str], seed: int = 0, network_every: int = 0, network_layers: int = 4,
         backend: Backend | None = None) -> Iterator[Workload]:
    """Weighted round-robin over the families' streams (`FAMILY_TURNS`, default 1); with
    `network_every` = k > 0, one random network after every k layer configurations, followed by
    `network_layers` of the layer configurations that network runs, timed alone (source
    "network:<style>"): the family spaces are grids a designer chose, a network's layers are where
    predictions are asked for (global pools, 1x1 and 2x2 feature maps, a Linear over batch x tokens rows).
    With `backend` (the one the plan is for), a family whose layers that backend runs through several code
    paths (`graph.paths`) gets its random points balanced over them (`space.PathBalancer`).
    The arguments are checked here, at the call (UserError), not at the first workload."""
    if isinstance(families, str):
        raise UserError(f"families must be a list of family names, e.g. [{families!r}], not a string")
    try:
        families = list(families)
    except TypeError:
        raise UserError(f"families must be a list of family names, got {type(families).__name__}") from None
    for f in families:
        get_family(f)  # an unknown one: UnknownNameError
    seed = check_whole(seed, "seed", 0)
    network_every = check_whole(network_every, "network_every", 0)
    network_layers = check_whole(network_layers, "network_layers", 0)
    path = None if backend is None else functools.partial(kernel_path, backend.name, backend.threads)
    return _plan(families, seed, network_every, network_layers, path)


def _plan(families: list[str], seed: int, network_every: int, network_layers: int, path) -> Iterator[Workload]:
    streams = {f: family_stream(f, seed, path=path) for f in families}
    nets = network_stream(seed) if network_every > 0 else None
    n_layers = 0
    while streams:
        for f in list(streams):
            for _ in range(FAMILY_TURNS.get(f, 1)):
                item = next(streams[f], None)
                if item is None:
                    del streams[f]
                    break
                yield layer_workload(*item)
                n_layers += 1
                if nets is not None and n_layers % network_every == 0:
                    net = next(nets)
                    yield net
                    for c in network_layer_configs(net.config, families, network_layers):
                        yield layer_workload(c, f"network:{net.config['style']}")


@dataclass
class ProfileSummary:
    new: int = 0
    skipped: int = 0
    failed: int = 0
    by_other: int = 0  # measured by another profiler on the same database while this one ran
    elapsed_s: float = 0.0
    stopped_by: str = "plan exhausted"
    unsupported: int = 0  # workloads the backend says it cannot run (Backend.unsupported): skipped
    per_family: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    # How the machine's speed states cost this run: seconds the layer measurements (this process's quiet
    # guard, `devices.quiet`) waited for the uncontended speed, and rounds dropped because the machine was
    # not quiet after them (layers and networks). A host in its slow state more often stores fewer
    # measurements in the same budget.
    waited_s: float = 0.0
    dropped_rounds: int = 0


def time_layer(backend: Backend, config: LayerConfig, policy: TimingPolicy = TimingPolicy()) -> Timing:
    """One layer configuration timed alone, as the profiler stores it: the backend's runner for it, measured by
    the harness (`policy`), then released."""
    runner = backend.layer_runner(config)
    try:
        return measure(runner, policy)
    finally:
        runner.close()


def profile(backend: Backend, store: Store, workloads: Iterable[Workload], *, budget_s: float | None = None,
            max_new: int | None = None, policy: TimingPolicy = TimingPolicy(),
            on_progress: Callable[[ProfileSummary, Workload], None] | None = None,
            clock: Callable[[], float] = time.monotonic) -> ProfileSummary:
    """Measure every workload not yet in `store`, until the plan, `budget_s` or `max_new` runs out."""
    if budget_s is not None and not (isinstance(budget_s, (int, float)) and math.isfinite(budget_s) and budget_s > 0):
        raise UserError(f"budget_s must be a positive number of seconds or None, got {budget_s!r}")
    if max_new is not None:
        max_new = check_whole(max_new, "max_new", 0)
    if not isinstance(backend, Backend):
        raise UserError(f"backend must be a Backend (fastdeepiot.get_backend(name)), got {type(backend).__name__}")
    if not isinstance(store, Store):
        raise UserError(f"store must be a Store (Store.open(path, backend.fingerprint(), create=True)), "
                        f"got {type(store).__name__}")
    try:
        workloads = iter(workloads)
    except TypeError:
        raise UserError(f"workloads must be an iterable of Workload (plan(families)), "
                        f"got {type(workloads).__name__}") from None
    store.check_device(backend.fingerprint())
    store.set_conditions(backend.conditions())
    done = store.measured_keys()
    stored_before = set(done)
    s = ProfileSummary()
    guard = quiet.shared_guard()
    waited0 = guard.waited_s if guard is not None else 0.0
    t0 = clock()

    def account() -> None:  # the run's time so far, and how much of it the quiet guard spent waiting
        s.elapsed_s = clock() - t0
        s.waited_s = guard.waited_s - waited0 if guard is not None else 0.0
    timer = None  # the one network timer (profiling.timer): a process of its own on CPU backends
    try:
        for w in workloads:
            if not isinstance(w, Workload):
                raise UserError(f"workloads must yield Workload items (plan(families)), got {w!r:.80}")
            if w.key in done:  # stored before this run, or a repeat within the plan
                if w.key in stored_before:
                    stored_before.discard(w.key)
                    s.skipped += 1
                continue
            if budget_s is not None and clock() - t0 >= budget_s:
                s.stopped_by = "time budget"
                break
            if max_new is not None and s.new >= max_new:
                s.stopped_by = "measurement count"
                break
            if store.has(w.key):  # another profiler (same plan) stored it after this one started
                s.by_other += 1
                done.add(w.key)
                continue
            if w.kind == "layer" and backend.unsupported(w.layer) is not None:
                s.unsupported += 1
                continue
            if w.kind == "network" and any(backend.unsupported_family(f) for f in spec_families(w.config)):
                s.unsupported += 1
                continue
            try:
                if w.kind == "network":
                    if timer is None:
                        timer = NetworkTimer(backend, TimerPolicy.for_profile(policy))
                    try:
                        timing = timer.time_spec(w.config).to_timing()
                    except RuntimeError:
                        if not timer.alive():  # start a new one for the next network
                            timer.close()
                            timer = None
                        raise
                else:
                    timing = time_layer(backend, w.layer, policy)
            except Exception as e:  # a configuration the backend cannot run: report, keep going
                s.failed += 1
                msg = f"{w.key}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                s.failures.append(msg)
                log.warning("could not measure %s", msg)
                continue
            if store.add(kind=w.kind, family=w.family, config_key=w.key, config=w.config, timing=timing,
                         source=w.source):
                s.new += 1
                s.per_family[w.family] = s.per_family.get(w.family, 0) + 1
                s.dropped_rounds += timing.dropped_rounds
            else:  # another profiler stored the same key first: its measurement is kept
                s.by_other += 1
            done.add(w.key)
            account()
            if on_progress:
                on_progress(s, w)
    finally:
        if timer is not None:
            timer.close()
    account()
    return s
