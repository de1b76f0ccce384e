"""Fake quantization of a layer's input and output activations.

``quantize_input``/``quantize_output`` are the rule (the first positional argument,
when it is a float tensor, and a tensor output); the session's runner applies them
inside its call wrappers, and ``install_act_hooks`` applies them as forward hooks on
standalone modules (exports, ``compressed_model``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .activations import ActQParams, fake_quant

ActPair = tuple[ActQParams | None, ActQParams | None]


def quantize_input(args: tuple[Any, ...], q_in: ActQParams | None) -> tuple[Any, ...] | None:
    """``args`` with the first one fake-quantized, or None when nothing changes."""
    if q_in is None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        return None
    return (fake_quant(args[0], q_in), *args[1:])


def quantize_output(out: Any, q_out: ActQParams | None) -> Any:
    """The output fake-quantized, or None when nothing changes."""
    if q_out is None or not isinstance(out, torch.Tensor):
        return None
    return fake_quant(out, q_out)


def install_act_hooks(module: nn.Module, params: Callable[[], ActPair]) -> None:
    """Quantize the module's first input and its output with ``params()`` (read at each call)."""
    module.register_forward_pre_hook(lambda mod, args: quantize_input(args, params()[0]))
    module.register_forward_hook(lambda mod, args, out: quantize_output(out, params()[1]))
