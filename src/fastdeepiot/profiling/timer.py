"""The one network timer: what "measured time" means for a whole network, everywhere in fastdeepiot.

Profiling (its random networks), `predict --measure`, `compress(..., measure=True)` (`measure_models`),
the main job and every bench time whole networks through this module, and nothing else does.

Measured time (the convention)
------------------------------
The measured time of a network on a backend is its **steady-state per-call time: the median over timed
blocks of back-to-back calls, best of interleaved rounds**, in a process that runs nothing but networks:

- *What runs.* One forward call on the example input. torch-cpu: the eager module in eval mode, every
  call under `torch.inference_mode()`. onnxruntime-cpu: the network exported to ONNX once (TorchScript
  exporter, opset 17) and a plain `session.run(None, feed)` (CPUExecutionProvider, all graph
  optimisations, sequential execution, 1 inter-op thread).
- *Threads.* `threads` intra-op threads (default 1): `torch.set_num_threads` / `intra_op_num_threads`.
- *Where.* A fresh child process, started as `python -m fastdeepiot.profiling.timerchild`: it never
  imports the caller's `__main__` (a user script without an `if __name__ == "__main__":` guard is not
  re-run) and its allocator and caches hold only the networks it times. A network reaches it as ONNX
  bytes (ORT), as a pickle of the eager module (torch, when every class in it can be imported by name,
  or comes from a file the caller loaded under a name of its own, as `predict path/to/file.py:factory`
  does: the child loads that file the same way first), or else as TorchScript traced in the caller
  (`torch.jit.trace`: classes defined in the caller's `__main__` or inside a function;
  `NetworkTime.shipped_as` says which). Random networks of the profiler
  travel as their JSON spec and are built in the child.
- *Warm-up.* Before its first round a network runs for at least `warmup_calls` calls and `warmup_ms`;
  before every round it runs again for `rewarm_ms` (the network timed just before left its own cache
  state). First-call costs (allocation, oneDNN primitive creation, ORT arena growth) are not measured.
- *Allocator condition.* The process's default allocator: glibc malloc with its default (dynamic) mmap
  and trim thresholds and no preloaded allocator, unless the environment sets `LD_PRELOAD` or `MALLOC_*`
  (`allocator_condition()` reports which, and the benches record it). After the warm-up every call
  allocates the same sizes, served from memory the allocator already holds (steady state). Fixing
  glibc's thresholds did not narrow the run-to-run spread (issue 17), so nothing is set.
- *Address layout.* On Linux the child starts with address-space layout randomisation off (the
  `ADDR_NO_RANDOMIZE` personality, what `setarch -R` sets), so every timing process places its heap,
  stacks and libraries at the same addresses. Measured on the quiet machine (zoo at widths 0.25 and 1,
  `torch.utils.benchmark` in 5 fresh processes each way, interleaved): the median spread over processes
  fell from 3.0% to 1.6% and the times by 1-2% (a randomised layout is sometimes an unlucky one for the
  caches). `address_layout_condition()` reports it; `FASTDEEPIOT_FIXED_LAYOUT=0` keeps randomisation on.
- *Blocks.* Consecutive calls timed by one pair of clock readings, at least `block_ms` long (at least one
  call); the block's per-call time is its time over its calls. A round times blocks until `round_ms` and
  `min_blocks`; its value is the median of its blocks' per-call times. This is the estimator of
  `torch.utils.benchmark.Timer.blocked_autorange()` (the median over blocks sized to ~1e4 timer
  overheads, ~10 ms), so our number and the ecosystem's mean the same thing.
- *Quiet guard (CPU backends).* Before a block the timer waits until the machine runs at its
  uncontended speed (`devices.quiet`), and drops a block after which it does not (at most
  `max_dropped_blocks` per round). After `max_wait_s` of waiting in one round it times unguarded and
  counts that round in `unguarded_rounds`. `FASTDEEPIOT_QUIET_GUARD=0` turns the guard off.
- *Rounds.* `rounds` rounds per network (default 5). Several networks compared in one call are timed
  round-robin (A1 B1 C1 A2 B2 C2 ...), so a change of machine state hits all of them alike. The measured
  time is the fastest round's value (**best of rounds**); `spread` is (slowest - fastest) / fastest round
  and `median_of_rounds_ms` is kept too.
- The Python garbage collector is off while timing.

Why best of rounds, not the median of rounds: the noise on a shared CPU is one-sided (contention,
frequency drops and a neighbour's cache traffic only ever slow a round down), so the fastest round is
the estimate of the uncontended time with the least spread; the ecosystem ground truth of issue 17 is
defined the same way (best of 5 interleaved rounds), and `bench/repeatability.py` reports the
repeatability of both statistics from the same rounds so the choice can be checked on a quiet machine.

    time_network(model, x, backend="torch-cpu", threads=1, rounds=5) -> NetworkTime
    time_networks([m1, m2], x, backend, threads=1, rounds=5) -> [NetworkTime, NetworkTime]
    with NetworkTimer(backend, policy) as t:       # one child for many calls (the profiler, the bench)
        t.time_spec(spec); t.time([m1, m2], x)
        t.load(models, xs); t.run(rounds=1, only=[i])   # one network of several at a time

Backends that do not isolate networks (the fake backend with its fake clock, CUDA events) run the very
same timing loop in the calling process.
"""

