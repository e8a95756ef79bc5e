"""The main job, end to end on this machine's CPU: `make run` (short budgets) or `make run FULL=1`.

Steps (each writes its artifact under --out; the profile resumes what the database holds, and training
is skipped when its checkpoint exists, so an interrupted job picks up where it stopped):
  1. profile torch-cpu (1 thread) into `torch-cpu.db` (layers and random whole networks)
  2. summarise the measurements
  3. fit the time model -> `torch-cpu.timemodel.json`, with held-out accuracy against the baselines
  4. predict reference networks and measure them (prediction error per network) -> `predictions.json`
  5. train the activity-recognition network (har) -> `har.pt`
  6. compress it for this device, at most 0.5 accuracy points lost -> `har_fast.pt` (+ plan, report, plot)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fastdeepiot.cli import main as cli
from fastdeepiot.commands.profile import parse_duration
from fastdeepiot.errors import UserError
from fastdeepiot.graph.extract import extract_layers
from fastdeepiot.profiling.store import Store
from fastdeepiot.profiling.timer import time_networks
from fastdeepiot.report.tables import print_table
from fastdeepiot.timemodel.model import MIN_SAMPLES, TimeModel
from fastdeepiot.zoo import build_zoo_network


def _step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run(out: Path, full: bool, device: str = "torch-cpu", budget: str | None = None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    budget = budget or ("30m" if full else "4m")
    db = out / f"{device}.db"
    t0 = time.monotonic()

    _step(f"1. profile {device} (budget {budget}; resumes what {db} holds)")
    code = cli(["profile", "--device", device, "--threads", "1", "--budget", budget, "--db", str(db)])
    if code:
        return code
    code = top_up(db, device, extra_s=parse_duration(budget))
    if code:
        return code

    _step("2. what was measured")
    code = cli(["summary", str(db)])
    if code:
        return code

    tm_path = out / f"{device}.timemodel.json"
    _step("3. fit the time model (tree vs FLOPs, lookup table, random forest on held-out configurations)")
    code = cli(["fit", str(db), "-o", str(tm_path), "--compare"])
    if code:
        return code

    _step("4. predict reference networks, then measure them")
    predict_reference_networks(tm_path, out / "predictions.json")

    ckpt = out / "har.pt"
    _step(f"5. train the activity-recognition network -> {ckpt}")
    if ckpt.exists():
        print(f"{ckpt} exists; skipped (delete it to train again)")
    else:
        code = cli(["train", "har", "-o", str(ckpt), *([] if full else ["--epochs", "14"])])
        if code:
            return code

    _step("6. compress it, guided by the time model (at most 0.5 accuracy points lost)")
    code = cli(["compress", str(ckpt), "--task", "har", "--time-model", str(tm_path),
                "--max-accuracy-drop", "0.5", "-o", str(out / "har_fast.pt"),
                *([] if full else ["--max-iters", "8", "--final-epochs", "2"])])
    if code:
        return code

    print(f"\nmain job done in {time.monotonic() - t0:.0f} s; artifacts in {out}/")
    return 0


REFERENCE = (("deepsense", 1.0), ("deepsense", 0.5), ("mobilenet", 0.5), ("resnet", 0.5), ("shufflenet", 1.0),
             ("vgg", 0.25))


def needed_families() -> dict[str, set[tuple[str, str]]]:
    """The layer families the main job's networks run (the reference networks; DeepSense is the one compressed),
    each with the string parameter values they use (an activation's kind, a pool's mode): a model prices a value
    only if it was fitted on one."""
    out: dict[str, set[tuple[str, str]]] = {}
    for name, width in REFERENCE:
        net, x = build_zoo_network(name, width)
        for c in extract_layers(net, x):
            if c.kind == "layer":
                out.setdefault(c.family, set()).update((k, v) for k, v in c.config.params.items() if isinstance(v, str))
    return out


def top_up(db: Path, device: str, extra_s: float) -> int:
    """Profile the families the main job needs until each has MIN_SAMPLES measurements, for at most `extra_s` more:
    on a host in its slow state a short budget stores a few measurements of every family (80 in 4 minutes here, the
    quiet guard waiting 80% of it), and the fit then cannot price DeepSense. A family also counts as short while
    a string value its networks use (ReLU's kind) is not among its measurements."""
    need = needed_families()
    t0 = time.monotonic()
    while True:
        have, missing = {}, {}
        with Store.open(db) as store:
            for f, values in need.items():
                rows = [m.config for m in store.measurements(kind="layer", family=f)]
                have[f] = len(rows)
                seen = {(k, v) for cfg in rows for k, v in cfg.items() if isinstance(v, str)}
                missing[f] = sorted(v for _, v in values - seen)
        short = sorted(f for f in need if have[f] < MIN_SAMPLES or missing[f])
        if not short:
            return 0
        what = ", ".join(f"{f} ({have[f]}{'; no ' + '/'.join(missing[f]) if missing[f] else ''})" for f in short)
        left = extra_s - (time.monotonic() - t0)
        if left <= 0:
            print(f"still short after {extra_s:.0f} s more: {what}", file=sys.stderr)
            return 0  # the fit and predict say what they cannot price
        print(f"\ntoo few measurements for a model of {what}: profiling them for up to {int(min(60, left))} s more")
        code = cli(["profile", "--device", device, "--threads", "1", "--budget", f"{int(min(60, left))}s",
                    "--db", str(db), "--layers", ",".join(short)])
        if code:
            return code


def predict_reference_networks(tm_path: Path, out_json: Path) -> None:
    tm = TimeModel.load(tm_path)
    nets = [build_zoo_network(name, width) + (f"{name} x{width}",) for name, width in REFERENCE]
    # the one network timer: all six in one timing process, interleaved rounds, best of rounds
    measured = time_networks([n for n, _, _ in nets], [x for _, x, _ in nets], tm.backend,
                             threads=int(tm.device.get("threads", 1)))
    rows = []
    for (net, x, label), meas in zip(nets, measured):
        pred = tm.predict_network(net, x).total_ms
        rows.append({"network": label, "predicted_ms": pred, "measured_ms": meas.median_ms,
                     "error_pct": 100 * (pred - meas.median_ms) / meas.median_ms})
    print_table(rows, title=f"reference networks on {tm.backend} (not used in fitting)")
    out_json.write_text(json.dumps(rows, indent=2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastdeepiot.mainjob", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/main"), help="artifact folder")
    ap.add_argument("--full", action="store_true", help="full-length budgets (about an hour)")
    ap.add_argument("--device", default="torch-cpu", help="backend to profile and compress for")
    ap.add_argument("--profile-budget", default=None, help="override the profiling budget (e.g. 30s)")
    a = ap.parse_args(argv)
    try:
        return run(a.out, a.full, a.device, a.profile_budget)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
