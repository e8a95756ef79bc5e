"""Issue 17's layers (SiLU, Hardswish, Hardsigmoid, GELU, broadcast multiply, adaptive pools to any size,
LayerNorm, GroupNorm, Upsample, Dropout/Identity, attention, MultiheadAttention, TransformerEncoderLayer):
extraction, profile -> fit -> predict -> explain on the fake backend, ORT fusion rules, old models, and a
real-backend smoke test."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastdeepiot.cli import main
from fastdeepiot.graph.channels import trace_channels
from fastdeepiot.devices import get_backend
from fastdeepiot.devices.fake import NETWORK_OVERHEAD_MS, FakeBackend
from fastdeepiot.errors import UnmodelledLayerError
from fastdeepiot.families import LayerConfig, _act_build
from fastdeepiot.graph.extract import extract_layers
from fastdeepiot.graph.fusion import fusion_for_backend
from fastdeepiot.profiling.harness import TimingPolicy
from fastdeepiot.profiling.runner import FAMILY_TURNS, layer_workload, plan, profile
from fastdeepiot.profiling.store import Store
from fastdeepiot.timemodel.model import TimeModel, fit_time_model, load_layer_data
from fastdeepiot.timemodel.tree import ModelTree, featurize

NEW_FAMILIES = ["mul", "adaptive_pool", "layernorm", "groupnorm", "upsample", "attention", "mha",
                "transformer_encoder", "conv_transpose2d", "conv_transpose1d"]
OLD_FAMILIES = ["conv2d", "conv1d", "batchnorm", "activation", "add", "linear", "pool2d", "pool1d"]


# ----------------------------------------------------------------------------------- networks


class SE(nn.Module):
    """Squeeze-excitation: global pool, two 1x1 convs, a gate, and the broadcast multiply."""

    def __init__(self, c, r=4, act=nn.SiLU, gate=nn.Sigmoid):
        super().__init__()
        self.f1, self.f2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.f2(self.act(self.f1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, c, e=4, act=nn.SiLU, gate=nn.Sigmoid):
        super().__init__()
        h = c * e
        self.b = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), act(),
                               nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), act(),
                               SE(h, act=act, gate=gate), nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.b(x)


class MobileNetV3ish(nn.Module):
    def __init__(self, act=nn.Hardswish, gate=nn.Hardsigmoid):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), act())
        self.blocks = nn.Sequential(InvertedResidual(16, act=act, gate=gate), InvertedResidual(16, act=act, gate=gate))
        self.pool = nn.AdaptiveAvgPool2d(3)  # 16x16 -> 3x3: no integer kernel
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(16 * 9, 10)

    def forward(self, x):
        return self.head(self.drop(torch.flatten(self.pool(self.blocks(self.stem(x))), 1)))


class SDPAEncoder(nn.Module):
    """A transformer encoder layer written with F.scaled_dot_product_attention (post-norm, GELU MLP)."""

    def __init__(self, d=64, h=4, ff=128):
        super().__init__()
        self.h = h
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.f1, self.f2, self.g, self.drop = nn.Linear(d, ff), nn.Linear(ff, d), nn.GELU(), nn.Dropout(0.1)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = self.n1(x + self.drop(self.o(a)))
        return self.n2(x + self.drop(self.f2(self.g(self.f1(x)))))


class TinyTransformer(nn.Module):
    def __init__(self, d=64, layers=2):
        super().__init__()
        self.embed = nn.Linear(16, d)
        self.enc = nn.Sequential(*[SDPAEncoder(d) for _ in range(layers)])
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        return self.head(self.enc(self.embed(x)).mean(1))


class TorchTransformer(nn.Module):
    """nn.TransformerEncoderLayer, nn.MultiheadAttention and nn.TransformerEncoder as users write them."""

    def __init__(self, d=64, h=4):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d, h, 128, activation="gelu", batch_first=True)
        self.attn = nn.MultiheadAttention(d, h, batch_first=True)
        self.stack = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, h, 128, batch_first=True), 2,
                                           norm=nn.LayerNorm(d), enable_nested_tensor=False)

    def forward(self, x):
        x = self.layer(x)
        x = x + self.attn(x, x, x)[0]
        return self.stack(x)


class Decoderish(nn.Module):
    """GroupNorm, upsampling (module and functional), adaptive max pool, scalar multiply, identity."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(8, 16, 3, padding=1)
        self.gn, self.act = nn.GroupNorm(4, 16), nn.SiLU()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.amp, self.id = nn.AdaptiveMaxPool2d(5), nn.Identity()

    def forward(self, x):
        x = self.act(self.gn(self.c(x)))
        x = F.hardsigmoid(self.up(x)) * 2.0
        return self.id(self.amp(F.interpolate(x, scale_factor=2)))


