"""CLI verbs: devices, profile, export, summary."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import typer

from fastdeepiot.errors import UserError


# This module's verbs; cli.py merges them into the one app (commands never import cli).
app = typer.Typer()


def parse_duration(text: str) -> float:
    """'90' or '90s' -> 90.0; '10m' -> 600.0; '1h' -> 3600.0; '1h30m' -> 5400.0."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", t)
    if not parts or "".join(a + b for a, b in parts) != t:
        raise UserError(f"cannot read duration {text!r}; use e.g. 90s, 10m, 1h30m")
    return sum(float(v) * {"h": 3600, "m": 60, "s": 1}[u] for v, u in parts)


@app.command()
def devices(as_json: bool = typer.Option(False, "--json", help="machine-readable output")):
    """List the backends available here, with their conditions."""
    from rich.console import Console
    from rich.table import Table

    from fastdeepiot.devices import list_backends

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
    seed: int = typer.Option(0, "--seed", help="seed of the sampling plan (same seed = same plan)"),
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
    from fastdeepiot.devices import get_backend
    from fastdeepiot.families import parse_families
    from fastdeepiot.profiling.harness import TimingPolicy
    from fastdeepiot.profiling.runner import plan
    from fastdeepiot.profiling.store import Store

    fams = parse_families(layers)
    budget_s = parse_duration(budget)
    backend = get_backend(device, threads=threads)
    store = Store.open(db, backend.fingerprint(), create=True, force=force)
    workloads = plan(fams, seed=seed, network_every=networks)
    if adaptive is not None:
        import itertools

        from fastdeepiot.timemodel.adaptive import adaptive_workloads

        workloads = itertools.chain(adaptive_workloads(adaptive, store, fams, seed=seed), workloads)
    policy = TimingPolicy.quick() if quick else TimingPolicy()
    summary = _run_with_progress(backend, store, workloads, budget_s, max_new, policy, quiet)
    total = store.count()
    store.close()
    fam_txt = ", ".join(f"{k} {v}" for k, v in sorted(summary.per_family.items())) or "none"
    print(f"{summary.new} new measurements ({fam_txt}); {summary.skipped} already stored; "
          f"{summary.failed} failed; stopped by {summary.stopped_by} after {summary.elapsed_s:.0f} s; "
          f"{total} measurements in {db}")
    for f in summary.failures[:5]:
        print(f"  failed: {f}")
    if summary.unsupported:
        print(f"  skipped {summary.unsupported} configurations that {backend.name} cannot run")


def _run_with_progress(backend, store, workloads, budget_s, max_new, policy, quiet):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from fastdeepiot.profiling.runner import profile as run_profile

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
    csv: Optional[Path] = typer.Option(None, "--csv", help="write CSV here"),
    parquet: Optional[Path] = typer.Option(None, "--parquet", help="write Parquet here (needs pyarrow)"),
):
    """Export every measurement, with its conditions, to CSV (and/or Parquet)."""
    from fastdeepiot.profiling.store import Store, export_csv, export_parquet

    if csv is None and parquet is None:
        raise UserError("nothing to do: give --csv PATH and/or --parquet PATH")
    with Store.open(db) as store:
        if csv is not None:
            n = export_csv(store, str(csv))
            print(f"wrote {n} measurements to {csv}")
        if parquet is not None:
            n = export_parquet(store, str(parquet))
            print(f"wrote {n} measurements to {parquet}")


@app.command()
def summary(db: Path = typer.Argument(..., help="measurement database"),
            as_json: bool = typer.Option(False, "--json")):
    """Per family: how many measurements, their time range and their noise."""
    from fastdeepiot.profiling.store import Store
    from fastdeepiot.report.tables import measurement_summary, print_table

    with Store.open(db) as store:
        rows = measurement_summary(store)
        devs = store.devices()
    if as_json:
        print(json.dumps({"devices": devs, "families": rows}, indent=2))
        return
    for d in devs:
        print(f"device: {d['backend']} on {d['processor']}, {d['threads']} thread(s), {d['dtype']}")
    print_table(rows, title=f"measurements in {db}")
