"""Importing bench scripts in tests. bench/ is no package and its scripts import their siblings (`_provenance`,
`heldout_archs`), so bench/ is on sys.path while a test module uses one:

    @pytest.fixture(scope="module")
    def gen():
        with bench_module("generalisation") as module:
            yield module
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


@contextlib.contextmanager
def bench_module(name: str):
    """bench/<name>.py imported, with bench/ on sys.path until the block ends."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))