class UNetish(nn.Module):
    """An encoder-decoder: strided convs down, ConvTranspose2d (+ BatchNorm, activation) up, a residual skip."""

    def __init__(self):
        super().__init__()
        self.down1 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.SiLU())
        self.down2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(32, 16, 2, stride=2), nn.BatchNorm2d(16), nn.SiLU())
        self.up1 = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        d1 = self.down1(x)
        return self.out(self.up1(d1 + self.up2(self.down2(d1))))


class SensorAutoencoder(nn.Module):
    """A 1-D convolutional autoencoder over sensor windows (anomaly detection): strided Conv1d down,
    ConvTranspose1d (+ BatchNorm1d, activation) back up."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv1d(6, 16, 5, stride=2, padding=2), nn.SiLU(), nn.Conv1d(16, 32, 5, stride=2, padding=2))
        self.dec = nn.Sequential(nn.ConvTranspose1d(32, 16, 4, stride=2, padding=1), nn.BatchNorm1d(16), nn.SiLU(),
                                 nn.ConvTranspose1d(16, 6, 4, stride=2, padding=1))

    def forward(self, x):
        return self.dec(self.enc(x))


def _seq(*mods):
    return nn.Sequential(*mods).eval()


X4 = torch.randn(1, 8, 8, 8)
TOK = torch.randn(2, 16, 32)

# (name, module, input, family, extra params the layer's configuration must hold)
SINGLE = [
    ("silu", _seq(nn.Conv2d(8, 8, 1), nn.SiLU()), X4, "activation", {"kind": "silu"}),
    ("hardswish", _seq(nn.Conv2d(8, 8, 1), nn.Hardswish()), X4, "activation", {"kind": "hardswish"}),
    ("hardsigmoid", _seq(nn.Conv2d(8, 8, 1), nn.Hardsigmoid()), X4, "activation", {"kind": "hardsigmoid"}),
    ("gelu", _seq(nn.Linear(32, 32), nn.GELU()), TOK, "activation", {"kind": "gelu"}),
    ("se", SE(8).eval(), X4, "mul", {"mode": "channel"}),
    ("adaptive avg 8->3", _seq(nn.Conv2d(8, 8, 1), nn.AdaptiveAvgPool2d(3)), X4, "adaptive_pool",
     {"mode": "avg", "out_size": 3, "size": 8}),
    ("adaptive max 8->7", _seq(nn.Conv2d(8, 8, 1), nn.AdaptiveMaxPool2d(7)), X4, "adaptive_pool",
     {"mode": "max", "out_size": 7}),
    ("adaptive avg 1d", _seq(nn.Identity(), nn.AdaptiveAvgPool1d(3)), torch.randn(1, 8, 16),
     "adaptive_pool", {"dims": 1, "size": 16, "out_size": 3}),
    ("layernorm", _seq(nn.Linear(32, 32), nn.LayerNorm(32)), TOK, "layernorm",
     {"batch": 2, "seq_len": 16, "features": 32}),
    ("groupnorm", _seq(nn.Conv2d(8, 8, 1), nn.GroupNorm(2, 8)), X4, "groupnorm", {"groups": 2, "channels": 8}),
    ("upsample nearest", _seq(nn.Conv2d(8, 8, 1), nn.Upsample(scale_factor=2)), X4, "upsample",
     {"mode": "nearest", "scale": 2}),
    ("upsample bilinear", _seq(nn.Conv2d(8, 8, 1), nn.Upsample(size=(24, 24), mode="bilinear")), X4,
     "upsample", {"mode": "linear", "scale": 3}),
    ("sdpa", SDPAEncoder(32).eval(), TOK, "attention", {"batch": 2, "heads": 4, "seq_len": 16, "head_dim": 8}),
    ("mha", nn.MultiheadAttention(32, 4, batch_first=True).eval(), None, "mha",
     {"batch": 2, "seq_len": 16, "embed_dim": 32, "heads": 4, "need_weights": 1}),
    ("transformer encoder layer", nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval(), TOK,
     "transformer_encoder", {"d_model": 32, "heads": 4, "ffn": 64, "activation": "relu", "norm_first": 0}),
    ("conv transpose 2x2", _seq(nn.ConvTranspose2d(8, 16, 2, stride=2)), X4, "conv_transpose2d",
     {"in_channels": 8, "out_channels": 16, "kernel": 2, "stride": 2, "size": 8}),
    ("conv transpose 3x3 s1", _seq(nn.ConvTranspose2d(8, 4, 3, padding=1)), X4, "conv_transpose2d",
     {"kernel": 3, "stride": 1}),
]


class _MHA(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x, x, x)[0]


def _net(module, x):
    if isinstance(module, nn.MultiheadAttention):
        return _MHA(module).eval(), TOK
    return module, x


# ----------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("name,module,x,family,params", SINGLE, ids=[s[0] for s in SINGLE])
def test_new_ops_map_to_their_family(name, module, x, family, params):
    m, x = _net(module, x)
    res = extract_layers(m, x)
    assert res.traced and not res.unmodelled()
    hits = [c for c in res.layers() if c.family == family and all(c.config.params.get(k) == v
                                                                  for k, v in params.items())]
    assert hits, [(c.family, c.config.params) for c in res.layers()]
    for c in hits:  # every configuration is a valid point of its family's space
        assert c.config.family_obj.check(dict(c.config.params)) == c.config.params


def test_functional_forms_and_free_ops():
    class Fn(nn.Module):
        def forward(self, x):
            y = F.silu(x) * x  # same-shape multiply (Swish written out)
            y = F.layer_norm(y, (8,)) / 2  # division by a number priced as a multiply
            y = F.group_norm(y, 2)
            y = F.dropout(F.interpolate(y, scale_factor=2, mode="nearest"), 0.1, training=False)
            return F.adaptive_avg_pool2d(F.hardsigmoid(y), 5)

    res = extract_layers(Fn(), X4)
    assert not res.unmodelled()
    got = [(c.family, c.config.params.get("kind") or c.config.params.get("mode")) for c in res.layers()]
    assert got == [("activation", "silu"), ("mul", "same"), ("layernorm", None), ("mul", "scalar"),
                   ("groupnorm", None), ("upsample", "nearest"), ("activation", "hardsigmoid"),
                   ("adaptive_pool", "avg")]
    assert [c.op for c in res if c.kind == "free"] == ["dropout"]


def test_transformer_encoder_stack_is_its_layers_and_norm():
    res = extract_layers(TorchTransformer().eval(), torch.randn(2, 16, 64))
    assert not res.unmodelled()
    assert [(c.name, c.family) for c in res.layers()] == [
        ("layer", "transformer_encoder"), ("attn", "mha"), ("add", "add"),
        ("stack.layers.0", "transformer_encoder"), ("stack.layers.1", "transformer_encoder"),
        ("stack.norm", "layernorm")]
    assert res.layers()[0].config.params["activation"] == "gelu"
    assert res.layers()[3].inputs == ["add"] and res.layers()[4].inputs == ["stack.layers.0"]


def test_old_global_pool_mapping_is_unchanged():
    """An adaptive pool with an integer kernel stays a pool2d call (old networks price as before)."""
    c = extract_layers(_seq(nn.Conv2d(8, 8, 1), nn.AdaptiveAvgPool2d(1)), X4).layers()[-1]
    assert c.family == "pool2d" and c.config.params["kernel"] == 8


class Uncovered(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(8, 16, 1)
        self.ps = nn.Hardshrink()

    def forward(self, x):
        return self.ps(self.c(x)).cumsum(1)


@pytest.mark.parametrize("module,kernel,approx", [
    (nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), 4, False),  # the family's padding: exact
    (nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1), 3, False),
    (nn.ConvTranspose2d(8, 4, 4, stride=2), 4, True),  # output 2 x 8 + 2: another padding
    (nn.ConvTranspose2d(8, 4, 2), 3, True),  # an even kernel at stride 1: no family configuration
    (nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, dilation=2), 3, True),
    (nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1), 4, False),
    (nn.ConvTranspose1d(8, 4, 5, stride=2, padding=2, output_padding=1), 5, False),
    (nn.ConvTranspose1d(8, 4, 3, stride=2), 3, True),
])
def test_conv_transpose_maps_to_its_family(module, kernel, approx):
    dim = 2 if isinstance(module, nn.ConvTranspose2d) else 1
    x = X4 if dim == 2 else torch.randn(1, 8, 8)
    c = extract_layers(_seq(module), x).layers()[0]
    assert c.family == f"conv_transpose{dim}d" and c.config.params["kernel"] == kernel and c.approx == approx
    assert c.config.family_obj.check(dict(c.config.params)) == c.config.params
    out = module(x)  # the family's output is stride x the input: exact configurations compute that shape
    if not approx:
        assert out.shape[-1] == c.config.params["stride"] * 8 == c.config.features()["out_size"]


def test_grouped_conv_transpose_stays_unmodelled():
    res = extract_layers(_seq(nn.ConvTranspose2d(8, 8, 2, stride=2, groups=2)), X4)
    assert [c.op for c in res.unmodelled()] == ["ConvTranspose2d"]
    res = extract_layers(_seq(nn.ConvTranspose1d(8, 8, 2, stride=2, groups=4)), torch.randn(1, 8, 16))
    assert [c.op for c in res.unmodelled()] == ["ConvTranspose1d"]


def test_ort_folds_batchnorm_into_a_conv_transpose_and_nothing_else():
    """Probed on ORT 1.32: ConvTranspose, BatchNormalization, Relu -> ConvTranspose, Relu (plain layout)."""
    net = _seq(nn.Conv2d(8, 16, 3, padding=1), nn.ConvTranspose2d(16, 8, 2, stride=2), nn.BatchNorm2d(8), nn.ReLU())
    c = _ort(net, X4)
    assert c["2"].fused_into == "1" and c["3"].fused_into is None and c["1"].layout is None
    assert all(x.fused_into is None for x in fusion_for_backend(extract_layers(net, X4), "torch-cpu"))
    c = _ort(SensorAutoencoder().eval(), torch.randn(2, 6, 64))
    assert c["dec.1"].fused_into == "dec.0" and c["dec.2"].fused_into is None


def test_an_uncovered_layer_stays_unmodelled():
    res = extract_layers(Uncovered(), X4)
    assert [c.op for c in res.unmodelled()] == ["Hardshrink", "cumsum"]


# --------------------------------------------------------------- fake: profile -> fit -> predict


@pytest.fixture(scope="module")
def layers_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("layers") / "fake.db"
    backend = FakeBackend(step=16)
    fams = OLD_FAMILIES + NEW_FAMILIES
    with Store.open(db, backend.fingerprint(), create=True) as store:
        # 24 rounds of the plan (a family takes FAMILY_TURNS turns a round, conv2d many)
        rounds = sum(FAMILY_TURNS.get(f, 1) for f in fams)
        s = profile(backend, store, plan(fams, seed=0, network_every=0), max_new=24 * rounds)
    assert s.failed == 0 and all(s.per_family[f] >= 20 for f in NEW_FAMILIES)
    return db


@pytest.fixture(scope="module")
def layers_tm(layers_db):
    with Store.open(layers_db) as store:
        return fit_time_model(store)


@pytest.mark.parametrize("name,module,x,family,params", SINGLE, ids=[s[0] for s in SINGLE])
def test_each_new_layer_is_priced_and_explained(layers_tm, name, module, x, family, params, capsys, tmp_path):
    m, x = _net(module, x)
    p = layers_tm.predict_network(m, x)
    assert not p.unmodelled
    hits = [lp for lp in p.layers if lp.family == family and all(lp.config.get(k) == v for k, v in params.items())]
    assert hits and all(lp.ms > 0 and lp.standalone_ms > 0 for lp in hits)
    assert family in layers_tm.families
    text = layers_tm.explain(family)
    assert "t_ms =" in text
    # the CLI verb shows the family too (once per family is enough)
    if name in ("se", "layernorm", "mha", "transformer encoder layer", "adaptive avg 8->3"):
        path = tmp_path / "tm.json"
        layers_tm.save(path)
        main(["explain", str(path), "--family", family])
        assert f"## {family}" in capsys.readouterr().out


BLOCKS = [
    ("squeeze-excitation", SE(16).eval(), torch.randn(1, 16, 8, 8)),
    ("inverted residual silu", InvertedResidual(16, act=nn.SiLU, gate=nn.Sigmoid).eval(), torch.randn(1, 16, 8, 8)),
    ("inverted residual hardswish", InvertedResidual(16, act=nn.Hardswish, gate=nn.Hardsigmoid).eval(),
     torch.randn(1, 16, 8, 8)),
    ("mobilenetv3-ish", MobileNetV3ish().eval(), torch.randn(1, 3, 32, 32)),
    ("sdpa transformer", TinyTransformer().eval(), torch.randn(2, 32, 16)),
    ("torch transformer", TorchTransformer().eval(), torch.randn(2, 16, 64)),
    ("decoder-ish", Decoderish().eval(), X4),
    ("unet-ish", UNetish().eval(), torch.randn(1, 8, 16, 16)),
    ("sensor autoencoder", SensorAutoencoder().eval(), torch.randn(2, 6, 64)),
]


@pytest.mark.parametrize("name,module,x", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_blocks_are_priced_end_to_end(layers_tm, name, module, x):
    p = layers_tm.predict_network(module, x)
    assert not p.unmodelled and all(lp.ms > 0 for lp in p.layers)
    # the fake device is a formula the trees recover; without measured networks the composition is the
    # plain sum of the layers, so only the fake device's per-network overhead is missing
    measured = FakeBackend(step=16).network_ms(module, x)
    assert p.total_ms + NETWORK_OVERHEAD_MS == pytest.approx(measured, rel=0.02)


def test_models_without_the_new_layers_report_them_unmodelled(layers_db, layers_tm, tmp_path):
    net, x = MobileNetV3ish().eval(), torch.randn(1, 3, 32, 32)
    with Store.open(layers_db) as store:
        old = fit_time_model(store, families=OLD_FAMILIES)
    with pytest.raises(UnmodelledLayerError, match="mul"):
        old.predict_network(net, x)
    p = old.predict_network(net, x, allow_unmodelled=True)
    assert {u.split(" ")[0] for u in p.unmodelled} >= {"mul", "mul_1", "pool"}
    # a saved model without the new families (an old JSON) loads and does the same
    d = layers_tm.to_dict()
    d["families"] = {f: e for f, e in d["families"].items() if f not in NEW_FAMILIES}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(d))
    with pytest.raises(UnmodelledLayerError, match="attention|LayerNorm"):
        TimeModel.load(path).predict_network(TinyTransformer().eval(), torch.randn(2, 32, 16))


def test_an_activation_kind_the_model_never_saw_is_unmodelled(layers_db):
    """A model fitted before silu existed must not price it by another kind's branch."""
    with Store.open(layers_db) as store:
        data = load_layer_data(store, store.devices()[0])
    cs, y = data["activation"]
    keep = [i for i, c in enumerate(cs) if c.params["kind"] not in ("silu", "hardsigmoid")]
    assert len(keep) < len(cs)
    est = ModelTree().fit(featurize([cs[i] for i in keep]), y[keep])
    others = {f: ModelTree().fit(featurize(c), t) for f, (c, t) in data.items() if f in ("conv2d", "batchnorm")}
    tm = TimeModel({"activation": est, **others}, device={"backend": "fake"})
    seen = cs[keep[0]].params["kind"]  # a kind the model was fitted on
    seen_net = _seq(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), _act_build({"kind": seen, "channels": 8}))
    assert tm.predict_network(seen_net, X4).total_ms > 0
    silu_net = _seq(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.SiLU())
    with pytest.raises(UnmodelledLayerError, match="SiLU"):
        tm.predict_network(silu_net, X4)
    with pytest.raises(UnmodelledLayerError):
        tm.predict_configs([extract_layers(silu_net, X4).layers()[-1].config])


