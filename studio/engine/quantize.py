"""Uniform (integer-grid) weight quantization, per channel or per tensor.

The default follows TFLite's int8 weight spec generalised to b bits: symmetric,
zero-point 0, narrow range [-(2**(b-1)-1), 2**(b-1)-1], one scale per output channel,
``scale = max|w| / (2**(b-1)-1)`` and round-half-to-even (``torch.round``). It agrees
with ``torch.fake_quantize_per_channel_affine`` for the same scale.

All functions take a 2-D "channel view" ``(channels, values_per_channel)`` so that the
same code serves per-channel (C rows) and per-tensor (1 row) quantization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .mse_clip import MSE_GRID, search_alpha  # noqa: F401  (MSE_GRID: the candidate alphas)
from .registry import Registry


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """The integer code range: narrow signed for symmetric, unsigned for asymmetric."""
    if symmetric:
        q = 2 ** (bits - 1) - 1
        return -q, q
    return 0, 2**bits - 1


def channel_view(weight: torch.Tensor, axis: int, per_channel: bool) -> torch.Tensor:
    """``weight`` as (channels, rest) with the channel axis first, or (1, numel)."""
    if not per_channel:
        return weight.reshape(1, -1)
    return weight.movedim(axis, 0).reshape(weight.shape[axis], -1)


def from_channel_view(view: torch.Tensor, like: torch.Tensor, axis: int, per_channel: bool) -> torch.Tensor:
    if not per_channel:
        return view.reshape(like.shape)
    moved = list(like.movedim(axis, 0).shape)
    return view.reshape(moved).movedim(0, axis)


@dataclass
class UniformParams:
    scale: torch.Tensor  # (C,) float32
    zero_point: torch.Tensor  # (C,) int64; zeros when symmetric
    qmin: int
    qmax: int


def _minmax_params(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> UniformParams:
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = amax / qmax
        zero_point = torch.zeros_like(scale, dtype=torch.int64)
    else:
        lo = torch.minimum(lo, torch.zeros_like(lo))  # the range always holds 0 exactly
        hi = torch.maximum(hi, torch.zeros_like(hi))
        scale = (hi - lo) / (qmax - qmin)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero_point = torch.clamp(qmin - torch.round(lo / safe), qmin, qmax).to(torch.int64)
    # An all-zero channel (e.g. pruned away) gets scale 1: its codes are all zero anyway.
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(torch.float32)
    return UniformParams(scale, zero_point, qmin, qmax)


def code_dtype(qmin: int, qmax: int) -> torch.dtype:
    """The smallest integer dtype holding the codes: int8 or uint8 up to 8 bits."""
    if qmin >= 0 and qmax <= 255:
        return torch.uint8
    if -128 <= qmin and qmax <= 127:
        return torch.int8
    return torch.int16 if -32768 <= qmin and qmax <= 32767 else torch.int32


def quantize_codes(view: torch.Tensor, params: UniformParams) -> torch.Tensor:
    """Integer codes (``code_dtype``), round half to even, clamped to the code range."""
    inv_scale = 1.0 / params.scale.unsqueeze(1)  # multiply by the reciprocal, as torch.fake_quantize_* does
    scaled = view * inv_scale
    scaled.round_()
    scaled.add_(params.zero_point.unsqueeze(1))
    scaled.clamp_(params.qmin, params.qmax)
    return scaled.to(code_dtype(params.qmin, params.qmax))


def dequantize_codes(codes: torch.Tensor, params: UniformParams) -> torch.Tensor:
    """``(code - zero_point) * scale`` in float32 (the integer difference is exact)."""
    out = codes.to(torch.float32)
    if bool(params.zero_point.any()):  # subtracting zeros changes nothing: symmetric codes skip the pass
        out.sub_(params.zero_point.unsqueeze(1))
    out.mul_(params.scale.unsqueeze(1))
    return out


ClipFn = Callable[[torch.Tensor, int, bool], UniformParams]
CLIP_METHODS: Registry[ClipFn] = Registry("clip method")
register_clip = CLIP_METHODS.register


def _row_range(view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if view.numel():  # amin and amax: much faster than aminmax or min/max along a dimension
        return view.amin(dim=1), view.amax(dim=1)
    zeros = view.new_zeros(view.shape[0])
    return zeros, zeros


@register_clip("minmax")
def clip_minmax(view: torch.Tensor, bits: int, symmetric: bool) -> UniformParams:
    """The range of each row: scale = max|w| / qmax (symmetric) or (max - min) / (2**bits - 1)."""
    lo, hi = _row_range(view)
    return _minmax_params(lo, hi, bits, symmetric)


@register_clip("mse")
def clip_mse(view: torch.Tensor, bits: int, symmetric: bool) -> UniformParams:
    """Each row's range shrunk to ``alpha * [min, max]``, alpha in 0.30..1.00 by 0.01, picked
    for the lowest squared error on a per-row histogram and never worse than min-max (``mse_clip``)."""
    lo, hi = _row_range(view)
    base = _minmax_params(lo, hi, bits, symmetric)
    if view.numel() == 0:
        return base
    alpha = search_alpha(view, lo, hi, base, params_for=lambda a, b: _minmax_params(a, b, bits, symmetric)).to(torch.float32)
    if bool((alpha == 1.0).all()):
        return base
    return _minmax_params(lo * alpha, hi * alpha, bits, symmetric)


def choose_params(view: torch.Tensor, bits: int, symmetric: bool, clip: str) -> UniformParams:
    """Scales (and zero-points) per row of ``view`` by the clip method ``clip`` (a registry)."""
    return CLIP_METHODS.get_or_raise(clip)(view, bits, symmetric)
