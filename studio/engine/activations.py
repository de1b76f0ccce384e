"""Activation quantization: calibration statistics, range methods, and fake quantization.

The inputs and outputs of compressible layers are quantized per tensor. 8-bit
activations are asymmetric (uint8, an integer zero-point), 16-bit ones symmetric
(int16, zero-point 0), as in TFLite's full-integer and 16x8 modes. Ranges come from
a calibration set run through the float model, by one of four methods (a registry):
min-max, percentile, MSE-optimal and KL-entropy. Quantization divides by the scale
and rounds half to even, as ONNX QuantizeLinear does, so exports reproduce it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .registry import Registry

HIST_BINS = 2048
PERCENTILE = 99.99


@dataclass(frozen=True)
class ActQParams:
    scale: float
    zero_point: int
    qmin: int
    qmax: int


def act_qrange(bits: int) -> tuple[int, int]:
    if bits == 8:
        return 0, 255
    if bits == 16:
        return -32767, 32767
    raise ValueError(f"activation bits must be 8 or 16; got {bits}")


def fake_quant(x: torch.Tensor, q: ActQParams) -> torch.Tensor:
    """``(clamp(round(x / scale) + zp, qmin, qmax) - zp) * scale``, bit for bit, in one buffer.

    Adding and then subtracting the integer zero-point around the clamp is the same as
    clamping to ``[qmin - zp, qmax - zp]``; the final ``+ 0.0`` turns a -0.0 (from
    rounding a small negative) into the +0.0 that the subtraction gave.
    """
    y = x / q.scale
    y.round_()
    y.clamp_(q.qmin - q.zero_point, q.qmax - q.zero_point)
    y.mul_(q.scale)
    y.add_(0.0)
    return y


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

    def histogram(self) -> np.ndarray:
        """The counts that ``observe_hist`` gathered (the histogram methods need them)."""
        if self.hist is None:
            raise ValueError("no histogram was observed: call observe_hist before a histogram range method")
        return self.hist

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
RANGE_ONLY_METHODS = frozenset({"minmax"})  # methods that need no histogram (one calibration pass fewer)


@register_range_method("minmax")
def range_minmax(stats: ActStats, bits: int) -> tuple[float, float]:
    return stats.lo, stats.hi


@register_range_method("percentile")
def range_percentile(stats: ActStats, bits: int) -> tuple[float, float]:
    """Clip the lowest and highest 0.01% of values."""
    hist = stats.histogram()
    cdf = np.cumsum(hist) / max(int(hist.sum()), 1)
    centers = stats.centers()
    tail = (100 - PERCENTILE) / 100
    lo = centers[min(int(np.searchsorted(cdf, tail)), len(centers) - 1)]
    hi = centers[min(int(np.searchsorted(cdf, 1 - tail)), len(centers) - 1)]
    return float(lo), float(hi)


def _candidates(stats: ActStats) -> list[tuple[float, float]]:
    return [(stats.lo * a, stats.hi * a) for a in np.linspace(0.2, 1.0, 81)]


@register_range_method("mse")
def range_mse(stats: ActStats, bits: int) -> tuple[float, float]:
    """The shrunken range with the lowest expected squared error over the histogram.

    All candidates at once: the centres of the non-empty bins fake-quantized by every
    candidate's scale and zero-point with ``fake_quant``'s formula, weighted by the bin
    counts.
    """
    candidates = _candidates(stats)
    params = [qparams_for_range(lo, hi, bits) for lo, hi in candidates]
    hist = stats.histogram()
    used = np.flatnonzero(hist)  # empty bins add nothing
    centers = stats.centers()[used][None, :]
    counts = hist[used].astype(np.float64)[None, :]
    scale = np.array([q.scale for q in params])[:, None]
    zero_point = np.array([q.zero_point for q in params], dtype=np.float64)[:, None]
    qmin, qmax = act_qrange(bits)
    codes = np.round(centers / scale)  # half to even
    codes += zero_point
    np.maximum(codes, qmin, out=codes)
    np.minimum(codes, qmax, out=codes)
    codes -= zero_point
    codes *= scale
    codes -= centers
    err = (codes * codes * counts).sum(axis=1)
    best = int(np.argmin(err))  # the first of equal errors, as a loop keeping the first would
    return candidates[best]


@register_range_method("kl")
def range_kl(stats: ActStats, bits: int) -> tuple[float, float]:
    """Entropy calibration: the range whose quantized distribution is closest in KL.

    For each candidate range, the bins inside it are split into ``2**min(bits, 8)``
    groups as ``np.array_split`` does; the reference ``p`` keeps the clipped mass in
    its two edge bins, the candidate ``q`` spreads each group's mass evenly over the
    group's non-empty bins. Every sum the divergence needs comes from prefix sums over
    the histogram, so all 81 candidates cost a few array operations on (81, levels).
    """
    candidates = _candidates(stats)
    alpha = np.linspace(0.2, 1.0, 81)
    centers = stats.centers()
    hist = stats.histogram().astype(np.float64)
    levels = 2 ** min(bits, 8)
    total = hist.sum()
    lo = np.minimum(stats.lo * alpha, 0)
    hi = np.maximum(stats.hi * alpha, 0)
    first = np.searchsorted(centers, lo, side="left")  # the bins inside [lo, hi]
    last = np.searchsorted(centers, hi, side="right") - 1
    size = last - first + 1
    valid = size >= levels
    if not valid.any() or total <= 0:
        return candidates[int(np.argmax(valid))] if valid.any() else (stats.lo, stats.hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        xlogx = np.where(hist > 0, hist * np.log(np.where(hist > 0, hist, 1.0)), 0.0)
    cum = np.concatenate([[0.0], np.cumsum(hist)])
    cum_nz = np.concatenate([[0], np.cumsum(hist > 0)])
    cum_xlogx = np.concatenate([[0.0], np.cumsum(xlogx)])
    # group g of a candidate covers bins [bounds[g], bounds[g + 1]), as np.array_split
    small, extra = size // levels, size % levels
    g = np.arange(levels + 1)
    bounds = first[:, None] + g * small[:, None] + np.minimum(g, extra[:, None])
    mass = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]
    nonzero = cum_nz[bounds[:, 1:]] - cum_nz[bounds[:, :-1]]
    q_sum = np.maximum(cum[last + 1] - cum[first], 1e-12)
    q_level = np.where(nonzero > 0, mass / np.maximum(nonzero, 1), 0.0)  # q of a non-empty bin
    log_qn = np.log(np.maximum(q_level / q_sum[:, None], 1e-12))
    # every inside bin with mass, as if p were the raw histogram: sum p (log p - log T - log qn)
    inner = ((cum_xlogx[bounds[:, 1:]] - cum_xlogx[bounds[:, :-1]]) - mass * (np.log(total) + log_qn)).sum(axis=1)
    # then the two edge bins take the clipped mass: replace their terms
    rows = np.arange(len(alpha))
    left = cum[first]
    right = total - cum[last + 1]
    kl = inner
    for edge, extra_mass, group in ((first, left, 0), (last, right, levels - 1)):
        raw = hist[edge]
        lq = log_qn[rows, group]
        lq = np.where(raw > 0, lq, np.log(1e-12))  # an empty edge bin has q = 0
        p = raw + extra_mass
        with np.errstate(divide="ignore", invalid="ignore"):
            old_term = np.where(raw > 0, raw * (np.log(np.where(raw > 0, raw, 1.0)) - np.log(total) - lq), 0.0)
            new_term = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(total) - lq), 0.0)
        kl = kl - old_term + new_term
    kl = np.where(valid, kl / total, np.inf)
    return candidates[int(np.argmin(kl))]


def choose_qparams(stats: ActStats, bits: int, method: str) -> ActQParams:
    lo, hi = RANGE_METHODS.get_or_raise(method)(stats, bits)
    return qparams_for_range(lo, hi, bits)


def act_param_bytes(bits: int) -> int:
    """Bytes stored per quantized activation tensor: a float32 scale and a zero-point of the activation's width."""
    return 4 + (1 if bits == 8 else 2)
