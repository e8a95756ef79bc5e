"""bench/homogeneous_stacks.py: its stacks run, and one round of its report on torch-cpu with the reference time
model (the figures themselves come from a quiet machine; this checks the plumbing and the floor flag)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from _bench import bench_module

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def hs():
    with bench_module("homogeneous_stacks") as module:
        yield module


def test_the_stacks_run_and_are_named_once(hs):
    nets = hs.stacks()
    assert len({n for n, _, _ in nets}) == len(nets) >= 10
    with torch.inference_mode():
        for _, m, x in nets:
            assert m(x).shape[0] == x.shape[0]


def test_one_round_prices_and_measures_every_stack(hs, tmp_path, monkeypatch):
    d = json.loads((DATA / "predict_reference.timemodel.json").read_text())
    d["device"] = {**d["device"], "backend": "torch-cpu"}
    ok = dict(d, composition={**d["composition"], "unfused_count": 0.0})
    floored = dict(d, composition={**d["composition"], "unfused_count": -1.0})  # every call far below 0
    (tmp_path / "ok.json").write_text(json.dumps(ok))
    (tmp_path / "floored.json").write_text(json.dumps(floored))
    monkeypatch.setattr(hs, "reference_ms", lambda *a, **k: 0.5)  # the ecosystem's timer: not what is tested
    monkeypatch.setattr(sys, "argv", ["homogeneous_stacks.py", "--backend", "torch-cpu", "--rounds", "1",
                                      "--models", f"ok={tmp_path / 'ok.json'},floored={tmp_path / 'floored.json'}",
                                      "--out", str(tmp_path)])
    hs.main()
    rec = json.loads((tmp_path / "homogeneous_stacks_torch-cpu.json").read_text())
    assert len(rec["rows"]) == len(hs.stacks())
    for r in rec["rows"]:
        assert r["measured_ms"] == 0.5 and r["ok_ms"] > 0
        assert r["ok_error_pct"] == pytest.approx(100 * (r["ok_ms"] - 0.5) / 0.5)
    multi = [r for r in rec["rows"] if not r["network"].startswith("1 x")]
    assert all(r["floored_floored"] for r in multi) and not any(r["ok_floored"] for r in rec["rows"])
    assert "floored" in (tmp_path / "homogeneous_stacks_torch-cpu.md").read_text()
