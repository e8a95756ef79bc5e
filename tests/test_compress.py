"""Compression: surgery on every supported family, plan replay, the time-aware search on the fake device."""

from __future__ import annotations

import math
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from fastdeepiot.compression.cost import PricedNetwork, TimeCost, snap_widths
from fastdeepiot.graph.channels import trace_channels
from fastdeepiot.compression.importance import CRITERIA, channel_slices
from fastdeepiot.compression.moves import MOVES, Context
from fastdeepiot.compression.moves.fold_bn import fold_batchnorm
from fastdeepiot.compression.moves.recurrence import StepDense, drop_recurrence
from fastdeepiot.compression.plan import Plan
from fastdeepiot.compression.search import compress
from fastdeepiot.compression.surgery import prune_channels, seg_indices
from fastdeepiot.devices.fake import FakeBackend
from fastdeepiot.errors import TargetUnreachableError, UserError
from fastdeepiot.profiling.runner import plan, profile
from fastdeepiot.profiling.store import Store
from fastdeepiot.timemodel.model import fit_time_model

FAMS = ["conv1d", "conv2d", "linear", "gru", "lstm", "batchnorm", "activation", "add", "concat", "pool1d",
        "pool2d"]


# ------------------------------------------------------------------------------ small networks


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv1d(3, 12, 3, padding=1), nn.BatchNorm1d(12)
        self.c2 = nn.Conv1d(12, 10, 3, padding=1)
        self.fc = nn.Linear(10 * 16, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.b1(self.c1(x))))).flatten(1))


class Conv2dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(8, 6, 3, padding=1), nn.ReLU())
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.fc1, self.fc2 = nn.Linear(6 * 4 * 4, 9), nn.Linear(9, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(self.dw(self.f(x)), 1))))


class GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 10, 3, padding=1)
        self.gru = nn.GRU(10, 12, batch_first=True)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):  # (B, 4, T): Conv1d -> GRU, where torch-pruning 1.6 crashes
        out, _ = self.gru(torch.relu(self.conv(x)).permute(0, 2, 1))
        return self.fc(out[:, -1])


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 9, num_layers=2, batch_first=True)
        self.fc = nn.Linear(9, 3)

    def forward(self, x):  # (B, T, 4)
        out, (h, c) = self.lstm(x)
        return self.fc(out.mean(1))


class DeepGRUNet(nn.Module):
    """Conv1d -> a 2-layer bidirectional GRU over (T, B, C): the conv's channels are layer 0's input only
    (probe h1: pruning them selected weight_ih_l0's columns once per layer and direction, an index error)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 10, 3, padding=1)
        self.gru = nn.GRU(10, 6, num_layers=2, bidirectional=True)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):  # (B, 4, T)
        out, _ = self.gru(torch.relu(self.conv(x)).permute(2, 0, 1))
        return self.fc(out[-1])


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = x + self.bn(self.a(x))  # residual add couples stem, a (and bn)
        y = y + self.b(y)  # ... and b
        return self.head(y.mean((2, 3)))


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.l, self.r = nn.Conv1d(3, 7, 3, padding=1), nn.Conv1d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm1d(12)
        self.m = nn.Conv1d(12, 6, 1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        h = self.bn(torch.cat([self.l(x), self.r(x)], dim=1))
        return self.fc(self.m(torch.relu(h)).mean(2))


NETS = {
    "conv1d": (Conv1dNet, (2, 3, 16)), "conv2d": (Conv2dNet, (2, 2, 8, 8)), "gru": (GRUNet, (2, 4, 10)),
    "lstm": (LSTMNet, (2, 7, 4)), "deep-gru": (DeepGRUNet, (2, 4, 10)), "residual": (ResNet, (2, 3, 6, 6)), "concat": (ConcatNet, (2, 3, 12)),
}


def _dropped_zeroed(model, cg, keep):
    """Zero every weight that reads a dropped channel: then pruning must not change the output."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for mem in cg.members:
            mod = m.get_submodule(mem.module)
            if mem.kind in ("conv_in", "linear_in", "rnn_in"):
                kept = set(seg_indices(cg, mem.segs, keep))
                width = sum(s.n * s.rep for s in mem.segs)
                drop = [i for i in range(width) if i not in kept]
                names = ["weight"] if mem.kind != "rnn_in" else [n for n, _ in mod.named_parameters()
                                                                if n.startswith("weight_ih_l0")]
                for n in names:
                    getattr(mod, n)[:, drop] = 0
            elif mem.kind == "rnn_hidden" and cg.find(mem.space) in keep:
                kept = set(keep[cg.find(mem.space)])
                drop = [i for i in range(mod.hidden_size) if i not in kept]
                for n, p in mod.named_parameters():
                    if n.startswith("weight_hh") or (n.startswith("weight_ih") and not n.startswith("weight_ih_l0")):
                        p[:, drop] = 0
    return m


