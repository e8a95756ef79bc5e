"""Does the generalisation bench's ground truth hold still? The same networks' truth measured at different times
(and with the quiet guard at different tolerances), compared pairwise.

    .venv/bin/python bench/truth_agreement.py measure --backend torch-cpu --tolerance 0.05 --out runs/t/a.json
    .venv/bin/python bench/truth_agreement.py report LABEL=runs/t/a.json LABEL=runs/s28/A0/torch-cpu.truth.json ... \
        [--out docs/results/session29 --name truth_agreement]

`measure` times the held-out suite and the zoo exactly as `bench/generalisation.py` does (`measure_truth`: the
ecosystem tool, best of `--rounds` interleaved rounds), each timing while a quiet guard of `--tolerance` says the
host runs at its uncontended speed (`generalisation.truth_guard`; `--tolerance 0`, or the environment turning
guards off: unguarded), and writes a truth file of the bench's format.
`report` takes such files (and the bench's own <db>.truth.json files) and gives, for every pair, the median ratio
of their times over the networks both hold, the median |deviation| and the share of networks within 3%.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import code_version  # noqa: E402
from generalisation import evaluation_networks, measure_truth, truth_guard  # noqa: E402

from fastdeepiot.report.tables import markdown_table  # noqa: E402


def pairs(truths: list[tuple[str, dict]]) -> list[dict]:
    rows = []
    for (a, ta), (b, tb) in itertools.combinations(truths, 2):
        names = [n for n in ta if not n.startswith("_") and n in tb]
        r = np.array([ta[n]["ms"] / tb[n]["ms"] for n in names])
        rows.append({"a": a, "b": b, "networks": len(names), "median a/b": round(float(np.median(r)), 3),
                     "median abs deviation %": round(100 * float(np.median(np.abs(r - 1))), 1),
                     "within 3%": round(float(np.mean(np.abs(r - 1) <= 0.03)), 2)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--backend", default="torch-cpu")
    m.add_argument("--tolerance", type=float, default=0.05)
    m.add_argument("--rounds", type=int, default=5)
    m.add_argument("--min-run-time", type=float, default=0.2)
    m.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report")
    r.add_argument("truths", nargs="+", metavar="LABEL=JSON")
    r.add_argument("--out", type=Path, default=None)
    r.add_argument("--name", default="truth_agreement")
    a = ap.parse_args(argv)
    if a.cmd == "measure":
        if a.out.exists():
            print(f"error: {a.out} exists; name another file", file=sys.stderr)
            return 2
        torch.set_num_threads(1)
        guard = truth_guard(a.tolerance)
        t0 = time.time()
        truth = measure_truth(a.backend, 1, a.rounds, evaluation_networks(a.backend), a.min_run_time, guard)
        truth["_conditions"] = {"date": time.strftime("%Y-%m-%d %H:%M"), "tolerance": a.tolerance,
                                "quiet_guard_waited_s": round(guard.waited_s, 1) if guard else 0.0,
                                "gave_up": guard.gave_up if guard else 0, "seconds": round(time.time() - t0, 1),
                                "rounds": a.rounds, "min_run_time": a.min_run_time, "threads": 1,
                                "commit": code_version()}
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(truth, indent=1))
        print(truth["_conditions"])
        return 0
    paths = [Path(s.split("=", 1)[-1]) for s in a.truths]
    if a.out:
        written = {(a.out / f"{a.name}{ext}").resolve() for ext in (".md", ".json")}
        clash = [p for p in paths if p.resolve() in written]
        if clash:
            print(f"error: {clash[0]} is an input of this command; writing it would destroy the input: choose "
                  "another --out or --name", file=sys.stderr)
            return 2
    truths = [(s.split("=", 1)[0], json.loads(p.read_text())) for s, p in zip(a.truths, paths)]
    cond = [{"label": lab, **{k: t.get("_conditions", {}).get(k) for k in
                              ("date", "quiet_guard", "tolerance", "quiet_guard_waited_s", "gave_up")}}
            for lab, t in truths]
    rows = pairs(truths)
    text = ("# Ground truth agreement\n\n`bench/truth_agreement.py report` at " + code_version() + ". The truths:\n\n"
            + markdown_table(cond) + "\nPairwise, over the networks both hold:\n\n" + markdown_table(rows))
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"{a.name}.md").write_text(text)
        (a.out / f"{a.name}.json").write_text(json.dumps({"conditions": cond, "pairs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
