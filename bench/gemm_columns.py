"""How fast torch-cpu's native convolution path runs for each output map size: the measurement behind the
native_gemv / native_small / native kernel paths (`graph.paths`).

    .venv/bin/python bench/gemm_columns.py [--rounds 3] [--out docs/results] [--name gemm_columns]

ATen runs a float32 convolution at batch 1 with a small input (at most 20480 elements; at one thread any
non-strided 1x1 convolution; see `graph.paths.torch_conv_path`) through its native im2col + GEMM, image by image:
the weights times a matrix with one column per output pixel. This bench times plain 1x1 and 3x3 convolutions of
64 and 256 channels, stride 1, on square maps of 1 to 14 pixels a side (those `graph.paths` puts on the native
path; docs/results/session26/gemm_columns.md was written at c6a4ad1, before that rule chose them, and lacks the
1x1 convolutions of 256 channels on 10x10 to 14x14 maps), each configuration
timed alone as the profiler times a layer (`profiling.runner.time_layer`), in `--rounds` interleaved rounds,
the fastest round kept (the host's slow state only ever adds time). It writes <out>/<name>.md and .json: the
time, the GFLOP/s and the path `graph.paths` names, per configuration.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import code_version  # noqa: E402

from fastdeepiot.devices import cpu_model, get_backend  # noqa: E402
from fastdeepiot.families import LayerConfig  # noqa: E402
from fastdeepiot.graph.paths import kernel_path  # noqa: E402
from fastdeepiot.profiling.runner import time_layer  # noqa: E402
from fastdeepiot.report.tables import markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14)


def configs() -> list[LayerConfig]:
    """The configurations of the grid that run on the native path (`graph.paths`' rule)."""
    grid = (LayerConfig("conv2d", {"batch": 1, "groups": 1, "in_channels": c, "out_channels": c, "kernel": k,
                                   "stride": 1, "size": s}) for k in (1, 3) for c in (64, 256) for s in SIZES)
    return [c for c in grid if kernel_path("torch-cpu", 1, c).startswith("native")]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    ap.add_argument("--name", default="gemm_columns")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    backend = get_backend("torch-cpu")
    cs = configs()
    times: dict[str, list[float]] = {c.key: [] for c in cs}
    for r in range(args.rounds):
        for c in cs:
            times[c.key].append(time_layer(backend, c).median_ms)
        print(f"round {r + 1}/{args.rounds}", flush=True)
    rows = []
    for c in cs:
        p, ts = c.params, times[c.key]
        ms = min(ts)
        rows.append({"kernel": p["kernel"], "channels": p["in_channels"], "map": p["size"],
                     "gemm_columns": p["size"] ** 2, "path": kernel_path("torch-cpu", 1, c), "ms": round(ms, 4),
                     "spread": round(max(ts) / ms - 1, 3), "gflops": round(c.features()["flops"] / ms / 1e6, 1)})
    meta = {"commit": code_version(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "processor": cpu_model(), "torch": torch.__version__, "python": platform.python_version(),
            "threads": 1, "rounds": args.rounds, "command": "bench/gemm_columns.py " + " ".join(argv or sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    head = (f"# torch-cpu's native convolution path by output map size\n\n`{meta['command'].strip()}` at commit "
            f"{meta['commit']}, {meta['processor']}, 1 thread, torch {meta['torch']}, {meta['date']} UTC; each "
            f"configuration timed alone as the profiler does, the fastest of {args.rounds} interleaved rounds "
            f"(spread: slowest over fastest - 1). Batch 1, stride 1, in = out channels. gemm_columns: output pixels, "
            f"the columns of each image's GEMM; path: `graph.paths.kernel_path`.\n\n")
    cols = ["kernel", "channels", "map", "gemm_columns", "path", "ms", "gflops", "spread"]
    (args.out / f"{args.name}.md").write_text(head + markdown_table(rows, cols) + "\n")
    print((args.out / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
