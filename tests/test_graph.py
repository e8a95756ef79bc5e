"""Layer extraction, fusion annotations, zoo and random networks (fast)."""

from __future__ import annotations

import json
import typing

import pytest
import torch
import torch.nn as nn

from fastdeepiot.families import get_family
from fastdeepiot.graph.calls import copied_elements
from fastdeepiot.graph.extract import extract_layers
from fastdeepiot.graph.fusion import fusion_for_backend
from fastdeepiot.graph.randomnets import SPEC_VERSION, STREAM, STYLES, build_network, example_input, random_network
from fastdeepiot.zoo import ZOO, zoo_networks


class ResNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.down = nn.Conv2d(16, 32, 1, stride=2)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        z = self.bn2(self.conv2(y)) + y
        z = torch.relu(z)
        z = self.pool(self.down(z))
        return self.fc(z.flatten(1))


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(8, 4, 1)
        self.b = nn.Conv2d(8, 6, 3, padding=1)
        self.c = nn.Conv2d(8, 2, 5, padding=2)
        self.act = nn.ReLU6()

    def forward(self, x):
        return self.act(torch.cat([self.a(x), torch.cat([self.b(x), x], dim=1), self.c(x)], dim=1))


def _by_name(calls):
    return {c.name: c for c in calls}


def test_residual_net_every_layer_once():
    m = ResNetLike().eval()
    r = extract_layers(m, torch.randn(2, 3, 16, 16))
    assert r.traced and not r.unmodelled()
    fams = [c.family for c in r.layers()]
    assert fams == ["conv2d", "batchnorm", "activation", "conv2d", "batchnorm", "add", "activation",
                    "conv2d", "pool2d", "linear"]
    assert [c.op for c in r if c.kind == "free"] == ["flatten"]
    d = _by_name(r)
    assert d["conv1"].config.params == {"batch": 2, "in_channels": 3, "out_channels": 16, "kernel": 3,
                                        "stride": 1, "groups": 1, "size": 16}
    assert d["down"].config.params["stride"] == 2 and d["down"].config.params["kernel"] == 1
    assert d["down"].approx is False
    assert d["pool"].config.params == {"batch": 2, "mode": "max", "channels": 32, "kernel": 2,
                                       "stride": 2, "size": 8}
    assert d["fc"].config.params == {"batch": 2, "in_features": 512, "out_features": 10}
    add = [c for c in r if c.family == "add"][0]
    assert add.config.params == {"batch": 2, "channels": 16, "dims": 2, "size": 16}
    assert set(add.inputs) == {"bn2", "relu"}
    for c in r.layers():  # every config is valid for its family
        get_family(c.family).features(c.config.params)


def test_concat_net_counts_one_call_per_cat():
    r = extract_layers(ConcatNet().eval(), torch.randn(1, 8, 8, 8))
    assert r.traced and not r.unmodelled()
    cats = [c for c in r if c.family == "concat"]
    # one call per cat: the inner (2 tensors) exactly, the outer (3 tensors: 4 + 14 + 2 channels) as the
    # 2-input concat of the same bytes (18 + 2), marked approximate, reading all three producers
    assert len(cats) == 2
    inner, outer = cats
    assert inner.config.params["channels"] == 6 and inner.config.params["channels_b"] == 8 and not inner.approx
    assert outer.config.params["channels"] == 18 and outer.config.params["channels_b"] == 2 and outer.approx
    assert outer.inputs == ["a", inner.name, "c"]
    assert len([c for c in r if c.family == "conv2d"]) == 3
    act = [c for c in r if c.family == "activation"]
    assert len(act) == 1 and act[0].config.params["kind"] == "relu6"
    assert act[0].config.params["channels"] == 20


def test_module_configs_and_approx():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(4, 8, (3, 5), padding=0, groups=2)
            self.bn = nn.BatchNorm1d(8)
            self.gap = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            y = self.gap(self.c(x)).flatten(1)
            return self.bn(y)

    r = extract_layers(M().eval(), torch.randn(1, 4, 10, 12))
    d = _by_name(r)
    assert d["c"].approx and d["c"].config.params["groups"] == 2
    assert d["c"].config.params["size"] == 11  # round(sqrt(10*12))
    assert d["gap"].family == "pool2d" and d["gap"].approx
    assert d["gap"].config.params["kernel"] == d["gap"].config.params["stride"]
    assert d["bn"].config.params == {"batch": 1, "channels": 8, "dims": 1, "size": 1}


