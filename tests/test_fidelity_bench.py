"""bench/fidelity.py's arithmetic: rank correlation, the budgets read off networks, repeats counted once (the
figures themselves come from real bench runs)."""

from __future__ import annotations


import pytest

from _bench import bench_module

@pytest.fixture(scope="module")
def fid():
    with bench_module("fidelity") as module:
        yield module


def _row(div, drop, method="m", seed=0):
    return {"method": method, "seed": seed, "setting": "s", "backend": None, "val_divergence": div, "test_drop": drop}


def test_spearman_ranks_with_ties(fid):
    assert fid.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert fid.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert fid.spearman([1, 1, 2], [5, 5, 9]) == pytest.approx(1.0)  # ties share a rank
    assert fid.spearman([1, 1, 1], [1, 2, 3]) != fid.spearman([1, 1, 1], [1, 2, 3])  # nan: no ranking at all


def test_envelope_budget_stops_below_the_first_network_beyond_the_drop(fid):
    rows = [_row(0.002, 0.1), _row(0.004, 0.5), _row(0.006, 0.2), _row(0.010, 1.5), _row(0.012, 0.3)]
    # first beyond 0.5: 0.010; the most divergent within below it: 0.006; halfway 0.008
    assert fid.read_off_budget(rows, 0.5) == pytest.approx(0.008)
    assert fid.read_off_budget([_row(0.001, 0.9)] + rows, 0.5) is None  # the closest network already lost more
    assert fid.read_off_budget(rows, 2.0) == pytest.approx(0.01)  # none beyond: the largest seen, rounded down


def test_a_network_in_two_parts_counts_once(fid):
    a, b = _row(0.004, 0.5), _row(0.004, 0.5)
    assert fid.unique([a, b, _row(0.004, 0.5, seed=1)]) == [a, _row(0.004, 0.5, seed=1)]
