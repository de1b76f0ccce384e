"""Deep Compression's relative index: r-bit gaps between stored weights, with filler zeros.

The one implementation of its rules, used both to count the bytes (``encode``) and to
write them (``formats/studio.py``). Walking the flat weight in order:
- every kept weight is an entry, stored with its gap: how many weights were skipped
  since the previous entry (or since the start);
- a gap ``g`` too wide for ``r`` bits is bridged by ``g >> r`` filler entries, one every
  ``2**r`` positions after the previous kept weight; each is stored with the gap
  ``2**r - 1`` and the code of an exact zero in its row;
- the kept weight is then stored with the gap ``g & (2**r - 1)``.
Weights after the last kept one are not stored.

Sizes for every ``r`` come from one pass over the gaps: a 256-bin histogram of their
low byte and the sum of their high parts determine every width from 1 to 8 bits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

MAX_GAP_BITS = 8
SEGMENT = 1 << 20  # flat positions scanned at a time


def _kept_gaps(keep_flat: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(pos, gap)`` of the kept weights, a segment at a time (int64 arrays)."""
    last = -1
    for start in range(0, len(keep_flat), SEGMENT):
        pos = np.flatnonzero(keep_flat[start : start + SEGMENT])
        if len(pos) == 0:
            continue
        pos += start
        gap = np.diff(pos, prepend=last)
        gap -= 1
        last = int(pos[-1])
        yield pos, gap


def gap_segments(keep_flat: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(prev, pos, gap)`` of the kept weights, a segment at a time (int64 arrays)."""
    for pos, gap in _kept_gaps(keep_flat):
        yield pos - gap - 1, pos, gap


@dataclass(frozen=True)
class GapStats:
    """What the byte count of the relative index needs, for every gap width at once."""

    kept: int
    low: np.ndarray  # (256,) how many gaps have each low byte
    high_sum: int  # sum of gap >> 8
    fill_rows: np.ndarray | None  # (MAX_GAP_BITS + 1, rows) fillers per row for each r, if asked

    def fillers(self, r: int) -> int:
        """How many filler entries ``r``-bit gaps need: the sum of ``gap >> r``."""
        return (self.high_sum << (8 - r)) + int((self.low * (np.arange(256) >> r)).sum())

    def entries(self, r: int) -> int:
        return self.kept + self.fillers(r)

    def gap_counts(self, r: int) -> np.ndarray:
        """How often each ``r``-bit gap symbol is stored (fillers store ``2**r - 1``)."""
        span = 1 << r
        counts: np.ndarray = self.low.reshape(256 // span, span).sum(axis=0)
        counts[span - 1] += self.fillers(r)
        return counts


def gap_stats(keep_flat: np.ndarray, cols: int, rows: int | None = None) -> GapStats:
    """Gap statistics of a flat keep mask; with ``rows``, also the fillers per row for every r."""
    if rows is None:
        return _gap_counts(keep_flat)
    low = np.zeros(256, dtype=np.int64)
    high_sum = kept = 0
    fill_rows = np.zeros((MAX_GAP_BITS + 1, rows), dtype=np.int64)
    for prev, pos, gap in gap_segments(keep_flat):
        kept += len(pos)
        low += np.bincount(gap & 255, minlength=256)
        high_sum += int((gap >> 8).sum())
        for r in range(1, MAX_GAP_BITS + 1):
            fill_rows[r] += _fillers_per_row(prev, gap, r, cols, rows)
    return GapStats(kept, low, high_sum, fill_rows)


SMALL_GAPS = 1 << 12  # a segment whose gaps are all below this is counted gap by gap


def _gap_counts(keep_flat: np.ndarray) -> GapStats:
    """``gap_stats`` without the rows: each segment's gaps are counted (a bincount of the gaps
    themselves, folded to their low byte and high part) when they are small, as they are
    unless whole rows are pruned; else by their low byte and high part directly."""
    low = np.zeros(256, dtype=np.int64)
    high_sum = kept = 0
    for _, gap in _kept_gaps(keep_flat):
        kept += len(gap)
        if int(gap.max()) < SMALL_GAPS:
            counts = np.bincount(gap, minlength=256)
            g = np.arange(len(counts))
            low += np.bincount(g & 255, weights=counts, minlength=256).astype(np.int64)
            high_sum += int((counts * (g >> 8)).sum())
        else:
            low += np.bincount(gap & 255, minlength=256)
            high_sum += int((gap >> 8).sum())
    return GapStats(kept, low, high_sum, None)


def _fillers_per_row(prev: np.ndarray, gap: np.ndarray, r: int, cols: int, rows: int) -> np.ndarray:
    """How many of these gaps' fillers fall in each row."""
    span = 1 << r
    fill = gap >> r
    wide = np.flatnonzero(fill)
    if len(wide) == 0:
        return np.zeros(rows, dtype=np.int64)
    p, f = prev[wide], fill[wide]
    first_row = (p + span) // cols
    last_row = (p + f * span) // cols
    n_rows = last_row - first_row + 1  # a gap spans many rows only rarely: at most `rows` in all
    owner = np.repeat(np.arange(len(wide)), n_rows)
    row = np.repeat(first_row, n_rows) + (np.arange(int(n_rows.sum())) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows))
    p, f = p[owner], f[owner]
    j_lo = np.maximum(1, -((p - row * cols) // span))  # first filler j with p + j*span in the row
    j_hi = np.minimum(f, (row * cols + cols - 1 - p) // span)
    return np.bincount(row, weights=np.maximum(0, j_hi - j_lo + 1), minlength=rows).astype(np.int64)


def relative_entries(keep_flat: np.ndarray, r: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(flat positions, r-bit gap symbols)`` of the stored entries, in order, a segment at a time."""
    span = 1 << r
    for prev, pos, gap in gap_segments(keep_flat):
        fill = gap >> r
        n_fill = int(fill.sum())
        total = len(pos) + n_fill
        entries = np.empty(total, dtype=np.int64)
        symbols = np.full(total, span - 1, dtype=np.uint8)  # fillers' gap
        kept_at = np.cumsum(fill + 1) - 1  # each kept weight comes after its fillers
        entries[kept_at] = pos
        symbols[kept_at] = gap & (span - 1)
        if n_fill:
            is_filler = np.ones(total, dtype=bool)
            is_filler[kept_at] = False
            owner = np.repeat(np.arange(len(pos)), fill)
            step = np.arange(1, n_fill + 1) - np.repeat(np.cumsum(fill) - fill, fill)
            entries[is_filler] = prev[owner] + step * span
        yield entries, symbols
