"""Channel dependency tracing: which parameters must be sliced together when a layer loses channels.

`trace_channels(model, example_input)` traces the model with torch.fx, propagates shapes, and follows
every tensor's *channel axis* through the graph. Every producer of channels (Conv out channels, Linear
out features, GRU/LSTM hidden units) opens a *channel space*; element-wise ops, BatchNorm, pooling,
permutes, flattens carry spaces along; a residual add / multiply of two tensors *unites* the spaces of its
operands (they must keep the same channels); a concatenation along the channel axis lays spaces side by
side (its consumer's input columns are the concatenation of the kept indices); a flatten that folds
spatial positions into the channel axis repeats each channel `rep` times. Consumers (Conv in channels,
Linear in features, GRU/LSTM input size, BatchNorm, depthwise Conv) record the list of segments they
read. A space touched by anything we do not understand (an unknown op, channel slicing, the network
output, a module called twice) is *fixed*: never pruned. That is the safe default: an unknown op
is never silently treated as element-wise (Torch-Pruning's fault).

The result, `ChannelGraph`, lists the prunable `Group`s (a union of spaces) with their members. It is
what torch-pruning's DependencyGraph gives, plus GRU/LSTM hidden units (weight_ih / weight_hh rows in
3 / 4 gate blocks, weight_hh columns, the next layer's input), and it works on Conv1d -> GRU networks
where torch-pruning 1.6 crashes while building groups.

The graph is `fastdeepiot.graph.trace`'s (the tracer layer extraction uses too), and what each call does to
the channel axis is the `channels` rule of its entry in the op vocabulary (`fastdeepiot.graph.ops`): one
function per rule below. An op the vocabulary does not know fixes every channel flowing into it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from fastdeepiot.errors import UserError
from fastdeepiot.graph import ops
from fastdeepiot.graph.trace import arg as _arg
from fastdeepiot.graph.trace import (ShapePropagationError, attributes_read, target_name, tensor_arg_nodes,
                                     tensor_shape, trace)


class TraceError(UserError):
    """The model cannot be traced (data-dependent control flow, ...)."""


@dataclass
class Seg:
    space: int
    n: int
    rep: int = 1  # each channel occupies `rep` consecutive positions (after a flatten)


@dataclass
class Label:
    axis: int  # channel axis of the tensor (non-negative)
    segs: list[Seg]
    ndim: int


FIXED = "fixed"  # a tensor whose channels are not prunable (network input, unknown ops)


@dataclass
class Member:
    module: str  # qualified module name
    kind: str  # conv_out, linear_out, rnn_hidden (producers); conv_in, linear_in, rnn_in, bn, dw (consumers)
    segs: list[Seg] = field(default_factory=list)  # consumers / passthrough: the input segments
    space: int | None = None  # producers: the space they open


@dataclass
class Group:
    name: str  # the first producer's module name (stable across replays)
    width: int
    producers: list[Member]
    spaces: list[int]

    def to_json(self) -> dict:
        return {"name": self.name, "width": self.width,
                "producers": [f"{m.module}:{m.kind}" for m in self.producers]}


class ChannelGraph:
    def __init__(self):
        self.parent: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.fixed: set[int] = set()
        self.members: list[Member] = []
        self.why_fixed: dict[int, str] = {}

    # ---- union-find over spaces
    def new_space(self, n: int, fixed: bool = False, why: str = "") -> int:
        s = len(self.parent)
        self.parent[s] = s
        self.size[s] = n
        if fixed:
            self.fix(s, why)
        return s

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            self.fix(ra, "joined with a different width")
            self.fix(rb, "joined with a different width")
        self.parent[rb] = ra
        if rb in self.fixed:
            self.fixed.add(ra)

    def fix(self, s: int, why: str = "") -> None:
        r = self.find(s)
        self.fixed.add(r)
        self.why_fixed.setdefault(r, why)

    def is_fixed(self, s: int) -> bool:
        return self.find(s) in self.fixed

    def fix_label(self, lab, why: str) -> None:
        for sub in _iter_labels(lab):
            for seg in sub.segs:
                self.fix(seg.space, why)

    # ---- results
    def groups(self) -> list[Group]:
        """Prunable groups (not fixed, with at least one producer), in execution order."""
        out: dict[int, Group] = {}
        for m in self.members:
            if m.space is None:
                continue
            r = self.find(m.space)
            if r in self.fixed:
                continue
            g = out.get(r)
            if g is None:
                out[r] = Group(m.module, self.size[r], [m], [])
            else:
                g.producers.append(m)
        for s in self.parent:
            r = self.find(s)
            if r in out:
                out[r].spaces.append(s)
        return list(out.values())

    def group_of(self, space: int) -> int:
        return self.find(space)


def _iter_labels(lab):
    if isinstance(lab, Label):
        yield lab
    elif isinstance(lab, (tuple, list)):
        for x in lab:
            yield from _iter_labels(x)


def trace_channels(model: nn.Module, example_input) -> ChannelGraph:
    """The channel dependency graph of `model` (see the module doc)."""
    inputs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    try:
        tg = trace(model, inputs, eval_mode=True)
    except ShapePropagationError as e:  # traced, but its graph failed on the example input
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise TraceError(f"the network's traced graph fails on the example input ({type(e.__cause__).__name__}: "
                         f"{first}); the network does not run on it, or its forward runs differently from one call "
                         "to the next") from None
    except Exception as e:  # noqa: BLE001 - fx raises many types on dynamic code
        raise TraceError(f"cannot trace the model with torch.fx ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''}); compression needs a traceable "
                         "forward (no data-dependent control flow)") from None
    cg = ChannelGraph()
    labels: dict = {}
    uses: dict[str, int] = {}
    for node in tg.nodes:
        if node.op == "call_module":
            uses[node.target] = uses.get(node.target, 0) + 1
    for node in tg.nodes:
        labels[node] = _propagate(cg, node, labels, tg.modules, uses)
    # a module whose parameter another op reads (F.conv2d(x, self.conv.weight)) keeps its widths: pruning it would
    # change that op's operand too
    read = attributes_read(tg)
    for m in cg.members:
        if any(t.startswith(m.module + ".") for t in read):
            for s in ([m.space] if m.space is not None else []) + [seg.space for seg in m.segs]:
                cg.fix(s, f"a parameter of {m.module} is read outside its call")
    return cg


_shape = tensor_shape


def _lab(labels, a):
    return labels.get(a) if isinstance(a, torch.fx.Node) else None


def _all_arg_labels(node, labels):
    return [labels.get(a) for a in tensor_arg_nodes(node)]


def _fix_all(cg, node, labels, why):
    for lab in _all_arg_labels(node, labels):
        cg.fix_label(lab, why)
    return FIXED if _shape(node) is not None else None


def _propagate(cg: ChannelGraph, node, labels, modules, uses):
    shp = _shape(node)
    if node.op in ("placeholder", "get_attr"):
        return FIXED
    if node.op == "output":
        for lab in _all_arg_labels(node, labels):
            cg.fix_label(lab, "network output")
        return None
    if node.op == "call_module":
        return _module(cg, node, labels, modules[node.target], node.target, uses[node.target] > 1)
    t = node.target
    entry = ops.node_op(node, modules)
    rule = entry.channels if entry is not None else None
    x = node.args[0] if node.args else None
    xl = _lab(labels, x)
    if rule == "getitem":
        idx = node.args[1]
        if isinstance(xl, (tuple, list)):
            return xl[idx] if isinstance(idx, int) and idx < len(xl) else None
        return _getitem(cg, xl, idx, shp)
    if shp is None:
        # not a single tensor (x.size(), tuples from split, ...): fix what flows in
        if rule == "query":
            return None
        return _fix_all(cg, node, labels, f"{t} (no tensor output)")
    if xl == FIXED or (xl is None and rule != "cat"):
        if rule == "binary":
            bl = _lab(labels, _arg(node, 1, "other"))
            if isinstance(bl, Label):
                cg.fix_label(bl, "combined with a fixed tensor")
            return FIXED
        if rule != "cat":
            return _fix_all(cg, node, labels, f"{t} on fixed input")
    name = target_name(node)
    if rule in _FUNCTION_RULES:
        try:
            return _FUNCTION_RULES[rule](cg, node, labels, x, xl, shp, name)
        except (TypeError, ValueError, IndexError, ZeroDivisionError):  # a dim the network computes (an fx Node)
            return _fix_all(cg, node, labels, f"{name} with arguments not known when tracing")
    if rule == "fix":
        return _fix_all(cg, node, labels, f"{name} (channels not followed through it)")
    return _fix_all(cg, node, labels, f"unknown op {name}")


# ---- functions and methods: one rule per `channels` name of the vocabulary (graph.ops)


def _rule_pass(cg, node, labels, x, xl, shp, name):
    if any(a is not x for a in tensor_arg_nodes(node)):  # a clamp to tensor bounds, a tensor exponent
        return _fix_all(cg, node, labels, f"{name} with another tensor operand")
    return xl


def _rule_pool(cg, node, labels, x, xl, shp, name):
    if xl.axis != 1:
        return _fix_all(cg, node, labels, f"{name} over the channel axis")
    return xl


def _rule_binary(cg, node, labels, x, xl, shp, name):
    a, b = x, _arg(node, 1, "other")
    al, bl = _lab(labels, a), _lab(labels, b)
    if not isinstance(b, torch.fx.Node):
        return al  # with a scalar: element-wise
    if bl == FIXED:
        cg.fix_label(al, "combined with a fixed tensor")
        return FIXED
    sa, sb = _shape(a), _shape(b)
    if sa != sb or al.axis != bl.axis or len(al.segs) != len(bl.segs) or any(
            p.n != q.n or p.rep != q.rep for p, q in zip(al.segs, bl.segs)):
        return _fix_all(cg, node, labels, f"{name} with broadcasting or different channel layouts")
    for p, q in zip(al.segs, bl.segs):
        cg.union(p.space, q.space)
    return al


def _rule_cat(cg, node, labels, x, xl, shp, name):
    tensors = _arg(node, 0, "tensors")
    dim = _arg(node, 1, "dim", 0)
    labs = [_lab(labels, a) for a in tensors]
    nd = len(shp)
    dim = dim % nd
    real = [lb for lb in labs if isinstance(lb, Label)]
    if real and all(lb.axis == dim for lb in real):
        segs = []
        for a, lb in zip(tensors, labs):
            if isinstance(lb, Label):
                segs.extend(lb.segs)
            else:
                segs.append(Seg(cg.new_space(_shape(a)[dim], True, "fixed part of a concat"), _shape(a)[dim]))
        return Label(dim, segs, nd)
    if real and all(lb.axis == real[0].axis for lb in real) and len(real) == len(labs):
        base = real[0]
        for lb in real[1:]:
            if len(lb.segs) != len(base.segs):
                return _fix_all(cg, node, labels, "cat of different channel layouts")
            for p, q in zip(base.segs, lb.segs):
                cg.union(p.space, q.space)
        return base
    return _fix_all(cg, node, labels, "cat of mixed tensors")


def _rule_permute(cg, node, labels, x, xl, shp, name):
    dims = node.args[1:] if node.op == "call_method" else (_arg(node, 1, "dims"),)
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    dims = [d % xl.ndim for d in dims]
    return Label(dims.index(xl.axis), xl.segs, xl.ndim)


def _rule_transpose(cg, node, labels, x, xl, shp, name):
    d0, d1 = (_arg(node, 1, "dim0") % xl.ndim, _arg(node, 2, "dim1") % xl.ndim)
    ax = d1 if xl.axis == d0 else d0 if xl.axis == d1 else xl.axis
    return Label(ax, xl.segs, xl.ndim)


def _rule_flatten(cg, node, labels, x, xl, shp, name):
    s = _arg(node, 1, "start_dim", 0) % xl.ndim
    e = _arg(node, 2, "end_dim", -1) % xl.ndim
    return _flatten(cg, xl, s, e, _shape(x), node, labels)


def _rule_view(cg, node, labels, x, xl, shp, name):
    sx = _shape(x)
    if shp == sx:
        return xl
    ax = xl.axis
    if shp == sx[:ax] + (math.prod(sx[ax:]),):
        return _flatten(cg, xl, ax, xl.ndim - 1, sx, node, labels)
    return _fix_all(cg, node, labels, f"{node.target} to {shp}")


def _rule_reduce(cg, node, labels, x, xl, shp, name):
    t = node.target
    dims = _arg(node, 1, "dim", None)
    keep = node.kwargs.get("keepdim", _arg(node, 2, "keepdim", False) if node.op == "call_method" else False)
    if dims is None:
        return _fix_all(cg, node, labels, f"{t} over all axes")
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = [d % xl.ndim for d in dims]
    if xl.axis in dims:
        return _fix_all(cg, node, labels, f"{t} over the channel axis")
    if keep:
        return xl
    return Label(xl.axis - sum(d < xl.axis for d in dims), xl.segs, xl.ndim - len(dims))


def _rule_unsqueeze(cg, node, labels, x, xl, shp, name):
    d = _arg(node, 1, "dim") % (xl.ndim + 1)
    return Label(xl.axis + (d <= xl.axis), xl.segs, xl.ndim + 1)


_FUNCTION_RULES = {"pass": _rule_pass, "pool": _rule_pool, "binary": _rule_binary, "cat": _rule_cat,
                   "permute": _rule_permute, "transpose": _rule_transpose, "flatten": _rule_flatten,
                   "view": _rule_view, "reduce": _rule_reduce, "unsqueeze": _rule_unsqueeze}


def _flatten(cg, xl: Label, s: int, e: int, sx, node, labels):
    nd = xl.ndim - (e - s)
    if xl.axis < s:
        return Label(xl.axis, xl.segs, nd)
    if xl.axis > e:
        return Label(xl.axis - (e - s), xl.segs, nd)
    if math.prod(sx[s:xl.axis]) != 1:
        return _fix_all(cg, node, labels, "flatten with the channel axis not first")
    rep = math.prod(sx[xl.axis + 1:e + 1])
    return Label(s, [Seg(g.space, g.n, g.rep * rep) for g in xl.segs], nd)


def _getitem(cg, xl, idx, shp):
    if xl is None or xl == FIXED:
        return FIXED if shp is not None else None
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(i is Ellipsis or i is None or isinstance(i, torch.fx.Node) for i in idx):
        cg.fix_label(xl, "advanced indexing")
        return FIXED
    ax, removed = xl.axis, 0
    for d, i in enumerate(idx):
        if d == xl.axis:
            if not (isinstance(i, slice) and i == slice(None)):
                cg.fix_label(xl, "indexing the channel axis")
                return FIXED
        elif d < xl.axis and isinstance(i, int):
            removed += 1
    n_int = sum(isinstance(i, int) for i in idx)
    return Label(ax - removed, xl.segs, xl.ndim - n_int)


# ---- modules: one rule per `channels` name of the vocabulary (graph.ops)


def _module(cg: ChannelGraph, node, labels, m: nn.Module, name: str, shared: bool):
    shp = _shape(node)
    ins = [_lab(labels, a) for a in node.args]
    xl = ins[0] if ins else None
    entry = ops.module_op(m)
    rule = entry.channels if entry is not None else None
    if shared:
        for lab in ins:
            cg.fix_label(lab, f"{name} is called more than once")
        if rule == "rnn":
            return None
        if rule in ("conv", "linear"):
            return FIXED
        return FIXED if shp is not None else None
    if rule in _MODULE_RULES:
        return _MODULE_RULES[rule](cg, node, labels, m, name, shp, ins, xl)
    why = "channels are not followed through it" if rule == "fix" else "is not understood"
    for lab in ins:
        cg.fix_label(lab, f"{type(m).__name__} ({name}) {why}")
    return FIXED if shp is not None else None


def _segs_in(cg, xl, name, axis_needed: int | None):
    if isinstance(xl, Label):
        if axis_needed is not None and xl.axis != axis_needed:
            cg.fix_label(xl, f"{name} reads another axis")
            return None
        return xl.segs
    return None  # fixed input: keep every input channel


def _module_conv(cg, node, labels, m, name, shp, ins, xl):
    dw = m.groups > 1 and m.groups == m.in_channels == m.out_channels
    if dw:
        if isinstance(xl, Label) and xl.axis == 1 and all(s.rep == 1 for s in xl.segs):
            cg.members.append(Member(name, "dw", list(xl.segs)))
            return xl
        cg.fix_label(xl, "depthwise conv on fixed input")
        return FIXED
    if m.groups > 1:
        cg.fix_label(xl, "grouped conv")
        return Label(1, [Seg(cg.new_space(m.out_channels, True, "grouped conv"), m.out_channels)], len(shp))
    segs = _segs_in(cg, xl, name, 1)
    if segs is not None:
        cg.members.append(Member(name, "conv_in", list(segs)))
    s = cg.new_space(m.out_channels)
    cg.members.append(Member(name, "conv_out", space=s))
    return Label(1, [Seg(s, m.out_channels)], len(shp))


def _module_linear(cg, node, labels, m, name, shp, ins, xl):
    nd = len(shp)
    segs = _segs_in(cg, xl, name, nd - 1)
    if segs is not None:
        cg.members.append(Member(name, "linear_in", list(segs)))
    s = cg.new_space(m.out_features)
    cg.members.append(Member(name, "linear_out", space=s))
    return Label(nd - 1, [Seg(s, m.out_features)], nd)


def _module_bn(cg, node, labels, m, name, shp, ins, xl):
    if isinstance(xl, Label) and xl.axis == 1 and all(s.rep == 1 for s in xl.segs):
        cg.members.append(Member(name, "bn", list(xl.segs)))
        return xl
    cg.fix_label(xl, "batchnorm on an unexpected axis")
    return FIXED


def _module_rnn(cg, node, labels, m, name, shp, ins, xl):
    gru = isinstance(m, nn.GRU)  # GRU returns (out, h); LSTM (out, (h, c))
    if getattr(m, "proj_size", 0) or len(ins) > 1:
        for lab in ins:
            cg.fix_label(lab, "RNN with projection or an initial state")
        return (FIXED, FIXED) if gru else (FIXED, (FIXED, FIXED))
    xs = _shape(node.args[0])
    segs = _segs_in(cg, xl, name, len(xs) - 1)
    if segs is not None:
        cg.members.append(Member(name, "rnn_in", list(segs)))
    h = cg.new_space(m.hidden_size)
    cg.members.append(Member(name, "rnn_hidden", space=h))
    dirs = 2 if m.bidirectional else 1
    out = Label(len(xs) - 1, [Seg(h, m.hidden_size)] * dirs, len(xs))
    hn = Label(len(xs) - 1 if len(xs) == 3 else 1, [Seg(h, m.hidden_size)], 3 if len(xs) == 3 else 2)
    if dirs == 2:
        cg.fix(h, "the final state of a bidirectional RNN")  # (2L, B, H) states: keep it simple
    return (out, hn) if gru else (out, (hn, hn))


def _module_flatten(cg, node, labels, m, name, shp, ins, xl):
    if not isinstance(xl, Label):
        return FIXED
    return _flatten(cg, xl, m.start_dim % xl.ndim, m.end_dim % xl.ndim, _shape(node.args[0]), node, labels)


def _module_pass(cg, node, labels, m, name, shp, ins, xl):
    return xl if isinstance(xl, Label) else FIXED


def _module_pool(cg, node, labels, m, name, shp, ins, xl):
    if not isinstance(xl, Label):
        return FIXED
    if xl.axis != 1:
        cg.fix_label(xl, f"{name} pools the channel axis")
        return FIXED
    return xl


_MODULE_RULES = {"conv": _module_conv, "linear": _module_linear, "bn": _module_bn, "rnn": _module_rnn,
                 "flatten": _module_flatten, "pass": _module_pass, "pool": _module_pool}
