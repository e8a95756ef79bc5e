"""ONNX Runtime on the CPU: each workload is exported to ONNX and run by an InferenceSession."""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import sys
import tempfile
import time
import warnings

import torch
import torch.nn as nn

from fastdeepiot.devices.base import Backend, CallableRunner, Runner
from fastdeepiot.devices.quiet import shared_guard
from fastdeepiot.families import LayerConfig

OPSET = 17


def export_onnx(module, example_inputs: tuple) -> bytes:
    """Export with the TorchScript-based exporter: ~50x faster than the dynamo exporter per layer,
    which matters when a profile exports thousands of configurations.

    A module whose forward takes more arguments than the example inputs (nn.TransformerEncoderLayer's
    `src_mask`, `is_causal=False`, ...) is exported through a wrapper that passes only the inputs: the
    exporter otherwise turns the defaults into traced values (`is_causal` a Tensor, which
    scaled_dot_product_attention refuses). The wrapper adds no node to the graph.

    The graph's inputs are named `input_0`, `input_1`, ... after their position among the example inputs:
    the exporter drops an input the graph never reads, and `onnx_runner` feeds the rest by these names."""
    modes = [(m, m.training) for m in module.modules()]  # the caller's module is left in its own mode
    module = module.eval()
    if _takes_more_than(module, len(example_inputs)):
        module = _Positional(module).eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), _no_graph_dump():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(example_inputs), buf, dynamo=False, opset_version=OPSET,
                              input_names=[f"input_{i}" for i in range(len(example_inputs))])
    finally:
        for m, training in modes:
            m.training = training
    return buf.getvalue()


@contextlib.contextmanager
def _no_graph_dump():
    """Hold back what the exporter writes to file descriptors 1 and 2 while it runs; drop it if the export
    fails. torch's TorchScript exporter always turns its ONNX log on (`setup_onnx_logging` tests the
    function `_jit_is_onnx_log_enabled`, not its result) and, when an operator has no ONNX form, prints the
    whole Torch IR graph to standard output before raising; the exception says what failed. Output of a
    successful export (none, normally) is written back."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:  # noqa: BLE001 - a closed or odd stream: nothing to flush
            pass
    saved = []
    try:
        for fd in (1, 2):
            tmp = tempfile.TemporaryFile()
            saved.append((fd, os.dup(fd), tmp))
            os.dup2(tmp.fileno(), fd)
    except OSError:  # no such descriptor (an embedding host): export as is
        pass
    ok = False
    try:
        yield
        ok = True
    finally:
        for fd, orig, tmp in reversed(saved):
            os.dup2(orig, fd)
            os.close(orig)
            if ok:
                tmp.seek(0)
                data = tmp.read()
                if data:
                    os.write(fd, data)
            tmp.close()


def _takes_more_than(module, n: int) -> bool:
    params = [p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return len(params) > n


class _Positional(nn.Module):
    """Calls the wrapped module with the example inputs only (its other arguments keep their defaults)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *xs):
        return self.inner(*xs)


class OnnxRuntimeCPU(Backend):
    name = "onnxruntime-cpu"
    isolate_networks = True
    description = "ONNX Runtime, CPUExecutionProvider, all graph optimisations, intra-op threads set"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False, "onnxruntime is not installed (pip install onnxruntime)"
        return True, ""

    # torch 2.13's TorchScript exporter exports an adaptive pool only with an integer kernel (its output
    # dividing its input), so this backend leaves the adaptive_pool family out: the time model does not
    # price it here (a network holding one is unmodelled on this backend)
    def unsupported(self, config: LayerConfig) -> str | None:
        if config.family == "adaptive_pool":
            return "torch.onnx.export(dynamo=False) exports adaptive pools only with integer kernels"
        return self.unsupported_family(config.family)

    def layer_runner(self, config: LayerConfig) -> Runner:
        fam = config.family_obj
        return self.network_runner(fam.build(config.params), fam.make_inputs(config.params))

    def session(self, onnx_bytes: bytes):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])

    def network_runner(self, module, example_inputs) -> Runner:
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        return self.onnx_runner(export_onnx(module, inputs), inputs)

    def onnx_runner(self, onnx_bytes: bytes, example_inputs) -> Runner:
        """A plain `session.run` loop over an exported network (the network timer exports once, in the
        process that holds the module, and ships these bytes to its child)."""
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        sess = self.session(onnx_bytes)
        names = [i.name for i in sess.get_inputs()]
        by_name = {f"input_{k}": x for k, x in enumerate(inputs)}
        if all(n in by_name for n in names):  # exported by export_onnx: an unused input was dropped
            feed = {n: by_name[n].detach().cpu().numpy() for n in names}
        else:
            feed = {n: x.detach().cpu().numpy() for n, x in zip(names, inputs)}
        return CallableRunner(lambda: sess.run(None, feed), time.perf_counter_ns, shared_guard())

    def conditions(self) -> dict:
        import onnxruntime as ort

        return {**super().conditions(), "onnxruntime": ort.__version__, "opset": OPSET}
