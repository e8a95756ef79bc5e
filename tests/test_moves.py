"""The move registry (every registered move proposes, replays and describes its own plan steps), the
settings dataclass (CompressConfig) and compress()'s progress reporting."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from fastdeepiot.compression.config import CompressConfig
from fastdeepiot.compression.cost import FlopsCost
from fastdeepiot.compression.moves import MOVES, OPS, Context, apply_step, describe_step, output_shape
from fastdeepiot.compression.plan import Plan
from fastdeepiot.compression.search import compress, lower_bound
from fastdeepiot.compression.surgery import PlanError
from fastdeepiot.errors import UserError


class Net(nn.Module):
    """Something for every move: channel groups (width), a shape-preserving block (remove), a GRU over
    16 steps (sequence, recurrence), a conv followed by BatchNorm (fold_bn)."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv1d(4, 16, 3, padding=1), nn.BatchNorm1d(16)
        self.block = nn.Sequential(nn.Conv1d(16, 16, 3, padding=1), nn.ReLU())
        self.gru = nn.GRU(16, 12, batch_first=True)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):  # (B, 4, 16)
        h = self.block(torch.relu(self.b1(self.c1(x))))
        out, _ = self.gru(h.permute(0, 2, 1))
        return self.fc(out[:, -1])


def _net():
    torch.manual_seed(0)
    m = Net().eval()
    with torch.no_grad():
        m.b1.running_mean.uniform_(-1, 1)
        m.b1.running_var.uniform_(0.5, 2)
    return m


X = torch.randn(1, 4, 16)


def _ctx(model, pricer=None):
    pricer = pricer or FlopsCost()
    return Context(X, output_shape(model, X), pricer, pricer.price(model, X), 0.08, "l1", [], 0, 8)


def _steps(name, model):
    """The move's proposed steps on `model`, or (a move that proposes nothing, fold_bn) its finishing steps."""
    mv = MOVES[name]
    cands = mv.propose(model, _ctx(model))
    return cands, [c.step for c in cands] or mv.finish(copy.deepcopy(model), X)


def test_the_registry_owns_every_op_once():
    assert list(MOVES) == ["width", "remove", "sequence", "recurrence", "fold_bn"]
    owned = [op for mv in MOVES.values() for op in mv.ops]
    assert len(owned) == len(set(owned)) and set(OPS) == set(owned)
    assert set(OPS) == {"prune", "remove", "shorten_sequence", "drop_recurrence", "fold_bn"}  # the plan format
    for name, mv in MOVES.items():
        assert mv.name == name and isinstance(mv.title, str) and isinstance(mv.bound_stage, int)
    with pytest.raises(PlanError, match="unknown plan step 'twist'"):
        Plan([4, 16], [{"op": "twist"}]).apply(_net())
    with pytest.raises(PlanError, match="lacks"):
        apply_step(_net(), {"op": "remove"}, X)


@pytest.mark.parametrize("name", list(MOVES))
def test_every_move_proposes_applies_describes_and_replays(name):
    mv = MOVES[name]
    model = _net()
    pricer = FlopsCost()
    before = pricer.price(model, X)
    cands, steps = _steps(name, model)
    assert steps, f"{name} proposed nothing on a network made for it"
    for c in cands:
        assert c.move == name and c.saving > 0 and c.desc
        assert (c.ratio is not None) == (name == "width")  # width is ranked by saving per importance lost
    for i, step in enumerate(steps):
        assert OPS[step["op"]] is mv and step["op"] in mv.ops
        text = describe_step(step)
        assert text and text == mv.describe(step)
        # the move's own replay, and a saved plan's replay onto a fresh model, give the same network
        direct = mv.apply(copy.deepcopy(model), step, X)
        plan = Plan(list(X.shape[1:]), [step])
        assert plan.summary() == [text]
        again = Plan.from_json(json.loads(json.dumps(plan.to_json()))).apply(_net())
        sa, sb = direct.state_dict(), again.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), step
        assert output_shape(again, X) == output_shape(model, X)
        if i < len(cands) and not cands[i].stone and name != "width":
            # a structural candidate is priced on the network its step makes
            assert before - pricer.price(again, X) == pytest.approx(cands[i].saving)
        if name == "fold_bn":  # exact
            torch.testing.assert_close(again(X), model(X), rtol=1e-4, atol=1e-5)
    # its share of the lower bound keeps the output shape and costs no more
    small = mv.smallest(copy.deepcopy(model), _ctx(model))
    assert output_shape(small, X) == output_shape(model, X)
    assert pricer.price(small, X) <= before