def test_unknown_layer_is_an_error_not_zero(layers_tm):
    with pytest.raises(UnmodelledLayerError, match="Hardshrink"):
        layers_tm.predict_network(Uncovered(), X4)
    with pytest.raises(ValueError, match="cannot time"):
        FakeBackend().network_ms(Uncovered(), X4)


def test_profiler_skips_what_the_backend_cannot_run(tmp_path):
    class NoAttention(FakeBackend):
        def unsupported(self, config):
            return "no attention here" if config.family == "attention" else None

    backend = NoAttention()
    with Store.open(tmp_path / "s.db", backend.fingerprint(), create=True) as store:
        s = profile(backend, store, plan(["attention", "layernorm"], seed=0, network_every=0), max_new=6)
    assert s.new == 6 and s.failed == 0 and s.unsupported >= 5 and set(s.per_family) == {"layernorm"}
    ort = get_backend("onnxruntime-cpu") if "onnxruntime-cpu" in _available() else None
    if ort is not None:  # torch's TorchScript exporter cannot export adaptive pools of non-integer kernels
        assert ort.unsupported(LayerConfig("adaptive_pool", {})) is not None
        assert ort.unsupported(LayerConfig("attention", {})) is None
        assert ort.unsupported(LayerConfig("transformer_encoder", {})) is None