from __future__ import annotations

import copy
import gc
import importlib.machinery
import importlib.util
import io
import math
import os
import pickle
import struct
import subprocess
import sys
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fastdeepiot.devices import make_backend
from fastdeepiot.devices.base import Backend, Runner
from fastdeepiot.devices.onnxrt import export_onnx
from fastdeepiot.graph.randomnets import build_network, example_input
from fastdeepiot.profiling.harness import Timing, TimingPolicy

CHILD_MODULE = "fastdeepiot.profiling.timerchild"


@dataclass(frozen=True)
class TimerPolicy:
    warmup_calls: int = 3
    warmup_ms: float = 50.0
    rewarm_ms: float = 5.0
    block_ms: float = 10.0  # torch.utils.benchmark: a block of >= 1e4 timer overheads (~10 ms)
    round_ms: float = 200.0  # blocked_autorange's min_run_time
    min_blocks: int = 5
    max_round_ms: float = 3000.0
    wait_quiet: bool = True
    max_dropped_blocks: int = 20
    max_wait_s: float = 10.0  # waiting for quiet, per round; then the round goes on unguarded

    @classmethod
    def quick(cls) -> "TimerPolicy":
        """Short rounds (tests, smoke runs)."""
        return cls(warmup_ms=20.0, round_ms=60.0, min_blocks=3, max_wait_s=2.0)

    @classmethod
    def for_profile(cls, p: TimingPolicy) -> "TimerPolicy":
        """The profiler's random networks (`PROFILE_ROUNDS` rounds): together about the harness's
        per-measurement cap of one layer (`max_ms`), quiet guard as the harness has it."""
        return cls(warmup_ms=max(p.warmup_ms, 20.0), round_ms=p.max_ms / 4, min_blocks=3,
                   wait_quiet=p.wait_quiet, max_wait_s=p.max_wait_s)


PROFILE_ROUNDS = 2


@dataclass(frozen=True)
class NetworkTime:
    """One network's measured time (see the module doc) and how it was obtained."""

    median_ms: float  # the measured time: best of rounds
    rounds_ms: tuple[float, ...]  # every round's value, in the order timed
    spread: float  # (slowest - fastest) / fastest round
    p10_ms: float  # blocks' per-call times in the best round
    p90_ms: float
    rel_iqr: float
    n_calls: int  # timed calls, all rounds
    blocks: int
    dropped_blocks: int = 0
    unguarded_rounds: int = 0
    shipped_as: str = "in-process"  # spec | pickle | torchscript | onnx | in-process

    @property
    def median_of_rounds_ms(self) -> float:
        return float(np.median(self.rounds_ms))

    def to_timing(self) -> Timing:
        """The record the measurement store keeps (median = the measured time)."""
        return Timing(median_ms=self.median_ms, p10_ms=self.p10_ms, p90_ms=self.p90_ms, rel_iqr=self.rel_iqr,
                      n_calls=self.n_calls, remeasured=0, dropped_rounds=self.dropped_blocks)

    def to_dict(self) -> dict:
        return {**asdict(self), "rounds_ms": list(self.rounds_ms), "median_of_rounds_ms": self.median_of_rounds_ms}

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkTime":
        d = {k: v for k, v in d.items() if k != "median_of_rounds_ms"}
        return cls(**{**d, "rounds_ms": tuple(d["rounds_ms"])})


