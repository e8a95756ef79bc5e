"""Ops of networks nobody here wrote, priced through the families that exist: functional layers with their own
weights (F.linear, F.conv1d/2d), clamps, element-wise ops priced as the activation kind whose time they match
(`standin`), copies (pads, pixel and channel shuffles, embeddings), torch.stack, torch.max over a dimension, and
bare modules called on several inputs; and what stays unmodelled. Extraction, ORT fusion, profile -> fit ->
predict on the fake backend, and a real-backend smoke test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastdeepiot.devices import get_backend
from fastdeepiot.devices.fake import NETWORK_OVERHEAD_MS, FakeBackend
from fastdeepiot.errors import UnmodelledLayerError
from fastdeepiot.families import ACTIVATIONS, LayerConfig
from fastdeepiot.graph.extract import LARGE_COPY_BYTES, extract_layers
from fastdeepiot.graph.fusion import fusion_for_backend
from fastdeepiot.profiling.harness import TimingPolicy
from fastdeepiot.profiling.runner import layer_workload, plan, profile
from fastdeepiot.profiling.store import Store
from fastdeepiot.timemodel.model import fit_time_model

X4 = torch.randn(1, 8, 8, 8)
TOK = torch.randn(2, 16, 32)


class Fn(nn.Module):
    """A conv (or linear) producer, then `fn` of its output."""

    def __init__(self, fn, producer=None):
        super().__init__()
        self.p = producer if producer is not None else nn.Conv2d(8, 8, 3, padding=1)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.p(x))


def _only(net, x):
    """The one call after the producer (free ops skipped)."""
    calls = [c for c in extract_layers(net.eval(), x) if c.name != "p" and c.kind != "free"]
    assert len(calls) == 1, [(c.name, c.op, c.kind) for c in calls]
    return calls[0]


class FunctionalLayers(nn.Module):
    """A custom module that holds its weights and calls F.conv2d / F.linear itself (as weight-standardised or
    low-rank layers do)."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(16, 8, 3, 3))
        self.b1 = nn.Parameter(torch.zeros(16))
        self.w2 = nn.Parameter(torch.randn(16, 4, 3, 3))  # grouped: 4 groups of 4 -> 16
        self.w3 = nn.Parameter(torch.randn(10, 16))

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.w1, self.b1, 2, 1))
        x = F.conv2d(x, self.w2, None, 1, 1, 1, 4)
        return F.linear(x.mean((2, 3)), self.w3)


class RMSNorm(nn.Module):
    """LLaMA's norm, written out: pow, mean, add, rsqrt, two multiplies."""

    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps, self.w = eps, nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w


class ModernBlock(nn.Module):
    """RMSNorm, a linear with an erf-GELU written out, a clamp, and a padded conv with a pixel shuffle."""

    def __init__(self, d=32):
        super().__init__()
        self.n, self.f1, self.f2 = RMSNorm(d), nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        h = self.f1(self.n(x))
        h = 0.5 * h * (1.0 + torch.erf(h * 0.7071))
        return x + self.f2(h).clamp(-3.0, 3.0)


class Upscaler(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(8, 32, 3)
        self.pad, self.ps = nn.ReflectionPad2d(1), nn.PixelShuffle(2)

    def forward(self, x):
        return self.ps(self.c(self.pad(x))).abs()


# ---------------------------------------------------------------------------------- extraction


def test_functional_layers_map_as_their_modules():
    res = extract_layers(FunctionalLayers().eval(), X4)
    assert not res.unmodelled()
    convs = [c for c in res.layers() if c.family == "conv2d"]
    assert [c.config.params for c in convs] == [
        {"batch": 1, "in_channels": 8, "out_channels": 16, "kernel": 3, "stride": 2, "groups": 1, "size": 8},
        {"batch": 1, "in_channels": 16, "out_channels": 16, "kernel": 3, "stride": 1, "groups": 4, "size": 4}]
    assert not any(c.approx for c in convs)
    # the same configuration as the module would give
    module = extract_layers(nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1)).eval(), X4).layers()[0]
    assert module.config.params == convs[0].config.params
    lin = [c for c in res.layers() if c.family == "linear"]
    assert [c.config.params for c in lin] == [{"batch": 1, "in_features": 16, "out_features": 10}]
    # the weights are not producers: the first conv reads the network input, the second the relu
    assert convs[0].inputs == ["input"] and convs[1].inputs == ["relu"]
    c1 = _only(Fn(lambda x: F.conv1d(x, torch.ones(4, 8, 5), padding=2), nn.Conv1d(3, 8, 1)), torch.randn(2, 3, 20))
    assert c1.family == "conv1d" and c1.config.params["kernel"] == 5 and not c1.approx


