"""Weight sharing by 1-D k-means, as in Deep Compression (linear initialisation).

Lloyd's iterations run on a fine histogram of the values (2**16 bins, each standing
for its values' count and sum, so a bin moves as one point at its mean); layers with
at most 2**16 values run them on the values themselves. Then one exact assignment of
every value to its nearest centroid, one exact centroid update (the mean of each
cluster), and a final exact assignment to the updated centroids.

The values are binned once. An exact assignment then needs no comparison for a bin
that no midpoint between centroids comes near (all its values go to the same
centroid): only values in the few bins around a midpoint are compared one by one. So
the exact update adds up whole bins, and the final assignment is a table lookup.
"""

from __future__ import annotations

import numpy as np
import torch

HIST_BINS = 1 << 16
CHUNK = 1 << 20  # values binned or assigned at a time


def kmeans_1d(
    values: torch.Tensor, k: int, iters: int = 30, pin_zero: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``values`` (1-D) into ``k`` shared values.

    Centroids start evenly spaced between min and max (linear initialisation, the
    best of Deep Compression's three), then at most ``iters`` Lloyd iterations run on
    the histogram. With ``pin_zero`` one centroid is held at exactly 0.0, so pruned
    weights stay exactly zero. Returns ``(centroids, index)``: float32 centroids sorted
    ascending and ``index`` the nearest centroid of each value (ties to the lower one),
    uint8 for k <= 256 (index a tensor with ``index.long()``: torch reads a uint8 index
    as a mask). The result is deterministic.
    """
    values = values.detach().to(torch.float32).flatten()
    n = values.numel()
    free = k - 1 if pin_zero else k
    if n == 0:
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
    index_dtype = torch.uint8 if k <= 256 else torch.int64
    if n <= HIST_BINS or hi <= lo:  # few values: they are their own histogram
        x = np.sort(values.double().numpy())
        centroids, pinned = _lloyd(centroids, pinned, np.ones(n), x, x, iters)
        mids = _mids32(centroids)
        index = torch.bucketize(values, mids).numpy()
        counts, sums = np.bincount(index, minlength=k), np.bincount(index, weights=values.numpy(), minlength=k)
        centroids = _update(centroids, pinned, counts, sums)
        return centroids, torch.bucketize(values, _mids32(centroids.numpy())).to(index_dtype)
    grid = _Grid(lo, hi)
    bins, counts, sums = grid.histogram(values)
    used = counts > 0
    centroids, pinned = _lloyd(centroids, pinned, counts[used], sums[used], sums[used] / counts[used], iters)
    # the exact update: whole bins where they are far from every midpoint, else value by value
    mids = _mids32(centroids)
    table, near = grid.table(mids)
    far = ~near
    cluster_counts = np.bincount(table[far], weights=counts[far], minlength=k)
    cluster_sums = np.bincount(table[far], weights=sums[far], minlength=k)
    for _, part in grid.values_in(near, bins, values):
        index = torch.bucketize(part, mids).numpy()
        cluster_counts += np.bincount(index, minlength=k)
        cluster_sums += np.bincount(index, weights=part.numpy(), minlength=k)
    centroids = _update(centroids, pinned, cluster_counts, cluster_sums)
    # the final assignment, by table, then value by value near the midpoints
    mids = _mids32(centroids.numpy())
    table, near = grid.table(mids)
    index = np.empty(n, dtype=np.uint8 if k <= 256 else np.int64)
    table = table.astype(index.dtype)
    for start in range(0, n, CHUNK):
        np.take(table, bins[start : start + CHUNK], out=index[start : start + CHUNK], mode="clip")
    for at, part in grid.values_in(near, bins, values):
        index[at] = torch.bucketize(part, mids).numpy()
    return centroids, torch.from_numpy(index)


def _lloyd(centroids: np.ndarray, pinned: np.ndarray, weight: np.ndarray, total: np.ndarray, points: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's iterations on sorted points of these weights (counts) and totals (sums).

    A cluster is a run of sorted points, so its count and sum are differences of prefix
    sums at the midpoints: an iteration costs O(k log points). Returns the centroids,
    sorted, as float32 values (in float64), with their pinned flags.
    """
    cum_weight = np.concatenate([[0.0], np.cumsum(weight)])
    cum_total = np.concatenate([[0.0], np.cumsum(total)])
    for _ in range(iters):
        order = np.argsort(centroids, kind="stable")
        centroids, pinned = centroids[order], pinned[order]
        mids = (centroids[1:] + centroids[:-1]) / 2
        ends = np.concatenate([np.searchsorted(points, mids, side="right"), [len(points)]])
        starts = np.concatenate([[0], ends[:-1]])
        counts = cum_weight[ends] - cum_weight[starts]
        sums = cum_total[ends] - cum_total[starts]
        new = np.where((counts > 0) & ~pinned, sums / np.maximum(counts, 1e-300), centroids)
        if np.array_equal(new, centroids):
            break
        centroids = new
    order = np.argsort(centroids, kind="stable")
    return centroids[order].astype(np.float32).astype(np.float64), pinned[order]


def _mids32(centroids: np.ndarray) -> torch.Tensor:
    """Midpoints between sorted centroids, in float32 (the values' own precision)."""
    c = torch.from_numpy(np.asarray(centroids, dtype=np.float32))
    return (c[1:] + c[:-1]) / 2


def _update(centroids: np.ndarray, pinned: np.ndarray, counts: np.ndarray, sums: np.ndarray) -> torch.Tensor:
    """Each free centroid to its cluster's mean (an empty cluster keeps its centroid), sorted."""
    new = np.where((counts > 0) & ~pinned, sums / np.maximum(counts, 1), centroids).astype(np.float32)
    return torch.from_numpy(np.sort(new, kind="stable"))


class _Grid:
    """``HIST_BINS`` equal bins over ``[lo, hi]``."""

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        self.width = (hi - lo) / HIST_BINS

    def histogram(self, values: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each value's bin (uint16), and each bin's count and sum."""
        n = values.numel()
        bins = np.empty(n, dtype=np.uint16)
        counts = torch.zeros(HIST_BINS, dtype=torch.float64)
        sums = torch.zeros(HIST_BINS, dtype=torch.float64)
        scaled = torch.empty(min(n, CHUNK), dtype=torch.float32)
        index = torch.empty(min(n, CHUNK), dtype=torch.int64)
        wide = torch.empty(min(n, CHUNK), dtype=torch.float64)
        ones = torch.ones(min(n, CHUNK), dtype=torch.float64)
        for start in range(0, n, CHUNK):
            part = values[start : start + CHUNK]
            m = part.numel()
            torch.sub(part, self.lo, out=scaled[:m])
            scaled[:m].mul_(HIST_BINS / (self.hi - self.lo))
            index[:m].copy_(scaled[:m])  # truncates: floor, as the values are >= lo
            index[:m].clamp_(0, HIST_BINS - 1)
            bins[start : start + m] = index[:m].numpy()
            wide[:m].copy_(part)
            counts.scatter_add_(0, index[:m], ones[:m])  # as bincount, in order: deterministic
            sums.scatter_add_(0, index[:m], wide[:m])
        return bins, counts.numpy(), sums.numpy()

    def table(self, mids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per bin, its values' centroid when no midpoint comes near it, and which bins
        hold a midpoint or touch one that does (float rounding may put a value one bin off)."""
        m = mids.double().numpy()
        centres = self.lo + self.width * (np.arange(HIST_BINS) + 0.5)
        table = np.searchsorted(m, centres, side="left")  # how many midpoints lie below: bucketize
        near = np.zeros(HIST_BINS + 2, dtype=bool)
        at = np.clip(np.floor((m - self.lo) / self.width).astype(np.int64), -1, HIST_BINS) + 1
        for shift in (-1, 0, 1):
            near[np.clip(at + shift, 0, HIST_BINS + 1)] = True
        return table, near[1:-1]

    @staticmethod
    def values_in(near: np.ndarray, bins: np.ndarray, values: torch.Tensor):  # noqa: ANN205
        """``(positions, values)`` of the values in the marked bins, a chunk at a time."""
        for start in range(0, len(bins), CHUNK):
            at = np.flatnonzero(near[bins[start : start + CHUNK]])
            if len(at):
                at += start
                yield at, values[torch.from_numpy(at)]


def shared_values(codebook: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``codebook[codes]`` as float32, gathered in chunks (codes may be uint8)."""
    table = codebook.to(torch.float32).numpy()
    flat_codes = codes.numpy().reshape(-1)
    out = np.empty(flat_codes.shape, dtype=np.float32)
    for start in range(0, len(flat_codes), CHUNK):
        np.take(table, flat_codes[start : start + CHUNK], out=out[start : start + CHUNK], mode="clip")
    return torch.from_numpy(out.reshape(codes.shape))
