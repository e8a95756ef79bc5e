"""Real sensing data sets, reference networks and training.

    from fastdeepiot import tasks
    tasks.list_tasks()                    # [TaskInfo(name, description, source, n_classes, input_shape, sizes, net)]
    t = tasks.get("har")                  # UnknownNameError for unknown names
    train_ds, val_ds, test_ds = t.datasets()
    train_dl, val_dl, test_dl = t.loaders(batch_size=64, seed=0)
    model = t.make_model(width_mult=0.5)  # model.arch: its constructor kwargs
    res = tasks.train(model, t, epochs=10, lr=2e-3, patience=5, seed=0)
    tasks.evaluate(model, test_dl, t.n_classes)  # accuracy, macro_f1, per_class, n
    tasks.save_checkpoint("har.pt", model, "har"); model, meta = tasks.load_checkpoint("har.pt", task="har")

Tasks: har (6 activities, split by person), userid (30 people, split by time), fashion
(Fashion-MNIST). Importing this package loads no data and no torch; both happen on first use.
"""

from __future__ import annotations

from typing import Any

from fastdeepiot.tasks.registry import Task, TaskInfo, get, list_tasks, names, register

__all__ = ["Task", "TaskInfo", "get", "list_tasks", "names", "register", "train", "evaluate", "TrainResult",
           "save_checkpoint", "load_checkpoint", "CheckpointError", "count_params", "count_macs"]

_LAZY = {
    "train": "tasks.training", "evaluate": "tasks.training", "TrainResult": "tasks.training",
    "metrics_from_predictions": "tasks.training", "save_checkpoint": "checkpoints", "load_checkpoint": "checkpoints",
    "CheckpointError": "checkpoints", "count_params": "tasks.nets", "count_macs": "tasks.nets",
    "DeepSense": "tasks.nets", "SmallCNN": "tasks.nets", "build": "tasks.nets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod = importlib.import_module(f"fastdeepiot.{_LAZY[name]}")
        return getattr(mod, name)
    raise AttributeError(f"module 'fastdeepiot.tasks' has no attribute {name!r}")
