"""The data classes of an extraction: `LayerCall`, `ExtractResult` and the call kinds.

They live apart from `extract` (which builds them) and `fusion` (which annotates them), so that both
import them from here and neither imports the other; and what the free ops of an extraction copy
(`copied_elements`), which the time model's composition and the fake backend both price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fastdeepiot.families import LayerConfig

LAYER, FREE, UNMODELLED = "layer", "free", "unmodelled"
INPUT = "input"  # producer name of the network's inputs
NO_BIAS = "without a bias"  # in the note of a linear call that adds none (ONNX: MatMul, not Gemm; graph.fusion R4)


@dataclass
class LayerCall:
    name: str  # module qualified name (suffix '#k' for the k-th repeated call) or fx node name
    family: str | None
    config: LayerConfig | None
    op: str  # 'Conv2d', 'add', 'cat', 'flatten', 'relu', ...
    kind: str  # 'layer' | 'free' | 'unmodelled'
    fused_into: str | None = None  # set by fusion_for_backend
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    output_shape: tuple[int, ...] | None = None
    approx: bool = False  # the family configuration only approximates the op (see extract's doc)
    note: str | None = None
    # data flow: names of the calls producing this call's tensor inputs ('input' = network input);
    # in hook mode (traced False) simply the previous call
    inputs: list[str] = field(default_factory=list)
    layout: str | None = None  # set by fusion_for_backend: 'nchwc' where ORT keeps the output blocked
    scalar: float | None = None  # an element-wise op's number operand, where written in the code (x / 2.0)

    def copy(self, **changes) -> "LayerCall":
        """A shallow copy with `changes` (dataclasses.replace without its __init__: a network's worth of
        calls is copied on every extraction, and replace cost 5 us a call)."""
        new = object.__new__(LayerCall)
        new.__dict__.update(self.__dict__, **changes)
        return new

    def to_json(self) -> dict:
        return {
            "name": self.name, "family": self.family,
            "config": self.config.to_json() if self.config else None, "op": self.op,
            "kind": self.kind, "fused_into": self.fused_into, "layout": self.layout,
            "input_shapes": [list(s) for s in self.input_shapes],
            "output_shape": list(self.output_shape) if self.output_shape is not None else None,
            "approx": self.approx, "note": self.note, "inputs": list(self.inputs), "scalar": self.scalar,
        }


class ExtractResult(list):
    """A list of LayerCall with `traced` (fx succeeded), `untraced_reason` (why fx failed, when it did),
    `warnings`, and `module_calls`: how many container modules (modules with children, the network itself
    included) one forward calls; in eager PyTorch each such call costs Python time that no single-layer
    measurement contains. `outputs`: the names of the calls whose tensors the network returns (None where
    the extraction cannot tell: the hook fallback); a backend cannot fuse away a producer whose own output
    leaves the network."""

    def __init__(self, calls=(), traced: bool = True, warnings: list[str] | None = None,
                 module_calls: int = 0, untraced_reason: str | None = None, outputs: frozenset | None = None):
        super().__init__(calls)
        self.traced = traced
        self.untraced_reason = untraced_reason
        self.warnings = list(warnings or [])
        self.module_calls = module_calls
        self.outputs = outputs

    def like(self, calls) -> "ExtractResult":
        """`calls` with this extraction's other attributes."""
        return ExtractResult(calls, self.traced, self.warnings, self.module_calls, self.untraced_reason, self.outputs)

    @property
    def calls(self) -> list[LayerCall]:
        return list(self)

    def layers(self) -> list[LayerCall]:
        return [c for c in self if c.kind == LAYER]

    def unmodelled(self) -> list[LayerCall]:
        return [c for c in self if c.kind == UNMODELLED]


# free ops that move a tensor's axes: a view in eager PyTorch that something downstream materialises (a reshape,
# .contiguous(), the next kernel), a copy (Transpose) in ONNX Runtime
AXIS_MOVES = frozenset({"permute", "transpose", "t"})


def copied_elements(calls) -> float:
    """M elements the free ops of an extraction write: every axis move (AXIS_MOVES), and every explicit copy
    (a pad, a pixel or channel shuffle, .contiguous(): note "copies"), except a .contiguous() of an axis move's
    output: that is the one copy of it, already counted (eager PyTorch makes it there; ONNX Runtime's Transpose
    made it and the export drops the .contiguous())."""
    moved = {c.name for c in calls if c.kind == FREE and c.op in AXIS_MOVES}
    total = 0
    for c in calls:
        if c.kind != FREE or c.output_shape is None:
            continue
        if c.name in moved or (c.note == "copies" and not (c.op == "contiguous" and any(i in moved for i in c.inputs))):
            total += math.prod(c.output_shape)
    return total / 1e6
