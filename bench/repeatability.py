"""Does the one network timer give the ecosystem's number, and does that number hold still?

    .venv/bin/python bench/repeatability.py            # the figures: run on a quiet machine (~15 min)
    .venv/bin/python bench/repeatability.py --quick    # smoke run, < 2 min (figures mean nothing)
    .venv/bin/python bench/repeatability.py --with-reference   # (b) for torch.utils.benchmark too

Networks: the zoo (`fastdeepiot.zoo.zoo_networks`, five styles at widths 0.25 and 1.0), four random
networks (`graph.randomnets`, two image, two sensor) and the three task networks (har, userid,
fashion): 17 in all. Backends: torch-cpu and onnxruntime-cpu, `--threads` (1).

(a) Agreement. Each network is timed by our timer (`fastdeepiot.profiling.timer`, in its own child
    process) and by the ecosystem's tool in this process: `torch.utils.benchmark.Timer("net(x)")
    .blocked_autorange()` median under `torch.inference_mode()` (torch-cpu), or the same Timer around a
    plain `session.run(None, feed)` on the same ONNX export with the same session options
    (onnxruntime-cpu). Interleaved: in each of `--rounds` (5) rounds, every network gets one round of
    ours, then one of the reference. Best of the rounds for each. Agreement = ours / reference - 1.
(b) Repeatability. `--processes` (5) fresh timing processes, `--gap-s` (20) seconds apart; each times
    every network with `time_networks(..., rounds=5)`. Spread per network = (max - min) / median over
    the processes; the figure is the median over the networks. Reported for both statistics the timer
    could use, from the same rounds: best of rounds (the convention) and median of rounds; with
    `--with-reference`, also for the reference tool alone (best of its rounds), each moment in a fresh
    process of this script, for comparison (issue 17 measured 13.6% for it).

Writes docs/results/repeatability.{md,json} (--quick: runs/bench/repeatability_quick.{md,json}, a
smoke run, never a result) naming the commit and the conditions: CPU, threads, library versions, the
allocator, whether the quiet guard was on, and the load average before and after (the bars need a
quiet machine: on a shared, loaded one every figure here measures the neighbours).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.utils.benchmark as tb

from fastdeepiot import tasks
from fastdeepiot.devices import cpu_model, get_backend
from fastdeepiot.devices.onnxrt import export_onnx
from fastdeepiot.devices.quiet import shared_guard
from fastdeepiot.graph.randomnets import random_network
from fastdeepiot.profiling.timer import NetworkTimer, TimerPolicy, allocator_condition, time_networks
from fastdeepiot.report.tables import markdown_table
from fastdeepiot.zoo import zoo_networks

from _provenance import code_version

ROOT = Path(__file__).resolve().parent.parent
BARS = {"agreement_pct": 3.0, "spread_pct": 3.0}


def networks(quick: bool) -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    if quick:
        nets = zoo_networks(widths=(0.5,), styles=("mobilenet", "deepsense"))
        seeds = [(101, "image")]
        task_names = ["har"]
    else:
        nets = zoo_networks(widths=(0.25, 1.0))
        seeds = [(101, "image"), (102, "sensor"), (103, "image"), (104, "sensor")]
        task_names = ["har", "userid", "fashion"]
    for seed, kind in seeds:
        m, x, _ = random_network(seed, kind)
        nets.append((f"random-{kind}-{seed}", m, x))
    for n in task_names:
        t = tasks.get(n)
        nets.append((f"task-{n}", t.make_model(), torch.randn(1, *t.input_shape)))
    return [(name, m.eval(), x) for name, m, x in nets]


def reference_ms(backend: str, threads: int, net, x, session=None, min_run_time: float = 0.2) -> float:
    """The ecosystem's number, one round: blocked_autorange's median, in ms."""
    if backend == "torch-cpu":
        timer = tb.Timer("net(x)", globals={"net": net, "x": x}, num_threads=threads)
    else:
        sess, feed = session
        timer = tb.Timer("sess.run(None, feed)", globals={"sess": sess, "feed": feed}, num_threads=threads)
    with torch.inference_mode():
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def ort_sessions(be, nets) -> list:
    """(session, feed) per network on onnxruntime-cpu (the reference's plain session.run); None elsewhere."""
    if be.name != "onnxruntime-cpu":
        return [None] * len(nets)
    out = []
    for _, m, x in nets:
        sess = be.session(export_onnx(m, (x,)))
        out.append((sess, {sess.get_inputs()[0].name: x.numpy()}))
    return out


def agreement(backend: str, nets, threads: int, rounds: int, policy: TimerPolicy,
              min_run_time: float) -> tuple[list[dict], dict]:
    """(one row per network, the conditions our timing process reported)."""
    be = get_backend(backend, threads=threads)
    sessions = ort_sessions(be, nets)
    ours = [[] for _ in nets]
    ref = [[] for _ in nets]
    prev = torch.get_num_threads()
    try:
        with NetworkTimer(be, policy) as timer:
            conditions = timer.conditions
            timer.load([m for _, m, _ in nets], [x for _, _, x in nets])
            for r in range(rounds):
                for i, (name, m, x) in enumerate(nets):
                    ours[i].append(timer.run(1, only=[i])[0].median_ms)
                    ref[i].append(reference_ms(backend, threads, m, x, sessions[i], min_run_time))
                print(f"  {backend} agreement round {r + 1}/{rounds} done", flush=True)
    finally:
        torch.set_num_threads(prev)
    rows = []
    for (name, _, _), o, f in zip(nets, ours, ref):
        rows.append({"backend": backend, "network": name, "ours_ms": round(min(o), 5), "reference_ms": round(min(f), 5),
                     "agreement_pct": round(100 * (min(o) / min(f) - 1), 2),
                     "ours_rounds_ms": [round(v, 5) for v in o], "reference_rounds_ms": [round(v, 5) for v in f]})
    return rows, conditions


def reference_child(backend: str, quick: bool, threads: int, rounds: int, min_run_time: float) -> None:
    """`--_reference-child`: this script in a fresh process times every network with the reference tool
    only (best of `rounds` round-robin rounds) and prints {network: ms} as its last line."""
    torch.set_num_threads(threads)
    nets = networks(quick)
    be = get_backend(backend, threads=threads)
    sessions = ort_sessions(be, nets)
    best = {name: float("inf") for name, _, _ in nets}
    for _ in range(rounds):
        for i, (name, m, x) in enumerate(nets):
            best[name] = min(best[name], reference_ms(backend, threads, m, x, sessions[i], min_run_time))
    print(json.dumps(best))


def repeatability(backends: list[str], nets, threads: int, processes: int, gap_s: float, rounds: int,
                  policy: TimerPolicy, with_reference: bool = False, quick: bool = False,
                  min_run_time: float = 0.2) -> tuple[dict, dict]:
    """One fresh timing process per backend per moment; returns ({backend: {network: [NetworkTime
    dicts]}}, and with `with_reference` {backend: {network: [reference ms per moment]}})."""
    out = {b: {name: [] for name, _, _ in nets} for b in backends}
    ref = {b: {name: [] for name, _, _ in nets} for b in backends} if with_reference else {}
    for k in range(processes):
        if k:
            time.sleep(gap_s)
        for b in backends:
            res = time_networks([m for _, m, _ in nets], [x for _, _, x in nets], b, threads=threads, rounds=rounds,
                                policy=policy)
            for (name, _, _), t in zip(nets, res):
                out[b][name].append({**t.to_dict(), "moment": k, "at": time.strftime("%H:%M:%S")})
            if with_reference:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--_reference-child", b, "--threads",
                       str(threads), "--rounds", str(rounds), *(["--quick"] if quick else [])]
                p = subprocess.run(cmd, capture_output=True, text=True, check=True)
                for name, ms in json.loads(p.stdout.strip().splitlines()[-1]).items():
                    ref[b][name].append(ms)
        print(f"  repeatability: process {k + 1}/{processes} done", flush=True)
    return out, ref


