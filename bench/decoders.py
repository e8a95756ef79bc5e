"""Does the time model price the layers session 23 added? Transposed convolutions (conv_transpose1d/2d) and the
activation kinds ELU, SELU, PReLU, Softplus and Mish, from a user's profile.

    .venv/bin/python bench/decoders.py --backend torch-cpu --minutes 6 [--db runs/dec/torch-cpu.db] \
        [--rounds 5] [--out docs/results/session23]

1. A fresh profile of every family, as `fastdeepiot profile` makes it (`profile`, `plan` of all families with random
   networks), for `--minutes` (resumed when --db exists and already holds that much).
2. `fit_time_model` (seed 0): the held-out layer error of each new family as the fit reports it (20% of each
   family's configurations held out), and of each new activation kind on the activation family's held-out rows.
3. Eight networks written for this bench before any result was seen (encoder-decoders, a DCGAN-like generator,
   1-D sensor autoencoders, conv stacks with the new activations), each timed with the ecosystem's tool
   (`torch.utils.benchmark` / a `session.run` loop, best of `--rounds` interleaved rounds) and priced with
   `predict_network`: the error of the whole network.

Writes <out>/decoders_<backend>.{md,json}. A development figure: one profile, one fit seed, one host state.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import code_version  # noqa: E402
from repeatability import ort_sessions, reference_ms  # noqa: E402

from fastdeepiot.devices import cpu_model, get_backend  # noqa: E402
from fastdeepiot.families import FAMILIES  # noqa: E402
from fastdeepiot.profiling.runner import plan, profile  # noqa: E402
from fastdeepiot.profiling.store import Store  # noqa: E402
from fastdeepiot.report.tables import markdown_table  # noqa: E402
from fastdeepiot.timemodel.model import fit_time_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NEW_FAMILIES = ("conv_transpose1d", "conv_transpose2d")
NEW_KINDS = ("elu", "selu", "prelu", "softplus", "mish")


# ------------------------------------------------------------------------------------------ networks


class UNet(nn.Module):
    def __init__(self, w: int):
        super().__init__()
        self.d1 = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU())
        self.d2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.d3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU())
        self.u3 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.c3 = nn.Sequential(nn.Conv2d(4 * w, 2 * w, 3, padding=1), nn.ReLU())
        self.u2 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.c2 = nn.Sequential(nn.Conv2d(2 * w, w, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(w, 2, 1)

    def forward(self, x):
        a = self.d1(x)
        b = self.d2(a)
        y = self.c3(torch.cat([self.u3(self.d3(b)), b], 1))
        return self.out(self.c2(torch.cat([self.u2(y), a], 1)))


class Generator(nn.Module):
    """DCGAN-like: a Linear to 4x4, then ConvTranspose(4, 2, 1) + BatchNorm + ReLU up to 32x32, Tanh."""

    def __init__(self, z: int = 64, w: int = 32):
        super().__init__()
        self.w = w
        self.fc = nn.Linear(z, 4 * w * 16)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.ConvTranspose2d(w, 3, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        return self.up(self.fc(z).view(-1, 4 * self.w, 4, 4))


class SensorAE(nn.Module):
    def __init__(self, w: int, act=nn.ReLU):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv1d(6, w, 5, stride=2, padding=2), act(), nn.Conv1d(w, 2 * w, 5, stride=2, padding=2),
                                 act())
        self.dec = nn.Sequential(nn.ConvTranspose1d(2 * w, w, 4, stride=2, padding=1), nn.BatchNorm1d(w), act(),
                                 nn.ConvTranspose1d(w, 6, 4, stride=2, padding=1))

    def forward(self, x):
        return self.dec(self.enc(x))


class ActStack(nn.Module):
    """Conv + BatchNorm + each new activation kind in turn, then a pooled Linear head."""

    def __init__(self, w: int):
        super().__init__()
        acts = [nn.ELU(), nn.SELU(), nn.PReLU(w), nn.Softplus(), nn.Mish()]
        self.body = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), *[m for a in acts for m in (
            a, nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w))])
        self.head = nn.Linear(w, 10)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


def networks() -> list[tuple[str, nn.Module, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        nets = [("unet_w8", UNet(8), (1, 3, 32, 32)), ("unet_w16_b4", UNet(16), (4, 3, 32, 32)),
                ("dcgan_generator_b8", Generator(), (8, 64)), ("dcgan_generator_w16_b1", Generator(w=16), (1, 64)),
                ("sensor_ae_w16", SensorAE(16), (1, 6, 128)), ("sensor_ae_w32_elu_b16", SensorAE(32, nn.ELU), (16, 6, 128)),
                ("act_stack_w16", ActStack(16), (1, 3, 32, 32)), ("act_stack_w32_b4", ActStack(32), (4, 3, 16, 16))]
        return [(n, m.eval(), torch.randn(*shape, generator=g)) for n, m, shape in nets]


# ------------------------------------------------------------------------------------------ the run


def pct(pred: float, meas: float) -> float:
    return 100.0 * (pred - meas) / meas


def layer_errors(tm) -> list[dict]:
    """Held-out layer error per new family and per new activation kind (tm.holdout from keep_holdout)."""
    fams, measured, predicted = tm.holdout["tree"]
    rows = []
    errs = np.abs(np.asarray(predicted) - np.asarray(measured)) / np.asarray(measured) * 100
    for fam in NEW_FAMILIES:
        e = [x for f, x in zip(fams, errs) if f == fam]
        rows.append(_row(fam, e))
    kinds = [c.params.get("kind") for c in tm.holdout_configs["tree"]]
    for kind in NEW_KINDS:
        e = [x for f, k, x in zip(fams, kinds, errs) if f == "activation" and k == kind]
        rows.append(_row(f"activation {kind}", e))
    return rows


def _row(name: str, e: list) -> dict:
    if not e:
        return {"layers": name, "held_out": 0, "median_pct": "-", "within10": "-"}
    return {"layers": name, "held_out": len(e), "median_pct": round(float(np.median(e)), 1),
            "within10": round(float(np.mean(np.asarray(e) <= 10)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="torch-cpu")
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--db", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    be = get_backend(a.backend, threads=a.threads)
    db = a.db or ROOT / "runs" / "decoders" / f"{a.backend}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with Store.open(db, be.fingerprint(), create=True) as store:
        s = profile(be, store, plan(list(FAMILIES), seed=0, network_every=40, backend=be), budget_s=a.minutes * 60)
        print(f"profiled: {s.new} new ({s.stopped_by}); per family {s.per_family}", flush=True)
        tm = fit_time_model(store, seed=0, keep_holdout=True)
    print(f"fitted in {time.time() - t0:.0f} s", flush=True)
    layers = layer_errors(tm)

    nets = networks()
    sessions = ort_sessions(be, nets)
    load_before = os.getloadavg()[0]
    measured = [[] for _ in nets]
    for r in range(a.rounds):
        order = range(len(nets)) if r % 2 == 0 else reversed(range(len(nets)))
        for i in order:
            _, m, x = nets[i]
            measured[i].append(reference_ms(a.backend, a.threads, m, x, sessions[i]))
        print(f"round {r + 1}/{a.rounds}", flush=True)
    rows = []
    for (name, m, x), ms in zip(nets, measured):
        p = tm.predict_network(m, x)
        best = min(ms)
        rows.append({"network": name, "measured_ms": round(best, 4), "spread_pct": round(100 * (max(ms) / best - 1), 1),
                     "predicted_ms": round(p.total_ms, 4), "error_pct": round(pct(p.total_ms, best), 1),
                     "new_layers": sum(1 for lp in p.layers if lp.family in NEW_FAMILIES
                                       or lp.config.get("kind") in NEW_KINDS),
                     "warnings": len(p.warnings)})
    errs = [abs(r["error_pct"]) for r in rows]
    summary = {"networks_within10": round(float(np.mean(np.asarray(errs) <= 10)), 3),
               "networks_median_abs_pct": round(float(statistics.median(errs)), 1)}
    rec = {"commit": code_version(), "backend": a.backend, "cpu": cpu_model(), "threads": a.threads,
           "torch": torch.__version__, "python": platform.python_version(), "date": datetime.now().isoformat(" ", "minutes"),
           "quiet_guard": os.environ.get("FASTDEEPIOT_QUIET_GUARD", "1") != "0",
           "profile": {"minutes": a.minutes, "new": s.new, "per_family": s.per_family, "waited_s": round(s.waited_s, 1)},
           "load": {"before": load_before, "after": os.getloadavg()[0]}, "rounds": a.rounds,
           "layers": layers, "networks": rows, "summary": summary}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"decoders_{a.backend}"
    stem.with_suffix(".json").write_text(json.dumps(rec, indent=2) + "\n")
    md = [f"# The layers session 23 added, on {a.backend}", "",
          f"`bench/decoders.py --backend {a.backend} --minutes {a.minutes:g} --rounds {a.rounds}` at commit "
          f"{rec['commit']}, {rec['cpu']}, {a.threads} thread, torch {torch.__version__}, {rec['date']}; quiet guard "
          f"{'on' if rec['quiet_guard'] else 'off'}; load {load_before:.2f} -> {rec['load']['after']:.2f}. A development "
          "figure: one profile, one fit seed, one host state.", "",
          f"Profile: {s.new} measurements in {a.minutes:g} minutes of every family, as `fastdeepiot profile` makes it "
          f"(conv_transpose2d {s.per_family.get('conv_transpose2d', 0)}, conv_transpose1d "
          f"{s.per_family.get('conv_transpose1d', 0)}, activation {s.per_family.get('activation', 0)} over 14 kinds).", "",
          "## Layers held out of the fit (20% of each family's configurations)", "", markdown_table(layers), "",
          "## Networks written for this bench (ecosystem timer, best of the rounds, against `predict_network`)", "",
          markdown_table(rows), "",
          f"Within ±10%: {summary['networks_within10']:.0%} of {len(rows)}; median |error| "
          f"{summary['networks_median_abs_pct']}%. `spread_pct`: the slowest round over the best."]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {stem}.md", flush=True)


if __name__ == "__main__":
    main()
