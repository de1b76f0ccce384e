"""Bit-level codecs for the studio format: fixed-width packing and canonical Huffman.

Their output sizes are exactly what ``encode.stream_bytes`` counts: ``ceil(n*width/8)``
for packing, and for Huffman one byte of code length per alphabet symbol followed by
``ceil(payload_bits/8)`` bytes.
"""

from __future__ import annotations

import numpy as np

from .huffman import code_lengths

LUT_MAX_BITS = 22


def pack(symbols: np.ndarray, width: int) -> bytes:
    """Non-negative integers, ``width`` bits each, most significant bit first."""
    symbols = np.asarray(symbols, dtype=np.int64)
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    bits = ((symbols[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1)).tobytes()


def unpack(data: bytes, width: int, count: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * width].astype(np.int64)
    weights = 1 << np.arange(width - 1, -1, -1, dtype=np.int64)
    return bits.reshape(count, width) @ weights if count else np.zeros(0, dtype=np.int64)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical Huffman codes from code lengths (symbols ordered by length, then value)."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, 0
    for sym in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[sym]) - prev
        codes[sym] = code
        prev = int(lengths[sym])
        code += 1
    return codes


def huffman_encode(symbols: np.ndarray, alphabet: int) -> bytes:
    symbols = np.asarray(symbols, dtype=np.int64)
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet))
    codes = canonical_codes(lengths)
    lens = lengths[symbols]
    total = int(lens.sum())
    owner = np.repeat(np.arange(len(symbols)), lens)
    offset = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
    bits = ((codes[symbols][owner] >> (lens[owner] - 1 - offset)) & 1).astype(np.uint8)
    return lengths.astype(np.uint8).tobytes() + np.packbits(bits).tobytes()


def huffman_decode(data: bytes, alphabet: int, count: int) -> np.ndarray:
    lengths = np.frombuffer(data[:alphabet], dtype=np.uint8).astype(np.int64)
    codes = canonical_codes(lengths)
    bits = np.unpackbits(np.frombuffer(data[alphabet:], dtype=np.uint8)).astype(np.int64)
    out = np.zeros(count, dtype=np.int64)
    if count == 0:
        return out
    top = int(lengths.max())
    if top > LUT_MAX_BITS:
        return _decode_slow(bits, lengths, codes, count)
    padded = np.concatenate([bits, np.zeros(top, dtype=np.int64)])
    windows = np.zeros(len(bits), dtype=np.int64)
    for j in range(top):  # the next `top` bits at every position, as an integer
        windows = (windows << 1) | padded[j : j + len(bits)]
    lut = np.zeros(1 << top, dtype=np.int64)
    for sym in np.flatnonzero(lengths):
        shift = top - int(lengths[sym])
        lut[int(codes[sym]) << shift : (int(codes[sym]) + 1) << shift] = sym
    pos = 0
    lens = lengths.tolist()
    win = windows.tolist()
    table = lut.tolist()
    result = out.tolist()
    for k in range(count):
        sym = table[win[pos]]
        result[k] = sym
        pos += lens[sym]
    return np.asarray(result, dtype=np.int64)


def _decode_slow(bits: np.ndarray, lengths: np.ndarray, codes: np.ndarray, count: int) -> np.ndarray:
    lookup = {(int(lengths[s]), int(codes[s])): int(s) for s in np.flatnonzero(lengths)}
    out, pos = [], 0
    while len(out) < count:
        code, length = 0, 0
        while (length, code) not in lookup:
            code = (code << 1) | int(bits[pos])
            pos += 1
            length += 1
        out.append(lookup[(length, code)])
    return np.asarray(out, dtype=np.int64)
