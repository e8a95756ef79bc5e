"""The held-out architecture suite (bench/heldout_archs.py): every entry builds, runs, is deterministic
and is fully priceable (no unmodelled call in its extraction)."""

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from fastdeepiot.graph.extract import extract_layers

_PATH = Path(__file__).resolve().parents[1] / "bench" / "heldout_archs.py"


def _load():
    name = "heldout_archs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


H = _load()
NAMES = [h.name for h in H.HELDOUT]


def test_registry():
    assert len(NAMES) == len(set(NAMES)) and len(NAMES) >= 25
    counts = Counter(h.style for h in H.HELDOUT)
    assert set(counts) == set(H.STYLES)
    assert all(counts[s] >= 3 for s in H.STYLES), counts
    assert all(h.style in H.STYLES for h in H.HELDOUT)


@pytest.mark.parametrize("name", NAMES)
def test_network(name):
    h = next(h for h in H.HELDOUT if h.name == name)
    assert h.style in H.STYLES
    state = torch.random.get_rng_state()
    m1, x1 = h.build()
    m2, x2 = h.build()
    assert torch.equal(torch.random.get_rng_state(), state)  # builds leave the global RNG alone
    assert not m1.training
    assert torch.equal(x1, x2)
    with torch.no_grad():
        y1, y2 = m1(x1), m2(x2)
    assert y1.dim() == 2 and y1.shape[0] == x1.shape[0]  # one output row per batch element
    assert torch.isfinite(y1).all()
    assert torch.equal(y1, y2)
    res = extract_layers(m1, x1)
    assert res.traced, res.warnings
    unmodelled = [(c.name, c.op, c.note) for c in res if c.kind == "unmodelled"]
    assert not unmodelled, unmodelled
    assert any(c.kind == "layer" for c in res)


def test_backend_filter():
    ort = {n for n, *_ in H.heldout_networks(styles="transformer", backend="onnxruntime-cpu")}
    all_ = {n for n, *_ in H.heldout_networks(styles=["transformer"])}
    skipped = {h.name for h in H.HELDOUT if h.style == "transformer" and not h.ort}
    assert skipped and ort == all_ - skipped
    with pytest.raises(ValueError):
        H.heldout_networks(styles=["nope"])
