"""bench/cache_residency.py: its measurement runs (tiny sizes, one round) and its diagnosis joins a generalisation
record's errors with the held-out networks' working sets (the figures themselves come from a quiet machine)."""

from __future__ import annotations

import json

import pytest
import torch.nn as nn

from _bench import bench_module


@pytest.fixture(scope="module")
def cr():
    with bench_module("cache_residency") as module:
        yield module


def test_a_stream_outgrows_the_cache_and_both_times_are_measured(cr):
    rows = cr.measure([("Linear(64,64) batch 1", lambda: nn.Linear(64, 64), (1, 64))], rounds=1, llc=2**20,
                      min_run_time=0.01)
    (r,) = rows
    assert r["weight_kib"] == pytest.approx((64 * 64 + 64) * 4 / 1024, abs=0.1)
    assert r["cold_mib"] >= 4 * 0.99 and 2 <= r["warm_copies"] <= 16  # >= 4x the (1 MiB) cache, up to rounding
    assert r["alone_ms"] > 0 and r["warm_stream_ms"] > 0 and r["cold_stream_ms"] > 0
    assert r["cold_over_warm"] == pytest.approx(r["cold_stream_ms"] / r["warm_stream_ms"])


def test_the_diagnosis_bins_the_record_errors_by_working_set(cr):
    sets = {"small": {"style": "mlp", "params_mib": 0.5, "written_mib": 0.1},
            "mid": {"style": "plain", "params_mib": 6.0, "written_mib": 2.0},
            "big": {"style": "dense", "params_mib": 1.0, "written_mib": 30.0}}
    record = {"meta": {"command": "x", "commit": "c", "backend": "torch-cpu"},
              "cuts": {"10": {"networks": [
                  {"network": "small", "error_all_pct": 2.0, "error_loso_pct": 3.0},
                  {"network": "mid", "error_all_pct": -12.0, "error_loso_pct": -9.0},
                  {"network": "big", "error_all_pct": -40.0, "error_loso_pct": -41.0},
                  {"network": "not-held-out", "error_all_pct": 0.0, "error_loso_pct": 0.0}]}}}
    d = cr.diagnosis(record, sets, llc=32 * 2**20)
    assert [r["network"] for r in d["rows"]] == ["small", "mid", "big"]
    assert [(b["n"], b["median_error_pct"], b["within_10pct"]) for b in d["bins"]] == [
        (1, 2.0, 1.0), (1, -12.0, 0.0), (1, -40.0, 0.0)]
    json.dumps(d)  # the record is JSON


def test_llc_is_read_or_defaults(cr):
    assert cr.llc_bytes() >= 2**20
