"""How a Session was made, as data: enough to make an equal session elsewhere.

Workers of a distributed sensitivity run build their own session from it, and recovery
judges a fine-tuned model by a session of that model made the same way (same eval
batches, metric, output function, calibration set, device, input mode). It pickles
whenever the model and the metric do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .data import Batch

if TYPE_CHECKING:
    from .session import Session


@dataclass(frozen=True)
class SessionRecipe:
    """A session's model (as the user gave it), eval batches and settings."""

    model: nn.Module
    batches: list[Batch]
    metric: Callable[..., float] | None
    output_fn: Callable[[Any], torch.Tensor]
    fold_bn: bool
    input_mode: str
    calibration_batches: list[Batch]
    device: str
    cache_bytes: int | None  # None: the default for the model (see Session)
    activation_cache_bytes: int

    def build(self) -> Session:
        from .session import Session

        return Session(
            self.model, self.batches, metric=self.metric, output_fn=self.output_fn, fold_bn=self.fold_bn,
            calibration_data=self.calibration_batches, input_mode=self.input_mode, device=self.device,
            cache_bytes=self.cache_bytes, activation_cache_bytes=self.activation_cache_bytes,
        )

    def with_model(self, model: nn.Module) -> SessionRecipe:
        return dataclasses.replace(self, model=model)