def test_profiler_skips_networks_holding_an_unsupported_family(tmp_path):
    """A random network holding nn.TransformerEncoderLayer is not sent to a backend that cannot run it."""
    from fastdeepiot.graph.randomnets import random_network, spec_families
    from fastdeepiot.profiling.runner import network_workload

    class NoEncoder(FakeBackend):
        def unsupported_family(self, family):
            return "no encoder layers here" if family == "transformer_encoder" else None

    specs = [random_network(s, "sensor", "transformer")[2] for s in range(12)]
    holding = [sp for sp in specs if spec_families(sp)]
    assert holding and len(holding) < len(specs)
    backend = NoEncoder()
    with Store.open(tmp_path / "n.db", backend.fingerprint(), create=True) as store:
        s = profile(backend, store, [network_workload(sp) for sp in specs])
        stored = [m.config for m in store.measurements(kind="network")]
    assert s.unsupported == len(holding) and s.failed == 0 and len(stored) == len(specs) - len(holding)
    assert not any(spec_families(sp) for sp in stored)


def _available() -> list[str]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return ["torch-cpu"]
    return ["torch-cpu", "onnxruntime-cpu"]


# ----------------------------------------------------------------------------------- ORT fusion


def _ort(module, x, level="all", block=16):
    return {c.name: c for c in fusion_for_backend(extract_layers(module, x), "onnxruntime-cpu",
                                                  level=level, nchwc_block=block)}


