"""Backend registry: `get_backend("torch-cpu", threads=1)`, `list_backends()`."""

from __future__ import annotations

from fastdeepiot.devices.base import Backend, Runner, cpu_model
from fastdeepiot.devices.fake import FakeBackend
from fastdeepiot.devices.onnxrt import OnnxRuntimeCPU
from fastdeepiot.devices.torch_backends import TorchCPU, TorchCUDA
from fastdeepiot.errors import UnknownNameError, UserError

BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (TorchCPU, OnnxRuntimeCPU, TorchCUDA, FakeBackend)
}


def get_backend(name: str, **kwargs) -> Backend:
    """Instantiate a backend by name; unknown or unavailable backends raise a UserError."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise UnknownNameError(f"unknown device {name!r}; known: {', '.join(BACKENDS)}") from None
    ok, why = cls.availability()
    if not ok:
        raise UserError(f"device {name!r} is not available here: {why}")
    return cls(**kwargs)


def list_backends() -> list[dict]:
    """Every registered backend with its availability and (when available) its conditions."""
    rows = []
    for name, cls in BACKENDS.items():
        ok, why = cls.availability()
        rows.append({"name": name, "description": cls.description, "available": ok, "reason": why,
                     "conditions": cls().conditions() if ok else {}})
    return rows


__all__ = ["Backend", "Runner", "BACKENDS", "get_backend", "list_backends", "cpu_model"]
