"""Pruning schedules for fine-tuning: how much of a layer's final prune ratio applies at a step.

- fixed:   the plan's ratio from the first step; the mask is chosen once, on the float
           weights, and kept (the mask ``evaluate`` would use on the starting model).
- gradual: Zhu & Gupta's cubic schedule (2017), s_t = s_f * (1 - (1 - t / T)^3) from s_0 = 0,
           with the mask re-chosen by magnitude at every step of the ramp (T steps: the
           first RAMP of the epochs, at least one); the remaining epochs train at the final
           ratio, so give gradual pruning a few epochs.

A schedule returns the fraction of the final ratio in [0, 1]; masks come from
``prune.prune_mask`` with ``spec.prune * fraction``. Weights already pruned are exactly
zero, so they stay the smallest and stay pruned: the sparsity only grows. An N:M pattern
has no partial sparsity, so it applies from the first step with a ratio above zero.
"""

from __future__ import annotations

from collections.abc import Callable

from .registry import Registry

RAMP = 0.6

ScheduleFn = Callable[[int, int], float]  # (step, ramp steps) -> fraction of the final ratio
SCHEDULES: Registry[ScheduleFn] = Registry("prune schedule")
register_schedule = SCHEDULES.register


@register_schedule("fixed")
def fixed(step: int, ramp: int) -> float:
    return 1.0


@register_schedule("gradual")
def gradual(step: int, ramp: int) -> float:
    """Zhu & Gupta's cubic ramp from 0 at step 0 to 1 at step ``ramp``."""
    if step >= ramp:
        return 1.0
    return 1.0 - (1.0 - step / ramp) ** 3


def ramp_epochs(epochs: int) -> int:
    """Epochs over which the gradual schedule ramps up (it ends at an epoch boundary)."""
    return max(1, round(RAMP * epochs))


def ratio_at(schedule: str, final: float, step: int, ramp: int) -> float:
    """The prune ratio at ``step``: exactly ``final`` once the schedule is complete."""
    fraction = SCHEDULES.get_or_raise(schedule)(step, ramp)
    return final if fraction >= 1.0 else final * fraction
