"""Which ops a backend fuses into their producer: `fusion_for_backend(calls, backend)`.

Returns a copy of the calls with `fused_into` set to the name of the layer call an op is fused into
(always the root of a fusion chain: Conv -> BN -> Relu gives BN and Relu `fused_into='conv'`), and
`layout='nchwc'` on the calls whose output ORT keeps in its blocked NCHWc layout (R5 and the NCHWc path
below: a run of such calls pays ReorderInput/ReorderOutput only where it starts and ends).

torch-* (eager): nothing is fused.

onnxruntime-* (ORT_ENABLE_ALL, the SessionOptions default; the network exported with
torch.onnx.export(dynamo=False) in eval mode). Rules determined empirically on onnxruntime 1.32 /
x86-64 by dumping `SessionOptions.optimized_model_filepath` (scripts and evidence: docs/ort_fusion.md;
check on a new machine with `python -m fastdeepiot.graph.ort_check`):

  ("No other consumer" counts the network's own outputs as consumers: a conv whose output the network also
  returns keeps its activation separate, as ORT does; probed 2026-12-02, `Conv, ReorderOutput, Relu`.)
  R1  BatchNorm directly after Conv1d/Conv2d/ConvTranspose1d/ConvTranspose2d whose output has no other
      consumer: folded into the conv (torch.onnx.export already folds it; ORT's ConvBNFusion does it otherwise).
      Nothing else fuses into a ConvTranspose (probed 2026-12-02, 1-D and 2-D: ConvTranspose,
      BatchNormalization, Relu -> ConvTranspose, Relu), and it never runs on the NCHWc path.
  R2  Activation directly after a conv (or conv+BN) with no other consumer: relu, relu6 (Clip),
      leaky_relu, sigmoid, tanh -> fused (FusedConv / NCHWc Conv `activation`). hardswish only into a
      2-D conv on the NCHWc path (not reading the network input); gelu never (ORT makes one Gelu op).
  NCHWc path: a groups-1 Conv2d whose input has fewer channels than one block (read as NCHW) or a
      multiple of 4 (ReorderInput's alignment; 17, 18, 30, 50 input channels run as a plain Conv), and
      depthwise Conv2d with channels a multiple of 4 (padded to whole blocks: 36 channels run as 48).
      A conv reading fewer channels than a block reads them as NCHW: after an NCHWc producer ORT
      inserts a ReorderOutput (so does any non-NCHWc consumer of an NCHWc output; the former is not
      priced apart, the composition's per-NCHWc-call terms absorb it). Pools (max, average, global)
      stay on the NCHWc path only with a multiple of the block in channels (ORT's
      NchwcTransformerImpl::TransformPool; 8, 12, 20, 24, 36 channels are reordered back to NCHW before a
      pool with a 16-channel block); reductions priced as pools (`x.mean((2, 3))`, ReduceMean) never;
      R5's BatchNorm with any.
  R3  Add directly after a Conv2d (or Conv2d+BN) whose output has no other consumer, when the other
      operand is not the network input: fused as the conv's Sum/Z input (NCHWc Conv or FusedConv);
      an activation of R2's list right after that Add is fused too. Never for Conv1d. When both
      operands qualify, the later-computed conv takes it. After an NCHWc conv's Sum only relu, sigmoid
      and tanh are fused (not relu6, leaky_relu, hardswish); after a FusedConv's Z input, R2's list.
  R4  Linear with a bias on a 2-D input followed by relu/leaky_relu/sigmoid/tanh/elu/selu/softplus: FusedGemm
      (not relu6/hardswish/gelu/prelu/mish, not BatchNorm; without a bias ONNX has a MatMul, which fuses
      nothing).
  R5  A standalone BatchNorm2d on the NCHWc path (not reading the network input) becomes a per-channel
      NCHWc Conv, and a following relu/relu6/leaky_relu/sigmoid/tanh is fused into it.
  R6  (issue 17) An add of two (batch, seq, features) tensors whose only consumer is a LayerNorm over
      the features: SkipLayerNormalization, the add fused into the LayerNorm (`fused_into` names the
      LayerNorm, a consumer; rank-2 adds and adds with another consumer, as in pre-norm blocks, stay).
  R7  (issue 17) Nearest Upsample of an NCHWc tensor runs as an NCHWc Upsample (any channel count);
      reading an NCHW tensor, or (bi)linear, it is a plain Resize.
  R8-R10 (session 20) A GELU (erf), an RMSNorm or a LayerNorm written out element by element in the forms
      ORT's GeluFusion, SimplifiedLayerNormFusion and LayerNormFusion match become one call, priced as
      nn.GELU / nn.LayerNorm (`_ort_patterns`; the other calls of the chain leave the result).
  hardsigmoid (issue 17) fuses like relu in R2-R5; silu never (one QuickGelu op), gelu never. A clamp
  (hardtanh, torch.clamp: ONNX Clip) fuses as relu6 does; an element-wise op priced as another kind's pass
  (`ops.STANDIN_OPS`: abs, exp, rsqrt, ...) never fuses.
  Not fused: pools, concat, adds not after a conv, GRU/LSTM, BatchNorm1d after Linear, lone activations,
  mul (squeeze-excitation's scale), GroupNorm (InstanceNormalization + Mul + Add) and the activation
  after it, attention (MatMul/Softmax), mha / transformer_encoder (measured whole).
  `level='extended'` (ORT_ENABLE_EXTENDED, no NCHWc) keeps R1, R2 (without hardswish), R4, R6, R8-R10,
  drops R3, R5, R7; `level='basic'` keeps R1 alone.
"""

