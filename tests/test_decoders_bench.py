"""bench/decoders.py end to end on the fake backend: profile, fit with the held-out rows kept, every network priced
with no layer unmodelled, the new families and kinds reported (the ecosystem's timer replaced by the fake device's
own network time: the figures themselves come from a real backend)."""

from __future__ import annotations

import json
import sys

import pytest

from _bench import bench_module


@pytest.fixture(scope="module")
def dec():
    with bench_module("decoders") as module:
        yield module


def test_the_report_prices_every_network_and_the_new_layers(dec, tmp_path, monkeypatch):
    from fastdeepiot.devices.fake import FakeBackend

    fake = FakeBackend(step=16)
    monkeypatch.setattr(dec, "reference_ms", lambda backend, threads, m, x, session=None, **kw: fake.network_ms(m, x))
    monkeypatch.setattr(sys, "argv", ["decoders.py", "--backend", "fake", "--minutes", "0.1", "--rounds", "2",
                                      "--db", str(tmp_path / "f.db"), "--out", str(tmp_path)])
    dec.main()
    rec = json.loads((tmp_path / "decoders_fake.json").read_text())
    assert [r["network"] for r in rec["networks"]] == [n for n, _, _ in dec.networks()]
    assert all(r["predicted_ms"] > 0 and r["new_layers"] > 0 for r in rec["networks"])
    assert [r["layers"] for r in rec["layers"]] == list(dec.NEW_FAMILIES) + [f"activation {k}" for k in dec.NEW_KINDS]
    assert rec["layers"][0]["held_out"] > 0 and "Networks written for this bench" in (tmp_path / "decoders_fake.md").read_text()
