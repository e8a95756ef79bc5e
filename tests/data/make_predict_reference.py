"""Make tests/data/predict_reference.{timemodel.json,json} (see tests/test_predict_reference.py).

    .venv/bin/python tests/data/make_predict_reference.py [--before 045e38e]

1. Fits the reference time model with this checkout: per family a small ModelTree (depth <= 3, no pruning)
   on the fake device's exact times of the layer configurations of the reference networks and of more
   zoo, random and LSTM networks (so that some reference layers lie outside their leaf's range: the
   guard); families with fewer than 4 configurations (attention, mha, transformer_encoder) stay
   unmodelled, so that path is priced too.
2. Prices every reference network on torch-cpu and onnxruntime-cpu with the source of commit --before
   (exported with `git archive`, run in a child process) and writes what it predicted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TM = HERE / "predict_reference.timemodel.json"
OUT = HERE / "predict_reference.json"


def fit() -> None:
    import torch

    from fastdeepiot.devices.fake import fake_layer_ms
    from fastdeepiot.graph.extract import extract_layers
    from fastdeepiot.graph.randomnets import STYLES, random_network
    from fastdeepiot.timemodel.model import TimeModel
    from fastdeepiot.timemodel.tree import ModelTree, featurize
    from fastdeepiot.zoo import zoo_networks

    sys.path.insert(0, str(HERE.parent))
    from test_predict_reference import reference_networks

    nets = [build() for build in reference_networks().values()]
    nets += [(m, x) for _, m, x in zoo_networks(widths=(0.25, 0.75))]
    nets += [random_network(seed, kind, style)[:2] for style, (_, kinds) in STYLES.items() for kind in kinds
             for seed in range(10, 13)]
    nets += [(torch.nn.LSTM(8, h, num_layers=2, bidirectional=True), torch.randn(10, 2, 8)) for h in (8, 12, 20, 32)]
    by: dict = {}
    for m, x in nets:
        for c in extract_layers(m.eval(), x, cache=False):
            if c.kind == "layer":
                by.setdefault(c.family, {})[c.config.key] = c.config
    est = {}
    for fam, cs in sorted(by.items()):
        cs = list(cs.values())
        if len(cs) >= 4:  # the rarest families stay unmodelled: that path is priced too
            est[fam] = ModelTree(max_depth=3, min_samples_leaf=3, pruning="none").fit(
                featurize(cs), [fake_layer_ms(c) for c in cs])
    tm = TimeModel(est, None, {"backend": "torch-cpu"}, {"note": "fake-device reference for tests"})
    d = tm.to_dict()
    d["report"] = {}
    TM.write_text(json.dumps(d, separators=(",", ":")) + "\n")
    print(f"{TM.name}: {len(est)} families ({', '.join(est)}); left out: "
          f"{', '.join(sorted(set(by) - set(est)))}", file=sys.stderr)


def predict() -> None:
    import torch

    sys.path.insert(0, str(HERE.parent))
    from test_predict_reference import REFERENCE_BLOCK, reference_models, reference_networks, summary

    from fastdeepiot.graph import fusion

    if hasattr(fusion, "nchwc_block_size"):  # the block the references assume, whatever this host has
        fusion.nchwc_block_size = lambda: REFERENCE_BLOCK
    torch.set_num_threads(1)
    out = {}
    for backend, tm in reference_models().items():
        for name, build in reference_networks().items():
            m, x = build()
            out[f"{backend}/{name}"] = summary(tm.predict_network(m, x, allow_unmodelled=True))
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"{OUT.name}: {len(out)} predictions", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="045e38e", help="the commit whose predictions are the reference")
    ap.add_argument("--predict", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.predict:
        return predict()
    fit()
    with tempfile.TemporaryDirectory() as tmp:
        data = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "src"], capture_output=True,
                              check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=data, check=True)
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        subprocess.run([sys.executable, __file__, "--predict"], env=env, check=True)


if __name__ == "__main__":
    main()
