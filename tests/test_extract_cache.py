"""The extraction cache (graph.extract, keyed by graph.fingerprint) and the fast pricing path: the same
network is priced identically with and without the cache, and any change of structure -- pruning in
place, a different input shape, train/eval, an attribute the forward reads -- misses it."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from fastdeepiot.compression.surgery import prune_channels
from fastdeepiot.devices.fake import fake_layer_ms
from fastdeepiot.errors import UserError
from fastdeepiot.graph import extract as extract_mod
from fastdeepiot.graph.channels import trace_channels
from fastdeepiot.graph.extract import clear_cache, count_container_calls, extract_layers
from fastdeepiot.graph.fingerprint import fingerprint
from fastdeepiot.timemodel.model import TimeModel
from fastdeepiot.timemodel.tree import ModelTree, featurize, featurize_columns
from fastdeepiot.zoo import build_zoo_network, zoo_networks


class Block(nn.Module):
    def __init__(self, c, residual=True):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.residual = residual

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class Net(nn.Module):
    def __init__(self, c=24):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.b1, self.b2 = Block(c), Block(c)
        self.head = nn.Conv2d(c, 32, 1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        h = self.head(self.b2(self.b1(torch.relu(self.stem(x)))))
        return self.fc(h.mean((2, 3)))


def _calls_json(res):
    return [c.to_json() for c in res], res.module_calls, res.traced, list(res.warnings)


@pytest.fixture(scope="module")
def tm():
    """A small tree time model fitted on the fake device's times of Net-like configurations."""
    torch.manual_seed(0)
    by: dict = {}
    for c in range(4, 41, 2):
        for size in (8, 16):
            for call in extract_layers(Net(c), torch.randn(1, 3, size, size), cache=False):
                if call.kind == "layer":
                    by.setdefault(call.family, []).append(call.config)
    est = {f: ModelTree(min_samples_leaf=3, pruning="none").fit(featurize(cs), [fake_layer_ms(c) for c in cs])
           for f, cs in by.items()}
    comp = {"network_call": 0.01, "module_calls": 0.002, "unfused_layers": 1.1, "unfused_count": 0.001,
            "mixed_layers": 0.05, "free_ops": 0.001}
    return TimeModel(est, comp, {"backend": "torch-cpu"})


def test_cached_prediction_equals_a_fresh_one(tm):
    torch.manual_seed(0)
    m, x = Net().eval(), torch.randn(1, 3, 16, 16)
    clear_cache()
    first = tm.predict_network(m, x).to_dict()
    again = tm.predict_network(m, x).to_dict()  # from the cache
    clear_cache()
    fresh = tm.predict_network(m, x).to_dict()
    assert first == again == fresh
    assert _calls_json(extract_layers(m, x)) == _calls_json(extract_layers(m, x, cache=False))


def test_pruning_in_place_misses_the_cache(tm):
    """Compression prunes a network in place and re-prices it: a stale entry would be a silent wrong
    answer."""
    torch.manual_seed(0)
    m, x = Net().eval(), torch.randn(1, 3, 16, 16)
    clear_cache()
    before = tm.predict_network(m, x)
    cg = trace_channels(m, x)
    group = next(g for g in cg.groups() if g.width == 24)
    prune_channels(m, x, {group.name: list(range(10))}, cg)  # in place: 24 -> 10 channels
    after = tm.predict_network(m, x)
    clear_cache()
    fresh = tm.predict_network(m, x)
    assert after.to_dict() == fresh.to_dict()
    assert after.total_ms < before.total_ms
    assert any(lp.config.get("out_channels") == 10 or lp.config.get("channels") == 10 for lp in after.layers)


def test_structure_changes_miss_the_cache():
    torch.manual_seed(0)
    m, x = Net(), torch.randn(1, 3, 16, 16)
    keys = {fingerprint(m, (x,))}
    keys.add(fingerprint(m, (torch.randn(1, 3, 8, 8),)))  # input shape
    keys.add(fingerprint(m, (torch.randn(1, 3, 16, 16, dtype=torch.float64),)))  # input dtype
    keys.add(fingerprint(m.eval(), (x,)))  # train/eval
    m.b1.residual = False  # a plain attribute the forward branches on
    keys.add(fingerprint(m, (x,)))
    m.b2.conv[0] = nn.Conv2d(24, 24, 3, padding=2, bias=False)  # a submodule replaced: another padding
    keys.add(fingerprint(m, (x,)))
    assert None not in keys and len(keys) == 6
    # weight values are not structure
    with torch.no_grad():
        m.stem.weight.mul_(2)
    assert fingerprint(m, (x,)) in keys


