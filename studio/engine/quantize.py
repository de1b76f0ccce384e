"""Uniform (integer-grid) weight quantization, per channel or per tensor.

The default follows TFLite's int8 weight spec generalised to b bits: symmetric,
zero-point 0, narrow range [-(2**(b-1)-1), 2**(b-1)-1], one scale per output channel,
``scale = max|w| / (2**(b-1)-1)`` and round-half-to-even (``torch.round``). It agrees
with ``torch.fake_quantize_per_channel_affine`` for the same scale.

All functions take a 2-D "channel view" ``(channels, values_per_channel)`` so that the
same code serves per-channel (C rows) and per-tensor (1 row) quantization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .registry import Registry

MSE_GRID = torch.linspace(0.30, 1.0, 36)


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


def quantize_codes(view: torch.Tensor, params: UniformParams) -> torch.Tensor:
    """Integer codes, round half to even, clamped to the code range."""
    scale = params.scale.unsqueeze(1)
    zp = params.zero_point.unsqueeze(1)
    inv_scale = 1.0 / scale  # multiply by the reciprocal, as torch.fake_quantize_* does
    return torch.clamp(torch.round(view * inv_scale) + zp, params.qmin, params.qmax).to(torch.int64)


def dequantize_codes(codes: torch.Tensor, params: UniformParams) -> torch.Tensor:
    return (codes - params.zero_point.unsqueeze(1)).to(torch.float32) * params.scale.unsqueeze(1)


ClipFn = Callable[[torch.Tensor, int, bool], UniformParams]
CLIP_METHODS: Registry[ClipFn] = Registry("clip method")
register_clip = CLIP_METHODS.register


@register_clip("minmax")
def clip_minmax(view: torch.Tensor, bits: int, symmetric: bool) -> UniformParams:
    """The range of each row: scale = max|w| / qmax (symmetric) or (max - min) / (2**bits - 1)."""
    return _minmax_params(view.min(dim=1).values, view.max(dim=1).values, bits, symmetric)


@register_clip("mse")
def clip_mse(view: torch.Tensor, bits: int, symmetric: bool) -> UniformParams:
    """The shrunken range of each row with the lowest squared error, searched over MSE_GRID."""
    lo = view.min(dim=1).values
    hi = view.max(dim=1).values
    best = _minmax_params(lo, hi, bits, symmetric)
    best_err = ((dequantize_codes(quantize_codes(view, best), best) - view) ** 2).sum(dim=1)
    for alpha in MSE_GRID[:-1].tolist():
        cand = _minmax_params(lo * alpha, hi * alpha, bits, symmetric)
        err = ((dequantize_codes(quantize_codes(view, cand), cand) - view) ** 2).sum(dim=1)
        better = err < best_err
        if better.any():
            best.scale = torch.where(better, cand.scale, best.scale)
            best.zero_point = torch.where(better, cand.zero_point, best.zero_point)
            best_err = torch.where(better, err, best_err)
    return best


def choose_params(view: torch.Tensor, bits: int, symmetric: bool, clip: str) -> UniformParams:
    """Scales (and zero-points) per row of ``view`` by the clip method ``clip`` (a registry)."""
    return CLIP_METHODS.get_or_raise(clip)(view, bits, symmetric)
