"""The model tree and its baselines: estimator contract, JSON round trip, staircase recovery."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from fastdeepiot.families import LayerConfig, get_family
from fastdeepiot.timemodel.baselines import FlopsLinear, LookupTable, RandomForestTime
from fastdeepiot.timemodel.metrics import relative_error_summary
from fastdeepiot.timemodel.tree import ModelTree, Rule, add_staircase_features, featurize
from fastdeepiot.timemodel.tree.bagging import BaggedModelTrees
from fastdeepiot.timemodel.tree.estimator import MAX_DEPTH

ESTIMATORS = [ModelTree, lambda: BaggedModelTrees(n_estimators=3), FlopsLinear, LookupTable,
              lambda: RandomForestTime(n_estimators=10)]
IDS = ["ModelTree", "BaggedModelTrees", "FlopsLinear", "LookupTable", "RandomForestTime"]


def staircase(n=1500, seed=0, q=16):
    """y = 0.01 + 1e-3 * ceil(c/q)*q * other  (a q-wide SIMD staircase in c)."""
    rng = np.random.default_rng(seed)
    c = rng.integers(1, 257, n)
    other = rng.integers(1, 64, n).astype(float)
    y = 0.01 + 1e-3 * np.ceil(c / q) * q * other
    X = pd.DataFrame({"c": c, "other": other, "flops": c * other})
    add_staircase_features(X, ["c"])
    return X, y


def med_pct(y, p):
    return relative_error_summary(y, p)["median_abs_pct"]


# ------------------------------------------------------------------------------ contract


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_estimator_contract(make):
    est = make()
    X, y = staircase(300)
    params = est.get_params()
    assert isinstance(params, dict)
    c = clone(est)
    assert c.get_params() == params
    assert not any(k.endswith("_") for k in vars(est)), "__init__ must only store settings"
    with pytest.raises(NotFittedError):
        est.predict(X)
    assert est.fit(X, y) is est
    learned = set(vars(est)) - set(params)
    assert learned and all(k.endswith("_") for k in learned), learned
    p = est.predict(X)
    assert p.shape == (len(X),) and np.all(p > 0)
    assert est.score(X, y) <= 0
    # columns in any order
    Xr = X[list(reversed(X.columns))]
    np.testing.assert_array_equal(est.predict(Xr), p)


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_json_round_trip_identical(make):
    X, y = staircase(400, seed=1)
    est = make().fit(X, y)
    d = json.loads(json.dumps(est.to_dict()))
    back = type(est).from_dict(d)
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    Xn, _ = staircase(100, seed=5)
    np.testing.assert_array_equal(back.predict(Xn), est.predict(Xn))


def test_set_params_and_dict_input():
    X, y = staircase(300)
    m = ModelTree().set_params(max_depth=2, min_samples_leaf=10)
    assert m.get_params()["max_depth"] == 2
    m.fit({k: X[k].to_numpy() for k in X.columns}, y)
    assert m.depth_ <= 2


# ------------------------------------------------------------------------------ staircase


def test_staircase_padded_leaf_feature():
    X, y = staircase()
    m = ModelTree().fit(X, y)
    assert med_pct(y, m.predict(X)) < 1.0
    text = m.explain_text()
    assert "flops_pad16" in text, text
    Xt, yt = staircase(500, seed=3)
    assert med_pct(yt, m.predict(Xt)) < 1.0


def test_staircase_recovered_by_splits():
    """Without padded leaf features the tree must find the steps at multiples of 16 itself."""
    X, y = staircase()
    m = ModelTree(leaf_features=["other"], work_variants=None).fit(X, y)
    Xt, yt = staircase(500, seed=3)
    assert med_pct(yt, m.predict(Xt)) < 2.0
    rules = m.rules()
    assert all(isinstance(r, Rule) for r in rules)
    assert abs(sum(r.share for r in rules) - 1) < 1e-9
    assert sum(r.n_samples for r in rules) == len(y)
    # step positions appear in the rules: thresholds on c at multiples of 16 (or c % 16 tests)
    nums = {int(v) for r in rules for cond in r.conditions for v in re.findall(r"c <= (\d+)|< c", cond) if v}
    nums |= {int(v) for r in rules for cond in r.conditions for v in re.findall(r"(\d+) < c", cond)}
    assert len(nums) >= 8, m.explain_text()
    assert all(v % 16 == 0 for v in nums), m.explain_text()
    pts = [v for f, v in m.split_points("c") if f == "c"]
    assert pts and all(abs((v - 0.5) % 16) < 1e-9 for v in pts)


def test_tree_beats_flops_linear_on_staircase():
    X, y = staircase()
    Xt, yt = staircase(500, seed=3)
    tree = med_pct(yt, ModelTree().fit(X, y).predict(Xt))
    lin = med_pct(yt, FlopsLinear().fit(X, y).predict(Xt))
    assert tree < 1.0 and lin > 5 * tree + 2.0, (tree, lin)


def test_leaf_coefficients_non_negative():
    rng = np.random.default_rng(2)
    n = 800
    a = rng.uniform(1, 100, n)
    b = rng.uniform(1, 100, n)
    # a cost that *decreases* with input_bytes would need a negative coefficient
    y = 0.05 + 0.01 * a + np.maximum(0.0, 0.5 - 0.004 * b) + rng.normal(0, 0.001, n)
    X = pd.DataFrame({"flops": a, "input_bytes": b, "output_bytes": a + b, "weight_bytes": b * 2})
    m = ModelTree(min_samples_leaf=30).fit(X, y)
    for nd in m.nodes_:
        if nd["leaf"]:
            assert nd["model"]["intercept"] >= 0
            assert all(v >= 0 for v in nd["model"]["coef"].values())
    for r in m.rules():
        assert all(v >= 0 for v in r.coefficients.values())
        assert r.equation.startswith("t_ms = ")


def test_categorical_split():
    rng = np.random.default_rng(4)
    n = 600
    kind = rng.choice(["relu", "gelu", "tanh"], n)
    flops = rng.uniform(1e3, 1e6, n)
    per = np.where(kind == "gelu", 8e-6, 1e-6)
    y = 0.002 + per * flops
    X = pd.DataFrame({"kind": kind, "flops": flops})
    m = ModelTree().fit(X, y)
    assert med_pct(y, m.predict(X)) < 1.0
    assert "kind == 'gelu'" in m.explain_text() or "kind != 'gelu'" in m.explain_text()
    back = ModelTree.from_dict(json.loads(json.dumps(m.to_dict())))
    Xn = X.copy()
    Xn.loc[0, "kind"] = "unseen"
    np.testing.assert_array_equal(back.predict(Xn), m.predict(Xn))


def test_categorical_levels_grouped_in_one_split():
    """Six kinds, two costs: one split sends the three slow kinds one way (a set of levels, found by
    ordering the levels by the node equation's error on them), not one split per kind; routing, the
    rule text and the JSON round trip agree; an unseen level goes right, as for a one-level test."""
    rng = np.random.default_rng(5)
    n = 900
    kinds = np.array(["relu", "relu6", "hardswish", "gelu", "mish", "tanh"])
    kind = rng.choice(kinds, n)
    flops = rng.uniform(1e3, 1e6, n)
    y = 0.002 + np.where(np.isin(kind, ["gelu", "mish", "tanh"]), 8e-6, 1e-6) * flops
    X = pd.DataFrame({"kind": kind, "flops": flops})
    m = ModelTree().fit(X, y)
    splits = [nd for nd in m.nodes_ if not nd["leaf"]]
    assert [(nd["kind"], sorted(nd["value"])) for nd in splits] == [("in", ["gelu", "mish", "tanh"])]
    assert med_pct(y, m.predict(X)) < 1.0
    text = m.explain_text()
    assert "kind in {'gelu', 'mish', 'tanh'}" in text and "kind not in {'gelu', 'mish', 'tanh'}" in text, text
    back = ModelTree.from_dict(json.loads(json.dumps(m.to_dict())))
    Xn = X.copy()
    Xn.loc[0, "kind"] = "unseen"
    np.testing.assert_array_equal(back.predict(Xn), m.predict(Xn))
    fast = back.predict(Xn.iloc[:1])[0]
    assert fast == pytest.approx(0.002 + 1e-6 * Xn.loc[0, "flops"], rel=0.02)


def _paths_data(seed=6):
    """Rows of three code paths with their own per-FLOP costs: 'a' (300 rows), 'b' (100) and 'c' (15, fewer
    than a subtree of its own takes), and an unrelated numeric column a greedy tree could split on."""
    rng = np.random.default_rng(seed)
    path = np.array(["a"] * 300 + ["b"] * 100 + ["c"] * 15)
    flops = rng.uniform(1e3, 1e7, path.size)
    y = 0.02 + np.select([path == "a", path == "b"], [1e-9, 4e-9], 9e-9) * flops
    return pd.DataFrame({"kernel_path": path, "flops": flops, "size": rng.integers(1, 64, path.size)}), y


def test_partition_by_path_grows_one_subtree_per_path():
    """The kernel_path column (`partition_by`'s default) splits first: a chain of forced splits, the largest
    path first, each path of at least 2 * min_samples_leaf rows fitted on its own rows alone, the smaller ones
    sharing the last subtree, which also takes a path unseen in fitting; within the tree's depth."""
    X, y = _paths_data()
    m = ModelTree(min_samples_leaf=10).fit(X, y)
    first, second = m.nodes_[0], m.nodes_[m.nodes_[0]["right"]]
    assert (first["feature"], first["kind"], first["value"]) == ("kernel_path", "eq", "a")
    assert (second["feature"], second["kind"], second["value"]) == ("kernel_path", "eq", "b")
    leaves = m.apply(X)
    for leaf in np.unique(leaves):  # no leaf mixes paths
        assert len(set(X["kernel_path"][leaves == leaf])) == 1
    assert med_pct(y, m.predict(X)) < 1.0
    assert m.depth_ <= m.max_depth
    Xn = X.iloc[:3].copy()
    Xn["kernel_path"] = "unseen"
    rest = X[X["kernel_path"] == "c"].iloc[:1]
    assert m.apply(Xn)[0] in set(m.apply(X[X["kernel_path"] == "c"]))
    back = ModelTree.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_array_equal(back.predict(Xn), m.predict(Xn))
    np.testing.assert_array_equal(back.predict(rest), m.predict(rest))
    # no more forced splits than the depth allows
    shallow = ModelTree(min_samples_leaf=10, max_depth=1).fit(X, y)
    assert shallow.depth_ <= 1 and shallow.nodes_[0]["value"] == "a"
    # without the column, or with partition_by=None, no split is forced
    free = ModelTree(min_samples_leaf=10, partition_by=None).fit(X, y)
    assert free.partition_by is None and "partition_by" in free.to_dict()["params"]
    assert ModelTree().fit(X.drop(columns="kernel_path"), y).n_leaves_ >= 1


def test_leaf_does_not_extrapolate_far_beyond_its_samples():
    # 'small' layers were only profiled up to 1e4 FLOPs, with a steep per-FLOP cost; a 'small' query at
    # 1e6 FLOPs takes the equation of the nearest ancestor whose samples reach that far, not 100x the leaf's
    rng = np.random.default_rng(5)
    kind = np.array(["small"] * 100 + ["big"] * 300)
    flops = np.concatenate([rng.uniform(1e3, 1e4, 100), rng.uniform(1e3, 2e6, 300)])
    y = 0.005 + np.where(kind == "small", 4e-7, 2e-8) * flops
    X = pd.DataFrame({"kind": kind, "flops": flops})
    m = ModelTree().fit(X, y)
    assert med_pct(y, m.predict(X)) < 1.0  # inside the ranges nothing changes
    q = pd.DataFrame({"kind": ["small", "small"], "flops": [1.2e4, 1e6]})
    leaf = m.nodes_[m.apply(q)[1]]
    assert leaf["range"]["flops"][1] < 1e4 < 1e6 / 1.5
    root = m.nodes_[0]["model"]
    near, far = m.predict(q)
    assert near == pytest.approx(0.005 + 4e-7 * 1.2e4, rel=0.02)  # within the slack: the leaf's own equation
    assert far == pytest.approx(root["intercept"] + sum(root["coef"][c] * 1e6 for c in root["features"]))
    assert far < 0.005 + 4e-7 * 1e6 / 3
    back = ModelTree.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_array_equal(back.predict(q), m.predict(q))


def test_rows_beyond_everything_fitted_are_reported():
    """`beyond_profile` names the feature of a row that lies above the whole tree's fitted range (beyond the
    guard's slack): those prices extrapolate. Inside the range, or within the slack, a row is None."""
    rng = np.random.default_rng(6)
    flops = rng.uniform(1e3, 1e5, 200)
    X = pd.DataFrame({"kind": ["a"] * 200, "flops": flops})
    m = ModelTree().fit(X, 0.002 + 3e-8 * flops)
    top = m.nodes_[0]["range"]["flops"][1]
    q = pd.DataFrame({"kind": ["a", "a", "a", "a"], "flops": [5e4, top * 1.4, top * 2, 10.0]})
    inside, within_slack, far, small = m.beyond_profile(q)
    assert inside is None and within_slack is None and small is None  # (below the range: not reported)
    assert far == ("flops", pytest.approx(top * 2), pytest.approx(top))
    back = ModelTree.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back.beyond_profile(q) == m.beyond_profile(q)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_bad_input_raises(make):
    X, y = staircase(200)
    Xnan = X.copy()
    Xnan.loc[3, "other"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make().fit(Xnan, y)
    with pytest.raises(ValueError, match="rows"):
        make().fit(X, y[:-1])
    yneg = y.copy()
    yneg[5] = -1.0
    with pytest.raises(ValueError, match="positive"):
        make().fit(X, yneg)
    ynan = y.copy()
    ynan[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make().fit(X, ynan)
    with pytest.raises(ValueError, match="lengths"):
        make().fit({"flops": [1.0, 2.0], "c": [1.0]}, [1.0, 2.0])
    est = make().fit(X, y)
    with pytest.raises(ValueError, match="lacks columns"):
        est.predict(X.drop(columns=["flops"]))
    with pytest.raises(ValueError, match="NaN"):
        est.predict(Xnan)


def test_max_depth_is_bounded():
    # the time-model loader refuses a tree deeper than MAX_DEPTH: fit never grows one
    X, y = staircase(100)
    with pytest.raises(ValueError, match="max_depth"):
        ModelTree(max_depth=MAX_DEPTH + 1).fit(X, y)
    assert ModelTree(max_depth=MAX_DEPTH).fit(X, y).depth_ <= MAX_DEPTH


def test_from_dict_rejects_other_types():
    X, y = staircase(200)
    d = FlopsLinear().fit(X, y).to_dict()
    with pytest.raises(ValueError):
        ModelTree.from_dict(d)


def test_bagged_trees_are_the_geometric_mean_of_readable_trees_on_disjoint_draws():
    X, y = staircase(600, seed=2)
    bag = BaggedModelTrees(n_estimators=4, subsample=0.5, tree_params={"max_depth": 3}).fit(X, y)
    assert len(bag.trees_) == 4 and all(t.depth_ <= 3 for t in bag.trees_)
    members = np.array([t.predict(X) for t in bag.trees_])
    np.testing.assert_allclose(bag.predict(X), np.exp(np.log(members).mean(axis=0)))
    assert len({json.dumps(t.to_dict()["nodes"]) for t in bag.trees_}) > 1  # different draws, different trees
    text = bag.explain_text()
    assert text.count("--- tree ") == 4 and "geometric mean of 4 model trees" in text
    assert med_pct(y, bag.predict(X)) < 5
    with pytest.raises(ValueError, match="subsample"):
        BaggedModelTrees(subsample=0).fit(X, y)
    for bad in (dict(n_estimators=True), dict(subsample=True), dict(random_state=True)):  # a bool is no number
        with pytest.raises(ValueError, match=next(iter(bad))):
            BaggedModelTrees(**bad).fit(X, y)
    with pytest.raises(ValueError, match="BaggedModelTrees"):
        BaggedModelTrees.from_dict(ModelTree().fit(X, y).to_dict())


# ------------------------------------------------------------------------------ families


def _random_configs(family, n, seed=0):
    import random

    fam = get_family(family)
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        p = {k: rng.choice(v) for k, v in fam.space.items()}
        try:
            out.append(LayerConfig(family, fam.check(p)))
        except ValueError:
            continue
    return out


@pytest.mark.parametrize("family", ["conv2d", "linear", "gru", "pool2d", "activation", "concat"])
def test_featurize_families(family):
    cfgs = _random_configs(family, 60)
    X = featurize(cfgs)
    assert len(X) == 60 and not X.isna().any().any()
    assert "flops" in X and "working_set_bytes" in X
    w = get_family(family).width_params[0]
    assert f"{w}_mod16" in X
    if family != "concat":
        assert "flops_pad16" in X
        assert np.all(X["flops_pad16"] >= X["flops"] - 1e-6)
    # a synthetic time from the physical features is fitted by the tree
    y = 0.003 + 2e-9 * X["flops"].to_numpy() + 1e-9 * X["input_bytes"].to_numpy()
    m = ModelTree(min_samples_leaf=10).fit(X, y)
    assert med_pct(y, m.predict(X)) < 2.0


def test_featurize_rejects_mixed_families():
    with pytest.raises(ValueError, match="one family"):
        featurize(_random_configs("conv2d", 2) + _random_configs("linear", 2))


def test_plot_sweep(tmp_path):
    from fastdeepiot.timemodel.explain import plot_sweep

    base = {"batch": 1, "in_channels": 8, "kernel": 3, "stride": 1, "groups": 1, "size": 8}
    cfgs = [LayerConfig("conv2d", dict(base, out_channels=c)) for c in range(1, 129)]
    X = featurize(cfgs)
    y = 0.01 + 1e-7 * X["flops_pad16"].to_numpy()
    m = ModelTree(leaf_features=["flops"], work_variants=None, min_samples_leaf=4).fit(X, y)
    out = plot_sweep(m, cfgs, y, "out_channels", tmp_path / "sweep.png")
    data = open(out, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    plot_sweep(FlopsLinear().fit(X, y), cfgs, y, "out_channels", tmp_path / "lin.png")


def test_fit_speed_2000_samples():
    import time

    X, y = staircase(2000, seed=7)
    X["noise_a"] = np.random.default_rng(0).uniform(0, 1, len(X))
    t0 = time.perf_counter()
    ModelTree(leaf_features=["other"], work_variants=None).fit(X, y)
    assert time.perf_counter() - t0 < 10.0


@pytest.mark.parametrize("pruning", ["cv", "validation", "none"])
def test_pruning_modes(pruning):
    X, y = staircase(600, seed=9)
    rng = np.random.default_rng(0)
    yn = y * np.exp(rng.normal(0, 0.03, y.size))  # 3 % timing noise
    m = ModelTree(pruning=pruning, leaf_features=["other"], work_variants=None).fit(X, yn)
    Xt, yt = staircase(400, seed=10)
    assert med_pct(yt, m.predict(Xt)) < 6.0
    assert m.n_leaves_ >= 8


def test_bad_pruning_setting():
    X, y = staircase(100)
    with pytest.raises(ValueError, match="pruning"):
        ModelTree(pruning="magic").fit(X, y)


@pytest.mark.parametrize("pruning", ["cv", "validation", "none"])
def test_intercept_only_leaves_price_every_row(pruning):
    """Time falling with a feature: the non-negative fit keeps only the intercept in every leaf, and
    such an equation must still price each row routed to it (it has no feature column to size it by)."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.uniform(1, 100, 200), "b": rng.uniform(1, 100, 200)})
    y = 2.0 - 1e-3 * X["a"].to_numpy() + rng.normal(0, 1e-3, 200)
    m = ModelTree(pruning=pruning, random_state=0).fit(X, y)
    assert any(not nd["model"]["features"] for nd in m.nodes_ if nd["leaf"])
    pred = m.predict(X)
    assert pred.shape == (200,) and np.all(np.abs(pred - y) / y < 0.1)


def test_rule_text_names_the_fewer_levels_and_says_where_unseen_ones_go():
    """A path's test on a string column reads as the levels it lets through or those it keeps out, whichever is
    shorter, and says so when a level unseen in fitting (which goes right at every split) takes it too."""
    from types import SimpleNamespace

    from fastdeepiot.timemodel.tree.export import simplify

    tree = SimpleNamespace(categorical_={"kind": ["a", "b", "c", "d", "e"]})
    left_in = [("kind", "in", ["a", "b"], True)]
    right_of_in = [("kind", "in", ["a", "b", "c"], False)]  # d, e or unseen
    right_of_small = [("kind", "in", ["a", "b"], False)]  # c, d, e or unseen
    assert simplify(tree, left_in)[0] == ["kind in {'a', 'b'}"]
    assert simplify(tree, right_of_in)[0] == ["kind in {'d', 'e'} (or unseen)"]
    assert simplify(tree, right_of_small)[0] == ["kind not in {'a', 'b'}"]
    assert simplify(tree, [("kind", "eq", "a", False), ("kind", "in", ["b", "c", "d"], False)])[0] == \
        ["kind in {'e'} (or unseen)"]
    assert simplify(tree, [("kind", "eq", "a", False)])[0] == ["kind != 'a'"]
