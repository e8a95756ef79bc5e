"""Compression report: the stage table, JSON, and a time-vs-accuracy plot."""

from __future__ import annotations

import json
from pathlib import Path


def _f(v, fmt="{:.3f}"):
    return "-" if v is None else fmt.format(v)


def history_table(res) -> str:
    guard = any("train_drop" in h for h in res.history)  # the training guard's drops (CompressConfig.train_guard)
    rows = ["| stage | move | predicted ms | measured ms | val acc % | divergence (nats) |"
            + (" training drop (points) |" if guard else ""), "|---|---|---|---|---|---|" + ("---|" if guard else "")]
    for h in res.history:
        rows.append(f"| {h['stage']} | {h.get('move') or ''} | {_f(h.get('predicted_ms'))} | "
                    f"{_f(h.get('measured_ms'))} | {_f(h.get('val_accuracy'), '{:.2f}')} | "
                    f"{_f(h.get('val_divergence'), '{:.4f}')} |" + (f" {_f(h.get('train_drop'), '{:+.2f}')} |"
                                                                   if guard else ""))
    b, f = res.base, res.final
    rows.append("")
    rows.append(f"base:  predicted {_f(b.get('predicted_ms'))} ms, measured {_f(b.get('measured_ms'))} ms, "
                f"val {_f(b.get('val_accuracy'), '{:.2f}')}%, test {_f(b.get('test_accuracy'), '{:.2f}')}%, "
                f"{b.get('params')} params")
    rows.append(f"final: predicted {_f(f.get('predicted_ms'))} ms, measured {_f(f.get('measured_ms'))} ms, "
                f"val {_f(f.get('val_accuracy'), '{:.2f}')}%, test {_f(f.get('test_accuracy'), '{:.2f}')}%, "
                f"{f.get('params')} params, outputs {_f(f.get('val_divergence'), '{:.4f}')} nats from the original's")
    return "\n".join(rows)


def write_report(res, stem: str) -> None:
    Path(stem + ".report.json").write_text(json.dumps(res.to_json(), indent=1, default=float))
    Path(stem + ".report.md").write_text("# Compression report\n\n" + history_table(res) + "\n\n"
                                         + "\n".join(f"- {n}" for n in res.notes) + "\n\nPlan:\n\n"
                                         + "\n".join(f"1. {s}" for s in res.plan.summary()) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(h.get("predicted_ms"), h.get("val_accuracy")) for h in res.history if h.get("predicted_ms") is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="search (predicted ms)")
    if res.final.get("measured_ms") is not None:
        ax.plot([res.base["measured_ms"]], [res.base["val_accuracy"]], "ks", label="original (measured)")
        ax.plot([res.final["measured_ms"]], [res.final["val_accuracy"]], "r*", ms=12, label="result (measured)")
    ax.set_xlabel("time per inference (ms)")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=110)
    plt.close(fig)
