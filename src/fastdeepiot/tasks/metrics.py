"""Evaluation: a network's predictions on a loader and the metrics task reports use (accuracy, macro F1,
per-class precision/recall/F1, confusion)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict(model: nn.Module, loader) -> tuple[np.ndarray, np.ndarray]:
    was = model.training
    model.eval()
    ys, ps = [], []
    try:
        for x, y in loader:
            ps.append(model(x).argmax(dim=1).cpu().numpy())
            ys.append(np.asarray(y))
    finally:
        model.train(was)
    if not ys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ys).astype(np.int64), np.concatenate(ps).astype(np.int64)


def metrics_from_predictions(y: np.ndarray, p: np.ndarray, n_classes: int,
                             class_names: tuple[str, ...] | None = None) -> dict[str, Any]:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
    present = support > 0
    per_class = []
    for c in range(n_classes):
        per_class.append({"class": c, "name": class_names[c] if class_names else str(c),
                          "precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                          "support": int(support[c])})
    n = int(len(y))
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": per_class,
        "n": n,
        "confusion": cm.tolist(),
    }


def evaluate(model: nn.Module, loader, n_classes: int, class_names: tuple[str, ...] | None = None) -> dict:
    """accuracy, macro_f1 (over classes present in the data), per_class (precision/recall/f1/support),
    n, confusion (rows: true class)."""
    y, p = predict(model, loader)
    return metrics_from_predictions(y, p, n_classes, class_names)
