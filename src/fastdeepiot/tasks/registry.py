"""Task definitions: data (lazy, cached in memory), splits, standardisation, reference network."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from fastdeepiot.errors import UnknownNameError, UserError
from fastdeepiot.tasks import fashion, hapt
from fastdeepiot.tasks.metrics import evaluate
from fastdeepiot.tasks.nets import build


@dataclass(frozen=True)
class TaskInfo:
    name: str
    description: str
    source: str
    n_classes: int
    input_shape: tuple[int, ...]
    sizes: dict[str, int] | None  # {"train", "val", "test"} or None when the data is missing
    net: str
    class_names: tuple[str, ...] = ()


class ArrayDataset:
    """A torch Dataset over float32 inputs and int64 labels held as numpy arrays."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _standardise(x_train: np.ndarray, *others: np.ndarray):
    """Per-channel (axis 1) mean/std over the training set, applied to every split."""
    axes = (0,) + tuple(range(2, x_train.ndim))
    mean = x_train.mean(axis=axes, dtype=np.float64).astype(np.float32)
    std = x_train.std(axis=axes, dtype=np.float64).astype(np.float32)
    std = np.where(std < 1e-6, 1.0, std).astype(np.float32)
    shape = (1, -1) + (1,) * (x_train.ndim - 2)
    m, s = mean.reshape(shape), std.reshape(shape)
    return [((a - m) / s).astype(np.float32) for a in (x_train, *others)], mean, std


@dataclass
class Task:
    name: str
    description: str
    n_classes: int
    input_shape: tuple[int, ...]
    net: str
    default_arch: dict[str, Any]
    class_names: tuple[str, ...]
    _raw_splits: Callable[[], tuple]  # -> ((x_tr, y_tr), (x_va, y_va), (x_te, y_te)), unstandardised
    _source: Callable[[], str]
    train_defaults: dict[str, Any] = field(default_factory=dict)
    _cache: tuple | None = field(default=None, repr=False)
    norm: dict[str, list[float]] | None = field(default=None, repr=False)

    @property
    def source(self) -> str:
        return self._source()

    def datasets(self):
        """(train, val, test) torch Datasets of (x float32, y int64), standardised with the training
        split's per-channel mean/std (kept in `self.norm`). Loaded once, then cached in memory."""
        if self._cache is None:
            (xtr, ytr), (xva, yva), (xte, yte) = self._raw_splits()
            (xtr, xva, xte), mean, std = _standardise(xtr, xva, xte)
            self.norm = {"mean": mean.tolist(), "std": std.tolist()}
            self._cache = (ArrayDataset(xtr, ytr), ArrayDataset(xva, yva), ArrayDataset(xte, yte))
        return self._cache

    def loaders(self, batch_size: int = 64, seed: int = 0):
        """(train, val, test) DataLoaders; the training one shuffles with a seeded generator."""
        tr, va, te = self.datasets()
        g = torch.Generator().manual_seed(seed)
        return (DataLoader(tr, batch_size=batch_size, shuffle=True, generator=g, drop_last=len(tr) > batch_size),
                DataLoader(va, batch_size=max(batch_size, 256)),
                DataLoader(te, batch_size=max(batch_size, 256)))

    def make_model(self, **arch_overrides):
        """The reference network (`model.arch` records its constructor kwargs)."""
        arch = dict(self.default_arch)
        arch.update(arch_overrides)
        return build(self.net, **arch)

    def metric(self, model, loader) -> float:
        """Accuracy in [0, 1]."""
        return evaluate(model, loader, self.n_classes)["accuracy"]

    def info(self, sizes: bool = True) -> TaskInfo:
        sz = None
        if sizes:
            try:
                tr, va, te = self.datasets()
                sz = {"train": len(tr), "val": len(va), "test": len(te)}
            except Exception as e:  # noqa: BLE001 - missing data: report sizes as unknown
                if not isinstance(e, UserError):
                    raise
        return TaskInfo(self.name, self.description, self.source, self.n_classes, self.input_shape, sz,
                        self.net, self.class_names)


