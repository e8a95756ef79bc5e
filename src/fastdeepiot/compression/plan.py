"""A pruning plan: the ordered list of surgery steps, as JSON, replayable onto a fresh model.

    {"format": "fastdeepiot.compression.plan", "version": 1, "input_shape": [6, 128],
     "steps": [{"op": "prune", "keep": {"merge.0.0": [0, 3, 5, ...]}},
               {"op": "remove", "module": "merge.1"},
               {"op": "shorten_sequence", "module": "gru", "factor": 2},
               {"op": "drop_recurrence", "module": "gru"},
               {"op": "fold_bn", "conv": "acc.0.0", "bn": "acc.0.1"}]}

Channel groups are named by their first producer (module name), which is stable: replaying the
steps in order onto a fresh copy of the original model reproduces the pruned architecture and, when
the copy has the original's weights, the pruned (not fine-tuned) weights exactly. Each op belongs to
one registered move (`compression.moves`), which replays and describes it: this file knows no op.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from fastdeepiot.compression.moves import apply_step, describe_step
from fastdeepiot.compression.surgery import PlanError

FORMAT = "fastdeepiot.compression.plan"
VERSION = 1


@dataclass
class Plan:
    input_shape: list[int]
    steps: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, *self.input_shape)

    def apply(self, model: nn.Module, *, copy_model: bool = False) -> nn.Module:
        """Replay every step onto `model` (in place unless `copy_model`)."""
        if copy_model:
            model = copy.deepcopy(model)
        x = self.example_input()
        for step in self.steps:
            apply_step(model, step, x)
        return model

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "input_shape": list(self.input_shape),
                "steps": self.steps, "meta": self.meta}

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise PlanError("not a fastdeepiot pruning plan (no 'format': 'fastdeepiot.compression.plan')")
        if d.get("version") != VERSION:
            raise PlanError(f"plan version {d.get('version')}, this fastdeepiot reads {VERSION}")
        return cls(list(d["input_shape"]), list(d["steps"]), dict(d.get("meta", {})))

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path) -> "Plan":
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise PlanError(f"{path}: no such plan file") from None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise PlanError(f"{path}: not a pruning plan ({e})") from None

    def summary(self) -> list[str]:
        return [describe_step(s) for s in self.steps]
