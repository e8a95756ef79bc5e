"""The one torch.fx front end: trace a module, propagate shapes, read the nodes.

`trace(module, inputs)` returns a `TracedGraph`: the fx graph of `module` traced with `Tracer` (torch.nn
modules are leaves, and so are custom modules holding parameters or buffers of their own, so that every
call the op vocabulary (`fastdeepiot.graph.ops`) can name is one node), with every node's output shape
from one forward on `inputs` (ShapeProp, under no_grad). Layer extraction (`graph.extract`) and channel
dependency tracing (`graph.channels`) both read it; `Tracer` alone also serves code that needs only the
graph's structure (`compression.surgery.foldable_pairs`).

Any tracing failure (data-dependent control flow, ...) propagates as the exception fx raised; callers
decide (extraction falls back to forward hooks, channel tracing refuses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp


class Tracer(torch.fx.Tracer):
    """torch.nn modules are leaves (fx's default); so are custom modules holding their own parameters
    or buffers (their forward is not traced into: the vocabulary names them, or they stay unknown)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if super().is_leaf_module(m, qualname):
            return True
        return any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))


@dataclass
class TracedGraph:
    gm: torch.fx.GraphModule
    modules: dict[str, nn.Module]  # qualified name -> module, of the traced root

    @property
    def nodes(self):
        return self.gm.graph.nodes


def trace(module: nn.Module, inputs: tuple, *, eval_mode: bool = False) -> TracedGraph:
    """Trace `module` with `Tracer` and propagate the shapes of `inputs` through it (no_grad).

    `eval_mode` runs the shape propagation in eval mode (restoring the module's mode afterwards), so
    that it updates no BatchNorm statistics; otherwise the module runs in the mode it is in.
    """
    tracer = Tracer()
    graph = tracer.trace(module)
    gm = torch.fx.GraphModule(tracer.root, graph)
    was = module.training
    if eval_mode:
        module.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    finally:
        if eval_mode:
            module.train(was)
    return TracedGraph(gm, dict(gm.named_modules()))


def is_leaf(module: nn.Module) -> bool:
    """Whether `Tracer` keeps `module` as one call (it is then not traced into)."""
    return Tracer().is_leaf_module(module, "")


def meta_shape(node) -> Any:
    """A node's output shape: a tuple for a tensor, a (nested) list of them for a tuple of tensors,
    None for anything else (x.size(), shape arithmetic, no propagated shape)."""
    tm = node.meta.get("tensor_meta") if hasattr(node, "meta") else None
    return None if tm is None else _tm_shape(tm)


def _tm_shape(tm):
    if hasattr(tm, "shape"):
        return tuple(int(x) for x in tm.shape)
    if isinstance(tm, (tuple, list)):
        return [_tm_shape(t) for t in tm]
    return None


def tensor_shape(node) -> tuple[int, ...] | None:
    """The shape of a node producing one tensor; None for anything else."""
    s = meta_shape(node)
    return s if isinstance(s, tuple) else None


def tensor_arg_nodes(node) -> list:
    """The fx nodes among a node's args and kwargs (nested in tuples, lists and dicts), in order."""
    out = []

    def visit(a):
        if isinstance(a, torch.fx.Node):
            out.append(a)
        elif isinstance(a, (tuple, list)):
            for x in a:
                visit(x)
        elif isinstance(a, dict):
            for x in a.values():
                visit(x)

    visit(node.args)
    visit(node.kwargs)
    return out


def arg(node, i: int, name: str, default=None):
    """The i-th positional argument of a call node, or its keyword `name`."""
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def target_name(node) -> str:
    """A function's __name__ or a method's name: the op's name in messages and `LayerCall.op`."""
    if node.op == "call_method":
        return node.target
    return getattr(node.target, "__name__", str(node.target))