from __future__ import annotations

import math

from fastdeepiot.errors import UnknownNameError
from fastdeepiot.families import LayerConfig
from fastdeepiot.graph.calls import INPUT, LAYER, NO_BIAS, ExtractResult, LayerCall
from fastdeepiot.graph.ops import NOOP_OPS, REDUCTION_OPS, STANDIN_OPS

_CONV = ("conv1d", "conv2d")
_CONV_TRANSPOSE = ("conv_transpose1d", "conv_transpose2d")  # R1 only: BatchNorm folds into them, nothing else
# hardsigmoid (issue 17) fuses wherever relu does: FusedConv / NCHWc Conv `activation=HardSigmoid`,
# FusedGemm, after an NCHWc Sum, into R5's per-channel conv. silu never does (ORT makes it one
# QuickGelu op), nor gelu (one Gelu op).
_CONV_ACTS = {"relu", "relu6", "leaky_relu", "sigmoid", "tanh", "hardsigmoid"}
# FusedGemm also takes elu, selu and softplus (probed 2026-12-02: Gemm, Elu -> FusedGemm); no conv fuses them,
# nor prelu or mish (exported as Softplus, Tanh, Mul) anywhere
_GEMM_ACTS = {"relu", "leaky_relu", "sigmoid", "tanh", "hardsigmoid", "elu", "selu", "softplus"}
_SUM_ACTS = {"relu", "sigmoid", "tanh", "hardsigmoid"}  # the only ones fused after an NCHWc conv's Sum input
_NCHWC_ALIGN = 4  # channel alignment ORT's NCHWc path needs (ReorderInput; depthwise convs too)


def _kind(c: LayerCall) -> str | None:
    return c.config.params.get("kind") if c.config is not None else None


def nchwc_block_size() -> int:
    """MLAS NCHWc block: 16 channels with AVX-512, else 8."""
    try:
        with open("/proc/cpuinfo") as f:
            return 16 if "avx512f" in f.read() else 8
    except OSError:
        return 8


_NETWORK_OUTPUT = "<network output>"  # the user `_ort_rules` gives a call whose tensor the network returns