class _Scale(nn.Module):
    """A custom module with a parameter of its own (a layer scale)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8))

    def forward(self, x):
        return x * self.w.view(1, -1, 1, 1)


class _Gate(nn.Module):
    """A custom module with a parameter whose forward branches on a value: fx cannot trace into it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(8))

    def forward(self, x):
        return x * self.w.view(1, -1, 1, 1) if float(self.w.sum()) > 0 else x


def test_unknown_module_is_unmodelled():
    # (LayerNorm, this test's second example before issue 17, has a family now)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _Scale(), nn.LocalResponseNorm(2)).eval()
    r = extract_layers(m, torch.randn(1, 3, 6, 6))
    assert r.traced
    unm = {c.name: c.op for c in r.unmodelled()}
    assert unm == {"2": "LocalResponseNorm"}
    assert any("unmodelled" in w for w in r.warnings)


def test_custom_modules_with_parameters_are_traced_into():
    """A custom module's ops on its own parameters are priced (a layer scale is a per-channel multiply;
    a class token and position embedding at the root are a concat and a broadcast add), the
    parameters read as inputs; one fx cannot trace into stays one unmodelled call, the rest traced."""
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _Scale(), nn.ReLU()).eval()
    r = extract_layers(m, torch.randn(1, 3, 6, 6))
    assert r.traced and not r.unmodelled()
    mul = [c for c in r if c.op == "mul"]
    assert len(mul) == 1 and mul[0].family == "mul" and mul[0].config.params["mode"] == "channel"

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 16, 4, 4)
            self.cls = nn.Parameter(torch.zeros(1, 1, 16))
            self.pos = nn.Parameter(torch.zeros(1, 5, 16))
            self.head = nn.Linear(16, 4)

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
            return self.head(t[:, 0])

    r = extract_layers(Tokens().eval(), torch.randn(2, 3, 8, 8))
    assert r.traced and not r.unmodelled(), [c.note for c in r.unmodelled()]
    assert {c.family for c in r if c.kind == "layer"} >= {"conv2d", "linear", "mul"}

    gated = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _Gate(), nn.ReLU()).eval()
    r = extract_layers(gated, torch.randn(1, 3, 6, 6))
    assert r.traced and {c.name: c.op for c in r.unmodelled()} == {"1": "_Gate"}
    assert [c.family for c in r if c.kind == "layer"] == ["conv2d", "activation"]


def test_fx_failure_records_the_forward():
    class Dyn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            y = self.relu(self.conv(x))
            if y.sum() > 0:  # data-dependent control flow: fx cannot trace it
                y = y + 1
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(0)
    net, x = Dyn().eval(), torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        taken = net.relu(net.conv(x)).sum() > 0
    r = extract_layers(net, x)
    assert r.traced is False and taken  # (the branch this input takes adds 1)
    # every op of the forward that ran, as a trace lists them; the condition's two ops are free
    assert [(c.name, c.kind) for c in r] == [("conv", "layer"), ("relu", "layer"), ("sum_1", "free"), ("gt", "free"),
                                             ("add", "layer"), ("mean", "layer"), ("fc", "layer")]
    assert [c.inputs for c in r] == [["input"], ["conv"], ["relu"], ["sum_1"], ["relu"], ["add"], ["mean"]]
    assert r[0].config.params["in_channels"] == 3 and r[-1].config.params["in_features"] == 4
    assert any("recorded from one forward" in w for w in r.warnings)
    assert any("branches on (sum_1, gt)" in w for w in r.warnings)
    assert r.outputs == frozenset({"fc"}) and r.module_calls == 1


class _OptionalInputs(nn.Module):
    """A forward with optional inputs the call leaves at their defaults (a mask, a flag)."""

    def __init__(self):
        super().__init__()
        self.l, self.big, self.other = nn.Linear(8, 8), nn.Linear(8, 64), nn.Linear(8, 32)

    def forward(self, x, mask=None, scale=2, *, wide: bool = False):
        y = self.l(x)
        if mask is not None:
            y = self.big(y)
        if wide:
            y = self.other(y)
        return y * scale


def test_inputs_left_at_their_defaults_are_traced_with_their_defaults():
    """fx made `mask` an input of the graph, a Proxy that `is not None`: the branch a call on x alone never runs was
    priced (a Linear the network did not run), silently; a bool flag made fx fail (priced from a recording)."""
    r = extract_layers(_OptionalInputs().eval(), torch.rand(4, 8))
    assert r.traced and [(c.name, c.family) for c in r if c.kind == "layer"] == [("l", "linear"), ("mul", "mul")]
    assert not r.warnings and not any(c.kind == "unmodelled" for c in r)
    mask = torch.ones(4, 8)
    given = extract_layers(_OptionalInputs().eval(), (torch.rand(4, 8), mask))
    assert [c.name for c in given if c.kind == "layer"] == ["l", "big", "mul"]


