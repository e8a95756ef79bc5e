"""Real sensing data sets, reference networks and training.

    from fastdeepiot import tasks
    tasks.list_tasks()                    # [TaskInfo(name, description, source, n_classes, input_shape, sizes, net)]
    t = tasks.get("har")                  # UnknownNameError for unknown names
    train_ds, val_ds, test_ds = t.datasets()
    train_dl, val_dl, test_dl = t.loaders(batch_size=64, seed=0)
    model = t.make_model(width_mult=0.5)  # model.arch: its constructor kwargs
    res = tasks.train(model, t, epochs=10, lr=2e-3, patience=5, seed=0)
    tasks.evaluate(model, test_dl, t.n_classes)  # accuracy, macro_f1, per_class, n

Checkpoints: `fastdeepiot.checkpoints.save_checkpoint("har.pt", model, "har")`, `load_checkpoint("har.pt", task="har")`.

Tasks: har (6 activities, split by person), userid (30 people, split by time), fashion
(Fashion-MNIST). Importing this package loads no data; a task reads its data on first use.
"""

from __future__ import annotations

from fastdeepiot.tasks.metrics import evaluate, metrics_from_predictions
from fastdeepiot.tasks.nets import SmallCNN, DeepSense, build, count_macs, count_params
from fastdeepiot.tasks.registry import Task, TaskInfo, get, list_tasks, names, register
from fastdeepiot.tasks.training import TrainResult, train

__all__ = ["Task", "TaskInfo", "get", "list_tasks", "names", "register", "train", "evaluate", "TrainResult",
           "metrics_from_predictions", "count_params", "count_macs", "DeepSense", "SmallCNN", "build"]