def _dataflow(calls: list[LayerCall], outputs=()):
    """(by_name, src, ins, users) of `calls` as the exported graph has them: no-op calls (Identity, eval Dropout:
    the vocabulary's `vanishes`) vanish, so `src` sees through them; `users` of a call the network returns include
    `_NETWORK_OUTPUT`."""
    by_name = {c.name: c for c in calls}
    alias: dict[str, str] = {}
    for c in calls:
        if c.kind != LAYER and c.op in NOOP_OPS and len(c.inputs) == 1:
            alias[c.name] = alias.get(c.inputs[0], c.inputs[0])

    def src(name: str) -> str:
        return alias.get(name, name)

    ins = {c.name: [src(i) for i in c.inputs] for c in calls}
    users: dict[str, list[str]] = {}
    for c in calls:
        if c.name in alias:
            continue
        for i in ins[c.name]:
            users.setdefault(i, []).append(c.name)
    for o in outputs:  # a tensor the network returns has a user outside it: its producer fuses nothing away
        users.setdefault(src(o), []).append(_NETWORK_OUTPUT)
    return by_name, src, ins, users


def _ort_rules(calls: list[LayerCall], nchwc: bool, block: int, outputs=()) -> None:
    by_name, src, ins, users = _dataflow(calls, outputs)
    position = {c.name: i for i, c in enumerate(calls)}
    state: dict[str, set] = {}  # root name -> {'bn', 'act', 'sum'}
    nchwc_out: set[str] = set()  # calls whose output stays in ORT's blocked NCHWc layout

    def sole_user(p: LayerCall, c: LayerCall) -> bool:
        return users.get(p.name, []) == [c.name]

    def root(c: LayerCall) -> LayerCall:
        while c.fused_into is not None:
            c = by_name[c.fused_into]
        return c

    def nchwc_conv(conv: LayerCall) -> bool:
        if not nchwc or conv.family != "conv2d":
            return False
        p = conv.config.params
        if p["groups"] == 1:  # NCHW input below one block; else aligned for ReorderInput
            return p["in_channels"] < block or p["in_channels"] % _NCHWC_ALIGN == 0
        # depthwise: padded to whole blocks, but the channels must be aligned
        return p["groups"] == p["in_channels"] == p["out_channels"] and p["out_channels"] % _NCHWC_ALIGN == 0

    def whole_blocks(c: LayerCall) -> bool:  # an NCHWc pool needs a multiple of the block in channels
        return c.config.params.get("channels", 0) % block == 0

    def is_nchwc(name: str) -> bool:
        return name in nchwc_out

    for c in calls:
        if c.kind != LAYER or not c.inputs:
            continue
        fam = c.family
        cin = ins[c.name]
        if fam == "conv2d" and nchwc_conv(c):
            nchwc_out.add(c.name)
        elif fam == "pool2d" and c.op not in REDUCTION_OPS and is_nchwc(cin[0]) and whole_blocks(c):
            nchwc_out.add(c.name)
        elif fam == "batchnorm" and len(cin) == 1 and cin[0] in by_name:
            p = by_name[cin[0]]
            r = root(p)
            if r.family in _CONV + _CONV_TRANSPOSE and p.kind == LAYER and sole_user(p, c) and not (
                    {"act", "sum"} & state.get(r.name, set())):
                c.fused_into = r.name  # folded (also a second BN right after a folded one)
                state.setdefault(r.name, set()).add("bn")
                if is_nchwc(r.name):
                    nchwc_out.add(c.name)
            elif nchwc and c.config.params["dims"] == 2 and is_nchwc(cin[0]):
                nchwc_out.add(c.name)  # becomes a per-channel NCHWc Conv
        elif fam == "activation" and len(cin) == 1 and cin[0] in by_name and c.op not in STANDIN_OPS:
            # (an op priced as another kind's pass is not that kind: ORT fuses none of them)
            p = by_name[cin[0]]
            if not sole_user(p, c) or p.kind != LAYER:
                continue
            r = root(p)
            k = _kind(c)
            st = state.setdefault(r.name, set())
            if "act" in st:
                continue
            if r.family in _CONV and "sum" in st and nchwc_conv(r):
                ok = k in _SUM_ACTS
            elif r.family in _CONV:
                ok = k in _CONV_ACTS or (k == "hardswish" and nchwc_conv(r))
            elif r is p and p.family == "linear":
                ok = (k in _GEMM_ACTS and len(p.input_shapes[0] if p.input_shapes else ()) == 2
                      and NO_BIAS not in (p.note or ""))  # without a bias ONNX has a MatMul, not a Gemm
            elif r is p and p.family == "batchnorm" and p.name in nchwc_out:
                ok = k in _CONV_ACTS or k == "hardswish"
            else:
                ok = False
            if ok:
                c.fused_into = r.name
                st.add("act")
                if r.name in nchwc_out:
                    nchwc_out.add(c.name)
        elif fam == "upsample" and nchwc and c.config.params["mode"] == "nearest" \
                and c.config.params["dims"] == 2 and is_nchwc(cin[0]):
            nchwc_out.add(c.name)  # R7: NCHWc Upsample after an NCHWc producer (any channel count)
        elif fam == "layernorm" and len(cin) == 1 and cin[0] in by_name:
            # R6: SkipLayerNormalization: a residual add of two (batch, seq, features) tensors whose only
            # consumer is a LayerNorm over the features is fused into that LayerNorm (both levels)
            p = by_name[cin[0]]
            if (p.kind == LAYER and p.family == "add" and p.fused_into is None and sole_user(p, c)
                    and len(p.input_shapes) == 2 and all(len(x) == 3 for x in p.input_shapes)
                    and c.input_shapes and len(c.input_shapes[0]) == 3
                    and c.config.params["features"] == c.input_shapes[0][-1]):
                p.fused_into = c.name
        elif fam == "add" and nchwc and len(cin) == 2 and INPUT not in cin:
            cands = []
            for j, i in enumerate(cin):
                p = by_name.get(i)
                if p is None or not sole_user(p, c):
                    continue
                r = root(p)
                other = cin[1 - j]
                if r.family == "conv2d" and not ({"act", "sum"} & state.get(r.name, set())) and (
                        not nchwc_conv(r) or is_nchwc(other)):
                    cands.append(r)
            if cands:
                r = max(cands, key=lambda r: position[r.name])
                c.fused_into = r.name
                state.setdefault(r.name, set()).add("sum")
                if r.name in nchwc_out:
                    nchwc_out.add(c.name)
    for c in calls:
        if c.name in nchwc_out:
            c.layout = "nchwc"


