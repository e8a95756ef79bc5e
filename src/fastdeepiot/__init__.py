"""fastdeepiot: execution-time-aware profiling, modelling, prediction and compression of PyTorch networks.

The public API (each name is defined once, in the module named beside it):

    from fastdeepiot import profile, TimeModel, fit_time_model, compress
    profile(backend, store, workloads, budget_s=600)        # profiling.runner
    tm = fit_time_model(store)                              # timemodel.model
    tm.predict_network(module, example_input).total_ms
    result = compress(model, (train_dl, val_dl), time_model=tm, max_accuracy_drop=0.5)  # compression.search

No package shares a name with a function: `fastdeepiot.compress` is always the function (the package is
`fastdeepiot.compression`), and `fastdeepiot.profile` the function (the package is `fastdeepiot.profiling`).
Importing fastdeepiot imports torch.
"""

from fastdeepiot.compression.config import CompressConfig
from fastdeepiot.compression.plan import Plan
from fastdeepiot.compression.search import CompressResult, compress
from fastdeepiot.devices import get_backend, list_backends
from fastdeepiot.errors import UserError
from fastdeepiot.families import FAMILIES, LayerConfig
from fastdeepiot.profiling.runner import profile
from fastdeepiot.profiling.store import Store
from fastdeepiot.timemodel.model import TimeModel, fit_time_model

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "CompressConfig",
    "CompressResult",
    "LayerConfig",
    "Plan",
    "Store",
    "TimeModel",
    "UserError",
    "compress",
    "fit_time_model",
    "get_backend",
    "list_backends",
    "profile",
    "__version__",
]