class _Outputs(typing.NamedTuple):
    logits: torch.Tensor
    aux: torch.Tensor


class _ReturnsNamedTuple(nn.Module):  # as torchvision's Inception / GoogLeNet return InceptionOutputs
    def __init__(self):
        super().__init__()
        self.l, self.aux = nn.Linear(8, 4), nn.Linear(8, 2)

    def forward(self, x):
        return _Outputs(self.l(x), self.aux(x))


def test_a_named_tuple_of_outputs_is_free_not_unmodelled():
    """fx records building the NamedTuple as a call of its class: it was an unmodelled op (`_outputs (_Outputs)`),
    so predict refused a network that returns one unless --allow-unmodelled."""
    r = extract_layers(_ReturnsNamedTuple().eval(), torch.rand(4, 8))
    assert r.traced and not any(c.kind == "unmodelled" for c in r)
    assert [c.name for c in r if c.kind == "layer"] == ["l", "aux"]


def test_a_bare_module_without_children_runs_no_forward_to_count_container_calls():
    """Its container calls are 0 without running it: a bare LSTM ran one more real forward for nothing (a cold
    predict of nn.LSTM ran it twice)."""
    lstm, runs = nn.LSTM(8, 16).eval(), []
    lstm.register_forward_pre_hook(lambda *a: runs.append(1))
    r = extract_layers(lstm, torch.rand(5, 2, 8))
    assert r.module_calls == 0 and len(runs) == 1 and [c.family for c in r] == ["lstm"]


def test_when_recording_fails_too_leaf_modules_are_hooked(monkeypatch):
    from fastdeepiot.graph import extract as ex

    def broken(*a):
        raise RuntimeError("recorder bug")

    monkeypatch.setattr(ex, "record", broken)

    class Dyn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 2)

        def forward(self, x):
            y = self.conv(x)
            if y.sum() > 0:
                y = y + 1
            return self.fc(y.mean((2, 3)))

    r = extract_layers(Dyn().eval(), torch.randn(1, 3, 8, 8))
    assert r.traced is False and [c.name for c in r] == ["conv", "fc"]
    assert any("hooks" in w for w in r.warnings)


