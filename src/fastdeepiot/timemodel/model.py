"""The device's execution-time model: one estimator per layer family plus a network composition.

    tm = fit_time_model(store)                    # from measurements (profile first)
    tm.save("cpu.timemodel.json"); tm = TimeModel.load("cpu.timemodel.json")
    p = tm.predict_network(module, example_input)  # p.total_ms, p.layers, p.unmodelled

Network composition. A network is not the sum of its layers measured one by one: a backend fuses some
operators into their producer (ONNX Runtime folds BatchNorm into Conv, fuses activations and residual
adds: `fastdeepiot.graph.fusion`), every network call has its own fixed overhead, and layers inside a
network run with warmer or colder caches than alone. The total is linear in terms that each have a
physical meaning (`composition_terms`):

    total_ms = c_net + c_free * free ops + c_mod * container-module calls + c_copy * M elements copied
               + sum over layer calls of  a_g * standalone_ms + b_g   (+ NCHWc layout terms on ORT)
               + a_mixed * ln(D) * number of unfused layer calls
               + a_cold * cold weight MB

g is the call's group: `unfused`, `fused` (fused away into its producer), or `nchwc` (an ORT conv on the
blocked NCHWc path: alone, its session also reorders its input and output, which a chain of such convs
inside a network does once). b_g is free in sign: a layer timed alone pays its own per-run cost (ORT
session run, ~3.5 us here), which inside a network it does not, so b_g comes out negative there.
c_copy prices the free ops that move memory (`copied_elements`): an axis move (permute, transpose) is a
view in eager PyTorch that the next reshape, .contiguous() or kernel materialises, and a Transpose kernel that
copies in ONNX Runtime (ShuffleNet's channel shuffle at batch 16, attention's head split and merge: 0.5-1 ns
an element there, 13-15% of a network that the layers timed alone did not contain; session 25).
c_mod prices torch's eager nn.Module.__call__ of containers (Sequential, blocks): a Python cost no single
layer measurement contains. A layer timed alone runs in a loop that keeps its code and the library's
dispatch hot; inside a network it competes with every other kernel the network runs, so a network that
mixes many different kernels runs slower than one that repeats a few (measured on torch-cpu: GELU 9 us
alone, 19-25 us inside a mixed random network; a ReLU +1 us inside a ResNet). The `mixed_calls` term,
ln(D) per unfused layer call with D the number of distinct kernel kinds the network runs
(`LayerConfig.kernel_kind`), prices that as a cost per call: b_unfused + a_mixed * ln(D) ms beyond the
call's standalone time. (A share of each call's standalone time, a_mixed * ln(D) * standalone ms, the
`mixed_layers` term of models fitted before, over-priced networks of few large layers: ResNet and VGG
+10-27% on torch-cpu, where a per-call cost gives +7-11%.)
Weights past the cache: a layer timed alone loops over its own weights, which stay in the CPU's caches;
inside a network whose working set (all weights + the largest feature maps) exceeds the cache, the other
layers evict them between two forwards and a memory-bound layer runs 2-4x longer (bench/cache_residency.py).
`cold_weights` is each layer's weight MB times the share of them it misses inside the network and not alone
(`cold_share`), against a cache capacity (CACHE_BYTES) chosen among shares of the last-level cache the
profile recorded and the core's own cache below it (`cache_candidates`); the term is kept only where
leave-one-style-out cross-validation over the profiled networks prefers it, and its cost per MB is capped by the
device's own memory stream (`cold_rate`).
The NCHWc terms price the reorders alone-vs-inside (M elements of the conv's input+output) and the
reorders a network does pay (M elements entering a plain op from an NCHWc producer). Coefficients are
fitted (relative least squares, costs non-negative) on random networks measured during profiling
(`graph.randomnets`; never the networks we evaluate on). Without measured networks the composition is
the plain sum of the layers (and fused-away layers cost nothing).
"""

from __future__ import annotations

import gc
import json
import math
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import lsq_linear

from fastdeepiot.errors import StoreError, UnmodelledLayerError, UserError, check_seed, check_whole
from fastdeepiot.families import FAMILIES, LayerConfig, check_config, get_family
from fastdeepiot.graph.calls import copied_elements
from fastdeepiot.graph.extract import extract_layers
from fastdeepiot.graph.fusion import fusion_for_backend
from fastdeepiot.graph.paths import kernel_paths
from fastdeepiot.graph.randomnets import build_network, example_input
from fastdeepiot.graph.trace import untouched
from fastdeepiot.jsonutil import dump_json
from fastdeepiot.profiling.store import Store
from fastdeepiot.timemodel.baselines import FlopsLinear, LookupTable, RandomForestTime
from fastdeepiot.timemodel.metrics import relative_error_summary, relative_errors
from fastdeepiot.timemodel.schema import check_estimator, finite, number, shown
from fastdeepiot.timemodel.tree import ModelTree, featurize, featurize_columns
from fastdeepiot.timemodel.tree.features import PATH_COLUMN
from fastdeepiot.timemodel.tree.bagging import BaggedModelTrees

FORMAT = "fastdeepiot.timemodel"
FORMAT_VERSION = 1
# the one table of estimators: the name `fit --estimator` takes -> the class (its JSON "type" is the class name)
_ESTIMATOR_CLASSES = {"tree": ModelTree, "bagged": BaggedModelTrees, "flops": FlopsLinear, "lookup": LookupTable,
                      "forest": RandomForestTime}
ESTIMATORS = tuple(_ESTIMATOR_CLASSES)
ESTIMATOR_TYPES = tuple(cls.__name__ for cls in _ESTIMATOR_CLASSES.values())


def make_estimator(kind: str, seed: int = 0):
    """A fresh estimator of `kind`; `seed` seeds its randomness where it has any (`random_state`: a
    tree's cross-validation folds, the bagged trees' draws, the forest)."""
    if kind not in _ESTIMATOR_CLASSES:
        raise UserError(f"unknown estimator {kind!r}; known: {', '.join(ESTIMATORS)}")
    est = _ESTIMATOR_CLASSES[kind]()
    if "random_state" in est.get_params():
        est.set_params(random_state=int(seed))
    return est


def estimator_from_dict(d: dict):
    for cls in _ESTIMATOR_CLASSES.values():
        if d.get("type") == cls.__name__:
            return cls.from_dict(d)
    raise ValueError(f"unknown estimator type {d.get('type')!r}")


@dataclass
class LayerPrediction:
    name: str
    op: str
    family: str | None
    config: dict | None
    ms: float  # this layer's share of the total (0 when fused away and the backend folds it)
    standalone_ms: float  # the layer timed alone (the family model's prediction)
    fused_into: str | None = None
    approx: bool = False


@dataclass
class NetworkPrediction:
    total_ms: float
    layers: list[LayerPrediction]
    unmodelled: list[str]
    overhead_ms: float  # the part of the total that no layer owns (network call, free ops, container-module calls)
    traced: bool = True
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"total_ms": self.total_ms, "overhead_ms": self.overhead_ms, "unmodelled": self.unmodelled,
                "traced": self.traced, "warnings": self.warnings,
                "layers": [asdict(layer) for layer in self.layers]}


