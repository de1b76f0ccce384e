"""Verify an exported file in its own runtime, beside the studio's figures for its plan.

Every runnable format records its plan (ONNX metadata, safetensors metadata, the
studio header). The file runs on the eval data in its runtime (``Format.run``), the
float model is timed in the same runtime, and the result is scored exactly as
``evaluate`` scores the studio's own simulation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import StudioError
from .formats import RunContext, format_for_path
from .plan import Plan
from .report import Report


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
    latency_ms: float  # one pass over the eval set, median of up to 3 timed passes (``formats.base.time_passes``)
    float_latency_ms: float  # the float model in the same runtime

    @property
    def metric_gap(self) -> float:
        return self.metric - self.studio_metric

    @property
    def speedup(self) -> float:
        """How many times faster than the float model in the same runtime."""
        return self.float_latency_ms / max(self.latency_ms, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verification:
        return cls(**dict(data))


def verify(
    path: str | Path,
    ctx: RunContext,
    score: Callable[[list[torch.Tensor]], float],
    evaluate: Callable[[Plan], Report],
) -> Verification:
    """Run the file at ``path`` on the eval data and compare with the studio's figures.

    ``score`` turns one pass's outputs into the metric; ``evaluate`` gives the studio's
    report for the plan the file records.
    """
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"no exported file at {path}")
    data = path.read_bytes()
    fmt = format_for_path(path, data)
    plan = fmt.read_plan(data)
    if fmt.run is None:
        raise StudioError(f"a {fmt.name} file does not run, so it cannot be verified")
    measured = fmt.run(data, ctx)
    report = evaluate(plan)
    return Verification(
        path=str(path), format=fmt.name, runtime=measured.runtime, metric_name=report.metric_name,
        metric=score(measured.outputs), studio_metric=float(report.metric or 0.0), file_bytes=len(data),
        estimated_bytes=report.size_bytes, latency_ms=measured.latency_ms, float_latency_ms=measured.float_latency_ms,
    )
