"""Training data in any of the eval-data forms, reshuffled every epoch by a seeded generator.

The data is normalised by ``data.to_batches`` and, where the batches stack (same shapes
past the first dimension), joined into one set that is permuted sample by sample each
epoch. Batches that do not stack (e.g. padded to different lengths) are kept whole and
only their order is shuffled.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from .data import Batch, Inputs, batch_len, to_batches


def _cat(parts: list[Inputs]) -> Inputs:
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, Mapping):
        return {k: torch.cat([p[k] for p in parts]) for k in first}
    return tuple(torch.cat([p[i] for p in parts]) for i in range(len(first)))


def _take(inputs: Inputs, idx: torch.Tensor) -> Inputs:
    if isinstance(inputs, torch.Tensor):
        return inputs[idx]
    if isinstance(inputs, Mapping):
        return {k: v[idx] for k, v in inputs.items()}
    return tuple(v[idx] for v in inputs)


class TrainSet:
    def __init__(self, data: Any, batch_size: int) -> None:
        self.batch_size = batch_size
        batches = to_batches(data, batch_size, what="train_data")
        self.has_targets = batches[0][1] is not None
        self._batches = batches
        self._inputs: Inputs | None = None
        self._targets: torch.Tensor | None = None
        try:
            self._inputs = _cat([x for x, _ in batches])
            self._targets = torch.cat([t for _, t in batches if t is not None]) if self.has_targets else None  # all or none (to_batches)
        except (RuntimeError, TypeError, KeyError, IndexError):
            self._inputs = self._targets = None  # shapes differ: shuffle whole batches instead
        self.n_samples = sum(batch_len(x) for x, _ in batches)

    def __len__(self) -> int:
        if self._inputs is None:
            return len(self._batches)
        return -(-self.n_samples // self.batch_size)

    def epoch(self, generator: torch.Generator) -> Iterator[Batch]:
        """One pass in a fresh random order drawn from ``generator``."""
        if self._inputs is None:
            for i in torch.randperm(len(self._batches), generator=generator).tolist():
                yield self._batches[i]
            return
        order = torch.randperm(self.n_samples, generator=generator)
        for start in range(0, self.n_samples, self.batch_size):
            idx = order[start : start + self.batch_size]
            targets = None if self._targets is None else self._targets[idx]
            yield _take(self._inputs, idx), targets
