"""Weight sharing by 1-D k-means, as in Deep Compression (linear initialisation).

Lloyd's iterations run on a fine histogram of the values (2**16 bins, each a point at
its centre weighted by its count), until the centroids stop moving or for at most
``LLOYD_ITERS``; layers with at most 2**16 values run them on the values themselves. Then one exact assignment of every value to its nearest centroid
and one exact centroid update: each centroid becomes the mean of its cluster.

The values are binned a chunk at a time, once to count and once to assign (held binned,
they took 4 bytes a weight). The exact assignment needs no comparison for a value in a
bin that no midpoint between centroids comes near (all its values go to the same
centroid, by table lookup): only values in the few bins around a midpoint are compared.
"""

from __future__ import annotations

import numpy as np
import torch

HIST_BINS = 1 << 16
CHUNK = 1 << 20  # values binned or assigned at a time
# Lloyd's iterations on a histogram cost O(k log bins) each, so they can run (nearly) to
# convergence: from a linear start on heavy-tailed weights that takes hundreds
LLOYD_ITERS = 300


def kmeans_1d(
    values: torch.Tensor, k: int, iters: int = LLOYD_ITERS, pin_zero: bool = False, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``values`` (1-D) into ``k`` shared values.

    Centroids start evenly spaced between min and max (linear initialisation, the
    best of Deep Compression's three), then Lloyd's iterations run on the histogram until
    the centroids stop moving (at most ``iters``), then every value goes to its nearest
    centroid (ties to the lower) and each centroid moves to the mean of its values. With ``pin_zero`` one centroid
    is held at exactly 0.0, so pruned weights stay exactly zero. Returns
    ``(centroids, index)``: float32 centroids sorted ascending, and each value's
    centroid, uint8 for k <= 256 (index a tensor with ``index.long()``: torch reads a
    uint8 index as a mask). The result is deterministic.

    With a ``keep`` mask (same number of values, ``pin_zero`` required) only the kept values
    are clustered; the others are pruned weights, read as 0.0 whatever they hold, and get the
    zero centroid. The result equals clustering ``values[keep]`` and scattering its index, but
    without gathering or scattering, or a pruned copy: the values are masked a chunk at a time,
    and the pruned zeros are taken back out of the histogram's zero bin.
    """
    values = values.detach().to(torch.float32).flatten()
    if keep is not None:
        if not pin_zero:
            raise ValueError("kmeans_1d with a keep mask needs pin_zero=True: the pruned weights go to the zero centroid")
        return _kmeans_kept(values, k, iters, keep.reshape(-1))
    return _kmeans(values, k, iters, pin_zero)


def _kmeans_kept(values: torch.Tensor, k: int, iters: int, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``kmeans_1d`` of the kept values (the others read as 0.0), indexed over all values."""
    n_kept = int(keep.count_nonzero())
    ranges = [torch.aminmax(_part(values, keep, start)) for start in range(0, values.numel(), CHUNK)]  # pruned at 0.0
    lo = min((float(r[0]) for r in ranges), default=0.0)
    hi = max((float(r[1]) for r in ranges), default=0.0)
    if n_kept <= HIST_BINS or not lo < 0.0 < hi:  # the kept values' range is not the array's: gather them
        centroids, kept_index = _kmeans(values[keep], k, iters, True)
        index = torch.full((values.numel(),), zero_code(centroids), dtype=kept_index.dtype)
        index[keep] = kept_index
        return centroids, index
    # lo < 0 < hi: both come from kept values, so the grid is the kept values' own
    return _kmeans(values, k, iters, True, excluded_zeros=values.numel() - n_kept, bounds=(lo, hi), mask=keep)


def zero_code(codebook: torch.Tensor) -> int:
    """The (first) code whose shared value is exactly 0.0."""
    return int(torch.nonzero(codebook == 0)[0, 0])


def _kmeans(
    values: torch.Tensor,
    k: int,
    iters: int,
    pin_zero: bool,
    excluded_zeros: int = 0,
    bounds: tuple[float, float] | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``kmeans_1d`` of flat float32 ``values``, of which ``excluded_zeros`` zeros are not data
    (they leave the histogram; only the histogram path takes them); ``bounds``: their min and
    max where the caller has them; ``mask``: the values are ``values * mask`` (the histogram
    path, with ``bounds``)."""
    n = values.numel()
    free = k - 1 if pin_zero else k
    if bounds is not None:
        lo, hi = bounds
    elif n == 0:
        lo = hi = 0.0
    else:
        lo_t, hi_t = torch.aminmax(values)
        lo, hi = float(lo_t), float(hi_t)
    init = torch.linspace(lo, hi, free) if free > 1 else torch.tensor([(lo + hi) / 2])
    centroids = init.double().numpy()
    pinned = np.zeros(k, dtype=bool)
    if pin_zero:
        centroids = np.append(centroids, 0.0)
        pinned[-1] = True
    index = torch.empty(n, dtype=torch.uint8 if k <= 256 else torch.int64)
    counts, sums = torch.zeros(k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
    if n <= HIST_BINS or hi <= lo:  # few values: they are their own histogram
        x = np.sort(values.double().numpy())
        centroids, pinned = _lloyd(centroids, pinned, np.ones(n), x, x, iters)
        index[:] = torch.bucketize(values, _mids32(centroids))
        _add_clusters(index, values, counts, sums)
        return _update(centroids, pinned, counts, sums, index)
    grid = _Grid(lo, hi)
    bin_counts = grid.histogram(values, mask)
    if excluded_zeros:  # binned exactly as the values are
        bin_counts[int(grid.bins(torch.zeros(1), torch.empty(1, dtype=torch.int32))[0])] -= excluded_zeros
    used = np.flatnonzero(bin_counts)
    centres = grid.centres()[used]
    centroids, pinned = _lloyd(centroids, pinned, bin_counts[used], bin_counts[used] * centres, centres, iters)
    # the exact assignment: by table, then value by value near the midpoints
    mids = _mids32(centroids)
    table, near = grid.table(mids, index.dtype)
    wide = torch.empty(min(n, CHUNK), dtype=torch.float64)
    chunk_bins = torch.empty(min(n, CHUNK), dtype=torch.int32)
    for start in range(0, n, CHUNK):  # the values are binned again, a chunk at a time, rather than held binned
        out, part = index[start : start + CHUNK], _part(values, mask, start)
        b = grid.bins(part, chunk_bins[: part.numel()])
        torch.index_select(table, 0, b, out=out)
        close = torch.nonzero(near.index_select(0, b)).squeeze(1)
        if close.numel():
            out[close] = torch.bucketize(part[close], mids).to(index.dtype)
        _add_clusters(out, part, counts, sums, wide)
    return _update(centroids, pinned, counts, sums, index)


def _add_clusters(index: torch.Tensor, values: torch.Tensor, counts: torch.Tensor, sums: torch.Tensor, wide: torch.Tensor | None = None) -> None:
    """Add each cluster's count and sum (in float64) of these values (``wide``: a buffer)."""
    k = len(counts)
    wide = values.double() if wide is None else wide[: values.numel()].copy_(values)
    counts += torch.bincount(index, minlength=k)[:k]
    sums += torch.bincount(index, weights=wide, minlength=k)[:k]


def _update(centroids: np.ndarray, pinned: np.ndarray, counts: torch.Tensor, sums: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each free centroid to its cluster's mean (an empty cluster keeps its centroid).

    Means of clusters of sorted centroids stay sorted; should float rounding ever break
    a tie the other way, the centroids are sorted and the index follows them.
    """
    c, s = counts.numpy(), sums.numpy()
    new = np.where((c > 0) & ~pinned, s / np.maximum(c, 1), centroids).astype(np.float32)
    order = np.argsort(new, kind="stable")
    if np.any(order != np.arange(len(order))):
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        index = torch.from_numpy(rank.astype(np.int64))[index.long()].to(index.dtype)
    return torch.from_numpy(new[order]), index


def _lloyd(centroids: np.ndarray, pinned: np.ndarray, weight: np.ndarray, total: np.ndarray, points: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's iterations on sorted points of these weights (counts) and totals (sums).

    A cluster is a run of sorted points, so its count and sum are differences of prefix
    sums at the midpoints: an iteration costs O(k log points). Returns the centroids,
    sorted, as float32 values (in float64), with their pinned flags.
    """
    order = np.argsort(centroids, kind="stable")  # sorted once: means of runs stay sorted
    centroids, free = centroids[order], ~pinned[order]
    cum = np.zeros((len(points) + 1, 2))
    np.cumsum(weight, out=cum[1:, 0])
    np.cumsum(total, out=cum[1:, 1])
    edges = np.zeros(len(centroids) + 1, dtype=np.intp)
    edges[-1] = len(points)
    for _ in range(iters):
        edges[1:-1] = np.searchsorted(points, (centroids[1:] + centroids[:-1]) / 2, side="right")
        runs = np.diff(cum[edges], axis=0)  # each cluster's count and sum
        new = np.where((runs[:, 0] > 0) & free, runs[:, 1] / np.maximum(runs[:, 0], 1e-300), centroids)
        if np.array_equal(new, centroids):
            break
        centroids = new
    order = np.argsort(centroids, kind="stable")
    return centroids[order].astype(np.float32).astype(np.float64), ~free[order]


def _mids32(centroids: np.ndarray) -> torch.Tensor:
    """Midpoints between sorted centroids, in float32 (the values' own precision)."""
    c = torch.from_numpy(np.asarray(centroids, dtype=np.float32))
    return (c[1:] + c[:-1]) / 2


class _Grid:
    """``HIST_BINS`` equal bins over ``[lo, hi]``."""

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        self.width = (hi - lo) / HIST_BINS

    def centres(self) -> np.ndarray:
        return self.lo + self.width * (np.arange(HIST_BINS) + 0.5)

    def bins(self, part: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The bin (int32, into ``out``) of each of these values (all >= lo)."""
        scaled = torch.sub(part, self.lo)
        scaled.mul_(HIST_BINS / (self.hi - self.lo))
        out.copy_(scaled)  # truncates: floor, as the values are >= lo
        return out.clamp_(0, HIST_BINS - 1)

    def histogram(self, values: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
        """Each bin's count of ``values`` (times ``mask``), binned a chunk at a time."""
        n = values.numel()
        counts = torch.zeros(HIST_BINS, dtype=torch.int64)
        chunk_bins = torch.empty(min(n, CHUNK), dtype=torch.int32)
        for start in range(0, n, CHUNK):
            part = _part(values, mask, start)
            counts += torch.bincount(self.bins(part, chunk_bins[: part.numel()]), minlength=HIST_BINS)
        return counts.numpy().astype(np.float64)

    def table(self, mids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per bin, its values' centroid when no midpoint comes near it, and which bins
        hold a midpoint or touch one that does (float rounding may put a value one bin off)."""
        m = mids.double().numpy()
        table = np.searchsorted(m, self.centres(), side="left")  # how many midpoints lie below: bucketize
        near = np.zeros(HIST_BINS + 2, dtype=bool)
        at = np.clip(np.floor((m - self.lo) / self.width).astype(np.int64), -1, HIST_BINS) + 1
        for shift in (-1, 0, 1):
            near[np.clip(at + shift, 0, HIST_BINS + 1)] = True
        return torch.from_numpy(table).to(dtype), torch.from_numpy(near[1:-1].copy())


def _part(values: torch.Tensor, mask: torch.Tensor | None, start: int) -> torch.Tensor:
    """A chunk of ``values`` (times ``mask``: pruned weights read as zeros)."""
    part = values[start : start + CHUNK]
    return part if mask is None else part * mask[start : start + CHUNK]


def shared_values(codebook: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``codebook[codes]`` as float32, gathered in chunks (codes may be uint8)."""
    table = codebook.to(torch.float32).numpy()
    flat_codes = codes.numpy().reshape(-1)
    out = np.empty(flat_codes.shape, dtype=np.float32)
    for start in range(0, len(flat_codes), CHUNK):
        np.take(table, flat_codes[start : start + CHUNK], out=out[start : start + CHUNK], mode="clip")
    return torch.from_numpy(out.reshape(codes.shape))
