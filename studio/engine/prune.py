"""Magnitude pruning: a registry of methods that each return a keep-mask.

Every method takes the weight's channel view ``(out_channels, fan_in)`` and the
fraction to remove, and returns a boolean mask of the same shape (True = kept).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import torch

from .errors import StudioError
from .registry import Registry

PruneFn = Callable[[torch.Tensor, float], torch.Tensor]
PRUNERS: Registry[PruneFn] = Registry("prune method")
register_pruner = PRUNERS.register
_NM = re.compile(r"^(\d+):(\d+)$")


def parse_nm(method: str) -> tuple[int, int] | None:
    """``"2:4"`` -> ``(2, 4)`` (keep N of every M); anything else -> None."""
    match = _NM.match(method)
    if not match or not 0 < int(match.group(1)) < int(match.group(2)):
        return None
    return int(match.group(1)), int(match.group(2))


def is_prune_method(method: str) -> bool:
    return method in PRUNERS or parse_nm(method) is not None


def kth_smallest_counted(values: torch.Tensor, k: int, absolute: bool = False) -> tuple[torch.Tensor, int, int]:
    """The ``k``-th smallest (1-based) of non-negative finite float32 ``values`` (exactly
    ``torch.kthvalue(values, k).values``, in a few linear passes instead of a selection),
    and how many values are below it and equal to it. With ``absolute``, of ``|values|``
    (any sign), taken a chunk at a time: no whole copy is made.

    Non-negative float32 values order as their int32 bit patterns, so a histogram of the
    top 16 bits finds the bucket holding the k-th value, and only that bucket is searched
    (and counted: every value below the bucket is below the k-th). The values are read in
    chunks of ``CHUNK``, so the extra memory is a chunk's and the bucket's.
    """
    flat = values.reshape(-1)
    if values.dtype != torch.float32 or values.numel() < BUCKETED_FROM:
        flat = flat.abs() if absolute else flat
        kth = torch.kthvalue(flat, k).values
        return kth, int((flat < kth).count_nonzero()), int((flat == kth).count_nonzero())
    counts = torch.zeros(1 << 16, dtype=torch.int64)
    for part in _chunks(flat, absolute):
        counts += torch.bincount(part.view(torch.int32) >> 15, minlength=1 << 16)  # the sign bit is clear
    cum = counts.cumsum(0)
    b = int(torch.searchsorted(cum, k))  # the first bucket reaching k values
    before = int(cum[b - 1]) if b > 0 else 0
    inside = torch.cat([part[(part.view(torch.int32) >> 15) == b] for part in _chunks(flat, absolute)])
    kth = torch.kthvalue(inside, k - before).values
    return kth, before + int((inside < kth).count_nonzero()), int((inside == kth).count_nonzero())


BUCKETED_FROM = 1 << 16  # below this, a plain selection is as fast
CHUNK = 1 << 20  # values read at a time


def _chunks(flat: torch.Tensor, absolute: bool) -> Iterator[torch.Tensor]:
    for start in range(0, flat.numel(), CHUNK):
        part = flat[start : start + CHUNK]
        yield part.abs() if absolute else part


@register_pruner("unstructured")
def prune_unstructured(view: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the ``ratio`` smallest-magnitude weights of the layer (ties by position).

    Magnitudes are taken a chunk at a time: besides the mask, a chunk's worth of memory."""
    flat = view.reshape(-1)
    n = flat.numel()
    k = int(round(ratio * n))
    if k <= 0:
        return torch.ones(view.shape, dtype=torch.bool)
    threshold, below, equal = kth_smallest_counted(flat, k, absolute=True)
    keep = torch.empty(n, dtype=torch.bool)
    for start, part in zip(range(0, n, CHUNK), _chunks(flat, True)):
        torch.gt(part, threshold, out=keep[start : start + CHUNK])
    extra = k - below  # prune that many of the ties, first by position
    if extra < equal:  # some ties stay
        ties = torch.cat([torch.nonzero(part == threshold).flatten() + start for start, part in zip(range(0, n, CHUNK), _chunks(flat, True))])
        keep[ties[extra:]] = True
    return keep.reshape(view.shape)


@register_pruner("structured")
def prune_structured(view: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero whole output channels with the smallest L2 norm (at least one channel stays)."""
    channels = view.shape[0]
    k = min(int(round(ratio * channels)), channels - 1)
    keep = torch.ones(channels, dtype=torch.bool)
    if k > 0:
        order = torch.sort(view.norm(dim=1), stable=True).indices
        keep[order[:k]] = False
    return keep.unsqueeze(1).expand_as(view).clone()


def prune_nm(view: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest of every ``m`` consecutive weights along the fan-in."""
    rows, cols = view.shape
    pad = (-cols) % m
    mag = torch.cat([view.abs(), torch.full((rows, pad), -1.0)], dim=1) if pad else view.abs()
    groups = mag.reshape(rows, -1, m)
    top = groups.topk(n, dim=2).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, top, True)
    return keep.reshape(rows, -1)[:, :cols]


def prune_mask(view: torch.Tensor, ratio: float, method: str) -> torch.Tensor | None:
    """The keep-mask for ``method``, or None when nothing is pruned."""
    if ratio <= 0:
        return None
    if method in PRUNERS:
        return PRUNERS[method](view, ratio)
    nm = parse_nm(method)
    if nm is None:
        raise StudioError(f"unknown prune method {method!r}; use one of {PRUNERS.names()} or an N:M pattern such as '2:4'")
    return prune_nm(view, *nm)
