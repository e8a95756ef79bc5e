"""The one torch.fx front end: trace a module, propagate shapes, read the nodes.

`trace(module, inputs)` returns a `TracedGraph`: the fx graph of `module` traced with `Tracer` (torch.nn
modules are leaves, and so are custom modules holding parameters or buffers of their own, so that every
call the op vocabulary (`fastdeepiot.graph.ops`) can name is one node), with every node's output shape
from one forward on `inputs` (`propagate_shapes`: fx's ShapeProp without the stride / memory-format
metadata we never read, under no_grad), and how many container-module calls that forward makes (counted
while tracing: no second forward with hooks). The graph is interpreted on the module itself: no
GraphModule is built (its code generation cost more than the trace) unless `TracedGraph.gm` asks.
Layer extraction (`graph.extract`) and channel dependency tracing (`graph.channels`) both read it;
`Tracer` alone also serves code that needs only the graph's structure (`compression.surgery.foldable_pairs`).

Any tracing failure (data-dependent control flow, ...) propagates as the exception fx raised; callers
decide (extraction falls back to forward hooks, channel tracing refuses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules import module as _torch_module  # its global hook registries


class Tracer(torch.fx.Tracer):
    """torch.nn modules are leaves (fx's default); so are custom modules holding their own parameters
    or buffers (their forward is not traced into: the vocabulary names them, or they stay unknown).

    While tracing it counts the calls of modules that have children (`container_calls`, the root
    excluded) and notes the leaf modules called (`leaves_called`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.container_calls = 0
        self.leaves_called: list[nn.Module] = []

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if super().is_leaf_module(m, qualname):
            return True
        return any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))

    def call_module(self, m: nn.Module, forward, args, kwargs):
        if next(m.children(), None) is not None:
            self.container_calls += 1
        if self.is_leaf_module(m, self.path_of_module(m)):
            self.leaves_called.append(m)
        return super().call_module(m, forward, args, kwargs)


@dataclass
class TracedGraph:
    graph: torch.fx.Graph
    root: nn.Module
    modules: dict[str, nn.Module]  # qualified name -> module, of the traced root
    # container-module calls of one forward (the root included), as nn.Module pre-forward hooks would
    # count them; None where tracing cannot tell (a leaf module with containers inside it)
    container_calls: int | None = None

    @property
    def nodes(self):
        return self.graph.nodes

    @property
    def gm(self) -> torch.fx.GraphModule:
        """The traced graph as a GraphModule (built on demand: code generation is slow)."""
        return torch.fx.GraphModule(self.root, self.graph)


def trace(module: nn.Module, inputs: tuple, *, eval_mode: bool = False) -> TracedGraph:
    """Trace `module` with `Tracer` and propagate the shapes of `inputs` through it (no_grad).

    `eval_mode` runs the shape propagation in eval mode (restoring the module's mode afterwards), so
    that it updates no BatchNorm statistics; otherwise the module runs in the mode it is in.
    """
    tracer = Tracer()
    graph = tracer.trace(module)
    was = module.training
    if eval_mode:
        module.eval()
    try:
        with torch.no_grad():
            propagate_shapes(module, graph, inputs)
    finally:
        if eval_mode:
            module.train(was)
    return TracedGraph(graph, module, dict(module.named_modules()), _container_calls(module, tracer))


def _container_calls(root: nn.Module, tracer: Tracer) -> int | None:
    """Container calls of one forward, from the trace: the root (when it has children) plus those the
    tracer saw. A leaf module holding containers may call them in its own (untraced) forward: None."""
    for m in tracer.leaves_called:
        if any(next(c.children(), None) is not None for c in m.modules() if c is not m):
            return None
    return tracer.container_calls + (next(root.children(), None) is not None)


class _ShapeInterpreter(torch.fx.Interpreter):
    """Runs the graph on the root module, recording each node's output shape in `node.meta['shape']`.

    Convolutions are not computed when every module is in eval mode (in train mode the forward updates
    BatchNorm statistics from real values, as it always did): a plain nn.Conv1d/Conv2d (no hooks, zero
    padding, input and weight of one dtype and device) gets its output shape from torch's meta kernel
    and passes zeros of that shape on. They are most of a forward's time (a 3x3 256->256 convolution at 56x56: 100 ms on one
    thread, 0.05 ms on meta). Shapes are exact; only values downstream differ, which no shape depends on
    (a forward whose shapes depend on its values -- nonzero, boolean masks -- is outside what the time
    model prices anyway: it would price one arbitrary example)."""

    def __init__(self, root: nn.Module, graph: torch.fx.Graph):
        super().__init__(root, graph=graph)
        self.meta_convs = not any(m.training for m in root.modules())

    def call_module(self, target, args, kwargs):
        m = self.fetch_attr(target)
        if self.meta_convs and type(m) in _CONVS and not kwargs and len(args) == 1 and _plain_conv_call(m, args[0]):
            x, w, b = args[0], m.weight, m.bias
            conv = F.conv2d if type(m) is nn.Conv2d else F.conv1d
            meta = conv(x.to("meta"), w.to("meta"), None if b is None else b.to("meta"), m.stride, m.padding,
                        m.dilation, m.groups)
            return torch.zeros(meta.shape, dtype=meta.dtype, device=x.device)
        return super().call_module(target, args, kwargs)

    def run_node(self, n):
        result = super().run_node(n)
        n.meta["shape"] = _shape_of(result) if _has_tensor(result) else None
        return result


_CONVS = (nn.Conv1d, nn.Conv2d)


def _plain_conv_call(m: nn.Module, x) -> bool:
    """Whether calling conv `m` on `x` is F.conv*(x, weight, bias, ...) and nothing else."""
    return (type(x) is torch.Tensor and m.padding_mode == "zeros" and x.dtype == m.weight.dtype
            and x.device == m.weight.device and not x.is_quantized
            and not (m._forward_hooks or m._forward_pre_hooks or _torch_module._global_forward_hooks
                     or _torch_module._global_forward_pre_hooks))


def propagate_shapes(root: nn.Module, graph: torch.fx.Graph, inputs: tuple) -> None:
    """One forward of `graph` (traced from `root`) on `inputs`; each node's output shape lands in its
    meta (read with `meta_shape`): what fx's ShapeProp records, shapes only."""
    _ShapeInterpreter(root, graph).run(*inputs)


def _has_tensor(x) -> bool:
    if isinstance(x, torch.Tensor):
        return True
    if isinstance(x, (tuple, list)):
        return any(_has_tensor(y) for y in x)
    if isinstance(x, dict):
        return any(_has_tensor(y) for y in x.values())
    if isinstance(x, slice):
        return any(_has_tensor(y) for y in (x.start, x.stop, x.step))
    return False


def _shape_of(x):
    if isinstance(x, torch.Tensor):
        return tuple(int(d) for d in x.shape)
    if isinstance(x, (tuple, list)):
        return [_shape_of(y) for y in x]
    return None


def is_leaf(module: nn.Module) -> bool:
    """Whether `Tracer` keeps `module` as one call (it is then not traced into)."""
    return Tracer().is_leaf_module(module, "")


def meta_shape(node) -> Any:
    """A node's output shape: a tuple for a tensor, a (nested) list of them for a tuple of tensors,
    None for anything else (x.size(), shape arithmetic, no propagated shape)."""
    return node.meta.get("shape") if hasattr(node, "meta") else None


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
