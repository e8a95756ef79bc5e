"""External baselines (compression.baselines) on tiny networks, and the verdict logic (compression.verdict)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import fastdeepiot.compression.baselines as bl
import fastdeepiot.compression.finetune as ft
from fastdeepiot.compression.baselines import METHODS, budget_from, recurrent_feeders, run_baseline, split_steps
from fastdeepiot.compression.search import compress
from fastdeepiot.compression.verdict import curves, pareto_front, times_at_drop, verdict
from fastdeepiot.devices.fake import FakeBackend
from test_compress import fake_tm  # noqa: F401 - the fake device's time model (fixture)


class ConvGRU(nn.Module):
    """Conv1d -> BN -> Conv1d -> GRU -> Linear: torch-pruning crashes unless the GRU's feeder is ignored."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        a, b = max(1, round(16 * width)), max(1, round(12 * width))
        self.c1, self.b1 = nn.Conv1d(6, a, 3, padding=1), nn.BatchNorm1d(a)
        self.c2 = nn.Conv1d(a, b, 3, padding=1)
        self.gru = nn.GRU(b, max(1, round(10 * width)), batch_first=True)
        self.fc = nn.Linear(max(1, round(10 * width)), 3)

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.b1(self.c1(x)))))
        out, _ = self.gru(h.permute(0, 2, 1))
        return self.fc(out.mean(1))


class ConvNet(nn.Module):
    def __init__(self, width: float = 1.0):
        super().__init__()
        a, b = max(1, round(32 * width)), max(1, round(32 * width))
        self.c1, self.b1 = nn.Conv1d(6, a, 3, padding=1), nn.BatchNorm1d(a)
        self.c2, self.b2 = nn.Conv1d(a, b, 3, padding=1), nn.BatchNorm1d(b)
        self.fc = nn.Linear(b, 3)

    def forward(self, x):
        h = torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        return self.fc(h.mean(2))


def _data(n=160, seed=0, length=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, length, generator=g)
    y = (x[:, 0].mean(1) > 0).long() + (x[:, 1].mean(1) > 0).long()
    return (DataLoader(TensorDataset(x[:96], y[:96]), batch_size=16, shuffle=True, generator=g),
            DataLoader(TensorDataset(x[96:128], y[96:128]), batch_size=32),
            DataLoader(TensorDataset(x[128:], y[128:]), batch_size=32))


def _trained(cls):
    torch.manual_seed(0)
    m = cls()
    ft.finetune(m, _data()[0], 30, lr=3e-3)
    return m.eval()