def test_functional_layer_with_a_computed_weight_is_priced_by_its_shape():
    class Computed(nn.Module):
        def forward(self, x):
            return F.linear(x, x.transpose(0, 1))  # a weight the network computes: its shape is known as well

    assert extract_layers(Computed().eval(), torch.randn(3, 3)).layers()[0].config.params == {
        "batch": 3, "in_features": 3, "out_features": 3}


@pytest.mark.parametrize("fn,kind", [
    (torch.abs, "relu"), (lambda x: -x, "relu"), (torch.square, "relu"), (lambda x: x ** 2, "relu"),
    (lambda x: x.pow(2), "relu"), (torch.reciprocal, "relu"), (torch.exp, "silu"), (torch.sqrt, "sigmoid"),
    (torch.rsqrt, "hardswish"), (torch.erf, "gelu"), (lambda x: x.log(), "gelu"), (lambda x: x > 0.5, "sigmoid"),
    (lambda x: x.eq(0), "sigmoid"), (lambda x: torch.ne(x, 1.0), "sigmoid"), (lambda x: 0.5 <= x, "sigmoid")],
    ids=["abs", "neg", "square", "**2", ".pow(2)", "reciprocal", "exp", "sqrt", "rsqrt", "erf", "log", "x > 0.5",
         ".eq(0)", "torch.ne", "0.5 <= x"])
def test_standins_are_their_kind_of_the_same_shape_and_approximate(fn, kind):
    c = _only(Fn(fn), X4)
    assert c.kind == "layer" and c.family == "activation" and c.approx
    assert c.config.params == {"kind": kind, "batch": 1, "channels": 8, "dims": 2, "size": 8}
    assert "no family times it" in c.note


@pytest.mark.parametrize("fn,name", [
    (lambda x: x ** 0.5, "pow"), (torch.sin, "sin"), (nn.LogSigmoid(), "LogSigmoid"), (nn.Hardshrink(), "Hardshrink"),
    (nn.Softsign(), "Softsign"), (lambda x: x.cumsum(1), "cumsum"), (lambda x: torch.pow(x, x), "pow"),
    (lambda x: x > x, "gt")],
    ids=["**0.5", "sin", "logsigmoid", "hardshrink", "softsign", "cumsum", "pow of two tensors", "comparison of two tensors"])
def test_ops_no_kind_matches_stay_unmodelled(fn, name):
    c = _only(Fn(fn), X4)
    assert c.kind == "unmodelled" and c.op == name


@pytest.mark.parametrize("fn,approx", [
    (nn.Hardtanh(), True), (nn.Hardtanh(0.0, 6.0), False), (lambda x: F.hardtanh(x, -2.0, 2.0), True),
    (lambda x: torch.clamp(x, 0.0, 1.0), True), (lambda x: x.clip(-1, 1), True), (lambda x: x.clamp_min(0.0), True)],
    ids=["Hardtanh", "Hardtanh(0,6)", "F.hardtanh", "torch.clamp", ".clip", ".clamp_min"])
def test_clamps_are_relu6(fn, approx):
    c = _only(Fn(fn), X4)
    assert c.family == "activation" and c.config.params["kind"] == "relu6" and c.approx == approx


def test_a_clamp_to_tensor_bounds_is_unmodelled():
    calls = [c for c in extract_layers(Fn(lambda x: torch.clamp(x, x * 0.0, x * 0.0 + 1.0)).eval(), X4)
             if c.op == "clamp"]
    assert calls and calls[0].kind == "unmodelled"


