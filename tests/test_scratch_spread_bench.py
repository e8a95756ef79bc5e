"""bench/scratch_spread.py: its variants are the networks they name, and its report's arithmetic (the figures
themselves come from real training runs)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from _bench import bench_module

ARCH = {"n_classes": 6, "in_channels": 6, "length": 128, "sensor_channels": [32, 32], "merge_channels": [64, 64],
        "gru_hidden": 64, "kernel": 5, "time_stride": 4, "sensor_stride": 2, "dropout": 0.2, "width_mult": 1.0}


@pytest.fixture(scope="module")
def ss():
    with bench_module("scratch_spread") as module:
        yield module


def test_variants_are_the_networks_they_name(ss):
    from fastdeepiot.compression.moves.recurrence import StepDense
    from fastdeepiot.compression.moves.sequence import SequencePool

    x = torch.randn(2, 6, 128)
    plain = ss.variant(ARCH, "x1:gru")
    half = ss.variant(ARCH, "x0.5:seq4")
    assert isinstance(plain.gru, nn.GRU) and plain.acc[0][0].out_channels == 32
    assert isinstance(half.gru, SequencePool) and half.gru.stride == 4 and half.acc[0][0].out_channels == 16
    both = ss.variant(ARCH, "x0.25:dense+rm2")
    assert isinstance(both.gru, StepDense) and all(isinstance(both.get_submodule(n), nn.Identity)
                                                   for n in ("acc.1", "gyro.1", "merge.1"))
    for m in (plain, half, both):
        assert m(x).shape == (2, 6)
    with pytest.raises(ValueError, match="unknown part"):
        ss.variant(ARCH, "x1:teleport")


def test_bad_variants_and_missing_results_are_one_line_errors(ss, tmp_path, capsys):
    assert ss.main(["train", "--variants", "x1:gru,x3:magic"]) == 2
    assert ss.main(["report", "--cache", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err)


def test_report_means_counts_and_ratios(ss, tmp_path):
    cache = {"teacher_test": 95.0, "code": "abc1234", "conditions": "a test",
             "runs": {"x1:gru@0": {"test": 94.8, "val": 99.0, "divergence": 0.004},
                      "x1:gru@1": {"test": 94.0, "val": 99.0, "divergence": 0.006},
                      "x0.5:dense@0": {"test": 95.5, "val": 99.0, "divergence": None}},
             "time": {"x1:gru": {"torch-cpu": 1.0, "onnxruntime-cpu": 0.2},
                      "x0.5:dense": {"torch-cpu": 0.4, "onnxruntime-cpu": 0.05}}}
    (tmp_path / "c.json").write_text(json.dumps(cache))
    ss.report("har", [tmp_path / "c.json"], tmp_path)
    rows = {r["variant"]: r for r in json.loads((tmp_path / "scratch_spread_har.json").read_text())["rows"]}
    assert rows["x1:gru"]["test_drops"] == pytest.approx([-0.2, -1.0])
    assert rows["x1:gru"]["mean_drop"] == pytest.approx(-0.6) and rows["x1:gru"]["within_0.5"] == 1
    assert rows["x0.5:dense"]["x_original"] == pytest.approx({"torch-cpu": 0.4, "onnxruntime-cpu": 0.25})
    assert rows["x0.5:dense"]["divergence"] == []
    md = (tmp_path / "scratch_spread_har.md").read_text()
    assert "abc1234" in md and "| x0.5:dense | 1 | +0.50 | +0.50 | 1/1 | n/a | 0.4000 (0.40) | 0.0500 (0.25) |" in md
