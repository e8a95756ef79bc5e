"""Adaptive resampling: profile more configurations where the time model's held-out error is highest.

`fastdeepiot profile --adaptive cpu.timemodel.json` first measures configurations near the worst
held-out predictions recorded by `fit` (`report.families[f].worst`), then continues the normal plan.
Fit again afterwards: the new data sit exactly where the model was weakest.
"""

from __future__ import annotations

import json
import math
from numbers import Real
from typing import Iterator

from fastdeepiot.errors import UserError, check_whole
from fastdeepiot.families import LayerConfig, check_config
from fastdeepiot.profiling.runner import Workload, layer_workload
from fastdeepiot.profiling.space import region_configs
from fastdeepiot.timemodel.model import TimeModel


def adaptive_workloads(model, store, families: list[str], *, seed: int = 0, per_point: int = 5,
                       min_rel_error: float = 0.05) -> Iterator[Workload]:
    """Configurations near each of the model's worst held-out configurations (error >= 5%).

    `model`: a TimeModel or the path of its JSON. The whole list is drawn here, before the first workload is
    handed out, so a damaged report (`report.families[f].worst` not a list of {"key": a configuration key of
    family f, "rel_error": a number}) is one UserError before anything is measured. `store` is not read."""
    seed = check_whole(seed, "seed")
    per_point = check_whole(per_point, "per_point", 1)
    tm = model if isinstance(model, TimeModel) else TimeModel.load(model)
    out: list[Workload] = []
    try:
        for fam, i, center in _worst(tm, families, min_rel_error):
            try:
                configs = region_configs(center, per_point, seed=seed * 1000 + i, spread=0.08)
            except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError) as e:
                raise _damaged(f"families.{fam}.worst[{i}].key", f"{type(e).__name__}: {e}") from None
            out.extend(layer_workload(c, "adaptive") for c in configs)
    except UserError as e:
        if isinstance(model, TimeModel):
            raise
        raise UserError(f"{model}: {e}") from None  # as TimeModel.load names the file
    return iter(out)


def _damaged(where: str, why: str) -> UserError:
    return UserError(f"damaged time model: report.{where} {why}; fit the model again, or profile without --adaptive")


def _worst(tm: TimeModel, families: list[str], min_rel_error: float) -> Iterator[tuple[str, int, LayerConfig]]:
    """(family, index, configuration) of each worst held-out point of `families` at or above `min_rel_error`,
    the report's structure checked on the way."""
    fams = tm.report.get("families", {})
    if not isinstance(fams, dict):
        raise _damaged("families", f"is a {type(fams).__name__}, not an object")
    for fam in families:
        entry = fams.get(fam, {})
        if not isinstance(entry, dict):
            raise _damaged(f"families.{fam}", f"is a {type(entry).__name__}, not an object")
        worst = entry.get("worst", [])
        if not isinstance(worst, list):
            raise _damaged(f"families.{fam}.worst", f"is a {type(worst).__name__}, not a list")
        for i, w in enumerate(worst):
            where = f"families.{fam}.worst[{i}]"
            if not isinstance(w, dict) or not isinstance(w.get("key"), str):
                raise _damaged(where, "is not an object with a configuration 'key'")
            err = w.get("rel_error")
            if isinstance(err, bool) or not isinstance(err, Real) or not math.isfinite(err):
                raise _damaged(f"{where}.rel_error", f"is {err!r}, not a number")
            if err < min_rel_error:
                continue
            yield fam, i, _center(fam, w["key"], f"{where}.key")


def _center(fam: str, key: str, where: str) -> LayerConfig:
    """The configuration a worst point's key names: of `fam`, with every parameter of its space."""
    family, _, text = key.partition(":")
    if family != fam:
        raise _damaged(where, f"names a {family!r} configuration, not a {fam} one")
    try:
        params = json.loads(text)
    except (ValueError, RecursionError):
        params = None
    if not isinstance(params, dict):
        raise _damaged(where, f"{key[:80]!r} is not a configuration key")
    c = LayerConfig(fam, params)
    try:
        check_config(c)  # the family's parameters, each a value a layer has
    except UserError as e:
        raise _damaged(where, f"{key[:80]!r}: {e}") from None
    return c
