"""What profiling costs and how noisy it is, per layer family and backend.

For each backend and family: profile for `--seconds` (default 12 s) into a fresh database, report
measurements per minute and the median relative IQR of the calls inside one measurement; then measure
`--repeat` of those configurations again, later, and report the median relative difference between the
two medians (the run-to-run noise floor the time model has to live with).

    .venv/bin/python bench/profile_cost.py [--seconds 12] [--repeat 20] [--backends torch-cpu,onnxruntime-cpu]

Writes docs/results/profile_cost.md and docs/results/profile_cost.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from fastdeepiot.devices import cpu_model, get_backend
from fastdeepiot.families import FAMILIES, LayerConfig
from fastdeepiot.profiling.runner import plan, profile, time_layer
from fastdeepiot.profiling.store import Store
from fastdeepiot.report.tables import markdown_table

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"


def run(backends: list[str], seconds: float, repeat: int, threads: int) -> list[dict]:
    rows = []
    for name in backends:
        backend = get_backend(name, threads=threads)
        for fam in FAMILIES:
            with tempfile.TemporaryDirectory() as d:
                with Store.open(Path(d) / "p.db", backend.fingerprint(), create=True) as store:
                    t0 = time.monotonic()
                    s = profile(backend, store, plan([fam], seed=0, network_every=0), budget_s=seconds)
                    wall = time.monotonic() - t0
                    ms = list(store.measurements())
            if not ms:  # nothing finished within --seconds (a short budget, or the machine's slow state)
                rows.append({"backend": name, "family": fam, "measurements": 0,
                             "per_minute": 0.0, "failed": s.failed, "median_ms": None,
                             "median_within_rel_iqr_pct": None, "median_rerun_diff_pct": None,
                             "p90_rerun_diff_pct": None})
                print(json.dumps(rows[-1]))
                continue
            rng = np.random.default_rng(0)
            pick = rng.choice(len(ms), size=min(repeat, len(ms)), replace=False)
            diffs = []
            for i in pick:
                m = ms[i]
                again = time_layer(backend, LayerConfig.from_key(m.config_key))
                diffs.append(abs(again.median_ms - m.median_ms) / m.median_ms)
            rows.append({
                "backend": name, "family": fam, "measurements": s.new,
                "per_minute": round(60 * s.new / wall, 1), "failed": s.failed,
                "median_ms": float(np.median([m.median_ms for m in ms])),
                "median_within_rel_iqr_pct": round(100 * float(np.median([m.rel_iqr for m in ms])), 2),
                "median_rerun_diff_pct": round(100 * float(np.median(diffs)), 2),
                "p90_rerun_diff_pct": round(100 * float(np.percentile(diffs, 90)), 2),
            })
            print(json.dumps(rows[-1]))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=12.0, help="profiling time per family and backend")
    ap.add_argument("--repeat", type=int, default=20, help="configurations re-measured per family")
    ap.add_argument("--backends", default="torch-cpu,onnxruntime-cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT, help="folder for profile_cost.{md,json} (smoke runs: runs/...)")
    a = ap.parse_args(argv)
    rows = run(a.backends.split(","), a.seconds, a.repeat, a.threads)
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": f"bench/profile_cost.py --seconds {a.seconds} --repeat {a.repeat} "
                       f"--backends {a.backends} --threads {a.threads}",
            "processor": cpu_model(), "platform": platform.platform(), "threads": a.threads,
            "date": time.strftime("%Y-%m-%d")}
    (out / "profile_cost.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = [f"# Profiling cost and measurement noise\n",
          f"`{meta['command']}` on {meta['processor']} ({meta['threads']} thread), {meta['date']}.\n",
          "- **per_minute**: new measurements stored per minute of profiling (harness default policy).",
          "- **median_within_rel_iqr_pct**: spread of the timed calls inside one measurement (IQR / median).",
          "- **median/p90_rerun_diff_pct**: the same configuration measured again later: relative difference",
          "  of the two medians. This is the noise floor: no time model can be more accurate than this.\n",
          markdown_table(rows)]
    (out / "profile_cost.md").write_text("\n".join(md))
    print(f"wrote {out / 'profile_cost.md'}")


if __name__ == "__main__":
    main()
