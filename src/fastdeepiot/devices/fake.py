"""A deterministic backend with a fake clock, for exact and fast tests.

Its time for a layer is a known formula with a staircase in width (input and output channels padded to
a multiple of `step`, like a kernel that computes whole vector tiles), and per-step costs for recurrent layers
(a fixed one, and reading the recurrent weights again), so tests can check that the time model recovers step
positions and that compression exploits them. Nothing is executed: `time_calls` returns the formula's value
(plus optional deterministic jitter).
"""

from __future__ import annotations

import hashlib
import math

from fastdeepiot.devices.base import Backend, Runner
from fastdeepiot.families import LayerConfig

CALL_OVERHEAD_MS = 0.004  # every layer call
NETWORK_OVERHEAD_MS = 0.02  # every network call
MS_PER_FLOP = 2e-8  # 50 GFLOP/s
MS_PER_BYTE = 1e-7  # 10 GB/s
RNN_STEP_MS = 0.004
WHOLE_MODULE_MS = 0.03  # mha / transformer_encoder: the Python of a whole nn.Module's forward (issue 17)


def _padded(width: int, step: int) -> int:
    return int(math.ceil(width / step) * step)


def fake_layer_ms(config: LayerConfig, step: int = 16) -> float:
    """The fake device's exact time for one layer configuration."""
    p, f = config.params, config.features()
    flops, moved = f["flops"], f["input_bytes"] + f["output_bytes"] + f["weight_bytes"]
    if config.family in ("conv1d", "conv2d"):
        # whole tiles of `step` channels are computed, on the output and on each group's input side;
        # the rest of the last tile is wasted work
        cin_g = p["in_channels"] // p["groups"]
        flops *= _padded(p["out_channels"], step) / p["out_channels"] * _padded(cin_g, step) / cin_g
    elif config.family == "linear":
        flops *= _padded(p["out_features"], step) / p["out_features"]
        flops *= _padded(p["in_features"], step) / p["in_features"]
    # attention materialises its (seq_len x seq_len) scores; whole modules also move their intermediates
    moved += f.get("activation_bytes", f.get("score_bytes", 0.0))
    ms = CALL_OVERHEAD_MS + MS_PER_FLOP * flops + MS_PER_BYTE * moved
    if config.family in ("gru", "lstm"):  # every step also reads the recurrent weights again
        ms += RNN_STEP_MS * f["steps"] + MS_PER_BYTE * f["step_weight_bytes"]
    if config.family in ("mha", "transformer_encoder"):
        ms += WHOLE_MODULE_MS
    return ms


