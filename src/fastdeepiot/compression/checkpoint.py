"""Pruned checkpoints: the original network's recorded architecture + the plan + the pruned weights.

A pruned network cannot be described by the reference network's constructor arguments (its branches have
different widths, blocks are gone, a GRU runs over a pooled sequence), so the checkpoint stores how to get
there: rebuild the original from `net`/`arch`, replay `plan`, load `state_dict` (weights_only loading).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from fastdeepiot.compression.plan import Plan
from fastdeepiot.errors import UserError
from fastdeepiot.jsonutil import to_jsonable
from fastdeepiot.tasks.nets import build

FORMAT = "fastdeepiot.compressed"


def save_compressed(path, model: nn.Module, plan: Plan, task_name: str, net: str, arch: dict,
                    metrics: dict | None = None) -> Path:
    ckpt = {"format": FORMAT, "task": task_name, "net": net, "arch": copy.deepcopy(arch),
            "plan": plan.to_json(), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "metrics": to_jsonable(metrics) if metrics is not None else None}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def load_compressed(path) -> tuple[nn.Module, dict]:
    """(pruned model in eval mode, meta) from a checkpoint written by `fastdeepiot compress`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot read checkpoint {path}: {type(e).__name__}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not a compressed fastdeepiot checkpoint")
    model = build(ckpt["net"], **ckpt["arch"]).eval()
    Plan.from_json(ckpt["plan"]).apply(model)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit the replayed plan: {str(e).splitlines()[0][:200]}") from None
    return model.eval(), {k: v for k, v in ckpt.items() if k != "state_dict"}