# network-level terms, then per-call terms (a call's share of the total is the sum of its own terms)
NETWORK_TERMS = ("network_call", "free_ops", "module_calls", "copied_elements")
CALL_TERMS = ("unfused_layers", "unfused_count", "mixed_calls", "mixed_layers", "fused_layers", "fused_count",
              "nchwc_layers", "nchwc_count", "nchwc_elements", "reorder_elements", "cold_weights")
COMPOSITION_TERMS = NETWORK_TERMS + CALL_TERMS
# kept so that a model saved before prices as it did, never fitted again: the kernel-mix slowdown as a
# share of each layer's standalone time (replaced by mixed_calls, a cost per call: on torch-cpu's 30-minute
# profile, bench/generalisation.py, random networks left out by style 73.5% -> 74.7% within +-10%, the zoo
# 70% -> 85%)
LEGACY_TERMS = ("mixed_layers",)
# free in sign: the NCHWc reorder terms; a group's per-call offset (`*_count`) is negative in a fitted model, but
# only as far as `fit_composition` lets it (never below -a_g * the smallest layer it saw)
FREE_SIGN_TERMS = ("unfused_count", "fused_count", "nchwc_count", "nchwc_elements", "reorder_elements")
FITTED_FREE_SIGN = ("nchwc_elements", "reorder_elements")
# not a composition term: the standalone ms of a network's slowest running (not fused-away) layer, the
# floor of `TimeModel.compose`
SLOWEST_LAYER = "slowest_layer"
# not a term either: the cache capacity (bytes) `call_terms` prices cold weights against (0: no cold-weight term).
# `fit_composition` chooses it among shares of the profiled CPU's last-level cache (`CACHE_SHARES`)
CACHE_BYTES = "cache_bytes"
IDENTITY_COMPOSITION = {**dict.fromkeys(COMPOSITION_TERMS, 0.0), "unfused_layers": 1.0, "nchwc_layers": 1.0,
                        CACHE_BYTES: 0.0}


@contextmanager
def _collector_paused():
    """Pause Python's cyclic garbage collector (where it runs) and resume it afterwards: what a call leaves in
    cycles is collected at the next collection after it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def complete_composition(comp: dict | None) -> dict:
    """All COMPOSITION_TERMS; a composition saved before a term existed gets 0 for it (NCHWc convs were
    priced as unfused layers then)."""
    if not comp:
        return dict(IDENTITY_COMPOSITION)
    out = {**dict.fromkeys(COMPOSITION_TERMS, 0.0), CACHE_BYTES: 0.0}
    out.update({k: float(v) for k, v in comp.items() if k in out})
    if "nchwc_layers" not in comp:
        out["nchwc_layers"] = out["unfused_layers"]
    return out


def cold_share(working_set: float, cache_bytes: float) -> float:
    """The share of what a loop over `working_set` bytes reads that no longer comes from a cache of
    `cache_bytes`: 0 while it fits, then 1 - cache / working set (0 without a cache size)."""
    return max(0.0, 1.0 - cache_bytes / working_set) if cache_bytes > 0 and working_set > 0 else 0.0


def working_set(layer_features) -> float:
    """The bytes one forward of a network keeps touching, from the `config.features()` of each of its layer
    calls: every call's weights, and the largest input + output any one call holds (both eager PyTorch's
    caching allocator and ONNX Runtime's arena hand a freed feature map's memory to the next, so the maps of
    a forward reuse a few buffers; for a network of one layer this is that layer's own working set)."""
    weights, maps = 0.0, 0.0
    for f in layer_features:
        weights += f["weight_bytes"]
        maps = max(maps, f["input_bytes"] + f["output_bytes"])
    return weights + maps


def call_terms(calls, standalone: list[float], cache_bytes: float = 0.0) -> list[dict]:
    """Per-call composition terms of an extracted, fusion-annotated network: for each call a dict of
    its CALL_TERMS (empty for calls that are not priced layers: standalone None).

    `cold_weights` (MB): a layer timed alone loops over its own weights and reads them from cache; inside
    a network whose working set exceeds the cache, the rest of the network evicts them between two
    forwards, and the layer reads the share `cold_share(network) - cold_share(layer alone)` of them from
    memory (measured on torch-cpu, bench/cache_residency.py: Linear 2-3.8x slower with cold weights)."""
    layout = {c.name: c.layout for c in calls}
    feats = {i: c.config.features() for i, c in enumerate(calls) if c.kind == "layer"} if cache_bytes > 0 else {}
    network_cold = cold_share(working_set(feats.values()), cache_bytes) if cache_bytes > 0 else 0.0
    running = {c.config.kernel_kind for c, s in zip(calls, standalone)
               if c.kind == "layer" and s is not None and c.fused_into is None}
    log_kinds = float(np.log(max(1, len(running))))
    out = []
    for i, (c, s) in enumerate(zip(calls, standalone)):
        if c.kind != "layer" or s is None:
            out.append({})
            continue
        if c.fused_into is not None:  # (its weights are folded into its producer's)
            out.append({"fused_layers": s, "fused_count": 1.0})
            continue
        if c.layout == "nchwc" and c.family == "conv2d":
            f = c.config.features()  # from the configuration, so a width change moves it
            t = {"nchwc_layers": s, "nchwc_count": 1.0,
                 "nchwc_elements": (f["input_bytes"] + f["output_bytes"]) / 4e6}
        else:
            t = {"unfused_layers": s, "unfused_count": 1.0, "mixed_calls": log_kinds, "mixed_layers": s * log_kinds}
            if c.layout != "nchwc" and any(layout.get(i) == "nchwc" for i in c.inputs):
                t["reorder_elements"] = c.config.features()["input_bytes"] / 4e6
        if network_cold > 0:
            f = feats[i]
            alone = cold_share(f["weight_bytes"] + f["input_bytes"] + f["output_bytes"], cache_bytes)
            if f["weight_bytes"] and network_cold > alone:
                t["cold_weights"] = f["weight_bytes"] / 1e6 * (network_cold - alone)
        out.append(t)
    return out


def composition_terms(calls, standalone: list[float], cache_bytes: float = 0.0) -> dict:
    """The composition terms of one network (`standalone`: each call's standalone ms, None where the
    call is not a priced layer; `cache_bytes`: the composition's CACHE_BYTES); `module_calls` comes from
    the extraction (`ExtractResult`)."""
    return sum_terms(calls, call_terms(calls, standalone, cache_bytes))


