"""CLI verbs: fit, explain, predict."""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import typer

from fastdeepiot.errors import MAX_SEED, UserError
from fastdeepiot.families import get_family, parse_families
from fastdeepiot.profiling.store import Store
from fastdeepiot.profiling.timer import time_network
from fastdeepiot.report.tables import print_table
from fastdeepiot.safeio import atomic_path, check_output
from fastdeepiot.timemodel.model import ESTIMATORS, TimeModel, fit_time_model
from fastdeepiot.timemodel.sweeps import plot_family_sweep, sweep_param


# This module's verbs; cli.py merges them into the one app (commands never import cli).
app = typer.Typer()


@app.command()
def fit(
    db: Path = typer.Argument(..., help="measurement database (from `fastdeepiot profile`)"),
    out: Path = typer.Option(Path("timemodel.json"), "-o", "--out", help="where to write the time model"),
    estimator: str = typer.Option("tree", "--estimator",
                                  help="tree (default); bagged (the geometric mean of 5 trees fitted on subsamples); "
                                       "or a baseline: flops, lookup, forest"),
    compare: bool = typer.Option(False, "--compare", help="also score the other estimators on the held-out data"),
    holdout: float = typer.Option(0.2, "--holdout", min=0.0, max=0.9, help="share held out for scoring"),
    layers: Optional[str] = typer.Option(None, "--layers", help="only these families"),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED,
                             help="seed of the held-out split and of the estimator (a tree's cross-validation "
                                  f"folds; 0 to {MAX_SEED})"),
    device: Optional[str] = typer.Option(None, "--device", "-d",
                                         help="the backend to fit, when the database holds several"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="with --device: the thread count, when it ran with several"),
    force: bool = typer.Option(False, "--force", help="overwrite OUT even if it is not a time model"),
):
    """Learn the device's execution-time model; print held-out accuracy per layer family."""
    if estimator not in ESTIMATORS:
        raise UserError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
    if threads is not None and device is None:
        raise UserError("--threads selects among the runs of one --device; give --device too")
    out = check_output(out, kind="timemodel", inputs=[db], force=force, option="-o")
    fams = parse_families(layers) if layers is not None else None
    cmp = tuple(e for e in ESTIMATORS if e != estimator) if compare else ()
    want = None
    if device is not None:
        want = {"backend": device} if threads is None else {"backend": device, "threads": threads}
    with Store.open(db) as store:
        tm = fit_time_model(store, estimator=estimator, device=want, families=fams, holdout=holdout, seed=seed,
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
    plot: Optional[Path] = typer.Option(None, "--plot",
                                        help="a .png, .pdf or .svg: measured vs predicted along a sweep"),
    db: Optional[Path] = typer.Option(None, "--db", help="measurements to plot (default: none; the plot "
                                                         "then shows predictions only)"),
    param: Optional[str] = typer.Option(None, "--param", help="swept parameter (default: first width)"),
    force: bool = typer.Option(False, "--force",
                               help="overwrite the --plot path even if it holds another kind of file"),
):
    """Print the model as readable rules with leaf equations; optionally plot a width sweep."""
    tm = TimeModel.load(model)
    if plot is None and (db is not None or param is not None):
        raise UserError(f"{'--db' if db is not None else '--param'} is read only with --plot")
    if family is not None:
        get_family(family)
        if family not in tm.estimators:
            raise UserError(f"the time model has no {family} model; it models {', '.join(tm.families)}")
    if plot is not None:
        if not family:
            raise UserError("--plot needs --family")
        if param is not None:
            sweep_param(family, param)  # a bad --param is an error before the model is printed
        kind = {".png": "png", ".pdf": "pdf", ".svg": "svg"}.get(plot.suffix.lower())
        plot = check_output(plot, kind=kind or "png", inputs=[model, db], force=force, option="--plot")
        if kind is None:
            raise UserError(f"--plot {plot}: give a .png, .pdf or .svg path (the suffix chooses the format)")
        if db is not None:
            with Store.open(db) as store:
                devs = store.devices()
            if tm.device and tm.device not in devs:
                others = "; ".join(f"{d.get('backend')} ({d.get('threads')} threads)" for d in devs) or "none"
                raise UserError(f"{db} holds measurements of another device ({others}), not of the time "
                                f"model's {tm.backend} ({tm.device.get('threads')} threads); give the database "
                                f"it was fitted on")
    fams = [family] if family else tm.families
    for f in fams:
        print(f"## {f}\n{tm.explain(f)}\n")
    if plot is not None:
        with atomic_path(plot) as tmp:
            plot_family_sweep(tm, family, tmp, db=db, param=param)
        print(f"wrote {plot}")


