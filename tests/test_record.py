"""graph.record: a forward torch.fx cannot trace is written down from one run, as the trace would have listed it,
and priced through the same mapping (`graph.extract`)."""

from __future__ import annotations

import operator
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from fastdeepiot.devices.fake import NETWORK_OVERHEAD_MS, FakeBackend
from fastdeepiot.graph.extract import _from_graph, extract_layers
from fastdeepiot.graph.record import record
from fastdeepiot.graph.trace import trace
from fastdeepiot.profiling.runner import plan, profile
from fastdeepiot.profiling.store import Store
from fastdeepiot.timemodel.model import fit_time_model


class Static(nn.Module):
    """Traceable: residual add, a scale by a parameter, `1 - x`, a cat, a GRU's tuple output, a module used twice."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(4, 8, 3, padding=1), nn.Conv1d(8, 8, 1)
        self.s = nn.Parameter(torch.ones(1, 8, 1))
        self.act = nn.ReLU()
        self.gru, self.fc = nn.GRU(16, 8, batch_first=True), nn.Linear(8, 3)

    def forward(self, x):
        y = self.act(self.c1(x))
        y = self.act(y + self.c2(y) * self.s)
        z = torch.cat([y, 1 - y], 1).transpose(1, 2)
        out, h = self.gru(z)
        return self.fc(out[:, -1] + h[0])


class Dynamic(Static):
    """The same, with a branch on a value (fx cannot trace it) whose both sides compute the same ops."""

    def forward(self, x):
        y = self.act(self.c1(x))
        y = self.act(y + self.c2(y) * self.s) if y.mean() > -1e9 else self.act(y + self.c2(y) * self.s)
        z = torch.cat([y, 1 - y], 1).transpose(1, 2)
        out, h = self.gru(z)
        return self.fc(out[:, -1] + h[0])


X = torch.randn(2, 4, 10)


def _calls(res):
    return [(c.op, c.kind, c.family, c.config.params if c.config else None, tuple(c.output_shape or ()))
            for c in res if c.note != "condition"]


def test_a_recorded_forward_lists_what_the_trace_lists():
    torch.manual_seed(0)
    static = Static().eval()
    dyn = Dynamic().eval()
    dyn.load_state_dict(static.state_dict())
    traced, recorded = extract_layers(static, X), extract_layers(dyn, X)
    assert traced.traced and not recorded.traced
    assert _calls(recorded) == _calls(traced)
    # data flow as traced (names may differ: compare by position)
    pos_t = {c.name: i for i, c in enumerate(traced)}
    rec = [c for c in recorded if c.note != "condition"]
    pos_r = {c.name: i for i, c in enumerate(rec)}
    assert [[pos_t.get(i, i) for i in c.inputs] for c in traced] == [[pos_r.get(i, i) for i in c.inputs] for c in rec]
    assert [c.name for c in recorded if c.note == "condition"] == ["mean", "gt"]


def test_operators_are_recorded_as_the_vocabulary_names_them():
    class Ops(nn.Module):
        def forward(self, x):
            return (2 - x, x / 3, -x, x ** 2, x @ x.transpose(-1, -2), x[:, :2], x + 1)

    tg = record(Ops().eval(), (torch.randn(3, 4),))
    sub = next(n for n in tg.graph.nodes if n.target is operator.sub)
    assert sub.args[0] == 2 and sub.args[1].op == "placeholder"  # 2 - x: the number first, as written
    res = extract_layers(Ops().eval(), torch.randn(3, 4))  # traceable: the trace's calls ...
    calls = [(c.kind, c.family) for c in res if c.kind != "free"]
    rec = _from_graph(tg)  # ... and the recorded ones are priced alike
    assert [(c.kind, c.family) for c in rec if c.kind != "free"] == calls and not rec.unmodelled()


def test_constants_made_from_numbers_are_not_ops():
    class Consts(nn.Module):
        def forward(self, x):
            if x.sum() > 1e9:
                return x
            return x * torch.ones(4) + torch.arange(4.0)

    res = extract_layers(Consts().eval(), torch.randn(3, 4))
    assert not res.traced and not res.unmodelled()
    assert [c.op for c in res.layers()] == ["mul", "add"]


def test_leaf_modules_are_one_call_and_their_insides_are_not_recorded():
    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)

        def forward(self, x):
            if x.abs().sum() >= 0:
                x = self.layer(x)
            return self.layer(x)

    res = extract_layers(Enc().eval(), torch.randn(2, 5, 16))
    assert not res.traced and not res.unmodelled()
    assert [(c.name, c.family) for c in res.layers() if c.family != "activation"] == [
        ("layer", "transformer_encoder"), ("layer#1", "transformer_encoder")]  # (the abs of the condition is priced)


def test_the_users_module_is_left_without_hooks_and_as_it_was():
    net = Dynamic().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    extract_layers(net, X)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_a_bare_container_is_recorded_into():
    dec = nn.TransformerDecoderLayer(16, 2, 32, batch_first=True).eval()
    res = extract_layers(dec, (torch.randn(2, 5, 16), torch.randn(2, 7, 16)))
    assert not res.traced
    assert [c.family for c in res.layers()] == ["mha", "add", "layernorm", "mha", "add", "layernorm", "linear",
                                                "activation", "linear", "add", "layernorm"]
    assert not res.unmodelled()
    cross = [c for c in res if c.name == "multihead_attn"][0]
    assert cross.inputs == ["norm1", "input"]  # the query, and the memory (the second network input)


def test_a_recorded_network_is_priced_end_to_end():
    backend = FakeBackend(step=16)
    fams = ["conv1d", "gru", "linear", "activation", "add", "mul", "concat"]
    with tempfile.TemporaryDirectory() as d, Store.open(Path(d) / "f.db", backend.fingerprint(), create=True) as st:
        profile(backend, st, plan(fams, seed=0, network_every=0), max_new=30 * len(fams))
        tm = fit_time_model(st)
    net = Dynamic().eval()
    p = tm.predict_network(net, X)
    assert not p.unmodelled and not p.traced
    assert p.total_ms + NETWORK_OVERHEAD_MS == pytest.approx(backend.network_ms(net, X), rel=0.03)


def test_trace_and_record_agree_on_shapes():
    net = Static().eval()
    a, b = trace(net, (X,)), record(net, (X,))

    def shapes(g):
        return [n.meta.get("shape") for n in g.graph.nodes
                if n.op in ("call_module", "call_function", "call_method") and n.meta.get("shape") is not None]

    assert shapes(a) == shapes(b)


def test_an_rnn_on_a_packed_sequence_is_priced():
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class Packed(nn.Module):  # fx cannot trace packing; its (PackedSequence, (h, c)) output holds no tensor directly
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = nn.LSTM(16, 32, batch_first=True), nn.Linear(32, 4)

        def forward(self, x, lens):
            o, _ = self.rnn(pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False))
            return self.fc(pad_packed_sequence(o, batch_first=True)[0][:, -1])

    res = extract_layers(Packed().eval(), (torch.randn(3, 20, 16), torch.tensor([20, 15, 10])))
    assert not res.traced
    assert [(c.name, c.family) for c in res.layers()] == [("rnn", "lstm"), ("fc", "linear")]


def test_the_children_of_a_module_list_are_calls_of_their_own():
    class Listed(nn.Module):
        def __init__(self, branch):
            super().__init__()
            self.branch = branch
            self.rnns = nn.ModuleList([nn.GRU(16, 32, batch_first=True)])
            self.blocks = nn.ModuleDict({"enc": nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)})

        def forward(self, x):
            if self.branch and x.sum() < -1e9:
                return x
            return self.blocks["enc"](self.rnns[0](x)[0])

    x = torch.randn(2, 10, 16)
    traced, recorded = extract_layers(Listed(False).eval(), x), extract_layers(Listed(True).eval(), x)
    assert traced.traced and not recorded.traced
    assert [(c.name, c.family) for c in recorded.layers()] == [(c.name, c.family) for c in traced.layers()] == [
        ("rnns.0", "gru"), ("blocks.enc", "transformer_encoder")]


def test_what_a_forward_registers_or_appends_is_taken_back():
    from fastdeepiot.timemodel.model import TimeModel

    class Busy(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.history, self.seen = nn.Conv2d(3, 8, 3), [], {}

        def forward(self, x):
            self.c.register_forward_hook(lambda *a: None)  # a hook a call, and a log
            self.history.append(x.shape[0])
            self.seen[len(self.seen)] = x
            y = self.c(x)
            return y.relu() if y.sum() > -1e9 else y

    d = {"families": {}, "composition": None, "device": {"backend": "fake"}}
    net = Busy().eval()
    try:
        TimeModel.from_dict(d).predict_network(net, torch.randn(1, 3, 8, 8))
    except Exception:  # noqa: BLE001 - a model without families prices nothing: what matters is the module after
        pass
    assert not net.c._forward_hooks and net.history == [] and net.seen == {}