@pytest.mark.parametrize("name", list(NETS))
def test_pruned_network_keeps_its_output_and_coupled_widths_agree(name):
    torch.manual_seed(0)
    cls, shape = NETS[name]
    model, x = cls().eval(), torch.randn(*shape)
    cg = trace_channels(model, x)
    groups = cg.groups()
    assert groups, name
    rng = np.random.default_rng(0)
    keep_by_name = {g.name: sorted(rng.choice(g.width, max(1, g.width // 2), replace=False).tolist()) for g in groups}
    keep = {cg.find(g.spaces[0]): keep_by_name[g.name] for g in groups}
    ref = _dropped_zeroed(model, cg, keep)
    y_ref = ref(x)
    pruned = prune_channels(copy.deepcopy(ref), x, keep_by_name)
    y = pruned(x)
    assert y.shape == model(x).shape
    # the dropped channels were read by nothing: the physically smaller network computes the same function
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    # coupled layers agree: re-tracing the pruned network gives the kept widths
    widths = {g.name: g.width for g in trace_channels(pruned, x).groups()}
    for g in groups:
        assert widths[g.name] == len(keep_by_name[g.name]), g.name


def test_coupling_rules():
    x = torch.randn(2, 3, 6, 6)
    cg = trace_channels(ResNet().eval(), x)
    names = {g.name: sorted(m.module for m in g.producers) for g in cg.groups()}
    assert names == {"stem": ["a", "b", "stem"]}  # residual adds unite stem, a and b; head is the output
    gm = trace_channels(GRUNet().eval(), torch.randn(2, 4, 10))
    kinds = {(m.module, m.kind) for m in gm.members}
    assert [g.name for g in gm.groups()] == ["conv", "gru"] and ("fc", "linear_in") in kinds
    # the GRU's hidden units: 3 gate blocks of rows, recurrent columns, the classifier's input
    g = gm.groups()[1]
    sl = channel_slices(GRUNet(), gm, g)
    assert any(t.shape == (36, 10) and d == 0 and pos[1] == [1, 13, 25] for t, d, pos in sl)
    cc = trace_channels(ConcatNet().eval(), torch.randn(2, 3, 12))
    m = [mm for mm in cc.members if mm.module == "m"][0]
    assert [s.n for s in m.segs] == [7, 5]  # the consumer reads the concatenation
    c1 = trace_channels(Conv1dNet().eval(), torch.randn(2, 3, 16))
    fc = [mm for mm in c1.members if mm.module == "fc"][0]
    assert fc.segs[0].rep == 16  # flatten: each channel is 16 inputs of the Linear


def test_unknown_ops_and_outputs_are_never_pruned():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(3, 8, 1)
            self.n = nn.LayerNorm(8)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.n(self.c(x).mean(2)))

    cg = trace_channels(Odd().eval(), torch.randn(2, 3, 5))
    assert cg.groups() == []


@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_importance_prefers_live_channels(criterion):
    torch.manual_seed(0)
    model, x = GRUNet(), torch.randn(16, 4, 10)
    with torch.no_grad():
        model.conv.weight[:5] *= 1e-3  # five nearly dead conv channels
        model.conv.bias[:5] = 0
    cg = trace_channels(model, x)
    batches = [(x, torch.randint(0, 5, (16,)))]
    imp = CRITERIA[criterion](model, cg, cg.groups(), batches)
    s = imp["conv"]
    assert s.shape == (10,) and s[:5].max() < s[5:].min()
    assert imp["gru"].shape == (12,)


# ------------------------------------------------------------------------------ plan replay


def test_plan_replays_onto_a_fresh_model_with_identical_weights(tmp_path):
    torch.manual_seed(0)
    from fastdeepiot.tasks.nets import DeepSense

    original = DeepSense(sensor_channels=(8, 8), merge_channels=(12, 12), gru_hidden=10).eval()
    x = torch.randn(1, 6, 128)
    with torch.no_grad():  # non-trivial BatchNorm statistics for the fold
        for m in original.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    steps = [{"op": "prune", "keep": {"acc.0.0": [0, 2, 5], "gru": [1, 3, 4, 9]}},
             {"op": "remove", "module": "merge.1"},
             {"op": "shorten_sequence", "module": "gru", "factor": 2},
             {"op": "prune", "keep": {"merge.0.0": [0, 1, 2, 3, 4, 7]}},
             {"op": "drop_recurrence", "module": "gru"},
             {"op": "prune", "keep": {"gru.rnn.proj": [0, 2]}},
             {"op": "fold_bn", "conv": "gyro.1.0", "bn": "gyro.1.1"}]
    plan_ = Plan([6, 128], steps)
    pruned = plan_.apply(original, copy_model=True)
    plan_.save(tmp_path / "plan.json")
    again = Plan.load(tmp_path / "plan.json").apply(copy.deepcopy(original))
    sa, sb = pruned.state_dict(), again.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert pruned(x).shape == original(x).shape == (1, 6)
    assert pruned.gru.stride == 2 and pruned.acc[0][0].out_channels == 3
    assert isinstance(pruned.gru.rnn, StepDense) and pruned.gru.rnn.proj.out_features == 2
    assert pruned.classifier.in_features == 2
    json.loads((tmp_path / "plan.json").read_text())


def test_dropped_recurrence_starts_from_the_cells_own_zero_state_step():
    """StepDense is the GRU cell's update from a zero state: exact when the update gate is shut (z = 0) and
    the reset gate does not depend on the input; an LSTM keeps its outputs' shapes and unpacking."""
    torch.manual_seed(0)
    gru = nn.GRU(5, 7, batch_first=True)
    with torch.no_grad():
        gru.weight_ih_l0[:14] = 0  # r, z independent of x
        gru.bias_ih_l0[7:14] = -40.0  # z = 0: h = n
    x = torch.randn(3, 1, 5)  # one step from h0 = 0
    torch.testing.assert_close(StepDense(gru)(x)[0], gru(x)[0], rtol=1e-5, atol=1e-6)
    net = LSTMNet().eval()
    with pytest.raises(UserError, match="single-layer"):  # two layers: not droppable
        drop_recurrence(net, "lstm")
    net.lstm = nn.LSTM(4, 9, batch_first=True)
    y = net(torch.randn(2, 7, 4))
    drop_recurrence(net, "lstm")
    assert net(torch.randn(2, 7, 4)).shape == y.shape and isinstance(net.lstm, StepDense)


def test_batchnorm_folding_is_exact():
    torch.manual_seed(0)
    net = Conv2dNet().eval()
    with torch.no_grad():
        net.f[1].running_mean.uniform_(-1, 1)
        net.f[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 2, 8, 8)
    y = net(x)
    fold_batchnorm(net, "f.0", "f.1")
    assert isinstance(net.f[1], nn.Identity)
    torch.testing.assert_close(net(x), y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dim", [1, 2])
def test_batchnorm_folds_into_a_transposed_conv_exactly(dim):
    """A decoder's ConvTranspose + BatchNorm folds like a conv (the output channels are the weight's second axis);
    a grouped ConvTranspose is left alone."""
    from fastdeepiot.compression.moves.fold_bn import fold_all_batchnorm

    torch.manual_seed(0)
    ct, bn = (nn.ConvTranspose2d, nn.BatchNorm2d) if dim == 2 else (nn.ConvTranspose1d, nn.BatchNorm1d)
    net = nn.Sequential(ct(4, 6, 2, stride=2), bn(6), nn.ReLU(), ct(6, 6, 2, stride=2, groups=2), bn(6)).eval()
    with torch.no_grad():
        for m in (net[1], net[4]):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.uniform_(0.5, 2)
    x = torch.randn(2, 4, *([5] * dim))
    y = net(x)
    assert fold_all_batchnorm(net, x) == [("0", "1")]
    assert isinstance(net[1], nn.Identity) and isinstance(net[4], bn)
    torch.testing.assert_close(net(x), y, rtol=1e-4, atol=1e-5)


def test_folding_into_a_frozen_conv_keeps_it_frozen():
    """A user's frozen layer stays frozen when its BatchNorm is folded into it (probe 4: it came back trainable)."""
    net = Conv2dNet().eval()
    net.f[0].requires_grad_(False)
    fold_batchnorm(net, "f.0", "f.1")
    assert not net.f[0].weight.requires_grad and not net.f[0].bias.requires_grad
    net = Conv2dNet().eval()
    fold_batchnorm(net, "f.0", "f.1")
    assert net.f[0].weight.requires_grad and net.f[0].bias.requires_grad


# ------------------------------------------------------------------------------ the search (fake device)


@pytest.fixture(scope="module")
def fake_tm(tmp_path_factory):
    db = tmp_path_factory.mktemp("fakec") / "fake.db"
    backend = FakeBackend(step=16)
    with Store.open(db, backend.fingerprint(), create=True) as store:
        profile(backend, store, plan(FAMS, seed=0, network_every=60), max_new=1300)
    with Store.open(db) as store:
        return fit_time_model(store, holdout=0.0)


class Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv1d(6, 40, 3, padding=1), nn.BatchNorm1d(40)
        self.c2 = nn.Conv1d(40, 40, 3, padding=1)
        self.fc = nn.Linear(40, 3)

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.b1(self.c1(x)))))
        return self.fc(nn.functional.adaptive_avg_pool1d(h, 1).flatten(1))


def _toy_data(n=192, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, 32, generator=g)
    y = (x[:, 0].mean(1) > 0).long() + (x[:, 1].mean(1) > 0).long()
    return (DataLoader(TensorDataset(x[:128], y[:128]), batch_size=32, shuffle=True, generator=g),
            DataLoader(TensorDataset(x[128:], y[128:]), batch_size=64))


def test_staircase_leads_the_search_to_step_edges(fake_tm):
    torch.manual_seed(0)
    model, x = Wide().eval(), torch.randn(1, 6, 32)
    cg = trace_channels(model, x)
    priced = PricedNetwork(model, x, TimeCost(fake_tm), cg, cg.groups())
    for g in cg.groups():
        snapped = snap_widths(priced.curve(g.name), 0.002 * priced.total)
        assert snapped and snapped[0] == 32 and all(w % 16 == 0 for w in snapped[:2]), (g.name, snapped)
    res = compress(model, _toy_data(), time_model=fake_tm, target_ms=0.8 * priced.total, finetune_steps=2,
                   final_epochs=0.5, max_iters=6, moves=("width",), evaluate_top=1, measure=True)
    widths = [res.model.c1.out_channels, res.model.c2.out_channels]
    assert all(w % 16 == 0 for w in widths) and min(widths) < 40, widths
    assert res.final["predicted_ms"] <= 0.8 * priced.total
    assert res.final["measured_ms"] == pytest.approx(FakeBackend().network_ms(res.model, x))
    # the plan replays onto the original to give the same architecture
    again = res.plan.apply(model, copy_model=True)
    assert [again.c1.out_channels, again.c2.out_channels] == widths


def test_batchnorm_is_folded_before_the_final_fine_tune(fake_tm, monkeypatch):
    """Folding is exact, and the final fine-tune trains the folded network (no BatchNorm left to update):
    the plan ends with the fold, the returned model has no BatchNorm, and the plan replays onto the
    original to an architecture that takes the returned weights."""
    import fastdeepiot.compression.search as search

    tuned, real = [], search.finetune  # (steps, whether the network fine-tuned had a BatchNorm)

    def spy(m, loader, steps, **kw):
        tuned.append((steps, any(isinstance(b, nn.BatchNorm1d) for b in m.modules())))
        return real(m, loader, steps, **kw)

    monkeypatch.setattr(search, "finetune", spy)
    torch.manual_seed(0)
    model, x = Wide().eval(), torch.randn(1, 6, 32)
    res = search.compress(model, _toy_data(), time_model=fake_tm, max_accuracy_drop=100.0, finetune_steps=1,
                   final_epochs=0.5, max_iters=1, moves=("width", "fold_bn"), measure=False)
    assert tuned[-1] == (2, False)  # the final fine-tune: 0.5 epochs of 4 batches, on the folded network
    assert res.plan.steps[-1] == {"op": "fold_bn", "conv": "c1", "bn": "b1"}
    assert not any(isinstance(m, nn.BatchNorm1d) for m in res.model.modules())
    again = res.plan.apply(model, copy_model=True)
    again.load_state_dict(res.model.state_dict())
    assert torch.allclose(again(x), res.model(x))


class Narrow(nn.Module):
    def __init__(self, width=30):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(6, width, 3, padding=1), nn.Conv1d(width, width, 3, padding=1)
        self.fc = nn.Linear(width, 3)

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(h.mean(2))


def test_a_distant_step_edge_is_also_approached_by_a_stepping_stone(fake_tm):
    """30 channels on a 16-channel staircase: nothing is saved until 16, a 47% cut; besides the jump the
    search also proposes a stone a quarter of the way down, credited with its share of the edge's saving."""
    torch.manual_seed(0)
    model, x = Narrow().eval(), torch.randn(1, 6, 32)
    cost = TimeCost(fake_tm)
    ctx = Context(x, (1, 3), cost, cost.price(model, x), 0.05, "l1", [], 0)
    cands = {c.desc: c for c in MOVES["width"].propose(model, ctx)}
    assert "c1 30->16" in cands and "c1 30->22 (toward 16)" in cands, list(cands)
    jump, stone = cands["c1 30->16"], cands["c1 30->22 (toward 16)"]
    assert stone.saving == pytest.approx(jump.saving * 8 / 14)
    assert stone.stone and not jump.stone  # tried only when every direct move is over budget


def test_an_edge_beyond_the_largest_cut_is_approached_only_by_stones(fake_tm, monkeypatch):
    """With at most a quarter of a group's channels cut per step, 30 -> 16 (47%) is no direct step: the group
    proposes only the stone toward it (before, the widest edge was proposed whatever the cut: ONNX Runtime's
    learned staircase asked for 64 -> 2 channels, a fine-tune wasted on a network at chance)."""
    from fastdeepiot.compression.moves.width import Width

    monkeypatch.setattr(Width, "max_cut", 0.25)
    torch.manual_seed(0)
    model, x = Narrow().eval(), torch.randn(1, 6, 32)
    cost = TimeCost(fake_tm)
    ctx = Context(x, (1, 3), cost, cost.price(model, x), 0.05, "l1", [], 0)
    cands = {c.desc: c for c in MOVES["width"].propose(model, ctx)}
    assert "c1 30->16" not in cands and "c1 30->22 (toward 16)" in cands, list(cands)
    assert all(c.stone for c in cands.values() if c.desc.startswith("c1 "))


def test_a_structural_step_far_over_the_limit_is_not_tried_again(fake_tm, monkeypatch):
    """`mark_hopeless`: a structural step whose short fine-tune lost more than HOPELESS x (budget + slack) is
    evaluated once and then no longer proposed (here nothing else is left, so the run ends), and the notes
    name it; under a budget it stays within, it is tried as before."""
    from fastdeepiot.compression import search

    real_acc = search._Search.acc
    # without c2 the network is scored at 0%: 30+ points lost, far over 2 x (0.5 + 1) points
    monkeypatch.setattr(search._Search, "acc", lambda self, m, loader: (
        0.0 if isinstance(getattr(m, "c2", None), nn.Identity) else real_acc(self, m, loader)))
    lines: list[str] = []
    kw = dict(time_model=fake_tm, moves=("remove",), finetune_steps=1, final_epochs=0.2, max_iters=3,
              measure=False, progress=lines.append)
    torch.manual_seed(0)
    res = compress(Wide().eval(), _toy_data(), max_accuracy_drop=0.5, **kw)
    assert [ln.strip().split(":")[0] for ln in lines if ln.strip().startswith("iter") and "remove c2:" in ln] == [
        "iter 1"], lines
    assert any("remove c2 lost" in ln and "not tried again" in ln for ln in lines)
    assert any(n.startswith("not tried again") and "remove c2" in n for n in res.notes), res.notes
    assert "search stopped: no candidate saves time" in res.notes and not res.plan.steps
    lines.clear()
    torch.manual_seed(0)
    free = compress(Wide().eval(), _toy_data(), max_accuracy_drop=100.0, **kw)
    assert not any("not tried again" in x for x in lines + free.notes)


def test_unreachable_time_target_is_an_error(fake_tm):
    lines = []
    with pytest.raises(TargetUnreachableError, match="cannot be met.*the network starts at"):
        compress(Wide().eval(), _toy_data(), time_model=fake_tm, target_ms=1e-4, measure=False,
                 progress=lines.append)
    assert lines == []  # said before any progress: the CLI's one line (it logged 'base: ...' first, probe s20)


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_integer_labels_of_any_width_are_class_indices(fake_tm, dtype):
    """Labels as int32 or uint8 class indices (numpy's default int on some platforms, a byte-encoded data set)
    are read as int64: cross-entropy in fine-tuning and Taylor importance took only int64 (probe h1: a
    RuntimeError from torch for int32 labels)."""
    tr, va = _toy_data()
    tr = DataLoader(TensorDataset(tr.dataset.tensors[0], tr.dataset.tensors[1].to(dtype)), batch_size=32)
    va = DataLoader(TensorDataset(va.dataset.tensors[0], va.dataset.tensors[1].to(dtype)), batch_size=64)
    res = compress(Wide().eval(), (tr, va), time_model=fake_tm, max_accuracy_drop=50.0, finetune_steps=1,
                   final_epochs=0.1, max_iters=1, criterion="taylor", measure=False, progress=False)
    assert res.model(torch.randn(1, 6, 32)).shape == (1, 3)


@pytest.mark.parametrize("how", ["unavailable", "unknown"])
def test_a_device_that_cannot_measure_is_an_error_before_any_work(fake_tm, monkeypatch, how):
    """compress (and run_baseline) measures on the time model's device (or `backend`) at the very end: a device
    that is not available here (a torch-cuda model on a CPU machine) or unknown must be refused before the
    search, not after it (probe h1: the whole search ran, then the UserError threw its result away)."""
    from fastdeepiot.compression.baselines import run_baseline
    kw = {}
    if how == "unavailable":
        monkeypatch.setattr(FakeBackend, "availability", classmethod(lambda cls: (False, "switched off")))
        expect = "not available here: switched off"
    else:
        kw["backend"] = "no-such-device"
        expect = "unknown device 'no-such-device'"
    lines = []
    with pytest.raises(UserError, match=expect):
        compress(Wide().eval(), _toy_data(), time_model=fake_tm, max_accuracy_drop=50.0, finetune_steps=1,
                 final_epochs=0.1, max_iters=1, progress=lines.append, **kw)
    assert lines == []
    with pytest.raises(UserError, match=expect):
        run_baseline("torch-pruning-l1-uniform", Wide().eval(), _toy_data(), ratio=0.5, time_model=fake_tm,
                     budget_steps=1, iterative_steps=1, progress=lines.append, **kw)
    assert lines == []
    # without measuring, the device is never asked for
    compress(Wide().eval(), _toy_data(), time_model=fake_tm, max_accuracy_drop=50.0, finetune_steps=1,
             final_epochs=0.1, max_iters=1, measure=False, progress=False, **kw)


def test_the_network_is_priced_and_measured_at_the_example_inputs_batch(fake_tm):
    """example_input (with its batch dimension) is what predict_network prices; compress cut it to batch 1,
    so a network served at batch 8 was searched and measured at batch 1 without a word (probe h1: an MLP's
    example at batch 64 reported 0.056 ms, predict_network 0.192). Without one, the first validation input
    (batch 1)."""
    torch.manual_seed(0)
    model = Wide().eval()
    x8 = torch.randn(8, 6, 32)
    kw = dict(time_model=fake_tm, max_accuracy_drop=50.0, finetune_steps=1, final_epochs=0.1, max_iters=1,
              progress=False)
    res = compress(model, _toy_data(), example_input=x8, **kw)
    assert res.base["predicted_ms"] == pytest.approx(fake_tm.predict_network(model, x8).total_ms)
    assert res.final["predicted_ms"] == pytest.approx(fake_tm.predict_network(res.model, x8).total_ms)
    assert res.final["measured_ms"] == pytest.approx(FakeBackend().network_ms(res.model, x8))
    res1 = compress(model, _toy_data(), measure=False, **kw)
    assert res1.base["predicted_ms"] == pytest.approx(fake_tm.predict_network(model, x8[:1]).total_ms)
    assert res.base["predicted_ms"] > res1.base["predicted_ms"]


def test_the_result_is_measured_at_the_time_models_thread_count(fake_tm, monkeypatch):
    """A time model fitted at 4 threads predicts 4-thread times; compress and run_baseline measured at 1 thread
    whatever the model (predict --measure and the main job time at the model's count), so the predicted and
    measured figures of one report were of two settings (probe h1)."""
    import fastdeepiot.compression.search as search
    from fastdeepiot.compression.baselines import run_baseline
    seen = []
    real = search.time_networks

    def spy(models, x, backend, threads=1, rounds=5):
        seen.append(threads)
        return real(models, x, backend, threads=threads, rounds=rounds)

    monkeypatch.setattr(search, "time_networks", spy)
    tm4 = copy.deepcopy(fake_tm)
    tm4.device = {**fake_tm.device, "threads": 4}
    compress(Wide().eval(), _toy_data(), time_model=tm4, max_accuracy_drop=50.0, finetune_steps=1,
             final_epochs=0.1, max_iters=1, progress=False)
    run_baseline("torch-pruning-l1-uniform", Wide().eval(), _toy_data(), ratio=0.5, time_model=tm4,
                 budget_steps=1, iterative_steps=1)
    assert seen == [4, 4]


def _gru_data(n):
    """(train, val) loaders of (B, 4, 16) sequences for GRUNet: 96 training samples, the rest validation."""
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(n, 4, 16, generator=g)
    ys = (xs[:, 0].mean(1) > 0).long()
    return (DataLoader(TensorDataset(xs[:96], ys[:96]), batch_size=32, shuffle=True, generator=g),
            DataLoader(TensorDataset(xs[96:], ys[96:]), batch_size=64))


def test_accuracy_budget_search_on_a_conv_gru_network(fake_tm):
    torch.manual_seed(0)
    model, x = GRUNet(), torch.randn(1, 4, 16)
    res = compress(model, _gru_data(160), time_model=fake_tm, max_accuracy_drop=100.0, finetune_steps=1, final_epochs=0.3,
                   max_iters=3, criterion="l1", measure=False)
    assert res.final["predicted_ms"] < res.base["predicted_ms"]
    assert res.model(x).shape == model(x).shape
    assert len(res.history) >= 3 and res.plan.steps
    moves = " ".join(h.get("move") or "" for h in res.history)
    assert any(m in moves for m in ("shorten", "drop recurrence", "->")), moves


def test_search_drops_a_recurrence_whose_per_step_cost_dominates(fake_tm):
    """The fake device charges a fixed cost per GRU step: dropping the recurrence is priced as a large
    saving, proposed, taken under a generous budget, recorded in the plan, and replays."""
    torch.manual_seed(0)
    model, x = GRUNet().eval(), torch.randn(1, 4, 16)
    cost = TimeCost(fake_tm)
    cands = MOVES["recurrence"].propose(model, Context(x, (1, 5), cost, cost.price(model, x), 0.08, "l1", [], 0))
    assert [c.step for c in cands] == [{"op": "drop_recurrence", "module": "gru"}]
    assert cands[0].saving > 0.2 * cost.price(model, x)
    res = compress(model, _gru_data(128), time_model=fake_tm, max_accuracy_drop=100.0, finetune_steps=1, final_epochs=0.2,
                   max_iters=1, moves=("recurrence",), measure=False)
    assert res.plan.steps == [{"op": "drop_recurrence", "module": "gru"}]
    assert isinstance(res.model.gru, StepDense) and res.final["predicted_ms"] < res.base["predicted_ms"]
    assert isinstance(res.plan.apply(model, copy_model=True).gru, StepDense)


def test_cli_unreachable_target_exits_2(fake_tm, tmp_path, capsys):
    from fastdeepiot import checkpoints, tasks
    from fastdeepiot.cli import main
    from fastdeepiot.errors import DataMissingError

    t = tasks.get("har")
    try:
        t.datasets()
    except DataMissingError:
        pytest.skip("HAPT data not installed")
    ckpt = checkpoints.save_checkpoint(tmp_path / "har.pt", t.make_model(), "har")
    fake_tm.save(tmp_path / "tm.json")
    code = main(["compress", str(ckpt), "--task", "har", "--time-model", str(tmp_path / "tm.json"),
                 "--target-ms", "0.0001", "-o", str(tmp_path / "out.pt"), "--no-measure"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cannot be met" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.pt").exists()


def test_compressed_checkpoint_loads_like_a_trained_one(tmp_path):
    """`fastdeepiot evaluate` reads what `fastdeepiot compress` writes."""
    from fastdeepiot import checkpoints, tasks
    from fastdeepiot.checkpoints import save_compressed

    torch.manual_seed(0)
    t = tasks.get("har")
    model = t.make_model().eval()
    plan_ = Plan([6, 128], [{"op": "shorten_sequence", "module": "gru", "factor": 2}])
    pruned = plan_.apply(model, copy_model=True)
    path = save_compressed(tmp_path / "fast.pt", pruned, plan_, "har", model.net_name, model.arch)
    loaded, meta = checkpoints.load_checkpoint(path, task="har")
    x = torch.randn(2, 6, 128)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))
    assert meta["plan"]["steps"][0]["op"] == "shorten_sequence"
    with pytest.raises(UserError):
        checkpoints.load_checkpoint(path, task="userid")


