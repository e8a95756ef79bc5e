"""bench/truth_agreement.py's report: pairwise ratios of ground truths over the networks both hold."""

from __future__ import annotations

import json

import pytest

from _bench import bench_module


@pytest.fixture(scope="module")
def ta():
    with bench_module("truth_agreement") as module:
        yield module


def test_pairs_compare_shared_networks_only(ta, tmp_path):
    a = {"n1": {"ms": 1.0}, "n2": {"ms": 2.0}, "n3": {"ms": 4.0}, "_conditions": {"date": "x"}}
    b = {"n1": {"ms": 1.02}, "n2": {"ms": 2.4}, "n4": {"ms": 9.0}}
    (row,) = ta.pairs([("a", a), ("b", b)])
    assert row["networks"] == 2 and row["within 3%"] == 0.5
    assert row["median a/b"] == pytest.approx((1 / 1.02 + 2 / 2.4) / 2, abs=1e-3)
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert ta.main(["report", f"a={pa}", f"b={pb}", "--out", str(tmp_path), "--name", "t"]) == 0
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["pairs"][0]["networks"] == 2 and [c["label"] for c in saved["conditions"]] == ["a", "b"]


def test_measure_refuses_an_existing_file(ta, tmp_path, capsys):
    out = tmp_path / "t.json"
    out.write_text("{}")
    assert ta.main(["measure", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error:") and out.read_text() == "{}"


def test_report_never_writes_over_an_input(ta, tmp_path, capsys):
    src = tmp_path / "t.json"
    src.write_text(json.dumps({"n1": {"ms": 1.0}}))
    before = src.read_bytes()
    assert ta.main(["report", f"a={src}", f"b={src}", "--out", str(tmp_path), "--name", "t"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and src.read_bytes() == before
