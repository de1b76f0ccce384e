"""Weight sharing by 1-D k-means, as in Deep Compression (linear initialisation).

Lloyd's iterations run on a fine histogram of the values (2**16 bins, each standing
for its values' count and sum, so a bin moves as one point at its mean); layers with
at most 2**16 values run them on the values themselves. Then one exact assignment of
every value to its nearest centroid, one exact centroid update (the mean of each
cluster), and a final exact assignment to the updated centroids.
"""

from __future__ import annotations

import numpy as np
import torch

HIST_BINS = 1 << 16
CHUNK = 1 << 20  # values assigned at a time


def kmeans_1d(
    values: torch.Tensor, k: int, iters: int = 30, pin_zero: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``values`` (1-D) into ``k`` shared values.

    Centroids start evenly spaced between min and max (linear initialisation, the
    best of Deep Compression's three), then at most ``iters`` Lloyd iterations run on
    the histogram. With ``pin_zero`` one centroid is held at exactly 0.0, so pruned
    weights stay exactly zero. Returns ``(centroids, index)``: float32 centroids sorted
    ascending and ``index`` the nearest centroid of each value, uint8 for k <= 256
    (index a tensor with ``index.long()``: torch reads a uint8 index as a mask). The
    result is deterministic.
    """
    values = values.detach().to(torch.float32).flatten()
    free = k - 1 if pin_zero else k
    if values.numel() == 0:
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
    weight, total, points = _histogram(values, lo, hi)
    # points are sorted, so a cluster is a run of them: its count and sum are differences
    # of prefix sums at the midpoints, and an iteration costs O(k log points)
    cum_weight = np.concatenate([[0.0], np.cumsum(weight)])
    cum_total = np.concatenate([[0.0], np.cumsum(total)])
    for _ in range(iters):
        order = np.argsort(centroids, kind="stable")
        centroids, pinned = centroids[order], pinned[order]
        ends = np.concatenate([np.searchsorted(points, _mids(centroids), side="right"), [len(points)]])
        starts = np.concatenate([[0], ends[:-1]])
        counts = cum_weight[ends] - cum_weight[starts]
        sums = cum_total[ends] - cum_total[starts]
        new = np.where((counts > 0) & ~pinned, sums / np.maximum(counts, 1e-300), centroids)
        if np.array_equal(new, centroids):
            break
        centroids = new
    order = np.argsort(centroids, kind="stable")
    centroids, pinned = centroids[order].astype(np.float32), pinned[order]
    # one exact assignment and update on the values, then the final assignment
    counts, sums = np.zeros(k), np.zeros(k)
    for start in range(0, values.numel(), CHUNK):
        part = values[start : start + CHUNK]
        index = _assign(part, torch.from_numpy(centroids), lo, hi).numpy()
        counts += np.bincount(index, minlength=k)
        sums += np.bincount(index, weights=part.numpy(), minlength=k)
    update = (counts > 0) & ~pinned
    centroids = np.where(update, sums / np.maximum(counts, 1), centroids).astype(np.float32)
    centroids = torch.from_numpy(np.sort(centroids, kind="stable"))
    index = torch.empty(values.numel(), dtype=torch.uint8 if k <= 256 else torch.int64)
    for start in range(0, values.numel(), CHUNK):
        index[start : start + CHUNK] = _assign(values[start : start + CHUNK], centroids, lo, hi)
    return centroids, index


def _histogram(values: torch.Tensor, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, sum, mean) of each non-empty bin, in order; the sorted values themselves when
    there are few."""
    n = values.numel()
    if n <= HIST_BINS or hi <= lo:
        x = np.sort(values.double().numpy())
        return np.ones(n), x, x
    counts = np.zeros(HIST_BINS)
    sums = np.zeros(HIST_BINS)
    for start in range(0, n, CHUNK):
        part = values[start : start + CHUNK]
        b = _bins(part, lo, hi).numpy()
        counts += np.bincount(b, minlength=HIST_BINS)
        sums += np.bincount(b, weights=part.numpy(), minlength=HIST_BINS)
    used = counts > 0
    return counts[used], sums[used], sums[used] / counts[used]


def _bins(part: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    b = (part - lo).mul_(HIST_BINS / (hi - lo)).to(torch.int64)
    return b.clamp_(0, HIST_BINS - 1)


def _mids(sorted_centroids: np.ndarray) -> np.ndarray:
    return (sorted_centroids[1:] + sorted_centroids[:-1]) / 2


def _assign(values: torch.Tensor, sorted_centroids: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Nearest centroid of each value (ties to the lower one), as ``bucketize`` on the midpoints.

    On a big chunk a table over the histogram's bins gives the answer for every bin
    that no midpoint comes near; only values in the others are compared exactly.
    """
    mids = (sorted_centroids[1:] + sorted_centroids[:-1]) / 2
    dtype = torch.uint8 if len(sorted_centroids) <= 256 else torch.int64
    if values.numel() <= HIST_BINS or hi <= lo:
        return torch.bucketize(values, mids).to(dtype)
    width = (hi - lo) / HIST_BINS
    edges = lo + width * np.arange(HIST_BINS, dtype=np.float64)
    table = torch.from_numpy(np.searchsorted(mids.double().numpy(), edges + width / 2)).to(dtype)
    near = torch.zeros(HIST_BINS + 2, dtype=torch.bool)  # bins holding a midpoint, and their neighbours
    at = np.clip(np.floor((mids.double().numpy() - lo) / width).astype(np.int64), -1, HIST_BINS) + 1
    for shift in (-1, 0, 1):
        near[np.clip(at + shift, 0, HIST_BINS + 1)] = True
    near = near[1:-1]
    b = _bins(values, lo, hi)
    out = table[b]
    exact = torch.nonzero(near[b]).squeeze(1)
    if exact.numel():
        out[exact] = torch.bucketize(values[exact], mids).to(dtype)
    return out


def shared_values(codebook: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``codebook[codes]`` as float32, gathered in chunks (codes may be uint8)."""
    table = codebook.to(torch.float32).numpy()
    flat_codes = codes.numpy().reshape(-1)
    out = np.empty(flat_codes.shape, dtype=np.float32)
    for start in range(0, len(flat_codes), CHUNK):
        np.take(table, flat_codes[start : start + CHUNK], out=out[start : start + CHUNK])
    return torch.from_numpy(out.reshape(codes.shape))
