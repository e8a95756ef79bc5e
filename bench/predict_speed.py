"""How long does `TimeModel.predict_network` take on a network it has never seen? MobileNet-V2, ResNet-50 and
the zoo (image and sensor networks), before and after, per network and per 200 priced layers.

    nice -n 19 .venv/bin/python bench/predict_speed.py \
        --timemodel /work/golden/torch-cpu.timemodel.json /work/golden/onnxruntime-cpu.timemodel.json \
        [--before 045e38e] [--rounds 4] [--calls 2] [--nets mobilenet_v2,resnet50]

Each version (this checkout, and with --before a commit exported with `git archive` into a temporary
folder) runs in its own worker process (PYTHONPATH = its src/, one torch thread); the workers alternate
round by round (the order flips every round), so load on a shared machine hits both alike. A worker
first prices every network once (the process is warm: imports and torch's lazily built kernels are
paid), then, `--calls` times per network and time model:

  * cold: the first call on a never-seen network, the case the bar is about: the network is built
    anew (a new instance at its fixed seed), the extraction cache is emptied and the time model is
    loaded anew from its file, so nothing of an earlier call is reused; only the call is timed;
  * repeat (this checkout only): the same network object priced again, answered from the extraction
    cache (what a loop re-pricing one network does).

Reported: the median ms per call over all rounds, ms per 200 priced layers (the aim: <= 20 ms per 200
layers cold), and the median time of the cold call's stages (fingerprint, fx trace, shape propagation,
mapping ops to layer calls, fusion, tree prediction, the rest), timed by wrapping the functions both
versions share; in the version before, "rest" holds the forward it ran before tracing.

MobileNet-V2 (inverted residuals: 1x1 expand, 3x3 depthwise, 1x1 project, ReLU6, BatchNorm; width 1.0,
1000 classes) and ResNet-50 (bottleneck blocks 3-4-6-3) are written here at 224x224 (torchvision is
not a dependency); the zoo networks are `fastdeepiot.zoo`'s (widths 0.5 and 1.0, small inputs: images
3x32x32, DeepSense's sensor windows 6x128). Writes docs/results/predict_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _provenance import export_commit

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results"


# ------------------------------------------------------------------------------------ networks


def build_networks(names=None):
    """[(name, module in eval mode, input)]: MobileNet-V2, ResNet-50 (224x224) and the zoo, each built
    anew at its own fixed seed (two builds of one name are identical)."""
    return [build_network(n) for n in (names or NETWORKS)]


NETWORKS = ("mobilenet_v2", "resnet50") + tuple(f"{style}_w{w:g}" for style in
                                                  ("mobilenet", "resnet", "vgg", "shufflenet", "deepsense")
                                                  for w in (0.5, 1.0))


def build_network(name: str):
    """(name, module in eval mode, input) for one name of NETWORKS."""
    import zlib

    import torch
    import torch.nn as nn

    from fastdeepiot.zoo import build_zoo_network

    def cbr(cin, cout, k, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, *([nn.ReLU6(inplace=True)] if act else []))

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hid = cin * expand
            self.conv = nn.Sequential(*([cbr(cin, hid, 1)] if expand != 1 else []),
                                      cbr(hid, hid, 3, stride, groups=hid), cbr(hid, cout, 1, act=False))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class MobileNetV2(nn.Module):
        # (expansion, channels, repeats, stride)
        CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]

        def __init__(self, num_classes=1000):
            super().__init__()
            c, layers = 32, [cbr(3, 32, 3, 2)]
            for t, ch, n, s in self.CFG:
                for i in range(n):
                    layers.append(InvertedResidual(c, ch, s if i == 0 else 1, t))
                    c = ch
            self.features = nn.Sequential(*layers, cbr(c, 1280, 1))
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = 4 * width
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    class ResNet50(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
            self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
            blocks, c = [], 64
            for stage, (width, n) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)]):
                for i in range(n):
                    blocks.append(Bottleneck(c, width, 2 if i == 0 and stage > 0 else 1))
                    c = 4 * width
            self.layers = nn.Sequential(*blocks)
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(c, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(self.avgpool(self.layers(x)), 1))

    torch.manual_seed(zlib.crc32(name.encode()))
    if name == "mobilenet_v2":
        return name, MobileNetV2().eval(), torch.randn(1, 3, 224, 224)
    if name == "resnet50":
        return name, ResNet50().eval(), torch.randn(1, 3, 224, 224)
    style, _, w = name.rpartition("_w")
    m, x = build_zoo_network(style, float(w))
    return name, m.eval(), x


# ------------------------------------------------------------------------------------ worker

STAGES = ("fingerprint", "fx trace", "shape propagation", "mapping", "fusion", "tree prediction", "rest")


def _stage_timers():
    """Wrap the functions both versions share with timers; returns the dict they add their seconds to
    (the outermost call of each only). Which functions: see the module doc."""
    import functools

    import fastdeepiot.graph.extract as ex
    import fastdeepiot.graph.trace as tr
    import fastdeepiot.timemodel.model as mo

    acc: dict = {}

    def wrap(owner, name, stage):
        f = getattr(owner, name)
        depth = [0]

        @functools.wraps(f)
        def timed(*a, **k):
            depth[0] += 1
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    acc[stage] = acc.get(stage, 0.0) + time.perf_counter() - t

        setattr(owner, name, timed)

    wrap(ex, "fingerprint", "fingerprint")
    wrap(tr.Tracer, "trace", "fx trace")
    wrap(tr, "propagate_shapes", "shape propagation")
    wrap(ex, "_extract_fx", "extraction")
    wrap(mo, "fusion_for_backend", "fusion")
    # (predict_network calls the unchecked _predict_configs where a version has it)
    wrap(mo.TimeModel, "_predict_configs" if hasattr(mo.TimeModel, "_predict_configs") else "predict_configs",
         "tree prediction")
    return acc


def _stages_ms(acc: dict, total_s: float) -> dict:
    out = {k: acc.get(k, 0.0) * 1e3 for k in ("fingerprint", "fx trace", "shape propagation", "fusion",
                                              "tree prediction")}
    out["mapping"] = (acc.get("extraction", 0.0) - acc.get("fx trace", 0.0) - acc.get("shape propagation", 0.0)) * 1e3
    out["rest"] = total_s * 1e3 - sum(out.values())
    return {k: out[k] for k in STAGES}


def worker(args) -> None:
    """Time predict_network in this process (the version on PYTHONPATH); print JSON."""
    import torch

    torch.set_num_threads(1)
    import fastdeepiot
    from fastdeepiot import TimeModel
    from fastdeepiot.graph.extract import clear_cache

    acc = _stage_timers() if args.mode == "cold" else {}
    names = args.nets.split(",") if args.nets else list(NETWORKS)
    kept = {name: build_network(name) for name in names}  # the repeat mode's objects
    out = {"fastdeepiot": str(Path(fastdeepiot.__file__).parent), "results": {}}
    for tm_path in args.timemodel:
        tm = TimeModel.load(tm_path)
        res = out["results"].setdefault(tm_path, {})
        for name, (_, m, x) in kept.items():  # warm-up: the process's first calls (and the cache, for repeat)
            p = tm.predict_network(m, x, allow_unmodelled=True)
            res[name] = {"layers": len(p.layers), "total_ms": p.total_ms, "times_ms": [], "stages_ms": []}
        for _ in range(args.calls):
            for name in names:
                if args.mode == "cold":
                    _, m, x = build_network(name)  # a new instance nothing has seen
                    clear_cache()
                    tm = TimeModel.load(tm_path)  # fresh time-model state
                else:
                    _, m, x = kept[name]
                acc.clear()
                t = time.perf_counter()
                tm.predict_network(m, x, allow_unmodelled=True)
                dt = time.perf_counter() - t
                res[name]["times_ms"].append(dt * 1e3)
                if args.mode == "cold":
                    res[name]["stages_ms"].append(_stages_ms(acc, dt))
    print(json.dumps(out))


# ------------------------------------------------------------------------------------ driver


def git(*a) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True, check=True).stdout.strip()


def run_worker(src: Path, mode: str, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--mode", mode, "--calls", str(args.calls)]
    cmd += ["--timemodel", *args.timemodel] + (["--nets", args.nets] if args.nets else [])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"worker ({src}, {mode}) failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timemodel", nargs="+", required=True, help="time model JSON file(s) to predict with")
    ap.add_argument("--before", help="git commit to compare with (run side by side, interleaved)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--calls", type=int, default=2, help="timed calls per network, time model and round")
    ap.add_argument("--nets", help=f"comma-separated subset of the networks ({', '.join(NETWORKS)})")
    ap.add_argument("--out", default=str(OUT / "predict_speed"), help="output path without extension")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="cold", choices=("cold", "repeat"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    unknown = [n for n in (args.nets or "").split(",") if n and n not in NETWORKS]
    if unknown:
        ap.error(f"unknown networks {unknown}; known: {', '.join(NETWORKS)}")

    head = git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "src") else "")
    versions = [("after", head, ROOT / "src", "cold"), ("after", head, ROOT / "src", "repeat")]
    tmp = tempfile.TemporaryDirectory()
    if args.before:
        before = git("rev-parse", "--short", args.before)
        versions.insert(0, ("before", before, export_commit(args.before, Path(tmp.name)), "cold"))
    load = [os.getloadavg()]
    times: dict = {}
    stages: dict = {}
    info: dict = {}
    for r in range(args.rounds):
        order = versions if r % 2 == 0 else versions[::-1]
        for label, commit, src, mode in order:
            print(f"round {r + 1}/{args.rounds}: {label} {commit} ({mode})", file=sys.stderr)
            out = run_worker(src, mode, args)
            for tm_path, res in out["results"].items():
                for name, d in res.items():
                    key = (label, mode, tm_path, name)
                    times.setdefault(key, []).extend(d["times_ms"])
                    stages.setdefault(key, []).extend(d["stages_ms"])
                    info[key] = (commit, d["layers"], d["total_ms"])
        load.append(os.getloadavg())
    tmp.cleanup()

    rows = []
    for (label, mode, tm_path, name), ts in times.items():
        commit, layers, total = info[(label, mode, tm_path, name)]
        med = statistics.median(ts)
        st = stages[(label, mode, tm_path, name)]
        rows.append({"version": label, "commit": commit, "mode": mode, "timemodel": tm_path, "network": name,
                     "layers": layers, "predicted_ms": total, "median_ms": med,
                     "ms_per_200_layers": med * 200 / max(1, layers), "n": len(ts),
                     "min_ms": min(ts), "max_ms": max(ts),
                     "stages_median_ms": {k: statistics.median(s[k] for s in st) for k in STAGES} if st else None})
    conditions = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": _cpu(),
                  "python": platform.python_version(), "torch_threads": 1, "rounds": args.rounds,
                  "calls_per_round": args.calls, "loadavg_1_5_15": [list(x) for x in load],
                  "niceness": os.nice(0), "after": head,
                  "before": next((v[0] for k, v in info.items() if k[0] == "before"), None)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=1) + "\n")
    Path(args.out + ".md").write_text(_markdown(rows, conditions))
    print(_markdown(rows, conditions))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or "unknown"


def _markdown(rows, cond) -> str:
    loads = ", ".join("/".join(f"{v:.1f}" for v in x) for x in cond["loadavg_1_5_15"])
    lines = ["# predict_network speed", "",
             f"`TimeModel.predict_network` wall time per call, median over {cond['rounds']} interleaved rounds x "
             f"{cond['calls_per_round']} calls (`bench/predict_speed.py`). {cond['date']}, {cond['cpu']}, "
             f"one torch thread, Python {cond['python']}, niceness {cond['niceness']}; load average "
             f"(1/5/15 min) before and after each round: {loads}. Before: {cond['before'] or '-'}; after: "
             f"{cond['after']}.", "",
             "**cold**: the first call on a never-seen network (a new instance, the extraction cache emptied, "
             "the time model loaded anew; the process warm). **repeat**: the same network object again, from "
             "the extraction cache. The aim: <= 20 ms per 200 priced layers, cold.", ""]
    by_tm: dict = {}
    for r in rows:
        by_tm.setdefault(r["timemodel"], []).append(r)
    f = lambda r, k: f"{r[k]:.1f}" if r else "-"  # noqa: E731
    for tm_path, rs in by_tm.items():
        lines += [f"## {Path(tm_path).name}", "",
                  "| network | layers | before ms (cold) | after ms (cold) | after/before | before ms/200 layers "
                  "| after ms/200 layers (cold) | after ms (repeat) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        nets = list(dict.fromkeys(r["network"] for r in rs))
        get = {(r["network"], r["version"], r["mode"]): r for r in rs}
        for n in nets:
            b, a, rep = get.get((n, "before", "cold")), get.get((n, "after", "cold")), get.get((n, "after", "repeat"))
            ratio = f"{a['median_ms'] / b['median_ms']:.2f}" if a and b else "-"
            lines.append(f"| {n} | {(a or b)['layers']} | {f(b, 'median_ms')} | {f(a, 'median_ms')} | {ratio} | "
                         f"{f(b, 'ms_per_200_layers')} | {f(a, 'ms_per_200_layers')} | {f(rep, 'median_ms')} |")
        lines += ["", "Cold call by stage, median ms (rest: everything else, in the version before its forward "
                  "before tracing):", "",
                  "| network | version | " + " | ".join(STAGES) + " | total |",
                  "|---|---|" + "---:|" * (len(STAGES) + 1)]
        for n in nets:
            for v in ("before", "after"):
                r = get.get((n, v, "cold"))
                if r and r["stages_median_ms"]:
                    lines.append(f"| {n} | {v} | " + " | ".join(f"{r['stages_median_ms'][k]:.1f}" for k in STAGES)
                                 + f" | {r['median_ms']:.1f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