@pytest.mark.parametrize("level", ["all", "extended"])
def test_ort_fuses_hardsigmoid_like_relu_and_never_silu_or_gelu(level):
    c = _ort(_seq(nn.Conv2d(16, 16, 3, padding=1), nn.Hardsigmoid()), torch.randn(1, 16, 8, 8), level)
    assert c["1"].fused_into == "0"
    c = _ort(_seq(nn.Conv1d(16, 16, 3, padding=1), nn.Hardsigmoid()), torch.randn(1, 16, 8), level)
    assert c["1"].fused_into == "0"
    c = _ort(_seq(nn.Linear(32, 32), nn.Hardsigmoid()), torch.randn(4, 32), level)
    assert c["1"].fused_into == "0"
    for act in (nn.SiLU(), nn.GELU()):
        c = _ort(_seq(nn.Conv2d(16, 16, 3, padding=1), act), torch.randn(1, 16, 8, 8), level)
        assert c["1"].fused_into is None


def test_ort_skip_layernorm_fuses_the_residual_add_of_tokens_only():
    c = _ort(SDPAEncoder(32).eval(), TOK)
    assert c["add"].fused_into == "n1" and c["add_1"].fused_into == "n2"
    for level in ("extended", "basic"):
        c = _ort(SDPAEncoder(32).eval(), TOK, level)
        assert c["add"].fused_into == ("n1" if level == "extended" else None)

    class PreNorm(nn.Module):  # the add feeds the next LayerNorm and the next residual: not fused
        def __init__(self):
            super().__init__()
            self.n1, self.n2, self.l = nn.LayerNorm(32), nn.LayerNorm(32), nn.Linear(32, 32)

        def forward(self, x):
            x = x + self.l(self.n1(x))
            return x + self.n2(x)

    assert _ort(PreNorm().eval(), TOK)["add"].fused_into is None

    class Rank2(nn.Module):
        def __init__(self):
            super().__init__()
            self.l, self.n = nn.Linear(32, 32), nn.LayerNorm(32)

        def forward(self, x):
            return self.n(x + self.l(x))

    assert _ort(Rank2().eval(), torch.randn(8, 32))["add"].fused_into is None


