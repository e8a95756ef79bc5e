"""Remove: replace a shape-preserving block (a residual branch, a conv-bn-relu whose output has its
input's shape) by `nn.Identity` (plan op "remove"), priced on a modified copy.

    {"op": "remove", "module": "merge.1"}
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from fastdeepiot.compression.moves.base import Candidate, Context
from fastdeepiot.compression.moves.sequence import SequencePool
from fastdeepiot.compression.surgery import PlanError, replace_module
from fastdeepiot.graph.trace import attributes_read_by


def remove_module(model: nn.Module, name: str) -> None:
    """Replace a shape-preserving module (a block, a conv-bn-relu) by nn.Identity.

    nn.Identity hands on its input itself where the block made a new tensor, so an in-place module after it
    would write into what came before it: two ReLU(inplace=True) around a removed conv (VGG-style
    Sequential) act on one tensor, which autograd refuses when the candidate is fine-tuned. So the network's
    in-place modules (`inplace=True`: ReLU, ReLU6, Hardswish, Dropout, ...) are made out-of-place: the same
    outputs, the time model prices them alike. In-place calls written in a forward (x.relu_()) are not
    reached."""
    try:
        model.get_submodule(name)
    except AttributeError:
        raise PlanError(f"no module {name!r} to remove") from None
    replace_module(model, name, nn.Identity())
    for m in model.modules():
        if getattr(m, "inplace", None) is True:
            m.inplace = False


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """`a` and `b` lie in memory alike (equal strides over every axis longer than 1)."""
    return all(sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride()) if n > 1)


def removable_modules(model: nn.Module, example_input, protect: set[str] = frozenset()) -> list[str]:
    """Submodules with parameters whose output has the input's shape and memory layout (one tensor in, one
    out), outermost first; removing one (-> Identity) keeps every shape and layout in the network (a conv fed a
    transposed tensor makes a contiguous one, which a later .view() may need). A module whose parameters
    another op reads (through a torch.fx get_attr) is not removable."""
    x = example_input if isinstance(example_input, torch.Tensor) else example_input[0]
    shapes: dict[str, bool] = {}
    hooks = []
    for name, m in model.named_modules():
        if not name or isinstance(m, (nn.GRU, nn.LSTM, SequencePool)) or not any(
                isinstance(c, (nn.Conv1d, nn.Conv2d, nn.Linear)) for c in m.modules()):
            continue  # only blocks that compute (a lone BatchNorm is folded, not removed)

        def hook(mod, inp, out, name=name):
            ok = (len(inp) == 1 and isinstance(inp[0], torch.Tensor) and isinstance(out, torch.Tensor)
                  and tuple(inp[0].shape) == tuple(out.shape) and _same_layout(inp[0], out))
            shapes[name] = shapes.get(name, True) and ok

        hooks.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    read = attributes_read_by(model)  # a block whose parameter another op reads cannot go (F.conv2d(x, blk.weight))
    names = [n for n, ok in shapes.items() if ok and n not in protect and not any(t.startswith(n + ".") for t in read)]
    return [n for n in names if not any(n.startswith(o + ".") for o in names)]


class Remove:
    name = "remove"
    ops = ("remove",)
    bound_stage = 0  # before width: at width 1 every conv would look shape-preserving
    title = "block removal"

    def propose(self, model: nn.Module, ctx: Context) -> list[Candidate]:
        out = []
        for name in removable_modules(model, ctx.x):
            m = copy.deepcopy(model)
            remove_module(m, name)
            s = ctx.cur_cost - ctx.pricer.price(m, ctx.x)
            if s > ctx.tol:
                out.append(Candidate(self.name, {"op": "remove", "module": name}, f"remove {name}", float(s)))
        return out

    def apply(self, model: nn.Module, step: dict, x: torch.Tensor) -> nn.Module:
        remove_module(model, step["module"])
        return model

    def describe(self, step: dict) -> str:
        return f"remove {step['module']}"

    def smallest(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Every removable block removed."""
        for name in removable_modules(model, ctx.x):
            remove_module(model, name)
        return model

    def finish(self, model: nn.Module, x: torch.Tensor) -> list[dict]:
        return []
