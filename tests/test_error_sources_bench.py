"""bench/error_sources.py on the fake backend: every priced layer is timed alone, the network is priced with the
layer models and with the measured layers through the same composition, and the report's arithmetic (the
figures themselves come from real backends)."""

from __future__ import annotations

import json

import pytest

from fastdeepiot.profiling.store import Store

from _bench import bench_module, fake_profile

FAMS = ["conv1d", "linear", "batchnorm", "activation", "pool1d", "add", "concat", "gru", "lstm", "layernorm"]


@pytest.fixture(scope="module")
def es():
    with bench_module("error_sources") as module:
        yield module


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return fake_profile(tmp_path_factory.mktemp("es") / "fake.db", FAMS, max_new=500)


def test_measure_times_every_priced_layer_and_prices_both_ways(es, store_path, tmp_path):
    before = store_path.read_bytes()
    out = tmp_path / "run.json"
    assert es.main(["measure", "--backend", "fake", "--db", str(store_path), "--out", str(out),
                    "--styles", "mlp,recurrent", "--random-per-style", "2", "--noise", "5"]) == 0
    run = json.loads(out.read_text())
    assert store_path.read_bytes() == before  # the store is only read
    groups = {n["group"] for n in run["networks"]}
    assert groups == {"held-out", "random"} and {n["style"] for n in run["networks"]} <= {"mlp", "recurrent"}
    for n in run["networks"]:
        priced = [c for c in n["calls"] if c]
        assert priced and all(c["measured_ms"] > 0 and c["predicted_ms"] > 0 for c in priced)
        assert n["measured_ms"] > 0 and n["model_ms"] > 0 and n["with_measured_layers_ms"] > 0
    assert len(run["label_noise"]) == 5 and all(len(x["now_ms"]) == 2 for x in run["label_noise"])
    # a second run never overwrites the first one's raw measurements
    assert es.main(["measure", "--backend", "fake", "--db", str(store_path), "--out", str(out)]) == 2


def test_price_both_is_the_model_with_predicted_times(es, store_path):
    """With every measured time equal to the predicted one, both prices are predict_network's total."""
    import torch.nn as nn
    import torch

    from fastdeepiot.timemodel.model import fit_time_model

    with Store.open(store_path) as store:
        tm = fit_time_model(store, holdout=0.0)
    m, x = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval(), torch.randn(8, 16)
    _, calls = tm.extract(m, (x,))
    rows = [None if p is None else {"predicted_ms": p, "measured_ms": p} for p in tm._standalone_many([calls])[0]]
    a, b = es.price_both(tm, calls, rows)
    assert a == pytest.approx(tm.predict_network(m, x).total_ms) and b == pytest.approx(a)
    doubled = [None if r is None else {**r, "measured_ms": 2 * r["predicted_ms"]} for r in rows]
    assert es.price_both(tm, calls, doubled)[1] > a


def test_report_counts_within_ten_percent_per_group(es, tmp_path):
    def net(name, group, style, measured, model, meas):
        return {"network": name, "group": group, "style": style, "measured_ms": measured, "stored_ms": 1.0,
                "model_ms": model, "with_measured_layers_ms": meas,
                "calls": [{"family": "linear", "key": f"linear:{name}", "predicted_ms": 0.5, "measured_ms": 0.4}, None]}
    run = {"backend": "fake", "db": "x.db", "seed": 0, "threads": 1, "commit": "abc", "processor": "p", "torch": "t",
           "date": "d", "seconds": 1, "command": "c", "label_noise": [
               {"family": "linear", "key": "k", "stored_ms": 1.0, "now_ms": [1.1, 1.1]}],
           "networks": [net("a", "held-out", "mlp", 1.0, 1.05, 1.0), net("b", "held-out", "mlp", 1.0, 1.3, 1.02),
                        net("c", "held-out", "recurrent", 2.0, 1.5, 2.5), net("r", "random", "mlp", 1.0, 1.0, 1.0)]}
    p = tmp_path / "run.json"
    p.write_text(json.dumps(run))
    s = es.report([p], tmp_path, "es")["summaries"][0]
    g = {r["group"]: r for r in s["groups"]}
    assert g["held-out: all"]["n"] == 3 and g["held-out: all"]["model_within_10pct"] == pytest.approx(1 / 3, abs=1e-3)
    assert g["held-out: all"]["measured_layers_within_10pct"] == pytest.approx(2 / 3, abs=1e-3)
    assert g["held-out: mlp"]["model_within_10pct"] == 0.5 and g["random networks"]["n"] == 1
    fam = s["layer_families"][0]
    assert fam["configurations"] == 4 and fam["median_error_pct"] == pytest.approx(25.0)
    assert s["label_noise"]["pass_to_pass"]["median_abs_pct"] == 0.0 and s["label_noise"]["now_over_stored"] == 1.1
    assert (tmp_path / "es.md").read_text().startswith("# Where the network error comes from")


def test_missing_inputs_are_one_line_errors(es, tmp_path, capsys):
    assert es.main(["measure", "--backend", "fake", "--db", str(tmp_path / "none.db"), "--out", str(tmp_path / "o.json")]) == 2
    assert es.main(["report", str(tmp_path / "none.json")]) == 2
    binary = tmp_path / "store.db"
    binary.write_bytes(b"SQLite format 3\x00\xf8\xff")
    assert es.main(["report", str(binary)]) == 2
    other = tmp_path / "other.json"
    other.write_text('{"rows": []}')
    assert es.main(["report", str(other)]) == 2
    run = tmp_path / "es.json"  # a raw file where the report would write: refused, left as it was
    run.write_text('{"backend": "fake", "networks": []}')
    before = run.read_bytes()
    assert es.main(["report", str(run), "--out", str(tmp_path), "--name", "es"]) == 2 and run.read_bytes() == before
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 5 and all(e.startswith("error: ") for e in err)
