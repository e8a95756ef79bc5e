"""The one torch.fx front end: trace a module, propagate shapes, read the nodes.

`trace(module, inputs)` returns a `TracedGraph`: the fx graph of `module` traced with `Tracer` (torch.nn
modules are leaves and custom modules are traced into, so that every call the op vocabulary
(`fastdeepiot.graph.ops`) can name is one node), with every node's output shape
from one run of the graph on `inputs` (`propagate_shapes`: fx's ShapeProp without the stride /
memory-format metadata we never read, under no_grad; in eval mode the costly calls -- convolutions,
BatchNorm, large pools, residual adds, in-place activations -- are shaped, not computed), and how many
container-module calls a forward makes (counted while tracing: no second forward with hooks). The graph
is run on the module itself: no GraphModule is built (its code generation cost more than the trace)
unless `TracedGraph.gm` asks.
Layer extraction (`graph.extract`) and channel dependency tracing (`graph.channels`) both read it;
`Tracer` alone also serves code that needs only the graph's structure (`compression.surgery.foldable_pairs`).

Any tracing failure (data-dependent control flow, ...) propagates as the exception fx raised; callers
decide (extraction falls back to forward hooks, channel tracing refuses).
"""

from __future__ import annotations

import inspect
import math
import operator
import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.fx.traceback as fx_traceback
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.immutable_collections import immutable_dict
from torch.nn.modules import module as _torch_module  # its global hook registries

from fastdeepiot.families import conv_out_size


