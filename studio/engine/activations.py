"""Activation quantization: calibration statistics, range methods, and fake quantization.

The inputs and outputs of compressible layers are quantized per tensor. 8-bit
activations are asymmetric (uint8, an integer zero-point), 16-bit ones symmetric
(int16, zero-point 0), as in TFLite's full-integer and 16x8 modes. Ranges come from
a calibration set run through the float model, by one of four methods (a registry):
min-max, percentile, MSE-optimal and KL-entropy. Quantization divides by the scale
and rounds half to even, as ONNX QuantizeLinear does, so exports reproduce it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .registry import Registry

HIST_BINS = 2048
PERCENTILE = 99.99
ACT_BITS = (8, 16)


@dataclass(frozen=True)
class ActQParams:
    scale: float
    zero_point: int
    qmin: int
    qmax: int

    @property
    def stored_bytes(self) -> int:
        """A float32 scale and a zero-point of the activation's own width."""
        return 4 + (1 if self.qmax <= 255 else 2)


def act_qrange(bits: int) -> tuple[int, int]:
    if bits == 8:
        return 0, 255
    if bits == 16:
        return -32767, 32767
    raise ValueError(f"activation bits must be 8 or 16; got {bits}")


def fake_quant(x: torch.Tensor, q: ActQParams) -> torch.Tensor:
    codes = torch.clamp(torch.round(x / q.scale) + q.zero_point, q.qmin, q.qmax)
    return (codes - q.zero_point) * q.scale


def qparams_for_range(lo: float, hi: float, bits: int) -> ActQParams:
    qmin, qmax = act_qrange(bits)
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # the range always holds 0 exactly
    if bits == 16:
        amax = max(abs(lo), abs(hi))
        scale = amax / qmax if amax > 0 else 1.0
        return ActQParams(float(np.float32(scale)), 0, qmin, qmax)
    scale = (hi - lo) / (qmax - qmin) if hi > lo else 1.0
    scale = float(np.float32(scale))
    zero_point = int(np.clip(round(qmin - lo / scale), qmin, qmax))
    return ActQParams(scale, zero_point, qmin, qmax)


@dataclass
class ActStats:
    """Running statistics of one activation tensor over the calibration set."""

    lo: float = float("inf")
    hi: float = float("-inf")
    hist: np.ndarray | None = None

    def observe_range(self, x: torch.Tensor) -> None:
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))

    def observe_hist(self, x: torch.Tensor) -> None:
        lo, hi = self._bounds()
        counts = torch.histc(x.float().flatten(), HIST_BINS, lo, hi).numpy().astype(np.int64)
        self.hist = counts if self.hist is None else self.hist + counts

    def _bounds(self) -> tuple[float, float]:
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        return (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)

    def centers(self) -> np.ndarray:
        lo, hi = self._bounds()
        edges = np.linspace(lo, hi, HIST_BINS + 1)
        return (edges[:-1] + edges[1:]) / 2


RangeFn = Callable[[ActStats, int], tuple[float, float]]
RANGE_METHODS: Registry[RangeFn] = Registry("calibration method")
register_range_method = RANGE_METHODS.register


@register_range_method("minmax")
def range_minmax(stats: ActStats, bits: int) -> tuple[float, float]:
    return stats.lo, stats.hi


@register_range_method("percentile")
def range_percentile(stats: ActStats, bits: int) -> tuple[float, float]:
    """Clip the lowest and highest 0.01% of values."""
    cdf = np.cumsum(stats.hist) / max(stats.hist.sum(), 1)
    centers = stats.centers()
    tail = (100 - PERCENTILE) / 100
    lo = centers[min(np.searchsorted(cdf, tail), len(centers) - 1)]
    hi = centers[min(np.searchsorted(cdf, 1 - tail), len(centers) - 1)]
    return float(lo), float(hi)


def _candidates(stats: ActStats) -> list[tuple[float, float]]:
    return [(stats.lo * a, stats.hi * a) for a in np.linspace(0.2, 1.0, 81)]


@register_range_method("mse")
def range_mse(stats: ActStats, bits: int) -> tuple[float, float]:
    """The shrunken range with the lowest expected squared error over the histogram."""
    centers = torch.from_numpy(stats.centers())
    counts = torch.from_numpy(stats.hist).double()
    best, best_err = (stats.lo, stats.hi), float("inf")
    for lo, hi in _candidates(stats):
        q = qparams_for_range(lo, hi, bits)
        err = float((counts * (fake_quant(centers, q) - centers) ** 2).sum())
        if err < best_err:
            best, best_err = (lo, hi), err
    return best


@register_range_method("kl")
def range_kl(stats: ActStats, bits: int) -> tuple[float, float]:
    """Entropy calibration: the range whose quantized distribution is closest in KL."""
    centers = stats.centers()
    hist = stats.hist.astype(np.float64)
    levels = 2 ** min(bits, 8)
    best, best_kl = (stats.lo, stats.hi), float("inf")
    for lo, hi in _candidates(stats):
        inside = (centers >= min(lo, 0)) & (centers <= max(hi, 0))
        idx = np.flatnonzero(inside)
        if len(idx) < levels:
            continue
        raw = hist[idx]
        p = raw.copy()  # the reference keeps the clipped mass in its edge bins...
        p[0] += hist[: idx[0]].sum()
        p[-1] += hist[idx[-1] + 1 :].sum()
        q = np.zeros_like(p)  # ...the quantized candidate does not, so clipping costs
        for g in np.array_split(np.arange(len(raw)), levels):
            nonzero = raw[g] > 0
            if nonzero.any():
                q[g[nonzero]] = raw[g].sum() / nonzero.sum()
        mask = p > 0
        pn = p[mask] / p.sum()
        qn = np.maximum(q[mask] / max(q.sum(), 1e-12), 1e-12)
        kl = float((pn * np.log(pn / qn)).sum())
        if kl < best_kl:
            best, best_kl = (lo, hi), kl
    return best


def choose_qparams(stats: ActStats, bits: int, method: str) -> ActQParams:
    lo, hi = RANGE_METHODS.get_or_raise(method)(stats, bits)
    return qparams_for_range(lo, hi, bits)


def act_param_bytes(bits: int) -> int:
    """Bytes stored per quantized activation tensor: a float32 scale and a zero-point of the activation's width."""
    return 4 + (1 if bits == 8 else 2)