def _ort_patterns(calls: list[LayerCall], outputs=()) -> list[LayerCall]:
    """R8-R10 (ORT's GeluFusion, SimplifiedLayerNormFusion and LayerNormFusion, extended level): element-wise chains written
    out by hand that ONNX Runtime runs as one op. Checked against ORT's optimized graphs (docs/ort_fusion.md); the
    forms ORT leaves alone (erf of x * 0.7071, an RMSNorm without its scale, x * x for the square) are left too.

    R8  x / sqrt(2) -> erf -> + 1 -> * x and * 0.5 (either order; the numbers as ORT checks them): one Gelu, priced
        as the GELU activation of x.
    R9  x ** 2 -> mean over the last axis -> + eps -> rsqrt, * x (or sqrt, x / it) -> * a weight: one
        SimplifiedLayerNormalization, priced as the LayerNorm of x.
    R10 mean of x -> x - mean (once or twice) -> ** 2 -> mean -> + eps -> sqrt -> (x - mean) / it -> * a weight
        -> + a bias: one LayerNormalization. Matched first, as ORT does: its inner part looks like R9's.
    A matched chain is one call in the result: its last call (the one the rest of the network reads) becomes the
    fused op reading x, and the others are gone (the fused kernel does their work: charging them as fused calls
    priced a hand-written LayerNorm 36% over nn.LayerNorm, which runs the same kernel)."""
    by_name, src, _, users = _dataflow(calls, outputs)
    gone: set[str] = set()  # calls a fused op does the work of: not in the result
    taken: set[str] = set()  # every call of a matched chain

    def replace(chain: list[LayerCall], x: str, family: str, config: LayerConfig, op: str, note: str) -> None:
        last = chain[-1]
        shape = by_name[x].output_shape if x in by_name else chain[0].input_shapes[0]
        last.family, last.config, last.op, last.approx, last.note = family, config, op, True, note
        last.inputs, last.input_shapes = [x], [tuple(shape)] if shape else []
        gone.update(c.name for c in chain[:-1])
        taken.update(c.name for c in chain)

    def one_user(c: LayerCall) -> LayerCall | None:
        u = users.get(c.name, [])
        return by_name.get(u[0]) if len(u) == 1 else None

    def prod(name: str) -> LayerCall | None:
        return by_name.get(src(name))

    def is_ew(c, op: str, mode: str | None = None) -> bool:
        return (c is not None and c.kind == LAYER and c.name not in taken and c.op == op and c.family == "mul"
                and (mode is None or c.config.params.get("mode") == mode))

    def number(c: LayerCall, value: float, rel: float = 1e-3) -> bool:  # its number operand is `value`
        return c.scalar is not None and abs(c.scalar - value) <= rel * abs(value)

    def last_axis_mean(mean: LayerCall, x_shape) -> bool:  # a mean over x's last axis alone (as ORT requires)
        out = tuple(mean.output_shape or ())
        return bool(x_shape) and out in (tuple(x_shape[:-1]) + (1,), tuple(x_shape[:-1]))

    def other_input(c: LayerCall, name: str) -> str | None:
        ins = [src(i) for i in c.inputs]
        return next((i for i in ins if i != name), None) if name in ins and len(ins) == 2 else None

    for m in calls:  # R10
        if m.op != "mean" or m.kind != LAYER or m.name in taken or len(m.inputs) != 1:
            continue
        x = src(m.inputs[0])
        if not last_axis_mean(m, m.input_shapes[0] if m.input_shapes else ()):
            continue
        subs = [by_name[u] for u in users.get(m.name, []) if u in by_name]
        if not subs or len(subs) > 2 or not all(is_ew(c, "sub") and [src(i) for i in c.inputs] == [x, m.name]
                                                for c in subs):
            continue
        sq = [u for c in subs for u in map(by_name.get, users.get(c.name, [])) if u is not None and u.op == "pow"]
        if len(sq) != 1 or sq[0].name in taken:
            continue
        p = sq[0]
        var = one_user(p)
        eps = one_user(var) if (var is not None and var.op == "mean" and var.kind == LAYER
                                and last_axis_mean(var, p.output_shape)) else None
        r = one_user(eps) if is_ew(eps, "add", "scalar") else None
        dv = one_user(r) if r is not None and r.op == "sqrt" else None
        if not is_ew(dv, "div") or [src(i) for i in dv.inputs][1] != r.name or \
                src(dv.inputs[0]) not in {c.name for c in subs}:
            continue
        scale = one_user(dv)
        bias = one_user(scale) if is_ew(scale, "mul") and other_input(scale, dv.name) == INPUT else None
        if not is_ew(bias, "add") or other_input(bias, scale.name) != INPUT:
            continue
        chain = [*subs, p, var, eps, r, dv, scale, bias]
        names = {c.name for c in chain}
        if any(u not in names for c in chain[:-1] for u in users.get(c.name, [])):
            continue  # an intermediate is read outside the norm: ORT keeps it
        shape = m.input_shapes[0] if m.input_shapes else ()
        if len(shape) < 2:
            continue
        params = {"batch": int(shape[0]), "seq_len": int(math.prod(shape[1:-1])), "features": int(shape[-1])}
        replace([m, *chain], x, "layernorm", LayerConfig("layernorm", params), "LayerNormalization",
                "a LayerNorm written out: ONNX Runtime runs it as one LayerNormalization")
    for e in calls:
        if e.op != "erf" or e.family != "activation" or e.name in taken or len(e.inputs) != 1:  # R8
            continue
        d = prod(e.inputs[0])
        if not is_ew(d, "div", "scalar") or not number(d, math.sqrt(2.0)) or one_user(d) is not e or len(d.inputs) != 1:
            continue
        x = src(d.inputs[0])
        a = one_user(e)
        if not is_ew(a, "add", "scalar") or not number(a, 1.0):
            continue
        m = one_user(a)
        if not is_ew(m, "mul", "same"):
            continue
        y = other_input(m, a.name)
        half = prod(y) if y is not None else None
        if is_ew(half, "mul", "scalar") and number(half, 0.5) and [src(i) for i in half.inputs] == [x] \
                and one_user(half) is m:
            chain = [d, a, half, m]  # (0.5 * x) * (1 + erf(..))
        elif y == x and is_ew(one_user(m), "mul", "scalar") and number(one_user(m), 0.5):
            chain = [d, a, m, one_user(m)]  # x * (1 + erf(..)) * 0.5
        else:
            continue
        replace([e, *chain], x, "activation", e.config, "Gelu",
                "a GELU written out (erf): ONNX Runtime runs it as one Gelu")
    for p in calls:
        if p.op != "pow" or p.family != "activation" or p.name in taken or len(p.inputs) != 1:  # R9
            continue
        x = src(p.inputs[0])
        mean = one_user(p)
        if mean is None or mean.op != "mean" or mean.kind != LAYER or not last_axis_mean(mean, p.output_shape):
            continue
        eps = one_user(mean)
        if not is_ew(eps, "add", "scalar"):
            continue
        r = one_user(eps)
        if r is not None and r.op == "rsqrt":
            norm = one_user(r)
            if not is_ew(norm, "mul") or other_input(norm, r.name) != x:
                continue
        elif r is not None and r.op == "sqrt":
            norm = one_user(r)
            if not is_ew(norm, "div") or [src(i) for i in norm.inputs] != [x, r.name]:
                continue
        else:
            continue
        scale = one_user(norm)
        if not is_ew(scale, "mul") or other_input(scale, norm.name) != INPUT:  # the weight: a parameter
            continue
        shape = p.input_shapes[0] if p.input_shapes else ()
        if len(shape) < 2:
            continue
        params = {"batch": int(shape[0]), "seq_len": int(math.prod(shape[1:-1])), "features": int(shape[-1])}
        replace([p, mean, eps, r, norm, scale], x, "layernorm", LayerConfig("layernorm", params),
                "SimplifiedLayerNormalization", "an RMSNorm written out: ONNX Runtime runs it as one "
                "SimplifiedLayerNormalization, priced as a LayerNorm")
    return [c for c in calls if c.name not in gone]


