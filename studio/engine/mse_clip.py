"""MSE clipping: per row, the shrunken range whose quantization has the lowest squared error.

The candidates are ``alpha * [lo, hi]`` for ``alpha`` in ``MSE_GRID`` (0.30..1.00 in
steps of 0.01), and min-max itself (alpha = 1) wins ties. Rather than quantizing the
weight once per candidate, each row is binned once, in units of its min-max step
(``u = w / scale``), into a fine histogram holding each bin's count and sum. Every
candidate's error is then one matrix product over the bins:

    err(alpha) - sum(u**2) = sum_b q_b * (q_b * count_b - 2 * sum_b)

where ``q_b`` is the level that the bin's weights quantize to. Bin edges sit on the
min-max rounding boundaries, so alpha = 1 is counted exactly; for another alpha a bin
may straddle one of its rounding boundaries, and its weights are then taken as spread
evenly in the bin, which may be off by at most ``2 * alpha * bin_width`` per weight in
such bins (plus a hair for float rounding). A row whose winner does not beat min-max
by more than that bound is quantized once, exactly, with the winner and compared with
min-max's exact error. So the result is never worse than
min-max, and the caller quantizes the weight once more, with the chosen scale. Weights of at most ``EXACT_WEIGHTS`` values are simply quantized with
every candidate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # quantize imports this module
    from .quantize import UniformParams

ParamsFor = Callable[[torch.Tensor, torch.Tensor], "UniformParams"]
MSE_GRID = torch.linspace(0.30, 1.0, 71)
ALPHAS = np.concatenate([[1.0], MSE_GRID[:-1].double().numpy()])  # min-max first: it wins ties
ALPHAS_T = torch.from_numpy(ALPHAS)
TARGET_BINS = 1024  # bins per row, about
TILE = 1 << 18  # weights binned at a time
EXACT_WEIGHTS = 1 << 15  # a weight this small is searched by quantizing it with every candidate
CHUNK = 1 << 20  # weights quantized at a time when checking rows exactly
ROUNDING = 1e-3  # how far (in bins) float rounding may move a weight across a bin edge, at most
MARGIN = 1e-6  # a near tie in the matrix product (relative) is left to the exact check
SETTLE_MARGIN = 1e-4  # min-max's error from the histogram, in the weight's units, is this close


def search_alpha(view: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, base: UniformParams, params_for: ParamsFor) -> torch.Tensor:
    """The chosen alpha per row of ``view`` (1.0 keeps min-max); exact for small weights.

    ``base`` is the min-max UniformParams (scale, zero_point, qmin, qmax) of ``lo, hi``
    and ``params_for(lo, hi)`` makes the params of a range.
    """
    rows, cols = view.shape
    if rows * cols <= EXACT_WEIGHTS:
        return _exact_search(view, lo, hi, params_for)
    qmin, qmax = base.qmin, base.qmax
    symmetric = qmin == -qmax
    levels = qmax + 1 if symmetric else qmax - qmin + 1
    # bins per min-max step (a power of two): about TARGET_BINS a row, but no more than a
    # quarter of the row's length (the work on the histograms is bins x candidates a row),
    # and at least 4 (so that a bin holds at most one boundary of any candidate)
    per_unit = max(4, min(TARGET_BINS, 1 << max(0, (cols // 4).bit_length() - 1)) // levels)
    n_bins = per_unit * levels
    inv_scale = (1.0 / base.scale).unsqueeze(1)  # as quantize_codes
    zero_point = base.zero_point
    view = view.contiguous()

    def minmax_errors(at: torch.Tensor) -> torch.Tensor:
        """Min-max's squared error of these rows, from the histograms, in the weight's units."""
        return (est_minmax[at] + squares[at] / per_unit**2) * base.scale[at].double().square()

    rows_per = max(1, min(TILE // max(cols, 1), (1 << 17) // n_bins))
    cols_per = cols if rows_per > 1 else min(cols, TILE)
    chosen = torch.ones(rows, dtype=torch.float64)
    ambiguous = torch.zeros(rows, dtype=torch.bool)
    squares = torch.zeros(rows, dtype=torch.float64)  # sum of (u * per_unit)**2 per row
    est_minmax = torch.zeros(rows, dtype=torch.float64)
    # buffers reused by every tile: fresh allocations would cost more than the arithmetic
    buf_u = torch.empty(rows_per * cols_per, dtype=torch.float32)
    buf_v = torch.empty(rows_per * cols_per, dtype=torch.float32)
    buf_b = torch.empty(rows_per * cols_per, dtype=torch.int64)
    buf_w = torch.empty(rows_per * cols_per, dtype=torch.float64)
    ones = torch.ones(rows_per * cols_per, dtype=torch.float64)
    offsets = (torch.arange(rows_per, dtype=torch.int64) * (2 * n_bins)).unsqueeze(1)
    shift = 0.5 * per_unit
    inv_unit = inv_scale * per_unit
    # rows in order of zero-point, so that each zero-point's tables are made once
    order = torch.arange(rows) if symmetric else torch.argsort(zero_point, stable=True)
    tables: dict[int, tuple[torch.Tensor, ...]] = {}
    for r0 in range(0, rows, rows_per):
        r1 = min(rows, r0 + rows_per)
        nr = r1 - r0
        block = slice(r0, r1) if symmetric else order[r0:r1]  # a slice: views, not copies
        # per row: the counts of its bins, then their sums (so that one index serves both)
        hist = torch.zeros(nr, 2 * n_bins, dtype=torch.float64)
        count, total = hist.view(-1), hist.view(-1)[n_bins:]
        if not symmetric:
            zp_shift = ((zero_point[block].to(torch.float32) + (0.5 - qmin)) * per_unit).unsqueeze(1)
        for c0 in range(0, cols, cols_per):
            nc = min(cols, c0 + cols_per) - c0
            part = view[r0:r1, c0 : c0 + nc] if symmetric else view[block, c0 : c0 + nc]
            # u * per_unit, as w * inv_scale (quantize_codes' product) scaled by a power of two: exact
            u = buf_u[: nr * nc].view(nr, nc)
            torch.mul(part, inv_unit[block], out=u)
            v = buf_v[: nr * nc].view(nr, nc)
            b = buf_b[: nr * nc].view(nr, nc)
            if symmetric:
                u.abs_()  # symmetric quantization errs alike on both sides
                torch.add(u, shift, out=v)  # bins of |u| from -0.5: below n_bins, as |u| <= qmax
                b.copy_(v)  # truncates: floor, as v >= 0
            else:
                torch.add(u, zp_shift, out=v)  # bins of u + zp from qmin - 0.5
                b.copy_(v)
                b.clamp_(0, n_bins - 1)
            b.add_(offsets[:nr])
            flat = b.reshape(-1)
            weights = buf_w[: nr * nc]
            weights.copy_(u.reshape(-1))
            count.scatter_add_(0, flat, ones[: nr * nc])  # as bincount, in order: deterministic
            total.scatter_add_(0, flat, weights)
            w2 = weights.view(nr, 1, nc)
            squares[block] += torch.bmm(w2, w2.transpose(1, 2)).reshape(nr)
        hist[:, n_bins:] /= per_unit  # sums of u (per_unit is a power of two: exact)
        zps = zero_point[block]
        for zp in torch.unique(zps).tolist():
            if zp not in tables:
                tables[zp] = _tables(per_unit, n_bins, qmin, qmax, 0 if symmetric else zp)
            weights_t, by_candidate, change, straddle = tables[zp]
            sel = torch.nonzero(zps == zp).squeeze(1)
            h = hist if len(sel) == nr else hist[sel]
            # every candidate's error change from min-max: small terms, so float32 will do to rank
            best = torch.argmin(h.float() @ change, dim=1)  # the first of equals: min-max first
            est = h @ weights_t[:, 0]  # min-max's error, less the rows' sum of u**2 (exact)
            gain = est - (h * by_candidate[best]).sum(dim=1)  # the winner's, in float64
            # a weight in a bin that the winner straddles is counted part to each side: its
            # error is off by at most 2 * alpha * bin width. Float rounding may move any
            # weight a hair across a bin edge.
            near = (h[:, :n_bins] * straddle[best]).sum(dim=1)
            slack = (near + ROUNDING * h[:, :n_bins].sum(dim=1)) * 2.0 * ALPHAS_T[best] / per_unit
            at = block if len(sel) == nr else (torch.arange(r0, r1) if isinstance(block, slice) else block)[sel]
            chosen[at] = ALPHAS_T[best]
            ambiguous[at] = (best > 0) & (gain <= slack + MARGIN * est.abs())
            est_minmax[at] = est
        # the search assumed min-max's zero-point; where float rounding gives another, check exactly
        alpha = chosen[block].to(torch.float32)
        shrunk = alpha < 1.0
        if bool(shrunk.any()):
            ambiguous[block] |= shrunk & (params_for(lo[block] * alpha, hi[block] * alpha).zero_point != zero_point[block])
        if cols_per == cols:  # the block's rows are still in the cache: settle them now
            x = view[r0:r1] if symmetric else view[block]
            at = torch.arange(r0, r1) if isinstance(block, slice) else block  # a slice when symmetric
            _settle(x, at, lo, hi, chosen, ambiguous, minmax_errors(at), params_for)
    if cols_per < cols:
        for r0 in range(0, rows, CHUNK // cols_per):
            block = torch.arange(r0, min(rows, r0 + CHUNK // cols_per))
            _settle(view[block], block, lo, hi, chosen, ambiguous, minmax_errors(block), params_for)
    return chosen


@functools.lru_cache(maxsize=16)
def _master(per_unit: int, qmin: int, qmax: int) -> tuple[np.ndarray, ...]:
    """The tables before clipping, on a grid of bins wide enough for every zero-point.

    A bin is a run of weights ``[e, e + w)`` (in min-max steps) of count C and sum U. If
    it holds no rounding boundary, all its weights go to one level q and it adds
    ``q**2 C - 2 q U``. If it holds the boundary between levels qa and qb a fraction f
    into it, its weights are taken as spread evenly inside it: fC of them, summing
    ``f U - f (1 - f) (w / 2) C``, go to qa, the rest to qb. Returns, per bin and
    candidate, the factors on C and on U, whether the bin straddles a boundary, and
    the range ``(k_lo, k_hi]`` of the boundaries ``(k + 1/2) alpha`` inside it.
    """
    if qmin == -qmax:  # symmetric: bins of |u| from -0.5
        first, n_bins = -0.5, per_unit * (qmax + 1)
    else:  # u for every zero-point: from qmin - qmax - 0.5
        first, n_bins = qmin - qmax - 0.5, per_unit * (2 * (qmax - qmin) + 1)
    width = 1.0 / per_unit
    e0 = (first + np.arange(n_bins) * width)[:, None]
    a = ALPHAS[None, :]
    k_lo = np.floor(e0 / a - 0.5)
    k_hi = np.floor((e0 + width) / a - 0.5)
    straddle = k_hi > k_lo
    f = np.where(straddle, ((k_hi + 0.5) * a - e0) / width, 1.0)  # no boundary: all at qa
    qa = np.where(straddle, k_hi, np.round((e0 + width / 2) / a)) * a
    qb = (k_hi + 1) * a
    on_counts = f * qa * qa + (1 - f) * qb * qb + f * (1 - f) * width * (qa - qb)
    on_sums = -2.0 * (f * qa + (1 - f) * qb)
    return on_counts, on_sums, straddle, k_lo, k_hi


@functools.lru_cache(maxsize=4)
def _tables(per_unit: int, n_bins: int, qmin: int, qmax: int, zp: int) -> tuple[torch.Tensor, ...]:
    """For histogram rows ``[counts, sums]`` of one zero-point: the matrix giving every
    candidate's error (float64; also as rows, one per candidate), the same less min-max's
    column (float32, for ranking),
    and per candidate the bins that straddle one of its rounding boundaries. They are the
    master tables, cut to these rows' bins and clipped to their codes: a bin whose
    weights all lie beyond the last boundary inside the code range goes whole to the
    end level."""
    on_counts, on_sums, straddle, k_lo, k_hi = _master(per_unit, qmin, qmax)
    symmetric = qmin == -qmax
    lo_code, hi_code = (0, qmax) if symmetric else (qmin - zp, qmax - zp)
    rows = slice(0, n_bins) if symmetric else slice(per_unit * (qmax - zp), per_unit * (qmax - zp) + n_bins)
    a = ALPHAS[None, :]
    top = k_lo[rows] >= hi_code - 1  # every weight at or above the boundary below the top level
    bottom = k_hi[rows] <= lo_code - 1  # every weight below the boundary above the bottom level
    counts = np.where(top, (hi_code * a) ** 2, np.where(bottom, (lo_code * a) ** 2, on_counts[rows]))
    sums = np.where(top, -2.0 * hi_code * a, np.where(bottom, -2.0 * lo_code * a, on_sums[rows]))
    weights = np.concatenate([counts, sums], axis=0)
    change = torch.from_numpy(weights - weights[:, :1]).float()
    cut = straddle[rows] & ~top & ~bottom
    by_candidate = torch.from_numpy(np.ascontiguousarray(weights.T))
    return torch.from_numpy(weights), by_candidate, change, torch.from_numpy(np.ascontiguousarray(cut.T)).to(torch.float64)


def _exact_search(view: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, params_for: ParamsFor) -> torch.Tensor:
    """A small weight: every candidate quantized exactly (the first of equal errors wins)."""
    errors = torch.stack([_squared_error(view, params_for(lo * a, hi * a)) for a in ALPHAS_T.float().tolist()], dim=1)
    return ALPHAS_T[torch.argmin(errors, dim=1)]


def _settle(x: torch.Tensor, rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, chosen: torch.Tensor, ambiguous: torch.Tensor, minmax_err: torch.Tensor, params_for: ParamsFor) -> None:
    """Rows (``x``, at ``rows`` of the weight) that the histogram cannot decide: quantize
    them with their winner exactly as ``quantize_codes`` and ``dequantize_codes`` would,
    and keep min-max (whose error the histogram knows) unless the winner is better by
    more than the rounding of the units (``SETTLE_MARGIN``)."""
    pick = ambiguous[rows]
    if not bool(pick.any()):
        return
    if int(pick.sum()) * 2 < len(rows):  # a few rows: take them out; else do all, it is cheaper
        x, rows, minmax_err = x[pick], rows[pick], minmax_err[pick]
    alpha = chosen[rows].to(torch.float32)
    shrunk = _squared_error(x, params_for(lo[rows] * alpha, hi[rows] * alpha))
    worse = (shrunk >= minmax_err * (1 - SETTLE_MARGIN)) & ambiguous[rows]
    chosen[rows[worse]] = 1.0


def _squared_error(x: torch.Tensor, p: UniformParams) -> torch.Tensor:
    """Per row, ``((dequantize_codes(quantize_codes(x)) - x) ** 2).sum()``, the same floats."""
    deq = x * (1.0 / p.scale).unsqueeze(1)
    deq.round_()
    if bool((p.zero_point == 0).all()):
        deq.clamp_(p.qmin, p.qmax)
    else:  # adding the integer zero-point, clamping and taking it off: the same as clamping shifted
        zp = p.zero_point.to(torch.float32).unsqueeze(1)
        deq.clamp_(p.qmin - zp, p.qmax - zp)
    deq.mul_(p.scale.unsqueeze(1))
    return (deq - x).square_().sum(dim=1)
