"""Element-wise ops no family times (exp, abs, LogSigmoid, Hardshrink, clamp, ...): how far is the stand-in from the op?

    .venv/bin/python bench/standins.py --backend torch-cpu [--rounds 3]

The extraction prices such an op as the profiled activation kind of its cost class on the same shape (`graph.ops`:
rule `standin`, and `hardtanh` for clamps, priced as ReLU6), marked approximate. This bench checks that choice with
the ecosystem's own timer, as bench/generalisation.py does (`torch.utils.benchmark.Timer.blocked_autorange()` median
under inference_mode, or the same Timer around a plain `session.run` for onnxruntime-cpu; 1 thread): each op alone,
as a network of one op, against its stand-in kind alone at the same shape, in interleaved rounds (the minimum over
rounds). The stand-in kind is read from the extraction itself, so the table checks what `predict` does.

Reported per op: time / stand-in time at each shape, and their geometric mean. Writes
docs/results/<--name>_<backend>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from datetime import datetime
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import code_version  # noqa: E402
from repeatability import ort_sessions, reference_ms  # noqa: E402

from fastdeepiot.devices import cpu_model, get_backend  # noqa: E402
from fastdeepiot.families import ACTIVATIONS, _act_build  # noqa: E402
from fastdeepiot.graph.extract import extract_layers  # noqa: E402
from fastdeepiot.report.tables import markdown_table  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"
SHAPES = [(8, 256), (1, 32, 28, 28), (1, 64, 56, 56)]


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def ops() -> list[tuple[str, nn.Module]]:
    """(name, one-op network): the ops priced by a stand-in, then ops left unmodelled for want of one."""
    fns = [("torch.abs", torch.abs), ("-x", lambda x: -x), ("torch.square", torch.square), ("x ** 2", lambda x: x ** 2),
           ("torch.reciprocal", torch.reciprocal), ("torch.exp", torch.exp), ("torch.sqrt", torch.sqrt),
           ("torch.rsqrt", torch.rsqrt), ("torch.erf", torch.erf), ("torch.log", torch.log),
           ("torch.clamp(0, 1)", lambda x: torch.clamp(x, 0.0, 1.0)), ("x.clamp_min(0)", lambda x: x.clamp_min(0.0)),
           ("torch.sin", torch.sin), ("x ** 0.5", lambda x: x ** 0.5),
           ("x > 0.5", lambda x: x > 0.5), ("x == 0.5", lambda x: x == 0.5)]
    # (ELU, SELU, Softplus and Mish, which no kind stood in for, became activation kinds in session 23)
    mods = [("Hardtanh(-1,1)", nn.Hardtanh()), ("LogSigmoid", nn.LogSigmoid()), ("Hardshrink", nn.Hardshrink()),
            ("Softsign", nn.Softsign())]
    return [(n, Fn(f)) for n, f in fns] + mods


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="torch-cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="standins")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    be = get_backend(a.backend, threads=a.threads)

    nets, rows = [], []  # nets: (key, network, input); rows: one per (op, shape)
    index: dict = {}

    def add(key, net, x):
        if key not in index:
            index[key] = len(nets)
            nets.append((key, net.eval(), x))
        return index[key]

    for name, net in ops():
        for shape in SHAPES:
            x = torch.rand(shape) + 0.5  # positive: log, sqrt and ** 0.5 compute numbers, not NaN
            calls = [c for c in extract_layers(net.eval(), x) if c.kind != "free"]
            if len(calls) != 1 or calls[0].kind == "layer" and calls[0].family != "activation":
                sys.exit(f"error: {name} is not one activation or unmodelled op: {[(c.op, c.kind) for c in calls]}")
            kind = calls[0].config.params["kind"] if calls[0].kind == "layer" else None  # None: unmodelled
            rows.append({"op": name, "shape": list(shape), "standin": kind, "i_op": add((name, shape), net, x),
                         "i_standin": add((kind, shape), _act_build({"kind": kind, "channels": shape[1]}), x) if kind else None})
    for shape in SHAPES:  # every profiled kind too: which one is nearest to each op
        for kind in ACTIVATIONS:
            add((kind, shape), _act_build({"kind": kind, "channels": shape[1]}), torch.rand(shape) + 0.5)
    sessions = ort_sessions(be, nets)
    load_before = os.getloadavg()[0]
    measured = [[] for _ in nets]
    for r in range(a.rounds):
        for i, (_, m, x) in enumerate(nets):
            measured[i].append(reference_ms(a.backend, a.threads, m, x, sessions[i], min_run_time=0.1))
        print(f"round {r + 1}/{a.rounds}", flush=True)
    best = [min(ms) for ms in measured]
    for row in rows:
        i = row.pop("i_standin")
        row["op_ms"], row["standin_ms"] = best[row.pop("i_op")], best[i] if i is not None else None
        row["ratio"] = row["op_ms"] / row["standin_ms"] if i is not None else None
        shape = tuple(row["shape"])
        row["kinds_ms"] = {k: best[index[(k, shape)]] for k in ACTIVATIONS}

    def geomean(xs):
        return math.exp(sum(math.log(x) for x in xs) / len(xs))

    per_op = []
    for name, _ in ops():
        rs = [r for r in rows if r["op"] == name]
        # the profiled kind nearest to the op over the shapes (|log ratio| of the geometric mean)
        near = min(ACTIVATIONS, key=lambda k: abs(math.log(geomean([r["op_ms"] / r["kinds_ms"][k] for r in rs]))))
        priced = rs[0]["standin"] is not None
        per_op.append({"op": name, "standin": rs[0]["standin"] or "(unmodelled)",
                       **{f"ratio {'x'.join(map(str, r['shape']))}": round(r["ratio"], 2) if priced else "-" for r in rs},
                       "geomean": round(geomean([r["ratio"] for r in rs]), 2) if priced else "-", "nearest kind": near,
                       "its geomean": round(geomean([r["op_ms"] / r["kinds_ms"][near] for r in rs]), 2)})
    gm = [p["geomean"] for p in per_op if p["geomean"] != "-"]
    within = sum(0.8 <= g <= 1.25 for g in gm)
    cond = {"commit": code_version(), "backend": a.backend, "threads": a.threads, "rounds": a.rounds,
            "cpu": cpu_model(), "platform": platform.platform(), "torch": torch.__version__,
            "date": datetime.now().strftime("%Y-%m-%d %H:%M"), "load_before": load_before,
            "load_after": os.getloadavg()[0]}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"{a.name}_{a.backend}"
    stem.with_suffix(".json").write_text(json.dumps({"conditions": cond, "rows": rows, "per_op": per_op}, indent=2) + "\n")
    stem.with_suffix(".md").write_text(
        f"# Stand-ins for element-wise ops no family times, {a.backend}\n\n`bench/standins.py --backend {a.backend} "
        f"--rounds {a.rounds}` at commit {cond['commit']}, {cond['cpu']}, {a.threads} thread, {cond['date']}, load "
        f"{load_before:.2f} -> {cond['load_after']:.2f}.\n\nEach op alone against the activation kind the extraction "
        f"prices it as, alone at the same shape (the ecosystem's timer, best of {a.rounds} interleaved rounds). "
        f"Ratio: op time / stand-in time. Geometric mean within [0.8, 1.25]: {within} of {len(gm)} priced ops "
        f"(range {min(gm):.2f}-{max(gm):.2f}). Nearest kind: the profiled kind whose time is closest to the op's over the "
        f"shapes (geometric mean), for choosing stand-ins; a development figure on this machine.\n\n" + markdown_table(per_op) + "\n")
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
