"""Held-out accuracy of chosen layer families' models on existing profile stores, this checkout against an
earlier commit: what a change to a family's features or to the model tree does, without a new profile.

    .venv/bin/python bench/family_holdout.py --families gru,lstm --before 43f8ac7 \
        --db runs/s28/B0/torch-cpu.db runs/s28/oB0/onnxruntime-cpu.db [--seeds 0,1,2,3,4] \
        [--out docs/results/session29 --name family_holdout_rnn]

For every store, seed and version, `fit_time_model(store, families=..., seed=seed)` holds out a random 20% of
each family's rows (the split follows the seed) and reports the tree's error on them; the figures are the mean
over the seeds of the share of held-out rows within +-10% and of their median |error|, with the [min, max] of
the share. Each version runs in its own process (PYTHONPATH = its src/; the earlier commit exported with
`git archive`). Nothing is timed: the stores' rows are the labels, so the figures are exact repeats of each
other. These are rows of the profile's own distribution, a development figure: the held-out networks
(`bench/generalisation.py`) are the headline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import code_version, export_commit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def worker(db: str, families: list[str], seeds: list[int]) -> dict:
    from fastdeepiot.profiling.store import Store
    from fastdeepiot.timemodel.model import fit_time_model

    out = {f: [] for f in families}
    for seed in seeds:
        with Store.open(db) as store:
            tm = fit_time_model(store, families=families, seed=seed)
        for f in families:
            rep = tm.report["families"].get(f)
            if rep is None:
                continue
            m = rep["models"]["tree"]
            out[f].append({"seed": seed, "n_test": m["n"], "within_10pct": m["within_10pct"],
                           "median_abs_pct": m["median_abs_pct"]})
    return out


def run_version(src: Path, db: Path, families: list[str], seeds: list[int]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, __file__, "--worker", "--db", str(db), "--families", ",".join(families),
           "--seeds", ",".join(map(str, seeds))]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(runs: list[dict]) -> str:
    if not runs:
        return "-"
    w = [r["within_10pct"] for r in runs]
    med = np.mean([r["median_abs_pct"] for r in runs])
    return f"{100 * np.mean(w):.1f}% [{100 * min(w):.1f}, {100 * max(w):.1f}], median {med:.1f}%"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, nargs="+", required=True)
    ap.add_argument("--families", required=True)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--before", default=None, help="an earlier commit to compare with")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--name", default="family_holdout")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    families, seeds = a.families.split(","), [int(s) for s in a.seeds.split(",")]
    if a.worker:
        print(json.dumps(worker(str(a.db[0]), families, seeds)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"this checkout": ROOT / "src"}
        if a.before:
            versions[f"before ({a.before})"] = export_commit(a.before, Path(tmp))
        results = {str(db): {v: run_version(src, db, families, seeds) for v, src in versions.items()} for db in a.db}
    meta = {"command": "bench/family_holdout.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "commit": code_version(), "before": a.before, "families": families, "seeds": seeds,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    lines = [f"# Held-out rows of {', '.join(families)}: this checkout ({meta['commit']})"
             + (f" against {a.before}" if a.before else ""), "",
             f"{meta['date']}; `{meta['command']}`. Share of each family's held-out rows (a random 20% of the "
             f"store's, per seed) within ±10%, mean [min, max] over seeds {a.seeds}, and the mean of their median "
             "|error|. Development figures (rows of the profile's own distribution).", "",
             "| store | family | rows held out | " + " | ".join(versions) + " |",
             "|---|---|---|" + "---|" * len(versions)]
    for db, by_version in results.items():
        for f in families:
            first = next(iter(by_version.values())).get(f, [])
            n = first[0]["n_test"] if first else 0
            cells = [summary(by_version[v].get(f, [])) for v in versions]
            lines.append(f"| {Path(db).parent.name}/{Path(db).name} | {f} | {n} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"{a.name}.md").write_text(text)
        (a.out / f"{a.name}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
