"""Fake-quantization hooks on a layer's input and output activations."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .activations import ActQParams, fake_quant

ActPair = tuple[ActQParams | None, ActQParams | None]


def install_act_hooks(module: nn.Module, params: Callable[[], ActPair]) -> None:
    """Quantize the module's first input and its output with ``params()`` (read at each call)."""

    def pre(mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        q_in = params()[0]
        if q_in is None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return None
        return (fake_quant(args[0], q_in), *args[1:])

    def post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        q_out = params()[1]
        if q_out is None or not isinstance(out, torch.Tensor):
            return None
        return fake_quant(out, q_out)

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)
