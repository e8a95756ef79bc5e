"""Width-sweep plots of a fitted time model against the measurements it was fitted on."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fastdeepiot.errors import UserError
from fastdeepiot.families import LayerConfig, get_family
from fastdeepiot.profiling.space import base_configs, sweep_configs
from fastdeepiot.profiling.store import Store
from fastdeepiot.timemodel.explain import plot_sweep


def longest_sweep(db, family: str, param: str, device: dict | None = None) -> tuple[list[LayerConfig], list[float]]:
    """The measured configurations (of `device`, when given) that differ only in `param`, for the most
    common other settings."""
    with Store.open(db) as store:
        ms = [m for m in store.measurements(kind="layer", family=family, device=device)]
    groups: Counter = Counter()
    for m in ms:
        groups[tuple(sorted((k, v) for k, v in m.config.items() if k != param))] += 1
    if not groups:
        return [], []
    best = groups.most_common(1)[0][0]
    pts = sorted((m.config[param], LayerConfig(family, m.config), m.median_ms) for m in ms
                 if tuple(sorted((k, v) for k, v in m.config.items() if k != param)) == best)
    return [c for _, c, _ in pts], [t for _, _, t in pts]


def sweep_param(family: str, param: str | None) -> str:
    """The parameter a sweep plot of `family` runs along: `param` (numeric), or the family's first width."""
    fam = get_family(family)
    param = param or fam.width_params[0]
    numeric = [k for k, v in fam.space.items() if isinstance(v[0], (int, float))]
    if param not in numeric:
        raise UserError(f"{family} has no numeric parameter {param!r} to sweep; its numeric parameters: "
                        f"{', '.join(numeric)}")
    return param


def plot_family_sweep(tm, family: str, path, db=None, param: str | None = None) -> str:
    param = sweep_param(family, param)
    if family not in tm.estimators:
        raise UserError(f"the time model has no {family} model")
    if db is not None:
        configs, measured = longest_sweep(db, family, param, tm.device or None)
        if len(configs) < 3:
            raise UserError(f"no {param} sweep of {family} in {db}; profile longer, or leave out --db to plot "
                            f"the model's predictions alone")
        title = f"{family}: time vs {param} ({tm.backend})"
    else:  # the model's predictions along the sweep the profiler would run from its first base configuration
        configs, measured = sweep_configs(base_configs(family, 0, 1)[0], param), None
        title = f"{family}: predicted time vs {param} ({tm.backend}; no measurements given)"
    return str(plot_sweep(tm.estimators[family], configs, measured, param, Path(path), title=title,
                          paths=tm.kernel_paths(configs)))
