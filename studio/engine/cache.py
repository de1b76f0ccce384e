"""The compressed-weight cache: each (layer, spec) is compressed once, within a real-byte budget.

An entry's cost is the bytes it really holds (codes, scales, codebooks, masks, a
16-bit layer's float16 weights), not counting the float weights it refers to: an entry
holds the stored form only, and the dequantized weights are derived on use. The entries of the current plan are
pinned and never evicted, so a model bigger than the budget still answers ``size``
and ``evaluate`` for the current plan without recompressing anything.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable

from .compress import CompressedWeight


def entry_bytes(result: CompressedWeight) -> int:
    """Bytes that ``result`` holds beyond the float weights it was made from."""
    return result.nbytes


Key = Hashable


class WeightCache:
    """A thread-safe LRU of compressed weights with a byte budget and pinned entries."""

    def __init__(self, budget_bytes: int) -> None:  # the session's default: measure.default_cache_bytes
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[Key, tuple[CompressedWeight, int]] = OrderedDict()
        self._pinned: dict[str, frozenset[Key]] = {}  # pin group -> keys
        self._bytes = 0
        self._lock = threading.Lock()  # never held while compressing

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def get(self, key: Key, compute: Callable[[], CompressedWeight]) -> CompressedWeight:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit[0]
        result = compute()
        cost = entry_bytes(result)
        with self._lock:
            if key not in self._entries:
                self._entries[key] = (result, cost)
                self._bytes += cost
            self._evict()
            return self._entries[key][0] if key in self._entries else result

    def pin(self, group: str, keys: Iterable[Key]) -> None:
        """Keep ``keys`` (e.g. the current plan's entries) whatever the budget; replaces ``group``'s pins."""
        with self._lock:
            self._pinned[group] = frozenset(keys)
            self._evict()

    def _evict(self) -> None:
        pinned = frozenset().union(*self._pinned.values()) if self._pinned else frozenset()
        if self._bytes <= self.budget_bytes:
            return
        for key in list(self._entries):
            if self._bytes <= self.budget_bytes:
                break
            if key in pinned:
                continue
            _, cost = self._entries.pop(key)
            self._bytes -= cost