@pytest.mark.parametrize("module,x", [
    (nn.ReflectionPad2d(2), X4), (nn.ZeroPad2d((1, 2, 0, 1)), X4), (nn.PixelShuffle(2), X4),
    (nn.PixelUnshuffle(2), X4), (nn.ChannelShuffle(2), X4), (nn.ConstantPad1d(3, 0.0), torch.randn(1, 8, 16))],
    ids=["reflect", "zero", "pixel shuffle", "pixel unshuffle", "channel shuffle", "constant 1d"])
def test_copies_are_free_ops_that_copy(module, x):
    c = [c for c in extract_layers(nn.Sequential(nn.Identity(), module).eval(), x) if c.name == "1"][0]
    assert c.kind == "free" and c.note == "copies"


def test_a_large_pad_is_said_to_be_unpriced():
    x = torch.randn(1, 64, 128, 128)  # 4 MiB in, more out
    assert 4 * x.numel() >= LARGE_COPY_BYTES
    res = extract_layers(nn.Sequential(nn.Identity(), nn.ZeroPad2d(4)).eval(), x)
    assert any("large cop" in w for w in res.warnings)


def test_embedding_is_a_copy_and_the_rest_is_priced():
    net = nn.Sequential(nn.Embedding(100, 32), nn.Linear(32, 8)).eval()
    res = extract_layers(net, torch.randint(0, 100, (2, 16)))
    assert [(c.kind, c.note) for c in res][0] == ("free", "copies")
    assert res.layers()[0].config.params == {"batch": 32, "in_features": 32, "out_features": 8}


def test_stack_is_the_cat_of_the_same_tensors():
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return torch.stack([self.a(x), self.a(x)], 1), torch.cat([self.a(x), self.a(x)], 1)

    res = extract_layers(Stack().eval(), X4)
    st, cat = [c for c in res if c.op in ("stack", "cat")]
    assert st.family == cat.family == "concat" and st.config.params == cat.config.params
    assert len(st.inputs) == 2 and all(i.startswith("a") for i in st.inputs)
    # along another axis: the channel concat that copies the same blocks (approx)
    c = _only(Fn(lambda x: torch.stack([x, x], 0)), X4)  # (1, 8, 8, 8) twice: 1 block of 512 each
    assert c.family == "concat" and c.approx and c.config.params == {
        "batch": 1, "channels": 1, "dims": 1, "size": 512, "channels_b": 1}
    c = _only(Fn(lambda y: torch.cat([y, y], -1), nn.Linear(8, 8)), torch.randn(2, 5, 8))  # features of tokens
    assert c.config.params == {"batch": 10, "channels": 8, "dims": 1, "size": 1, "channels_b": 8} and c.approx


def test_max_over_a_dimension_is_a_max_pool():
    c = _only(Fn(lambda x: x.flatten(2).max(2)[0]), X4)
    assert c.family == "pool1d" and c.config.params["mode"] == "max" and c.approx
    (c,) = [c for c in extract_layers(Fn(lambda x: torch.max(x, x * 2.0)).eval(), X4) if c.op == "max"]
    assert c.kind == "unmodelled"  # the element-wise max of two tensors


@pytest.mark.parametrize("eq,a,b,family,params", [
    ("bhqd,bhkd->bhqk", (2, 4, 16, 8), (2, 4, 16, 8), "matmul", {"batch": 8, "m": 16, "k": 8, "n": 16}),
    ("bhqk,bhkd->bhqd", (2, 4, 16, 16), (2, 4, 16, 8), "matmul", {"batch": 8, "m": 16, "k": 16, "n": 8}),
    ("bnd,de->bne", (2, 16, 32), (32, 8), "linear", {"batch": 32, "in_features": 32, "out_features": 8}),
    ("ij,jk->ik", (5, 6), (6, 7), "linear", {"batch": 5, "in_features": 6, "out_features": 7}),
    ("bi,bi->b", (4, 8), (4, 8), "matmul", {"batch": 4, "m": 1, "k": 8, "n": 1})])  # batched dot products