def test_gru_after_conv1d_permute():
    class S(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(6, 16, 5, padding=2, stride=2)
            self.gru = nn.GRU(16, 24, num_layers=2, batch_first=True)
            self.lstm = nn.LSTM(24, 12)  # not batch_first: (seq, batch, feat)
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            y = self.conv(x).permute(0, 2, 1)
            out, _ = self.gru(y)
            out2, _ = self.lstm(out.transpose(0, 1))
            return self.fc(out2[-1])

    r = extract_layers(S().eval(), torch.randn(4, 6, 100))
    d = _by_name(r)
    assert d["conv"].config.params["size"] == 100
    assert d["gru"].config.params == {"batch": 4, "input_size": 16, "hidden_size": 24,
                                      "seq_len": 50, "num_layers": 2}
    assert d["lstm"].config.params == {"batch": 4, "input_size": 24, "hidden_size": 12,
                                       "seq_len": 50, "num_layers": 1}
    assert d["fc"].config.params["batch"] == 4
    assert not r.unmodelled()


def test_bidirectional_rnn_split():
    m = nn.GRU(8, 16, num_layers=2, batch_first=True, bidirectional=True)
    r = extract_layers(m, torch.randn(1, 10, 8))
    grus = [c for c in r if c.family == "gru"]
    assert [c.config.params["input_size"] for c in grus] == [8, 8, 32, 32]
    assert all(c.config.params["num_layers"] == 1 for c in grus)


@pytest.mark.parametrize("name,module,x", zoo_networks(), ids=lambda v: v if isinstance(v, str) else "")
def test_zoo_networks_extract_fully(name, module, x):
    assert not module.training
    with torch.no_grad():
        module(x)
    r = extract_layers(module, x)
    assert r.traced
    assert not r.unmodelled(), [c.name for c in r.unmodelled()]
    for c in r.layers():
        get_family(c.family).features(c.config.params)


def test_zoo_size():
    nets = zoo_networks()
    assert len(nets) >= 20 and len(ZOO) == 5
    assert len({n for n, _, _ in nets}) == len(nets)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("kind", ["image", "sensor"])
def test_random_networks(seed, kind):
    m, x, spec = random_network(seed, kind)
    json.dumps(spec)
    with torch.no_grad():
        m(x)
    r = extract_layers(m, x)
    assert r.traced and not r.unmodelled(), [c.name for c in r.unmodelled()]
    assert len(r.layers()) >= 3


@pytest.mark.parametrize("style", sorted(STYLES))
def test_random_network_styles(style):
    """Every architecture style builds, runs, traces fully priceable, and round-trips through JSON."""
    _, kinds = STYLES[style]
    for kind in kinds:
        for seed in range(4):
            m, x, spec = random_network(seed, kind, style)
            assert spec["style"] == style and spec["kind"] == kind and spec["version"] == SPEC_VERSION
            assert x.shape[0] == spec["batch"] >= 1
            with torch.no_grad():
                y = m(x)
            assert y.shape[0] == spec["batch"] and torch.isfinite(y).all()
            r = extract_layers(m, x)
            assert r.traced and not r.unmodelled(), (style, kind, seed, [c.name for c in r.unmodelled()])
            m2 = build_network(json.loads(json.dumps(spec)))
            with torch.no_grad():
                assert torch.equal(m2(x), y)


def test_random_network_style_motifs():
    """The styles hold the motifs they are named for (what leave-one-style-out leaves out)."""
    def families(style, kind, seeds=range(6)):
        out = set()
        for seed in seeds:
            m, x, _ = random_network(seed, kind, style)
            out |= {c.family for c in extract_layers(m, x).layers()}
        return out

    assert {"mul"} <= families("mobile", "image")  # squeeze-excitation
    assert {"concat"} <= families("dense", "image") and {"concat"} <= families("shuffle", "image")
    assert {"gru", "lstm"} & families("recurrent", "sensor")
    assert {"layernorm", "linear"} <= families("transformer", "sensor")
    assert families("mlp", "image") <= {"linear", "activation", "layernorm"}
    batches = {random_network(s, "image", "mlp")[2]["batch"] for s in range(20)}
    assert max(batches) >= 32 and min(batches) == 1
    with pytest.raises(ValueError):
        random_network(0, "image", "recurrent")  # a sensor style
    with pytest.raises(ValueError):
        random_network(0, "image", "no-such-style")


def test_profile_stream_covers_every_style():
    from fastdeepiot.profiling.runner import network_stream

    stream = network_stream(0)
    styles = {next(stream).config["style"] for _ in range(len(STREAM))}
    assert styles == set(STYLES)


def test_profiled_networks_reach_past_the_last_level_cache():
    """The composition's cold-weight term is fitted on the profiled random networks: they must span networks
    that fit a CPU's last-level cache and networks of several times its size, in more styles than the MLP."""
    sizes = []
    for i in range(150):
        style, kind = STREAM[i % len(STREAM)]
        net, _, spec = random_network(i, kind, style)
        sizes.append((sum(p.numel() * 4 for p in net.parameters()) / 2**20, spec["style"]))
    mib = sorted(s for s, _ in sizes)
    assert mib[len(mib) // 2] < 1  # most are small: the networks most users run
    assert sum(s > 16 for s in mib) >= 3 and mib[-1] > 24
    assert len({style for s, style in sizes if s > 4}) >= 3


def test_a_share_of_the_profiled_networks_is_as_deep_as_the_cnns_people_run(monkeypatch):
    """A quarter of the networks of every style but mlp are drawn deep (their repeats and MAC budget times 3-6):
    together they reach the 100-400 layer calls and the megabytes of weights of ResNet-50 or MobileNet, which
    the other random networks do not; every network that is not deep is the one its seed drew without deep
    networks, and a deep one holds more layer calls than its seed's network drawn shallow (most of them)."""
    from fastdeepiot.graph import randomnets

    drawn = {}
    for i in range(60):
        style, kind = STREAM[i % len(STREAM)]
        drawn[i] = random_network(i, kind, style)
    deep = {i for i, (_, _, spec) in drawn.items() if spec.get("depth", 1) > 1}
    assert 0.1 <= len(deep) / len(drawn) <= 0.45
    assert all(drawn[i][2]["style"] != "mlp" and drawn[i][2]["depth"] in randomnets.DEEP_FACTORS for i in deep)
    calls = {i: len(extract_layers(m, x).layers()) for i, (m, x, _) in drawn.items()}
    assert sum(calls[i] >= 100 for i in deep) >= 5 and sum(calls[i] >= 100 for i in drawn if i not in deep) <= 2

    monkeypatch.setattr(randomnets, "DEEP_SHARE", 0.0)
    shallow = {}
    for i, (m, x, spec) in drawn.items():
        style, kind = STREAM[i % len(STREAM)]
        m0, x0, spec0 = random_network(i, kind, style)
        if i in deep:  # (a transformer whose one block already spends its budget stays one block deep)
            shallow[i] = len(extract_layers(m0, x0).layers())
            assert shallow[i] <= calls[i]
        else:
            assert spec0 == spec and torch.equal(x0, x)
    assert sum(shallow[i] < calls[i] for i in deep) >= 0.8 * len(deep)
    assert sum(calls[i] for i in deep) >= 3 * sum(shallow.values())


def test_random_spec_round_trip():
    for kind in ("image", "sensor"):
        m, x, spec = random_network(3, kind)
        spec2 = json.loads(json.dumps(spec))
        m2 = build_network(spec2)
        assert str(m2) == str(m)
        x2 = example_input(spec2)
        assert torch.equal(x, x2)
        with torch.no_grad():
            assert torch.equal(m(x), m2(x2))
    assert random_network(1, "image")[2] != random_network(2, "image")[2]


def _conv_bn_relu():
    return nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU6(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4), nn.ReLU()).eval()


def test_ort_fusion_conv_bn_relu():
    m, x = _conv_bn_relu(), torch.randn(1, 8, 8, 8)
    r = extract_layers(m, x)
    assert all(c.fused_into is None for c in r)
    assert all(c.fused_into is None for c in fusion_for_backend(r, "torch-cpu"))
    f = _by_name(fusion_for_backend(r, "onnxruntime-cpu"))
    assert f["1"].fused_into == "0" and f["2"].fused_into == "0"  # BN folded, ReLU fused into conv
    assert f["4"].fused_into == "3"  # ReLU6 (Clip) fused
    assert f["8"].fused_into == "7"  # Linear + ReLU -> FusedGemm
    assert f["0"].fused_into is None and f["5"].fused_into is None
    with pytest.raises(KeyError):
        fusion_for_backend(r, "no-such-backend")


def test_container_calls_are_counted():
    m = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    r = extract_layers(m, torch.randn(1, 3, 8, 8))
    assert r.module_calls == 2  # the outer and the inner Sequential; leaves are layers, not containers
    assert fusion_for_backend(r, "onnxruntime-cpu").module_calls == 2


def test_ort_nchwc_layout_and_its_composition_terms():
    from fastdeepiot.timemodel.model import call_terms

    m = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 12, 3, padding=1),
                      nn.AvgPool2d(2)).eval()
    calls = fusion_for_backend(extract_layers(m, torch.randn(1, 8, 8, 8)), "onnxruntime-cpu", nchwc_block=16)
    f = _by_name(calls)
    assert f["0"].layout == f["2"].layout == "nchwc" and f["1"].fused_into == "0"
    assert f["3"].layout is None  # a pool over 12 channels (not whole blocks) runs on NCHW: ORT reorders before it
    t = dict(zip([c.name for c in calls], call_terms(calls, [1.0 if c.kind == "layer" else None for c in calls])))
    assert t["0"]["nchwc_count"] == 1 and t["0"]["nchwc_elements"] == pytest.approx((8 * 64 + 16 * 64) / 1e6)
    assert t["1"] == {"fused_layers": 1.0, "fused_count": 1.0}
    assert t["3"]["reorder_elements"] == pytest.approx(12 * 64 / 1e6) and t["3"]["unfused_count"] == 1
    assert all(c.layout is None for c in fusion_for_backend(calls, "torch-cpu"))


