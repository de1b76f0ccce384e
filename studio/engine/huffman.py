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
    # Build the tree with parent links (ties broken by node id, so it is deterministic),
    # then each leaf's depth is its code length.
    heap = [(int(counts[s]), i) for i, s in enumerate(used)]
    heapq.heapify(heap)
    parent = [-1] * len(used)
    while len(heap) > 1:
        c1, n1 = heapq.heappop(heap)
        c2, n2 = heapq.heappop(heap)
        node = len(parent)
        parent.append(-1)
        parent[n1] = parent[n2] = node
        heapq.heappush(heap, (c1 + c2, node))
    depth = [0] * len(parent)
    for node in range(len(parent) - 2, -1, -1):  # parents are created after their children
        depth[node] = depth[parent[node]] + 1
    lengths[used] = depth[: len(used)]
    return lengths


def table_bytes(alphabet_size: int) -> int:
    """A canonical Huffman table stores one code length (one byte) per alphabet symbol."""
    return int(alphabet_size)


def huffman_bytes(counts: np.ndarray) -> int:
    """Payload bytes plus table bytes of the Huffman-coded stream with these counts."""
    counts = np.asarray(counts, dtype=np.int64)
    payload_bits = int((counts * code_lengths(counts)).sum())
    return math.ceil(payload_bits / 8) + table_bytes(len(counts))