def test_fingerprints_of_two_instances_of_one_structure_are_one_key():
    """The key hashes once and compares by value: a second build of a network finds the first's entry."""
    torch.manual_seed(0)
    a, x = Net().eval(), torch.randn(1, 3, 16, 16)
    b = copy.deepcopy(a)
    ka, kb = fingerprint(a, (x,)), fingerprint(b, (x,))
    assert ka is not kb and ka.value is not kb.value
    assert hash(ka) == hash(kb) and ka == kb and {ka: 1}[kb] == 1
    b.b1.residual = False
    assert fingerprint(b, (x,)) != ka
    clear_cache()
    first = extract_layers(a, (x,), copy=False)
    assert extract_layers(copy.deepcopy(a), (x,), copy=False) is first  # a hit, not a second trace


def test_attribute_change_gives_the_new_extraction():
    torch.manual_seed(0)
    m, x = Net().eval(), torch.randn(1, 3, 16, 16)
    with_add = extract_layers(m, x)
    m.b1.residual = False
    without = extract_layers(m, x)
    assert sum(c.op == "add" for c in with_add) == 2 and sum(c.op == "add" for c in without) == 1
    assert _calls_json(without) == _calls_json(extract_layers(m, x, cache=False))


def test_callers_cannot_change_the_cached_entry():
    torch.manual_seed(0)
    m, x = Net().eval(), torch.randn(1, 3, 16, 16)
    a = extract_layers(m, x)
    ref = _calls_json(a)
    a[0].name, a[0].fused_into = "changed", "x"
    a[1].inputs.append("y")
    a.warnings.append("w")
    assert _calls_json(extract_layers(m, x)) == ref
    # copy=False hands out the cached entry itself (read only), on a miss and on a hit alike
    clear_cache()
    shared = extract_layers(m, x, copy=False)
    assert extract_layers(m, x, copy=False) is shared and extract_layers(m, x) is not shared
    assert _calls_json(shared) == ref
    # the time model's callers get fusion's copies: changing them leaves the cached entry alone
    from fastdeepiot.graph.fusion import fusion_for_backend

    fused = fusion_for_backend(shared, "onnxruntime-cpu")
    fused[0].name, fused[1].inputs[:], fused[1].input_shapes[:] = "changed", [], []
    assert _calls_json(extract_layers(m, x)) == ref


def test_hooked_or_untraceable_modules_are_not_cached():
    m, x = Net().eval(), torch.randn(1, 3, 16, 16)
    h = m.stem.register_forward_hook(lambda *a: None)
    assert fingerprint(m, (x,)) is None
    h.remove()
    assert fingerprint(m, (x,)) is not None
    m.stem.scale = torch.ones(1)  # a tensor that is not a parameter or buffer: values could matter
    assert fingerprint(m, (x,)) is None

    class Dynamic(nn.Module):  # data-dependent control flow: hook fallback, never cached
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else x

    clear_cache()
    d = Dynamic()
    assert not extract_layers(d, torch.ones(2, 4)).traced
    assert len(extract_mod._CACHE) == 0


@pytest.mark.parametrize("name,module,x", zoo_networks(widths=(0.5,)), ids=lambda v: v if isinstance(v, str) else "")
def test_container_calls_from_the_trace_match_the_hooks(name, module, x):
    clear_cache()
    assert extract_layers(module, x).module_calls == count_container_calls(module, (x,))


def test_fast_featurize_and_tree_prediction_match_the_dataframe_path(tm):
    m, x = build_zoo_network("resnet", 0.5)
    for fam, est in tm.estimators.items():
        cs = [c.config for c in extract_layers(m, x, cache=False) if c.family == fam] or None
        if cs is None:
            continue
        cols, df = featurize_columns(cs), featurize(cs)
        pd.testing.assert_frame_equal(pd.DataFrame(cols), df, check_exact=True)
        assert np.array_equal(est.predict(cols), est.predict(df))


def test_priced_network_is_unchanged_by_the_cache(tm):
    """compression.cost prices many pruned copies; cached or not, the same curve."""
    from fastdeepiot.compression.cost import PricedNetwork, TimeCost

    torch.manual_seed(0)
    m, x = Net().eval(), torch.randn(1, 3, 16, 16)
    cg = trace_channels(m, x)
    groups = [g for g in cg.groups() if g.width > 1]
    clear_cache()
    a = PricedNetwork(m, x, TimeCost(tm), cg, groups)
    curves_a = [a.curve(g.name) for g in groups]
    b = PricedNetwork(copy.deepcopy(m), x, TimeCost(tm), cg, groups)  # all from the cache now
    assert a.total == b.total
    assert all(np.array_equal(ca, b.curve(g.name)) for ca, g in zip(curves_a, groups))