def _is_cwd(entry: str) -> bool:
    try:
        return entry in ("", ".") or os.path.samefile(entry, os.getcwd())
    except OSError:
        return False


def _import_user_module(spec: str, mod_name: str):
    """Import the module of a `module:factory` spec: installed packages (and PYTHONPATH) first; the
    working directory only for a module found nowhere else. `path/to/file.py` is imported from that file."""
    if mod_name.endswith(".py") or "/" in mod_name or os.sep in mod_name:
        path = Path(mod_name)
        if not path.is_file():
            raise UserError(f"network {spec!r}: {path} is not a file")
        name = f"_fastdeepiot_user_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise UserError(f"network {spec!r}: cannot import {path} (give a .py file)")
        mod = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = mod
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.append(folder)  # its own helpers, after installed packages
        loader_spec.loader.exec_module(mod)
        return mod
    # `python -m` puts the working directory first on sys.path: a stray rich.py or torch.py there must
    # not shadow an installed package, for the user's module or for anything imported after it.
    sys.path[:] = [p for p in sys.path if not _is_cwd(p)]
    top = mod_name.split(".")[0]
    try:
        found = top in sys.modules or importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if not found and importlib.machinery.PathFinder.find_spec(top, [os.getcwd()]) is not None:
        sys.path.append(os.getcwd())
    return importlib.import_module(mod_name)


def _user_failure(spec: str, what: str, e: BaseException) -> UserError:
    if isinstance(e, SystemExit):
        return UserError(f"{spec}: {what} called sys.exit({e.code!r}); a factory must return an nn.Module")
    msg = str(e).strip()
    return UserError(f"{spec}: {what} raised {type(e).__name__}" + (f": {msg}" if msg else ""))


def load_factory(spec: str):
    """'pkg.module:factory' (or 'path/to/file.py:factory') -> the nn.Module that factory() returns, in eval
    mode. Anything the user's code raises (SystemExit included) is a UserError naming the spec."""
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr or not attr.isidentifier():
        saved = spec.lower().endswith((".onnx", ".pt", ".pth", ".ts")) or Path(spec).is_file()
        raise UserError(f"network {spec!r}: write it as package.module:factory or path/to/file.py:factory" + (
            " (the Python function that builds the PyTorch nn.Module; a saved network, ONNX or a checkpoint, "
            "is not accepted)" if saved else ""))
    try:
        mod = _import_user_module(spec, mod_name)
    except UserError:
        raise
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name and mod_name.startswith(e.name):
            raise UserError(f"cannot import {mod_name!r}: no module named {e.name!r}") from None
        raise _user_failure(spec, f"importing {mod_name}", e) from None
    except (Exception, SystemExit) as e:  # the user's module ran and failed
        raise _user_failure(spec, f"importing {mod_name}", e) from None
    try:
        obj = getattr(mod, attr)
    except AttributeError:
        raise UserError(f"{mod_name} has no {attr!r}") from None
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
    if isinstance(obj, nn.Module):
        net = obj
    else:
        try:
            net = obj()
        except (Exception, SystemExit) as e:
            raise _user_failure(spec, f"the factory {attr}()", e) from None
    if not isinstance(net, nn.Module):
        raise UserError(f"{spec} did not give an nn.Module (got {type(net).__name__})")
    return net.eval()


