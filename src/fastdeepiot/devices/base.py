"""What a backend is: something that can build and time one layer configuration or one network.

A backend does not decide how many times to call a workload or when a timing is stable: that is the
harness's job (`fastdeepiot.profiling.harness`). A backend only hands out `Runner`s, each able to run its
workload once (`run_once`, for warm-up) and to time n consecutive calls with the backend's own clock
(`time_calls`): `perf_counter_ns` on the CPU, CUDA events on a GPU, a formula on the fake backend.
"""

from __future__ import annotations

import os
import platform
import sys
from abc import ABC, abstractmethod
from functools import lru_cache
from typing import Any, Callable

import torch

from fastdeepiot.errors import UserError, check_whole
from fastdeepiot.families import LayerConfig


class Runner(ABC):
    """One prepared workload (a layer or a network with its inputs) on one backend.

    `guard`: a `devices.quiet.QuietGuard` when the harness should time only while the machine runs at
    its uncontended speed (CPU backends), None where that does not apply (fake clock, CUDA events)."""

    guard = None

    @abstractmethod
    def run_once(self) -> None: ...

    @abstractmethod
    def time_calls(self, n: int) -> list[float]:
        """Run the workload n times; return each call's time in milliseconds."""

    def time_block(self, n: int) -> float:
        """Run the workload n times back to back; return the whole block's time in milliseconds (the
        network timer's unit, `profiling.timer`: one clock reading per block, as torch.utils.benchmark)."""
        return float(sum(self.time_calls(n)))

    def close(self) -> None:  # release sessions, GPU memory, ...
        pass


class CallableRunner(Runner):
    """Times a Python callable with a wall clock (CPU backends)."""

    def __init__(self, fn: Callable[[], Any], clock_ns: Callable[[], int], guard=None,
                 block: tuple[Callable[[], Any], Callable[[], Any]] | None = None):
        """fn: one call as a single call is timed. block: optional (context factory, bare call): a timed
        block runs the bare call n times inside ONE context, as torch.utils.benchmark runs its statement
        under a mode entered once (torch: `inference_mode` entered per call costs a few microseconds)."""
        self._fn = fn
        self._clock_ns = clock_ns
        self.guard = guard
        self._block = block

    def run_once(self) -> None:
        self._fn()

    def time_calls(self, n: int) -> list[float]:
        fn, clock = self._fn, self._clock_ns
        out = []
        for _ in range(n):
            t0 = clock()
            fn()
            out.append((clock() - t0) / 1e6)
        return out

    def time_block(self, n: int) -> float:
        clock = self._clock_ns
        if self._block is None:
            fn = self._fn
            t0 = clock()
            for _ in range(n):
                fn()
            return (clock() - t0) / 1e6
        context, fn = self._block
        with context():
            t0 = clock()
            for _ in range(n):
                fn()
            t1 = clock()
        return (t1 - t0) / 1e6


class Backend(ABC):
    """A device + library combination that runs PyTorch layers (e.g. torch on CPU, ONNX Runtime on CPU)."""

    name: str = ""
    description: str = ""
    # time whole networks in a child process that runs only networks (profiling.timer): CPU backends,
    # where thousands of single layers timed before leave the process ~10% slower for networks
    isolate_networks: bool = False

    def __init__(self, threads: int = 1, dtype: str = "float32"):
        threads = check_threads(threads, cores=False)  # more than the cores: `get_backend` refuses, as the CLI
        if dtype != "float32":
            raise UserError(f"dtype {dtype!r}: only float32 is supported for now")
        self.threads = threads
        self.dtype = dtype

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(available here?, why not)."""
        return True, ""

    def unsupported_family(self, family: str) -> str | None:
        """Why this backend cannot run any layer of `family` (nor a network holding one), or None."""
        return None

    def unsupported(self, config: LayerConfig) -> str | None:
        """Why this backend cannot run `config` at all (the profiler skips it), or None."""
        return self.unsupported_family(config.family)

    @abstractmethod
    def layer_runner(self, config: LayerConfig) -> Runner: ...

    @abstractmethod
    def network_runner(self, module, example_inputs: tuple) -> Runner: ...

    def processor(self) -> str:
        return cpu_model()

    def fingerprint(self) -> dict:
        """What makes two measurements comparable: the device identity. Stored once per database."""
        return {"backend": self.name, "processor": self.processor(), "threads": self.threads,
                "dtype": self.dtype}

    def conditions(self) -> dict:
        """Everything recorded with every measurement: fingerprint + library versions + platform."""
        return {**self.fingerprint(), "torch": torch.__version__, "python": sys.version.split()[0],
                "platform": platform.platform(), "logical_cpus": os.cpu_count(),
                "cache_bytes": last_level_cache_bytes(), "core_cache_bytes": core_cache_bytes()}


def check_threads(threads, option: str = "threads", *, cores: bool = True) -> int:
    """A backend's thread count: a whole number >= 1 and, with `cores`, at most this machine's cores. The one
    rule of the CLI's --threads and of `get_backend` (more threads than cores time a contended machine)."""
    threads = check_whole(threads, option, 1)
    n = os.cpu_count() or 1
    if cores and threads > n:
        raise UserError(f"{option} {threads}: this machine has {n} core(s); give 1 to {n}")
    return threads


@lru_cache(maxsize=1)
def cpu_caches() -> tuple[tuple[int, int], ...]:
    """(level, bytes) of each data or unified cache CPU 0 uses, from Linux's sysfs; () where the system does
    not say."""
    out = []
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = os.listdir(base)
    except OSError:
        return ()
    for e in entries:
        try:
            with open(os.path.join(base, e, "type")) as f:
                if f.read().strip() == "Instruction":
                    continue
            with open(os.path.join(base, e, "size")) as f:
                text = f.read().strip().upper()
            with open(os.path.join(base, e, "level")) as f:
                level = int(f.read().strip())
        except (OSError, ValueError):
            continue
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            out.append((level, int(digits) * unit))
    return tuple(out)  # (cached: callers get one shared value)


def last_level_cache_bytes() -> int:
    """The size of the CPU's largest cache (its last level, shared by the cores) in bytes; 0 where the system
    does not say. The time model's composition prices what a network larger than its cache reads from memory
    (`timemodel.model.call_terms`), so the profile records it."""
    return max((size for _, size in cpu_caches()), default=0)


def core_cache_bytes() -> int:
    """The size of the largest cache below the last level (a core's own L2) in bytes; 0 where the system does
    not say or has one level. Recorded beside the last level: on a VM that shares its last-level cache with
    other tenants, the weights a layer loops over alone stay in this cache, and a network larger than it reads
    them from the level beyond (`timemodel.model.fit_composition` chooses between the two)."""
    caches = cpu_caches()
    top = max((level for level, _ in caches), default=0)
    return max((size for level, size in caches if level < top), default=0)


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
