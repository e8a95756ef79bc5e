"""A structural fingerprint of a module and its example inputs: the key of the extraction cache.

`fingerprint(module, inputs)` is a hashable value (a `Fingerprint`: the structure as nested tuples, hashed once, since
hashing ResNet-50's structure costs about as much as reading it and a cache look-up would otherwise hash it on every
probe) that changes whenever anything a layer extraction
reads could change: every submodule's qualified name, class, train/eval mode and plain attributes
(widths, kernel sizes, strides, flags such as `residual`, ...), the shapes and dtypes of its parameters
and buffers, and the shapes and dtypes of the inputs. Weight *values* are left out: extraction reads
shapes only. Pruning a network in place changes `out_channels` and the weight shapes, so it changes the
fingerprint.

It returns None (do not cache) where it cannot vouch for the structure: a module with forward hooks,
an attribute it cannot freeze into a value (an arbitrary object, a tensor that is not a parameter or a
buffer, a module stored outside `_modules`), an input that is neither a tensor nor a plain value.

What it cannot see, and the cache therefore assumes: a forward whose control flow depends on state
outside the module (a global flag, a class attribute changed at run time, a method patched on the
class); pass `cache=False` to `extract_layers` (or call `clear_cache`) for such networks.
"""

from __future__ import annotations

import enum
import types
import weakref
from typing import Any

import torch
import torch.nn as nn
from torch.nn.modules import module as _torch_module  # its global hook registries

__all__ = ["Fingerprint", "fingerprint"]

# nn.Module's own bookkeeping (parameters, buffers and children are read apart; hooks: see below)
_SKIP = frozenset(nn.Module().__dict__)
_SCALARS = frozenset((type(None), bool, int, float, complex, str, bytes))
_IDENTITY = (types.FunctionType, types.BuiltinFunctionType, type, torch.dtype, torch.device,
             torch.memory_format, torch.layout, enum.Enum)


class _Unfreezable(Exception):
    pass


_INTS = object()  # the tag of a tuple of plain ints (kernel sizes, strides, paddings)


def _freeze(v: Any, m: nn.Module | None = None):
    """A hashable stand-in for an attribute value of module `m` (type-tagged: 1, 1.0 and True differ).
    Tensors only when they are `m`'s own parameters or buffers (an RNN lists its weights in
    `_flat_weights`): by shape."""
    t = type(v)
    if t in _SCALARS:
        return (t, v)
    if t is tuple and all(type(x) is int for x in v):  # most attributes: no recursion
        return (_INTS, v)
    if isinstance(v, _IDENTITY):
        return v
    if isinstance(v, (tuple, list)):  # torch.Size too
        return (t, tuple(_freeze(x, m) for x in v))
    if isinstance(v, (set, frozenset)):
        return (frozenset, frozenset(_freeze(x, m) for x in v))
    if isinstance(v, dict):
        return (dict, tuple((_freeze(k, m), _freeze(x, m)) for k, x in v.items()))
    if isinstance(v, weakref.ref):
        return (weakref.ref, _freeze(v(), m))
    if isinstance(v, torch.Tensor) and m is not None and any(
            v is t for t in (*m._parameters.values(), *m._buffers.values())):
        return (torch.Tensor, _tensor_key(v))
    raise _Unfreezable(t.__name__)


def _tensor_key(t: torch.Tensor | None):
    return None if t is None else (tuple(t.shape), t.dtype, t.device.type)


def _module_key(name: str, m: nn.Module) -> tuple:
    d = m.__dict__
    if d["_forward_hooks"] or d["_forward_pre_hooks"]:  # they may change what the forward does
        raise _Unfreezable("forward hooks")
    attrs = tuple((k, _freeze(v, m)) for k, v in d.items() if k not in _SKIP)
    params = tuple((k, _tensor_key(p)) for k, p in d["_parameters"].items())
    buffers = tuple((k, _tensor_key(b)) for k, b in d["_buffers"].items())
    return (name, type(m), d["training"], attrs, params, buffers)


def _input_key(x):
    if isinstance(x, torch.Tensor):
        return (torch.Tensor, _tensor_key(x))
    if isinstance(x, (tuple, list)):
        return (type(x), tuple(_input_key(y) for y in x))
    return _freeze(x)


class Fingerprint:
    """A structure (`value`, nested tuples) with its hash computed once."""

    __slots__ = ("value", "_hash")

    def __init__(self, value: tuple):
        self.value = value
        self._hash = hash(value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        if not isinstance(other, Fingerprint) or self._hash != other._hash:
            return False
        if self.value is other.value or self.value == other.value:
            other.value = self.value  # (equal: share one value, so the next comparison is by identity)
            return True
        return False

    def __repr__(self) -> str:
        return f"Fingerprint({self._hash:#x})"


def fingerprint(module: nn.Module, inputs: tuple) -> Fingerprint | None:
    """Hashable structure of `module` on `inputs` (see the module doc), or None: not cacheable."""
    if _has_global_hooks():
        return None
    try:
        return Fingerprint((tuple(_module_key(name, m) for name, m in module.named_modules()),
                            tuple(_input_key(x) for x in inputs)))
    except (_Unfreezable, TypeError):  # (TypeError: a frozen value that is still unhashable)
        return None


def _has_global_hooks() -> bool:
    """nn.Module global forward hooks (`register_module_forward_hook`): they apply to every module."""
    return bool(_torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks)