@pytest.mark.parametrize("pool", [nn.AvgPool2d(2), nn.AvgPool2d(3, 1, 1), nn.MaxPool2d(2)])
@pytest.mark.parametrize("channels,block,on_nchwc", [(16, 16, True), (32, 16, True), (8, 16, False), (12, 16, False),
                                                      (24, 16, False), (8, 8, True), (24, 8, True), (12, 8, False)])
def test_ort_pool_stays_nchwc_with_whole_blocks(pool, channels, block, on_nchwc):
    # ORT's NchwcTransformerImpl::TransformPool: any pool kind, channels a multiple of the block (probed on a
    # 16-channel CPU, docs/ort_fusion.md); then a BatchNorm after it becomes R5's NCHWc conv with the ReLU fused
    m = nn.Sequential(nn.Conv2d(16, channels, 3, padding=1), pool, nn.BatchNorm2d(channels), nn.ReLU(),
                      nn.Conv2d(channels, 8, 1)).eval()
    f = _by_name(fusion_for_backend(extract_layers(m, torch.randn(1, 16, 12, 12)), "onnxruntime-cpu",
                                    nchwc_block=block))
    assert f["0"].layout == "nchwc"
    assert (f["1"].layout == "nchwc") is on_nchwc
    assert (f["3"].fused_into == "2") is on_nchwc  # the ReLU fused into the BatchNorm's per-channel conv