def test_ort_nearest_upsample_stays_nchwc_after_an_nchwc_conv():
    c = _ort(_seq(nn.Conv2d(16, 6, 1), nn.Upsample(scale_factor=2)), torch.randn(1, 16, 8, 8))
    assert c["0"].layout == "nchwc" and c["1"].layout == "nchwc"
    c = _ort(_seq(nn.Upsample(scale_factor=2)), torch.randn(1, 16, 8, 8))
    assert c["0"].layout is None
    c = _ort(_seq(nn.Conv2d(16, 6, 1), nn.Upsample(scale_factor=2, mode="bilinear")), torch.randn(1, 16, 8, 8))
    assert c["1"].layout is None


def test_channel_tracing_survives_the_new_layers():
    """Compression's dependency tracer leaves what it does not understand unprunable, without failing."""
    for net, x in [(MobileNetV3ish().eval(), torch.randn(1, 3, 32, 32)),
                   (TinyTransformer().eval(), torch.randn(2, 32, 16)),
                   (TorchTransformer().eval(), torch.randn(2, 16, 64)), (Decoderish().eval(), X4),
                   (UNetish().eval(), torch.randn(1, 8, 16, 16))]:
        cg = trace_channels(net, x)
        assert cg.groups() is not None


# ----------------------------------------------------------------------------------- real backend