def test_einsum_as_the_matrix_product_it_is(eq, a, b, family, params):
    class E(nn.Module):
        def forward(self, x, y):
            return torch.einsum(eq, x, y)

    (c,) = extract_layers(E().eval(), (torch.randn(a), torch.randn(b))).layers()
    assert c.family == family and c.config.params == params and c.approx
    # the same numbers as the matmul it stands for
    assert c.config.family_obj.check(dict(c.config.params)) == c.config.params


@pytest.mark.parametrize("eq,shapes", [
    ("bi,bj->bij", [(4, 8), (4, 3)]), ("ii->i", [(4, 4)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]), ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("bij->bji", [(2, 3, 4)])], ids=["outer", "diagonal", "ellipsis", "three operands", "transpose"])
def test_other_einsums_stay_unmodelled(eq, shapes):
    class E1(nn.Module):
        def forward(self, a):
            return torch.einsum(eq, a)

    class E2(nn.Module):
        def forward(self, a, b):
            return torch.einsum(eq, a, b)

    class E3(nn.Module):
        def forward(self, a, b, c):
            return torch.einsum(eq, a, b, c)

    net = (E1, E2, E3)[len(shapes) - 1]()
    res = extract_layers(net.eval(), tuple(torch.randn(s) for s in shapes))
    calls = [c for c in res if c.op == "einsum"]
    assert res.traced
    assert calls and calls[0].kind == "unmodelled"


def test_bare_modules_on_several_inputs():
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    res = extract_layers(mha, (TOK, TOK, TOK))
    assert res.traced and [c.family for c in res.layers()] == ["mha"]
    assert res.layers()[0].name == "multiheadattention"
    dec = nn.TransformerDecoderLayer(32, 4, 64, batch_first=True).eval()
    res = extract_layers(dec, (TOK, TOK))  # priced by no rule whole: its children, through the hooks
    assert not res.traced and "mha" in [c.family for c in res.layers()]


# ------------------------------------------------------------------------------------ ORT fusion


def test_ort_fuses_a_clamp_like_relu6_and_never_a_standin():
    def ort(net, x):
        return {c.name: c for c in fusion_for_backend(extract_layers(net.eval(), x), "onnxruntime-cpu", nchwc_block=16)}

    conv = nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(1, 16, 8, 8)
    assert ort(nn.Sequential(conv, nn.ReLU6()), x)["1"].fused_into == "0"
    assert ort(Fn(lambda y: y.clamp(0.0, 1.0), conv), x)["clamp"].fused_into == "p"
    for fn in (torch.abs, torch.exp, torch.erf):  # their stand-in kinds fuse; they do not
        (c,) = [c for c in ort(Fn(fn, conv), x).values() if c.op == fn.__name__]
        assert c.fused_into is None and c.config.params["kind"] in ("relu", "silu", "gelu")


# ------------------------------------------------------------ fake: profile -> fit -> predict


@pytest.fixture(scope="module")
def fake_tm(tmp_path_factory):
    db = tmp_path_factory.mktemp("standins") / "fake.db"
    backend = FakeBackend(step=16)
    fams = ["conv2d", "linear", "activation", "add", "mul", "pool1d", "pool2d", "concat", "batchnorm", "layernorm"]
    work = list(plan(fams, seed=0, network_every=0))[:30 * len(fams)]
    work += [layer_workload(LayerConfig("activation", {"kind": k, "batch": b, "channels": c, "dims": 1, "size": n}),
                            "sweep") for k in ACTIVATIONS for b, c, n in ((1, 8, 64), (2, 16, 32), (4, 32, 16))]
    with Store.open(db, backend.fingerprint(), create=True) as store:
        s = profile(backend, store, work)
        assert s.failed == 0
        return fit_time_model(store)


@pytest.mark.parametrize("name,net,x", [
    ("functional layers", FunctionalLayers(), X4), ("modern block", ModernBlock(), TOK),
    ("upscaler", Upscaler(), X4)], ids=["functional", "modern", "upscaler"])