def sum_terms(calls, per_call: list[dict]) -> dict:
    """The network's composition terms from its calls' `call_terms` (summed in call order), and its
    `SLOWEST_LAYER` (the floor `TimeModel.compose` applies; not a fitted term)."""
    terms = {**dict.fromkeys(COMPOSITION_TERMS, 0.0), "network_call": 1.0,
             "free_ops": float(sum(1 for c in calls if c.kind == "free")),
             "module_calls": float(getattr(calls, "module_calls", 0)), "copied_elements": copied_elements(calls)}
    slowest = 0.0
    for t in per_call:
        for k, v in t.items():
            terms[k] += v
        slowest = max(slowest, t.get("unfused_layers", 0.0), t.get("nchwc_layers", 0.0))
    terms[SLOWEST_LAYER] = slowest
    return terms


def _config_id(c: LayerConfig):
    """A cheap identity of a configuration (its parameters with their types: 1, 1.0 and True differ);
    its canonical key where a value is unhashable."""
    ident = (tuple(c.params.items()), tuple(map(type, c.params.values())))
    try:
        hash(ident)
    except TypeError:
        return c.key
    return ident


def _beyond_warning(far_calls: list) -> str:
    """The warning for calls larger than anything their family's model was fitted on: [(call, (feature,
    value, largest fitted value))]."""
    def amount(feature: str, v: float) -> str:
        return f"{v / 2 ** 20:.3g} MiB" if feature.endswith("_bytes") else f"{v:.3g}"

    shown = [f"{c.name} ({c.family}: {f} {amount(f, v)}, profiled up to {amount(f, hi)})"
             for c, (f, v, hi) in far_calls[:4]]
    return (f"{len(far_calls)} layer(s) are larger than anything their family was profiled at, so their price "
            f"extrapolates the fitted costs: {', '.join(shown)}{' ...' if len(far_calls) > 4 else ''}; profile "
            "larger configurations of those families to price them from measurements")


def _unmodelled(calls, standalone: list) -> list[str]:
    """'name (op)' of each call that is an op no family covers or a layer the model does not price."""
    return [f"{c.name} ({c.op})" for c, s in zip(calls, standalone)
            if c.kind == "unmodelled" or (c.kind == "layer" and s is None)]


def known_levels(est) -> dict[str, set[str]] | None:
    """The values of each string parameter (an activation's kind, a pool's mode) an estimator was
    fitted on; None when the estimator does not say (then every value is taken as covered)."""
    if hasattr(est, "categorical_"):  # ModelTree
        return {c: set(v) for c, v in est.categorical_.items()}
    if hasattr(est, "cat_levels_"):  # RandomForestTime
        return {c: set(v) for c, v in est.cat_levels_.items()}
    if hasattr(est, "cat_cols_") and hasattr(est, "cats_"):  # LookupTable
        return {c: {str(v) for v in est.cats_[:, j]} for j, c in enumerate(est.cat_cols_)}
    return None