class _ConvThenReduce(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.conv, self.how, self.fc = nn.Conv2d(16, 32, 3, padding=1), how, nn.Linear(32, 4)

    def forward(self, x):
        y = self.conv(x)
        y = nn.functional.adaptive_avg_pool2d(y, 1).flatten(1) if self.how == "pool" else getattr(y, self.how)((2, 3))
        return self.fc(y)


@pytest.mark.parametrize("how,on_nchwc", [("pool", True), ("mean", False), ("amax", False), ("sum", False)])
def test_ort_reductions_priced_as_pools_run_on_nchw(how, on_nchwc):
    # a global average pool over whole blocks stays NCHWc (GlobalAveragePool); x.mean((2, 3)) and the other
    # reductions are exported as Reduce* ops, which ORT runs on NCHW after a ReorderOutput (probed)
    calls = fusion_for_backend(extract_layers(_ConvThenReduce(how).eval(), torch.randn(1, 16, 8, 8)),
                               "onnxruntime-cpu", nchwc_block=16)
    pool = [c for c in calls if c.kind == "layer" and c.family == "pool2d"]
    assert len(pool) == 1 and (pool[0].layout == "nchwc") is on_nchwc


def test_ort_fusion_residual_add():
    r = extract_layers(ResNetLike().eval(), torch.randn(1, 3, 16, 16))
    f = _by_name(fusion_for_backend(r, "onnxruntime-cpu"))
    add = [c for c in f.values() if c.family == "add"][0]
    assert add.fused_into == "conv2" and f["relu_1"].fused_into == "conv2"
    ext = _by_name(fusion_for_backend(r, "onnxruntime-cpu", level="extended"))
    assert ext["add"].fused_into is None and ext["bn2"].fused_into == "conv2"


class _CatConv(nn.Module):
    """A conv reading `cin` channels from a concat, then a residual add and an activation."""

    def __init__(self, cin, act):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, cin // 2, 1), nn.Conv2d(3, cin - cin // 2, 1)
        self.conv = nn.Conv2d(cin, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.act = act

    def forward(self, x):
        y = self.conv(torch.cat([self.a(x), self.b(x)], 1))
        return self.dw(self.act(self.conv2(y) + y))


@pytest.mark.parametrize("cin,act,nchwc,act_fused", [(24, nn.ReLU(), True, True), (50, nn.ReLU(), False, False),
                                                      (6, nn.LeakyReLU(), True, False), (20, nn.ReLU6(), True, False)])
def test_ort_nchwc_rules_probed_on_onnxruntime(cin, act, nchwc, act_fused):
    """A groups-1 conv runs NCHWc with fewer input channels than a block or a multiple of 4; after an
    NCHWc conv's Sum only relu/sigmoid/tanh fuse (after a FusedConv's Z, R2's list); depthwise with a
    multiple of 4 channels runs NCHWc (block 16 here, as on an AVX-512 machine)."""
    m, x = _CatConv(cin, act).eval(), torch.randn(1, 3, 8, 8)
    f = _by_name(fusion_for_backend(extract_layers(m, x), "onnxruntime-cpu", nchwc_block=16))
    assert (f["conv"].layout == "nchwc") is nchwc
    assert (f["act"].fused_into == "conv2") is act_fused
    assert f["dw"].layout == "nchwc"
    d = _by_name(fusion_for_backend(extract_layers(nn.Conv2d(36, 36, 3, groups=36), torch.randn(1, 36, 8, 8)),
                                    "onnxruntime-cpu", nchwc_block=16))
    e = _by_name(fusion_for_backend(extract_layers(nn.Conv2d(38, 38, 3, groups=38), torch.randn(1, 38, 8, 8)),
                                    "onnxruntime-cpu", nchwc_block=16))
    assert next(iter(d.values())).layout == "nchwc" and next(iter(e.values())).layout is None
    pytest.importorskip("onnxruntime")
    from fastdeepiot.graph.ort_check import check

    pred, got = check(m, x, "all")
    assert all(pred[k] == got[k] for k in ("activation", "add", "batchnorm")), (pred, got)


def test_ort_fusion_matches_onnxruntime():
    pytest.importorskip("onnxruntime")
    from fastdeepiot.graph.ort_check import check

    for m, x in ((_conv_bn_relu(), torch.randn(1, 8, 8, 8)), (ResNetLike().eval(), torch.randn(1, 3, 16, 16))):
        for level in ("all", "extended"):
            pred, got = check(m, x, level)
            for k in ("activation", "add", "batchnorm"):
                assert pred[k] == got[k], (level, k, pred, got)


def test_mean_over_time_after_a_gru_is_priced_as_a_pool():
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(8, 16, batch_first=True)

        def forward(self, x):
            return self.gru(x)[0].mean(dim=1)

    res = extract_layers(Head().eval(), torch.randn(2, 10, 8))
    mean = [c for c in res if c.op == "mean"]
    assert len(mean) == 1 and mean[0].family == "pool1d" and not res.unmodelled()
    assert mean[0].config.params == {"batch": 2, "mode": "avg", "channels": 16, "kernel": 10,
                                     "stride": 10, "size": 10}


# ------------------------------------------------------------------------------- shape propagation


class _Probe(nn.Module):
    """A custom leaf (it has a buffer of its own) that records what it reads."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(1))
        self.seen: list[float] = []

    def forward(self, x):
        self.seen.append(float(x.abs().sum()))
        return x * self.scale


class _Bottleneck(nn.Module):  # torchvision's style: `out += identity`, in-place ReLU
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


def _shape_nets():
    torch.manual_seed(0)
    big = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(inplace=True), nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32),
                        nn.ReLU(inplace=True), _Bottleneck(32), nn.MaxPool2d(3, 2, 1), _Bottleneck(32),
                        nn.AvgPool2d(2), nn.Conv2d(32, 16, 1), nn.Flatten(), nn.Linear(16 * 16 * 16, 10))
    return [("large feature maps", big.eval(), torch.randn(2, 3, 64, 64)),
            ("residual", ResNetLike().eval(), torch.randn(2, 3, 16, 16)),
            ("concat", ConcatNet().eval(), torch.randn(1, 8, 8, 8))]


@pytest.mark.parametrize("name,module,x", _shape_nets(), ids=[n for n, _, _ in _shape_nets()])
def test_shape_propagation_agrees_with_a_real_forward(name, module, x):
    """Shaped calls (convolutions, BatchNorm, pools, adds, in-place activations) give every node the
    shape torch.fx's ShapeProp records on a real forward, and leave the caller's input alone."""
    from torch.fx.passes.shape_prop import ShapeProp

    from fastdeepiot.graph.trace import trace

    x_before = x.clone()
    tg = trace(module, (x,))
    ours = {n.name: n.meta["shape"] for n in tg.nodes if n.op not in ("placeholder", "output")}
    assert torch.equal(x, x_before)
    gm = tg.gm
    with torch.no_grad():
        ShapeProp(gm).propagate(x.clone())
    real = {n.name: tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes
            if n.op not in ("placeholder", "output") and "tensor_meta" in n.meta}
    assert real and ours == real


def test_a_real_call_reads_zeros_where_a_shaped_call_made_its_input_up():
    """The made-up outputs of shaped calls are zeros wherever a real call reads them (a custom leaf here,
    after a conv whose output is large enough to be allocated empty), so a propagation is deterministic."""
    from fastdeepiot.graph.trace import trace

    probe = _Probe()
    m = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True), probe).eval()
    for _ in range(3):  # memory an empty tensor of that size may reuse, written non-zero
        del_me = torch.full((1, 64, 64, 64), 7.0)
        del del_me
    trace(m, (torch.randn(1, 3, 64, 64),))  # 64x64x64 = 262K elements
    assert probe.seen == [0.0]


@pytest.mark.parametrize("name,module,x", _shape_nets(), ids=[n for n, _, _ in _shape_nets()])
def test_tracer_fast_nodes_build_the_graph_fx_builds(name, module, x, monkeypatch):
    """Tracer.create_node's shortcut (fx's node creation without its SymInt walk) gives the graph fx's own
    create_node gives: the same nodes, names, ops, targets, arguments and users, in the same order, and a
    GraphModule whose output equals the module's."""
    import fastdeepiot.graph.trace as tr

    def graph_of(fast):
        monkeypatch.setattr(tr, "_FAST_NODES", fast)
        t = tr.Tracer()
        g = t.trace(module)
        g.lint()
        return g, t

    fast, t_fast = graph_of(True)
    slow, t_slow = graph_of(False)

    def rows(g):
        return [(n.name, n.op, n.target, str(n.args), str(n.kwargs), sorted(u.name for u in n.users)) for n in g.nodes]

    assert rows(fast) == rows(slow) and len(fast.nodes) == len(slow.nodes) > 3
    assert t_fast.node_name_to_scope.keys() == t_slow.node_name_to_scope.keys()
    with torch.no_grad():
        assert torch.allclose(torch.fx.GraphModule(module, fast)(x), module(x))


def test_tensors_made_while_tracing_stay_off_the_users_module():
    """fx sets a tensor the forward makes while tracing (torch.ones(..)) on the traced module as
    `_tensor_constantN`; Tracer keeps it in TracedGraph.constants: extraction and channel tracing leave
    the module's attributes as they were, the op reading it is priced, and the GraphModule still runs."""
    from fastdeepiot.graph.channels import trace_channels
    from fastdeepiot.graph.trace import trace

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 8, 1)

        def forward(self, x):
            return self.c(x) * torch.ones(1, 8, 1, 1) + torch.zeros(8, 1, 1)

    m, x = M().eval(), torch.randn(1, 3, 4, 4)
    before = dict(m.__dict__)
    r = extract_layers(m, x, cache=False)
    trace_channels(m, x)
    tg = trace(m, (x,))
    assert m.__dict__.keys() == before.keys() and not any(k.startswith("_tensor_constant") for k in dir(m))
    assert [(c.family, c.config.params["mode"]) for c in r if c.op in ("mul", "add")] == [("mul", "channel")] * 2
    assert len(tg.constants) == 2
    with torch.no_grad():
        assert torch.allclose(tg.gm(x), m(x))
    assert m.__dict__.keys() == before.keys()