def test_networks_of_these_ops_are_priced_end_to_end(fake_tm, name, net, x):
    net.eval()
    p = fake_tm.predict_network(net, x)
    assert not p.unmodelled and p.total_ms > 0 and all(lp.ms > 0 for lp in p.layers)
    measured = FakeBackend(step=16).network_ms(net, x)
    assert p.total_ms + NETWORK_OVERHEAD_MS == pytest.approx(measured, rel=0.03)
    approx = [lp for lp in p.layers if lp.approx]
    assert (name != "functional") == bool(approx)  # stand-ins and clamps are listed as approximate


def test_an_unmatched_op_is_an_error_not_zero(fake_tm):
    with pytest.raises(UnmodelledLayerError, match="LogSigmoid"):
        fake_tm.predict_network(Fn(nn.LogSigmoid()).eval(), X4)
    p = fake_tm.predict_network(Fn(nn.LogSigmoid()).eval(), X4, allow_unmodelled=True)
    assert p.unmodelled and p.total_ms > 0


# ------------------------------------------------------------------------------------ real backend


@pytest.mark.real
def test_real_backend_prices_a_modern_block(tmp_path):
    backend = get_backend("torch-cpu", threads=1)
    work = [layer_workload(LayerConfig("linear", {"batch": b, "in_features": i, "out_features": o}), "sweep")
            for b, i, o in ((32, 32, 64), (32, 64, 32), (16, 32, 32), (64, 64, 64), (8, 32, 64))]
    work += [layer_workload(LayerConfig("activation", {"kind": k, "batch": b, "channels": 16, "dims": 1, "size": n}),
                            "sweep") for k in ("relu", "relu6", "hardswish", "gelu") for b, n in ((1, 32), (2, 64), (4, 16))]
    work += [layer_workload(LayerConfig(f, {"batch": b, "channels": 16, "dims": 1, "size": n, **extra}), "sweep")
             for f, extra in (("mul", {"mode": "same"}), ("mul", {"mode": "scalar"}), ("mul", {"mode": "channel"}),
                              ("add", {})) for b, n in ((1, 32), (2, 64), (4, 16))]
    work += [layer_workload(LayerConfig("pool1d", {"mode": "avg", "batch": b, "channels": c, "size": n, "kernel": n,
                                                   "stride": n}), "sweep") for b, c, n in ((2, 16, 32), (32, 1, 32), (4, 8, 16))]
    with Store.open(tmp_path / "r.db", backend.fingerprint(), create=True) as store:
        s = profile(backend, store, work, policy=TimingPolicy.quick())
        assert s.failed == 0, s
        tm = fit_time_model(store, holdout=0.0, min_samples=3)
    p = tm.predict_network(ModernBlock().eval(), TOK)
    assert not p.unmodelled and np.isfinite(p.total_ms) and p.total_ms > 0
    assert {lp.config.get("kind") for lp in p.layers if lp.family == "activation"} == {"relu", "hardswish", "gelu", "relu6"}


# ------------------------------------------------------------------------------ probe 5's findings


def test_channels_meeting_a_tensor_bound_or_a_read_weight_are_not_pruned():
    from fastdeepiot.compression.moves.remove import removable_modules
    from fastdeepiot.graph.channels import trace_channels

    class Bound(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.c3 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 8, 1)
            self.lo = nn.Parameter(torch.zeros(1, 16, 1, 1))

        def forward(self, x):
            a = self.c1(x)
            return self.c3(torch.clamp(a, min=self.c2(a)) + torch.clamp(a, min=self.lo))

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
            self.c3, self.c4, self.c5 = nn.Conv2d(16, 8, 1), nn.Conv2d(16, 8, 1), nn.Conv2d(16, 4, 1)

        def forward(self, x):
            a = self.c1(x)
            t = F.conv2d(a, self.c2.weight, self.c2.bias, padding=1)  # c2's weight, read again
            return self.c5(torch.cat([self.c3(self.c2(a)), self.c4(t)], 1))

    x = torch.randn(1, 3, 8, 8)
    groups = {g.name for g in trace_channels(Bound().eval(), x).groups()}
    assert "c1" not in groups and "c2" not in groups
    cg = trace_channels(Shared().eval(), x)
    assert {g.name for g in cg.groups()} == {"c3", "c4"}
    assert any("read outside its call" in w for w in cg.why_fixed.values())
    assert "c2" not in removable_modules(Shared().eval(), x)


