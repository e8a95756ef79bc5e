"""Does a layer run as fast inside a network as alone? Not once the network's working set outgrows the cache.

    .venv/bin/python bench/cache_residency.py [--rounds 5] \
        [--errors docs/results/session19/generalisation_after_torch-cpu.json ...] [--name cache_residency]

The profiler times each layer alone, in a loop (the profiler's harness, and `torch.utils.benchmark`): from one call
to the next its weights and its input stay in the cache. Inside a network every other layer runs in between, and
when the network's weights and feature maps together exceed the last-level cache, a layer reads its weights (and
its input) from memory instead. The composition (`timemodel/model.py`) has no term for that, and the random networks
it is fitted on could not teach one: their parameters stay under about 2 MB.

Part 1, measured here (torch-cpu, 1 thread, nothing fitted): each configuration is timed

  * alone: one instance, `torch.utils.benchmark.Timer.blocked_autorange()` median under inference_mode;
  * in a warm stream: 2-16 distinct instances of the same configuration (their own weights and inputs) called in
    turn, their bytes within a quarter of the last-level cache: what calling distinct objects costs by itself
    (torch's per-call work on objects that are not the last one called), the data still cached;
  * in a cold stream: K distinct instances, K such that the stream's bytes are at least 4x the last-level cache;
    the time per call;

in interleaved rounds (alone, warm, cold, alone, ...), best of `--rounds` each. cold / warm is what a call costs
when its weights and input come from memory rather than the cache, against the same call with them cached.

Part 2, read from committed records (nothing measured or fitted): the held-out architectures of
`bench/heldout_archs.py` with their working set (parameter bytes; bytes of the leaf modules' outputs in one forward)
beside the error each record's models gave them; with the random networks' parameter bytes for contrast. The
held-out errors were looked at to find this effect, so this part is a diagnosis, not a held-out figure.

Writes docs/results/<--name>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn as nn
import torch.utils.benchmark as tb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import code_version  # noqa: E402

from fastdeepiot.devices import cpu_model  # noqa: E402
from fastdeepiot.report.tables import markdown_table  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"
MB = 2**20


def llc_bytes() -> int:
    """The last-level cache of CPU 0 (sysfs), 32 MiB where it cannot be read."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best = 0
    for idx in sorted(base.glob("index*")) if base.exists() else []:
        try:
            size = (idx / "size").read_text().strip()
            best = max(best, int(size[:-1]) * {"K": 2**10, "M": 2**20}.get(size[-1], 1) if size[-1].isalpha()
                       else int(size))
        except (OSError, ValueError):
            continue
    return best or 32 * MB


def configurations() -> list[tuple[str, callable, tuple[int, ...]]]:
    """(name, layer factory, input shape): weights from 64 KiB to 16 MiB (Linear, Conv2d on a small map), and a
    weightless op on feature maps of the same range (BatchNorm reads its input, not weights)."""
    out = []
    for n in (128, 512, 1024, 2048):
        for b in (1, 8):
            out.append((f"Linear({n},{n}) batch {b}", lambda n=n: nn.Linear(n, n), (b, n)))
    for c in (64, 256, 512):
        out.append((f"Conv2d({c},{c},3) 4x4", lambda c=c: nn.Conv2d(c, c, 3, padding=1), (1, c, 4, 4)))
    for c, s in ((32, 32), (64, 64), (128, 64)):
        out.append((f"BatchNorm2d({c}) {s}x{s} batch 4", lambda c=c: nn.BatchNorm2d(c), (4, c, s, s)))
    return out


