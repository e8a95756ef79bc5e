"""Networks of one layer kind repeated: does the composition price them, or sum them below zero?

    .venv/bin/python bench/homogeneous_stacks.py --backend torch-cpu --models before=a.json,after=b.json

The composition's per-call offset b_g is negative (a layer timed alone pays a per-run cost that a network pays
once) and is fitted beside the kernel-mix term a_mix * ln(D). The random networks it is fitted on always run
several kernel kinds, so nothing stops a short profile trading a very negative b_g against a large a_mix; on a
network of one kernel kind (ln D = 0) every call then comes out below zero and the total falls to compose's floor,
the slowest layer alone (probe finding 1: 50 x Linear(8, 8) priced 98% under). `fit_composition` now keeps every
call it has seen at or above zero. This bench prices stacks of N copies of one layer (and a two-kind contrast)
with each given time model and measures them with the ecosystem's own tool, as bench/generalisation.py does:
`torch.utils.benchmark.Timer.blocked_autorange()` median under inference_mode (torch-cpu) or the same Timer around
a plain `session.run` (onnxruntime-cpu), best of `--rounds` interleaved rounds, 1 thread.

Writes docs/results/<--name>_<backend>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import code_version  # noqa: E402
from repeatability import ort_sessions, reference_ms  # noqa: E402

from fastdeepiot.devices import cpu_model, get_backend  # noqa: E402
from fastdeepiot.report.tables import markdown_table  # noqa: E402
from fastdeepiot.timemodel.model import TimeModel  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"


def stacks() -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(name, network, input): N copies of one layer, and the same layers with a ReLU between (two kinds)."""
    out = []
    for width, counts in ((8, (1, 10, 50)), (64, (1, 10, 50))):
        for n in counts:
            out.append((f"{n} x Linear({width},{width})", nn.Sequential(*[nn.Linear(width, width) for _ in range(n)]),
                        torch.randn(1, width)))
    for ch, size in ((8, 8), (16, 16)):
        for n in (1, 10):
            out.append((f"{n} x Conv2d({ch},{ch},3) {size}x{size}",
                        nn.Sequential(*[nn.Conv2d(ch, ch, 3, padding=1) for _ in range(n)]),
                        torch.randn(1, ch, size, size)))
    out.append(("20 x ReLU (1x256)", nn.Sequential(*[nn.ReLU() for _ in range(20)]), torch.randn(1, 256)))
    out.append(("10 x (Linear(64,64), ReLU)",
                nn.Sequential(*[m for _ in range(10) for m in (nn.Linear(64, 64), nn.ReLU())]), torch.randn(1, 64)))
    return [(n, m.eval(), x) for n, m, x in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="torch-cpu")
    ap.add_argument("--models", required=True, help="name=path.timemodel.json,... (fitted for --backend)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="homogeneous_stacks")
    ap.add_argument("--note", default="", help="a line on where the models came from, kept in the record")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()

    models = {}
    for item in a.models.split(","):
        name, _, path = item.partition("=")
        models[name] = TimeModel.load(path)
        if models[name].backend != a.backend:
            sys.exit(f"error: {path} is a {models[name].backend} model, not {a.backend}")
    torch.set_num_threads(a.threads)
    nets = stacks()
    be = get_backend(a.backend, threads=a.threads)
    sessions = ort_sessions(be, [(n, m, x) for n, m, x in nets])
    load_before = os.getloadavg()[0]
    measured = [[] for _ in nets]
    for r in range(a.rounds):  # interleaved: every network once per round
        for i, (_, m, x) in enumerate(nets):
            measured[i].append(reference_ms(a.backend, a.threads, m, x, sessions[i]))
        print(f"round {r + 1}/{a.rounds}", flush=True)
    rows = []
    for (name, m, x), ms in zip(nets, measured):
        row = {"network": name, "measured_ms": min(ms), "spread_pct": 100 * (max(ms) - min(ms)) / min(ms)}
        for k, tm in models.items():
            p = tm.predict_network(m, x)
            row[f"{k}_ms"] = p.total_ms
            row[f"{k}_error_pct"] = 100 * (p.total_ms - row["measured_ms"]) / row["measured_ms"]
            row[f"{k}_floored"] = any("below its slowest layer alone" in w for w in p.warnings)
        rows.append(row)
    cond = {"commit": code_version(), "backend": a.backend, "threads": a.threads, "rounds": a.rounds,
            "cpu": cpu_model(), "platform": platform.platform(), "torch": torch.__version__,
            "date": datetime.now().strftime("%Y-%m-%d %H:%M"), "load_before": load_before,
            "load_after": os.getloadavg()[0], "models": a.models, "note": a.note,
            "compositions": {k: tm.composition for k, tm in models.items()}}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"{a.name}_{a.backend}"
    stem.with_suffix(".json").write_text(json.dumps({"conditions": cond, "rows": rows}, indent=2) + "\n")
    cols = ["network", "measured_ms", "spread_pct"] + [f"{k}_{c}" for k in models for c in ("ms", "error_pct")]
    table = markdown_table([{c: (round(r[c], 4) if isinstance(r[c], float) else r[c]) for c in cols} for r in rows])
    floored = {k: sum(r[f"{k}_floored"] for r in rows) for k in models}
    stem.with_suffix(".md").write_text(
        f"# One layer kind repeated, {a.backend}\n\n`bench/homogeneous_stacks.py --backend {a.backend} --models "
        f"{a.models}` at commit {cond['commit']}, {cond['cpu']}, {a.threads} thread, {cond['date']}, load "
        f"{load_before:.2f} -> {cond['load_after']:.2f}. {a.note}\n\nMeasured: the ecosystem's tool, best of "
        f"{a.rounds} interleaved rounds (spread: max/min - 1 over the rounds). Networks priced at compose's floor "
        f"(the slowest layer alone): {', '.join(f'{k} {v}' for k, v in floored.items())} of {len(rows)}.\n\n"
        + table + "\n")
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
