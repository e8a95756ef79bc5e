"""Helpers for the tests of bench scripts.

Importing them: bench/ is no package and its scripts import their siblings (`_provenance`, `heldout_archs`), so
bench/ is on sys.path while a test module uses one:

    @pytest.fixture(scope="module")
    def gen():
        with bench_module("generalisation") as module:
            yield module

The stores they read: `fake_profile` profiles the fake backend with a random network of some style after every
few layers, so that a store holds networks of every style (leave-one-style-out, the error sources).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def fake_profile(path: Path, families: list[str], max_new: int) -> Path:
    """A new fake-backend store at `path`: `max_new` measurements of `families`, a small random network after every
    4 layers."""
    from fastdeepiot.devices.fake import FakeBackend
    from fastdeepiot.profiling.runner import plan, profile
    from fastdeepiot.profiling.store import Store

    backend = FakeBackend()
    with Store.open(path, backend.fingerprint(), create=True) as store:
        profile(backend, store, plan(families, seed=0, network_every=4, network_layers=3), max_new=max_new)
    return path


@contextlib.contextmanager
def bench_module(name: str):
    """bench/<name>.py imported, with bench/ on sys.path until the block ends."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))
