"""The time-model loader's schema (`timemodel.schema`): each estimator's JSON is refused with a UserError
("damaged time model: ...") unless a fit could have written it, in time linear in its size, and what a fit
writes loads and prices as before."""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest

from fastdeepiot.devices.fake import fake_layer_ms
from fastdeepiot.errors import UserError
from fastdeepiot.profiling.space import random_configs
from fastdeepiot.timemodel.model import TimeModel, make_estimator
from fastdeepiot.timemodel.tree import featurize, featurize_columns

FAM = "activation"  # a string parameter (kind): categorical columns and "eq" splits


@pytest.fixture(scope="module")
def data():
    cs = random_configs(FAM, 120, seed=3)
    return cs, np.array([fake_layer_ms(c) for c in cs])


def _doc(kind, data, **params):
    cs, y = data
    est = make_estimator(kind)
    est.set_params(**params)
    return json.loads(json.dumps(TimeModel({FAM: est.fit(featurize(cs), y)}).to_dict()))


@pytest.fixture(scope="module")
def docs(data):
    return {"forest": _doc("forest", data, n_estimators=5)}


def _refused(doc, edit, expect):
    d = copy.deepcopy(doc)
    edit(d["families"][FAM])
    with pytest.raises(UserError, match="damaged time model") as info:
        TimeModel.from_dict(d)
    assert expect in str(info.value), str(info.value)


def test_fitted_models_load_and_price_as_fitted(docs, data):
    cs, _ = data
    X = featurize_columns(cs)
    for kind, doc in docs.items():
        tm = TimeModel.from_dict(copy.deepcopy(doc))
        assert np.all(tm.predict_configs(cs) > 0), kind
        twice = TimeModel.from_dict(json.loads(json.dumps(tm.to_dict())))
        np.testing.assert_array_equal(twice.estimators[FAM].predict(X), tm.estimators[FAM].predict(X))


def _tree0(e):
    return e["trees"][0]


def _inner(t):
    return next(i for i, left in enumerate(t["left"]) if left >= 0)


@pytest.mark.parametrize("name,edit,expect", [
    # probe 3, finding 7b: every left child 0 made predict's traversal loop forever
    ("cycle", lambda e: [t.update(left=[0] * len(t["left"])) for t in e["trees"]], "not nodes after it"),
    ("child-out-of-range", lambda e: _tree0(e)["right"].__setitem__(_inner(_tree0(e)), 10**6), "not nodes after"),
    ("same-children", lambda e: _tree0(e)["right"].__setitem__(_inner(_tree0(e)), _tree0(e)["left"][_inner(_tree0(e))]),
     "two nodes"),
    ("half-a-leaf", lambda e: _tree0(e)["right"].__setitem__(
        next(i for i, left in enumerate(_tree0(e)["left"]) if left < 0), 1), "not nodes after it"),
    ("feature-out-of-range", lambda e: _tree0(e)["feature"].__setitem__(_inner(_tree0(e)), 999), "outside its"),
    ("negative-feature", lambda e: _tree0(e)["feature"].__setitem__(_inner(_tree0(e)), -3), "outside its"),
    ("float-children", lambda e: _tree0(e).update(left=[float(v) for v in _tree0(e)["left"]]), "integers 'left'"),
    ("string-threshold", lambda e: _tree0(e)["threshold"].__setitem__(0, "x"), "numbers 'threshold'"),
    ("short-array", lambda e: _tree0(e)["value"].pop(), "differ in length"),
    ("no-trees", lambda e: e.update(trees=[]), "no trees"),
    ("levels-a-string", lambda e: e.update(cat_levels={k: "".join(v) for k, v in e["cat_levels"].items()}),
     "not lists of names"),
])
def test_damaged_forest_is_refused(docs, name, edit, expect):
    _refused(docs["forest"], edit, expect)


def test_a_large_forest_tree_loads_fast_and_a_shared_child_is_refused(docs):
    d = copy.deepcopy(docs["forest"])
    t = d["families"][FAM]["trees"][0]
    n = 200_001  # node i's children are 2i+1 and 2i+2: a balanced tree
    inner = [2 * i + 2 < n for i in range(n)]
    t.update(left=[2 * i + 1 if inner[i] else -1 for i in range(n)],
             right=[2 * i + 2 if inner[i] else -1 for i in range(n)],
             feature=[0] * n, threshold=[0.5] * n, value=[0.0] * n)
    t0 = time.perf_counter()
    TimeModel.from_dict(copy.deepcopy(d))  # a proper tree of 200001 nodes loads, in time linear in its size
    assert time.perf_counter() - t0 < 5
    t["right"][0] = 1  # node 1 is both children of the root
    with pytest.raises(UserError, match="not a tree"):
        TimeModel.from_dict(d)


def test_cli_answers_a_forest_cycle_with_one_error_line(docs, tmp_path, capsys):
    from fastdeepiot.cli import main

    d = copy.deepcopy(docs["forest"])
    for t in d["families"][FAM]["trees"]:
        t["left"] = [0] * len(t["left"])  # probe 3's forest_cycle.json: predict looped forever
    p = tmp_path / "cycle.json"
    p.write_text(json.dumps(d))
    assert main(["explain", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "damaged time model" in err
