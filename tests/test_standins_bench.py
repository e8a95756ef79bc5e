"""bench/standins.py: every op it lists is priced by a stand-in or unmodelled as the table says, and one round of
its report (the ecosystem's timer replaced by a formula: the figures themselves come from a quiet machine)."""

from __future__ import annotations

import json
import sys

import pytest

from _bench import bench_module


@pytest.fixture(scope="module")
def st():
    with bench_module("standins") as module:
        yield module


def test_one_round_reports_each_op_against_its_standin_and_the_nearest_kind(st, tmp_path, monkeypatch):
    # a made-up device: every kind 1 ms except silu 2 ms; an op costs 2 ms, LogSigmoid 4 ms
    def fake_ms(backend, threads, m, x, session=None, min_run_time=0.2):
        name = type(m).__name__
        return {"SiLU": 2.0, "LogSigmoid": 4.0}.get(name, 2.0 if name in ("Fn", "Hardtanh", "Hardshrink", "Softsign")
                                                    else 1.0)

    monkeypatch.setattr(st, "reference_ms", fake_ms)
    monkeypatch.setattr(sys, "argv", ["standins.py", "--backend", "torch-cpu", "--rounds", "1", "--out", str(tmp_path)])
    st.main()
    rec = json.loads((tmp_path / "standins_torch-cpu.json").read_text())
    per_op = {p["op"]: p for p in rec["per_op"]}
    assert set(per_op) == {n for n, _ in st.ops()}
    assert per_op["torch.exp"]["standin"] == "silu" and per_op["torch.exp"]["geomean"] == 1.0
    assert per_op["torch.abs"]["standin"] == "relu" and per_op["torch.abs"]["geomean"] == 2.0
    assert per_op["LogSigmoid"]["standin"] == "(unmodelled)" and per_op["LogSigmoid"]["geomean"] == "-"
    assert per_op["torch.abs"]["nearest kind"] == "silu" and per_op["torch.abs"]["its geomean"] == 1.0
    assert len(rec["rows"]) == len(per_op) * len(st.SHAPES)
    assert "stand-in" in (tmp_path / "standins_torch-cpu.md").read_text()