def test_paired_drop_upper_bound():
    import torch

    from fastdeepiot.compression.finetune import paired_drop_upper

    base = torch.ones(1000, dtype=torch.bool)
    same = base.clone()
    assert paired_drop_upper(base, same, 0.9) == 0.0  # identical predictions: no uncertainty
    new = base.clone()
    new[:10] = False  # 1 point lost, 10 discordant samples
    point = paired_drop_upper(base, new, 0.5)
    assert abs(point - 1.0) < 1e-9
    upper = paired_drop_upper(base, new, 0.9)
    assert 1.3 < upper < 1.5  # 1 + 1.2816 * sqrt(10/1e6 - 1e-4/1e3) * 100
    # the same net drop with many more disagreements is less certain
    noisy = base.clone()
    noisy[:60] = False
    base2 = base.clone()
    base2[60:110] = False
    noisy[60:110] = True
    assert paired_drop_upper(base2, noisy, 0.9) > upper


def test_distillation_pulls_the_student_toward_the_teacher():
    """Fine-tuning with a teacher (the default in compress) matches the teacher's outputs, labels aside."""
    import torch.nn.functional as F

    from fastdeepiot.compression.finetune import finetune

    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    x = torch.randn(256, 4)
    loader = [(x[i:i + 32], torch.randint(0, 3, (32,))) for i in range(0, 256, 32)]  # labels are noise

    def kl():
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(student(x), 1), F.softmax(teacher(x), 1), reduction="batchmean"))

    before = kl()
    finetune(student, loader, 300, lr=1e-2, teacher=teacher, distill_weight=1.0, weight_decay=0.0)
    assert kl() < 0.1 * before


