"""Honest storage size of one compressed weight: every byte that would be written.

A layer is stored as four parts:
- codes:  the weight codes, bit-packed at their width or Huffman-coded (payload plus
          a canonical table of one byte per alphabet symbol), whichever is smaller;
- scales: scales and zero-points, or the k-means codebook;
- index:  where the non-zero weights are, for a pruned layer stored sparse: the
          cheapest of a bitmask, a channel mask (structured pruning) and Deep
          Compression's relative index (gaps of r bits, with filler zeros stored
          as extra codes when a gap overflows; r searched over 1..8 bits);
- other:  the bias and anything else the layer keeps in float32.
A pruned layer may also stay dense (codes for the zeros too) when that is cheaper.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from .huffman import huffman_bytes

MAX_GAP_BITS = 8


@dataclass(frozen=True)
class LayerSize:
    """Bytes of one layer, by part. ``total`` is their sum."""

    codes: int
    scales: int
    index: int
    other: int
    codes_encoding: str = "packed"
    index_encoding: str = "dense"
    entries: int = 0  # codes stored (kept weights, filler zeros included)

    @property
    def total(self) -> int:
        return self.codes + self.scales + self.index + self.other

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["total"] = self.total
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerSize":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclass
class StreamSpec:
    """What is being stored: codes of ``width`` bits over an ``alphabet`` (None: raw floats).

    ``symbols`` is the (rows, cols) array of non-negative code symbols and
    ``zero_symbol[row]`` the symbol that decodes to exactly 0.0 in that row.
    """

    shape: tuple[int, int]
    width: int
    alphabet: int | None = None
    symbols: torch.Tensor | None = None
    zero_symbol: np.ndarray | None = None


def stream_bytes(symbols: np.ndarray | None, count: int, width: int, alphabet: int | None, huffman: bool) -> tuple[int, str]:
    """Cheaper of bit-packing and Huffman coding for ``count`` symbols."""
    packed = math.ceil(count * width / 8)
    if huffman and alphabet is not None and symbols is not None and count > 0:
        coded = huffman_bytes(np.bincount(symbols, minlength=alphabet))
        if coded < packed:
            return coded, "huffman"
    return packed, "packed" if alphabet is not None else f"float{width}"


@dataclass(frozen=True)
class _Candidate:
    codes: int
    index: int
    codes_encoding: str
    index_encoding: str
    entries: int

    @property
    def total(self) -> int:
        return self.codes + self.index


def _relative(stream: StreamSpec, keep_flat: np.ndarray, sym_flat: np.ndarray | None, cols: int, huffman: bool, r: int) -> _Candidate:
    """Deep Compression's relative index with ``r``-bit gaps and filler zeros."""
    pos = np.flatnonzero(keep_flat)
    prev = np.concatenate([[-1], pos[:-1]])
    gaps = pos - prev - 1
    span = 1 << r
    fillers = gaps >> r
    n_fill = int(fillers.sum())
    gap_symbols = np.concatenate([gaps & (span - 1), np.full(n_fill, span - 1)])
    index, index_enc = stream_bytes(gap_symbols, len(gap_symbols), r, span, huffman)
    code_symbols = None
    if sym_flat is not None and stream.zero_symbol is not None:
        starts = np.repeat(prev, fillers)
        step = np.arange(n_fill) - np.repeat(np.cumsum(fillers) - fillers, fillers) + 1
        filler_rows = (starts + step * span) // cols
        code_symbols = np.concatenate([sym_flat[pos], stream.zero_symbol[filler_rows]])
    codes, codes_enc = stream_bytes(code_symbols, len(pos) + n_fill, stream.width, stream.alphabet, huffman)
    index_name = f"relative-{r}bit" + ("+huffman" if index_enc == "huffman" else "")
    return _Candidate(codes, index, codes_enc, index_name, len(pos) + n_fill)


def encode_size(stream: StreamSpec, keep: torch.Tensor | None, *, huffman: bool, scale_bytes: int, other_bytes: int) -> LayerSize:
    """The cheapest honest encoding of a (possibly pruned) weight, as a LayerSize."""
    sym = stream.symbols.numpy().astype(np.int64) if stream.symbols is not None else None
    rows, cols = stream.shape
    numel = rows * cols
    sym_flat = sym.reshape(-1) if sym is not None else None

    def dense() -> _Candidate:
        codes, enc = stream_bytes(sym_flat, numel, stream.width, stream.alphabet, huffman)
        return _Candidate(codes, 0, enc, "dense", numel)

    if keep is None:
        best = dense()
        return LayerSize(best.codes, scale_bytes, 0, other_bytes, best.codes_encoding, best.index_encoding, best.entries)

    keep_np = keep.numpy()
    keep_flat = keep_np.reshape(-1)
    kept_syms = sym_flat[keep_flat] if sym_flat is not None else None
    n_kept = int(keep_flat.sum())
    candidates = [dense()]
    rows_all_or_none = bool(np.all(keep_np.all(axis=1) | ~keep_np.any(axis=1)))
    if rows_all_or_none:
        codes, enc = stream_bytes(kept_syms, n_kept, stream.width, stream.alphabet, huffman)
        candidates.append(_Candidate(codes, math.ceil(rows / 8), enc, "channel-mask", n_kept))
    codes, enc = stream_bytes(kept_syms, n_kept, stream.width, stream.alphabet, huffman)
    candidates.append(_Candidate(codes, math.ceil(numel / 8), enc, "bitmask", n_kept))
    if stream.zero_symbol is not None or stream.alphabet is None:
        for r in range(1, MAX_GAP_BITS + 1):
            candidates.append(_relative(stream, keep_flat, sym_flat, cols, huffman, r))
    best = min(candidates, key=lambda c: c.total)
    return LayerSize(best.codes, scale_bytes, best.index, other_bytes, best.codes_encoding, best.index_encoding, best.entries)
