"""Huffman code lengths and the honest byte cost of a Huffman-coded stream.

Codes are canonical and at most ``MAX_CODE_BITS`` (16) bits long: the lengths are
Huffman's when its longest code fits, else the optimal length-limited ones
(package-merge). A coded stream (``bitstream.huffman_encode``) is:
- the table: one code-length byte per alphabet symbol;
- the block table: for every block of ``BLOCK_SYMBOLS`` symbols but the last, its
  length in bits minus ``BLOCK_SYMBOLS``, as a little-endian uint16 (a block of 4096
  codes of 1..16 bits takes 4096..65536 bits), so a decoder can start every block at
  once; a stream of at most 4096 symbols has none;
- the payload: the codes, most significant bit first, zero-padded to a whole byte.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

MAX_CODE_BITS = 16
BLOCK_SYMBOLS = 4096


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Optimal prefix-code length per symbol, at most ``MAX_CODE_BITS`` (0 for unused symbols)."""
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(len(counts), dtype=np.int64)
    used = np.flatnonzero(counts)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    depth = _huffman_depths(counts[used])
    if depth.max() > MAX_CODE_BITS:
        depth = _limited_depths(counts[used], MAX_CODE_BITS)
    lengths[used] = depth
    return lengths


def _huffman_depths(weights: np.ndarray) -> np.ndarray:
    # Build the tree with parent links (ties broken by node id, so it is deterministic),
    # then each leaf's depth is its code length.
    heap = [(int(w), i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    parent = [-1] * len(weights)
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
    return np.asarray(depth[: len(weights)], dtype=np.int64)


def _limited_depths(weights: np.ndarray, limit: int) -> np.ndarray:
    """Optimal code lengths of at most ``limit`` bits (package-merge, Larmore & Hirschberg).

    Each item is a weight and how many times it holds each symbol. Starting from the
    leaves, ``limit - 1`` times: pair up neighbouring items into packages and merge them
    with the leaves by weight. A symbol's length is how often it occurs in the first
    ``2n - 2`` items of the last list.
    """
    n = len(weights)
    if n > 1 << limit:
        raise ValueError(f"{n} symbols do not fit in codes of {limit} bits")
    order = np.argsort(weights, kind="stable")
    leaf_w = weights[order].astype(np.int64)
    leaf_m = np.eye(n, dtype=np.int32)
    items_w, items_m = leaf_w, leaf_m
    for _ in range(limit - 1):
        k = len(items_w) // 2 * 2
        w = np.concatenate([leaf_w, items_w[0:k:2] + items_w[1:k:2]])
        m = np.concatenate([leaf_m, items_m[0:k:2] + items_m[1:k:2]])
        merged = np.argsort(w, kind="stable")  # leaves first among equal weights
        items_w, items_m = w[merged], m[merged]
    depth = np.empty(n, dtype=np.int64)
    depth[order] = items_m[: 2 * n - 2].sum(axis=0)
    return depth


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codes (uint32) from code lengths: by length, then symbol, counting up."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.uint32)
    used = np.flatnonzero(lengths)
    if len(used) == 0:
        return codes
    order = used[np.lexsort((used, lengths[used]))]
    lens = lengths[order]
    per_length = np.bincount(lens, minlength=int(lens.max()) + 1)
    first, code = np.zeros(len(per_length), dtype=np.int64), 0
    for bits in range(1, len(per_length)):  # DEFLATE's next_code
        code = (code + int(per_length[bits - 1])) << 1
        first[bits] = code
    start_of_length = np.concatenate([[0], np.cumsum(per_length)])[lens]
    codes[order] = (first[lens] + np.arange(len(order)) - start_of_length).astype(np.uint32)
    return codes


def table_bytes(alphabet_size: int) -> int:
    """A canonical Huffman table stores one code length (one byte) per alphabet symbol."""
    return int(alphabet_size)


def block_table_bytes(count: int) -> int:
    """Two bytes for every block of ``BLOCK_SYMBOLS`` symbols but the last."""
    return 2 * max(0, math.ceil(int(count) / BLOCK_SYMBOLS) - 1)


def huffman_bytes(counts: np.ndarray) -> int:
    """Every byte of the Huffman-coded stream with these counts: tables and payload."""
    counts = np.asarray(counts, dtype=np.int64)
    payload_bits = int((counts * code_lengths(counts)).sum())
    return math.ceil(payload_bits / 8) + table_bytes(len(counts)) + block_table_bytes(int(counts.sum()))
