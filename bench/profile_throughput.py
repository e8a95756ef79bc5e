"""What a profile budget buys: measurements stored by `fastdeepiot profile` in a fixed budget, this checkout
against an earlier commit, in interleaved rounds.

    .venv/bin/python bench/profile_throughput.py --before ed58407 --device onnxruntime-cpu --budget 60s \
        [--rounds 2] [--out docs/results/profile_throughput.md]

Each round profiles once with each version (the earlier commit's src/ exported with `git archive` into a temporary
folder; the order alternates round by round), each into a fresh store, with the CLI's defaults (1 thread, the quiet
guard on), and counts the rows stored. A short budget magnifies what a profile costs before its first measurement
(a fixed cost); the report says how much of each run the quiet guard waited, since on a shared host that decides
how many measurements a budget buys. Writes <out> (Markdown) and the same name with .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _provenance import code_version, export_commit

ROOT = Path(__file__).resolve().parents[1]


def profile_once(src: Path, device: str, budget: str, db: Path) -> dict:
    """One `fastdeepiot profile` run with `src` on the path: rows stored, and the share of it the guard waited."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "fastdeepiot", "profile", "--device", device, "--budget", budget,
                        "--db", str(db)], env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"profile with {src} failed:\n{r.stderr[-2000:]}")
    with sqlite3.connect(db) as con:
        rows = con.execute("select count(*) from measurements").fetchone()[0]
    waited = re.search(r"waited (\d+) s \((\d+)% of the run\)", r.stdout + r.stderr)
    return {"rows": rows, "wall_s": round(wall, 1), "guard_waited_pct": int(waited.group(2)) if waited else 0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="the earlier commit")
    ap.add_argument("--device", default="onnxruntime-cpu")
    ap.add_argument("--budget", default="60s")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "profile_throughput.md")
    a = ap.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"before": export_commit(a.before, Path(tmp)), "after": ROOT / "src"}
        for r in range(a.rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for v in order:
                res = profile_once(versions[v], a.device, a.budget, Path(tmp) / f"{v}{r}.db")
                runs.append({"round": r, "version": v, **res})
                print(json.dumps(runs[-1]), flush=True)
    meta = {"command": "bench/profile_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "before": a.before, "after": code_version(), "device": a.device, "budget": a.budget,
            "processor": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2))
    lines = [f"# What a {a.budget} profile stores: {a.before} against {meta['after']}\n",
             f"`{meta['command']}`, {meta['date']}, {a.device}, the CLI's defaults (1 thread, quiet guard on). "
             "Rounds interleaved; each run into a fresh store.\n",
             "| round | version | rows stored | wall s | quiet guard waited (% of run) |", "|---|---|---|---|---|"]
    lines += [f"| {x['round']} | {x['version']} | {x['rows']} | {x['wall_s']} | {x['guard_waited_pct']} |" for x in runs]
    a.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