def fusion_for_backend(calls: list[LayerCall], backend_name: str, *, level: str = "all",
                       nchwc_block: int | None = None) -> list[LayerCall]:
    """Copy of `calls` with `fused_into` set per `backend_name`'s fusion rules (see module doc).

    backend names starting with 'torch' fuse nothing; 'onnxruntime' / 'ort' apply R1-R5
    (`level` 'all' = ORT_ENABLE_ALL, 'extended', or 'basic' = only R1). Unknown names raise.
    """
    out = [c.copy(fused_into=None, layout=None, inputs=list(c.inputs), input_shapes=list(c.input_shapes))
           for c in calls]
    name = backend_name.lower()
    if name.startswith("torch") or name == "fake":  # eager torch (and the fake device) fuse nothing
        pass
    elif name.startswith("onnxruntime") or name.startswith("ort"):
        if level not in ("all", "extended", "basic"):
            raise ValueError(f"unknown ORT optimisation level {level!r}")
        outputs = getattr(calls, "outputs", None) or ()
        if level != "basic":  # (extended-level fusions in ORT)
            out = _ort_patterns(out, outputs)
        _ort_rules(out, nchwc=(level == "all"), block=nchwc_block or nchwc_block_size(), outputs=outputs)
        if level == "basic":  # only Conv+BN folding survives
            for c in out:
                if c.fused_into is not None and c.family != "batchnorm":
                    c.fused_into = None
    else:
        raise UnknownNameError(f"no fusion rules for backend {backend_name!r}; known: torch-*, onnxruntime-*")
    if isinstance(calls, ExtractResult):
        return calls.like(out)
    return out