def spread(values: list[float]) -> float:
    v = np.asarray(values, dtype=float)
    return float((v.max() - v.min()) / np.median(v))


def summarise(agree: list[dict], rep: dict, ref: dict) -> tuple[list[dict], list[dict]]:
    per_net, summary = [], []
    for b, nets in rep.items():
        best_sp, med_sp, ref_sp = [], [], []
        for name, runs in nets.items():
            best = [r["median_ms"] for r in runs]
            med = [r["median_of_rounds_ms"] for r in runs]
            best_sp.append(spread(best))
            med_sp.append(spread(med))
            row = {"backend": b, "network": name, "measured_ms": round(float(np.median(best)), 5),
                   "spread_best_of_rounds_pct": round(100 * best_sp[-1], 2),
                   "spread_median_of_rounds_pct": round(100 * med_sp[-1], 2),
                   "within_process_round_spread_pct": round(100 * float(np.median([r["spread"] for r in runs])), 2)}
            if ref:
                ref_sp.append(spread(ref[b][name]))
                row["reference_spread_pct"] = round(100 * ref_sp[-1], 2)
            per_net.append(row)
        ag = [abs(r["agreement_pct"]) for r in agree if r["backend"] == b]
        summary.append({
            "backend": b, "networks": len(nets),
            "agreement_median_abs_pct": round(float(np.median(ag)), 2) if ag else None,
            "agreement_max_abs_pct": round(float(np.max(ag)), 2) if ag else None,
            "agreement_within_3pct": f"{sum(a <= BARS['agreement_pct'] for a in ag)}/{len(ag)}",
            "spread_median_pct (best of rounds)": round(100 * float(np.median(best_sp)), 2),
            "spread_max_pct (best of rounds)": round(100 * float(np.max(best_sp)), 2),
            "spread_median_pct (median of rounds)": round(100 * float(np.median(med_sp)), 2),
            **({"reference_spread_median_pct": round(100 * float(np.median(ref_sp)), 2)} if ref_sp else {}),
        })
    return summary, per_net




