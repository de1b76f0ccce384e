"""Honest storage size of one compressed weight: every byte that would be written.

A layer is stored as four parts:
- codes:  the weight codes, bit-packed at their width or Huffman-coded (payload plus
          a canonical table of one byte per alphabet symbol and a block table of two
          bytes per 4096 codes after the first 4096; see ``huffman``), whichever is smaller;
- scales: scales and zero-points, or the k-means codebook;
- index:  where the non-zero weights are, for a pruned layer stored sparse: the
          cheapest of a bitmask, a channel mask (structured pruning) and Deep
          Compression's relative index (gaps of r bits, with filler zeros stored
          as extra codes when a gap overflows; r searched over 1..8 bits; the rules
          are in ``relindex``, shared with the writer);
- other:  the bias and anything else the layer keeps in float32.
A pruned layer may also stay dense (codes for the zeros too) when that is cheaper.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .bitstream import symbol_counts
from .huffman import huffman_bytes
from .relindex import MAX_GAP_BITS, SEGMENT, GapStats, gap_stats


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
    def from_dict(cls, data: Mapping[str, Any]) -> LayerSize:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclass
class StreamSpec:
    """What is being stored: codes of ``width`` bits over an ``alphabet`` (None: raw floats).

    ``symbols`` is the (rows, cols) tensor of non-negative code symbols (uint8 for
    alphabets up to 256) and ``zero_symbol[row]`` the symbol that decodes to exactly
    0.0 in that row.
    """

    shape: tuple[int, int]
    width: int
    alphabet: int | None = None
    symbols: torch.Tensor | None = None
    zero_symbol: np.ndarray | None = None


def stream_bytes(symbols: np.ndarray | None, count: int, width: int, alphabet: int | None, huffman: bool) -> tuple[int, str]:
    """Cheaper of bit-packing and Huffman coding for ``count`` symbols."""
    counts = None
    if huffman and alphabet is not None and symbols is not None and count > 0:
        counts = symbol_counts(symbols, alphabet)
    return counted_stream_bytes(counts, count, width, alphabet, huffman)


def counted_stream_bytes(counts: np.ndarray | None, count: int, width: int, alphabet: int | None, huffman: bool) -> tuple[int, str]:
    """``stream_bytes`` from the symbols' counts (None when Huffman is not an option)."""
    packed = math.ceil(count * width / 8)
    if huffman and alphabet is not None and counts is not None and count > 0:
        coded = huffman_bytes(counts)
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


def _relative(stream: StreamSpec, stats: GapStats, kept_counts: np.ndarray | None, huffman: bool, r: int) -> _Candidate:
    """Deep Compression's relative index with ``r``-bit gaps and filler zeros (see ``relindex``)."""
    span = 1 << r
    n_fill = stats.fillers(r)
    entries = stats.kept + n_fill
    index, index_enc = counted_stream_bytes(stats.gap_counts(r) if huffman else None, entries, r, span, huffman)
    code_counts = None
    zero, alphabet = stream.zero_symbol, stream.alphabet
    if kept_counts is not None and zero is not None and alphabet is not None:  # coded: fillers store the zero's symbol
        code_counts = kept_counts.copy()
        if stats.fill_rows is None:  # every row's zero has the same code
            code_counts[int(zero[0])] += n_fill
        else:
            code_counts += np.bincount(zero, weights=stats.fill_rows[r], minlength=alphabet).astype(np.int64)
    codes, codes_enc = counted_stream_bytes(code_counts, entries, stream.width, stream.alphabet, huffman)
    index_name = f"relative-{r}bit" + ("+huffman" if index_enc == "huffman" else "")
    return _Candidate(codes, index, codes_enc, index_name, entries)


def _counts(symbols: torch.Tensor, keep: torch.Tensor | None, alphabet: int) -> tuple[np.ndarray, np.ndarray | None]:
    """How often each symbol occurs, in all weights and in the kept ones: one pass that
    counts ``symbol + alphabet * kept``."""
    flat = symbols.reshape(-1)
    if keep is None:
        return symbol_counts(flat.numpy(), alphabet), None
    keep_flat = keep.reshape(-1)
    joint = torch.zeros(2 * alphabet, dtype=torch.int64)
    for start in range(0, flat.numel(), SEGMENT):
        key = flat[start : start + SEGMENT].to(torch.int16)
        key += keep_flat[start : start + SEGMENT].to(torch.int16) * alphabet
        joint += torch.bincount(key, minlength=2 * alphabet)
    kept = joint[alphabet:].numpy()
    return joint[:alphabet].numpy() + kept, kept.copy()


def encode_size(stream: StreamSpec, keep: torch.Tensor | None, *, huffman: bool, scale_bytes: int, other_bytes: int) -> LayerSize:
    """The cheapest honest encoding of a (possibly pruned) weight, as a LayerSize."""
    rows, cols = stream.shape
    numel = rows * cols
    all_counts: np.ndarray | None = None
    kept_counts: np.ndarray | None = None
    if huffman and stream.alphabet is not None and stream.symbols is not None:
        all_counts, kept_counts = _counts(stream.symbols, keep, stream.alphabet)
    coded = all_counts is not None
    codes, enc = counted_stream_bytes(all_counts, numel, stream.width, stream.alphabet, huffman)
    candidates = [_Candidate(codes, 0, enc, "dense", numel)]
    if keep is not None:
        keep_np = keep.numpy()
        keep_flat = keep_np.reshape(-1)
        n_kept = int(np.count_nonzero(keep_flat))
        codes, enc = counted_stream_bytes(kept_counts, n_kept, stream.width, stream.alphabet, huffman)
        if bool(np.all(keep_np.all(axis=1) | ~keep_np.any(axis=1))):
            candidates.append(_Candidate(codes, math.ceil(rows / 8), enc, "channel-mask", n_kept))
        candidates.append(_Candidate(codes, math.ceil(numel / 8), enc, "bitmask", n_kept))
        if stream.zero_symbol is not None or stream.alphabet is None:
            per_row = coded and stream.zero_symbol is not None and len(np.unique(stream.zero_symbol)) > 1
            stats = gap_stats(keep_flat, cols, rows if per_row else None)
            for r in range(1, MAX_GAP_BITS + 1):
                candidates.append(_relative(stream, stats, kept_counts, huffman, r))
    best = min(candidates, key=lambda c: c.total)
    return LayerSize(best.codes, scale_bytes, best.index, other_bytes, best.codes_encoding, best.index_encoding, best.entries)
