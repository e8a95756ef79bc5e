"""Record the ops one forward runs as a torch.fx graph: the extraction's fallback when symbolic tracing fails.

torch.fx cannot trace a forward whose control flow depends on tensor values (`if x.sum() > 0`, a loop over a
tensor's elements). Such a forward still runs on its example input, so `record(module, inputs)` runs it once (no_grad)
and writes down what it did, in the same form `graph.trace.trace` returns (a `TracedGraph` whose nodes carry their
output shapes in `meta["shape"]`), so that one mapping (`graph.extract`) prices both:

  * a call of a leaf module (`graph.trace.is_leaf`: torch.nn's layers, TorchScript modules) is one `call_module`
    node, seen by forward hooks; what runs inside it is not recorded;
  * every torch function and Tensor method called outside leaf modules (F.relu, torch.cat, `x.view(..)`,
    `a + b`, ...) is one `call_function` / `call_method` node, seen by a `TorchFunctionMode`, with Tensor's
    operator methods written as the `operator` functions fx records (`a + b` -> operator.add);
  * a tensor no recorded call produced (the input, a parameter, a constant) is read through a placeholder or a
    `get_attr` node; the elements of a tuple a call returns (an RNN's output and state) through `getitem` nodes.

A function or method call whose one-element result only the forward's control flow reads (`if y.mean() > 0`) is
marked `meta["condition"]` (the extraction prices it as a free op and says so).

What it cannot do: it records the path this input takes (another input may take another path), and calls that
return no tensor (x.size(), x.item()) are not nodes, so a shape computed from them is a number in the graph.
"""

from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from fastdeepiot.graph.trace import TracedGraph, has_tensor, is_leaf

__all__ = ["record"]

# Tensor's operator methods -> the operator function fx records, and whether the operands are swapped (x.__rsub__(y)
# computes y - x)
_DUNDER = {
    "__add__": (operator.add, False), "__radd__": (operator.add, True), "__iadd__": (operator.iadd, False),
    "__sub__": (operator.sub, False), "__rsub__": (operator.sub, True), "__isub__": (operator.isub, False),
    "__mul__": (operator.mul, False), "__rmul__": (operator.mul, True), "__imul__": (operator.imul, False),
    "__truediv__": (operator.truediv, False), "__rtruediv__": (operator.truediv, True),
    "__itruediv__": (operator.itruediv, False), "__matmul__": (operator.matmul, False),
    "__rmatmul__": (operator.matmul, True), "__pow__": (operator.pow, False), "__rpow__": (operator.pow, True),
    "__neg__": (operator.neg, False), "__getitem__": (operator.getitem, False),
}


def _is_tensor_method(func) -> bool:
    owner = getattr(func, "__objclass__", None)
    if owner is not None:
        return owner in (torch.Tensor, torch._C.TensorBase)
    qual = getattr(func, "__qualname__", "")
    return qual.startswith("Tensor.") or qual.startswith("TensorBase.")


_NEVER_CALLED = (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)


def _shape_of(x):
    """A tensor's shape; for a tuple or list holding tensors anywhere inside (an LSTM's (PackedSequence, (h, c))),
    the nested list of its elements' shapes; None when no tensor is in it."""
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (tuple, list)) and has_tensor(x):
        return [_shape_of(y) for y in x]
    return None


