"""What a profile's budget buys when one family gets more of it: an equal-budget simulation on an existing store.

    .venv/bin/python bench/budget_shift.py --db runs/s29/HG/torch-cpu.db --backend torch-cpu \
        --family conv2d --seconds 150 --arms before=a1ae082 after=. --out docs/results/session30 --name budget_shift_torch

A profile's plan gives every family turns (`profiling.runner.FAMILY_TURNS`), and turns count configurations, not
seconds. To see what giving one family more of a budget does without a profile per variant, each arm takes a copy
of the store (its ground truth, `DB.truth.json`, beside it, as `bench/generalisation.py` reads it) and

1. profiles `--family` (one family, or several comma-separated, by the plan's turns) alone for `--seconds` more
   with the arm's code (`fastdeepiot profile --layers F
   --network-every 0 --seed S`, PYTHONPATH = the arm's src/; `.` is this checkout, anything else a commit
   exported with `git archive`), so an arm whose code changes the family's space profiles that space;
2. moves those rows' `measured_at` to the store's first measurement (inside the 10-minute cut), and deletes every
   other family's rows and every random network measured after `--minutes` x 60 - `--seconds` seconds of the
   original profile: the budget the other families lose;
3. scores the copy with `bench/generalisation.py --minutes M --loso-minutes M --seeds ...` (the arm's code).

The unchanged store is scored too ("store", with this checkout's code; `--store-json` reads a score made
already). The extra rows are measured now, hours after the store's own rows and its ground truth were: the host's
drift between the two is in the comparison (session 30: a re-measure of one store's Conv2d rows two hours on read
them 1% faster, median). Writes OUT/NAME.md and OUT/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import code_version, export_commit  # noqa: E402

from fastdeepiot.errors import UserError  # noqa: E402
from fastdeepiot.families import parse_families  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def shift_rows(db: Path, families: list[str], before_id: int, minutes: float, seconds: float) -> dict:
    """Step 2 on the copy `db`: rows with id > before_id (the extra ones) re-timed to the store's first
    measurement; the other families' rows and networks measured after minutes*60 - seconds of the profile
    deleted. Returns the counts."""
    con = sqlite3.connect(db)
    try:
        first = con.execute("SELECT MIN(measured_at) FROM measurements WHERE id <= ?", (before_id,)).fetchone()[0]
        extra = con.execute("UPDATE measurements SET measured_at = ? WHERE id > ?", (first, before_id)).rowcount
        cut = (datetime.fromisoformat(first) + timedelta(seconds=minutes * 60 - seconds)).isoformat()
        marks = ",".join("?" * len(families))
        dropped = con.execute(f"DELETE FROM measurements WHERE family NOT IN ({marks}) AND measured_at > ? "
                              "AND id <= ?", (*families, cut, before_id)).rowcount
        con.commit()
        left = dict(con.execute("SELECT family, COUNT(*) FROM measurements GROUP BY family").fetchall())
    finally:
        con.close()
    return {"extra_rows": extra, "dropped_rows": dropped, "cut": cut, "rows": left}


def _src(name: str, ref: str, tmp: Path) -> tuple[Path, str]:
    """(src folder, code label) of arm `name`: this checkout for ".", else `ref` exported under tmp (in a folder
    named after the arm, as a ref may hold a "/")."""
    if ref == ".":
        return ROOT / "src", code_version()
    dest = tmp / f"src-{name}"
    dest.mkdir()
    return export_commit(ref, dest), ref


def _generalisation(src: Path, db: Path, backend: str, minutes: float, seeds: str, out: Path,
                    scored: Path | None = None) -> dict:
    """bench/generalisation.py's figures for `db` at `minutes` (run with `src`), or read from `scored`, its JSON."""
    if scored is None:
        env = {**os.environ, "PYTHONPATH": str(src)}
        cmd = [PY, str(ROOT / "bench" / "generalisation.py"), "--backend", backend, "--db", str(db), "--minutes",
               f"{minutes:g}", "--loso-minutes", f"{minutes:g}", "--seeds", seeds, "--jobs", "2", "--out", str(out)]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        scored = out / f"generalisation_{backend}.json"
    cut = json.loads(scored.read_text())["cuts"][f"{minutes:g}"]
    return {k: cut[k] for k in ("layer_rows", "random_networks", "heldout_loso", "heldout_all_styles",
                                "random_loso", "zoo", "seeds")}