# ------------------------------------------------------------------------------ agreement acceptance (few labels)


def test_wilson_bound_of_disagreement_by_hand():
    import math

    from fastdeepiot.compression.agreement import disagreement_upper, wilson_upper

    z = 1.2815515655446004  # the one-sided 90% normal quantile
    assert wilson_upper(0, 1000, 0.9) == pytest.approx(z * z / (1000 + z * z))  # none seen: z^2 / (n + z^2)
    ref = torch.arange(1000) % 3
    new = ref.clone()
    new[:10] = (new[:10] + 1) % 3  # 10 of 1000 top-1 predictions differ
    upper = disagreement_upper(new != ref, 0.9)
    assert upper == pytest.approx(1.4912, abs=1e-3)
    p = upper / 100  # the Wilson bound is the rate at which the score test of 10 / 1000 sits at -z
    assert (10 - 1000 * p) / math.sqrt(1000 * p * (1 - p)) == pytest.approx(-z, abs=1e-9)
    assert disagreement_upper(new != ref, 0.5) == pytest.approx(1.0)  # 0.5: the point estimate
    assert wilson_upper(10, 1000, 0.95) > wilson_upper(10, 1000, 0.9) > wilson_upper(9, 1000, 0.9)
    assert wilson_upper(0, 0, 0.9) == 1.0  # nothing seen: nothing bounded


