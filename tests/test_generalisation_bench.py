"""bench/generalisation.py's mechanics on the fake backend: store cuts by time and by style, and one
leave-one-style-out fit priced through the public API (the figures themselves come from real profiles)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from fastdeepiot.devices.fake import FakeBackend
from fastdeepiot.profiling.runner import plan, profile
from fastdeepiot.profiling.store import Store

from _bench import bench_module, fake_profile

FAMS = ["conv2d", "conv1d", "linear", "batchnorm", "activation", "pool2d", "pool1d", "add", "concat", "mul",
        "gru", "lstm", "layernorm", "attention", "mha", "transformer_encoder"]


@pytest.fixture(scope="module")
def gen():
    with bench_module("generalisation") as module:
        yield module


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return fake_profile(tmp_path_factory.mktemp("gen") / "fake.db", FAMS, max_new=900)


def _rows(path):
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT kind, source, config_json, measured_at FROM measurements").fetchall()
    finally:
        con.close()


def test_cut_store_by_time_and_style(gen, store_path, tmp_path):
    rows = _rows(store_path)
    styles = {json.loads(c)["style"] for k, _, c, _ in rows if k == "network"}
    assert len(styles) >= 5
    whole, n_layer, n_net = gen.cut_store(store_path, 60, tmp_path)
    assert n_layer + n_net == len(rows)
    style = sorted(styles)[0]
    cut, n_layer2, n_net2 = gen.cut_store(store_path, 60, tmp_path, leave_out=style)
    left = _rows(cut)
    assert not [r for r in left if r[1] == f"network:{style}"]
    assert not [r for r in left if r[0] == "network" and json.loads(r[2])["style"] == style]
    gone = [r for r in rows if r[1] == f"network:{style}" or (r[0] == "network" and json.loads(r[2])["style"] == style)]
    assert gone and len(left) == len(rows) - len(gone)
    early, n_layer3, n_net3 = gen.cut_store(store_path, 0, tmp_path)  # only the first moment's rows
    first = min(r[3] for r in rows)
    assert n_layer3 + n_net3 == sum(1 for r in rows if r[3] <= first) < len(rows)
    assert _rows(store_path) == rows  # the store itself is untouched


def test_leave_one_style_out_fit_prices_only_unseen(gen, store_path, tmp_path):
    held = gen.random_networks_by_style(store_path, 60, tmp_path)["mlp"]
    r = gen.fit_and_price((str(store_path), 60, "mlp", "fake", 0, ("mlp",), held, str(tmp_path), "tree"))
    assert r["leave_out"] == "mlp" and r["priced"] and r["random"]
    assert all(v["ms"] > 0 for v in r["priced"].values())
    assert set(r["priced"]) == {n for n, g, _, _ in gen.evaluation_networks("fake") if g == "mlp"}
    assert not list(tmp_path.glob("*.db"))  # the cuts are cleaned up


def test_report_gives_each_figure_over_the_fit_seeds(gen):
    def fig(w):
        return {"n": 10, "within_10pct": w, "median_abs_pct": 100 * w}

    runs = [{"seed": s, "heldout_loso": fig(w), "heldout_all_styles": fig(w), "random_loso": fig(w), "zoo": fig(w)}
            for s, w in ((0, 0.2), (1, 0.5), (2, 0.5))]
    cut = {**runs[0], "layer_rows": 5, "random_networks": 2, "fit_seconds": 1.0, "per_style": {}, "networks": [],
           "minutes": 10, "seeds": runs}
    md = gen.report({"backend": "fake", "command": "c", "commit": "x", "processor": "p", "threads": 1, "torch": "t",
                     "date": "d", "store_minutes": 10, "truth": None}, {"10": cut})
    assert "Fit seeds [0, 1, 2]" in md and "0.400 [0.200, 0.500]" in md


def test_the_fit_seed_seeds_the_estimators(tmp_path):
    from fastdeepiot.timemodel.model import fit_time_model, make_estimator

    assert make_estimator("tree", 7).random_state == 7 and make_estimator("bagged", 7).random_state == 7
    assert make_estimator("flops", 7) is not None  # no randomness: nothing to seed
    backend = FakeBackend()
    path = tmp_path / "s.db"
    with Store.open(path, backend.fingerprint(), create=True) as store:
        profile(backend, store, plan(["conv2d", "linear"], seed=0), max_new=60)
        tm = fit_time_model(store, seed=3, holdout=0.0)
    assert {e.random_state for e in tm.estimators.values()} == {3}


@pytest.mark.parametrize("bad", [["--seeds", "0,x"], ["--seeds", "-1"], ["--minutes", "10,ten"],
                                 ["--loso-minutes", "none"]])
def test_bad_lists_are_one_error_line_before_anything_is_measured(gen, bad, tmp_path, capsys):
    missing = tmp_path / "nothing.db"  # never opened: the lists are read first
    assert gen.main(["--backend", "torch-cpu", "--db", str(missing), *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --") and err.count("\n") == 1


def test_guarded_truth_times_again_while_the_host_is_slow(gen, monkeypatch):
    """A timing the probe after it calls slow is taken again (up to QUIET_TRIES times); the truth is the best of
    the rounds that ended quiet, and every round is kept with its quiet flag."""
    times = iter([5.0, 2.0, 2.5, 9.0, 9.0, 9.0, 9.0, 1.5])  # ms, in the order the timings are taken
    verdicts = iter([False, True, True, False, False, False, False])  # the probe after each timing

    class Guard:
        waits = 0

        def wait_quiet(self):
            Guard.waits += 1
            return True

        def quiet(self):
            return next(verdicts)

    monkeypatch.setattr(gen, "reference_ms", lambda *a, **k: next(times))
    monkeypatch.setattr(gen, "QUIET_TRIES", 4)
    net = [("n", "plain", None, None)]
    out = gen.measure_truth("torch-cpu", 1, 3, net, 0.01, Guard())["n"]
    # round 1: 5.0 slow, 2.0 quiet; round 2: 2.5 quiet; round 3: four slow timings, the last (9.0) kept, flagged
    assert out["rounds_ms"] == [2.0, 2.5, 9.0] and out["quiet_rounds"] == [True, True, False]
    assert out["ms"] == 2.0 and Guard.waits == 7
    unguarded = gen.measure_truth("torch-cpu", 1, 1, net, 0.01, None)["n"]  # one timing a round, no probe
    assert unguarded["rounds_ms"] == [1.5] and unguarded["ms"] == 1.5
