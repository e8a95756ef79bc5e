"""Which ops a backend fuses into their producer: `fusion_for_backend(calls, backend)`.

Returns a copy of the calls with `fused_into` set to the name of the layer call an op is fused into
(always the root of a fusion chain: Conv -> BN -> Relu gives BN and Relu `fused_into='conv'`).

torch-* (eager): nothing is fused.

onnxruntime-* (ORT_ENABLE_ALL, the SessionOptions default; the network exported with
torch.onnx.export(dynamo=False) in eval mode). Rules determined empirically on onnxruntime 1.32 /
x86-64 by dumping `SessionOptions.optimized_model_filepath` (scripts and evidence: docs/ort_fusion.md;
check on a new machine with `python -m fastdeepiot.graph.ort_check`):

  R1  BatchNorm directly after Conv1d/Conv2d whose output has no other consumer: folded into the conv
      (torch.onnx.export already folds it; ORT's ConvBNFusion does it otherwise).
  R2  Activation directly after a conv (or conv+BN) with no other consumer: relu, relu6 (Clip),
      leaky_relu, sigmoid, tanh -> fused (FusedConv / NCHWc Conv `activation`). hardswish only into a
      2-D conv on the NCHWc path (not reading the network input); gelu never (ORT makes one Gelu op).
  R3  Add directly after a Conv2d (or Conv2d+BN) whose output has no other consumer, when the other
      operand is not the network input: fused as the conv's Sum/Z input (NCHWc Conv or FusedConv);
      an activation of R2's list right after that Add is fused too. Never for Conv1d. When both
      operands qualify, the later-computed conv takes it.
  R4  Linear on a 2-D input followed by relu/leaky_relu/sigmoid/tanh: FusedGemm (not relu6/hardswish/
      gelu, not BatchNorm).
  R5  A standalone BatchNorm2d on the NCHWc path (not reading the network input) becomes a per-channel
      NCHWc Conv, and a following relu/relu6/leaky_relu/sigmoid/tanh is fused into it.
  Not fused: pools, concat, adds not after a conv, GRU/LSTM, BatchNorm1d after Linear, lone activations.
  `level='extended'` (ORT_ENABLE_EXTENDED, no NCHWc) keeps R1, R2 (without hardswish), R4, drops R3, R5.
"""

from __future__ import annotations

from dataclasses import replace

from fastdeepiot.errors import UnknownNameError
from fastdeepiot.graph.extract import INPUT, LAYER, ExtractResult, LayerCall

_CONV = ("conv1d", "conv2d")
_CONV_ACTS = {"relu", "relu6", "leaky_relu", "sigmoid", "tanh"}
_GEMM_ACTS = {"relu", "leaky_relu", "sigmoid", "tanh"}


def _kind(c: LayerCall) -> str | None:
    return c.config.params.get("kind") if c.config is not None else None


def _ort_rules(calls: list[LayerCall], nchwc: bool) -> None:
    by_name = {c.name: c for c in calls}
    users: dict[str, list[str]] = {}
    for c in calls:
        for i in c.inputs:
            users.setdefault(i, []).append(c.name)
    state: dict[str, set] = {}  # root conv name -> {'bn', 'act', 'sum'}

    def sole_user(p: LayerCall, c: LayerCall) -> bool:
        return users.get(p.name, []) == [c.name]

    def root(c: LayerCall) -> LayerCall:
        while c.fused_into is not None:
            c = by_name[c.fused_into]
        return c

    def on_nchwc(conv: LayerCall) -> bool:
        return nchwc and conv.family == "conv2d" and INPUT not in conv.inputs

    for c in calls:
        if c.kind != LAYER or len(c.inputs) == 0:
            continue
        fam = c.family
        if fam == "batchnorm" and len(c.inputs) == 1 and c.inputs[0] in by_name:
            p = by_name[c.inputs[0]]
            if p.family in _CONV and p.fused_into is None and sole_user(p, c) and not state.get(p.name):
                c.fused_into = p.name
                state.setdefault(p.name, set()).add("bn")
        elif fam == "activation" and len(c.inputs) == 1 and c.inputs[0] in by_name:
            p = by_name[c.inputs[0]]
            if not sole_user(p, c) or p.kind != LAYER:
                continue
            r = root(p)
            k = _kind(c)
            st = state.setdefault(r.name, set())
            if r.family in _CONV and "act" not in st:
                ok = k in _CONV_ACTS or (k == "hardswish" and on_nchwc(r) and "sum" not in st
                                         and r.config.params["groups"] in (1, r.config.params["in_channels"]))
                if ok:
                    c.fused_into = r.name
                    st.add("act")
            elif r is p and fam and p.family == "linear" and k in _GEMM_ACTS and "act" not in st \
                    and len(p.input_shapes[0] if p.input_shapes else ()) == 2:
                c.fused_into = p.name
                st.add("act")
            elif r is p and p.family == "batchnorm" and nchwc and p.config.params["dims"] == 2 \
                    and INPUT not in p.inputs and k in _CONV_ACTS and "act" not in st \
                    and p.input_shapes and len(p.input_shapes[0]) == 4:
                c.fused_into = p.name
                st.add("act")
        elif fam == "add" and nchwc and len(c.inputs) == 2 and INPUT not in c.inputs:
            cands = []
            for i in c.inputs:
                p = by_name.get(i)
                if p is None or not sole_user(p, c):
                    continue
                r = root(p)
                st = state.get(r.name, set())
                if r.family == "conv2d" and not ({"act", "sum"} & st):
                    cands.append(r)
            if cands:
                r = max(cands, key=calls.index)
                c.fused_into = r.name
                state.setdefault(r.name, set()).add("sum")


def fusion_for_backend(calls: list[LayerCall], backend_name: str, *, level: str = "all") -> list[LayerCall]:
    """Copy of `calls` with `fused_into` set per `backend_name`'s fusion rules (see module doc).

    backend names starting with 'torch' fuse nothing; 'onnxruntime' / 'ort' apply R1-R5
    (`level` 'all' = ORT_ENABLE_ALL, 'extended', or 'basic' = only R1). Unknown names raise.
    """
    out = [replace(c, fused_into=None, inputs=list(c.inputs)) for c in calls]
    name = backend_name.lower()
    if name.startswith("torch"):
        pass
    elif name.startswith("onnxruntime") or name.startswith("ort"):
        if level not in ("all", "extended", "basic"):
            raise ValueError(f"unknown ORT optimisation level {level!r}")
        _ort_rules(out, nchwc=(level == "all"))
        if level == "basic":  # only Conv+BN folding survives
            for c in out:
                if c.fused_into is not None and c.family != "batchnorm":
                    c.fused_into = None
    else:
        raise UnknownNameError(f"no fusion rules for backend {backend_name!r}; known: torch-*, onnxruntime-*")
    if isinstance(calls, ExtractResult):
        return ExtractResult(out, calls.traced, calls.warnings)
    return out