@pytest.mark.parametrize("conv,shape", [
    (nn.Conv2d(3, 8, 3, stride=2, padding=1), (2, 3, 17, 15)),
    (nn.Conv2d(8, 8, 3, padding="same", groups=8, bias=False), (1, 8, 9, 9)),
    (nn.Conv2d(4, 6, (3, 5), stride=(2, 1), padding=(0, 2), dilation=2), (1, 4, 20, 11)),
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), (1, 4, 8, 8)),  # not the meta path: run
    (nn.Conv1d(6, 16, 5, stride=3), (2, 6, 50)),
    (nn.Conv1d(6, 16, 3, padding="valid"), (6, 50)),  # unbatched
])
def test_convolutions_propagate_their_real_shapes(conv, shape):
    """Shape propagation prices plain convolutions on meta tensors; the shapes are the real ones."""
    from fastdeepiot.graph.trace import meta_shape, trace

    net = nn.Sequential(conv, nn.ReLU()).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        real = [tuple(conv(x).shape)] * 2
    tg = trace(net, (x,))
    assert [meta_shape(n) for n in tg.nodes if n.op == "call_module"] == real


@pytest.mark.parametrize("conv,shape", [
    (nn.Conv2d(3, 8, 3), (1, 4, 8, 8)),  # channels do not match
    (nn.Conv2d(3, 8, 5), (1, 3, 3, 3)),  # the kernel is larger than the input
    (nn.Conv1d(4, 8, 3, groups=2), (2, 6, 16)),
])
def test_a_convolution_the_real_call_rejects_fails_as_the_real_call(conv, shape):
    """Shaping a convolution by arithmetic never accepts a call the real convolution rejects."""
    from fastdeepiot.graph.trace import trace

    x = torch.randn(*shape)
    with pytest.raises(RuntimeError) as real, torch.no_grad():
        conv(x)
    with pytest.raises(RuntimeError) as shaped:
        trace(nn.Sequential(conv, nn.ReLU()).eval(), (x,))
    assert str(shaped.value).splitlines()[0] == str(real.value).splitlines()[0]


def test_train_mode_extraction_updates_batchnorm_from_real_values():
    """In train mode the one forward still computes convolutions: BatchNorm statistics move as before."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
    ref = copy.deepcopy(net)
    x = torch.randn(2, 3, 8, 8)
    extract_layers(net, x, cache=False)
    with torch.no_grad():
        ref(x)
    assert torch.equal(net[1].running_mean, ref[1].running_mean)
    assert torch.equal(net[1].running_var, ref[1].running_var)


def test_the_garbage_collector_is_paused_for_a_prediction_and_resumed_after_it(tm, monkeypatch):
    """predict_network pauses Python's cyclic collector (its collections scanned the whole process, ~10% of a
    cold call) and leaves it as it found it: running again after the call, after a failing call too, and still
    off where the caller had turned it off."""
    import gc

    seen = []
    real = TimeModel._predict_network

    def spy(self, *a, **k):
        seen.append(gc.isenabled())
        return real(self, *a, **k)

    monkeypatch.setattr(TimeModel, "_predict_network", spy)
    m, x = Net().eval(), torch.randn(1, 3, 16, 16)
    assert gc.isenabled()
    tm.predict_network(m, x)
    assert seen == [False] and gc.isenabled()
    with pytest.raises(Exception):
        tm.predict_network(m, torch.randn(1, 5, 16, 16))  # a forward that fails on its input
    assert gc.isenabled()
    gc.disable()
    try:
        tm.predict_network(m, x)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_network_with_lazy_modules_not_yet_run_is_refused_and_left_lazy(tm):
    """predict_network would materialise a LazyLinear (its class and weights change on its first forward): the
    user's network is left as it was and the error says what to do."""
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(4)).eval()
    with pytest.raises(UserError, match="lazy modules .*2: LazyLinear.*run one forward"):
        tm.predict_network(m, torch.randn(1, 3, 8, 8))
    assert type(m[2]) is nn.LazyLinear and torch.nn.parameter.is_lazy(m[2].weight)
    m(torch.randn(1, 3, 8, 8))  # materialised by the user: priced
    assert tm.predict_network(m, torch.randn(1, 3, 8, 8)).total_ms > 0


class _PosEnc(nn.Module):
    """A position encoding rebuilt on every call from constants (arange, sin), added to the input."""

    def __init__(self, n=256):
        super().__init__()
        self.n = n
        self.lin = nn.Linear(n, n)

    def forward(self, x):
        pos = torch.arange(self.n, dtype=torch.float32)
        pe = torch.sin(pos[:, None] * pos[None, :] / self.n)  # (n, n): 256 KiB, the same on every call
        return self.lin(x + pe)


def test_work_on_constants_is_named_in_a_warning_not_priced_silently(tm):
    """fx runs what does not depend on the inputs once while tracing; the prediction says so."""
    p = tm.predict_network(_PosEnc().eval(), torch.randn(256, 256), allow_unmodelled=True)
    assert any("do not depend on its inputs" in w and "256 KiB" in w for w in p.warnings)
    small = tm.predict_network(_PosEnc(16).eval(), torch.randn(16, 16), allow_unmodelled=True)
    assert not any("do not depend" in w for w in small.warnings)
