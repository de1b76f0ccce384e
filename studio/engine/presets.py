"""Named plans for the standard techniques, one call each: ``Plan.preset(name, session)``.

- dynamic-range:    int8 weights (per channel, symmetric), float activations (TFLite's default)
- full-integer:     int8 weights and int8 activations with calibration
- float16:          float16 weights
- 16x8:             int8 weights, int16 activations
- deep-compression: magnitude pruning, then k-means weight sharing, then Huffman coding
                    without the paper's retraining, so milder (measured on the samples): convolutions 20%
                    pruned with 6-bit codebooks, other layers 30% pruned with 5-bit ones
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .plan import LayerSpec, Plan
from .registry import Registry

if TYPE_CHECKING:
    from .session import Session

PresetFn = Callable[["Session | None"], Plan]
PRESETS: Registry[PresetFn] = Registry("preset")
register_preset = PRESETS.register


@register_preset("dynamic-range")
def dynamic_range(session: Session | None) -> Plan:
    return Plan.uniform(8)


@register_preset("full-integer")
def full_integer(session: Session | None) -> Plan:
    return Plan.uniform(8, act_bits=8)


@register_preset("float16")
def float16(session: Session | None) -> Plan:
    return Plan.uniform(16)


@register_preset("16x8")
def sixteen_by_eight(session: Session | None) -> Plan:
    return Plan.uniform(8, act_bits=16)


@register_preset("deep-compression")
def deep_compression(session: Session | None) -> Plan:
    conv = LayerSpec(bits=6, prune=0.2, cluster=True)
    dense = LayerSpec(bits=5, prune=0.3, cluster=True)
    plan = Plan(default=dense, huffman=True)
    if session is not None:
        for info in session.layers:
            if info.layer_kind.family == "conv":
                plan = plan.with_layer(info.name, conv)
    return plan


def preset(name: str, session: Session | None = None) -> Plan:
    return PRESETS.get_or_raise(name)(session)
