"""Write a compressed network as ONNX, atomically, never over an input file."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from fastdeepiot.devices.onnxrt import export_onnx
from fastdeepiot.safeio import atomic_write_bytes


def write_onnx(model: nn.Module, example_input: torch.Tensor, path) -> Path:
    """Export `model` (eval mode, batch-1 `example_input`) to ONNX at `path`, atomically. The caller checks
    the path first (`safeio.check_output(path, kind="onnx", inputs=...)`)."""
    return atomic_write_bytes(path, export_onnx(model.eval(), (example_input[:1],)))