def test_a_large_copy_priced_as_free_is_a_warning():
    """A .contiguous() / .clone() is a free op (a per-op constant in the composition): right for small copies,
    silent and far off for a 16 MiB one (it took ~18 ms where its network was priced at 0.02 ms)."""
    from fastdeepiot.graph.extract import extract_layers

    class Permuted(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            x = x.permute(0, 3, 1, 2).contiguous()
            return self.fc(x[:, :1, :1, :4])

    big = extract_layers(Permuted(), torch.randn(1, 256, 256, 64), cache=False)
    assert any("1 large copy (contiguous; 16.0 MiB written)" in w for w in big.warnings), big.warnings
    small = extract_layers(Permuted(), torch.randn(1, 8, 8, 16), cache=False)
    assert not any("cop" in w for w in small.warnings)


class _ConvAlsoReturned(nn.Module):
    """The conv's own output is returned beside its activation: ORT cannot fuse the ReLU into the conv."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = self.c(x)
        return y.relu(), y


class _ConvActivated(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return self.c(x).relu().flatten(1)


def test_ort_fusion_keeps_an_activation_whose_producer_the_network_returns():
    x = torch.zeros(1, 3, 8, 8)
    res = extract_layers(_ConvAlsoReturned(), x)
    assert res.outputs == {"c", "relu"}
    fused = fusion_for_backend(res, "onnxruntime-cpu")
    assert [c.fused_into for c in fused if c.op == "relu"] == [None]
    assert fused.outputs == res.outputs
    plain = fusion_for_backend(extract_layers(_ConvActivated(), x), "onnxruntime-cpu")
    assert [c.fused_into for c in plain if c.op == "relu"] == ["c"]  # returned only through a view: fused


def test_a_traced_graph_that_fails_on_its_input_is_not_called_untraceable():
    """Channel tracing tells a forward fx cannot trace from a traced graph that fails when run on the example
    input (here a Linear of 8 features given 5): the message names the failure, not torch.fx."""
    from fastdeepiot.graph.channels import TraceError, trace_channels

    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    with pytest.raises(TraceError, match=r"fails on the example input \(RuntimeError: mat1 and mat2") as e:
        trace_channels(m, torch.randn(1, 5))
    assert "cannot trace" not in str(e.value)


class _Copies(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how

    def forward(self, x):  # x: (2, 8, 4, 4), 256 elements
        if self.how == "shuffle":  # view, transpose, flatten: one copy
            return x.unflatten(1, (2, -1)).transpose(1, 2).flatten(1, 2)
        if self.how == "transpose+contiguous":  # the contiguous copies the transpose's view: still one copy
            return x.transpose(2, 3).contiguous()
        if self.how == "permute+pad":  # two copies: the permute, and the pad of its output (ONNX Runtime makes both)
            return torch.nn.functional.pad(x.permute(0, 2, 3, 1), (1, 1))
        return x.flatten(1).view(2, 8, 16)  # views only


@pytest.mark.parametrize("how,elements", [("shuffle", 256), ("transpose+contiguous", 256),
                                          ("permute+pad", 256 + 2 * 4 * 4 * 10), ("views", 0)])
def test_copied_elements_counts_each_copy_once(how, elements):
    """What the composition's copy term prices: the elements written by axis moves (a Transpose in ONNX Runtime,
    materialised downstream in eager PyTorch) and by explicit copies, a transpose and its .contiguous() once."""
    calls = extract_layers(_Copies(how), (torch.randn(2, 8, 4, 4),))
    assert copied_elements(calls) == pytest.approx(elements / 1e6)