def _bytes(layer: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(parameter and buffer bytes, input + output bytes) of one call."""
    w = sum(t.numel() * t.element_size() for t in (*layer.parameters(), *layer.buffers()))
    with torch.inference_mode():
        y = layer(x)
    return w, (x.numel() + y.numel()) * x.element_size()


def _median_ms(stmt: str, env: dict, min_run_time: float) -> float:
    with torch.inference_mode():
        return tb.Timer(stmt, globals=env).blocked_autorange(min_run_time=min_run_time).median * 1e3


def measure(configs, rounds: int, llc: int, min_run_time: float = 0.2, max_copies: int = 256) -> list[dict]:
    """Part 1: alone and in a stream, interleaved rounds, best of each."""
    rows = []
    for name, make, shape in configs:
        torch.manual_seed(0)
        one = make().eval()
        x = torch.randn(shape)
        w, io = _bytes(one, x)
        k = min(max_copies, max(2, -(-4 * llc // max(1, w + io))))  # ceil: the stream's bytes >= 4x the cache
        k_warm = max(2, min(16, llc // (4 * max(1, w + io))))  # a stream that stays in the cache (<= 1/4 of it)
        stream = [(make().eval(), torch.randn(shape)) for _ in range(k)]
        times: dict[str, list[float]] = {"alone": [], "warm": [], "cold": []}
        for _ in range(rounds):
            times["alone"].append(_median_ms("f(x)", {"f": one, "x": x}, min_run_time))
            times["warm"].append(_median_ms("for f, x in s: f(x)", {"s": stream[:k_warm]}, min_run_time) / k_warm)
            times["cold"].append(_median_ms("for f, x in s: f(x)", {"s": stream}, min_run_time) / k)
        best = {key: min(v) for key, v in times.items()}
        rows.append({"layer": name, "weight_kib": round(w / 2**10, 1), "io_kib": round(io / 2**10, 1),
                     "warm_copies": k_warm, "cold_copies": k, "cold_mib": round(k * (w + io) / MB, 1),
                     "alone_ms": best["alone"], "warm_stream_ms": best["warm"], "cold_stream_ms": best["cold"],
                     "warm_over_alone": best["warm"] / best["alone"], "cold_over_warm": best["cold"] / best["warm"],
                     "spread_max": max((max(v) - min(v)) / statistics.median(v) for v in times.values())})
        print(f"{name}: alone {best['alone']:.4f} ms, warm stream of {k_warm} {best['warm']:.4f} ms, cold stream "
              f"of {k} {best['cold']:.4f} ms (cold / warm {best['cold'] / best['warm']:.2f}x)", file=sys.stderr)
    return rows


def working_sets(networks) -> dict[str, dict]:
    """network name -> parameter MiB and MiB written by its leaf modules in one forward."""
    out = {}
    for name, style, m, x in networks:
        written = []
        hooks = [mod.register_forward_hook(lambda _m, _i, o: written.append(
            o.numel() * o.element_size() if isinstance(o, torch.Tensor) else 0))
            for mod in m.modules() if next(mod.children(), None) is None]
        try:
            with torch.inference_mode():
                m.eval()(x)
        finally:
            for h in hooks:
                h.remove()
        out[name] = {"style": style, "params_mib": sum(p.numel() * p.element_size() for p in m.parameters()) / MB,
                     "written_mib": sum(written) / MB}
    return out


def diagnosis(record: dict, sets: dict[str, dict], llc: int) -> dict:
    """Part 2 for one generalisation record: each held-out network's working set (parameters + bytes written)
    beside its errors; the median error and share within +-10% by working set: up to 1/8 of the cache, up to 1/2,
    beyond."""
    cut = record["cuts"][sorted(record["cuts"], key=float)[0]]
    rows = []
    for r in cut["networks"]:
        if r["network"] not in sets:
            continue
        s = sets[r["network"]]
        rows.append({"network": r["network"], "style": s["style"], "params_mib": round(s["params_mib"], 2),
                     "written_mib": round(s["written_mib"], 2),
                     "working_set_mib": round(s["params_mib"] + s["written_mib"], 2),
                     "error_all_styles_pct": r.get("error_all_pct"), "error_loso_pct": r.get("error_loso_pct")})
    rows.sort(key=lambda r: r["working_set_mib"])
    llc_mib = llc / MB
    bins = []
    for lo, hi in ((0, llc_mib / 8), (llc_mib / 8, llc_mib / 2), (llc_mib / 2, float("inf"))):
        v = [r["error_all_styles_pct"] for r in rows
             if lo < r["working_set_mib"] <= hi and r["error_all_styles_pct"] is not None]
        bins.append({"working_set_mib": f"{lo:g}-{hi:g}", "n": len(v),
                     "median_error_pct": round(statistics.median(v), 1) if v else None,
                     "within_10pct": round(sum(abs(e) <= 10 for e in v) / len(v), 2) if v else None})
    return {"record": record["meta"].get("command"), "commit": record["meta"].get("commit"),
            "backend": record["meta"].get("backend"), "rows": rows, "bins": bins}


def random_network_params(db: str | None) -> dict | None:
    """The parameter MiB of a store's random networks (min, median, max), where a store is given."""
    if not db:
        return None
    from fastdeepiot import Store
    from fastdeepiot.timemodel.model import _select_device, load_network_data, rebuild_network

    with Store.open(db) as st:
        nets = load_network_data(st, _select_device(st, None))
    mib = sorted(sum(p.numel() * p.element_size() for p in rebuild_network(spec)[0].parameters()) / MB
                 for spec, _ in nets)
    return {"store": db, "n": len(mib), "min": mib[0], "median": statistics.median(mib), "max": mib[-1]} if mib \
        else None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-run-time", type=float, default=0.2)
    ap.add_argument("--errors", nargs="*", default=[], help="bench/generalisation.py JSON records (part 2)")
    ap.add_argument("--store", default=None, help="a profile store: its random networks' parameter sizes")
    ap.add_argument("--skip-measure", action="store_true", help="part 2 only")
    ap.add_argument("--name", default="cache_residency")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    llc = llc_bytes()
    rows = [] if a.skip_measure else measure(configurations(), a.rounds, llc, a.min_run_time)
    diags = []
    if a.errors:
        from heldout_archs import heldout_networks
        sets = working_sets(heldout_networks())
        diags = [diagnosis(json.loads(Path(p).read_text()), sets, llc) for p in a.errors]
    rec = {"meta": {"command": "bench/cache_residency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "commit": code_version(), "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
                    "processor": cpu_model(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads": 1, "llc_mib": llc / MB, "load_avg": os.getloadavg()},
           "layers": rows, "diagnosis": diags, "random_networks": random_network_params(a.store)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.json").write_text(json.dumps(rec, indent=1))
    (out / f"{a.name}.md").write_text(_markdown(rec))
    print(f"wrote {out / a.name}.md and .json", file=sys.stderr)


def _markdown(rec: dict) -> str:
    m = rec["meta"]
    lines = [f"# A layer alone and in a stream that outgrows the cache\n",
             f"`{m['command']}` at commit {m['commit']}, {m['date']}, {m['processor']}, 1 thread, torch {m['torch']}, "
             f"last-level cache {m['llc_mib']:.0f} MiB, load average before {m['load_avg'][0]:.2f}. See the script's "
             "doc for what is measured.\n"]
    if rec["layers"]:
        lines += ["## Part 1: measured\n",
                  "alone: one instance in a `blocked_autorange` loop (what the profile stores); warm / cold stream: "
                  "`warm_copies` / `cold_copies` distinct instances with their own inputs called in turn (the warm "
                  "within a quarter of the cache, the cold `cold_mib` in all, >= 4x it), per call. Best of the rounds; "
                  "spread_max = the largest (max - min) / median over the rounds of the three.\n",
                  markdown_table([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                                  for r in rec["layers"]]), ""]
    if rec.get("random_networks"):
        r = rec["random_networks"]
        lines.append(f"Random networks of `{r['store']}` (what the composition is fitted on): {r['n']}, parameters "
                     f"{r['min']:.2f} / {r['median']:.2f} / {r['max']:.2f} MiB (min / median / max).\n")
    for d in rec["diagnosis"]:
        lines += [f"## Part 2: held-out architectures of `{d['record']}` ({d['backend']}, commit {d['commit']})\n",
                  "The all-styles error by working set (parameters + bytes written in one forward), against the "
                  "cache; a diagnosis: these errors were looked at to find the effect.\n",
                  markdown_table(d["bins"]), "",
                  markdown_table(d["rows"]), ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