def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 networks, short rounds, < 2 minutes")
    ap.add_argument("--backends", default="torch-cpu,onnxruntime-cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=None, help="rounds, for both parts (default 5; quick 3)")
    ap.add_argument("--processes", type=int, default=None, help="fresh processes for (b) (default 5; quick 3)")
    ap.add_argument("--gap-s", type=float, default=None, help="seconds between them (default 20; quick 3)")
    ap.add_argument("--out", type=Path, default=None, help="folder for repeatability.{md,json}")
    ap.add_argument("--with-reference", action="store_true",
                    help="(b) for the reference tool too: the same moments, each in a fresh process of this "
                         "script (about doubles (b)'s time)")
    ap.add_argument("--_reference-child", dest="reference_child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    rounds = a.rounds or (3 if a.quick else 5)
    processes = a.processes or (3 if a.quick else 5)
    gap_s = a.gap_s if a.gap_s is not None else (3.0 if a.quick else 20.0)
    # quick: short rounds, and at most 0.5 s of waiting for quiet per round, so a loaded machine still
    # finishes in under 2 minutes
    policy = replace(TimerPolicy.quick(), max_wait_s=0.5) if a.quick else TimerPolicy()
    min_run_time = 0.05 if a.quick else 0.2
    out = a.out or (ROOT / "runs" / "bench" if a.quick else ROOT / "docs" / "results")
    stem = "repeatability_quick" if a.quick else "repeatability"
    if a.reference_child:
        reference_child(a.reference_child, a.quick, a.threads, rounds, min_run_time)
        return 0
    backends = [b for b in a.backends.split(",") if b]
    torch.set_num_threads(a.threads)
    nets = networks(a.quick)
    t0 = time.time()
    load0 = os.getloadavg()
    guard = shared_guard()
    print(f"{len(nets)} networks, backends {backends}, {rounds} rounds, {processes} processes {gap_s:g} s apart; "
          f"load average {load0[0]:.2f}", flush=True)
    agree, conditions = [], {}
    for b in backends:
        rows, conditions = agreement(b, nets, a.threads, rounds, policy, min_run_time)
        agree += rows
    rep, ref = repeatability(backends, nets, a.threads, processes, gap_s, rounds, policy, a.with_reference,
                             a.quick, min_run_time)
    load1 = os.getloadavg()
    summary, per_net = summarise(agree, rep, ref)
    import onnxruntime  # heavy optional dependency, needed only for its version here

    meta = {
        "command": "bench/repeatability.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "kind": "SMOKE RUN (--quick): short rounds, few networks; not a result" if a.quick else "result",
        "commit": code_version(()), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "processor": cpu_model(), "logical_cpus": os.cpu_count(), "threads": a.threads,
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "allocator": allocator_condition(),
        "address_layout": conditions.get("address_layout", "the calling process's"),
        "quiet_guard": guard is not None, "policy": policy.__dict__, "rounds": rounds, "processes": processes,
        "gap_s": gap_s, "reference_min_run_time_s": min_run_time,
        "load_average_1min_before_after": [round(load0[0], 2), round(load1[0], 2)],
        "seconds": round(time.time() - t0, 1), "bars": BARS,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "summary": summary, "networks": per_net,
                                                  "agreement": agree, "repeatability": rep,
                                                  "reference_repeatability": ref}, indent=1) + "\n")
    agree_rows = [{k: v for k, v in r.items() if not k.endswith("rounds_ms")} for r in agree]
    md = [f"# Network timer: agreement with the ecosystem's tools, and repeatability{' (SMOKE RUN)' if a.quick else ''}", "",
          f"`{meta['command'].strip()}` at commit `{meta['commit']}`, {meta['date_utc']} UTC, {meta['seconds']:.0f} s.", ""]
    if a.quick:
        md += ["**Smoke run (`--quick`): few networks, short rounds. It shows the bench works; its figures are "
               "not results.**", ""]
    md += [f"Conditions: {meta['processor']} ({meta['logical_cpus']} logical CPUs), {a.threads} thread(s); "
           f"torch {meta['torch']}, onnxruntime {meta['onnxruntime']}, Python {meta['python']}; allocator: "
           f"{meta['allocator']}; address layout of the timing processes: {meta['address_layout']}; "
           f"quiet guard {'on' if guard is not None else 'off'}; 1-minute load average "
           f"{load0[0]:.2f} before, {load1[0]:.2f} after (above ~0.1 the machine was shared and every figure "
           "includes the neighbours).", "",
           "Measured time: `fastdeepiot.profiling.timer` (block-median per-call time under inference mode, best of "
           f"interleaved rounds, in a child process of its own). Agreement: ours / reference - 1, best of {rounds} "
           "interleaved rounds each, reference = `torch.utils.benchmark.Timer.blocked_autorange()` median (torch "
           "under inference mode; ORT around a plain `session.run`). Spread: (max - min) / median over "
           f"{processes} fresh processes {gap_s:g} s apart. Bars: agreement within 3%, median spread at most 3%.", "",
           "## Summary", "", markdown_table(summary), "", "## Per network: repeatability", "", markdown_table(per_net),
           "", "## Per network: agreement", "", markdown_table(agree_rows), ""]
    (out / f"{stem}.md").write_text("\n".join(md))
    print(markdown_table(summary))
    print(f"wrote {out / (stem + '.md')} and .json in {meta['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