class TimeModel:
    """Per-family estimators + composition, for one device (its fingerprint and conditions)."""

    def __init__(self, estimators: dict, composition: dict | None = None, device: dict | None = None,
                 conditions: dict | None = None, report: dict | None = None):
        self.estimators = estimators
        self.composition = complete_composition(composition)
        self.device = dict(device or {})
        self.conditions = dict(conditions or {})
        self.report = report if report is not None else {}

    @property
    def backend(self) -> str:
        return self.device.get("backend", "torch-cpu")

    @property
    def families(self) -> list[str]:
        return sorted(self.estimators)

    def kernel_paths(self, configs: list[LayerConfig]) -> list[str] | None:
        """The code path this model's backend runs each configuration (of one family) through, or None
        where the family has no path rule (`graph.paths`); fit and predict both featurize with it. A path the
        family's model was not fitted with but whose parent it was ("native_small" -> "native": a model saved
        before the native path was named by its GEMM's width) is given as the parent, as that model knew it."""
        paths = kernel_paths(self.backend, int(self.device.get("threads", 1)), configs)
        est = self.estimators.get(configs[0].family) if paths else None
        known = (known_levels(est) or {}).get(PATH_COLUMN) if est is not None else None
        if known:
            paths = [p if p in known or p.split("_")[0] not in known else p.split("_")[0] for p in paths]
        return paths

    def covers(self, config: LayerConfig) -> bool:
        """Whether this model prices `config`: its family has an estimator, fitted on every string
        parameter value the configuration has (a model fitted before an activation kind existed, e.g.
        silu, does not price it by another kind's branch: the layer is unmodelled)."""
        est = self.estimators.get(config.family)
        if est is None:
            return False
        cache = self.__dict__.setdefault("_levels", {})  # family -> (estimator, its levels)
        if config.family not in cache or cache[config.family][0] is not est:
            cache[config.family] = (est, known_levels(est))
        levels = cache[config.family][1]
        return not levels or all(str(v) in levels[k] for k, v in config.params.items()
                                 if isinstance(v, str) and k in levels)

    # --------------------------------------------------------------------------- layers
    def predict_configs(self, configs: list[LayerConfig]) -> np.ndarray:
        """Predicted standalone time (ms) of each configuration; raises for unmodelled families, and
        UserError for a configuration no layer has (`families.check_config`: a parameter missing, unknown,
        negative, ...).

        One prediction call per family, on one row per distinct configuration (a network repeats many:
        ResNet-50's 174 layers are 54 configurations); a row's prediction does not depend on the other
        rows, so each configuration gets the time it gets alone."""
        if not isinstance(configs, (list, tuple)) or not all(isinstance(c, LayerConfig) for c in configs):
            raise UserError("predict_configs takes a list of LayerConfig, got " + (
                type(configs).__name__ if not isinstance(configs, (list, tuple)) else
                f"a {type(next(c for c in configs if not isinstance(c, LayerConfig))).__name__} in the list"))
        return self._predict_configs(configs, check=True)

    def _predict_configs(self, configs: list[LayerConfig], check: bool = False,
                         beyond: dict | None = None) -> np.ndarray:
        """`predict_configs`; `check` validates each distinct configuration (those an extraction made are
        layers of a network that ran). `beyond`, when given, receives {index: (feature, value, largest
        fitted value)} for each configuration larger than anything its family's model was fitted on
        (`ModelTree.beyond_profile`; models without ranges report none)."""
        out = np.zeros(len(configs))
        by: dict[str, dict] = {}  # family -> configuration -> indices of its occurrences
        for i, c in enumerate(configs):
            by.setdefault(c.family, {}).setdefault(_config_id(c), []).append(i)
        for fam, groups in by.items():
            if fam not in self.estimators:
                raise UnmodelledLayerError(
                    f"the time model has no {fam} model (families: {', '.join(self.families)}); "
                    f"profile {fam} and fit again")
            distinct = [configs[idx[0]] for idx in groups.values()]
            if check:
                for c in distinct:
                    check_config(c)
            unseen = [c for c in distinct if not self.covers(c)]
            if unseen:
                raise UnmodelledLayerError(
                    f"the {fam} model was fitted without {unseen[0].key}'s kind; profile it and fit again")
            X = featurize_columns(distinct, paths=self.kernel_paths(distinct))  # arrays: no DataFrame
            try:
                pred = np.asarray(self.estimators[fam].predict(X), dtype=float)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
                # a model read from a file that passed the schema check but cannot route a configuration
                raise UserError(f"the time model's {fam} model cannot predict ({type(e).__name__}: {e}); the "
                                f"file is damaged: fit it again") from None
            if not np.all(np.isfinite(pred)) or np.any(pred < 0):
                raise UserError(f"the time model's {fam} model predicts an impossible time "
                                f"({float(pred[~np.isfinite(pred) | (pred < 0)][0])} ms); the file is damaged: "
                                f"fit it again")
            for idx, ms in zip(groups.values(), pred):
                out[idx] = ms
            if beyond is not None and hasattr(self.estimators[fam], "beyond_profile"):
                for idx, far in zip(groups.values(), self.estimators[fam].beyond_profile(X)):
                    if far is not None:
                        beyond.update(dict.fromkeys(idx, far))
        return out

    def predict_config(self, config: LayerConfig) -> float:
        """Predicted standalone time (ms) of one configuration (see `predict_configs`)."""
        if not isinstance(config, LayerConfig):
            raise UserError(f"predict_config takes a LayerConfig, e.g. LayerConfig('linear', {{'batch': 1, "
                            f"'in_features': 64, 'out_features': 32}}), got {type(config).__name__}")
        return float(self.predict_configs([config])[0])

    # --------------------------------------------------------------------------- networks
    def network_terms_many(self, networks: list[list]) -> list[tuple[dict, list[float], list[str]]]:
        """For each extracted, fusion-annotated network: its composition terms, each call's standalone
        ms (0 for calls that are not priced layers) and its unmodelled calls; one prediction call per
        family over all the networks."""
        return [(self.network_terms(calls, sa), [x or 0.0 for x in sa], _unmodelled(calls, sa))
                for calls, sa in zip(networks, self._standalone_many(networks))]

    def network_terms(self, calls, standalone: list) -> dict:
        """`composition_terms` of one extracted network at this model's cache capacity."""
        return composition_terms(calls, standalone, self.composition[CACHE_BYTES])

    def _standalone_many(self, networks: list[list], beyond: dict | None = None) -> list[list[float | None]]:
        """Each call's standalone ms, None where the call is not a layer this model prices (`covers`);
        one prediction call per family over all the networks. `beyond`, when given, receives
        {(network, call): (feature, value, largest fitted value)} for the calls larger than anything their
        family's model was fitted on."""
        priced = [(i, j, c) for i, calls in enumerate(networks) for j, c in enumerate(calls)
                  if c.kind == "layer" and self.covers(c.config)]
        far: dict | None = None if beyond is None else {}
        ms = self._predict_configs([c.config for _, _, c in priced], beyond=far) if priced else np.zeros(0)
        if far:
            beyond.update({priced[k][:2]: v for k, v in far.items()})
        standalone: list[list] = [[None] * len(calls) for calls in networks]
        for (i, j, _), m in zip(priced, ms):
            standalone[i][j] = float(m)
        return standalone

    def compose(self, terms: dict) -> float:
        """The network's time from its composition terms: the fitted linear composition, and never less
        than its slowest running layer timed alone (`SLOWEST_LAYER`; the profiler times a layer as a
        network of that one layer, so a network holding it takes at least that long). The floor binds only
        on networks of a few cheap layers, where the per-layer offsets, fitted on networks of many layers,
        can take the sum below zero (a single multiply on torch-cpu: -0.9 us)."""
        return max(self.linear_total(terms), float(terms.get(SLOWEST_LAYER, 0.0)))

    def linear_total(self, terms: dict) -> float:
        """The fitted linear composition of a network's terms, before `compose`'s floor."""
        return float(sum(self.composition[k] * terms[k] for k in COMPOSITION_TERMS))

    def call_share(self, terms: dict) -> float:
        """One call's share of the network total, from its `call_terms`."""
        return float(sum(self.composition[k] * v for k, v in terms.items()))

    def extract(self, module, example_inputs):
        res = extract_layers(module, example_inputs, copy=False)  # read only here: fusion copies the calls
        return res, fusion_for_backend(res, self.backend)

    def predict_network(self, module, example_inputs, *, allow_unmodelled: bool = False) -> NetworkPrediction:
        """Predicted time of one forward (inference) call of `module` on `example_inputs` on this device.

        `module` is left alone: it is traced in eval mode without gradients and every submodule's mode is
        restored afterwards, so its mode, parameters and buffers (BatchNorm running statistics) are
        unchanged.

        Python's cyclic garbage collector is paused for the call (`_collector_paused`): a trace allocates tens
        of thousands of objects, and the collections they set off scanned everything the process holds, about
        5 ms of a 50 ms call in a process holding torch and a network."""
        with _collector_paused():
            return self._predict_network(module, example_inputs, allow_unmodelled)

    def _predict_network(self, module, example_inputs, allow_unmodelled: bool) -> NetworkPrediction:
        res, calls = self._extract_untouched(module, example_inputs)
        beyond: dict = {}  # (0, call index) -> (feature, value, largest fitted value)
        standalone = self._standalone_many([calls], beyond)[0]  # None where not priced: no share of the total
        unmodelled = _unmodelled(calls, standalone)
        if unmodelled and not allow_unmodelled:
            raise UnmodelledLayerError(
                f"{len(unmodelled)} layer(s) the time model cannot price: {', '.join(unmodelled[:8])}"
                + (" ..." if len(unmodelled) > 8 else "") + "; pass --allow-unmodelled "
                "(allow_unmodelled=True) to predict the rest")
        priced = sum(1 for c in calls if c.kind == "layer" and c.family in self.estimators)
        if priced == 0 and not res.traced:
            # the fallbacks found nothing to price: a 0 ms network would be a silent wrong answer
            raise UnmodelledLayerError(
                f"nothing in the network can be priced: torch.fx tracing failed ({res.untraced_reason}), and of what "
                "one forward on the example input ran, this time model prices nothing; make the forward traceable by "
                "torch.fx (no branching on tensor values) or run its ops through nn.Modules")
        if unmodelled and priced == 0:
            raise UnmodelledLayerError(
                f"none of the network's layers can be priced by this time model (unmodelled: "
                f"{', '.join(unmodelled[:8])}{' ...' if len(unmodelled) > 8 else ''}; it models "
                f"{', '.join(self.families)}); profile those families and fit again")
        if not any(c.kind == "layer" for c in calls):
            # an empty nn.Sequential, nn.Identity, views and reshapes alone: the composition's per-network and
            # free-op terms are fitted on networks that compute, so a number here would be the intercept alone
            raise UserError("the network runs no layer on its input (" + (
                "its forward computes nothing from it: it returns the input as it is, or a constant"
                if not calls else
                "only free operations: " + ", ".join(sorted({c.name for c in calls})[:6])) +
                "): there is nothing to time")
        per_call = call_terms(calls, standalone, self.composition[CACHE_BYTES])
        terms = sum_terms(calls, per_call)
        total = self.compose(terms)
        if not math.isfinite(total) or total < 0:
            raise UserError(f"the time model predicts an impossible total ({total} ms); its composition is "
                            f"damaged: fit it again")
        layers, slowest = [], None
        for c, sa, t in zip(calls, standalone, per_call):
            if sa is None:
                continue
            share = max(0.0, self.call_share(t))  # a fused-away layer can come out a hair below 0
            layers.append(LayerPrediction(c.name, c.op, c.family, dict(c.config.params), share, sa,
                                          c.fused_into, bool(getattr(c, "approx", False))))
            if c.fused_into is None and (slowest is None or sa > slowest.standalone_ms):
                slowest = layers[-1]
        linear = self.linear_total(terms)
        if total > linear and slowest is not None:
            # the floor binds: the network runs as long as its slowest layer alone, which owns what the
            # network-level terms and the other layers leave
            network_level = sum(self.composition[k] * terms[k] for k in NETWORK_TERMS)
            slowest.ms = max(0.0, total - network_level - sum(lp.ms for lp in layers if lp is not slowest))
        overhead = total - sum(lp.ms for lp in layers)
        overhead = 0.0 if abs(overhead) < 1e-9 else overhead  # rounding: never print -0.0000 ms
        warnings = list(getattr(res, "warnings", []))
        if priced > 1 and linear < total:
            # the floor binds on a network of many layers: the per-layer offsets exceed what its layers cost
            warnings.append(f"the composition's per-layer offsets take this network of {priced} cheap layers below "
                            f"its slowest layer alone ({linear:.4g} ms against {total:.4g} ms); the total is that floor "
                            "and likely well under the real time: such networks lie outside what the composition "
                            "was fitted on")
        if beyond:
            warnings.append(_beyond_warning([(calls[j], far) for (_, j), far in sorted(beyond.items())]))
        inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        dtypes = {t.dtype for m in module.modules() for d in (m._parameters, m._buffers) for t in d.values()
                  if t is not None} | {t.dtype for t in inputs}
        dtypes = {d for d in dtypes if d.is_floating_point}
        if dtypes - {torch.float32}:
            warnings.append(f"the network computes in {', '.join(sorted(str(d).replace('torch.', '') for d in dtypes))}; "
                            "the profiler times float32 layers, so these are float32 times")
        return NetworkPrediction(total, layers, unmodelled, overhead, bool(getattr(res, "traced", True)), warnings)

    def _extract_untouched(self, module, example_inputs):
        """(extraction, fused calls) of `module` in eval mode, leaving `module` as it was: it is switched to
        eval mode in place, and its modes, and what a traced forward may have set, re-assigned or changed in
        place (attributes, parameters, buffers), are put back afterwards (`graph.trace.untouched`). A structure priced before is
        answered from the extraction cache without running anything; a new one is traced (its shapes
        propagated without computing convolutions), and a network that fx cannot trace is run once with
        hooks, where a forward that fails on the example input is the user's error."""
        if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
            raise UserError(f"predict_network needs an nn.Module (not TorchScript), got {type(module).__name__}")
        inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
            raise UserError("predict_network needs example inputs as a tensor or a tuple of tensors, got "
                            f"{type(example_inputs).__name__}")
        lazy = [name for name, m in module.named_modules()
                if any(torch.nn.parameter.is_lazy(t) for t in (*m._parameters.values(), *m._buffers.values()))]
        if lazy:  # its first forward would give it shapes and weights: the user's network would not be left as it was
            raise UserError(f"the network has lazy modules that have not run yet ({', '.join(lazy[:4])}"
                            f"{' ...' if len(lazy) > 4 else ''}: {type(module.get_submodule(lazy[0])).__name__}); run "
                            "one forward on an input first, which sets their shapes, then predict")
        empty = [tuple(t.shape) for t in inputs if t.numel() == 0]
        if empty:
            raise UserError(f"an example input has no elements (shape {empty[0]}): a network on it does no work "
                            "to time; give the shape it will run at")
        with untouched(module):  # modes, attributes, parameters and buffers put back (graph.trace.untouched)
            if any(m.training for m in module.modules()):
                module.eval()
            with torch.no_grad():  # (example inputs a forward changes in place: put back by the extraction)
                return self.extract(module, tuple(inputs))

    # --------------------------------------------------------------------------- explain
    def explain(self, family: str) -> str:
        if family not in self.estimators:
            raise UserError(f"no model for family {family!r}; families: {', '.join(self.families)}")
        est = self.estimators[family]
        if hasattr(est, "explain_text"):
            try:
                return est.explain_text()
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
                raise UserError(f"the time model's {family} model cannot be explained ({type(e).__name__}: "
                                f"{e}); the file is damaged: fit it again") from None
        return f"{type(est).__name__} (not interpretable as rules)"

    # --------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "device": self.device,
                "conditions": self.conditions, "composition": self.composition,
                "families": {f: e.to_dict() for f, e in sorted(self.estimators.items())},
                "report": self.report}

    def save(self, path: str | os.PathLike) -> None:
        """Write the JSON atomically (a temporary file in the same folder, then a rename)."""
        dump_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "TimeModel":
        validate_dict(d)
        return cls({f: estimator_from_dict(e) for f, e in d["families"].items()}, d.get("composition"),
                   d.get("device"), d.get("conditions"), d.get("report"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TimeModel":
        name = os.fspath(path) if isinstance(path, os.PathLike) else path
        if not isinstance(name, str):
            raise UserError(f"TimeModel.load takes the path of a time model file (a str or os.PathLike), got "
                            f"{type(path).__name__}" + ("; TimeModel.from_dict reads a parsed one"
                                                        if isinstance(path, dict) else ""))
        if not name:
            raise UserError("no time model file given (the path is empty)")
        p = Path(name)
        if p.is_dir():
            raise UserError(f"{path}: is a directory, not a time model file")
        if p.is_char_device() or p.is_block_device() or p.is_socket():  # (/dev/zero would be read forever; a
            raise UserError(f"{path}: is a device, not a time model file")  # pipe, <(cat tm.json), is read)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: no such time model file") from None
        except PermissionError:
            raise UserError(f"{path}: cannot read the time model (permission denied)") from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise UserError(f"{path}: not a time model JSON file ({str(e).splitlines()[0][:160]})") from None
        except OSError as e:
            raise UserError(f"{path}: cannot read the time model ({e.strerror or e})") from None
        try:
            return cls.from_dict(d)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as e:
            raise UserError(f"{path}: damaged time model ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None


def validate_dict(d) -> None:
    """Schema of a time-model JSON document; raises UserError naming the first problem."""
    if not isinstance(d, dict):
        raise UserError(f"not a fastdeepiot time model (the JSON is a {type(d).__name__}, not an object)")
    if d.get("format") != FORMAT:
        raise UserError("not a fastdeepiot time model (no 'format': 'fastdeepiot.timemodel')")
    if d.get("version") != FORMAT_VERSION:
        raise UserError(f"time model format version {d.get('version')}, this fastdeepiot reads {FORMAT_VERSION}")
    fams = d.get("families")
    if not isinstance(fams, dict):
        raise UserError("damaged time model: 'families' must be an object")
    if not fams:
        raise UserError("the time model holds no layer models (fit it on more measurements)")

    for fam, e in fams.items():
        if fam not in FAMILIES:
            raise UserError(f"damaged time model: unknown layer family {fam!r}")
        if not isinstance(e, dict) or e.get("type") not in ESTIMATOR_TYPES:
            raise UserError(f"damaged time model: the {fam} model has no known 'type' "
                            f"({', '.join(ESTIMATOR_TYPES)})")
        check_estimator(fam, e)
    comp = d.get("composition")
    if comp is not None:
        if not isinstance(comp, dict):
            raise UserError("damaged time model: 'composition' must be an object")
        if comp and "unfused_layers" not in comp:  # every fitted composition has had it; 0 would price layers at 0
            raise UserError("damaged time model: composition.unfused_layers is missing")
        for k, v in comp.items():
            if k not in COMPOSITION_TERMS and k != CACHE_BYTES:
                continue
            if not number(v) or not finite(v):
                raise UserError(f"damaged time model: composition.{k} is not a finite number ({shown(v)})")
            if v < 0 and k not in FREE_SIGN_TERMS:
                raise UserError(f"damaged time model: composition.{k} is negative ({v}); it is "
                                + ("a size" if k == CACHE_BYTES else "a cost"))
    for key in ("device", "conditions"):
        if d.get(key) is not None and not isinstance(d[key], dict):
            raise UserError(f"damaged time model: '{key}' must be an object")
    threads = (d.get("device") or {}).get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024):
        raise UserError(f"damaged time model: device.threads must be a whole number of threads >= 1, got {shown(threads)}")
    if d.get("report") is not None and not isinstance(d["report"], dict):
        raise UserError("damaged time model: 'report' must be an object")


# ------------------------------------------------------------------------------------ fitting


def _select_device(store, device: dict | None) -> dict:
    devs = store.devices()
    if not devs:
        raise StoreError(f"{store.path}: no measurements; run `fastdeepiot profile` first")
    if device is None:
        if len(devs) > 1:
            names = "; ".join(f"{d['backend']} ({d['processor']}, {d['threads']} threads)" for d in devs)
            raise UserError(f"{store.path} holds several devices ({names}); choose one with --device "
                            f"BACKEND (and --threads N where one backend ran with several thread counts)")
        return devs[0]
    matches = [d for d in devs if all(d.get(k) == v for k, v in device.items())]
    if len(matches) != 1:
        names = "; ".join(f"{d['backend']} ({d['threads']} threads)" for d in devs)
        want = ", ".join(f"{k}={v}" for k, v in device.items())
        raise UserError(f"{store.path}: {len(matches)} devices match {want} (it holds {names})"
                        + ("; add --threads N" if matches else ""))
    return matches[0]


# What reading a damaged row's configuration (a layer's features, a random network rebuilt from its spec) raises:
# the row is corrupt, not the code (a 400-digit width overflows a float; a spec without 'seed' is a KeyError)
_DAMAGED_ROW = (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError, IndexError, OverflowError,
                RecursionError)


def load_layer_data(store, device: dict) -> dict[str, tuple[list[LayerConfig], np.ndarray]]:
    data: dict[str, tuple[list, list]] = {}
    for m in store.measurements(kind="layer", device=device):
        c = LayerConfig(m.family, m.config)
        try:
            c.features()  # a configuration the family cannot read is a damaged row, not a bug
        except UserError:
            raise
        except _DAMAGED_ROW as e:
            raise StoreError(f"{store.path}: corrupt measurement {m.config_key[:80]} ({type(e).__name__}: {e})") from None
        cs, ys = data.setdefault(m.family, ([], []))
        cs.append(c)
        ys.append(m.median_ms)
    return {f: (cs, np.asarray(ys)) for f, (cs, ys) in data.items()}


def load_network_data(store, device: dict) -> list[tuple[dict, float]]:
    """(spec, measured ms) of every network row (`extract_networks` rebuilds them, refusing a damaged one)."""
    return [(m.config, m.median_ms) for m in store.measurements(kind="network", device=device)]


def rebuild_network(spec: dict, where: str = "measurement database"):
    """(module, example input) of the random network a network row measured. A spec that cannot be rebuilt is a
    corrupt row of `where` (the store's path): a StoreError, as a layer row's unreadable configuration."""
    try:
        return build_network(spec), example_input(spec)
    except UserError:
        raise
    except (*_DAMAGED_ROW, RuntimeError) as e:  # RuntimeError: torch on blocks whose shapes disagree
        raise StoreError(f"{where}: corrupt network measurement {json.dumps(spec, sort_keys=True)[:80]} "
                         f"({type(e).__name__}: {str(e)[:200]})") from None


_EXTRACTED: dict[tuple[str, str], list] = {}  # (backend, spec) -> calls; specs are immutable


def extract_networks(tm: TimeModel, networks: list[tuple[dict, float]], where: str = "measurement database"
                     ) -> list[tuple[list, float]]:
    """Rebuild each measured random network from its spec (`rebuild_network`) and extract its fusion-annotated
    calls (memoised: fitting several estimators on one store extracts each network once)."""
    out = []
    for spec, ms in networks:
        key = (tm.backend, json.dumps(spec, sort_keys=True))
        if key not in _EXTRACTED:
            _EXTRACTED[key] = tm.extract(*rebuild_network(spec, where))[1]
        out.append((_EXTRACTED[key], ms))
    return out


# each call group's (standalone-time factor, per-call offset); see `fit_composition`
CALL_GROUPS = (("unfused_layers", "unfused_count"), ("fused_layers", "fused_count"), ("nchwc_layers", "nchwc_count"))
FITTED = tuple(k for k in COMPOSITION_TERMS if k not in LEGACY_TERMS)


# the cache capacities `fit_composition` tries, as shares of the profiled CPU's last-level cache: what a
# network can keep cached is less than the whole cache (other tenants, the victim L3 of AMD CPUs, the
# writes of every layer); measured here (bench/cache_residency.py), two 16 MiB weight copies already missed
# a 32 MiB cache. Beside them, the core's own cache below the last level (conditions' CORE_CACHE_BYTES, a
# Zen 4 core's 1 MiB L2 here): on a VM whose last level other tenants share, a layer looping alone keeps its
# weights in its core's cache, and a network larger than that cache reads them from the level beyond
CACHE_SHARES = (1.0, 0.5, 0.25)
CORE_CACHE_BYTES = "core_cache_bytes"


def cache_candidates(conditions: dict) -> list[float]:
    """The cache capacities (bytes) a profile's conditions let `fit_composition` try, besides none: the
    CACHE_SHARES of its last-level cache, and its core cache where recorded and smaller than all of them."""
    llc = conditions.get(CACHE_BYTES)
    if not (number(llc) and finite(llc) and llc > 0):
        return []
    out = [llc * share for share in CACHE_SHARES]
    core = conditions.get(CORE_CACHE_BYTES)
    if number(core) and finite(core) and 0 < core < min(out):
        out.append(float(core))
    return out


def fit_composition(tm: TimeModel, extracted: list[tuple[list, float]], styles: list[str] | None = None) -> dict:
    """Relative least squares of measured network time on the composition terms: costs (the
    standalone-time factors, per-call and per-module overheads, the cold-weight cost) non-negative, the
    NCHWc reorder terms free in sign (see the module doc). Terms no network exercises stay 0.

    A call's share a_g * s + b_g must not go below 0 (no layer makes a network faster) for any layer the
    fit has seen: b_g is negative (a layer timed alone pays a per-run cost a network pays once), and with
    it alone free, a short profile traded it against `mixed_calls` (-13 us per call against +17 us x ln D
    on the main job's torch-cpu model), so that a network of one kernel kind (ln D = 0; 50 x Linear(8, 8))
    came out below zero and was priced as its slowest layer alone, 98% under. So b_g is fitted as
    b'_g - a_g * s_min_g with b'_g >= 0, s_min_g the smallest standalone time of a group-g call in the
    fitted networks: a constraint the fit can hold with bounds alone.

    The cold-weight term is kept only where it prices networks it was not fitted on better: its cache
    capacity (CACHE_BYTES) is chosen among shares of the profile's last-level cache (its conditions'
    cache_bytes; `CACHE_SHARES`) and the core's own cache below it (`cache_candidates`), and against no term
    at all, by the mean relative error of cross-validation
    over the networks: leave-one-style-out where `styles` (each network's architecture style) has several,
    else `CV_FOLDS` random folds. On a noisy 10-minute torch-cpu store the term chosen by in-sample error or
    by random folds priced held-out architectures of a style left out a little worse (docs/results/session22),
    so it must price styles it was not fitted on better. Its cost per cold MB is at most what the device's own
    profile says streaming a MB of weights from memory costs (`cold_rate`): fitted on a few wide networks of a
    noisy store, it had reached 3 ms/MB (0.3 GB/s) and priced a held-out wide MLP at twice its time."""
    networks = [calls for calls, _ in extracted]
    standalone = tm._standalone_many(networks)
    measured = [ms for _, ms in extracted]
    candidates = cache_candidates(tm.conditions)
    rate = cold_rate(tm, tm.conditions[CACHE_BYTES]) if candidates else None
    caches = [0.0] + (candidates if rate else [])
    designs = {cache: _design(networks, standalone, measured, cache) for cache in caches}
    folds = _folds(designs[0.0][3], styles)
    if len(caches) > 1 and folds is not None:
        cv = {cache: _cv_error(*designs[cache][:2], folds, rate) for cache in caches}
        cache = min(caches, key=lambda c: (cv[c], c))  # a tie keeps no term (0.0 first)
    else:
        cache = 0.0
    return _solve(*designs[cache][:3], cache, rate)


CV_FOLDS = 5


def cold_rate(tm: TimeModel, cache_bytes: float) -> float | None:
    """ms per MB of weights read from memory on the device, as its profile measured it: the model's standalone
    time of a batch-1 Linear (memory-bound) whose weights are twice the cache, per MB of weights (at most the
    Linear grid's widest side); None where the model does not price such a Linear."""
    edge = max(get_family("linear").space["in_features"])
    side = max(1, min(edge, int(math.sqrt(2 * cache_bytes / 4))))
    config = LayerConfig("linear", {"batch": 1, "in_features": side, "out_features": side})
    if not tm.covers(config):
        return None
    ms = float(tm._predict_configs([config])[0])
    return ms / (side * side * 4 / 1e6) if ms > 0 and math.isfinite(ms) else None


def _folds(kept: list[int], styles: list[str] | None) -> np.ndarray | None:
    """The cross-validation fold of each network `_design` kept (`kept`: their indices): its style's index where
    there are 3 styles or more, else one of CV_FOLDS random folds; None when too few networks."""
    if len(kept) < 4 * CV_FOLDS:
        return None
    if styles is not None and len(set(styles[i] for i in kept)) >= 3:
        names = sorted(set(styles[i] for i in kept))
        return np.array([names.index(styles[i]) for i in kept])
    return np.random.default_rng(0).permutation(len(kept)) % CV_FOLDS


def _design(networks: list, standalone: list, measured: list[float], cache: float):
    """The relative least-squares problem of `fit_composition` at one cache capacity: (A, y, s_min, kept), A's
    columns the fitted terms (FITTED), its layer columns shifted by s_min (see `fit_composition`), one row per
    network with no unmodelled call (`kept`: their indices)."""
    rows, y, s_min, kept = [], [], {}, []
    for i, (calls, sa, ms) in enumerate(zip(networks, standalone, measured)):
        per_call = call_terms(calls, sa, cache)
        for t in per_call:
            for layers, _ in CALL_GROUPS:
                if layers in t:
                    s_min[layers] = min(s_min.get(layers, math.inf), t[layers])
        if _unmodelled(calls, sa):
            continue
        terms = sum_terms(calls, per_call)
        rows.append([terms[k] for k in FITTED])
        y.append(ms)
        kept.append(i)
    A, y = np.asarray(rows, dtype=float).reshape(len(rows), len(FITTED)), np.asarray(y, dtype=float)
    col = {k: j for j, k in enumerate(FITTED)}
    for layers, count in CALL_GROUPS:  # a_g's column becomes sum(s - s_min): the fitted offset is then b'_g
        A[:, col[layers]] -= s_min.get(layers, 0.0) * A[:, col[count]]
    return A, y, s_min, kept


def _lsq(A, y, cold_max: float | None) -> np.ndarray:
    """Coefficients of every column (0 for columns no row uses): min sum((A x - y) / y)^2, costs >= 0, the
    cold-weight cost at most `cold_max`."""
    x = np.zeros(A.shape[1])
    used = np.flatnonzero(np.abs(A).sum(axis=0) > 0)
    lower = np.array([-np.inf if FITTED[j] in FITTED_FREE_SIGN else 0.0 for j in used])
    upper = np.array([cold_max if FITTED[j] == "cold_weights" and cold_max else np.inf for j in used])
    x[used] = lsq_linear(A[:, used] / y[:, None], np.ones(len(y)), bounds=(lower, upper)).x
    return x


def _cv_error(A, y, folds, cold_max: float | None) -> float:
    errs = [np.abs(A[folds == k] @ _lsq(A[folds != k], y[folds != k], cold_max) / y[folds == k] - 1)
            for k in np.unique(folds)]
    return float(np.mean(np.concatenate(errs)))


def _solve(A, y, s_min, cache: float, cold_max: float | None) -> dict:
    if len(y) < 5:
        return dict(IDENTITY_COMPOSITION)
    comp = {**dict.fromkeys(COMPOSITION_TERMS, 0.0), CACHE_BYTES: cache}
    comp.update({k: float(v) for k, v in zip(FITTED, _lsq(A, y, cold_max))})
    for layers, count in CALL_GROUPS:
        comp[count] -= comp[layers] * s_min.get(layers, 0.0)
    if comp["cold_weights"] == 0:
        comp[CACHE_BYTES] = 0.0
    return comp


MIN_SAMPLES = 10  # measurements a family needs before fit_time_model gives it a model


def fit_time_model(store, *, estimator: str = "tree", device: dict | None = None,
                   families: list[str] | None = None, holdout: float = 0.2, seed: int = 0,
                   compare: tuple[str, ...] = (), min_samples: int = MIN_SAMPLES, progress=None,
                   keep_holdout: bool = False) -> TimeModel:
    """Fit per-family estimators and the composition from `store`.

    Held-out evaluation: `holdout` of each family's configurations (and of the measured networks) are
    set aside, the models fitted on the rest are scored on them (for `estimator` and each name in
    `compare`), and the result is in `tm.report`. The returned model is then refitted on all data.
    With `keep_holdout`, `tm.holdout` = {model kind: (family list, measured ms, predicted ms)} and
    `tm.holdout_configs` = {model kind: the held-out LayerConfigs, in the same order} (not saved).
    `seed` draws the held-out split and seeds each estimator (`make_estimator`): a model tree's pruning
    is chosen by cross-validation, and on a small, noisy store the split into folds alone moves the
    held-out figures of bench/generalisation.py by several points, which its `--seeds` reports.
    """
    if not isinstance(store, Store) or store.closed:
        got = f"{store.path}, closed" if isinstance(store, Store) else type(store).__name__
        raise UserError(f"store must be an open Store (fastdeepiot.Store.open(path)), got {got}")
    if device is not None and not isinstance(device, dict):
        raise UserError(f"device must be None or a dict of fingerprint entries, e.g. {{'backend': 'fake', "
                        f"'threads': 1}}, got {device!r}")
    min_samples = check_whole(min_samples, "min_samples", 1)
    if not (isinstance(holdout, (int, float)) and 0 <= holdout < 1):
        raise UserError(f"holdout must be a share in [0, 1), got {holdout!r}")
    seed = check_seed(seed)  # a bool is no seed (True was seed 1)
    dev = _select_device(store, device)
    data = load_layer_data(store, dev)
    networks = load_network_data(store, dev)
    if not data:
        raise StoreError(f"{store.path}: no layer measurements for this device")
    if families:
        wanted = [families] if isinstance(families, str) else list(families)
        for f in wanted:
            get_family(str(f))  # an unknown name is an UnknownNameError, not "no measurements"
        holds, data = sorted(data), {f: v for f, v in data.items() if f in wanted}
        if not data:
            raise StoreError(f"{store.path}: no measurements of {', '.join(map(str, wanted))} for this device "
                             f"(it holds {', '.join(holds)})")
    # rebuilt and extracted once, before any fitting (extraction needs the backend, not the layer models): a
    # damaged network row is refused before minutes of work, and before any progress line
    extracted = extract_networks(TimeModel({}, None, dev), networks, store.path)
    styles = [str(spec.get("style", "plain")) for spec, _ in networks]
    if extracted and progress:
        progress(f"read {len(extracted)} measured networks")
    rng = np.random.default_rng(seed)
    estimators, report = {}, {"holdout": holdout, "seed": seed, "estimator": estimator, "families": {}}
    held: dict[str, tuple[list, list, list, list]] = {}
    for fam, (configs, y) in sorted(data.items()):
        n_test = max(1, int(round(holdout * len(configs)))) if holdout > 0 else 0
        if len(configs) < min_samples or n_test >= len(configs):  # none left to fit beside the held-out ones
            why = (f"fewer than {min_samples} samples" if len(configs) < min_samples else
                   f"{len(configs)} samples, all held out (holdout {holdout})")
            report["families"][fam] = {"n": len(configs), "skipped": why}
            continue
        if progress:
            progress(f"fitting {fam} ({len(configs)} measurements)")
        X = featurize(configs, paths=kernel_paths(dev["backend"], int(dev.get("threads", 1)), configs))
        perm = rng.permutation(len(configs))
        test, train = perm[:n_test], perm[n_test:]
        fam_rep = {"n": len(configs), "n_train": len(train), "n_test": len(test), "models": {}}
        for kind in (estimator, *[c for c in compare if c != estimator]):
            if n_test == 0:
                break
            est = make_estimator(kind, seed).fit(X.iloc[train], y[train])
            pred = est.predict(X.iloc[test])
            fam_rep["models"][kind] = relative_error_summary(y[test], pred)
            h = held.setdefault(kind, ([], [], [], []))
            h[0].extend([fam] * len(test))
            h[1].extend(y[test])
            h[2].extend(pred)
            h[3].extend(configs[i] for i in test)
            if kind == estimator:  # where the model is worst: adaptive resampling starts there
                err = np.abs(relative_errors(y[test], pred))
                worst = np.argsort(-err)[:20]
                fam_rep["worst"] = [{"key": configs[test[i]].key, "rel_error": float(err[i])} for i in worst]
        estimators[fam] = make_estimator(estimator, seed).fit(X, y)
        if hasattr(estimators[fam], "n_leaves_"):
            fam_rep["leaves"] = int(estimators[fam].n_leaves_)
        report["families"][fam] = fam_rep
    if not estimators:
        counts = ", ".join(f"{f} {len(c)}" for f, (c, _) in sorted(data.items()))
        raise StoreError(f"{store.path}: too few measurements to fit a time model (a family needs at least "
                         f"{min_samples}{', and one to fit beside those held out' if holdout > 0 else ''}; "
                         f"this store has {counts}); profile longer and fit again")
    tm = TimeModel(estimators, None, dev, store.latest_conditions(dev), report)
    if keep_holdout:
        tm.holdout = {k: (f, np.asarray(a), np.asarray(b)) for k, (f, a, b, _) in held.items()}
        tm.holdout_configs = {k: c for k, (*_, c) in held.items()}

    if extracted:
        if progress:
            progress(f"fitting the network composition ({len(extracted)} measured networks)")
        perm = rng.permutation(len(extracted))
        n_test = int(round(holdout * len(extracted))) if len(extracted) >= 10 else 0
        test = [extracted[i] for i in perm[:n_test]]
        train = perm[n_test:]
        tm.composition = fit_composition(tm, [extracted[i] for i in train], [styles[i] for i in train])
        if test:
            pred = [tm.compose(t) for t, _, _ in tm.network_terms_many([calls for calls, _ in test])]
            report["networks"] = {"n": len(extracted), "n_test": len(test),
                                  **relative_error_summary(np.array([m for _, m in test]), np.array(pred))}
        tm.composition = fit_composition(tm, extracted, styles)
    report["composition"] = tm.composition
    return tm
