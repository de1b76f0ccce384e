"""Latency of a plan in a target runtime, beside the float model in the same runtime.

``onnxruntime`` times the plan's ``onnx-fast`` file (integer kernels where the plan
allows) against the float model exported the same way; ``pytorch`` times the model
PyTorch would run: the dequantized float weights (with activation fake-quantization
when the plan has it), which is never faster than float: eager PyTorch has no low-bit
kernels. Both sides run on the same batch (the first eval batch, at most ``MAX_BATCH``
samples), interleaved round by round so that drifting load hits both alike; the figure
is the median and its noise half the interquartile range.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .compiled import CompressedModel
from .data import call_model, slice_inputs
from .errors import StudioError
from .progress import CancelFn, check

MAX_BATCH = 32
RUNTIMES = ("onnxruntime", "pytorch")


@dataclass(frozen=True)
class Latency:
    """Milliseconds per batch of the compressed and the float model in one runtime."""

    runtime: str
    file_format: str  # what was timed: "onnx-fast", or "dequantized weights" in PyTorch
    batch: int  # samples per timed call
    threads: int
    ms: float  # median
    spread_ms: float  # half the interquartile range
    float_ms: float
    float_spread_ms: float
    repeats: int

    @property
    def speedup(self) -> float:
        return self.float_ms / max(self.ms, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Latency:
        return cls(**dict(data))


def _spread(times: list[float]) -> float:
    if len(times) < 4:
        return 0.0
    q = statistics.quantiles(times, n=4)
    return (q[2] - q[0]) / 2


def _interleaved(calls: list[Callable[[], Any]], repeats: int, cancel: CancelFn | None) -> list[list[float]]:
    for call in calls:  # warm-up
        for _ in range(2):
            call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        check(cancel)
        for i, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[i].append(1000 * (time.perf_counter() - start))
    return times


def _ort_call(data: bytes, inputs: Any, threads: int) -> Callable[[], Any]:
    import onnxruntime as ort

    from .formats.onnx_meta import session_config

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    for key, value in session_config(data).items():
        options.add_session_config_entry(key, value)
    sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    if isinstance(inputs, torch.Tensor):
        feeds = {names[0]: inputs.numpy()}
    elif isinstance(inputs, Mapping):
        feeds = {k: v.numpy() for k, v in inputs.items() if k in names}
    else:
        feeds = {n: v.numpy() for n, v in zip(names, inputs)}
    return lambda: sess.run(None, feeds)


def _torch_call(model: torch.nn.Module, inputs: Any, mode: str) -> Callable[[], Any]:
    def call() -> Any:
        with torch.no_grad():
            return call_model(model, inputs, mode)

    return call


def measure_latency(
    compiled: CompressedModel,
    float_compiled: CompressedModel,
    inputs: Any,
    runtime: str = "onnxruntime",
    repeats: int = 15,
    threads: int = 1,
    cancel: CancelFn | None = None,
) -> Latency:
    """Time ``compiled`` against ``float_compiled`` on ``inputs`` (one batch) in ``runtime``."""
    if runtime not in RUNTIMES:
        raise StudioError(f"unknown runtime {runtime!r}; choose one of {list(RUNTIMES)}")
    if repeats < 3:
        raise StudioError("time at least 3 repeats, so that the median means something")
    batch = slice_inputs(inputs, 0, MAX_BATCH)
    if runtime == "onnxruntime":
        from .formats.onnx import export_onnx, export_onnx_fast

        calls = [_ort_call(export_onnx_fast(compiled), batch, threads), _ort_call(export_onnx(float_compiled), batch, threads)]
        what = "onnx-fast"
    else:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        calls = [_torch_call(compiled.simulated_model(), batch, compiled.input_mode), _torch_call(float_compiled.float_model(), batch, compiled.input_mode)]
        what = "dequantized weights"
    try:
        ours, floats = _interleaved(calls, repeats, cancel)
    finally:
        if runtime == "pytorch":
            torch.set_num_threads(previous)
    n = int(next(iter(batch.values())).shape[0]) if isinstance(batch, Mapping) else int((batch if isinstance(batch, torch.Tensor) else batch[0]).shape[0])
    return Latency(runtime, what, n, threads, statistics.median(ours), _spread(ours), statistics.median(floats), _spread(floats), repeats)
