"""Checkpoints of trained and compressed networks: one format family, one reader, one writer.

    save_checkpoint("har.pt", model, "har", metrics)              # a trained reference network
    save_compressed("fast.pt", pruned, plan, "har", net, arch)     # + the pruning plan that made it
    model, meta = load_checkpoint("fast.pt", task="har")           # either kind, model in eval mode

A trained checkpoint is {"format": "fastdeepiot-checkpoint/1", "task", "net", "arch", "state_dict",
"norm", "metrics"}: the network is rebuilt with `tasks.nets.build(net, **arch)`. A compressed one is
{"format": "fastdeepiot.compressed", "task", "net", "arch", "plan", "state_dict", "metrics"}: a pruned
network cannot be described by the reference network's constructor arguments, so it is rebuilt from the
original `arch` and the replayed `plan`.

Reading never runs code from the file: `torch.load(weights_only=True)` accepts tensors, numbers, strings,
lists and dicts only, and anything else is refused with what it asked for. Before anything is built, the
schema is checked (types, required keys, known network) and the network the checkpoint declares is built on
torch's `meta` device (no memory) to estimate its size: a checkpoint that declares more than
`MAX_NETWORK_BYTES` of parameters is refused with that estimate, and a trained checkpoint whose weights do
not have the declared shapes is refused before the real network is allocated.
Files are written atomically (`fastdeepiot.safeio`).
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastdeepiot.compression.plan import Plan
from fastdeepiot.errors import CheckpointError, UserError
from fastdeepiot.safeio import KIND_NAMES, atomic_path, sniff
from fastdeepiot.tasks.nets import NETS, build
from fastdeepiot.tasks.registry import get as get_task

CHECKPOINT_FORMAT = "fastdeepiot-checkpoint/1"
COMPRESSED_FORMAT = "fastdeepiot.compressed"
MAX_NETWORK_BYTES = 2 * 1024**3  # a declared network larger than this is refused (reference nets: < 5 MB)
MAX_LIST_LEN = 256  # entries of a per-layer channel list
MAX_INT = 2**31 - 1


def plain(obj):
    """JSON-like copy (weights_only loading accepts dict/list/str/int/float/bool/None)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


# ---------------------------------------------------------------------------------------- writing


def _state(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _write(path, ckpt: dict) -> Path:
    path = Path(path)
    if str(path.parent) and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def save_checkpoint(path: str | os.PathLike, model: nn.Module, task_name: str, metrics: dict | None = None) -> Path:
    """Write a trained checkpoint. `model` must carry `net_name` and `arch` (every reference network does)."""
    net = getattr(model, "net_name", None)
    arch = getattr(model, "arch", None)
    if net is None or not isinstance(arch, dict):
        raise CheckpointError("this model has no `net_name`/`arch`: only reference networks (or networks that "
                              "record their constructor arguments) can be saved as checkpoints")
    task = get_task(task_name)
    return _write(path, {"format": CHECKPOINT_FORMAT, "task": task.name, "net": net, "arch": copy.deepcopy(arch),
                         "state_dict": _state(model), "norm": task.norm,
                         "metrics": plain(metrics) if metrics is not None else None})


def continued_plan(meta: dict, plan: Plan) -> Plan:
    """The plan to save for a network compressed further from the checkpoint `meta` describes (`load_checkpoint`'s
    meta): a compressed checkpoint's own steps, then `plan`'s. A compressed checkpoint records the original
    architecture and the steps that replay onto it, and `plan` starts from the compressed network, so saving it
    alone would write weights no replay fits."""
    if meta.get("format") != COMPRESSED_FORMAT:
        return plan
    return Plan(plan.input_shape, Plan.from_json(meta["plan"]).steps + plan.steps, dict(plan.meta))


def save_compressed(path, model: nn.Module, plan: Plan, task_name: str, net: str, arch: dict,
                    metrics: dict | None = None) -> Path:
    """Write a compressed checkpoint: the original network's `net`/`arch`, the plan, the pruned weights."""
    return _write(path, {"format": COMPRESSED_FORMAT, "task": task_name, "net": net, "arch": copy.deepcopy(arch),
                         "plan": plan.to_json(), "state_dict": _state(model),
                         "metrics": plain(metrics) if metrics is not None else None})


# ---------------------------------------------------------------------------------------- reading


def _refusal(path: Path, e: Exception) -> CheckpointError:
    """A one-line reason for a file torch.load(weights_only=True) would not read; never torch's advice to
    turn the safety off."""
    text = str(e)
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return CheckpointError(
            f"refused {path}: its pickle asks to load {m.group(1)}, which is code, not data; fastdeepiot reads "
            f"checkpoints as data only (tensors, numbers, strings, lists, dicts) and never runs code from a file")
    if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in text:
        m = re.search(r"(Unsupported operand \d+|Unsupported [\w ]+?: [^\n]+)", text)
        what = f" ({m.group(1).strip()})" if m else ""
        return CheckpointError(
            f"refused {path}: it is not a data-only PyTorch checkpoint{what}; fastdeepiot reads checkpoints as "
            f"data only (tensors, numbers, strings, lists, dicts) and never runs code from a file")
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}" + (f": {first}" if first else ""))