@pytest.mark.real
def test_real_backend_profiles_the_new_families_and_prices_a_transformer(tmp_path):
    backend = get_backend("torch-cpu", threads=1)
    fams = ["linear", "add", "activation"] + NEW_FAMILIES
    # a few turns of the plan, plus GELU activations (4 turns of the activation family may miss that
    # kind, and a model never fitted on a kind does not price it)
    work = list(itertools.islice(plan(fams, seed=0, network_every=0), 4 * len(fams)))
    work += [layer_workload(LayerConfig("activation", {"kind": "gelu", "batch": b, "channels": 16, "dims": 1,
                                                       "size": n}), "sweep") for b, n in ((1, 32), (2, 64), (4, 16))]
    with Store.open(tmp_path / "r.db", backend.fingerprint(), create=True) as store:
        s = profile(backend, store, work, policy=TimingPolicy.quick())
        assert s.failed == 0 and all(s.per_family.get(f, 0) >= 3 for f in fams), s.per_family
        tm = fit_time_model(store, holdout=0.0, min_samples=3)
    assert set(fams) <= set(tm.families)
    for net, x in [(SDPAEncoder(32).eval(), TOK),
                   (nn.TransformerEncoderLayer(32, 4, 64, activation="gelu", batch_first=True).eval(), TOK)]:
        p = tm.predict_network(net, x)
        assert not p.unmodelled and p.total_ms > 0 and np.isfinite(p.total_ms)
        assert all(lp.ms > 0 for lp in p.layers)


@pytest.mark.skipif("onnxruntime-cpu" not in _available(), reason="onnxruntime not installed")
@pytest.mark.parametrize("norm_first", [False, True])
def test_a_transformer_encoder_layer_exports_to_onnx_and_runs_the_same(norm_first):
    """Exported alone, nn.TransformerEncoderLayer's is_causal=False default used to become a traced Tensor
    (scaled_dot_product_attention refused it); the export wrapper keeps it a constant."""
    import onnxruntime as ort

    from fastdeepiot.devices.onnxrt import export_onnx

    torch.manual_seed(0)
    m = nn.TransformerEncoderLayer(32, 4, 64, activation="gelu", batch_first=True, norm_first=norm_first).eval()
    x = torch.randn(2, 10, 32)
    sess = ort.InferenceSession(export_onnx(m, (x,)), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), m(x), rtol=1e-4, atol=1e-5)
    runner = get_backend("onnxruntime-cpu").layer_runner(
        LayerConfig("transformer_encoder", {"batch": 1, "seq_len": 8, "d_model": 16, "heads": 2, "ffn": 32,
                                            "activation": "relu", "norm_first": int(norm_first)}))
    assert all(t > 0 for t in runner.time_calls(3))  # the profiler can time the family on ONNX Runtime


@pytest.mark.real
@pytest.mark.parametrize("backend_name", ["torch-cpu", "onnxruntime-cpu"])
def test_real_backend_profiles_conv_transpose_and_prices_a_unet(backend_name, tmp_path):
    """The conv_transpose2d family on the real CPU backends: profiled (exported to ONNX on ORT), fitted,
    and a small encoder-decoder priced whole, its upsampling layers included."""
    if backend_name not in _available():
        pytest.skip(f"{backend_name} not available")
    backend = get_backend(backend_name, threads=1)
    fams = ["conv2d", "conv_transpose2d", "conv1d", "conv_transpose1d", "batchnorm", "activation", "add"]
    # every family's first 4 configurations of the plan (conv2d takes many turns a round: not all of them)
    work, taken = [], {}
    for w in plan(fams, seed=0, network_every=0):
        if taken.get(w.family, 0) < 4:
            work.append(w)
            taken[w.family] = taken.get(w.family, 0) + 1
        if len(taken) == len(fams) and min(taken.values()) == 4:
            break
    work += [layer_workload(LayerConfig("activation", {"kind": "silu", "batch": 1, "channels": c, "dims": 2,
                                                       "size": n}), "sweep") for c, n in ((8, 8), (16, 16), (4, 32))]
    with Store.open(tmp_path / "r.db", backend.fingerprint(), create=True) as store:
        s = profile(backend, store, work, policy=TimingPolicy.quick())
        assert s.failed == 0 and all(s.per_family.get(f, 0) >= 3 for f in fams if f != "activation"), s.per_family
        tm = fit_time_model(store, holdout=0.0, min_samples=3)
    for net, x, fam in ((UNetish(), torch.randn(1, 8, 16, 16), "conv_transpose2d"),
                        (SensorAutoencoder(), torch.randn(1, 6, 64), "conv_transpose1d")):
        p = tm.predict_network(net.eval(), x)
        ups = [lp for lp in p.layers if lp.family == fam]
        assert not p.unmodelled and np.isfinite(p.total_ms) and p.total_ms > 0
        assert len(ups) == 2 and all(lp.ms > 0 for lp in ups)


