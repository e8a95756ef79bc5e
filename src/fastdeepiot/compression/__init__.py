"""Execution-time-aware compression: channel dependency tracing, importance, moves, plans, the search.

    from fastdeepiot.compression import compress, CompressConfig, Plan
    result = compress(model, task_or_loaders, time_model=tm, max_accuracy_drop=0.5)
    result.model, result.plan, result.history

Submodules: surgery (slicing primitives: physically smaller layers), moves (the
registry of moves, one file each: width, remove, sequence, recurrence, fold_bn; what each proposes,
its plan op and its replay), importance (l1, taylor), cost (pricing widths with the time model or
FLOPs), plan (JSON, replay through the moves), config (CompressConfig: every setting), finetune,
progress (what compress reports), search (compress: the loop), baselines.
Channel groups come from `fastdeepiot.graph.channels`; pruned checkpoints from `fastdeepiot.checkpoints`.
"""

from fastdeepiot.compression.config import CompressConfig
from fastdeepiot.compression.plan import Plan
from fastdeepiot.compression.search import CompressResult, compress

__all__ = ["compress", "CompressConfig", "CompressResult", "Plan"]