def read_raw(path: str | os.PathLike) -> dict:
    """The checkpoint's dict, loaded as data only and schema-checked (nothing is built)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    kind = sniff(path)
    if kind == "exported":
        raise CheckpointError(f"{path} is a torch.export program (what `fastdeepiot baseline` writes for the "
                              f"torch-pruning methods), not a checkpoint: load it with "
                              f"torch.export.load(path).module()")
    if kind not in ("checkpoint", "pickle", "zip", "binary"):  # what it plainly is, not "an unsafe pickle"
        raise CheckpointError(f"{path} is {KIND_NAMES.get(kind, kind)}, not a PyTorch checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise _refusal(path, e) from None
    validate(ckpt, path)
    return ckpt


def _check_arch_value(path, key: str, v: Any) -> None:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return
    if isinstance(v, int):
        if not -MAX_INT <= v <= MAX_INT:
            raise CheckpointError(f"{path}: arch {key}={v} is out of range")
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise CheckpointError(f"{path}: arch {key}={v} is not a finite number")
        return
    if isinstance(v, (list, tuple)):
        if len(v) > MAX_LIST_LEN:
            raise CheckpointError(f"{path}: arch {key} has {len(v)} entries (at most {MAX_LIST_LEN})")
        for x in v:
            if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= MAX_INT:
                raise CheckpointError(f"{path}: arch {key} must hold positive integers, got {x!r}")
        return
    raise CheckpointError(f"{path}: arch {key} has an unexpected type ({type(v).__name__})")


def validate(ckpt: Any, path: str | os.PathLike = "checkpoint") -> None:
    """Schema of both checkpoint kinds; raises CheckpointError naming the first problem."""
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (CHECKPOINT_FORMAT, COMPRESSED_FORMAT):
        raise CheckpointError(f"{path} is not a fastdeepiot checkpoint (write one with `fastdeepiot train`)")
    required = {"task": str, "net": str, "arch": dict, "state_dict": dict}
    if ckpt["format"] == COMPRESSED_FORMAT:
        required["plan"] = dict
    for key, typ in required.items():
        if key not in ckpt:
            raise CheckpointError(f"{path}: damaged checkpoint (no {key!r})")
        if not isinstance(ckpt[key], typ):
            raise CheckpointError(f"{path}: damaged checkpoint ({key!r} is a {type(ckpt[key]).__name__}, "
                                  f"not a {typ.__name__})")
    if ckpt["net"] not in NETS:
        raise CheckpointError(f"{path}: unknown network {ckpt['net']!r}; known: {', '.join(NETS)}")
    for k, v in ckpt["arch"].items():
        if not isinstance(k, str):
            raise CheckpointError(f"{path}: arch keys must be strings")
        _check_arch_value(path, k, v)
    for k, v in ckpt["state_dict"].items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: damaged checkpoint (state_dict entry {k!r} is not a tensor)")
    if ckpt.get("metrics") is not None and not isinstance(ckpt["metrics"], dict):
        raise CheckpointError(f"{path}: damaged checkpoint ('metrics' is not a dict)")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def _scaled(v, width_mult: float) -> list[int]:
    return [max(1, int(round(c * width_mult))) for c in v]


def estimate_parameters(net: str, arch: dict) -> int | None:
    """Parameters + buffers the reference network `net` would have with `arch`, by arithmetic (Python
    integers: no overflow, nothing allocated). None for a network this function does not know."""
    a = dict(arch)
    wm = float(a.get("width_mult", 1.0))
    if net == "deepsense":
        sc = _scaled(a.get("sensor_channels", (32, 32)), wm)
        mc = _scaled(a.get("merge_channels", (64, 64)), wm)
        gh = max(1, int(round(int(a.get("gru_hidden", 64)) * wm)))
        k, n_cls = int(a.get("kernel", 5)), int(a.get("n_classes", 6))
        total, cin = 0, 3
        for c in sc:
            total += 2 * (cin * c * k + 4 * c + 1)
            cin = c
        cin = 2 * sc[-1] if sc else 0
        for c in mc:
            total += cin * c * k + 4 * c + 1
            cin = c
        total += 3 * gh * (cin + gh) + 6 * gh + gh * n_cls + n_cls
        return total
    if net == "smallcnn":
        ch = _scaled(a.get("channels", (16, 32, 64)), wm)
        hid = max(1, int(round(int(a.get("hidden", 64)) * wm)))
        cin, s, n_cls = int(a.get("in_channels", 1)), int(a.get("size", 28)), int(a.get("n_classes", 10))
        total = 0
        for c in ch:
            total += cin * c * 9 + 4 * c + 1
            cin, s = c, s // 2
        total += cin * s * s * hid + hid + hid * n_cls + n_cls
        return total
    return None


def _too_large(path, net: str, n: int, nbytes: int) -> CheckpointError:
    return CheckpointError(f"{path} declares a {net} network of {n:.3g} parameters (about {_fmt_bytes(nbytes)} of "
                           f"memory, more than the {_fmt_bytes(MAX_NETWORK_BYTES)} fastdeepiot builds from a "
                           f"checkpoint); refusing to build it")


def declared_network(ckpt: dict, path="checkpoint") -> nn.Module:
    """The network the checkpoint declares, sized by arithmetic and then built on the meta device (no
    memory); refused when larger than MAX_NETWORK_BYTES."""
    try:
        n = estimate_parameters(ckpt["net"], ckpt["arch"])
    except (TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{path}: the recorded {ckpt['net']} architecture is malformed ({e})") from None
    if n is not None and 4 * n > MAX_NETWORK_BYTES:
        raise _too_large(path, ckpt["net"], n, 4 * n)
    try:
        with torch.device("meta"):
            meta = build(ckpt["net"], **ckpt["arch"])
    except UserError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (ValueError, RuntimeError, OverflowError, ZeroDivisionError) as e:
        raise CheckpointError(f"{path}: cannot build the recorded {ckpt['net']} architecture "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    nbytes = sum(t.numel() * t.element_size() for t in meta.state_dict().values())
    if nbytes > MAX_NETWORK_BYTES:
        raise _too_large(path, ckpt["net"], sum(t.numel() for t in meta.state_dict().values()), nbytes)
    return meta


def load_checkpoint(path: str | os.PathLike, task=None) -> tuple[nn.Module, dict]:
    """(model in eval mode, meta) from a trained or compressed checkpoint, loaded as data only. With
    `task` (name or Task), a checkpoint made for another task or for a network that does not fit the task
    raises CheckpointError."""
    path = Path(path)
    ckpt = read_raw(path)
    arch = ckpt["arch"]
    if task is not None:
        t = get_task(task) if isinstance(task, str) else task
        if ckpt["task"] != t.name:
            raise CheckpointError(f"{path} is a checkpoint for task {ckpt['task']!r}, not {t.name!r}")
        if ckpt["net"] != t.net or arch.get("n_classes") != t.n_classes:
            raise CheckpointError(f"{path} holds a {ckpt['net']} network with {arch.get('n_classes')} classes; "
                                  f"task {t.name!r} needs {t.net} with {t.n_classes}")
    meta_net = declared_network(ckpt, path)
    compressed = ckpt["format"] == COMPRESSED_FORMAT
    if not compressed:  # the weights must have the declared shapes before the real network is allocated
        want = {k: tuple(v.shape) for k, v in meta_net.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
        if want != got:
            missing = sorted(set(want) - set(got))
            odd = sorted(k for k in set(want) & set(got) if want[k] != got[k])
            extra = sorted(set(got) - set(want))
            detail = (f"missing {missing[0]}" if missing else f"{odd[0]} has shape {got[odd[0]]}, the "
                      f"architecture needs {want[odd[0]]}" if odd else f"unexpected {extra[0]}")
            raise CheckpointError(f"{path}: weights do not fit the recorded {ckpt['net']} architecture "
                                  f"({detail})")
    model = build(ckpt["net"], **arch)
    if compressed:
        try:
            Plan.from_json(ckpt["plan"]).apply(model)
        except UserError as e:
            raise CheckpointError(f"{path}: {e}") from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: damaged pruning plan ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        what = "the replayed plan" if compressed else f"the recorded {ckpt['net']} architecture"
        raise CheckpointError(f"{path}: weights do not fit {what}: {str(e).splitlines()[0][:200]}") from None
    model.eval()
    return model, {k: v for k, v in ckpt.items() if k != "state_dict"}


def load_compressed(path) -> tuple[nn.Module, dict]:
    """(pruned model in eval mode, meta) from a checkpoint written by `fastdeepiot compress`."""
    model, meta = load_checkpoint(path)
    if meta["format"] != COMPRESSED_FORMAT:
        raise CheckpointError(f"{path} is not a compressed fastdeepiot checkpoint")
    return model, meta
