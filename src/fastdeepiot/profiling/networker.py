"""Whole networks are timed in a child process that runs nothing but networks.

Why: on torch-cpu, a network timed in the profiling process, right after it has built and timed
thousands of single layers, ran ~10% slower (median over 20 random networks) than the same network in
a fresh process, and ~6% slower than when only ten layers preceded it: the allocator and cache state
that thousands of differently sized layers leave behind. A user runs their network in a process of its
own, so that is how the networks the composition is fitted on (and the networks we evaluate on) are
timed. Layers stay in the profiling process; the composition maps layers-as-profiled to networks as
they run.

    with NetworkWorker(backend) as w:
        timing = w.measure(spec)              # a random network's JSON spec (graph.randomnets)
        timing = w.measure_module(module, x)  # any picklable module and input

The child is started with 'spawn' (no state inherited from the parent), builds the backend by name and
ends when the parent closes it or dies (its pipe closes).
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import asdict

from fastdeepiot.devices.base import Backend
from fastdeepiot.profiling.harness import Timing, TimingPolicy, measure_network


def _serve(conn, backend_name: str, threads: int, policy: dict) -> None:
    from fastdeepiot.devices import get_backend
    from fastdeepiot.graph.randomnets import build_network, example_input

    backend = get_backend(backend_name, threads=threads)
    pol = TimingPolicy(**policy)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            kind, payload, job_policy = job
            if kind == "spec":
                module, x = build_network(payload), example_input(payload)
            else:
                module, x = payload
            t = measure_network(backend, module, x, TimingPolicy(**job_policy) if job_policy else pol)
            conn.send(("ok", t.to_dict()))
        except Exception as e:  # reported to the parent, which counts it as a failed workload
            conn.send(("error", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"))


class NetworkWorker:
    """A child process that times whole networks on `backend` (see the module doc)."""

    def __init__(self, backend: Backend, policy: TimingPolicy = TimingPolicy()):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, backend.name, backend.threads, asdict(policy)),
                                 daemon=True, name="fastdeepiot-networks")
        self._proc.start()
        child.close()

    def _ask(self, job) -> Timing:
        try:
            self._conn.send(job)
            status, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            raise RuntimeError(f"the network timing process died (exit code {self._proc.exitcode})") from None
        if status != "ok":
            raise RuntimeError(value)
        return Timing(**value)

    def measure(self, spec: dict, policy: TimingPolicy | None = None) -> Timing:
        return self._ask(("spec", spec, asdict(policy) if policy else None))

    def measure_module(self, module, example_input, policy: TimingPolicy | None = None) -> Timing:
        return self._ask(("module", (module, example_input), asdict(policy) if policy else None))

    def alive(self) -> bool:
        return self._proc.is_alive()

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
        self._conn.close()

    def __enter__(self) -> "NetworkWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