def test_a_block_removed_between_in_place_activations_still_trains_and_computes_the_same():
    """VGG-style: Conv, ReLU(inplace), Conv, ReLU(inplace). Removing the second conv put two in-place ReLUs
    on one tensor, and fine-tuning the candidate failed inside autograd ("modified by an inplace operation";
    probe h1, compress on an nn.Sequential). The removed network computes what the block's absence means, and
    trains."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv1d(8, 8, 3, padding=1),
                          nn.ReLU(inplace=True), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    assert {"op": "remove", "module": "2"} in [c.step for c in MOVES["remove"].propose(model, _ctx(model))]
    plan = Plan(list(X.shape[1:]), [{"op": "remove", "module": "2"}])
    for m in (MOVES["remove"].apply(copy.deepcopy(model), plan.steps[0], X), plan.apply(model, copy_model=True)):
        m.train()
        xb = torch.randn(5, 4, 16)
        m(xb).sum().backward()
        m.eval()
        with torch.no_grad():
            want = model[6](torch.relu(model[0](xb)).mean(2))
            torch.testing.assert_close(m(xb), want)


class _Transposed(nn.Module):
    """A conv whose input is a transposed (non-contiguous) LayerNorm output and whose consumer is a .view."""

    def __init__(self, contiguous: bool):
        super().__init__()
        self.contiguous = contiguous
        self.c1, self.ln, self.c2 = nn.Conv1d(4, 8, 3, padding=1), nn.LayerNorm(8), nn.Conv1d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16, 3)

    def forward(self, x):
        h = self.ln(self.c1(x).transpose(1, 2)).transpose(1, 2)
        if self.contiguous:
            h = h.contiguous()
        h = torch.relu(self.c2(torch.relu(h)))
        return self.fc(h.view(h.size(0), -1))


def test_a_block_is_removable_only_where_its_input_has_its_outputs_layout():
    """nn.Identity hands on its input: a conv fed a transposed tensor made a contiguous one, which the network
    then .view()ed; with the conv removed the view failed, and compress stopped with "the network does not run
    on its example input" (probe h1). Such a block is not removable; the same block on a contiguous input is."""
    from fastdeepiot.compression.moves.remove import removable_modules
    x = torch.randn(2, 4, 16)
    assert "c2" not in removable_modules(_Transposed(False).eval(), x)
    assert "c2" in removable_modules(_Transposed(True).eval(), x)
    assert "c2" not in [c.step.get("module") for c in MOVES["remove"].propose(_Transposed(False).eval(),
                                                                            _ctx(_Transposed(False).eval()))]
    lower_bound(_Transposed(False).eval(), x, FlopsCost())  # every removable block removed: still runs


def test_lower_bound_shrinks_with_every_move():
    model, pricer = _net(), FlopsCost()
    alone = {name: lower_bound(model, X, pricer, (name,)) for name in MOVES}
    every = lower_bound(model, X, pricer)
    assert every <= min(alone.values()) < pricer.price(model, X)


# ------------------------------------------------------------------------------ CompressConfig


@pytest.mark.parametrize("bad", [
    dict(),  # no budget
    dict(max_accuracy_drop=math.nan), dict(max_accuracy_drop=-1.0), dict(max_accuracy_drop=101.0),
    dict(max_accuracy_drop=math.inf), dict(target_ms=0.0), dict(target_ms=-2.0), dict(target_ms=math.nan),
    dict(max_accuracy_drop=1, finetune_steps=-1), dict(max_accuracy_drop=1, final_epochs=-0.5),
    dict(max_accuracy_drop=1, final_epochs=math.nan), dict(max_accuracy_drop=1, max_iters=-3),
    dict(max_accuracy_drop=1, step_fraction=0.0), dict(max_accuracy_drop=1, step_fraction=1.0),
    dict(max_accuracy_drop=1, step_fraction=math.nan), dict(max_accuracy_drop=1, lr=0.0),
    dict(max_accuracy_drop=1, confidence=1.0), dict(max_accuracy_drop=1, confidence=0.4),
    dict(max_accuracy_drop=1, criterion="magic"), dict(max_accuracy_drop=1, cost="energy"),
    dict(max_accuracy_drop=1, moves=("width", "teleport")), dict(max_accuracy_drop=1, moves="width"),
    dict(max_accuracy_drop=1, evaluate_top=0), dict(max_accuracy_drop=1, finetune_steps=2.5),
    dict(max_accuracy_drop=1, finetune_steps=True), dict(max_accuracy_drop=1, distill="yes"),
    dict(max_accuracy_drop=1, batch_size=0), dict(max_accuracy_drop=1, search_slack=-1.0),
    dict(target_ms=1.0, cost="flops"), dict(max_accuracy_drop=1, acceptance="vibes"),
    dict(max_accuracy_drop=1, acceptance=None), dict(target_ms=1.0, acceptance="agreement"),
    dict(max_accuracy_drop=1, max_divergence=0.0), dict(max_accuracy_drop=1, max_divergence=-0.1),
    dict(max_accuracy_drop=1, max_divergence=math.nan), dict(target_ms=1.0, max_divergence=0.01),
    dict(max_accuracy_drop=0.0, target_ms=0.9),  # both: the target would silently drop the accuracy budget
    dict(max_accuracy_drop=1, seed=-1), dict(max_accuracy_drop=1, seed=2**32), dict(max_accuracy_drop=1, seed=2**70),
    dict(max_accuracy_drop=1, seed=1.0), dict(max_accuracy_drop=1, seed=True), dict(max_accuracy_drop=1, lr=1e9),
])
def test_config_rejects_bad_values_with_one_sentence(bad):
    with pytest.raises(UserError) as e:
        CompressConfig(**bad)
    msg = str(e.value)
    assert msg and "\n" not in msg