NEW_KINDS = [("elu", nn.ELU()), ("selu", nn.SELU()), ("prelu", nn.PReLU(8)), ("softplus", nn.Softplus()),
             ("mish", nn.Mish())]


def _kind_workloads(kinds):
    return [layer_workload(LayerConfig("activation", {"kind": k, "batch": b, "channels": c, "dims": d, "size": n}),
                           "sweep") for k in kinds for b, c, d, n in ((1, 8, 2, 8), (2, 16, 2, 16), (4, 32, 1, 64),
                                                                     (1, 64, 2, 28), (8, 4, 1, 128))]


@pytest.mark.parametrize("kind,act", NEW_KINDS, ids=[k for k, _ in NEW_KINDS])
def test_session_23_activation_kinds_are_profiled_and_priced(kind, act, tmp_path):
    backend = FakeBackend(step=16)
    work = _kind_workloads([k for k, _ in NEW_KINDS]) + list(itertools.islice(plan(["conv2d"], seed=0), 30))
    with Store.open(tmp_path / "k.db", backend.fingerprint(), create=True) as store:
        assert profile(backend, store, work).failed == 0
        tm = fit_time_model(store, holdout=0.0, min_samples=3)
    net = _seq(nn.Conv2d(8, 8, 3, padding=1), act)
    p = tm.predict_network(net, X4)
    [lp] = [lp for lp in p.layers if lp.family == "activation"]
    assert not p.unmodelled and lp.config["kind"] == kind and lp.ms > 0
    assert lp.standalone_ms == pytest.approx(backend.layer_ms(LayerConfig("activation", lp.config)), rel=0.1)


def test_ort_fuses_elu_selu_softplus_into_a_gemm_only():
    """Probed on ORT 1.32: Gemm + Elu / Selu / Softplus -> FusedGemm; after a Conv, and PReLU / Mish anywhere,
    nothing fuses."""
    for act in (nn.ELU(), nn.SELU(), nn.Softplus()):
        assert _ort(_seq(nn.Linear(16, 16), act), torch.randn(4, 16))["1"].fused_into == "0"
        assert _ort(_seq(nn.Conv2d(8, 8, 3, padding=1), act), X4)["1"].fused_into is None
    for act in (nn.PReLU(16), nn.Mish()):
        assert _ort(_seq(nn.Linear(16, 16), act), torch.randn(4, 16))["1"].fused_into is None


@pytest.mark.real
@pytest.mark.parametrize("backend_name", ["torch-cpu", "onnxruntime-cpu"])
def test_real_backend_times_and_prices_the_session_23_activation_kinds(backend_name, tmp_path):
    if backend_name not in _available():
        pytest.skip(f"{backend_name} not available")
    backend = get_backend(backend_name, threads=1)
    work = _kind_workloads([k for k, _ in NEW_KINDS]) + list(itertools.islice(plan(["conv2d"], seed=0), 8))
    with Store.open(tmp_path / "r.db", backend.fingerprint(), create=True) as store:
        s = profile(backend, store, work, policy=TimingPolicy.quick())
        assert s.failed == 0 and s.per_family["activation"] == len(NEW_KINDS) * 5, s.per_family
        tm = fit_time_model(store, holdout=0.0, min_samples=3)
    for kind, act in NEW_KINDS:
        p = tm.predict_network(_seq(nn.Conv2d(8, 8, 3, padding=1), act), X4)
        assert not p.unmodelled and np.isfinite(p.total_ms) and p.total_ms > 0, kind
