"""What an evaluation measured: plain, frozen, JSON-round-trippable results."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .encode import LayerSize
from .latency import Latency
from .metrics import Fidelity
from .plan import LayerSpec, Plan

Z95 = 1.96


@dataclass(frozen=True)
class Timing:
    """How an evaluation ran: how long each step took, and whether it ran downstream only.

    ``mode`` is "incremental" when some of the model was not re-run (outputs of calls
    before the first changed layer were reused), else "full"; ``reason`` says why a
    pass could not be incremental, when it could not.
    """

    mode: str
    reason: str
    compress_s: float  # compressing the layers whose spec was not cached
    forward_s: float  # running the model over the eval set
    score_s: float
    calls: int  # module calls in the pass
    computed: int  # calls that ran

    @property
    def computed_fraction(self) -> float:
        return self.computed / self.calls if self.calls else 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timing:
        return cls(**dict(data))


@dataclass(frozen=True)
class LayerReport:
    """One layer's compressed size by part, and its weight error."""

    name: str
    kind: str
    spec: LayerSpec
    params: int
    float_bytes: int  # the layer's weight and bias in float32
    size: LayerSize
    sqnr_db: float | None  # None: the stored weight is exact
    sparsity: float  # fraction of weights pruned
    folded_bn: str | None = None

    @property
    def codes(self) -> int:
        return self.size.codes

    @property
    def scales(self) -> int:
        return self.size.scales

    @property
    def index(self) -> int:
        return self.size.index

    @property
    def other(self) -> int:
        return self.size.other

    @property
    def total(self) -> int:
        return self.size.total

    @classmethod
    def of(cls, info: Any, result: Any, float_bytes: int) -> LayerReport:
        """The report of a compressed weight (``CompressedWeight``) of layer ``info`` (``LayerInfo``)."""
        return cls(info.name, info.kind, result.spec, info.params, float_bytes, result.size, result.sqnr_db, result.sparsity, info.folded_bn)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "spec": self.spec.to_dict(),
            "params": self.params,
            "float_bytes": self.float_bytes,
            "size": self.size.to_dict(),
            "sqnr_db": self.sqnr_db,
            "sparsity": self.sparsity,
            "folded_bn": self.folded_bn,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerReport:
        data = dict(data)
        data["spec"] = LayerSpec.from_dict(data["spec"])
        data["size"] = LayerSize.from_dict(data["size"])
        return cls(**data)


@dataclass(frozen=True)
class Report:
    """The result of ``Session.evaluate`` (or, with ``measured=False``, of ``Session.size``).

    ``size_bytes`` is the size of the studio file: every layer's parts, the other
    tensors (``rest_bytes``) and the file's own header (``container_bytes``).

    ``metric`` is None when only sizes were computed. Accuracy-like metrics are
    fractions in [0, 1]. ``delta_stderr`` is the paired standard error of ``delta``
    over the eval samples (None for custom metrics); a delta within
    ``1.96 * delta_stderr`` of zero is within the noise of a finite eval set.
    """

    plan: Plan
    layers: dict[str, LayerReport]
    size_bytes: int
    float_size_bytes: int
    rest_bytes: int  # parameters and buffers outside the compressible layers
    metric_name: str
    baseline_metric: float
    metric: float | None = None
    n_samples: int = 0
    delta_stderr: float | None = None
    fidelity: Fidelity | None = None
    seconds: float = 0.0
    container_bytes: int = 0  # the studio file's magic, length and header
    timing: Timing | None = None  # how the evaluation ran (None for sizes only)
    latency: Latency | None = None  # measured in a runtime when asked for (Session.latency)

    @classmethod
    def assemble(cls, plan: Plan, layers: dict[str, LayerReport], *, rest_bytes: int, container_bytes: int, **fields: Any) -> Report:
        """A report whose ``size_bytes`` is its layers' bytes, the other tensors and the container."""
        size = sum(layer.total for layer in layers.values()) + rest_bytes + container_bytes
        return cls(plan=plan, layers=layers, size_bytes=size, rest_bytes=rest_bytes, container_bytes=container_bytes, **fields)

    @property
    def measured(self) -> bool:
        return self.metric is not None

    @property
    def delta(self) -> float | None:
        return None if self.metric is None else self.metric - self.baseline_metric

    @property
    def compression_ratio(self) -> float:
        return self.float_size_bytes / max(self.size_bytes, 1)

    @property
    def delta_within_noise(self) -> bool | None:
        if self.delta is None or self.delta_stderr is None:
            return None
        return abs(self.delta) <= Z95 * self.delta_stderr

    def parts(self) -> dict[str, int]:
        """Bytes of the whole model by part; they add up to ``size_bytes``."""
        parts = {"codes": 0, "scales": 0, "index": 0, "other": self.rest_bytes + self.container_bytes}
        for layer in self.layers.values():
            parts["codes"] += layer.codes
            parts["scales"] += layer.scales
            parts["index"] += layer.index
            parts["other"] += layer.other
        return parts

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "layers": {name: layer.to_dict() for name, layer in self.layers.items()},
            "size_bytes": self.size_bytes,
            "float_size_bytes": self.float_size_bytes,
            "rest_bytes": self.rest_bytes,
            "metric_name": self.metric_name,
            "baseline_metric": self.baseline_metric,
            "metric": self.metric,
            "n_samples": self.n_samples,
            "delta_stderr": self.delta_stderr,
            "fidelity": None if self.fidelity is None else self.fidelity.to_dict(),
            "seconds": self.seconds,
            "container_bytes": self.container_bytes,
            "timing": None if self.timing is None else self.timing.to_dict(),
            "latency": None if self.latency is None else self.latency.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        data = dict(data)
        data["plan"] = Plan.from_dict(data["plan"])
        data["layers"] = {k: LayerReport.from_dict(v) for k, v in data["layers"].items()}
        if data.get("fidelity") is not None:
            data["fidelity"] = Fidelity.from_dict(data["fidelity"])
        if data.get("timing") is not None:
            data["timing"] = Timing.from_dict(data["timing"])
        if data.get("latency") is not None:
            data["latency"] = Latency.from_dict(data["latency"])
        return cls(**data)
