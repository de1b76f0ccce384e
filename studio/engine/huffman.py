"""Huffman code lengths and the honest byte cost of a Huffman-coded stream."""

from __future__ import annotations

import heapq
import math

import numpy as np


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Optimal prefix-code length per symbol (0 for symbols that never occur)."""
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(len(counts), dtype=np.int64)
    used = np.flatnonzero(counts)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    heap: list[tuple[int, int, list[int]]] = [(int(counts[s]), int(s), [int(s)]) for s in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        c1, t1, s1 = heapq.heappop(heap)
        c2, t2, s2 = heapq.heappop(heap)
        for s in s1:
            lengths[s] += 1
        for s in s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, min(t1, t2), s1 + s2))
    return lengths


def table_bytes(alphabet_size: int) -> int:
    """A canonical Huffman table stores one code length (one byte) per alphabet symbol."""
    return int(alphabet_size)


def huffman_bytes(counts: np.ndarray) -> int:
    """Payload bytes plus table bytes of the Huffman-coded stream with these counts."""
    counts = np.asarray(counts, dtype=np.int64)
    payload_bits = int((counts * code_lengths(counts)).sum())
    return math.ceil(payload_bits / 8) + table_bytes(len(counts))