class _Lookup(nn.Module):
    """Top-1 prediction table[i] for the input i (one-hot logits over 3 classes)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x):
        return nn.functional.one_hot(self.table[x[:, 0].long()], 3).float()


def test_pool_judges_each_part_against_the_original():
    from fastdeepiot.compression.agreement import AgreementPool, predictions

    ref = torch.arange(100) % 3
    new = ref.clone()
    flip = [0, 1, 20, 70, 71, 72]  # 2 of the 10 validation inputs, 1 of 40 noisy, 3 of 50 mixed
    new[flip] = (new[flip] + 1) % 3
    x = torch.arange(100).float()[:, None]
    pool = AgreementPool(x, predictions(_Lookup(ref), x), 10, 40, 50, x[:0], ref[:0], 0, 10)
    j = pool.judge(_Lookup(new), 0.9)
    assert j["pool_disagreement"] == pytest.approx(6.0) and j["val_disagreement"] == pytest.approx(20.0)
    assert j["noise_disagreement"] == pytest.approx(2.5) and j["mixup_disagreement"] == pytest.approx(6.0)
    assert j["drop_upper_bound"] > 6.0 and pool.judge(_Lookup(ref), 0.9)["pool_disagreement"] == 0.0
    assert pool.train_disagreement(_Lookup(new)) is None


def test_agreement_pool_is_seeded_without_raw_training_inputs_and_leaves_the_shuffle_alone():
    from fastdeepiot.compression.agreement import AgreementPool

    model = Wide().eval()
    tr, va = _toy_data()
    pool = AgreementPool.build(model, tr, va, size=256, seed=3)
    assert (pool.n_val, pool.n_noise, pool.n_mixup, pool.n_labelled) == (64, 96, 96, 64) and len(pool) == 256
    assert torch.equal(pool.x[:64], va.dataset.tensors[0])  # the labelled inputs, raw
    train_x = tr.dataset.tensors[0]
    assert not (pool.x[64:, None] == train_x[None]).flatten(2).all(2).any()  # no raw training input
    assert torch.equal(AgreementPool.build(model, tr, va, size=256, seed=3).x, pool.x)  # fixed per seed
    assert not torch.equal(AgreementPool.build(model, tr, va, size=256, seed=4).x, pool.x)
    tr2, _ = _toy_data()  # reading the training inputs left the shuffle as it was: fine-tuning draws the same
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(tr, tr2))


def test_labelled_check_vetoes_only_a_loss_the_split_resolves():
    from fastdeepiot.compression.agreement import labelled_confirms, labelled_lower

    def masks(n, lost):
        base = torch.ones(n, dtype=torch.bool)
        new = base.clone()
        new[:lost] = False
        return base, new

    # n = 54, budget 1 point: two samples lost is within what the split resolves at 90%, three is not
    assert labelled_lower(*masks(54, 2), 0.9) == pytest.approx(0.410, abs=1e-3)
    assert labelled_lower(*masks(54, 3), 0.9) == pytest.approx(1.561, abs=1e-3)
    assert labelled_confirms(1.0, lower=labelled_lower(*masks(54, 2), 0.9))
    assert not labelled_confirms(1.0, lower=labelled_lower(*masks(54, 3), 0.9))
    assert not labelled_confirms(1.0, lower=labelled_lower(*masks(501, 9), 0.9))  # n = 501: nine samples
    assert labelled_confirms(1.0, lower=labelled_lower(*masks(501, 8), 0.9))
    # a custom metric (no per-sample correctness): the point drop within the budget plus one sample
    assert labelled_confirms(1.0, drop=2.85, n_labelled=54) and not labelled_confirms(1.0, drop=3.8, n_labelled=54)


class _Plain(nn.Module):
    """Wide without BatchNorm."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(6, 40, 3, padding=1), nn.Conv1d(40, 40, 3, padding=1)
        self.fc = nn.Linear(40, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).mean(2))