def test_named_tuple_fields_and_computed_dims():
    c = [c for c in extract_layers(Fn(lambda x: torch.max(x.flatten(2), dim=2).values), X4) if c.kind != "free"]
    assert [(c.op, c.family) for c in c if c.name != "p"] == [("max", "pool1d")]

    class CatDim(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = self.c(x)
            return torch.cat([y, y * 2], dim=y.dim() - 3) + 1  # a dim the network computes

    res = extract_layers(CatDim().eval(), X4)
    assert res.traced and [c.op for c in res.unmodelled()] == ["cat"]  # that op alone, not the whole trace


def test_bare_modules_keep_their_names_and_take_masks():
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    mask = torch.zeros(2, 16, dtype=torch.bool)
    res = extract_layers(mha, (TOK, TOK, TOK, mask))
    assert res.traced and [c.family for c in res.layers()] == ["mha"]
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2,
                                enable_nested_tensor=False).eval()
    names = [c.name for c in extract_layers(enc, TOK).layers()]
    assert names == ["transformerencoder.layers.0", "transformerencoder.layers.1"]
    conv = nn.Conv2d(8, 8, 3, padding=2, dilation=2).eval()  # approximated: the warning names it
    res = extract_layers(conv, X4)
    assert res.layers()[0].name == "conv2d" and any(w.endswith(": conv2d") for w in res.warnings)


def test_a_network_of_unmodelled_calls_is_not_called_free(fake_tm):
    with pytest.raises(UnmodelledLayerError, match="none of the network's layers can be priced"):
        fake_tm.predict_network(nn.Bilinear(32, 32, 8).eval(), (torch.randn(2, 32), torch.randn(2, 32)),
                                allow_unmodelled=True)


@pytest.mark.parametrize("fn,kind", [
    (lambda x: x.abs_(), "relu"), (lambda x: x.clamp_(0, 6), "relu6"), (lambda x: x.clamp_max(6), "relu6"),
    (lambda x: torch.clamp_min(x, 0.0), "relu6"), (lambda x: torch.special.erf(x), "gelu"), (lambda x: x.exp_(), "silu")],
    ids=["abs_", "clamp_", "clamp_max", "torch.clamp_min", "special.erf", "exp_"])
def test_in_place_and_other_spellings(fn, kind):
    c = _only(Fn(fn), X4)
    assert c.family == "activation" and c.config.params["kind"] == kind


def test_a_standin_on_a_number_held_in_a_tensor():
    class Temp(nn.Module):  # CLIP's logit scale: a learnt number, exponentiated
        def __init__(self):
            super().__init__()
            self.lin, self.t = nn.Linear(8, 8), nn.Parameter(torch.tensor(2.0))

        def forward(self, x):
            return self.lin(x) * self.t.exp()

    res = extract_layers(Temp().eval(), torch.randn(2, 8))
    assert not res.unmodelled()
    assert [c.config.params["channels"] for c in res.layers() if c.op == "exp"] == [1]


def test_predict_leaves_an_embedding_with_max_norm_as_it_was(fake_tm):
    class E(nn.Module):
        def __init__(self):
            super().__init__()
            self.e, self.l = nn.Embedding(100, 32, max_norm=1.0), nn.Linear(32, 4)

        def forward(self, x):
            return self.l(self.e(x))

    m = E().eval()
    with torch.no_grad():
        m.e.weight.mul_(5)  # rows far over max_norm: a forward renormalises them in place
    before = m.e.weight.detach().clone()
    fake_tm.predict_network(m, torch.randint(0, 100, (2, 12)))
    assert torch.equal(before, m.e.weight)


