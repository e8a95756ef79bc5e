"""PyTorch eager backends: torch-cpu and torch-cuda."""

from __future__ import annotations

import time

from fastdeepiot.devices.base import Backend, CallableRunner, Runner
from fastdeepiot.devices.quiet import shared_guard
from fastdeepiot.families import LayerConfig


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


class TorchCPU(Backend):
    name = "torch-cpu"
    isolate_networks = True
    description = "PyTorch eager on the CPU, torch.inference_mode, intra-op threads set"

    def _set_threads(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def layer_runner(self, config: LayerConfig) -> Runner:
        fam = config.family_obj
        return self.network_runner(fam.build(config.params), fam.make_inputs(config.params))

    def network_runner(self, module, example_inputs) -> Runner:
        import torch

        self._set_threads()
        module = module.eval()
        inputs = _as_tuple(example_inputs)

        def call():
            with torch.inference_mode():
                module(*inputs)

        def bare():
            module(*inputs)

        return CallableRunner(call, time.perf_counter_ns, shared_guard(), block=(torch.inference_mode, bare))

    def conditions(self) -> dict:
        import torch

        self._set_threads()  # the recorded thread count is the one measurements run with
        return {**super().conditions(), "torch_threads": torch.get_num_threads(),
                "mkldnn": bool(torch.backends.mkldnn.is_available())}


class _CudaRunner(Runner):
    """Times calls with CUDA events: the GPU's own clock, not the host's launch time."""

    def __init__(self, fn):
        import torch

        self._fn = fn
        self._torch = torch

    def run_once(self) -> None:
        self._fn()
        self._torch.cuda.synchronize()

    def time_calls(self, n: int) -> list[float]:
        torch = self._torch
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        torch.cuda.synchronize()
        for s, e in zip(starts, ends):
            s.record()
            self._fn()
            e.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]

    def close(self) -> None:
        self._torch.cuda.empty_cache()


class TorchCUDA(Backend):
    name = "torch-cuda"
    description = "PyTorch eager on a CUDA GPU, timed with CUDA events"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA device (torch.cuda.is_available() is False)"
        return True, ""

    def processor(self) -> str:
        import torch

        return torch.cuda.get_device_name(0)

    def layer_runner(self, config: LayerConfig) -> Runner:
        fam = config.family_obj
        return self.network_runner(fam.build(config.params), fam.make_inputs(config.params))

    def network_runner(self, module, example_inputs) -> Runner:
        import torch

        module = module.eval().cuda()
        inputs = tuple(x.cuda() for x in _as_tuple(example_inputs))

        def call():
            with torch.inference_mode():
                module(*inputs)

        return _CudaRunner(call)

    def conditions(self) -> dict:
        import torch

        return {**super().conditions(), "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}