def _means(n, seed):
    """(n, 6, 16) inputs labelled by which of the first three channels has the largest mean."""
    x = torch.randn(n, 6, 16, generator=torch.Generator().manual_seed(seed))
    return x, x[:, :3].mean(2).argmax(1)


def _exact_teacher(seed):
    """_Plain wired to compute 10 * mean_t x_k (k < 3) through six channels (+x_k and -x_k through the
    ReLUs); every other weight is noise of 0.001, so 34 channels of each layer can go almost for free."""
    g = torch.Generator().manual_seed(seed)
    m = _Plain().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.001 * torch.randn(p.shape, generator=g))
        for k in range(3):
            m.c1.weight[k, k, 1], m.c1.weight[3 + k, k, 1] = 1.0, -1.0
            m.fc.weight[k, k], m.fc.weight[k, 3 + k] = 10.0, -10.0
        for j in range(6):
            m.c2.weight[j, j, 1] = 1.0
    return m


def _straddling_pair(m, seed):
    """Two inputs a hair (a logit margin of ~1e-4) either side of m's decision boundary between two
    classes, labelled as m predicts them: any change to m's function near there gets one of them wrong."""
    x, _ = _means(64, seed)
    with torch.no_grad():
        p = m(x).argmax(1)
    a, b = x[0], x[int(torch.nonzero(p != p[0])[0])]
    for _ in range(14):
        mid = (a + b) / 2
        with torch.no_grad():
            a, b = (mid, b) if m(mid[None]).argmax(1) == p[0] else (a, mid)
    xs = torch.stack([a, b])
    with torch.no_grad():
        return xs, m(xs).argmax(1)