class Tracer(torch.fx.Tracer):
    """torch.nn modules are leaves (fx's default); a custom module is traced into, so the ops its forward
    runs on its own parameters (a layer scale `x * self.gamma`, a class token and position embedding
    `torch.cat([self.cls, x], 1) + self.pos`) are nodes the vocabulary can name, reading the parameters
    through get_attr nodes. With `opaque_custom=True` a custom module holding parameters or buffers of
    its own is a leaf instead (one call the vocabulary does not name): `trace` falls back to that when
    fx cannot trace into such a module.

    While tracing it counts the calls of modules that have children (`container_calls`, the root
    excluded) and notes the leaf modules called (`leaves_called`)."""

    def __init__(self, *args, opaque_custom: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.opaque_custom = opaque_custom
        self.constants: dict[str, torch.Tensor] = {}  # tensors made while tracing, by get_attr target
        self.container_calls = 0
        self.leaves_called: list[nn.Module] = []

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if super().is_leaf_module(m, qualname) or isinstance(m, torch.jit.ScriptModule):
            # a TorchScript submodule is one call under its own name: fx cannot trace into its compiled
            # forward (it recorded a call named `forward`), and its state is TorchScript's, not nn.Module's
            return True
        return self.opaque_custom and (any(p is not None for p in m._parameters.values())
                                       or any(b is not None for b in m._buffers.values()))

    def create_arg(self, a):
        """fx's create_arg, answering the commonest arguments (proxies, numbers, strings, None, plain
        tuples and lists of them) at once; fx's own checks (parameters, tensors, modules, named tuples,
        opaque types) return the same for them after a dozen type tests each."""
        t = type(a)
        if t is torch.fx.Proxy:
            return a.node
        if t in _PLAIN_ARGS:
            return a
        if t is tuple or t is list:
            return t(self.create_arg(x) for x in a)
        if t is torch.Tensor and self.tensor_attrs.get(a) is None:
            # a tensor made while tracing (torch.ones(..) in a forward): fx would setattr it on the user's
            # module as `_tensor_constantN`; it is kept here instead and read from `TracedGraph.constants`
            name = f"_tensor_constant{len(self.constants)}"
            while hasattr(self.root, name):
                name += "_"
            self.constants[name] = a
            return self.create_node("get_attr", name, (), {})
        return super().create_arg(a)

    def call_module(self, m: nn.Module, forward, args, kwargs):
        """fx's call_module (a leaf becomes a call_module node, any other module is traced through)
        without its scope and module-stack bookkeeping: it only fills node metadata (nn_module_stack)
        that nothing here reads, and it cost a copy of the stack per node."""
        qualname = self.path_of_module(m)  # fx's NameError for a module that is not a submodule
        if next(m.children(), None) is not None:
            self.container_calls += 1
        if not self.is_leaf_module(m, qualname):
            return forward(*args, **kwargs)
        self.leaves_called.append(m)
        return self.create_proxy("call_module", qualname, args, kwargs)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        """fx's create_node without the walk that warns about raw SymInt arguments (a pytree walk over
        every argument of every node, a sixth of a trace; this tracer never sees symbolic values) and
        without the metadata fx's create_node adds only when a stack trace, preserved node metadata or a
        module stack is being recorded (never here: `call_module` keeps no module stack). Where any of
        those is on, or the graph lacks the internals this relies on, fx's own path runs."""
        g = self.graph
        if (not _FAST_NODES or self.check_mutable_operations or self.record_stack_traces or self.module_stack
                or fx_traceback.has_preserved_node_meta() or g.owning_module is not None):
            return super().create_node(kind, target, args, kwargs, name, type_expr)
        # torch.fx.Graph.create_node (torch 2.13) from here on, less the SymInt walk
        name = g._graph_namespace.create_name(name if name is not None else g._target_to_str(target), None)
        n = torch.fx.Node(g, name, kind, target, args or (), kwargs or immutable_dict(), type_expr)
        g._graph_namespace.associate_name_with_obj(name, n)
        g._insert(n)
        g._find_nodes_lookup_table.insert(n)
        g._len += 1
        self.node_name_to_scope[name] = (self.scope.module_path, self.scope.module_type)
        return n


_PLAIN_ARGS = frozenset((int, float, bool, str, type(None)))
# the torch.fx.Graph internals Tracer.create_node uses (all there in the pinned torch; fx's own path otherwise)
_FAST_NODES = all(hasattr(torch.fx.Graph(), a) for a in ("_graph_namespace", "_target_to_str", "_insert",
                                                          "_find_nodes_lookup_table", "_len"))


@dataclass
class TracedGraph:
    graph: torch.fx.Graph
    root: nn.Module
    modules: dict[str, nn.Module]  # qualified name -> module, of the traced root
    # container-module calls of one forward (the root included), as nn.Module pre-forward hooks would
    # count them; None where tracing cannot tell (a leaf module with containers inside it)
    container_calls: int | None = None
    # tensors the forward made while tracing (get_attr target -> tensor), kept off the user's module
    constants: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def nodes(self):
        return self.graph.nodes

    @property
    def gm(self) -> torch.fx.GraphModule:
        """The traced graph as a GraphModule (built on demand: code generation is slow); the constants
        are set on the root only while the GraphModule copies them."""
        for k, v in self.constants.items():
            setattr(self.root, k, v)
        try:
            return torch.fx.GraphModule(self.root, self.graph)
        finally:
            for k in self.constants:
                delattr(self.root, k)


def trace(module: nn.Module, inputs: tuple, *, eval_mode: bool = False) -> TracedGraph:
    """Trace `module` with `Tracer` and propagate the shapes of `inputs` through it (no_grad).

    `eval_mode` runs the shape propagation in eval mode (restoring the module's mode afterwards), so
    that it updates no BatchNorm statistics; otherwise the module runs in the mode it is in.
    """
    defaults = _defaults_left(module, len(inputs))
    try:
        tracer = Tracer()
        graph = tracer.trace(module, concrete_args=defaults)
    except Exception:  # noqa: BLE001 - fx raises many kinds; a custom module it cannot trace into stays whole
        if not _has_custom_state(module):
            raise
        tracer = Tracer(opaque_custom=True)
        graph = tracer.trace(module, concrete_args=defaults)  # a second failure is the caller's (extraction
        # falls back to hooks)
    if defaults:
        _drop_default_guards(graph, defaults)
    was = module.training
    if eval_mode:
        module.eval()
    modules = dict(module.named_modules())
    try:
        with torch.no_grad():
            propagate_shapes(module, graph, inputs, modules, tracer.constants)
    except Exception as e:  # noqa: BLE001 - the traced graph ran on the real inputs and failed
        raise ShapePropagationError(str(e)) from e
    finally:
        if eval_mode:
            module.train(was)
    return TracedGraph(graph, module, modules, _container_calls(module, tracer), tracer.constants)


class ShapePropagationError(RuntimeError):
    """`trace` traced the module but its graph failed when run on the inputs (the forward does not run on them, or
    runs differently from the trace); the message is the original error's, which is its `__cause__`."""


def _defaults_left(module: nn.Module, n_inputs: int) -> dict | None:
    """The forward's parameters a call on `n_inputs` inputs leaves at their defaults (plain values: None, numbers,
    strings), by name. fx would make each an input of the graph, a Proxy that `is not None` and cannot be branched
    on, and trace a branch (`if mask is not None:`) that a call on the given inputs never runs: they are traced
    with their default values."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    out, given = {}, 0
    for p in params:
        if p.kind is p.POSITIONAL_OR_KEYWORD and given < n_inputs:
            given += 1
        elif (p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty
              and type(p.default) in _PLAIN_ARGS):
            out[p.name] = p.default
        elif p.kind is p.POSITIONAL_ONLY:
            given += 1
    return out or None


def _drop_default_guards(graph: torch.fx.Graph, defaults: dict) -> None:
    """Remove what fx's concrete_args add for each value traced as a default: an input it is never given (the
    forward read the value itself) and the checks on it (`torch._assert(x == 3)`, `_assert_is_none(x)`), which are
    no op of the network."""
    for ph in [n for n in graph.nodes if n.op == "placeholder" and n.target.rsplit("_", 1)[0] in defaults]:
        below, todo = [], [ph]
        while todo:
            n = todo.pop()
            below.append(n)
            todo.extend(n.users)
        if any(n.op == "output" for n in below):
            continue  # (the value is returned: fx would have passed the default through, keep it)
        drop = set(below)
        for n in [n for n in reversed(graph.nodes) if n in drop]:  # users first
            graph.erase_node(n)


def _has_custom_state(root: nn.Module) -> bool:
    """Whether a module below `root` is custom (not torch.nn's) and holds parameters or buffers of its own."""
    return any(not is_leaf(m) and (m._parameters or m._buffers) for m in root.modules() if m is not root)


def _container_calls(root: nn.Module, tracer: Tracer) -> int | None:
    """Container calls of one forward, from the trace: the root (when it has children) plus those the
    tracer saw. A leaf module holding containers may call them in its own (untraced) forward: None."""
    for m in tracer.leaves_called:
        if any(next(c.children(), None) is not None for c in m.modules() if c is not m):
            return None
    return tracer.container_calls + (next(root.children(), None) is not None)


def propagate_shapes(root: nn.Module, graph: torch.fx.Graph, inputs: tuple,
                     modules: dict[str, nn.Module] | None = None, constants: dict | None = None) -> None:
    """One forward of `graph` (traced from `root`) on `inputs`; each node's output shape lands in its
    meta (read with `meta_shape`): what fx's ShapeProp records, shapes only.

    The graph is run node by node on the root module as torch.fx.Interpreter runs it (each value
    dropped after its last use), without the Interpreter's per-node bookkeeping; `modules`
    (qualified name -> module, default `root.named_modules()`) finds a call's module without walking the
    attribute path; `constants` holds the tensors `Tracer` kept off the module (get_attr target -> tensor).

    When every module is in eval mode (in train mode the forward updates BatchNorm statistics from real
    values, as it always did), the calls that are most of a forward's time are shaped, not computed, where
    the call is plain (floating-point tensors of the module's dtype and device, no hooks). Their outputs
    are made-up tensors of the right shape (`_Scratch`: zeros whenever a real call reads them):
      * nn.Conv1d/Conv2d (zero padding): the output shape by torch's output-size formula where the input
        is batched and its channels match, else from torch's meta kernel, which checks the call as the
        real one does (a 3x3 256->256 convolution at 56x56: 100 ms on one thread, 0.05 ms on meta);
      * nn.MaxPool1d/2d, nn.AvgPool1d/2d on inputs of 64K elements or more: run on the meta device
        (3.3 ms -> 0.04 ms for a 3x3 max pool of 64x112x112; a small pool is cheaper to compute);
      * nn.BatchNorm1d/2d with running statistics: the input's rank and channels checked as the real
        call checks them; the output has the input's shape;
      * `a + b`, torch.add, Tensor.add of two tensors of one shape, dtype and device (residual adds);
        `a += b` into a made-up `a` returns `a`;
      * in-place activations (ReLU, ReLU6, ...; `inplace=True`): the input itself, as the real call
        returns it.
    Anything else (and any of these whose check fails) runs for real, so an error is the real call's.
    Shapes are exact; only values differ, which no shape depends on (a forward whose shapes depend on its
    values -- nonzero, boolean masks -- is outside what the time model prices anyway: it would price one
    arbitrary example)."""
    if modules is None:
        modules = dict(root.named_modules())
    shaped = not any(m.training for m in modules.values()) and not _has_global_hooks()
    last_uses: dict = {}  # node -> the nodes whose last use it is
    seen: set = set()
    n_params, star = 0, False  # the forward's parameters
    for node in reversed(graph.nodes):
        if node.op == "placeholder":
            n_params += 1
            star = star or node.target.startswith("*")
        for n in node.all_input_nodes:
            if n not in seen:
                seen.add(n)
                last_uses.setdefault(node, []).append(n)
    if len(inputs) > n_params and not star:
        # as calling the module would: an input the forward has no parameter for is an error, not dropped
        raise TypeError(f"{type(root).__name__}.forward() takes {n_params} input(s) but {len(inputs)} were given")
    env: dict = {}
    args_iter = iter(inputs)
    scratch = _Scratch()

    def load(n):
        try:
            return env[n]
        except KeyError:
            raise RuntimeError(f"Node {n} referenced nonexistent value") from None

    for node in graph.nodes:
        op, target = node.op, node.target
        try:
            if op == "placeholder":
                value = _placeholder(node, args_iter)
            elif op == "get_attr":
                value = constants[target] if constants and target in constants else _fetch_attr(root, target)
            else:
                args = torch.fx.node.map_arg(node.args, load)
                kwargs = torch.fx.node.map_arg(node.kwargs, load)
                if op == "call_module":
                    m = modules.get(target)
                    m = _fetch_attr(root, target) if m is None else m
                    shape = _SHAPED.get(type(m)) if shaped and not kwargs and len(args) == 1 else None
                    value = _shaped_call(shape, m, args[0], scratch) if shape is not None else None
                    if value is None:
                        scratch.fill(args, kwargs)
                        value = m(*args, **kwargs)
                elif op in ("call_function", "call_method"):
                    shape = (_SHAPED_FUNCTIONS if op == "call_function" else _SHAPED_METHODS).get(target) if shaped else None
                    value = shape(args, kwargs, scratch) if shape is not None else None
                    if value is None:
                        scratch.fill(args, kwargs)
                        value = target(*args, **kwargs) if op == "call_function" else getattr(args[0], target)(
                            *args[1:], **kwargs)
                elif op == "output":
                    value = args[0]
                else:
                    raise RuntimeError(f"unknown fx op {op!r}")
        except KeyError as e:  # as fx's Interpreter reports it
            raise RuntimeError(*e.args) from e
        env[node] = value
        node.meta["shape"] = _shape_of(value) if has_tensor(value) else None
        for n in last_uses.get(node, ()):
            del env[n]


def _placeholder(node, args_iter):
    if node.target.startswith("*"):
        return list(args_iter)
    try:
        return next(args_iter)
    except StopIteration:
        if node.args:  # a default value
            return node.args[0]
        raise RuntimeError(f"Expected positional argument for parameter {node.target}, but one was not "
                           f"passed in!") from None


def _fetch_attr(root: nn.Module, target: str):
    obj = root
    for i, atom in enumerate(target.split(".")):
        if not hasattr(obj, atom):
            raise RuntimeError(f"Node referenced nonexistent target {'.'.join(target.split('.')[:i + 1])}")
        obj = getattr(obj, atom)
    return obj


class _Scratch:
    """The tensors a propagation made up to stand for shaped outputs (and views of them). Large ones
    (4K elements or more) are made empty and zeroed only when a real call is about to read them
    (`fill`): a conv's output that only shaped calls see (a BatchNorm, an in-place activation, a
    residual add, the next conv) is never written, and neither allocating it nor freeing it touches its
    memory (at 224x224, writing, reading and page-faulting those tensors was most of a propagation's
    time); small ones are zeros at once. A shaped call may hand a made-up tensor on as its own output,
    where aliasing it can change no value anyone else owns (the caller's inputs, parameters, buffers)."""

    def __init__(self):
        self._made: dict[int, tuple[weakref.ref, int]] = {}  # id -> (the tensor, its storage)
        self._blank: set[int] = set()  # storages of made-up tensors not zeroed yet

    def blank(self, shape, like: torch.Tensor) -> torch.Tensor:
        """A made-up tensor of `shape` and `like`'s dtype and device (zeros whenever a real call reads it)."""
        small = math.prod(shape) < _BLANK_MIN_ELEMENTS
        t = self.own((torch.zeros if small else torch.empty)(shape, dtype=like.dtype, device=like.device))
        storage = self._made[id(t)][1]
        (self._blank.discard if small else self._blank.add)(storage)  # (a freed blank's storage reused)
        return t

    def own(self, t: torch.Tensor) -> torch.Tensor:
        self._made[id(t)] = (weakref.ref(t), t.untyped_storage().data_ptr())
        return t

    def owns(self, t) -> bool:
        r = self._made.get(id(t))
        return r is not None and r[0]() is t

    def alias(self, x: torch.Tensor) -> torch.Tensor:
        """A tensor of `x`'s shape: a view of `x` where `x` is made up, else a new made-up one."""
        return self.own(x.view_as(x)) if self.owns(x) else self.blank(x.shape, x)

    def fill(self, *values) -> None:
        """Zero the made-up tensors among `values` (nested in tuples, lists, dicts, slices) that are not
        zeroed yet: a real call reads them next."""
        if not self._blank:
            return
        for t in _tensors_in(values):
            r = self._made.get(id(t))
            if r is not None and r[1] in self._blank and r[0]() is t:
                t.untyped_storage().fill_(0)
                self._blank.discard(r[1])


# below, zeros cost less than keeping track of them. 4K elements (16 KB), not 64K: a zeroed tensor of a few
# hundred KB is fresh memory from the allocator, and writing it page-faults (a cold predict_network of
# MobileNet-V2 / ResNet-50 at 224x224, 12 interleaved rounds: 18.5 / 20.2 ms at 64K, 17.6 / 18.8 ms at 4K)
_BLANK_MIN_ELEMENTS = 1 << 12


def _tensors_in(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (tuple, list)):
        for y in x:
            yield from _tensors_in(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _tensors_in(y)
    elif isinstance(x, slice):
        yield from _tensors_in((x.start, x.stop, x.step))


def _shaped_call(shape, m: nn.Module, x, scratch: _Scratch) -> torch.Tensor | None:
    """`shape(m, x, scratch)` where the call is plain; None (run it for real) where it is not or the
    shortcut fails, so that any error is the real call's."""
    if not _plain_call(m, x):
        return None
    try:
        return shape(m, x, scratch)
    except Exception:  # noqa: BLE001 - the real call decides
        return None


def _plain_call(m: nn.Module, x) -> bool:
    """Whether calling `m` on `x` runs its forward on a plain tensor of its parameters' dtype and device."""
    w = next(iter(m._parameters.values()), None)
    return (_plain_tensor(x) and (w is None or (x.dtype == w.dtype and x.device == w.device))
            and not (m._forward_hooks or m._forward_pre_hooks))


def _has_global_hooks() -> bool:
    return bool(_torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks)


def _conv_shape(m: nn.Module, x: torch.Tensor, scratch: _Scratch) -> torch.Tensor | None:
    """Zeros of the output shape of conv `m` on `x`: by arithmetic for a batched input and integer padding
    whose channels and size the convolution accepts (torch's own output-size formula), else checked and
    shaped by torch's meta kernel (a meta call costs ~40 us: a third of a MobileNet's propagation)."""
    if m.padding_mode != "zeros":
        return None
    w, b = m.weight, m.bias
    if x.dim() == w.dim() and x.shape[1] == w.shape[1] * m.groups and not isinstance(m.padding, str):
        out = [conv_out_size(n, k, s, p, d)
               for n, k, s, p, d in zip(x.shape[2:], w.shape[2:], m.stride, m.padding, m.dilation)]
        if all(o > 0 for o in out):
            return scratch.blank((x.shape[0], w.shape[0], *out), x)
    conv = F.conv2d if type(m) is nn.Conv2d else F.conv1d
    meta = conv(x.to("meta"), w.to("meta"), None if b is None else b.to("meta"), m.stride, m.padding,
                m.dilation, m.groups)
    return scratch.blank(meta.shape, x)


def _meta_shape(m: nn.Module, x: torch.Tensor, scratch: _Scratch) -> torch.Tensor | None:
    """Zeros of the output shape of parameter-free `m` (a pool) on `x`, run on the meta device, where `x`
    is large enough for that to be cheaper than pooling it (a meta call costs 30-130 us)."""
    if getattr(m, "return_indices", False) or x.numel() < _POOL_MIN_ELEMENTS:
        return None
    return scratch.blank(m(x.to("meta")).shape, x)


def _batchnorm_shape(m: nn.Module, x: torch.Tensor, scratch: _Scratch) -> torch.Tensor | None:
    """A tensor of `x`'s shape (a view of `x` where the propagation made `x` up, else zeros), where
    BatchNorm `m` (eval, running statistics) accepts `x`."""
    rm = m.running_mean
    if rm is None or rm.dtype != x.dtype or rm.device != x.device:
        return None
    m._check_input_dim(x)  # the real call's checks: rank and channels
    if x.shape[1] != m.num_features:
        return None
    return scratch.alias(x)


def _inplace_shape(m: nn.Module, x: torch.Tensor, scratch: _Scratch) -> torch.Tensor | None:
    """An in-place activation returns its input."""
    return x if m.inplace else None


def _add_operands(args, kwargs):
    """(a, b) of a plain `a + b`: two floating-point tensors of one shape, dtype and device; else None."""
    if kwargs or len(args) != 2 or not all(_plain_tensor(t) for t in args):
        return None
    a, b = args
    return (a, b) if a.shape == b.shape and a.dtype == b.dtype and a.device == b.device else None


def _add_shape(args, kwargs, scratch: _Scratch) -> torch.Tensor | None:
    """a + b: a tensor of their shape (`alias`, of a made-up operand where there is one)."""
    ab = _add_operands(args, kwargs)
    if ab is None:
        return None
    a, b = ab
    return scratch.alias(b if scratch.owns(b) and not scratch.owns(a) else a)


def _iadd_shape(args, kwargs, scratch: _Scratch) -> torch.Tensor | None:
    """a += b into a made-up `a`: `a` itself, as the real call returns it (into anything else it runs for
    real)."""
    ab = _add_operands(args, kwargs)
    return ab[0] if ab is not None and scratch.owns(ab[0]) else None


def _plain_tensor(t) -> bool:
    return type(t) is torch.Tensor and t.is_floating_point() and not t.is_quantized


_POOL_MIN_ELEMENTS = 1 << 16  # pooling 64K elements takes about as long as shaping it on meta
_SHAPED = {nn.Conv1d: _conv_shape, nn.Conv2d: _conv_shape, nn.BatchNorm1d: _batchnorm_shape,
           nn.BatchNorm2d: _batchnorm_shape,
           **dict.fromkeys((nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d), _meta_shape),
           **dict.fromkeys((nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
                            nn.ELU), _inplace_shape)}
# residual adds (`x + y`, torch.add, `out += identity`)
_SHAPED_FUNCTIONS = {operator.add: _add_shape, torch.add: _add_shape, operator.iadd: _iadd_shape}
_SHAPED_METHODS = {"add": _add_shape, "add_": _iadd_shape}


def has_tensor(x) -> bool:
    """Whether a value holds a tensor anywhere inside (tuples, lists, dicts, slices)."""
    if isinstance(x, torch.Tensor):
        return True
    if isinstance(x, (tuple, list)):
        return any(has_tensor(y) for y in x)
    if isinstance(x, dict):
        return any(has_tensor(y) for y in x.values())
    if isinstance(x, slice):
        return any(has_tensor(y) for y in (x.start, x.stop, x.step))
    return False


def _shape_of(x):
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)  # ints
    if isinstance(x, (tuple, list)):
        return [_shape_of(y) for y in x]
    return None


def is_leaf(module: nn.Module) -> bool:
    """Whether `Tracer` keeps `module` as one call (it is then not traced into)."""
    return _LEAF_PROBE.is_leaf_module(module, "")


_LEAF_PROBE = Tracer()  # asked is_leaf_module only: it never traces


@contextmanager
def untouched(module: nn.Module):
    """Run a trace (or a forward) of `module` and leave it as it was: every submodule's train/eval mode, and
    for every module `Tracer` traces into (the root, containers, custom modules; torch.nn's layers write
    nothing in eval mode, except an Embedding with max_norm, kept too) its attributes, parameters, buffers and submodules, by reference, and the values
    of its own parameters and buffers. fx runs the user's `forward` on the real object, so a forward that
    keeps a feature map (`self.feat = y`), re-assigns a buffer (`self.n = self.n + 1`) or clamps a parameter
    in place would otherwise leave a torch.fx Proxy or a changed value on the user's model."""
    # every module's mode, and its forward hooks (a forward that registers a hook each call changes them in place)
    every = [(m, m.training, tuple(m._forward_hooks), tuple(m._forward_pre_hooks)) for m in module.modules()]
    traced = [m for m, *_ in every if not is_leaf(m) or _writes_in_eval(m)]
    saved = [(m, dict(m.__dict__), dict(m._parameters), dict(m._buffers), dict(m._modules),
              [(t, t.detach().clone()) for t in (*m._parameters.values(), *m._buffers.values())
               if isinstance(t, torch.Tensor)]) for m in traced]
    # the lists, dicts and sets a traced module holds (`self.history.append(..)`), nn.Module's own registries aside
    contents = [(v, _contents(v)) for m in traced for k, v in m.__dict__.items()
                if type(v) in (list, dict, set) and k not in _MODULE_OWN]
    try:
        yield
    finally:
        for m, _, post, pre in every:
            if len(m._forward_hooks) != len(post) or len(m._forward_pre_hooks) != len(pre):
                _drop_hooks_but(m, post, pre)
        for obj, old in contents:
            if _identity(_contents(obj)) != _identity(old):
                _restore(obj, old)
        for m, attrs, params, bufs, mods, values in saved:
            for k in [k for k in m.__dict__ if k not in attrs]:
                del m.__dict__[k]
            m.__dict__.update(attrs)
            for d, old in ((m._parameters, params), (m._buffers, bufs), (m._modules, mods)):
                if d.keys() != old.keys() or any(d[k] is not v for k, v in old.items()):
                    d.clear()
                    d.update(old)
            with torch.no_grad():
                for t, v in values:
                    if t.shape == v.shape and not torch.equal(t, v):
                        # a tensor made under inference mode is written back only there (torch writes it in
                        # place outside, then raises)
                        with torch.inference_mode() if t.is_inference() else nullcontext():
                            t.copy_(v)
        for m, was, *_ in every:
            if m.training != was:  # (nn.Module.__setattr__ is slow: only where it changed)
                m.training = was


_MODULE_OWN = frozenset(nn.Module().__dict__)  # nn.Module's bookkeeping (parameters, buffers, children, hooks)


def attributes_read(graph) -> set[str]:
    """The attributes (parameters, buffers, constants) a traced graph (or `TracedGraph`) reads through get_attr
    nodes, by qualified name ('c2.weight'): a module whose parameter is read outside its own call is not its
    own (pruning or removing it changes that read too)."""
    return {n.target for n in graph.nodes if n.op == "get_attr"}


def attributes_read_by(module: nn.Module) -> set[str]:
    """`attributes_read` of `module`'s fx graph (structure only, nothing run); empty where fx cannot trace it."""
    try:
        return attributes_read(Tracer().trace(module))
    except Exception:  # noqa: BLE001 - fx raises many kinds; an untraceable forward reads what the forward reads
        return set()


def _contents(obj) -> list:
    """A shallow copy of a list, dict or set: its items, or its elements."""
    return list(obj.items()) if isinstance(obj, dict) else list(obj)


def _identity(items: list) -> list:
    """What `untouched` compares: the elements by identity (a forward's tensors are not compared by value; a dict's
    items as (key, value) pairs)."""
    return [tuple(id(x) for x in i) if isinstance(i, tuple) else id(i) for i in items]


def _drop_hooks_but(m: nn.Module, post: tuple, pre: tuple) -> None:
    """Remove the forward (pre-)hooks of `m` whose handles are not in `post` / `pre` (and their entries in the
    registries that go with them)."""
    for registry, keep in ((m._forward_hooks, post), (m._forward_hooks_with_kwargs, post),
                           (m._forward_hooks_always_called, post), (m._forward_pre_hooks, pre),
                           (m._forward_pre_hooks_with_kwargs, pre)):
        for k in [k for k in registry if k not in keep]:
            del registry[k]


def _restore(obj, items: list) -> None:
    obj.clear()
    if isinstance(obj, dict):
        obj.update(items)
    elif isinstance(obj, list):
        obj.extend(items)
    else:
        obj.update(items)


def _writes_in_eval(m: nn.Module) -> bool:
    """torch.nn leaves that change their own weights in an eval forward: an Embedding with max_norm renormalises
    the rows it looks up in place."""
    return isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.max_norm is not None


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