# --------------------------------------------------------------------------------------- the loop


@dataclass
class _Round:
    value_ms: float
    per_call_ms: list[float]
    calls: int
    dropped: int
    unguarded: bool


def _warm(runner: Runner, policy: TimerPolicy) -> float:
    """Warm up; return the per-call time estimate that sizes the blocks."""
    times: list[float] = []
    spent = 0.0
    while len(times) < policy.warmup_calls or spent < policy.warmup_ms:
        t = runner.time_block(1)
        times.append(t)
        spent += t
        if len(times) >= 2000:  # a very fast network: warm enough
            break
    tail = times[len(times) // 2:]
    return max(float(np.median(tail)), 1e-6)


def _round(runner: Runner, policy: TimerPolicy, est_ms: float) -> _Round:
    guard = getattr(runner, "guard", None) if policy.wait_quiet else None
    per_block = max(1, math.ceil(policy.block_ms / est_ms))
    runner.time_block(max(1, math.ceil(policy.rewarm_ms / est_ms)))
    vals: list[float] = []
    timed, calls, dropped, unguarded, quiet_known = 0.0, 0, 0, False, False
    waited0 = guard.waited_s if guard is not None else 0.0
    while True:
        if guard is not None and guard.waited_s - waited0 > policy.max_wait_s:
            guard, unguarded = None, True  # a machine that stays busy: time anyway, and say so
        if guard is not None and not quiet_known:
            guard.wait_quiet()
        t = runner.time_block(per_block)
        if guard is not None:
            quiet_known = guard.quiet()  # also the next block's "before" probe
            if not quiet_known and dropped < policy.max_dropped_blocks:
                dropped += 1
                continue
        vals.append(t / per_block)
        timed += t
        calls += per_block
        if t < policy.block_ms / 2:  # the warm-up's estimate was too slow (a JIT still settling)
            per_block = max(per_block, math.ceil(policy.block_ms / max(t / per_block, 1e-6)))
        if (timed >= policy.round_ms and len(vals) >= policy.min_blocks) or timed >= policy.max_round_ms:
            break
    return _Round(float(np.median(vals)), vals, calls, dropped, unguarded)


def _summary(rounds: list[_Round], shipped_as: str) -> NetworkTime:
    values = [r.value_ms for r in rounds]
    best = rounds[int(np.argmin(values))]
    p10, p25, p75, p90 = np.percentile(best.per_call_ms, [10, 25, 75, 90])
    lo, hi = min(values), max(values)
    return NetworkTime(median_ms=lo, rounds_ms=tuple(values), spread=float((hi - lo) / lo) if lo > 0 else 0.0,
                       p10_ms=float(p10), p90_ms=float(p90),
                       rel_iqr=float((p75 - p25) / best.value_ms) if best.value_ms > 0 else 0.0,
                       n_calls=sum(r.calls for r in rounds), blocks=sum(len(r.per_call_ms) for r in rounds),
                       dropped_blocks=sum(r.dropped for r in rounds),
                       unguarded_rounds=sum(r.unguarded for r in rounds), shipped_as=shipped_as)


def time_runners(runners: list[Runner | None], policy: TimerPolicy, rounds: int,
                 only: list[int] | None = None) -> list[list[_Round] | str]:
    """The timing loop: warm every runner, then `rounds` round-robin rounds. A runner that fails
    (or is None) gets its error message instead of rounds. `only`: time just these indices."""
    idx = [i for i in (range(len(runners)) if only is None else only)]
    out: list[list[_Round] | str] = [[] for _ in runners]
    est: dict[int, float] = {}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in idx:
            if runners[i] is None:
                out[i] = "not loaded"
                continue
            try:
                est[i] = _warm(runners[i], policy)
            except Exception as e:  # noqa: BLE001 - reported per network
                out[i] = _describe(e)
        for _ in range(max(1, rounds)):
            for i in idx:
                if i not in est or isinstance(out[i], str):
                    continue
                try:
                    out[i].append(_round(runners[i], policy, est[i]))
                except Exception as e:  # noqa: BLE001
                    out[i] = _describe(e)
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


_ADDR_NO_RANDOMIZE = 0x0040000  # linux/personality.h


def _personality(persona: int) -> int:
    """personality(2): sets `persona` (0xffffffff only reads) and returns the one before; -1 where the
    call is missing (not Linux)."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).personality
    except (OSError, AttributeError):
        return -1
    fn.argtypes, fn.restype = [ctypes.c_ulong], ctypes.c_int
    return fn(persona)


@contextmanager
def fixed_address_layout():
    """Processes started inside this block run without address-space layout randomisation (Linux; the
    persona is inherited through fork and exec and decides the layout at exec, so this process's own
    layout does not change, and it is restored on leaving). Elsewhere, or with
    FASTDEEPIOT_FIXED_LAYOUT=0, a no-op. Yields whether the processes started inside run fixed (a sandbox
    may refuse the call: then they run as this process does)."""
    before, fixed = -1, False
    if sys.platform.startswith("linux") and os.environ.get("FASTDEEPIOT_FIXED_LAYOUT", "1") != "0":
        before = _personality(0xFFFFFFFF)
        if before != -1 and not before & _ADDR_NO_RANDOMIZE:
            _personality(before | _ADDR_NO_RANDOMIZE)
        else:
            before = -1  # already fixed, or the call failed: nothing to restore
        now = _personality(0xFFFFFFFF)
        fixed = now != -1 and bool(now & _ADDR_NO_RANDOMIZE)
    try:
        yield fixed
    finally:
        if before != -1:
            _personality(before)


def address_layout_condition() -> str:
    """Whether this process runs with a fixed address layout (read from /proc/self/personality)."""
    try:
        with open("/proc/self/personality") as f:
            persona = int(f.read().strip(), 16)
    except (OSError, ValueError):
        return "unknown (no /proc/self/personality)"
    return "fixed (ASLR off)" if persona & _ADDR_NO_RANDOMIZE else "randomised (ASLR on)"


def allocator_condition() -> str:
    """The allocator the timed process uses, as the environment leaves it."""
    env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"}
    if not env:
        return "glibc malloc, default thresholds (no LD_PRELOAD, no MALLOC_* settings)"
    return "as set by the environment: " + ", ".join(f"{k}={v}" for k, v in sorted(env.items()))


# ------------------------------------------------------------------------ shipping networks to a child


def _as_inputs(x) -> tuple:
    xs = x if isinstance(x, (tuple, list)) else (x,)
    return tuple(t.detach().cpu() if isinstance(t, torch.Tensor) else t for t in xs)


def _importable_by_name(module: torch.nn.Module) -> bool:
    """Can a child process unpickle this module without the caller's `__main__`?"""
    for m in module.modules():
        cls = type(m)
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
            return False
        mod = sys.modules.get(cls.__module__)
        if mod is None or getattr(mod, "__spec__", None) is None:
            return False
    return True


def _file_modules(module: torch.nn.Module) -> dict[str, str]:
    """Module name -> source file, for the modules defining the network's classes that no import path
    finds by name: loaded from a file under a name of their own (`predict path/to/file.py:factory` loads
    the file as `_fastdeepiot_user_<hash>`). The child loads each from its file before unpickling
    (`_load_file_module`), as the caller did."""
    out = {}
    for name in {type(m).__module__ for m in module.modules()}:
        spec = getattr(sys.modules.get(name), "__spec__", None)
        origin = getattr(spec, "origin", None)
        if (spec is not None and spec.has_location and isinstance(origin, str) and os.path.isfile(origin)
                and importlib.machinery.PathFinder.find_spec(name.partition(".")[0], sys.path) is None):
            out[name] = os.path.abspath(origin)
    return out


def _load_file_module(name: str, path: str) -> None:
    """Import the file `path` as module `name` (see `_file_modules`), unless a module of that name is loaded."""
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as module {name}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def _torchscript(module: torch.nn.Module, inputs: tuple) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # strict=False: a forward returning a dict or a list of tensors traces too (one example input fixes
        # the container's structure, which is all one timed call needs)
        torch.jit.save(torch.jit.trace(module, inputs, check_trace=False, strict=False), buf)
    return buf.getvalue()


def _payload(backend: Backend, module, inputs: tuple, prefer: str | None = None) -> dict:
    if isinstance(module, dict):
        return {"kind": "spec", "spec": module}
    if isinstance(backend, Backend) and hasattr(backend, "onnx_runner"):
        return {"kind": "onnx", "data": export_onnx(module, inputs), "inputs": inputs}
    if prefer != "torchscript" and _importable_by_name(module):
        try:
            return {"kind": "pickle", "data": pickle.dumps(module, protocol=pickle.HIGHEST_PROTOCOL),
                    "inputs": inputs, "files": _file_modules(module)}
        except Exception:  # noqa: BLE001 - e.g. a lambda inside: trace it instead
            pass
    return {"kind": "torchscript", "data": _torchscript(module, inputs), "inputs": inputs}


def runner_from_payload(backend: Backend, payload: dict) -> Runner:
    """Build the runner a payload describes (in the child; in-process for `module` payloads)."""
    kind = payload["kind"]
    if kind == "spec":
        return backend.network_runner(build_network(payload["spec"]), example_input(payload["spec"]))
    if kind == "module":
        return backend.network_runner(payload["module"], payload["inputs"])
    if kind == "onnx":
        return backend.onnx_runner(payload["data"], payload["inputs"])
    if kind == "pickle":
        for name, path in payload.get("files", {}).items():
            _load_file_module(name, path)
        module = pickle.loads(payload["data"])
    elif kind == "torchscript":
        module = torch.jit.load(io.BytesIO(payload["data"]))
    else:
        raise ValueError(f"unknown network payload {kind!r}")
    return backend.network_runner(module, payload["inputs"])


def send_frame(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack("<Q", len(data)))
    f.write(data)
    f.flush()


def recv_frame(f):
    head = f.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", head)
    data = f.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


def _package_root() -> Path:
    return Path(__file__).resolve().parents[2]  # the folder holding fastdeepiot/


def _child_sys_path() -> list[str]:
    """The caller's import path, made absolute (pickled networks name their classes' modules)."""
    cwd = os.getcwd()
    return [os.path.abspath(os.path.join(cwd, p)) if p else cwd for p in sys.path]


# ---------------------------------------------------------------------------------- the public API


class NetworkTimer:
    """Times whole networks on `backend` (see the module doc): in a child process of ours on backends
    that isolate networks (the CPU ones), in this process otherwise. One timer can serve many calls."""

    def __init__(self, backend: Backend | str, policy: TimerPolicy = TimerPolicy(), threads: int = 1):
        self.backend = make_backend(backend, threads=threads) if isinstance(backend, str) else backend
        self.policy = policy
        self.isolated = bool(self.backend.isolate_networks)
        self.conditions: dict = {}
        self._proc: subprocess.Popen | None = None
        self._runners: list[Runner | None] = []  # in-process only; the child holds its own
        self._kinds: list[str] = []
        self._errors: list[str | None] = []
        if self.isolated:
            self._start()
        else:
            self.conditions = {"process": "in-process", "allocator": allocator_condition()}

    # -- child process
    def _start(self) -> None:
        root = str(_package_root())
        env = dict(os.environ)
        cwd = os.getcwd()
        extra = [os.path.abspath(os.path.join(cwd, p)) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in extra if p != root])
        # cwd = our package root: `python -m` puts its working folder first on sys.path, and the
        # caller's folder may hold files named like installed packages
        with fixed_address_layout():
            # its own session: a terminal's Ctrl-C reaches the parent, which closes the pipe and so ends the
            # child; sent to the child too, it printed a KeyboardInterrupt traceback while still importing
            self._proc = subprocess.Popen([sys.executable, "-m", CHILD_MODULE], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, cwd=root, env=env, start_new_session=True)
        self.conditions = self._ask(("init", {"sys_path": _child_sys_path(), "backend": self.backend,
                                              "policy": asdict(self.policy)}))

    def _ask(self, msg):
        assert self._proc is not None
        try:
            send_frame(self._proc.stdin, msg)
            status, value = recv_frame(self._proc.stdout)
        except (EOFError, OSError, BrokenPipeError):
            code = self._proc.poll()
            raise RuntimeError(f"the network timing process died (exit code {code})") from None
        if status != "ok":
            raise RuntimeError(value)
        return value

    def alive(self) -> bool:
        return not self.isolated or (self._proc is not None and self._proc.poll() is None)

    def close(self) -> None:
        self._close_runners()
        p, self._proc = self._proc, None
        if p is None:
            return
        if p.poll() is None:
            try:
                send_frame(p.stdin, None)
            except (OSError, BrokenPipeError, ValueError):
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in (p.stdin, p.stdout):
            try:
                f.close()
            except OSError:
                pass

    def __enter__(self) -> "NetworkTimer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # -- timing
    def load(self, models: list, x) -> None:
        """Prepare `models` for `run` (replacing what was loaded). `x`: one input (tensor or tuple) for
        all, or a list with one per model. The caller's models are not changed (copies are timed)."""
        inputs = [_as_inputs(v) for v in x] if isinstance(x, list) else [_as_inputs(x)] * len(models)
        if len(inputs) != len(models):
            raise ValueError(f"{len(models)} models but {len(inputs)} inputs")
        nets = [m if isinstance(m, dict) else copy.deepcopy(m).eval() for m in models]
        self._close_runners()
        if not self.isolated:
            self._kinds, self._errors = [], []
            for n, xs in zip(nets, inputs):
                p = {"kind": "spec", "spec": n} if isinstance(n, dict) else {"kind": "module", "module": n, "inputs": xs}
                self._kinds.append(p["kind"] if p["kind"] == "spec" else "in-process")
                try:
                    self._runners.append(runner_from_payload(self.backend, p))
                    self._errors.append(None)
                except Exception as e:  # noqa: BLE001 - reported when run
                    self._runners.append(None)
                    self._errors.append(_describe(e))
            return
        payloads, ship_errors = [], []
        for n, xs in zip(nets, inputs):
            try:
                payloads.append(_payload(self.backend, n, xs))
                ship_errors.append(None)
            except Exception as e:  # noqa: BLE001 - e.g. an ONNX export that fails: reported when run
                payloads.append({"kind": "error"})
                ship_errors.append(f"cannot ship the network to the timing process: {_describe(e)}")
        errors = self._ask(("load", [p if p["kind"] != "error" else {"kind": "spec", "spec": None}
                                     for p in payloads]))
        for i, err in enumerate(errors):  # a pickle the child cannot load: ship TorchScript instead
            if err and payloads[i]["kind"] == "pickle":
                try:
                    payloads[i] = _payload(self.backend, nets[i], inputs[i], prefer="torchscript")
                    errors[i] = self._ask(("replace", i, payloads[i]))
                except Exception as e:  # noqa: BLE001
                    errors[i] = f"{err}; as TorchScript: {_describe(e)}"
        self._kinds = [p["kind"] for p in payloads]
        self._errors = [s or e for s, e in zip(ship_errors, errors)]

    def run(self, rounds: int = 5, only: list[int] | None = None) -> list[NetworkTime]:
        """Time the loaded networks (or the indices in `only`): warm-up, then `rounds` interleaved
        rounds. Raises RuntimeError if one fails."""
        idx = list(range(len(self._kinds))) if only is None else list(only)
        if self.isolated:
            res = self._ask(("run", rounds, idx))
        else:
            res = time_runners(self._runners, self.policy, rounds, only=idx)
        out = []
        for i in idx:
            r = self._errors[i] or res[i]
            if isinstance(r, str):
                raise RuntimeError(r)
            out.append(_summary(r, self._kinds[i]))
        return out

    def time(self, models: list, x, rounds: int = 5) -> list[NetworkTime]:
        """Load `models` and time them round-robin (see `load` and `run`)."""
        self.load(models, x)
        return self.run(rounds)

    def time_spec(self, spec: dict, rounds: int = PROFILE_ROUNDS) -> NetworkTime:
        """A random network given by its JSON spec (`graph.randomnets`), built where it is timed."""
        return self.time([spec], [()], rounds)[0]

    def _close_runners(self) -> None:
        for r in self._runners:
            if r is not None:
                r.close()
        self._runners = []


def time_networks(models: list, x, backend: Backend | str = "torch-cpu", threads: int = 1, rounds: int = 5,
                  policy: TimerPolicy = TimerPolicy()) -> list[NetworkTime]:
    """Several networks compared in one run: interleaved rounds in one fresh timing process."""
    with NetworkTimer(backend, policy, threads=threads) as t:
        return t.time(models, x, rounds)


def time_network(model, x, backend: Backend | str = "torch-cpu", threads: int = 1, rounds: int = 5,
                 policy: TimerPolicy = TimerPolicy()) -> NetworkTime:
    """One network's measured time (see the module doc)."""
    return time_networks([model], [x], backend, threads, rounds, policy)[0]
