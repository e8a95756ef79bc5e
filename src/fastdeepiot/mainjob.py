"""The main job, end to end on this machine's CPU: `make run` (short budgets) or `make run FULL=1`.

Steps (each writes its artifact under --out, and each is skipped when its artifact already exists, so
an interrupted job resumes):
  1. profile torch-cpu (1 thread) into `torch-cpu.db`
  2. summarise the measurements
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fastdeepiot.cli import main as cli


def _step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run(out: Path, full: bool, device: str = "torch-cpu") -> int:
    out.mkdir(parents=True, exist_ok=True)
    budget = "30m" if full else "3m"
    db = out / f"{device}.db"
    t0 = time.monotonic()

    _step(f"1. profile {device} (budget {budget}; resumes what {db} holds)")
    code = cli(["profile", "--device", device, "--threads", "1", "--budget", budget, "--db", str(db)])
    if code:
        return code

    _step("2. what was measured")
    code = cli(["summary", str(db)])
    if code:
        return code

    print(f"\nmain job done in {time.monotonic() - t0:.0f} s; artifacts in {out}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastdeepiot.mainjob", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/main"), help="artifact folder")
    ap.add_argument("--full", action="store_true", help="full-length budgets (about an hour)")
    ap.add_argument("--device", default="torch-cpu", help="backend to profile and compress for")
    a = ap.parse_args(argv)
    return run(a.out, a.full, a.device)


if __name__ == "__main__":
    sys.exit(main())
