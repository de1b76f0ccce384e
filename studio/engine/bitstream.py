"""Bit-level codecs for the studio format: fixed-width packing and canonical Huffman.

Their output sizes are exactly what ``encode.stream_bytes`` counts: ``ceil(n*width/8)``
for packing, and for Huffman ``huffman.huffman_bytes`` (one byte of code length per
alphabet symbol, two bytes per block of 4096 symbols but the last, then
``ceil(payload_bits/8)`` bytes).

Everything is vectorized with NumPy and works through the symbols in chunks, so the
extra memory stays a few tens of MB whatever the layer's size. Huffman decoding runs
all blocks in lockstep: one step decodes one symbol of every block.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .huffman import BLOCK_SYMBOLS, MAX_CODE_BITS, canonical_codes, code_lengths

CHUNK = 1 << 20  # symbols per chunk; a multiple of 8 and of BLOCK_SYMBOLS
SMALL_DECODE = 20 * BLOCK_SYMBOLS  # up to this many symbols a plain loop is faster than the lockstep

__all__ = ["pack", "unpack", "huffman_encode", "huffman_decode", "symbol_counts", "canonical_codes", "uint_dtype"]


def uint_dtype(bits: int) -> type:
    """The smallest unsigned integer dtype holding ``bits`` bits."""
    return np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32 if bits <= 32 else np.uint64


def symbol_counts(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    """``np.bincount(symbols, minlength=alphabet)`` in chunks, with no int64 copy of the input."""
    symbols = np.asarray(symbols).reshape(-1)
    counts = np.zeros(alphabet, dtype=np.int64)
    for start in range(0, len(symbols), CHUNK):
        part = symbols[start : start + CHUNK]
        if part.dtype == np.uint8:  # torch counts bytes without widening them first
            part_counts = torch.bincount(torch.from_numpy(np.ascontiguousarray(part)), minlength=alphabet).numpy()
        else:
            part_counts = np.bincount(part, minlength=alphabet)
        if len(part_counts) > alphabet:
            raise ValueError(f"a symbol is outside the alphabet of {alphabet}")
        counts += part_counts
    return counts


# -- fixed-width packing ---------------------------------------------------------------
def pack(symbols: np.ndarray, width: int) -> bytes:
    """Non-negative integers, ``width`` bits each (1..32), most significant bit first."""
    symbols = np.asarray(symbols).reshape(-1)
    n = len(symbols)
    out = np.zeros(math.ceil(n * width / 8), dtype=np.uint8)
    mask = np.uint64((1 << width) - 1)
    for start in range(0, n, CHUNK):
        part = symbols[start : start + CHUNK]
        groups = -(-len(part) // 8)
        if width <= 8:  # 8 symbols fill `width` whole bytes: build them in one uint64
            padded = np.zeros(groups * 8, dtype=np.uint64)
            padded[: len(part)] = part
            padded &= mask
            grid = padded.reshape(groups, 8)
            acc = grid[:, 7].copy()
            for i in range(7):
                acc |= grid[:, i] << np.uint64(width * (7 - i))
            chunk = acc.astype(">u8").view(np.uint8).reshape(groups, 8)[:, 8 - width :].reshape(-1)
        else:
            shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
            bits = ((part.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
            chunk = np.packbits(bits.reshape(-1))
        first = start * width // 8
        stop = min(len(out), first + len(chunk))
        out[first:stop] = chunk[: stop - first]
    return out.tobytes()


def unpack(data: bytes, width: int, count: int) -> np.ndarray:
    """The inverse of ``pack``: ``count`` symbols in the smallest unsigned dtype."""
    buf = np.frombuffer(data, dtype=np.uint8)
    need = math.ceil(count * width / 8)
    if len(buf) < need:
        raise ValueError("the packed stream is truncated")
    out: np.ndarray = np.empty(count, dtype=uint_dtype(width))
    mask = np.uint64((1 << width) - 1)
    for start in range(0, count, CHUNK):
        m = min(CHUNK, count - start)
        groups = -(-m // 8)
        if width <= 8:
            first = start * width // 8
            raw = np.zeros(groups * width, dtype=np.uint8)
            avail = buf[first : first + groups * width]
            raw[: len(avail)] = avail
            grid = raw.reshape(groups, width).astype(np.uint64)
            acc = grid[:, 0].copy()
            for j in range(1, width):
                acc = (acc << np.uint64(8)) | grid[:, j]
            syms = np.empty((groups, 8), dtype=np.uint64)
            for i in range(8):
                syms[:, i] = (acc >> np.uint64(width * (7 - i))) & mask
            out[start : start + m] = syms.reshape(-1)[:m]
        else:
            first, stop = start * width, (start + m) * width
            bits = np.unpackbits(buf[first // 8 : -(-stop // 8)])[first % 8 : first % 8 + m * width]
            weights = (np.uint64(1) << np.arange(width - 1, -1, -1, dtype=np.uint64))
            out[start : start + m] = (bits.reshape(m, width).astype(np.uint64) * weights).sum(axis=1)
    return out


# -- Huffman ---------------------------------------------------------------------------
def huffman_encode(symbols: np.ndarray, alphabet: int) -> bytes:
    """Table, block table and payload (see ``huffman``); ``huffman_bytes`` counts exactly these."""
    symbols = np.asarray(symbols).reshape(-1)
    n = len(symbols)
    counts = symbol_counts(symbols, alphabet)
    lengths = code_lengths(counts)
    codes = canonical_codes(lengths)
    total_bits = int((counts * lengths).sum())
    words = np.zeros(total_bits // 32 + 2, dtype=">u4")  # the payload as big-endian 32-bit words
    n_blocks = -(-n // BLOCK_SYMBOLS)
    block_ends = np.empty(n_blocks, dtype=np.int64)
    pair_tables = _pair_tables(codes, lengths)
    per_block = BLOCK_SYMBOLS if pair_tables is None else BLOCK_SYMBOLS // 2  # items per block
    base = 0
    for start in range(0, n, CHUNK):
        part = symbols[start : start + CHUNK]
        if pair_tables is None:
            code, lens = codes.astype(np.uint64)[part], lengths.astype(np.uint8)[part]
        else:  # two symbols per item: half the scattering
            pair_code, pair_len = pair_tables
            pairs = _pair_index(part, alphabet)
            code, lens = pair_code[pairs], pair_len[pairs]
        ends = np.cumsum(lens, dtype=np.int64)
        marks = ends[per_block - 1 :: per_block]
        if len(marks) < -(-len(part) // BLOCK_SYMBOLS):  # a last, partial block
            marks = np.append(marks, ends[-1])
        first_block = start // BLOCK_SYMBOLS
        block_ends[first_block : first_block + len(marks)] = marks + base
        if len(ends) == 0:
            continue
        starts = ends - lens
        starts += base
        shift = (64 - lens.astype(np.int64) - (starts & 31)).astype(np.uint64)
        value = code << shift  # the code's bits at their place in two 32-bit words
        word = starts >> 5
        w0 = int(word[0])
        word -= w0
        high = np.bincount(word, weights=(value >> np.uint64(32)).astype(np.float64))
        low = np.bincount(word, weights=(value & np.uint64(0xFFFFFFFF)).astype(np.float64))
        words[w0 : w0 + len(high)] |= high.astype(np.uint32)  # codes never overlap: sums are ORs
        words[w0 + 1 : w0 + 1 + len(low)] |= low.astype(np.uint32)
        base = int(ends[-1]) + base
    payload = words.view(np.uint8)[: math.ceil(total_bits / 8)]
    block_bits = np.diff(np.concatenate([[0], block_ends]))[:-1] - BLOCK_SYMBOLS
    table = lengths.astype(np.uint8).tobytes() + block_bits.astype("<u2").tobytes()
    return b"".join([table, payload.data])


def _pair_tables(codes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Codes and lengths of every symbol pair (plus a zero-length pad symbol), for small alphabets."""
    a = len(codes)
    if a > 256:
        return None
    c = np.append(codes.astype(np.uint64), np.uint64(0))
    ln = np.append(lengths.astype(np.uint64), np.uint64(0))
    pair_code = (c[:, None] << ln[None, :]) | c[None, :]
    pair_len = (ln[:, None] + ln[None, :]).astype(np.uint8)
    return pair_code.reshape(-1), pair_len.reshape(-1)


