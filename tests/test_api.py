"""The public API: explicit names, and no package that shares a name with a function."""

from __future__ import annotations

import importlib
import pkgutil

import fastdeepiot


def test_every_public_name_is_importable_and_compress_stays_the_function_after_every_import():
    for info in pkgutil.walk_packages(fastdeepiot.__path__, prefix="fastdeepiot."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)  # every module imports on its own (imports at the top)
    assert callable(fastdeepiot.compress) and fastdeepiot.compress.__module__ == "fastdeepiot.compression.search"
    assert callable(fastdeepiot.profile) and fastdeepiot.profile.__module__ == "fastdeepiot.profiling.runner"
    for name in fastdeepiot.__all__:
        assert hasattr(fastdeepiot, name), name
    packages = {i.name.rsplit(".", 1)[-1] for i in pkgutil.iter_modules(fastdeepiot.__path__) if i.ispkg}
    assert not packages & {n for n in fastdeepiot.__all__ if callable(getattr(fastdeepiot, n))}