def test_config_defaults_and_overrides():
    c = CompressConfig(max_accuracy_drop=0.5, moves=["width", "fold_bn"])
    assert c.moves == ("width", "fold_bn") and c.final_epochs == 4.0 and c.criterion == "taylor"
    assert c.acceptance == "labels" and CompressConfig.build(c, acceptance="agreement").acceptance == "agreement"
    assert CompressConfig.build(c, final_epochs=8).final_epochs == 8
    assert CompressConfig.build(None, target_ms=1.0).target_ms == 1.0
    with pytest.raises(UserError, match="step_fraction"):
        CompressConfig.build(c, step_fraction=2.0)
    with pytest.raises(TypeError, match="max_acuracy_drop"):
        CompressConfig.build(None, max_acuracy_drop=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.lr = 1.0


def test_cli_options_take_their_defaults_from_the_config():
    from fastdeepiot.commands.compress import _widths
    from fastdeepiot.commands.compress import compress as cli_compress

    as_setting = {"compare_uniform": _widths}  # options whose text becomes the setting
    for p in inspect.signature(cli_compress).parameters.values():
        if p.name in {f.name for f in dataclasses.fields(CompressConfig)}:
            value = as_setting.get(p.name, lambda v: v)(p.default.default)
            assert value == CompressConfig.default(p.name), p.name


# ------------------------------------------------------------------------------ compress(): settings, progress


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, 16, generator=g)
    y = (x[:, 0].mean(1) > 0).long()
    return (DataLoader(TensorDataset(x[:64], y[:64]), batch_size=32, shuffle=True, generator=g),
            DataLoader(TensorDataset(x[64:], y[64:]), batch_size=32))


QUICK = dict(max_accuracy_drop=100.0, cost="flops", finetune_steps=1, final_epochs=0.0, max_iters=1, measure=False,
             criterion="l1", moves=("remove",))


def _settings(res):
    return {k: v for k, v in res.settings.items() if k != "elapsed_s"}


def test_kwargs_and_config_record_the_same_settings(capsys):
    a = compress(_net(), _data(), progress=False, **QUICK)
    b = compress(_net(), _data(), CompressConfig(**QUICK), progress=False)
    c = compress(_net(), _data(), CompressConfig(**{**QUICK, "final_epochs": 3.0}), progress=False, final_epochs=0.0)
    assert _settings(a) == _settings(b) == _settings(c)
    assert _settings(a) == {**dataclasses.asdict(CompressConfig(**QUICK)), "moves": ["remove"]}
    assert a.plan.steps == b.plan.steps == c.plan.steps
    assert a.plan.meta["settings"] == a.settings
    json.dumps(a.to_json(), default=float)
    with pytest.raises(TypeError):
        compress(_net(), _data(), progress=False, max_acuracy_drop=1.0)


def test_progress_goes_to_stderr_by_default_and_can_be_silenced(capsys):
    compress(_net(), _data(), **QUICK)
    out = capsys.readouterr()
    assert "base:" in out.err and "final fine-tune" in out.err and out.out == ""
    compress(_net(), _data(), progress=False, **QUICK)
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    lines = []
    compress(_net(), _data(), progress=lines.append, **QUICK)
    out = capsys.readouterr()
    assert out.err == "" and lines[0].startswith("base:") and any("final fine-tune" in s for s in lines)