INPUT_DTYPES = {"float32": torch.float32, "float": torch.float32, "float64": torch.float64, "double": torch.float64,
                "float16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
                "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32, "bool": torch.bool}


def parse_input(text: str) -> tuple[tuple[int, ...], torch.dtype]:
    """SHAPE[:DTYPE] (1x6x128, 1x40:int64) -> (shape, dtype); float32 by default."""
    shape_text, colon, dtype_text = text.partition(":")
    if colon and not dtype_text.strip():
        raise UserError(f"no dtype after ':' in input shape {text!r}; one of {', '.join(INPUT_DTYPES)}, or no ':'")
    dtype = INPUT_DTYPES.get(dtype_text.strip().lower() or "float32")
    if dtype is None:
        raise UserError(f"unknown input dtype {dtype_text!r} in {text!r}; one of {', '.join(INPUT_DTYPES)}")
    return parse_shape(shape_text), dtype


def example_input(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A float input is random normal; an integer or bool one (token ids, masks) is all zeros: index 0 is in range
    for any embedding table."""
    return torch.randn(*shape, dtype=dtype) if dtype.is_floating_point else torch.zeros(*shape, dtype=dtype)


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
    input_shape: list[str] = typer.Option(..., "--input-shape", metavar="SHAPE",
                                          help="example input shape, e.g. 1x6x128; repeat it for a network "
                                               "whose forward takes several inputs, in order; SHAPE:int64 for "
                                               "token ids (all zeros), also :int32, :bool; :float64, :float16, "
                                               ":bfloat16 for a network in that precision"),
    measure_it: bool = typer.Option(False, "--measure", help="also measure it on the model's device"),
    as_json: bool = typer.Option(False, "--json"),
    allow_unmodelled: bool = typer.Option(False, "--allow-unmodelled",
                                          help="predict the rest when some layers cannot be priced"),
):
    """Predict a network's execution time per layer and in total on the model's device."""
    tm = TimeModel.load(model)
    specs = [parse_input(s) for s in input_shape]
    shapes = [shape for shape, _ in specs]
    if sum(math.prod(s) for s in shapes) > 2**31:
        raise UserError(f"input shape {' '.join(input_shape)!r} has more than 2^31 elements")
    # with --json, what the user's code prints (its import, factory, forward) goes to stderr: stdout is the JSON
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        net = load_factory(network)
        try:
            xs = tuple(example_input(shape, dtype) for shape, dtype in specs)
        except RuntimeError as e:  # more than this machine's memory holds (the element cap allows 8 GB)
            raise UserError(f"cannot allocate an input of shape {' '.join(input_shape)}: "
                            f"{str(e).splitlines()[0][:200]}") from None
        what = (f"an input of shape {tuple(xs[0].shape)}" if len(xs) == 1 else
                f"{len(xs)} inputs of shapes {', '.join(str(tuple(x.shape)) for x in xs)}")
        try:
            with torch.no_grad():  # as predict_network runs it: under inference mode, state a forward makes on its
                net(*xs)           # first call (a counter) would be an inference tensor it may not update later
        except (Exception, SystemExit) as e:
            hint = ("; an input of token ids is given as SHAPE:int64" if "indices" in str(e) and
                    all(x.is_floating_point() for x in xs) else "")
            raise UserError(f"{network} does not run on {what}: {type(e).__name__}: {e}{hint}") from None
        x = xs[0] if len(xs) == 1 else xs
        p = tm.predict_network(net, x, allow_unmodelled=allow_unmodelled)
        result = p.to_dict()
        if measure_it:
            try:
                result["measured_ms"] = time_network(net, x, tm.backend,
                                                     threads=int(tm.device.get("threads", 1))).median_ms
            except RuntimeError as e:  # the timer's report of a network it could not ship, load or run
                raise UserError(f"cannot measure {network} on {tm.backend}: {str(e).splitlines()[0][:300]}") from None
            result["error_pct"] = 100 * (p.total_ms - result["measured_ms"]) / result["measured_ms"]
    if as_json:
        print(json.dumps(result, indent=2))
        return
    rows = [{"layer": lp.name, "family": lp.family, "ms": lp.ms,
             "fused_into": lp.fused_into or ""} for lp in p.layers]
    print_table(rows, title=f"{network} on {tm.backend}")
    print(f"overhead (network call, free ops, module calls): {p.overhead_ms:.4f} ms")
    if p.unmodelled:
        print(f"unmodelled (not counted): {', '.join(p.unmodelled)}")
    print(f"predicted total: {p.total_ms:.4f} ms")
    for w in p.warnings:  # the JSON carries them too
        print(f"warning: {w}", file=sys.stderr)
    if measure_it:
        print(f"measured: {result['measured_ms']:.4f} ms (prediction error {result['error_pct']:+.1f}%)")