def _mean(run: dict, key: str) -> str:
    v = [s[key]["within_10pct"] for s in run["seeds"]]
    return f"{sum(v) / len(v):.1%} [{min(v):.1%}, {max(v):.1%}]"


def report(res: dict) -> str:
    lines = [f"# Budget shift: {res['family']} +{res['seconds']:g} s on {res['backend']}", "",
             f"`{res['command']}` at {res['commit']}, {res['date']}. Store `{res['db']}` "
             f"(ground truth beside it). See `bench/budget_shift.py`'s doc for the steps.", "",
             "| arm | code | extra rows | rows dropped | layer rows | random networks | held-out, style left out | "
             "held-out, every style | random networks, style left out | zoo (dev) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, a in res["arms"].items():
        g = a["generalisation"]
        lines.append(f"| {name} | {a['code']} | {a.get('extra_rows', 0)} | {a.get('dropped_rows', 0)} | "
                     f"{g['layer_rows']} | {g['random_networks']} | {_mean(g, 'heldout_loso')} | "
                     f"{_mean(g, 'heldout_all_styles')} | {_mean(g, 'random_loso')} | {g['zoo']['within_10pct']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--family", default="conv2d", help="the family given more, or several, comma-separated "
                    "(profiled together, by the plan's turns)")
    ap.add_argument("--seconds", type=float, default=150.0)
    ap.add_argument("--minutes", type=float, default=10.0, help="the profile length the store is scored at")
    ap.add_argument("--seed", type=int, default=1, help="plan seed of the extra rows (not the store's own)")
    ap.add_argument("--seeds", default="0,1,2", help="fit seeds of bench/generalisation.py")
    ap.add_argument("--arms", nargs="+", default=["after=."], metavar="NAME=REF")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    ap.add_argument("--name", default="budget_shift")
    ap.add_argument("--store-json", type=Path, help="the unchanged store's bench/generalisation.py JSON, scored "
                    "already with this checkout's code (the store arm is then read from it, not scored again)")
    a = ap.parse_args(argv)
    truth = a.db.with_suffix(".truth.json")
    if not a.db.exists() or not truth.exists():
        print(f"error: {a.db} and its ground truth {truth.name} must both exist (bench/generalisation.py "
              "measures one)", file=sys.stderr)
        return 2
    try:
        families = parse_families(a.family)
    except UserError as e:
        print(f"error: --family: {e}", file=sys.stderr)
        return 2
    arms = [v.split("=", 1) for v in a.arms]
    if any(len(v) != 2 or not v[0] or not v[1] for v in arms):
        print(f"error: --arms takes NAME=REF (REF a commit, or . for this checkout), got {a.arms}", file=sys.stderr)
        return 2
    res = {"backend": a.backend, "db": str(a.db), "family": a.family, "seconds": a.seconds, "commit": code_version(),
           "date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "command": " ".join(sys.argv),
           "arms": {}}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        res["arms"]["store"] = {"code": code_version(), "generalisation": _generalisation(
            ROOT / "src", a.db, a.backend, a.minutes, a.seeds, tmp / "store", a.store_json)}
        for name, ref in arms:
            src, code = _src(name, ref, tmp)
            work = tmp / name
            work.mkdir()
            db = work / a.db.name
            shutil.copy(a.db, db)
            shutil.copy(truth, db.with_suffix(".truth.json"))
            con = sqlite3.connect(db)
            before_id = con.execute("SELECT MAX(id) FROM measurements").fetchone()[0]
            con.close()
            env = {**os.environ, "PYTHONPATH": str(src)}
            subprocess.run([PY, "-m", "fastdeepiot", "profile", "-d", a.backend, "--db", str(db),
                            "--layers", ",".join(families), "--network-every", "0", "--budget", f"{a.seconds:g}s", "--seed", str(a.seed), "-q"],
                           env=env, check=True, stdout=subprocess.DEVNULL)
            arm = {"code": code, **shift_rows(db, families, before_id, a.minutes, a.seconds)}
            arm["generalisation"] = _generalisation(src, db, a.backend, a.minutes, a.seeds, work / "gen")
            res["arms"][name] = arm
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.name}.json").write_text(json.dumps(res, indent=1))
    (a.out / f"{a.name}.md").write_text(report(res))
    print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