def _few_labels(seed=2):
    """The exact teacher, 1024 training samples, a labelled validation split of 50 (48 drawn, plus a pair
    straddling the teacher's boundary, as a real small labelled set's hardest samples do) and 2000 test."""
    m = _exact_teacher(seed)
    xtr, ytr = _means(1024, 10 + seed)
    xva, yva = _means(48, 20 + seed)
    xs, ys = _straddling_pair(m, 50 + seed)
    assert ys[0] != ys[1]
    xte, yte = _means(2000, 30 + seed)
    g = torch.Generator().manual_seed(seed)
    return m, (DataLoader(TensorDataset(xtr, ytr), batch_size=64, shuffle=True, generator=g),
               DataLoader(TensorDataset(torch.cat([xva, xs]), torch.cat([yva, ys])), batch_size=256),
               DataLoader(TensorDataset(xte, yte), batch_size=500))


def test_with_fifty_labels_agreement_accepts_width_moves_that_labels_cannot(fake_tm, monkeypatch):
    """50 labelled samples, 2 points each. Every fine-tuned network moves the teacher's boundary and gets
    one of the straddling pair wrong: a 90% paired upper bound of 4.5 points against a 2-point budget, so
    labels acceptance backs off to the original. Agreement acceptance bounds the disagreement with the
    original over 1024 pool inputs instead, keeps the width moves, and the labelled check lets one lost
    sample through (its 90% lower bound is below zero); 2000 test samples confirm the accuracy is kept."""
    import fastdeepiot.compression.agreement as agreement
    import fastdeepiot.compression.search as search

    monkeypatch.setattr(agreement, "POOL_SIZE", 1024)
    model, data = _few_labels()
    kw = dict(time_model=fake_tm, max_accuracy_drop=2.0, moves=("width",), finetune_steps=5, final_epochs=0.5,
              max_iters=2, lr=1e-4, measure=False, progress=False, seed=2)

    def no_pool(*a, **k):
        raise AssertionError("labels acceptance built an agreement pool")

    with monkeypatch.context() as mp:  # the default builds no pool and records what it always did
        mp.setattr(search.AgreementPool, "build", no_pool)
        labels = compress(model, data, **kw)
    assert labels.settings["acceptance"] == "labels" and "acceptance" not in labels.run
    assert not any(s["op"] == "prune" for s in labels.plan.steps)
    assert "no pruned state met the accuracy budget; returning the original model" in labels.notes
    assert all("pool_disagreement" not in h for h in labels.history)

    agree = compress(model, data, acceptance="agreement", **kw)
    assert any(s["op"] == "prune" for s in agree.plan.steps)
    assert (agree.model.c1.out_channels, agree.model.c2.out_channels) != (40, 40)
    assert agree.final["predicted_ms"] < agree.base["predicted_ms"]
    assert agree.base["test_accuracy"] - agree.final["test_accuracy"] <= 2.0
    rec = agree.run["acceptance"]
    assert rec["n_labelled"] == 50 and rec["pool"]["size"] == 1024 and rec["pool"]["val"] == 50
    chosen = [c for c in rec["calibration"] if c["accepted"]]
    assert chosen and chosen[0]["drop_upper_bound"] <= 2.0 and chosen[0]["val_drop_upper"] > 2.0
    assert chosen[0]["labelled_ok"] and chosen[0]["val_drop_lower"] < 0
    assert agree.final["drop_upper_bound"] <= 2.0


def _fine_tunes_lose_a_logit(monkeypatch):
    """Every fine-tune in the search ends with the class-0 logit pushed down by 1 (a real accuracy loss)."""
    import fastdeepiot.compression.search as search

    real = search.finetune

    def finetune_that_loses(m, *a, **k):
        real(m, *a, **k)
        with torch.no_grad():
            m.fc.bias[0] -= 1.0
        return m

    monkeypatch.setattr(search, "finetune", finetune_that_loses)


def test_agreement_rejects_a_network_that_lost_accuracy(fake_tm, monkeypatch):
    """A network that lost accuracy for real (the class-0 logit pushed down by 1) disagrees with the
    original on the pool at least as often as it errs more on the test set, and far above the budget;
    when every fine-tune does that, agreement acceptance keeps no state and returns the original."""
    import fastdeepiot.compression.agreement as agreement
    import fastdeepiot.compression.search as search

    model, data = _few_labels()
    pool = agreement.AgreementPool.build(model, data[0], data[1], size=1024, seed=0)
    worse = copy.deepcopy(model)
    with torch.no_grad():
        worse.fc.bias[0] -= 1.0
    test_drop = 100 * (search.accuracy(model, data[2]) - search.accuracy(worse, data[2]))
    rate, upper = pool.drop_upper(worse, 0.9)
    assert test_drop > 2.0 and rate >= test_drop - 1.0 and upper > 2.0

    monkeypatch.setattr(agreement, "POOL_SIZE", 1024)
    _fine_tunes_lose_a_logit(monkeypatch)
    res = compress(model, data, time_model=fake_tm, max_accuracy_drop=2.0, acceptance="agreement", moves=("width",),
                   finetune_steps=2, final_epochs=0.25, max_iters=1, lr=1e-4, measure=False, progress=False)
    assert not res.plan.steps and not any(c["accepted"] for c in res.run["acceptance"]["calibration"])
    assert "no pruned state met the accuracy budget; returning the original model" in res.notes


