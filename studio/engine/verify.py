"""Verify an exported file in its own runtime, beside the studio's figures for its plan.

- ``.onnx``: run in ONNX Runtime (CPU); the float model is exported and timed there too.
- ``.studio``: decoded by the studio format's reader into the session's folded model.
- ``.safetensors`` (the ``torch`` export): loaded into the folded model's copy.
Every export records its plan (ONNX metadata, safetensors metadata, the studio header).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from .plan import Plan

if TYPE_CHECKING:
    from .session import Session

PLAN_KEY = "studio.plan"
REPEATS = 3


@dataclass(frozen=True)
class Verification:
    """What an exported file measures in its own runtime, beside the studio's estimate."""

    path: str
    format: str
    runtime: str
    metric_name: str
    metric: float  # measured in the runtime
    studio_metric: float  # the studio's figure for the same plan
    file_bytes: int
    estimated_bytes: int  # the studio's size_bytes for the plan
    latency_ms: float  # one pass over the eval set, median of REPEATS
    float_latency_ms: float  # the float model in the same runtime

    @property
    def metric_gap(self) -> float:
        return self.metric - self.studio_metric

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Verification":
        return cls(**dict(data))


def _time_passes(run: Callable[[], list[torch.Tensor]]) -> tuple[list[torch.Tensor], float]:
    outputs = run()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return outputs, statistics.median(times)


def _torch_runner(session: "Session", model: torch.nn.Module) -> Callable[[], list[torch.Tensor]]:
    from .data import call_model

    @torch.no_grad()
    def run() -> list[torch.Tensor]:
        return [session.output_fn(call_model(model, x)).float() for x, _ in session.batches()]

    return run


def _onnx_runner(data: bytes) -> Callable[[Any], Callable[[], list[torch.Tensor]]]:
    """Run the file in ONNX Runtime (CPU) with the session options its metadata records.

    Feeds are matched to the graph's inputs by name; inputs the traced graph does not use
    (the exporter drops them) are left out.
    """
    import onnxruntime as ort

    from .onnx_meta import session_config

    options = ort.SessionOptions()
    for key, value in session_config(data).items():
        options.add_session_config_entry(key, value)
    sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def feeds(inputs: Any) -> dict[str, Any]:
        if isinstance(inputs, torch.Tensor):
            return {names[0]: inputs.numpy()}
        if isinstance(inputs, Mapping):
            return {k: v.numpy() for k, v in inputs.items() if k in names}
        return {n: v.numpy() for n, v in zip(names, inputs)}

    def make(session: "Session") -> Callable[[], list[torch.Tensor]]:
        prepared = [feeds(x) for x, _ in session.batches()]
        return lambda: [torch.from_numpy(sess.run(None, f)[0]) for f in prepared]

    return make


def _plan_from_onnx(data: bytes) -> Plan:
    import onnx

    model = onnx.load_from_string(data)
    meta = {p.key: p.value for p in model.metadata_props}
    if PLAN_KEY not in meta:
        raise ValueError("this ONNX file was not exported by the studio (no studio.plan metadata)")
    return Plan.from_json(meta[PLAN_KEY])


def verify(session: "Session", path: str | Path) -> Verification:
    """Run an exported file on the session's eval data and compare with the studio's figures."""
    from .export import export_bytes
    from .studio_format import read

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no exported file at {path}")
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        plan = _plan_from_onnx(data)
        runtime, fmt = "onnxruntime", "onnx"
        outputs, latency = _time_passes(_onnx_runner(data)(session))
        float_onnx, _ = export_bytes(session, Plan(), "onnx")
        _, float_latency = _time_passes(_onnx_runner(float_onnx)(session))
    elif suffix in (".studio", ".safetensors"):
        if suffix == ".studio":
            decoded = read(data)
            plan, state, acts, fmt = decoded.plan, decoded.state, decoded.acts, "studio"
        else:
            from safetensors import safe_open
            from safetensors.torch import load

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            if PLAN_KEY not in meta:
                raise ValueError("this safetensors file was not exported by the studio (no studio.plan metadata)")
            plan, fmt = Plan.from_json(meta[PLAN_KEY]), "torch"
            state, acts = session.fold_state_dict(load(data)), session.activation_params(plan)
        runtime = "pytorch"
        model = session.model_from_state(state, acts)
        outputs, latency = _time_passes(_torch_runner(session, model))
        _, float_latency = _time_passes(_torch_runner(session, session.float_model()))
    else:
        raise ValueError(f"cannot verify {path.name}: use a .onnx, .studio or .safetensors export")
    metric, _ = session.score(outputs)
    studio_report = session.evaluate(plan)
    return Verification(
        path=str(path), format=fmt, runtime=runtime, metric_name=session.metric_name, metric=metric,
        studio_metric=float(studio_report.metric), file_bytes=len(data), estimated_bytes=studio_report.size_bytes,
        latency_ms=latency, float_latency_ms=float_latency,
    )


def plan_metadata(plan: Plan) -> dict[str, str]:
    return {PLAN_KEY: json.dumps(plan.to_dict(), separators=(",", ":"))}
