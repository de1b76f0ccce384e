"""What the incremental runner keeps between passes, and how it chooses.

An :class:`Entry` is one kept call output with its tensors' version counters (or, for an
output that its callers modify in place, a private copy); a
:class:`Trace` is one batch's sequence of module calls. :func:`choose_kept` picks the
calls worth keeping within a byte budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

INF = 1 << 62


def _leaves(value: Any, out: list[torch.Tensor]) -> bool:
    """Collect the tensors in an output; False when it holds something we cannot check."""
    if isinstance(value, torch.Tensor):
        out.append(value)
        return True
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (tuple, list)):
        return all(_leaves(v, out) for v in value)
    if isinstance(value, Mapping):  # dicts, and Hugging Face ModelOutput (an OrderedDict)
        return all(_leaves(v, out) for v in value.values())
    return False


@dataclass
class Entry:
    """A kept call output, with the version of each of its tensors when it was kept."""

    value: Any
    leaves: tuple[torch.Tensor, ...]
    versions: tuple[int, ...]
    nbytes: int

    copied: bool = False  # a private copy: handed back as a fresh copy each time

    @classmethod
    def of(cls, value: Any, copy: bool = False) -> Entry | None:
        """The entry for ``value``; with ``copy`` (for a tensor that its callers modify in
        place after the call, e.g. a convolution followed by an in-place ReLU) a copy of it."""
        if copy and isinstance(value, torch.Tensor):
            value = value.clone()
        else:
            copy = False
        leaves: list[torch.Tensor] = []
        if not _leaves(value, leaves):
            return None
        storages = {(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) for t in leaves}
        return cls(value, tuple(leaves), tuple(t._version for t in leaves), sum(n for _, n in storages), copy)

    def intact(self) -> bool:
        return all(t._version == v for t, v in zip(self.leaves, self.versions))

    def handed(self) -> Any:
        """The value to hand back: a fresh copy of a private one, which callers may modify."""
        return self.value.clone() if self.copied else self.value


@dataclass
class Trace:
    """One batch's module calls in the last pass: who was called, and where each call ended."""

    mods: list[int]
    ends: list[int]
    first: dict[int, int] = field(default_factory=dict)  # module index -> its first call

    def __post_init__(self) -> None:
        for i, m in enumerate(self.mods):
            self.first.setdefault(m, i)


def choose_kept(
    ends: np.ndarray, times: np.ndarray, sizes: np.ndarray, boundaries: np.ndarray, excluded: set[int], budget: float
) -> set[int]:
    """The calls to keep: greedy on compute skipped per byte, averaged over a change at each boundary.

    Call ``i`` starts at index ``i`` and ends at ``ends[i]`` (the calls nested in it lie
    between); it took ``times[i]`` seconds, nested calls included, and its output holds
    ``sizes[i]`` bytes. A change whose first call is at boundary ``b`` can hand back a
    kept call that ends by ``b`` unless a kept call enclosing it also ends by ``b``. So
    keeping ``c`` saves ``times[c]`` minus what its topmost kept descendants already
    save, for each boundary from ``ends[c]`` up to the end of its nearest kept ancestor.
    """
    n = len(ends)
    bounds = np.sort(np.asarray(boundaries, dtype=np.int64))
    parent = np.full(n, -1, dtype=np.int64)
    stack: list[int] = []
    for i in range(n):
        while stack and ends[stack[-1]] <= i:
            stack.pop()
        parent[i] = stack[-1] if stack else -1
        stack.append(i)
    candidate = (sizes > 0) & np.asarray([i not in excluded for i in range(n)], dtype=bool)
    until = np.full(n, INF, dtype=np.int64)  # end of the nearest kept ancestor
    covered = np.zeros(n, dtype=np.float64)  # time saved by the topmost kept descendants
    chosen = np.zeros(n, dtype=bool)
    remaining = float(budget)
    while True:
        counts = np.searchsorted(bounds, until, "left") - np.searchsorted(bounds, ends, "left")
        gain = (times - covered) * np.maximum(counts, 0)
        usable = candidate & ~chosen & (sizes <= remaining) & (gain > 0)
        if not usable.any():
            break
        c = int(np.argmax(np.where(usable, gain / np.maximum(sizes, 1.0), -1.0)))
        chosen[c] = True
        remaining -= sizes[c]
        delta = times[c] - covered[c]
        a = int(parent[c])
        while a >= 0:  # c now covers its descendants for every ancestor up to the first kept one
            covered[a] += delta
            if chosen[a]:
                break
            a = int(parent[a])
        until[c + 1 : ends[c]] = np.minimum(until[c + 1 : ends[c]], ends[c])
    return {int(i) for i in np.flatnonzero(chosen)}
