"""bench/profile_cost.py on the fake backend: a family that stores nothing within its seconds is a row that says so
(it used to crash on the median of nothing), and the report goes to --out."""

from __future__ import annotations

import json

import pytest

from _bench import bench_module


@pytest.fixture(scope="module")
def pc():
    with bench_module("profile_cost") as module:
        yield module


def test_a_family_with_no_measurement_is_a_row_of_zero(pc):
    rows = pc.run(["fake"], seconds=1e-9, repeat=3, threads=1)  # the budget is spent before the first layer
    assert rows and all(r["measurements"] == 0 and r["median_ms"] is None for r in rows)


def test_report_goes_to_out(pc, tmp_path, monkeypatch):
    monkeypatch.setattr(pc, "FAMILIES", ["linear", "add"])
    # 2 s: the Linear plan's sweeps over its 4096 widths take ~0.8 s of the budget before the first measurement
    pc.main(["--seconds", "2", "--repeat", "2", "--backends", "fake", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "profile_cost.json").read_text())["rows"]
    assert [r["family"] for r in rows] == ["linear", "add"]
    assert all(r["measurements"] > 0 and r["median_ms"] > 0 for r in rows)
    assert (tmp_path / "profile_cost.md").read_text().startswith("# Profiling cost")