def test_cli_predicts_a_network_of_token_ids(fake_tm, tmp_path, monkeypatch, capsys):
    from fastdeepiot.cli import main

    (tmp_path / "tokens_net.py").write_text(
        "import torch.nn as nn\n"
        "def net():\n"
        "    return nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 4))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_tm.save(tmp_path / "tm.json")
    assert main(["predict", "tm.json", "tokens_net:net", "--input-shape", "2x12:int64"]) == 0
    assert "predicted total" in capsys.readouterr().out
    assert main(["predict", "tm.json", "tokens_net:net", "--input-shape", "2x12"]) == 2
    assert "SHAPE:int64" in capsys.readouterr().err
    assert main(["predict", "tm.json", "tokens_net:net", "--input-shape", "2x12:complex"]) == 2
    assert "unknown input dtype" in capsys.readouterr().err
    assert main(["predict", "tm.json", "tokens_net:net", "--input-shape", "2x12:"]) == 2
    assert "no dtype after ':'" in capsys.readouterr().err


def test_ort_fuses_an_activation_into_a_linear_only_with_a_bias():
    def fused(net, x):
        calls = fusion_for_backend(extract_layers(net.eval(), x), "onnxruntime-cpu", nchwc_block=16)
        return [c.fused_into for c in calls if c.family == "activation"]

    x = torch.randn(4, 32)
    w = torch.randn(16, 32)
    assert fused(nn.Sequential(nn.Linear(32, 16), nn.ReLU()), x) == ["0"]  # Gemm + Relu: FusedGemm
    assert fused(nn.Sequential(nn.Linear(32, 16, bias=False), nn.ReLU()), x) == [None]  # MatMul + Relu
    assert fused(Fn(lambda y: torch.relu(F.linear(y, w)), nn.Identity()), x) == [None]
    assert fused(Fn(lambda y: torch.relu(F.linear(y, w, torch.zeros(16))), nn.Identity()), x) == ["linear"]


# ------------------------------------------------- ORT's fusions of hand-written GELU, RMSNorm and LayerNorm


class _W(nn.Module):
    def __init__(self, fn, scale=False, bias=False):
        super().__init__()
        self.fn = fn
        self.w = nn.Parameter(torch.ones(64)) if scale else None
        self.b = nn.Parameter(torch.zeros(64)) if bias else None

    def forward(self, x):
        return self.fn(self, x)


def _rms(s, x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * s.w


def _bert_ln(s, h):
    u = h.mean(-1, keepdim=True)
    v = (h - u).pow(2).mean(-1, keepdim=True)
    return s.w * ((h - u) / torch.sqrt(v + 1e-12)) + s.b


def _ln_one_sub(s, h):
    u = h.mean(-1, keepdim=True)
    d = h - u
    return (d / torch.sqrt(d.pow(2).mean(-1, keepdim=True) + 1e-5)) * s.w + s.b


# (name, module, the one call left: its op and family) where ORT fuses the chain (checked with graph.ort_check on
# onnxruntime 1.2x: Gelu, SimplifiedLayerNormalization, LayerNormalization), None where ORT leaves it apart
ORT_PATTERNS = [
    ("gelu x/sqrt2", _W(lambda s, h: h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))), ("Gelu", "activation")),
    ("gelu 0.5*h first", _W(lambda s, h: 0.5 * h * (1.0 + torch.erf(h / 1.41421))), ("Gelu", "activation")),
    ("gelu *0.5 last", _W(lambda s, h: h * (1.0 + torch.erf(h / math.sqrt(2.0))) * 0.5), ("Gelu", "activation")),
    ("gelu x*0.7071", _W(lambda s, h: h * 0.5 * (1.0 + torch.erf(h * 0.7071067811865476))), None),
    ("rmsnorm rsqrt", _W(_rms, scale=True), ("SimplifiedLayerNormalization", "layernorm")),
    ("rmsnorm sqrt/div", _W(lambda s, x: s.w * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)), scale=True),
     ("SimplifiedLayerNormalization", "layernorm")),
    ("rmsnorm without a scale", _W(lambda s, x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)), None),
    ("rmsnorm x*x", _W(lambda s, x: x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6) * s.w, scale=True), None),
    ("bert layernorm", _W(_bert_ln, scale=True, bias=True), ("LayerNormalization", "layernorm")),
    ("layernorm one sub", _W(_ln_one_sub, scale=True, bias=True), ("LayerNormalization", "layernorm")),
    ("gelu x/1.5", _W(lambda s, h: h * 0.5 * (1.0 + torch.erf(h / 1.5))), None),  # ORT checks the numbers
    ("gelu *0.3", _W(lambda s, h: h * 0.3 * (1.0 + torch.erf(h / math.sqrt(2.0)))), None),
    ("gelu 2+erf", _W(lambda s, h: h * 0.5 * (2.0 + torch.erf(h / math.sqrt(2.0)))), None),
    ("rmsnorm over dim 1", _W(lambda s, x: x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-6) * s.w, scale=True),
     None),  # ORT's fusions reduce over the last axis only
    ("layernorm over dim 1", _W(lambda s, h: (lambda d: d / torch.sqrt(d.pow(2).mean(1, keepdim=True) + 1e-5) * s.w
                                              + s.b)(h - h.mean(1, keepdim=True)), scale=True, bias=True), None),
    ("layernorm d*d", _W(lambda s, h: (lambda u: (h - u) / torch.sqrt(((h - u) * (h - u)).mean(-1, keepdim=True)
                                                                      + 1e-5) * s.w + s.b)(h.mean(-1, keepdim=True)),
                        scale=True, bias=True), None),
]


