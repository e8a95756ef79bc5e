"""Backend registry: `get_backend("torch-cpu", threads=1)`, `list_backends()`."""

from __future__ import annotations

import inspect

from fastdeepiot.devices.base import Backend, Runner, check_threads, cpu_model
from fastdeepiot.devices.fake import FakeBackend
from fastdeepiot.devices.onnxrt import OnnxRuntimeCPU
from fastdeepiot.devices.torch_backends import TorchCPU, TorchCUDA
from fastdeepiot.errors import UnknownNameError, UserError

BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (TorchCPU, OnnxRuntimeCPU, TorchCUDA, FakeBackend)
}


def get_backend(name: str, **kwargs) -> Backend:
    """Instantiate a backend by name; an unknown or unavailable backend, an option it does not take, or
    `threads` other than 1 to this machine's cores (the CLI's --threads rule, `check_threads`) is a UserError."""
    if "threads" in kwargs:
        kwargs["threads"] = check_threads(kwargs["threads"])
    return make_backend(name, **kwargs)


def make_backend(name: str, **kwargs) -> Backend:
    """`get_backend` without the cores limit on `threads`: to time at a thread count another machine ran with
    (a time model's, `profiling.timer`)."""
    cls = check_available(name)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        known = ", ".join(inspect.signature(cls).parameters)
        raise UserError(f"device {name!r}: {e} (it takes {known})") from None
    return cls(**kwargs)


def check_available(name: str) -> type[Backend]:
    """The backend class called `name`; an unknown name or a backend not available here (no CUDA device, no
    onnxruntime) is a UserError. Cheap: a run that times on a device at its end asks this before any work."""
    try:
        cls = BACKENDS[name]
    except (KeyError, TypeError):
        raise UnknownNameError(f"unknown device {name!r}; known: {', '.join(BACKENDS)}") from None
    ok, why = cls.availability()
    if not ok:
        raise UserError(f"device {name!r} is not available here: {why}")
    return cls


def list_backends() -> list[dict]:
    """Every registered backend with its availability and (when available) its conditions."""
    rows = []
    for name, cls in BACKENDS.items():
        ok, why = cls.availability()
        rows.append({"name": name, "description": cls.description, "available": ok, "reason": why,
                     "conditions": cls().conditions() if ok else {}})
    return rows


__all__ = ["Backend", "Runner", "BACKENDS", "check_available", "check_threads", "get_backend", "list_backends", "make_backend",
           "cpu_model"]
