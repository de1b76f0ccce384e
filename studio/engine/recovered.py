"""What fine-tuning returns: the settings, the per-epoch history, and the trained float model.

Every metric here is measured by the engine: ``metric`` is ``Session.evaluate(plan)`` on a
fresh session of the trained float weights, which re-compresses them exactly as always.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .errors import StudioError
from .plan import Plan
from .schedule import SCHEDULES

METHODS = ("qat", "distill")


@dataclass(frozen=True)
class FinetuneConfig:
    """The settings of one fine-tuning run (validated: a bad value raises ValueError)."""

    method: str = "qat"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    alpha: float = 0.9
    temperature: float = 4.0
    prune_schedule: str = "fixed"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise StudioError(f"method must be one of {METHODS}; got {self.method!r}")
        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise StudioError(f"{name} must be an integer; got {value!r}")
        if self.epochs < 1:
            raise StudioError(f"epochs must be at least 1; got {self.epochs}")
        if self.batch_size < 1:
            raise StudioError(f"batch_size must be at least 1; got {self.batch_size}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise StudioError(f"lr must be a positive number such as 1e-3; got {self.lr!r}")
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise StudioError(f"alpha weighs the distillation term against the task loss: give 0..1; got {self.alpha!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0):
            raise StudioError(f"temperature must be positive (e.g. 4.0); got {self.temperature!r}")
        SCHEDULES.get_or_raise(self.prune_schedule)
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "temperature", float(self.temperature))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneConfig:
        return cls(**dict(data))


@dataclass(frozen=True)
class EpochRecord:
    """One epoch. ``metric`` is the engine's evaluate() of the plan on the weights after the
    epoch; ``forward_metric`` is the training forward's (eval mode, fake-quantized) metric on
    the same eval set, for checking that training sees what evaluate measures. While a gradual
    schedule is still ramping (``at_plan`` False) the training forward prunes less than the
    plan, and the two differ by design."""

    epoch: int
    train_loss: float
    metric: float
    forward_metric: float
    sparsity: float  # fraction of the compressible weights held at zero by the masks
    at_plan: bool  # every mask at the plan's ratio at the end of the epoch
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpochRecord:
        return cls(**dict(data))


@dataclass(frozen=True)
class Recovered:
    """A fine-tuned model and how it got there.

    model:  the trained float model, in the session's folded architecture (BatchNorm
            folded into the layer before it); ``Session(model, eval_data).evaluate(plan)``
            reproduces ``metric``. Not part of ``to_dict``.
    before_metric / metric: the compressed model's metric before and after, by the engine.
    size_bytes / float_size_bytes: the compressed size and the original model's float size.
    """

    model: nn.Module | None = field(compare=False, repr=False)
    plan: Plan
    config: FinetuneConfig
    history: tuple[EpochRecord, ...]
    metric_name: str
    baseline_metric: float
    before_metric: float
    size_bytes: int
    float_size_bytes: int
    seconds: float

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def metric(self) -> float:
        return self.history[-1].metric if self.history else self.before_metric

    @property
    def compression_ratio(self) -> float:
        return self.float_size_bytes / self.size_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "config": self.config.to_dict(),
            "history": [record.to_dict() for record in self.history],
            "metric_name": self.metric_name,
            "baseline_metric": self.baseline_metric,
            "before_metric": self.before_metric,
            "size_bytes": self.size_bytes,
            "float_size_bytes": self.float_size_bytes,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], model: nn.Module | None = None) -> Recovered:
        data = dict(data)
        return cls(
            model=model,
            plan=Plan.from_dict(data.pop("plan")),
            config=FinetuneConfig.from_dict(data.pop("config")),
            history=tuple(EpochRecord.from_dict(r) for r in data.pop("history")),
            **data,
        )
