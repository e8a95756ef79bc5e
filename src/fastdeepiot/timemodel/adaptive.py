"""Adaptive resampling: profile more configurations where the time model's held-out error is highest.

`fastdeepiot profile --adaptive cpu.timemodel.json` first measures configurations near the worst
held-out predictions recorded by `fit` (`report.families[f].worst`), then continues the normal plan.
Fit again afterwards: the new data sit exactly where the model was weakest.
"""

from __future__ import annotations

from typing import Iterator

from fastdeepiot.families import LayerConfig
from fastdeepiot.profiling.runner import Workload, layer_workload
from fastdeepiot.profiling.space import region_configs
from fastdeepiot.timemodel.model import TimeModel


def adaptive_workloads(model_path, store, families: list[str], *, seed: int = 0, per_point: int = 5,
                       min_rel_error: float = 0.05) -> Iterator[Workload]:
    """Configurations near each of the model's worst held-out configurations (error >= 5%)."""
    tm = TimeModel.load(model_path)
    for fam in families:
        worst = tm.report.get("families", {}).get(fam, {}).get("worst", [])
        for i, w in enumerate(worst):
            if w["rel_error"] < min_rel_error:
                continue
            center = LayerConfig.from_key(w["key"])
            for c in region_configs(center, per_point, seed=seed * 1000 + i, spread=0.08):
                yield layer_workload(c, "adaptive")