# --- the three tasks ---------------------------------------------------------------------------

def _har_splits():
    w = hapt.load_windows()
    idx = hapt.split_by_person(w["user"])
    return tuple((w["x"][i], w["activity"][i]) for i in idx)


def _userid_splits():
    w = hapt.load_windows()
    idx = hapt.split_by_time(w["tpos"], w["tlen"])
    moving = np.isin(w["activity"], USERID_ACTIVITIES)
    return tuple((w["x"][i[moving[i]]], w["user"][i[moving[i]]]) for i in idx)


# "which person is moving": gait windows only (walking, upstairs, downstairs); in the static
# postures only the phone's orientation tells people apart.
USERID_ACTIVITIES = (0, 1, 2)


FASHION_VAL = 5000


def _fashion_splits():
    xtr, ytr, xte, yte = fashion.load()
    perm = np.random.default_rng(0).permutation(len(ytr))
    va, tr = perm[:FASHION_VAL], perm[FASHION_VAL:]

    def f(x):
        return (x.astype(np.float32) / 255.0)[:, None]

    return (f(xtr[tr]), ytr[tr].astype(np.int64)), (f(xtr[va]), ytr[va].astype(np.int64)), \
        (f(xte), yte.astype(np.int64))


def _hapt_source() -> str:
    return hapt.source_description()


def _fashion_source() -> str:
    return fashion.source_description()


_ACTIVITIES = ("walking", "upstairs", "downstairs", "sitting", "standing", "lying")
_DEEPSENSE = dict(n_classes=6, in_channels=6, length=128)


def _make_tasks() -> dict[str, Task]:
    return {
        "har": Task(
            "har", "human activity recognition: 6 activities from phone accelerometer + gyroscope "
            "(128-sample windows at 50 Hz, 50% overlap), split by person",
            6, (6, 128), "deepsense", dict(_DEEPSENSE), _ACTIVITIES, _har_splits, _hapt_source,
            train_defaults=dict(epochs=25, min_epochs=12, lr=2e-3, patience=8, batch_size=64)),
        "userid": Task(
            "userid", "identify which of the 30 people is moving, from the same windows (walking, upstairs, "
            "downstairs); split by recording time (first 60% / next 20% / last 20% of each activity's "
            "time in each recording, with a gap)",
            30, (6, 128), "deepsense", dict(_DEEPSENSE, n_classes=30),
            tuple(f"person {i}" for i in range(1, 31)), _userid_splits, _hapt_source,
            train_defaults=dict(epochs=25, min_epochs=8, lr=2e-3, patience=8, batch_size=64)),
        "fashion": Task(
            "fashion", "Fashion-MNIST: 10 clothing classes from 28x28 grey images",
            10, (1, 28, 28), "smallcnn", dict(n_classes=10, in_channels=1, size=28), CLASSES_FASHION,
            _fashion_splits, _fashion_source,
            train_defaults=dict(epochs=10, min_epochs=4, lr=2e-3, patience=3, batch_size=128)),
    }


CLASSES_FASHION = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "ankle boot")
_TASKS: dict[str, Task] | None = None


def _registry() -> dict[str, Task]:
    global _TASKS
    if _TASKS is None:
        _TASKS = _make_tasks()
    return _TASKS


def names() -> list[str]:
    return list(_registry())


def get(name: str) -> Task:
    """The task called `name` (raises UnknownNameError)."""
    reg = _registry()
    if not isinstance(name, str) or name not in reg:
        raise UnknownNameError(f"unknown task {name!r}; known tasks: {', '.join(reg)}")
    return reg[name]


def register(task: Task) -> Task:
    """Add a task (e.g. generated data in tests); replaces one of the same name."""
    _registry()[task.name] = task
    return task


def list_tasks(sizes: bool = True) -> list[TaskInfo]:
    return [t.info(sizes=sizes) for t in _registry().values()]
