"""fastdeepiot: execution-time-aware profiling, modelling, prediction and compression of PyTorch networks.

The public API is re-exported lazily so that `import fastdeepiot` does no work (no torch import).
"""

__version__ = "0.1.0"

__all__ = ["TimeModel", "compress", "profile", "get_backend", "FAMILIES", "LayerConfig"]


def __getattr__(name: str):
    if name in ("FAMILIES", "LayerConfig"):
        from fastdeepiot import families

        return getattr(families, name)
    if name == "get_backend":
        from fastdeepiot.devices import get_backend

        return get_backend
    if name == "profile":
        from fastdeepiot.profile.runner import profile

        return profile
    if name == "TimeModel":
        from fastdeepiot.timemodel.model import TimeModel

        return TimeModel
    if name == "compress":
        from fastdeepiot.compress.search import compress

        return compress
    raise AttributeError(f"module 'fastdeepiot' has no attribute {name!r}")
