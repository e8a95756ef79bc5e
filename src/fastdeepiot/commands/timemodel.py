"""CLI verbs: fit, explain, predict."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from fastdeepiot.errors import UserError


# This module's verbs; cli.py merges them into the one app (commands never import cli).
app = typer.Typer()


@app.command()
def fit(
    db: Path = typer.Argument(..., help="measurement database (from `fastdeepiot profile`)"),
    out: Path = typer.Option(Path("timemodel.json"), "-o", "--out", help="where to write the time model"),
    estimator: str = typer.Option("tree", "--estimator",
                                  help="tree (default), or a baseline: flops, lookup, forest"),
    compare: bool = typer.Option(False, "--compare", help="also score the baselines on the held-out data"),
    holdout: float = typer.Option(0.2, "--holdout", min=0.0, max=0.9, help="share held out for scoring"),
    layers: Optional[str] = typer.Option(None, "--layers", help="only these families"),
    seed: int = typer.Option(0, "--seed"),
):
    """Learn the device's execution-time model; print held-out accuracy per layer family."""
    from fastdeepiot.families import parse_families
    from fastdeepiot.profiling.store import Store
    from fastdeepiot.report.tables import print_table
    from fastdeepiot.timemodel.model import ESTIMATORS, fit_time_model

    fams = parse_families(layers) if layers else None
    cmp = tuple(e for e in ESTIMATORS if e != estimator) if compare else ()
    with Store.open(db) as store:
        tm = fit_time_model(store, estimator=estimator, families=fams, holdout=holdout, seed=seed,
                            compare=cmp, progress=lambda m: print(m, file=sys.stderr))
    tm.save(out)
    rows = []
    for fam, r in tm.report["families"].items():
        if "skipped" in r:
            rows.append({"family": fam, "model": "-", "n": r["n"], "median_err_%": float("nan"),
                         "p90_err_%": float("nan"), "within_10%": float("nan"), "spearman": float("nan")})
            continue
        for kind, s in r["models"].items():
            rows.append({"family": fam, "model": kind, "n": r["n"], "median_err_%": s["median_abs_pct"],
                         "p90_err_%": s["p90_abs_pct"], "within_10%": s["within_10pct"],
                         "spearman": s["spearman"]})
    print_table(rows, title=f"held-out accuracy ({int(100 * holdout)}% of each family)")
    if "networks" in tm.report:
        n = tm.report["networks"]
        print(f"random networks (held out: {n['n_test']}): median error {n['median_abs_pct']:.1f}%, "
              f"within ±10%: {100 * n['within_10pct']:.0f}%")
    comp = ", ".join(f"{k}={v:.4g}" for k, v in tm.composition.items())
    print(f"composition: {comp}")
    print(f"wrote {out}")


@app.command()
def explain(
    model: Path = typer.Argument(..., help="time model JSON"),
    family: Optional[str] = typer.Option(None, "--family", help="one family (default: all)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG: measured vs predicted along a sweep"),
    db: Optional[Path] = typer.Option(None, "--db", help="measurements to plot (default: none; the plot "
                                                         "then shows predictions only)"),
    param: Optional[str] = typer.Option(None, "--param", help="swept parameter (default: first width)"),
):
    """Print the model as readable rules with leaf equations; optionally plot a width sweep."""
    from fastdeepiot.families import get_family
    from fastdeepiot.timemodel.model import TimeModel

    tm = TimeModel.load(model)
    fams = [family] if family else tm.families
    for f in fams:
        get_family(f)
        print(f"## {f}\n{tm.explain(f)}\n")
    if plot is not None:
        if not family:
            raise UserError("--plot needs --family")
        from fastdeepiot.timemodel.sweeps import plot_family_sweep

        path = plot_family_sweep(tm, family, plot, db=db, param=param)
        print(f"wrote {path}")


def load_factory(spec: str):
    """'pkg.module:factory' -> the nn.Module that factory() returns."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise UserError(f"network {spec!r}: write it as package.module:factory")
    sys.path.insert(0, str(Path.cwd()))
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise UserError(f"cannot import {mod_name!r}: {e}") from None
    try:
        obj = getattr(mod, attr)
    except AttributeError:
        raise UserError(f"{mod_name} has no {attr!r}") from None
    import inspect

    import torch.nn as nn

    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise UserError(f"{spec} is neither an nn.Module nor a factory (got {type(obj).__name__})")
        try:
            inspect.signature(obj).bind()
        except TypeError as e:
            raise UserError(f"{spec} cannot be called without arguments ({e}); give a factory that "
                            f"takes none, e.g. functools.partial or a small function") from None
        except ValueError:  # no signature to inspect (some builtins): call it and see
            pass
    net = obj if isinstance(obj, nn.Module) else obj()
    if not isinstance(net, nn.Module):
        raise UserError(f"{spec} did not give an nn.Module (got {type(net).__name__})")
    return net.eval()


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise UserError(f"cannot read input shape {text!r}; write it like 1x6x128") from None
    if not shape or any(v < 1 for v in shape):
        raise UserError(f"input shape {text!r} must be positive integers like 1x6x128")
    return shape


@app.command()
def predict(
    model: Path = typer.Argument(..., help="time model JSON"),
    network: str = typer.Argument(..., help="package.module:factory returning an nn.Module"),
    input_shape: str = typer.Option(..., "--input-shape", help="example input shape, e.g. 1x6x128"),
    measure_it: bool = typer.Option(False, "--measure", help="also measure it on the model's device"),
    as_json: bool = typer.Option(False, "--json"),
    allow_unmodelled: bool = typer.Option(False, "--allow-unmodelled",
                                          help="predict the rest when some layers cannot be priced"),
):
    """Predict a network's execution time per layer and in total on the model's device."""
    import torch

    from fastdeepiot.report.tables import print_table
    from fastdeepiot.timemodel.model import TimeModel

    tm = TimeModel.load(model)
    net = load_factory(network)
    x = torch.randn(*parse_shape(input_shape))
    try:
        with torch.inference_mode():
            net(x)
    except Exception as e:
        raise UserError(f"{network} does not run on an input of shape {tuple(x.shape)}: "
                        f"{type(e).__name__}: {e}") from None
    p = tm.predict_network(net, x, allow_unmodelled=allow_unmodelled)
    result = p.to_dict()
    if measure_it:
        from fastdeepiot.profiling.timer import time_network  # torch: deferred like the verb's other imports

        result["measured_ms"] = time_network(net, x, tm.backend, threads=int(tm.device.get("threads", 1))).median_ms
        result["error_pct"] = 100 * (p.total_ms - result["measured_ms"]) / result["measured_ms"]
    if as_json:
        print(json.dumps(result, indent=2))
        return
    rows = [{"layer": lp.name, "family": lp.family, "ms": lp.ms,
             "fused_into": lp.fused_into or ""} for lp in p.layers]
    print_table(rows, title=f"{network} on {tm.backend}")
    print(f"overhead (network call, free ops): {p.overhead_ms:.4f} ms")
    if p.unmodelled:
        print(f"unmodelled (not counted): {', '.join(p.unmodelled)}")
    print(f"predicted total: {p.total_ms:.4f} ms")
    if measure_it:
        print(f"measured: {result['measured_ms']:.4f} ms (prediction error {result['error_pct']:+.1f}%)")
