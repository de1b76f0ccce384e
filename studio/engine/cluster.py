"""Weight sharing by 1-D k-means, as in Deep Compression (linear initialisation)."""

from __future__ import annotations

import torch


def kmeans_1d(
    values: torch.Tensor, k: int, iters: int = 30, pin_zero: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``values`` (1-D) into ``k`` shared values.

    Centroids start evenly spaced between min and max (linear initialisation, the
    best of Deep Compression's three). With ``pin_zero`` one centroid is held at
    exactly 0.0, so pruned weights stay exactly zero. Returns ``(centroids, index)``
    with centroids sorted ascending and ``index`` the centroid of each value.
    """
    values = values.to(torch.float32).flatten()
    free = k - 1 if pin_zero else k
    if values.numel() == 0:
        lo = hi = 0.0
    else:
        lo, hi = float(values.min()), float(values.max())
    centroids = torch.linspace(lo, hi, free) if free > 1 else torch.tensor([(lo + hi) / 2])
    if pin_zero:
        centroids = torch.cat([centroids, torch.zeros(1)])
    pinned = torch.zeros(k, dtype=torch.bool)
    if pin_zero:
        pinned[-1] = True
    for _ in range(iters):
        order = torch.argsort(centroids)
        centroids, pinned = centroids[order], pinned[order]
        index = _assign(values, centroids)
        counts = torch.bincount(index, minlength=k).to(torch.float32)
        sums = torch.bincount(index, weights=values, minlength=k)
        update = (counts > 0) & ~pinned
        new = torch.where(update, sums / counts.clamp_min(1), centroids)
        if torch.equal(new, centroids):
            break
        centroids = new
    order = torch.argsort(centroids)
    centroids = centroids[order]
    return centroids, _assign(values, centroids)


def _assign(values: torch.Tensor, sorted_centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid for each value, using the midpoints between sorted centroids."""
    mids = (sorted_centroids[1:] + sorted_centroids[:-1]) / 2
    return torch.bucketize(values, mids)