class _FakeRunner(Runner):
    def __init__(self, ms: float, jitter: float, key: str):
        self.ms, self.jitter, self.key, self.calls = ms, jitter, key, 0

    def run_once(self) -> None:
        self.calls += 1

    def time_calls(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            self.calls += 1
            if self.jitter:
                h = hashlib.sha256(f"{self.key}/{self.calls}".encode()).digest()
                u = int.from_bytes(h[:8], "big") / 2**64  # uniform [0, 1), reproducible
                out.append(self.ms * (1 + self.jitter * (2 * u - 1)))
            else:
                out.append(self.ms)
        return out


class FakeBackend(Backend):
    name = "fake"
    description = "deterministic formula with a width staircase and a fake clock (for tests)"

    def __init__(self, threads: int = 1, dtype: str = "float32", step: int = 16, jitter: float = 0.0,
                 run_ms: float = 0.0, module_call_ms: float = 0.0, kernel_mix: float = 0.0,
                 cache_bytes: int = 0, cold_ms_per_mb: float = 0.0, copy_ms_per_m: float = 0.0,
                 core_cache_bytes: int = 0):
        """`run_ms`: a per-run cost that a layer timed alone pays and a network pays once (like an ORT
        session run); `module_call_ms`: the cost of each container-module call inside a network (like
        eager PyTorch's nn.Module.__call__); `kernel_mix` (ms): inside a network that runs D distinct kernel
        kinds, every layer call takes kernel_mix * ln D longer than alone (like a CPU whose caches keep
        one kernel's code hot in a loop, not many kernels'); `cache_bytes`, `cold_ms_per_mb`: a cache that
        holds a layer's weights in a loop of that layer alone, but not inside a network that touches more
        than it holds (every layer's weights + the largest layer input and output), where each layer pays
        `cold_ms_per_mb` for the share 1 - cache / touched of its weights (less the share it misses alone);
        `core_cache_bytes`: a smaller cache per core, recorded beside `cache_bytes` (the last level) as a real
        CPU's L2 is; when given, it is the one the weights miss (a VM whose last level other tenants share);
        `copy_ms_per_m`: ms per million elements the network's free ops copy (`graph.calls.copied_elements`:
        axis moves and explicit copies, like ONNX Runtime's Transpose). All 0 by default."""
        super().__init__(threads, dtype)
        self.step = step
        self.jitter = jitter
        self.run_ms = run_ms
        self.module_call_ms = module_call_ms
        self.kernel_mix = kernel_mix
        self.cache_bytes = cache_bytes
        self.cold_ms_per_mb = cold_ms_per_mb
        self.copy_ms_per_m = copy_ms_per_m
        self.core_cache_bytes = core_cache_bytes

    def processor(self) -> str:
        return f"fake-step{self.step}"

    def layer_ms(self, config: LayerConfig) -> float:
        return fake_layer_ms(config, self.step)

    def network_ms(self, module, example_inputs) -> float:
        """Sum of the priced layers (slowed by `kernel_mix`) plus one network call overhead (and `run_ms`
        once, `module_call_ms` per container call, `copy_ms_per_m` per M elements copied); other free ops cost
        nothing."""
        from fastdeepiot.graph.calls import copied_elements
        from fastdeepiot.graph.extract import extract_layers

        res = extract_layers(module, example_inputs)
        layers = 0.0
        for c in res:
            if c.kind == "layer":
                layers += self.layer_ms(c.config)
            elif c.kind == "unmodelled":
                raise ValueError(f"fake backend cannot time {c.op} ({c.name})")
        calls = [c for c in res if c.kind == "layer"]
        layers += self.kernel_mix * math.log(max(1, len({c.config.kernel_kind for c in calls}))) * len(calls)
        if self.cache_bytes and self.cold_ms_per_mb:
            feats = [c.config.features() for c in calls]
            missed = self._missed(sum(f["weight_bytes"] for f in feats)
                                  + max(f["input_bytes"] + f["output_bytes"] for f in feats))
            for f in feats:
                alone = self._missed(f["weight_bytes"] + f["input_bytes"] + f["output_bytes"])
                layers += self.cold_ms_per_mb * f["weight_bytes"] / 1e6 * max(0.0, missed - alone)
        copies = self.copy_ms_per_m * copied_elements(res) if self.copy_ms_per_m else 0.0
        return NETWORK_OVERHEAD_MS + self.run_ms + self.module_call_ms * res.module_calls + layers + copies

    def _missed(self, touched: float) -> float:
        return max(0.0, 1.0 - (self.core_cache_bytes or self.cache_bytes) / touched) if touched > 0 else 0.0

    def layer_runner(self, config: LayerConfig) -> Runner:
        return _FakeRunner(self.layer_ms(config) + self.run_ms, self.jitter, config.key)

    def network_runner(self, module, example_inputs) -> Runner:
        key = repr(module)
        return _FakeRunner(self.network_ms(module, example_inputs), self.jitter, key)

    def conditions(self) -> dict:
        return {**self.fingerprint(), "fake_step": self.step, "jitter": self.jitter, "run_ms": self.run_ms,
                "module_call_ms": self.module_call_ms, "kernel_mix": self.kernel_mix, "cache_bytes": self.cache_bytes,
                "cold_ms_per_mb": self.cold_ms_per_mb, "copy_ms_per_m": self.copy_ms_per_m,
                "core_cache_bytes": self.core_cache_bytes}