def test_training_guard_rejects_a_loss_an_easy_validation_split_cannot_show(fake_tm, monkeypatch):
    """har's failure in miniature: the validation split holds only inputs far from the teacher's decision
    boundaries (five easy people), the training and test splits every input. A fine-tune that pushes the
    class-0 logit down by 1 flips nothing on validation but several points of the training and test inputs.
    Without the guard every state passes and the result loses those points on test; with it (the default)
    each candidate's training drop is recorded and over the limit, and the original comes back."""
    model = _exact_teacher(2)
    xtr, ytr = _means(1024, 12)
    xpool, ypool = _means(4000, 22)
    with torch.no_grad():
        top2 = model(xpool).topk(2, dim=1).values
    easy = (top2[:, 0] - top2[:, 1]) > 3.0  # a margin the -1 shift cannot cross
    xte, yte = _means(2000, 32)
    g = torch.Generator().manual_seed(2)
    data = (DataLoader(TensorDataset(xtr, ytr), batch_size=64, shuffle=True, generator=g),
            DataLoader(TensorDataset(xpool[easy][:400], ypool[easy][:400]), batch_size=256),
            DataLoader(TensorDataset(xte, yte), batch_size=500))
    _fine_tunes_lose_a_logit(monkeypatch)
    kw = dict(time_model=fake_tm, max_accuracy_drop=1.0, moves=("width",), finetune_steps=2, final_epochs=0.25,
              max_iters=2, lr=1e-4, measure=False, progress=False, seed=2)
    blind = compress(model, data, train_guard=False, **kw)
    assert blind.plan.steps and blind.final["val_accuracy"] >= blind.base["val_accuracy"] - 0.5
    assert blind.base["test_accuracy"] - blind.final["test_accuracy"] > 1.0  # the loss validation missed
    assert all("train_drop" not in h for h in blind.history)

    guarded = compress(model, data, **kw)
    assert guarded.settings["train_guard"] is True
    assert not guarded.plan.steps
    assert "no pruned state met the accuracy budget; returning the original model" in guarded.notes
    final_tunes = [h for h in guarded.history if h["stage"] == "final fine-tune"]
    assert final_tunes and all(h["train_drop"] > 1.0 for h in final_tunes)
    assert any(n.startswith("the training guard rejected") for n in guarded.notes)
    assert [h["stage"] for h in guarded.history] == ["base", "final fine-tune"]  # no candidate passed


def test_training_guard_sample_is_fixed_and_leaves_the_shuffle_alone():
    """The guard's sample is taken once, capped in count and bytes, and the training loader's generator
    draws afterwards what it would have drawn."""
    from fastdeepiot.compression.finetune import take_samples

    x, y = torch.randn(300, 4, 8), torch.randint(0, 3, (300,))
    g = torch.Generator().manual_seed(0)
    dl = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=g)
    before = g.get_state()
    tx, ty = take_samples(dl, 100)
    assert tx.shape == (100, 4, 8) and ty.shape == (100,) and torch.equal(g.get_state(), before)
    # ... also through the label check every user's loader is wrapped in (probe h1: the wrapper hid the
    # generator, and the guard's sample moved the shuffle of every run on a user's loaders)
    from fastdeepiot.compression.finetune import LabelChecked
    assert torch.equal(take_samples(LabelChecked(dl, 3, "training"), 100)[0], tx)
    assert torch.equal(g.get_state(), before)
    assert all(any(torch.equal(a, b) for b in x) for a in tx[:5])  # real samples, labels beside them
    assert take_samples(dl, None, max_bytes=1)[0].shape[0] == 32  # one batch once the byte cap is reached
    bare = DataLoader(x, batch_size=50)
    bx, by = take_samples(bare, 120)
    assert bx.shape[0] == 120 and by is None
    assert take_samples(DataLoader(TensorDataset(x[:0], y[:0]), batch_size=8))[0].numel() == 0


def test_cli_acceptance_option(tmp_path, capsys):
    from fastdeepiot.cli import main

    code = main(["compress", str(tmp_path / "in.pt"), "--task", "har", "--time-model", str(tmp_path / "tm.json"),
                 "--max-accuracy-drop", "1", "--acceptance", "vibes", "-o", str(tmp_path / "out.pt")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: unknown acceptance 'vibes'") and err.count("\n") == 1
    code = main(["compress", str(tmp_path / "in.pt"), "--task", "har", "--time-model", str(tmp_path / "tm.json"),
                 "--target-ms", "1", "--acceptance", "agreement", "-o", str(tmp_path / "out.pt")])
    assert code == 2 and "give max_accuracy_drop" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the fidelity budget


def test_divergence_is_zero_for_the_same_outputs_and_grows_as_they_move():
    from fastdeepiot.compression.finetune import divergence
    ref = torch.randn(50, 4)
    assert divergence(ref, ref.clone()) == pytest.approx(0.0, abs=1e-7)
    assert divergence(ref, ref + 3.0) == pytest.approx(0.0, abs=1e-6)  # softmax ignores a shift of every logit
    near, far = ref + 0.1 * torch.randn(50, 4), ref + torch.randn(50, 4)
    assert 0 < divergence(ref, near) < divergence(ref, far)
    # by hand: one sample, p = (0.5, 0.5), q = softmax(0, log 3) = (0.25, 0.75)
    p, q = torch.zeros(1, 2), torch.tensor([[0.0, math.log(3.0)]])
    assert divergence(p, q) == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(0.5 / 0.75))


def test_fidelity_budget_holds_every_kept_state_to_it(fake_tm):
    """Under an accuracy budget that lets everything through, the fidelity budget decides: every state the
    search keeps is within DIVERGENCE_SLACK x the budget, the result within it, and a budget no fine-tuned
    network meets returns the original."""
    from fastdeepiot.compression.config import DIVERGENCE_SLACK
    torch.manual_seed(0)
    kw = dict(time_model=fake_tm, max_accuracy_drop=100.0, moves=("width",), finetune_steps=3, final_epochs=0.5,
              max_iters=4, evaluate_top=1, measure=False, progress=False)
    free = compress(Wide().eval(), _toy_data(), **kw)
    assert free.plan.steps and free.final["val_divergence"] > 0
    assert all("val_divergence" in h for h in free.history if h["stage"].startswith(("iter", "final")))
    cap = free.final["val_divergence"] / 3
    held = compress(Wide().eval(), _toy_data(), max_divergence=cap, **kw)
    assert held.settings["max_divergence"] == cap
    assert held.final["val_divergence"] <= cap
    assert all(h["val_divergence"] <= DIVERGENCE_SLACK * cap for h in held.history if h["stage"].startswith("iter"))
    assert held.final["predicted_ms"] >= free.final["predicted_ms"]
    none = compress(Wide().eval(), _toy_data(), max_divergence=1e-12, **kw)
    assert "no pruned state met the accuracy budget; returning the original model" in none.notes
    assert none.final["val_divergence"] == pytest.approx(0.0, abs=1e-7)
    assert none.final["predicted_ms"] == pytest.approx(none.base["predicted_ms"])


def test_cli_max_divergence_option(tmp_path, capsys):
    from fastdeepiot.cli import main

    args = ["compress", str(tmp_path / "in.pt"), "--task", "har", "--time-model", str(tmp_path / "tm.json"),
            "-o", str(tmp_path / "out.pt")]
    assert main(args + ["--max-accuracy-drop", "1", "--max-divergence", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: max_divergence must be in (0, inf)") and err.count("\n") == 1
    assert main(args + ["--target-ms", "1", "--max-divergence", "0.01"]) == 2
    assert "give max_accuracy_drop" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()