class _Recorder(TorchFunctionMode):
    def __init__(self, root: nn.Module):
        super().__init__()
        self.graph = torch.fx.Graph()
        self.node_of: dict[int, torch.fx.Node] = {}  # id(tensor) -> the node that produced it
        self.keep: list = []  # every tensor seen, so that no id is reused while recording
        self.depth = 0  # > 0 inside a leaf module: its own ops are not recorded
        self.params = {id(t): name for name, t in (*root.named_parameters(), *root.named_buffers())}
        self.constants: dict[str, torch.Tensor] = {}

    # ---- values
    def _set(self, value, node: torch.fx.Node) -> None:
        node.meta["shape"] = _shape_of(value)
        if isinstance(value, torch.Tensor):
            self.keep.append(value)
            self.node_of[id(value)] = node
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                if has_tensor(v):  # (nested tuples too: each tensor inside is read through getitem nodes)
                    item = self.graph.call_function(operator.getitem, (node, i))
                    self._set(v, item)

    def arg(self, a):
        """A call's argument as the graph holds it: a tensor -> its node (a get_attr node for one no recorded call
        produced), containers element-wise, anything else as it is."""
        if isinstance(a, torch.Tensor):
            node = self.node_of.get(id(a))
            if node is None:
                name = self.params.get(id(a))
                if name is None:
                    name = f"_tensor_constant{len(self.constants)}"
                    self.constants[name] = a
                node = self.graph.get_attr(name)
                self._set(a, node)
            return node
        if isinstance(a, (tuple, list)):
            return type(a)(self.arg(x) for x in a) if not hasattr(a, "_fields") else tuple(self.arg(x) for x in a)
        if isinstance(a, dict):
            return {k: self.arg(v) for k, v in a.items()}
        return a

    def placeholder(self, name: str, value) -> None:
        self._set(value, self.graph.placeholder(name))

    # ---- calls
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)  # (the mode is off while its handler runs: nothing inside is seen)
        if self.depth > 0 or _shape_of(out) is None or not has_tensor((args, kwargs)):
            # inside a leaf module; no tensor out (x.size(), x.dim(), x.shape); or a constant made from numbers
            # (torch.zeros(2, 3): fx runs it while tracing too, and reads it as a constant)
            return out
        name = getattr(func, "__name__", "")
        if name == "__get__" and args:  # a property (x.T, x.mT, x.data): fx records getattr(x, name)
            node = self.graph.call_function(getattr, (self.arg(args[0]), getattr(func.__self__, "__name__", "?")))
        elif name in _DUNDER:
            target, swap = _DUNDER[name]
            a = tuple(args[::-1]) if swap and len(args) == 2 else tuple(args)
            node = self.graph.call_function(target, self.arg(a), self.arg(kwargs))
        elif _is_tensor_method(func):
            node = self.graph.call_method(name, self.arg(tuple(args)), self.arg(kwargs))
        else:
            node = self.graph.call_function(func, self.arg(tuple(args)), self.arg(kwargs))
        self._set(out, node)
        return out

    def module_hooks(self, root: nn.Module) -> list:
        """Hooks on every leaf module below `root` (the root itself is recorded into, even when it is a leaf: a
        bare torch.nn container that fx could not trace is priced by its parts)."""
        handles, leaves = [], []
        for qualname, m in root.named_modules():
            if m is root or isinstance(m, _NEVER_CALLED) or not is_leaf(m) or any(
                    qualname.startswith(p + ".") for p in leaves):
                continue  # (a ModuleList / ModuleDict is no call: its children are hooked, as fx sees them)
            leaves.append(qualname)
            handles.append(m.register_forward_pre_hook(self._enter))
            handles.append(m.register_forward_hook(self._leave(qualname), with_kwargs=True))
        return handles

    def _enter(self, m, args):
        self.depth += 1

    def _leave(self, qualname: str):
        def hook(m, args, kwargs, output):
            try:
                if self.depth == 1:  # a leaf called from recorded code (not from inside another leaf)
                    node = self.graph.call_module(qualname, self.arg(tuple(args)), self.arg(dict(kwargs)))
                    self._set(output, node)
            finally:
                self.depth -= 1

        return hook


def _mark_conditions(graph: torch.fx.Graph) -> None:
    """`meta["condition"]` on the function / method calls that compute only what the forward's control flow reads: a
    one-element tensor (`y.mean() > 0`) that no recorded call uses, except calls marked so themselves."""
    for node in reversed(graph.nodes):
        shape = node.meta.get("shape")
        if node.op in ("call_function", "call_method") and isinstance(shape, tuple) and _numel(shape) <= 1 and all(
                u.op != "output" and u.meta.get("condition") for u in node.users):
            node.meta["condition"] = True


def _numel(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def record(module: nn.Module, inputs: tuple) -> TracedGraph:
    """One forward of `module` on `inputs` (no_grad), written down as a `TracedGraph` (see the module doc). A failing
    forward raises what it raised."""
    rec = _Recorder(module)
    for i, x in enumerate(inputs):
        rec.placeholder(f"input_{i}" if i else "x", x)
    handles = rec.module_hooks(module)
    try:
        with torch.no_grad(), rec:
            out = module(*inputs)
    finally:
        for h in handles:
            h.remove()
    rec.graph.output(rec.arg(out))
    _mark_conditions(rec.graph)
    modules = dict(module.named_modules())
    return TracedGraph(rec.graph, module, modules, None, rec.constants)
