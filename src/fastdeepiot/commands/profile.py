"""CLI verbs: devices, profile, export, summary."""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from fastdeepiot.devices import check_threads, get_backend, list_backends
from fastdeepiot.errors import UserError
from fastdeepiot.families import parse_families
from fastdeepiot.profiling.harness import TimingPolicy
from fastdeepiot.profiling.runner import plan
from fastdeepiot.profiling.runner import profile as run_profile
from fastdeepiot.profiling.store import Store, export_csv, export_parquet, parquet_modules, write_csv
from fastdeepiot.report.tables import measurement_summary, print_table
from fastdeepiot.safeio import check_output
from fastdeepiot.timemodel.adaptive import adaptive_workloads
from fastdeepiot.timemodel.model import TimeModel


# This module's verbs; cli.py merges them into the one app (commands never import cli).
app = typer.Typer()


def parse_duration(text: str) -> float:
    """'90' or '90s' -> 90.0; '10m' -> 600.0; '1h' -> 3600.0; '1h30m' -> 5400.0."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        value = float(t)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", t)
        if not parts or "".join(a + b for a, b in parts) != t:
            raise UserError(f"cannot read duration {text!r}; use e.g. 90s, 10m, 1h30m")
        value = sum(float(v) * {"h": 3600, "m": 60, "s": 1}[u] for v, u in parts)
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"duration {text!r} must be a positive time, e.g. 90s, 10m, 1h30m")
    if value > 366 * 86400:
        raise UserError(f"duration {text!r} is longer than a year; use e.g. 10m or 24h")
    return value


@app.command()
def devices(as_json: bool = typer.Option(False, "--json", help="machine-readable output")):
    """List the backends available here, with their conditions."""
    rows = list_backends()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="fastdeepiot devices")
    for col in ("device", "available", "description", "conditions"):
        t.add_column(col)
    for r in rows:
        cond = r["reason"] if not r["available"] else ", ".join(
            f"{k}={v}" for k, v in r["conditions"].items() if k not in ("backend", "platform"))
        t.add_row(r["name"], "yes" if r["available"] else "no", r["description"], cond)
    Console().print(t)


@app.command()
def profile(
    device: str = typer.Option("torch-cpu", "--device", "-d", help="backend (see `fastdeepiot devices`)"),
    threads: int = typer.Option(1, "--threads", min=1, help="intra-op threads the backend may use"),
    layers: Optional[str] = typer.Option(None, "--layers", help="comma-separated families (default: all)"),
    budget: str = typer.Option("10m", "--budget", help="time budget, e.g. 90s, 10m, 1h"),
    db: Path = typer.Option(Path("prof.db"), "--db", help="SQLite measurement store (created/resumed)"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of the sampling plan (same seed = same plan; >= 0)"),
    networks: int = typer.Option(10, "--network-every", min=0,
                                 help="measure one random whole network after every N layers (0: none)"),
    max_new: Optional[int] = typer.Option(None, "--max-new", min=0, help="stop after N new measurements"),
    quick: bool = typer.Option(False, "--quick", help="fewer timed calls per measurement (noisier)"),
    adaptive: Optional[Path] = typer.Option(
        None, "--adaptive", help="time model JSON: first re-sample where its held-out error is highest"),
    force: bool = typer.Option(False, "--force", help="add this device to a database of another device"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
):
    """Time layer configurations on a device and store every measurement (resumable)."""
    fams = parse_families(layers)
    budget_s = parse_duration(budget)
    check_threads(threads, "--threads")
    adaptive_tm = TimeModel.load(adaptive) if adaptive is not None else None  # refused before the db is touched
    if not Path(db).exists():  # a new database: the path must be one we can create
        check_output(db, kind="sqlite", inputs=[adaptive], option="--db")
    elif adaptive is not None and Path(db).resolve() == Path(adaptive).resolve():
        raise UserError(f"--db {db} is the --adaptive time model; give the measurement database")
    backend = get_backend(device, threads=threads)
    if adaptive_tm is not None and adaptive_tm.device and adaptive_tm.device != backend.fingerprint() and not force:
        d = adaptive_tm.device
        raise UserError(f"--adaptive {adaptive} was fitted on another device ({d.get('backend')}, {d.get('threads')} "
                        f"threads), not on {device} with {threads}: its errors say where that device's model is "
                        f"worst; pass its --device and --threads, or --force")
    # drawn before the store is opened: a damaged report is refused before the database is made
    first = adaptive_workloads(adaptive, None, fams, seed=seed) if adaptive is not None else iter(())
    store = Store.open(db, backend.fingerprint(), create=True, force=force)
    workloads = itertools.chain(first, plan(fams, seed=seed, network_every=networks, backend=backend))
    policy = TimingPolicy.quick() if quick else TimingPolicy()
    try:
        summary = _run_with_progress(backend, store, workloads, budget_s, max_new, policy, quiet)
        total = store.count()
    finally:
        store.close()
    fam_txt = ", ".join(f"{k} {v}" for k, v in sorted(summary.per_family.items())) or "none"
    other = (f"{summary.by_other} already done by another profiler on this database meanwhile; "
             if summary.by_other else "")
    print(f"{summary.new} new measurements ({fam_txt}); {summary.skipped} already stored; {other}"
          f"{summary.failed} failed; stopped by {summary.stopped_by} after {summary.elapsed_s:.0f} s; "
          f"{total} measurements in {db}")
    if summary.waited_s >= 1 or summary.dropped_rounds:
        share = summary.waited_s / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
        print(f"the machine's slow state cost this run: layer measurements waited {summary.waited_s:.0f} s "
              f"({share:.0%} of the run) for its uncontended speed, {summary.dropped_rounds} timed rounds "
              "were dropped; a budget buys fewer measurements on a busier host")
    if summary.by_other and summary.new == 0:
        print("all the work this run reached was already done by another profiler with the same plan "
              "(same seed) on this database; nothing was measured twice")
    for f in summary.failures[:5]:
        print(f"  failed: {f}")
    if summary.unsupported:
        print(f"  skipped {summary.unsupported} configurations that {backend.name} cannot run")


def _run_with_progress(backend, store, workloads, budget_s, max_new, policy, quiet):
    if quiet:
        return run_profile(backend, store, workloads, budget_s=budget_s, max_new=max_new, policy=policy)
    columns = [TextColumn("[bold]profiling[/] {task.description}"), BarColumn(),
               TextColumn("{task.fields[new]} new"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn()]
    with Progress(*columns, transient=False) as bar:
        total = float(max_new) if max_new is not None else budget_s
        task = bar.add_task(backend.name, total=total, new=0)

        def on_progress(s, w):
            done = s.new if max_new is not None else min(s.elapsed_s, budget_s)
            bar.update(task, completed=done, new=s.new, description=f"{backend.name} {w.family:<10}")

        s = run_profile(backend, store, workloads, budget_s=budget_s, max_new=max_new, policy=policy,
                        on_progress=on_progress)
        bar.update(task, completed=total)
    return s


@app.command()
def export(
    db: Path = typer.Argument(..., help="measurement database"),
    csv: Optional[Path] = typer.Option(None, "--csv", help="write CSV here ('-': to standard output)"),
    parquet: Optional[Path] = typer.Option(None, "--parquet", help="write Parquet here (needs pyarrow)"),
    force: bool = typer.Option(False, "--force", help="overwrite an output file of another kind"),
):
    """Export every measurement, with its conditions, to CSV (and/or Parquet)."""
    if csv is None and parquet is None:
        raise UserError("nothing to do: give --csv PATH and/or --parquet PATH")
    if parquet is not None and str(parquet) == "-":
        raise UserError("--parquet -: Parquet is binary and is not written to standard output; give a file "
                        "path (--csv - writes CSV to standard output)")
    to_stdout = csv is not None and str(csv) == "-"  # a file named '-' by its full path (Path('./-') is '-')
    if csv is not None and parquet is not None and Path(csv).resolve() == Path(parquet).resolve():
        raise UserError("--csv and --parquet name the same file; give two paths")
    if csv is not None and not to_stdout:
        check_output(csv, kind="csv", inputs=[db], force=force, option="--csv")
    if parquet is not None:
        check_output(parquet, kind="parquet", inputs=[db], force=force, option="--parquet")
        parquet_modules()  # pyarrow missing: an error before the CSV is written
    say = functools.partial(print, file=sys.stderr) if to_stdout else print  # stdout holds the CSV alone
    with Store.open(db) as store:
        if to_stdout:
            n = write_csv(store, sys.stdout)
            sys.stdout.flush()
            say(f"wrote {n} measurements to standard output")
        elif csv is not None:
            n = export_csv(store, str(csv))
            say(f"wrote {n} measurements to {csv}")
        if parquet is not None:
            n = export_parquet(store, str(parquet))
            say(f"wrote {n} measurements to {parquet}")


@app.command()
def summary(db: Path = typer.Argument(..., help="measurement database"),
            as_json: bool = typer.Option(False, "--json")):
    """Per device and family: how many measurements, their time range and their noise."""
    with Store.open(db) as store:
        rows = measurement_summary(store)
        devs = store.devices()
    if as_json:  # each family row's "device" indexes "devices"
        print(json.dumps({"devices": devs, "families": rows}, indent=2))
        return
    if len(devs) > 1:
        print(f"{db} holds measurements of {len(devs)} devices; one table each")
    for i, d in enumerate(devs):
        which = f"device {i + 1}" if len(devs) > 1 else "device"
        print(f"{which}: {d['backend']} on {d['processor']}, {d['threads']} thread(s), {d['dtype']}")
        title = f"measurements in {db}" + (f", {which}" if len(devs) > 1 else "")
        print_table([{k: v for k, v in r.items() if k != "device"} for r in rows if r["device"] == i], title=title)
