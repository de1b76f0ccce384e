"""Measurements the notebooks show and check answers against, all through the public API.

Each function evaluates real plans on the session's eval set (or asks for sizes only);
nothing here is an estimate unless its name says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..engine import LayerSpec, Plan, Session

ProgressFn = Callable[[int, int], None]
Z95 = 1.96  # two-sided 95% normal quantile, as the Studio's Metrics panel uses


@dataclass(frozen=True)
class LayerCost:
    """What compressing one layer alone (the rest in float) does to the metric."""

    layer: str
    spec: LayerSpec
    metric: float
    baseline_metric: float
    delta_stderr: float | None
    size_bytes: int

    @property
    def delta(self) -> float:
        return self.metric - self.baseline_metric

    @property
    def half_width(self) -> float | None:
        """Half-width of the 95% interval of ``delta`` (paired test), None for custom metrics."""
        return None if self.delta_stderr is None else Z95 * self.delta_stderr

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerCost:
        data = dict(data)
        data["spec"] = LayerSpec.from_dict(data["spec"])
        return cls(**data)


def layer_costs(session: Session, spec: LayerSpec, progress: ProgressFn | None = None) -> list[LayerCost]:
    """Compress each layer alone with ``spec`` and measure: the accuracy cost per layer."""
    costs = []
    names = session.layer_names
    for i, name in enumerate(names):
        report = session.evaluate(Plan().with_layer(name, spec))
        if report.metric is None:  # evaluate always measures; a size-only report here is a bug
            raise RuntimeError(f"session.evaluate returned no metric for {name}")
        costs.append(LayerCost(name, spec, report.metric, report.baseline_metric, report.delta_stderr, report.size_bytes))
        if progress is not None:
            progress(i + 1, len(names))
    return costs


def most_sensitive(costs: list[LayerCost]) -> str:
    """The layer whose compression costs the most (the lowest metric)."""
    if not costs:
        raise ValueError("no layer costs were measured; call layer_costs(session, spec) first")
    return min(costs, key=lambda c: c.metric).layer


def sqnr_per_bit(session: Session, layer: str, bits: tuple[int, ...] = (3, 4, 5, 6, 7, 8), **spec: Any) -> float:
    """The layer's average SQNR gain per extra bit over ``bits`` (dB per bit)."""
    if len(bits) < 2:
        raise ValueError("give at least two bit widths to compare, e.g. bits=(4, 8)")
    values = []
    for b in bits:
        db = session.compressed(layer, LayerSpec(bits=b, **spec)).sqnr_db
        if db is None:
            raise ValueError(f"{layer} is exact at {b} bits, so SQNR has no finite value; compare other bit widths")
        values.append(db)
    return (values[-1] - values[0]) / (bits[-1] - bits[0])


def granularity_gap(session: Session, bits: int = 4) -> dict[str, float]:
    """Per layer: SQNR per channel minus SQNR per tensor, in dB, at ``bits``."""
    gaps = {}
    for name in session.layer_names:
        channel = session.compressed(name, LayerSpec(bits=bits)).sqnr_db
        tensor = session.compressed(name, LayerSpec(bits=bits, granularity="tensor")).sqnr_db
        if channel is None or tensor is None:
            continue
        gaps[name] = channel - tensor
    return gaps


def one_layer_back(session: Session, bits: int, back_to: int = 8) -> dict[str, float]:
    """Every layer at ``bits``, then each layer alone put back to ``back_to`` bits: the
    measured metric per layer put back (which layer's bits buy the most accuracy back)."""
    metrics = {}
    for name in session.layer_names:
        report = session.evaluate(Plan.uniform(bits=bits).with_layer(name, bits=back_to))
        if report.metric is None:  # evaluate always measures; anything else is a bug
            raise RuntimeError(f"session.evaluate returned no metric for {name}")
        metrics[name] = report.metric
    return metrics
