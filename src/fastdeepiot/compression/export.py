"""Write a compressed network as ONNX, atomically, never over an input file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from fastdeepiot.devices.onnxrt import export_onnx
from fastdeepiot.errors import UserError


def write_atomic(path, data: bytes, protect=()) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace` (a reader sees
    the old file or the new one, never half of one). UserError when `path` is one of `protect` (inputs)."""
    path = Path(path)
    target = path.resolve()
    for p in protect:
        if p is not None and Path(p).resolve() == target:
            raise UserError(f"refusing to write {path}: it is an input file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_onnx(model: nn.Module, example_input: torch.Tensor, path, protect=()) -> Path:
    """Export `model` (eval mode, batch-1 `example_input`) to ONNX at `path` atomically (`write_atomic`)."""
    return write_atomic(path, export_onnx(model.eval(), (example_input[:1],)), protect)
