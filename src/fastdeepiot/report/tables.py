"""Tables for the terminal (rich) and for docs (Markdown)."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Sequence

import numpy as np
from rich.console import Console
from rich.table import Table


def measurement_summary(store) -> list[dict]:
    """Per device and family: count, median / min / max time, median relative IQR (the noise floor). Each
    row's "device" is the index of its device in `store.devices()`: the times of two devices are never
    pooled into one row."""
    order = [json.dumps(d, sort_keys=True) for d in store.devices()]
    by: dict[tuple[int, str], list] = defaultdict(list)
    for m in store.measurements():
        key = json.dumps(m.device, sort_keys=True)
        if key not in order:  # cannot happen (a measurement joins its device); kept apart all the same
            order.append(key)
        by[(order.index(key), m.family)].append((m.median_ms, m.rel_iqr))
    rows = []
    for (dev, fam), v in sorted(by.items()):
        t = np.array([a for a, _ in v])
        r = np.array([b for _, b in v])
        rows.append({"device": dev, "family": fam, "measurements": len(v), "median_ms": float(np.median(t)),
                     "min_ms": float(t.min()), "max_ms": float(t.max()),
                     "median_rel_iqr_pct": float(100 * np.median(r))})
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_table(rows: Sequence[dict], title: str = "") -> None:

    if not rows:
        print(f"{title}: (empty)")
        return
    t = Table(title=title)
    for k in rows[0]:
        t.add_column(k, justify="left" if isinstance(rows[0][k], str) else "right")
    for r in rows:
        t.add_row(*(_fmt(r[k]) for k in rows[0]))
    Console().print(t)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "(no rows)\n"
    cols = list(columns or rows[0].keys())
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out) + "\n"