def _pair_index(part: np.ndarray, alphabet: int) -> np.ndarray:
    m = len(part)
    first = part[0:m:2].astype(np.int32)
    second = np.full(len(first), alphabet, dtype=np.int32)  # the pad symbol when m is odd
    second[: m // 2] = part[1:m:2]
    first *= alphabet + 1
    first += second
    return first


def huffman_decode(data: bytes, alphabet: int, count: int) -> np.ndarray:
    """``count`` symbols (smallest unsigned dtype) from a stream written by ``huffman_encode``."""
    out_dtype = uint_dtype(max(1, (alphabet - 1).bit_length()))
    if count == 0:
        return np.zeros(0, dtype=out_dtype)
    n_blocks = -(-count // BLOCK_SYMBOLS)
    head = alphabet + 2 * (n_blocks - 1)
    if len(data) < head:
        raise ValueError("the Huffman stream is truncated")
    lengths = np.frombuffer(data, dtype=np.uint8, count=alphabet).astype(np.int64)
    used = lengths[lengths > 0]
    if len(used) == 0 or used.max() > MAX_CODE_BITS or (np.int64(1) << (MAX_CODE_BITS - used)).sum() > 1 << MAX_CODE_BITS:
        raise ValueError("the Huffman table is damaged")  # no codes, too long, or not a prefix code
    block_bits = np.frombuffer(data, dtype="<u2", count=n_blocks - 1, offset=alphabet).astype(np.int64) + BLOCK_SYMBOLS
    starts = np.concatenate([[0], np.cumsum(block_bits)])
    payload_bits = 8 * (len(data) - head)
    lut_sym, lut_len = _decode_tables(lengths, out_dtype)
    # the payload, zero-padded so that a window read past the end stays inside the buffer
    pad = 4 + 2 * BLOCK_SYMBOLS
    buf = np.zeros(len(data) - head + pad, dtype=np.uint8)
    buf[: len(data) - head] = np.frombuffer(data, dtype=np.uint8, offset=head)
    if count <= SMALL_DECODE:
        try:
            out, marks = _decode_loop(buf, lut_sym, lut_len, count)
        except IndexError:  # ran off the end: the lengths do not fit the data
            raise ValueError("the Huffman stream is damaged") from None
        ok = bool(np.array_equal(marks[:-1], starts[1:])) and marks[-1] <= payload_bits
    else:
        out, ends = _decode_lockstep(buf, lut_sym, lut_len, starts, count)
        ok = bool(np.array_equal(ends[:-1], starts[1:])) and ends[-1] <= payload_bits
    if not ok or starts[-1] > payload_bits:
        raise ValueError("the Huffman stream is damaged")
    return out


def _decode_tables(lengths: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Symbol and code length for every 16-bit window (the code is its leading bits)."""
    codes = canonical_codes(lengths).astype(np.int64)
    lut_sym: np.ndarray = np.zeros(1 << MAX_CODE_BITS, dtype=dtype)
    lut_len = np.full(1 << MAX_CODE_BITS, MAX_CODE_BITS, dtype=np.int64)  # not a code: damaged data
    for sym in np.flatnonzero(lengths):
        shift = MAX_CODE_BITS - int(lengths[sym])
        lo, hi = int(codes[sym]) << shift, (int(codes[sym]) + 1) << shift
        lut_sym[lo:hi] = sym
        lut_len[lo:hi] = lengths[sym]
    return lut_sym, lut_len


def _windows(buf: np.ndarray) -> np.ndarray:
    """The big-endian 32-bit word starting at every byte of ``buf`` (a strided view, no copy)."""
    return np.ndarray((len(buf) - 3,), dtype=">u4", buffer=buf, strides=(1,))


def _decode_lockstep(buf: np.ndarray, lut_sym: np.ndarray, lut_len: np.ndarray, starts: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    n_blocks = len(starts)
    steps = np.empty((BLOCK_SYMBOLS, n_blocks), dtype=lut_sym.dtype)  # step j: symbol j of every block
    words = _windows(buf)
    limit = len(words) - 1
    pos = starts.astype(np.int64)
    last = (count - 1) % BLOCK_SYMBOLS
    lengths = lut_len.astype(np.int64)
    for j in range(BLOCK_SYMBOLS):  # the last block decodes padding past its end; cut below
        window = words[np.minimum(pos >> 3, limit)].astype(np.int64)
        window >>= 16 - (pos & 7)
        window &= 0xFFFF
        np.take(lut_sym, window, out=steps[j], mode="clip")  # "clip": no buffering
        pos += lengths[window]
        if j == last:
            last_end = int(pos[-1])
    ends = pos.copy()
    ends[-1] = last_end
    out = np.empty((n_blocks, BLOCK_SYMBOLS), dtype=steps.dtype)
    for j in range(0, BLOCK_SYMBOLS, 256):  # transposed in strips, kinder to the cache
        out[:, j : j + 256] = steps[j : j + 256].T
    return out.reshape(-1)[:count], ends


def _decode_loop(buf: np.ndarray, lut_sym: np.ndarray, lut_len: np.ndarray, count: int) -> tuple[np.ndarray, list[int]]:
    """One symbol after another; also returns where each block ended (the last: the stream)."""
    words = _windows(buf).tolist()
    syms, lens = lut_sym.tolist(), lut_len.tolist()
    out = [0] * count
    ends = []
    pos = 0
    for k in range(count):
        if k and k % BLOCK_SYMBOLS == 0:
            ends.append(pos)
        idx = (words[pos >> 3] >> (16 - (pos & 7))) & 0xFFFF
        out[k] = syms[idx]
        pos += lens[idx]
    ends.append(pos)
    return np.asarray(out, dtype=lut_sym.dtype), ends
