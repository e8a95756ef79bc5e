"""Execution-time-aware compression: channel dependency tracing, importance, surgery, plans, the search.

    from fastdeepiot.compression import compress, Plan
    result = compress(model, task_or_loaders, time_model=tm, max_accuracy_drop=0.5)
    result.model, result.plan, result.history

Submodules: deps (channel groups), surgery (physical pruning, layer removal, sequence shortening, BN
folding), importance (l1, taylor), cost (pricing widths with the time model or FLOPs), plan (JSON,
replay), finetune, search (compress), baselines. Pruned checkpoints: `fastdeepiot.checkpoints`.
"""

from fastdeepiot.compression.plan import Plan
from fastdeepiot.compression.search import CompressResult, compress

__all__ = ["compress", "CompressResult", "Plan"]