def _count_steps(monkeypatch):
    """Count every optimizer step taken (all methods fine-tune through AdamW)."""
    counter = {"n": 0}
    real = torch.optim.AdamW.step

    def step(self, *a, **k):
        counter["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return counter


def _params(m):
    return sum(p.numel() for p in m.parameters())


def _no_bn(m):
    return not any(isinstance(b, (nn.BatchNorm1d, nn.BatchNorm2d)) for b in m.modules())


def test_recurrent_feeders_are_the_gru_and_the_conv_before_it():
    m = ConvGRU()
    names = sorted(n for n, mod in m.named_modules() if any(mod is f for f in recurrent_feeders(m)))
    assert names == ["c2", "gru"]


@pytest.mark.parametrize("method", bl.TP_METHODS)
def test_torch_pruning_on_conv_gru_is_smaller_working_folded_and_within_budget(method, fake_tm, monkeypatch):
    model = _trained(ConvGRU)
    counter = _count_steps(monkeypatch)
    res = run_baseline(method, model, _data(), ratio=0.5, budget_steps=10, time_model=fake_tm)
    assert counter["n"] == res.settings["optimizer_steps"] == 10  # exactly the budget
    assert res.settings["steps_per_pruning_step"] == [3, 3, 2, 2]
    assert set(res.settings["ignored_layers"]) == {"c2", "gru", "fc"}
    assert res.model.c1.out_channels < 16 and res.model.c2.out_channels == 12  # the GRU's feeder kept
    assert _params(res.model) < _params(model) and _no_bn(res.model)
    x = torch.randn(2, 6, 16)
    assert res.model(x).shape == (2, 3)
    assert res.final["measured_ms"] == pytest.approx(FakeBackend().network_ms(res.model, x[:1]))
    assert res.final["val_accuracy"] > 0 and "test_accuracy" in res.final
    if "taylor" in method:
        assert res.settings["gradient_passes"] > 0


def test_width_scratch_trains_max_of_recipe_and_budget_with_distillation(monkeypatch):
    model = _trained(ConvNet)
    model.net_name = None  # not a reference network: make_model builds it
    counter = _count_steps(monkeypatch)
    kd = []
    real_kl = bl.F.kl_div
    monkeypatch.setattr(bl.F, "kl_div", lambda *a, **k: kd.append(1) or real_kl(*a, **k))
    monkeypatch.setattr(ft, "RECIPE", dict(ft.RECIPE, epochs=2, min_epochs=1))
    res = run_baseline("width-scratch", model, _data(), ratio=0.5, budget_steps=15, make_model=ConvNet)
    assert res.settings["recipe_steps"] == 12 and counter["n"] == res.settings["optimizer_steps"] == 15
    assert len(kd) == 15  # distilled on every step
    assert res.model.c1.out_channels == 16 and _no_bn(res.model)
    res2 = run_baseline("width-scratch", model, _data(), ratio=0.5, budget_steps=5, make_model=ConvNet)
    assert res2.settings["optimizer_steps"] == 12  # the recipe when the budget is smaller


def test_netadapt_is_width_only_flops_driven_and_topped_up_to_the_budget(fake_tm, monkeypatch):
    model = _trained(ConvNet)
    cfg = dict(finetune_steps=2, final_epochs=0.5, max_iters=3, evaluate_top=1)
    from fastdeepiot.compression.config import CompressConfig

    counter = _count_steps(monkeypatch)
    res = run_baseline("netadapt-flops", model, _data(), max_accuracy_drop=30.0, budget_steps=40, time_model=fake_tm,
                       config=CompressConfig(max_accuracy_drop=30.0, **cfg))
    assert counter["n"] == res.settings["optimizer_steps"] == 40
    assert res.settings["search_steps"] + res.settings["top_up_steps"] == 40
    ops = [s["op"] for s in res.plan.steps]
    assert set(ops) == {"prune", "fold_bn"} and ops[-2:] == ["fold_bn", "fold_bn"] and _no_bn(res.model)
    again = res.plan.apply(model, copy_model=True)  # the plan replays to the returned architecture
    again.load_state_dict(res.model.state_dict())
    assert res.final["mflops"] < res.base["mflops"]


def test_equal_budgets_ours_records_its_steps_and_every_baseline_takes_them(fake_tm, monkeypatch):
    model = _trained(ConvNet)
    counter = _count_steps(monkeypatch)
    ours = compress(model, _data(), time_model=fake_tm, max_accuracy_drop=30.0, finetune_steps=2, final_epochs=0.5,
                    max_iters=2, evaluate_top=1, progress=False)
    assert counter["n"] == budget_from(ours) == budget_from(ours.to_json()) > 0
    budget = budget_from(ours)
    for method in ("torch-pruning-l1-global", "torch-pruning-taylor-uniform"):
        counter["n"] = 0
        res = run_baseline(method, model, _data(), ratio=0.3, budget_steps=budget)
        assert counter["n"] == res.settings["optimizer_steps"] == budget, method


def test_baseline_argument_errors():
    from fastdeepiot.errors import UserError

    m = ConvNet()
    with pytest.raises(UserError, match="unknown baseline"):
        run_baseline("magic", m, _data(), ratio=0.5)
    with pytest.raises(UserError, match="ratio"):
        run_baseline("torch-pruning-l1-global", m, _data())
    with pytest.raises(UserError, match="max_accuracy_drop"):
        run_baseline("netadapt-flops", m, _data())
    with pytest.raises(UserError, match="reference network"):
        run_baseline("width-scratch", m, _data(), ratio=0.5, budget_steps=1)
    for bad in (-1, 0, 2.5, True):  # it was accepted and the task's nominal budget used instead
        with pytest.raises(UserError, match="budget_steps"):
            run_baseline("torch-pruning-l1-global", m, _data(), ratio=0.5, budget_steps=bad)
    assert split_steps(10, 4) == [3, 3, 2, 2] and split_steps(0, 3) == [0, 0, 0]
    assert set(METHODS) >= {"netadapt-flops", "width-scratch", "torch-pruning-taylor-global"}


# ------------------------------------------------------------------------------ verdict


def _pts(method, seed, pairs):
    return [{"method": method, "seed": seed, "measured_ms": ms, "test_accuracy": acc} for ms, acc in pairs]


def _orig(seeds=(0, 1, 2), ms=1.0, acc=90.0):
    return [p for s in seeds for p in _pts("original", s, [(ms, acc)])]


def test_pareto_front():
    assert pareto_front([(1.0, 90.0), (0.5, 89.0), (0.6, 88.0), (0.5, 89.0), (0.4, 89.0), (2.0, 90.0)]) == \
        [(0.4, 89.0), (1.0, 90.0)]
    assert pareto_front([]) == []


def test_time_at_drop_takes_the_fastest_front_point_within_the_drop_else_the_original():
    pts = _orig() + _pts("a", 0, [(0.3, 89.6), (0.2, 89.0)]) + _pts("a", 1, [(0.2, 88.0)])
    t, notes = times_at_drop(pts, 0.5)
    assert t["a"] == {0: 0.3, 1: 1.0}  # seed 1: nothing within 0.5 points -> the original's time
    assert any("a seed 1" in n for n in notes)
    t, _ = times_at_drop(pts, 1.0)
    assert t["a"][0] == 0.2
    with pytest.raises(ValueError):
        times_at_drop(_pts("a", 0, [(0.3, 89.0)]), 0.5)


def test_verdict_ours_wins_with_interval():
    pts = _orig()
    for s in range(3):
        pts += _pts("ours", s, [(0.20 + 0.01 * s, 89.8)])
        pts += _pts("tp", s, [(0.60 + 0.01 * s, 89.7)])
        pts += _pts("scratch", s, [(0.50 + 0.02 * s, 89.9)])
    v = verdict(pts, max_drop=0.5)
    assert v["best_baseline"] == "scratch" and v["best_baseline_ms"] == pytest.approx(0.52)
    assert v["ratio"] == pytest.approx(0.21 / 0.52)
    lo, hi = v["ratio_ci"]
    assert lo <= v["ratio"] <= hi and hi < 0.5
    assert v["meets_bar"] and v["meets_bar_ci"]
    lo, hi = v["ours_ci"]
    assert lo < 0.21 < hi


def test_verdict_a_baseline_that_dominates():
    pts = _orig()
    for s in range(3):
        pts += _pts("ours", s, [(0.4, 89.8), (0.3, 88.0)])
        pts += _pts("scratch", s, [(0.2, 90.1)])
    v = verdict(pts, max_drop=0.5)
    assert v["ratio"] == pytest.approx(2.0) and not v["meets_bar"] and not v["meets_bar_ci"]


def test_verdict_ties_and_excluded_ablation():
    pts = _orig()
    for s in range(3):
        pts += _pts("ours", s, [(0.3, 89.8)]) + _pts("b", s, [(0.3, 89.8)]) + _pts("ablation", s, [(0.1, 90.0)])
    v = verdict(pts, max_drop=0.5, exclude=("ablation",))
    assert v["best_baseline"] == "b" and v["ratio"] == pytest.approx(1.0)
    assert v["ratio_ci"] == pytest.approx((1.0, 1.0))
    assert verdict(pts, max_drop=0.5)["best_baseline"] == "ablation"


def test_verdict_missing_methods_and_one_seed():
    pts = _orig(seeds=(0,)) + _pts("ours", 0, [(0.3, 89.8)])
    v = verdict(pts, max_drop=0.5)
    assert v["ratio"] is None and not v["meets_bar"] and "no external baseline has points" in v["notes"]
    v = verdict(_orig(seeds=(0,)) + _pts("b", 0, [(0.3, 89.8)]), max_drop=0.5)
    assert v["ours_ms"] is None and v["ratio"] is None and v["best_baseline"] == "b"
    # one seed: a ratio, no interval, so the bar cannot be met with confidence
    v = verdict(pts + _pts("b", 0, [(0.9, 89.9)]), max_drop=0.5)
    assert v["ratio"] == pytest.approx(0.3 / 0.9) and v["ratio_ci"] is None and v["ours_ci"] is None
    assert v["meets_bar"] and not v["meets_bar_ci"]
    # a baseline that never gets within the drop is as slow as the original
    v = verdict(_orig() + [p for s in range(3) for p in _pts("ours", s, [(0.3, 89.8)]) + _pts("b", s, [(0.1, 80.0)])])
    assert v["best_baseline_ms"] == pytest.approx(1.0) and v["ratio"] == pytest.approx(0.3)


def test_curves_are_monotone_in_the_drop():
    pts = _orig()
    for s in range(3):
        pts += _pts("ours", s, [(0.5, 89.9), (0.3, 89.2), (0.2, 88.0)])
    c = curves(pts, [0.0, 0.5, 1.0, 2.0])["ours"]
    assert [round(p["ms"], 3) for p in c] == [1.0, 0.5, 0.3, 0.2]


# ------------------------------------------------------------------------------ CLI


def _har_ckpt(tmp_path):
    from fastdeepiot import checkpoints, tasks
    from fastdeepiot.errors import DataMissingError

    t = tasks.get("har")
    try:
        t.datasets()
    except DataMissingError:
        pytest.skip("HAPT data not installed")
    torch.manual_seed(0)
    return checkpoints.save_checkpoint(tmp_path / "har.pt", t.make_model(), "har")


def _ort_tm(fake_tm, tmp_path):
    """The fake time model saved as if fitted on onnxruntime-cpu (only the backend name matters here)."""

    fake_tm.save(tmp_path / "tm.json")
    d = json.loads((tmp_path / "tm.json").read_text())
    d.setdefault("device", {})["backend"] = "onnxruntime-cpu"
    (tmp_path / "ort.json").write_text(json.dumps(d))
    return tmp_path / "ort.json"


def test_cli_baseline_torch_pruning_writes_exported_program_report_and_onnx(fake_tm, tmp_path, capsys):

    import onnxruntime as ort

    from fastdeepiot.cli import main

    ckpt, tm = _har_ckpt(tmp_path), _ort_tm(fake_tm, tmp_path)
    (tmp_path / "ours.report.json").write_text(json.dumps({"run": {"optimizer_steps": 3}}))
    code = main(["baseline", str(ckpt), "--task", "har", "--method", "torch-pruning-l1-global", "--ratio", "0.5",
                 "--time-model", str(tm), "--budget-from", str(tmp_path / "ours.report.json"), "--no-measure",
                 "-o", str(tmp_path / "tp.pt")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 optimizer steps (budget 3)" in out
    m = torch.export.load(str(tmp_path / "tp.pt")).module()
    x = torch.randn(1, 6, 128)
    sess = ort.InferenceSession(str(tmp_path / "tp.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(y), m(x), rtol=1e-3, atol=1e-4)
    rep = json.loads((tmp_path / "tp.report.json").read_text())
    assert rep["settings"]["optimizer_steps"] == 3 and rep["final"]["params"] < rep["base"]["params"]
    # never over an input file
    code = main(["baseline", str(ckpt), "--task", "har", "--method", "torch-pruning-l1-global", "--ratio", "0.5",
                 "--budget-steps", "1", "--no-measure", "-o", str(ckpt)])
    assert code == 2 and "is an input of this command" in capsys.readouterr().err
    code = main(["baseline", str(ckpt), "--task", "har", "--method", "width-scratch", "--ratio", "0.5",
                 "--budget-steps", "-1", "--no-measure", "-o", str(tmp_path / "neg.pt")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "--budget-steps" in err and not (tmp_path / "neg.pt").exists()


def test_cli_width_scratch_checkpoint_loads(tmp_path, monkeypatch, capsys):
    from fastdeepiot import checkpoints, tasks
    from fastdeepiot.cli import main

    ckpt = _har_ckpt(tmp_path)
    monkeypatch.setitem(tasks.get("har").train_defaults, "epochs", 1)
    monkeypatch.setitem(tasks.get("har").train_defaults, "min_epochs", 1)
    code = main(["baseline", str(ckpt), "--task", "har", "--method", "width-scratch", "--ratio", "0.75",
                 "--budget-steps", "2", "--no-measure", "-o", str(tmp_path / "w.pt")])
    assert code == 0, capsys.readouterr()
    loaded, meta = checkpoints.load_checkpoint(tmp_path / "w.pt", task="har")
    assert loaded.gru.hidden_size == 16 and _no_bn(loaded)


def test_cli_compress_on_onnxruntime_writes_onnx_too(fake_tm, tmp_path, capsys):
    from fastdeepiot.cli import main

    ckpt, tm = _har_ckpt(tmp_path), _ort_tm(fake_tm, tmp_path)
    code = main(["compress", str(ckpt), "--task", "har", "--time-model", str(tm), "--max-accuracy-drop", "50",
                 "--max-iters", "0", "--final-epochs", "0", "--no-measure", "-o", str(tmp_path / "c.pt")])
    assert code == 0, capsys.readouterr()
    assert (tmp_path / "c.onnx").stat().st_size > 0 and not list(tmp_path.glob(".*.tmp"))
    fake_tm.save(tmp_path / "fake.json")
    code = main(["compress", str(ckpt), "--task", "har", "--time-model", str(tmp_path / "fake.json"),
                 "--max-accuracy-drop", "50", "--max-iters", "0", "--final-epochs", "0", "--no-measure",
                 "-o", str(tmp_path / "d.pt")])
    assert code == 0 and not (tmp_path / "d.onnx").exists()


# ------------------------------------------------------------------------------ best of: uniformly narrower networks


def test_a_uniformly_narrower_network_that_is_as_accurate_and_faster_is_returned(fake_tm):
    model = _trained(ConvNet)
    always = lambda m, loader: 1.0  # noqa: E731 - every network equally accurate: the faster one must win
    kw = dict(max_accuracy_drop=1.0, finetune_steps=1, final_epochs=0.2, max_iters=0, progress=False, metric=always)
    res = compress(model, _data(), time_model=fake_tm, compare_uniform=(0.25, 0.5), **kw)
    cmp = res.run["compared"]
    assert [r["candidate"] for r in cmp] == ["uniform x0.25", "uniform x0.5"]
    assert all(r["faster"] and r["beats_result"] and not r["from_scratch"] for r in cmp)
    assert res.model.c1.out_channels == 8 and _no_bn(res.model)  # x0.25: the fastest
    assert any(n.startswith("uniform x0.25 was predicted") for n in res.notes)
    again = res.plan.apply(model, copy_model=True)
    again.load_state_dict(res.model.state_dict())
    assert res.run["optimizer_steps"] == 3 * round(0.2 * 6)  # ours' final + two uniform fine-tunes
    off = compress(model, _data(), time_model=fake_tm, **kw)
    assert off.run["compared"] == [] and off.model.c1.out_channels == 32


def test_a_less_accurate_uniform_network_is_not_returned(fake_tm):
    model = _trained(ConvNet)
    acc = lambda m, loader: min(1.0, m.c1.out_channels / 32)  # noqa: E731 - narrower is worse
    res = compress(model, _data(), time_model=fake_tm, compare_uniform=(0.5,), max_accuracy_drop=1.0,
                   finetune_steps=1, final_epochs=0.2, max_iters=0, progress=False, metric=acc)
    assert res.model.c1.out_channels == 32 and res.run["compared"][0]["beats_result"] is False


# ------------------------------------------------------------------------------ best of: trained from scratch


def test_reinitialise_resets_every_parameter_or_refuses():
    m = ConvNet()
    before = [p.detach().clone() for p in m.parameters()]
    assert ft.reinitialise(m, seed=1)
    assert all(not torch.equal(a, b) for a, b in zip(before, m.parameters()) if a.numel() > 1 and a.std() > 0)

    class Raw(nn.Module):  # a parameter no module knows how to initialise
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.scale = nn.Parameter(torch.full((3,), 2.0))

        def forward(self, x):
            return self.lin(x) * self.scale

    r = Raw()
    w = r.lin.weight.detach().clone()
    assert not ft.reinitialise(r) and torch.equal(r.lin.weight, w)


def test_networks_trained_from_scratch_compete_with_the_result(fake_tm, monkeypatch):
    monkeypatch.setattr(ft, "RECIPE", dict(ft.RECIPE, epochs=2, min_epochs=1))
    model = _trained(ConvNet)
    acc = lambda m, loader: 0.9 if m.c1.out_channels < 32 else 0.8  # noqa: E731 - narrower from scratch is better
    kw = dict(max_accuracy_drop=50.0, finetune_steps=1, final_epochs=0.2, max_iters=0, progress=False, metric=acc)
    res = compress(model, _data(), time_model=fake_tm, compare_uniform=(0.5,), compare_scratch=True, **kw)
    names = [r["candidate"] for r in res.run["compared"]]
    # the result is the unpruned network (no step taken): its own architecture is no contender
    assert names == ["uniform x0.5", "uniform x0.5, from scratch"]
    scratch = res.run["compared"][1]
    assert scratch["from_scratch"] and scratch["faster"] and scratch["beats_result"]
    assert res.model.c1.out_channels == 16 and _no_bn(res.model)
    # ours' final fine-tune + the uniform one (0.2 epochs each) + 2 recipe epochs from scratch
    assert res.run["optimizer_steps"] == 2 * round(0.2 * 6) + 2 * 6


def test_a_network_from_scratch_at_the_results_architecture_must_be_more_accurate(fake_tm, monkeypatch):
    monkeypatch.setattr(ft, "RECIPE", dict(ft.RECIPE, epochs=1, min_epochs=1))
    model = _trained(ConvNet)
    always = lambda m, loader: 1.0  # noqa: E731 - as accurate, and as fast: the result stays
    kw = dict(max_accuracy_drop=50.0, finetune_steps=1, final_epochs=0.2, max_iters=2, progress=False, metric=always)
    res = compress(model, _data(), time_model=fake_tm, compare_scratch=True, **kw)
    own = [r for r in res.run["compared"] if r["candidate"] == "result, from scratch"]
    assert len(res.plan.steps) > 0 and len(own) == 1 and own[0]["beats_result"] is False
    assert not any("from scratch was predicted" in n for n in res.notes)


@pytest.mark.parametrize("bad", [dict(compare_scratch="yes"), dict(scratch_epochs=0), dict(scratch_epochs=-2.0)])
def test_bad_scratch_settings_are_user_errors(bad):
    from fastdeepiot.compression.config import CompressConfig
    from fastdeepiot.errors import UserError

    with pytest.raises(UserError):
        CompressConfig(max_accuracy_drop=1.0, **bad)


def test_cli_compress_compares_uniform_and_scratch_networks(fake_tm, tmp_path, capsys):
    from fastdeepiot import checkpoints
    from fastdeepiot.cli import main

    ckpt = _har_ckpt(tmp_path)
    fake_tm.save(tmp_path / "fake.json")
    code = main(["compress", str(ckpt), "--task", "har", "--time-model", str(tmp_path / "fake.json"),
                 "--max-accuracy-drop", "50", "--max-iters", "0", "--final-epochs", "0.02", "--no-measure",
                 "--compare-uniform", "0.5", "--compare-scratch", "--scratch-epochs", "0.05",
                 "-o", str(tmp_path / "c.pt")])
    assert code == 0, capsys.readouterr()
    plan = json.loads((tmp_path / "c.plan.json").read_text())
    assert [r["candidate"] for r in plan["meta"]["run"]["compared"]] == ["uniform x0.5", "uniform x0.5, from scratch"]
    assert plan["meta"]["settings"]["compare_scratch"] and plan["meta"]["settings"]["scratch_epochs"] == 0.05
    loaded, _ = checkpoints.load_checkpoint(tmp_path / "c.pt", task="har")  # whichever won, it loads
    assert loaded(torch.randn(2, 6, 128)).shape == (2, 6)


def test_cli_compress_of_a_compressed_checkpoint_writes_one_that_loads(fake_tm, tmp_path, capsys):
    """A compressed checkpoint records the original architecture and the steps that replay onto it; compressing it
    again must save those steps followed by the new ones (probe 4: the new steps alone were saved, rc 0, and no
    command could load the result)."""
    from fastdeepiot import checkpoints
    from fastdeepiot.cli import main

    ckpt = _har_ckpt(tmp_path)
    fake_tm.save(tmp_path / "fake.json")
    args = ["--task", "har", "--time-model", str(tmp_path / "fake.json"), "--max-accuracy-drop", "100",
            "--max-iters", "1", "--finetune-steps", "1", "--final-epochs", "0", "--no-measure", "--no-train-guard"]
    assert main(["compress", str(ckpt), *args, "-o", str(tmp_path / "once.pt")]) == 0, capsys.readouterr()
    assert main(["compress", str(tmp_path / "once.pt"), *args, "-o", str(tmp_path / "twice.pt")]) == 0, \
        capsys.readouterr()
    _, once = checkpoints.load_checkpoint(tmp_path / "once.pt", task="har")
    model, twice = checkpoints.load_checkpoint(tmp_path / "twice.pt", task="har")
    first, both = once["plan"]["steps"], twice["plan"]["steps"]
    assert first and len(both) > len(first) and both[:len(first)] == first
    assert json.loads((tmp_path / "twice.plan.json").read_text())["steps"] == both
    from fastdeepiot import tasks
    assert model(torch.zeros(2, *tasks.get("har").input_shape)).shape == (2, 6)


def test_cli_compress_stopped_while_writing_leaves_the_earlier_outputs(fake_tm, tmp_path, capsys, monkeypatch):
    """Every output is staged and the checkpoint renamed into place last: a run stopped while writing its report
    leaves the earlier run's checkpoint, plan and report together (probe 4: the new checkpoint sat beside the
    earlier run's plan and report)."""
    import fastdeepiot.commands.compress as cmd
    from fastdeepiot.cli import main
    from fastdeepiot.errors import UserError

    ckpt = _har_ckpt(tmp_path)
    fake_tm.save(tmp_path / "fake.json")
    args = ["compress", str(ckpt), "--task", "har", "--time-model", str(tmp_path / "fake.json"), "--max-accuracy-drop",
            "100", "--max-iters", "1", "--finetune-steps", "1", "--final-epochs", "0", "--no-measure", "--force",
            "-o", str(tmp_path / "c.pt")]
    assert main(args) == 0, capsys.readouterr()
    outputs = sorted(p for p in tmp_path.iterdir() if p.name.startswith("c."))
    before = {p.name: p.read_bytes() for p in outputs}

    def stopped(*a, **k):
        raise UserError("stopped while writing the report")

    monkeypatch.setattr(cmd, "write_report", stopped)
    assert main([*args[:-3], "--max-iters", "0", "--force", "-o", str(tmp_path / "c.pt")]) == 2
    assert {p.name: p.read_bytes() for p in outputs} == before
    assert not list(tmp_path.glob(".fastdeepiot.*"))