def _pattern_net(m):
    return nn.Sequential(nn.Linear(64, 64), m, nn.Linear(64, 64)).eval()


@pytest.mark.parametrize("name,m,left", ORT_PATTERNS, ids=[p[0] for p in ORT_PATTERNS])
def test_ort_runs_hand_written_gelu_and_norms_as_one_op(name, m, left):
    x = torch.randn(2, 16, 64)
    res = extract_layers(_pattern_net(m), x)
    ort = [c for c in fusion_for_backend(res, "onnxruntime-cpu", nchwc_block=8)
           if c.kind == "layer" and c.fused_into is None and c.family != "linear"]
    torch_calls = [c for c in fusion_for_backend(res, "torch-cpu") if c.kind == "layer" and c.family != "linear"]
    assert len(torch_calls) >= 5 and all(c.fused_into is None for c in torch_calls)  # eager torch runs every op
    if left is None:
        assert len(ort) == len(torch_calls)
    else:  # one call in place of the chain, reading what the chain read, read by what read the chain
        (c,) = ort
        assert (c.op, c.family) == left and c.approx and c.inputs == ["0"]
        assert [l.inputs for l in fusion_for_backend(res, "onnxruntime-cpu") if l.name == "2"] == [[c.name]]
        if left[1] == "layernorm":
            assert c.config.params == {"batch": 2, "seq_len": 16, "features": 64}
        else:
            assert c.config.params["kind"] == "gelu"
    basic = fusion_for_backend(res, "onnxruntime-cpu", level="basic", nchwc_block=8)
    assert all(c.fused_into is None for c in basic if c.family != "linear")  # extended-level fusions in ORT


@pytest.mark.skipif(not __import__("importlib").util.find_spec("onnxruntime"), reason="onnxruntime not installed")
@pytest.mark.parametrize("name,m,left", ORT_PATTERNS, ids=[p[0] for p in ORT_PATTERNS])
def test_the_patterns_are_onnx_runtimes(name, m, left):
    from fastdeepiot.graph.ort_check import ort_optimized_nodes

    ops = {n.op_type for n in ort_optimized_nodes(_pattern_net(m), torch.randn(2, 16, 64))}
    fused = ops & {"Gelu", "SimplifiedLayerNormalization", "LayerNormalization"}
    assert bool(fused) == (left is not None), ops


def test_a_written_out_layernorm_is_priced_as_nn_layernorm_on_ort(fake_tm):
    from fastdeepiot.timemodel.model import TimeModel

    tm = TimeModel(fake_tm.estimators, fake_tm.composition, {**fake_tm.device, "backend": "onnxruntime-cpu"})
    x = torch.randn(2, 16, 64)
    hand = tm.predict_network(_pattern_net(_W(_ln_one_sub, scale=True, bias=True)), x)
    module = tm.predict_network(_pattern_net(nn.LayerNorm(64)), x)
    assert hand.total_ms == pytest.approx(module.total_ms, rel=1e-9)
