"""MSE clipping: per row, the shrunken range whose quantization has the lowest squared error.

The candidates are ``alpha * [lo, hi]`` for ``alpha`` in ``MSE_GRID`` (0.30..1.00 in
steps of 0.01), and min-max itself (alpha = 1) wins ties. Rather than quantizing the
weight once per candidate, each row is binned once, in units of its min-max step
(``u = w / scale``), into a fine histogram holding each bin's count and sum. Every
candidate's error is then a matrix product over the bins:

    err(alpha) - sum(u**2) = sum_b q_b * (q_b * count_b - 2 * sum_b)

where ``q_b`` is the level that the bin's centre quantizes to. Bin edges sit on the
min-max rounding boundaries, so alpha = 1 is counted exactly; for another alpha only
bins that straddle one of its rounding boundaries can be off, by at most
``2 * alpha * bin_width`` per weight in them. A row whose best candidate does not beat
min-max by more than that bound is checked by quantizing it exactly both ways. So the
result is never worse than min-max, and the weight is quantized exactly once afterwards
(by the caller) with the chosen scale.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

MSE_GRID = torch.linspace(0.30, 1.0, 71)
TARGET_BINS = 2048  # bins per row, about
TILE = 1 << 18  # weights binned at a time
CHUNK = 1 << 20  # weights quantized at a time when checking rows exactly

ParamsFn = Callable[[torch.Tensor, torch.Tensor], "object"]


def search_alpha(view: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, base: "object", params_for: ParamsFn, exact_err: Callable[[torch.Tensor, "object"], torch.Tensor]) -> torch.Tensor:
    """The chosen alpha per row (1.0 keeps min-max).

    ``base`` holds the min-max UniformParams (scale, zero_point, qmin, qmax);
    ``params_for(lo, hi)`` makes params for a range; ``exact_err(rows_view, params)``
    is the exact squared error per row.
    """
    rows, cols = view.shape
    qmin, qmax = base.qmin, base.qmax
    symmetric = qmin == -qmax
    levels = qmax + 1 if symmetric else qmax - qmin + 1
    per_unit = max(4, TARGET_BINS // levels)  # bins per min-max step
    n_bins = per_unit * levels
    alphas = np.concatenate([[1.0], MSE_GRID[:-1].double().numpy()])
    inv_scale = (1.0 / base.scale).unsqueeze(1)  # as quantize_codes
    zero_point = base.zero_point
    view = view.contiguous()
    rows_per = max(1, min(TILE // max(cols, 1), (1 << 17) // n_bins))
    cols_per = cols if rows_per > 1 else min(cols, TILE)
    tables: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    chosen = torch.ones(rows, dtype=torch.float64)
    ambiguous = torch.zeros(rows, dtype=torch.bool)
    # buffers reused by every tile: fresh allocations would cost more than the arithmetic
    buf_u = torch.empty(rows_per * cols_per, dtype=torch.float32)
    buf_v = torch.empty(rows_per * cols_per, dtype=torch.float32)
    buf_b = torch.empty(rows_per * cols_per, dtype=torch.int64)
    buf_w = np.empty(rows_per * cols_per, dtype=np.float64)
    offsets = (torch.arange(rows_per, dtype=torch.int64) * n_bins).unsqueeze(1)
    shift = 0.5 * per_unit if symmetric else (0.5 - qmin) * per_unit
    for r0 in range(0, rows, rows_per):
        r1 = min(rows, r0 + rows_per)
        nr = r1 - r0
        count = np.zeros(nr * n_bins)
        total = np.zeros(nr * n_bins)
        zp_shift = (zero_point[r0:r1].to(torch.float32) * per_unit).unsqueeze(1)
        for c0 in range(0, cols, cols_per):
            nc = min(cols, c0 + cols_per) - c0
            u = buf_u[: nr * nc].view(nr, nc)
            torch.mul(view[r0:r1, c0 : c0 + nc], inv_scale[r0:r1], out=u)  # as quantize_codes
            v = buf_v[: nr * nc].view(nr, nc)
            if symmetric:
                u.abs_()
                torch.mul(u, per_unit, out=v)  # |u| from the first bin edge, -0.5
            else:
                torch.mul(u, per_unit, out=v)
                v.add_(zp_shift)  # u + zp from qmin - 0.5
            v.add_(shift)
            b = buf_b[: nr * nc].view(nr, nc)
            b.copy_(v)  # truncates: v >= 0 but for rounding
            b.clamp_(0, n_bins - 1)
            b.add_(offsets[:nr])
            flat = b.numpy().reshape(-1)
            weights = buf_w[: nr * nc]
            weights[:] = u.numpy().reshape(-1)
            count += np.bincount(flat, minlength=len(count))
            total += np.bincount(flat, weights=weights, minlength=len(total))
        count_t = torch.from_numpy(count.reshape(r1 - r0, n_bins))
        total_t = torch.from_numpy(total.reshape(r1 - r0, n_bins))
        zps = zero_point[r0:r1]
        for zp in torch.unique(zps).tolist():
            if zp not in tables:
                tables[zp] = _tables(alphas, per_unit, n_bins, qmin, qmax, zp, symmetric)
            q1, q2, straddle = tables[zp]
            sel = torch.nonzero(zps == zp).squeeze(1)
            c, t = count_t[sel], total_t[sel]
            est = c @ q2 - 2.0 * (t @ q1)  # (rows, candidates)
            bound = (c @ straddle) * torch.from_numpy(2.0 * alphas / per_unit)
            best = torch.argmin(est, dim=1)  # the first of equals: min-max first
            gain = est[:, 0] - est.gather(1, best.unsqueeze(1)).squeeze(1)
            slack = bound.gather(1, best.unsqueeze(1)).squeeze(1) + 1e-9 * est[:, 0].abs()
            chosen[r0 + sel] = torch.from_numpy(alphas)[best]
            ambiguous[r0 + sel] = (best > 0) & (gain <= slack)
    # the search assumed min-max's zero-point; where float rounding gives another, check exactly
    shrunk = chosen < 1.0
    if bool(shrunk.any()):
        alpha = chosen.to(torch.float32)
        ambiguous |= shrunk & (params_for(lo * alpha, hi * alpha).zero_point != zero_point)
    _settle(view, lo, hi, chosen, ambiguous, base, params_for, exact_err)
    return chosen


def _tables(alphas: np.ndarray, per_unit: int, n_bins: int, qmin: int, qmax: int, zp: int, symmetric: bool):  # noqa: ANN202
    """Per bin and candidate: the level of the bin's centre (q), q squared, and whether
    the bin straddles one of the candidate's rounding boundaries (in units of the
    min-max step)."""
    edges = np.arange(n_bins + 1) / per_unit - 0.5  # |u| (symmetric) or u + zp - qmin
    if symmetric:
        lo_code, hi_code, shift = 0, qmax, 0.0
    else:
        lo_code, hi_code, shift = qmin - zp, qmax - zp, qmin - zp  # codes relative to zp; u = v + shift
    edges_u = edges + shift
    centres = (edges_u[:-1] + edges_u[1:]) / 2
    a = alphas[None, :]
    q = np.clip(np.round(centres[:, None] / a), lo_code, hi_code) * a
    # a straddled bin holds a boundary (k + 1/2) * alpha strictly inside
    k_lo = np.floor(edges_u[:-1, None] / a - 0.5)  # boundaries k in (k_lo, k_hi] lie in the bin
    k_hi = np.floor(edges_u[1:, None] / a - 0.5)
    straddle = (np.maximum(k_lo + 1, lo_code) <= np.minimum(k_hi, hi_code - 1)).astype(np.float64)
    # neighbours too: a weight's bin may be one off where float rounding meets an edge
    straddle = np.maximum(straddle, np.maximum(np.roll(straddle, 1, axis=0), np.roll(straddle, -1, axis=0)))
    return torch.from_numpy(q), torch.from_numpy(q * q), torch.from_numpy(straddle)


def _settle(view, lo, hi, chosen, ambiguous, base, params_for, exact_err) -> None:  # noqa: ANN001
    """Rows whose winner is within the histogram's error bound of min-max: quantize both ways."""
    rows = torch.nonzero(ambiguous).squeeze(1)
    if rows.numel() == 0:
        return
    for start in range(0, rows.numel(), max(1, CHUNK // max(view.shape[1], 1))):
        sel = rows[start : start + max(1, CHUNK // max(view.shape[1], 1))]
        part = view[sel]
        alpha = chosen[sel].to(torch.float32)
        cand = params_for(lo[sel] * alpha, hi[sel] * alpha)
        minmax = params_for(lo[sel], hi[sel])
        worse = exact_err(part, cand) >= exact_err(part, minmax)
        chosen[sel[worse]] = 1.0
