"""The relative index: one implementation for the byte count and the writer, checked against
a plain loop over Deep Compression's rules, on masks with gaps far wider than 2**r."""

import numpy as np
import pytest
import torch

from studio.engine import LayerSpec, relindex
from studio.engine.bitstream import huffman_decode, huffman_encode, pack, unpack
from studio.engine.compress import compress_view
from studio.engine.encode import StreamSpec, _relative, encode_size
from studio.engine.formats.studio import _positions
from studio.engine.relindex import MAX_GAP_BITS, gap_stats, relative_entries


def naive(keep: np.ndarray, r: int) -> tuple[list[int], list[int]]:
    """The rules as a loop: fillers every 2**r after the previous kept weight, then the kept one."""
    span = 1 << r
    entries, gaps = [], []
    prev = -1
    for p in np.flatnonzero(keep).tolist():
        gap = p - prev - 1
        for j in range(1, (gap >> r) + 1):
            entries.append(prev + j * span)
            gaps.append(span - 1)
        entries.append(p)
        gaps.append(gap & (span - 1))
        prev = p
    return entries, gaps


def masks():
    rng = np.random.default_rng(0)
    yield np.zeros(300, dtype=bool)  # nothing kept
    yield np.ones(300, dtype=bool)  # nothing pruned
    one = np.zeros(5000, dtype=bool)
    one[4999] = True  # a single gap of 4999
    yield one
    sparse = rng.random(20_000) < 0.01  # gaps of about 100, some of several hundred
    sparse[:3000] = False
    yield sparse
    clustered = np.zeros(40_000, dtype=bool)
    clustered[rng.integers(0, 40_000, 30)] = True  # a few kept weights, gaps of thousands
    clustered[0] = True
    yield clustered
    yield rng.random(10_000) < 0.5


@pytest.fixture
def small_segments(monkeypatch):
    monkeypatch.setattr(relindex, "SEGMENT", 1000)  # gaps cross segment boundaries


@pytest.mark.parametrize("case", range(6))
def test_entries_follow_the_rules(small_segments, case):
    keep = list(masks())[case]
    for r in range(1, MAX_GAP_BITS + 1):
        entries, gaps = [], []
        for e, g in relative_entries(keep, r):
            entries += e.tolist()
            gaps += g.tolist()
        want_entries, want_gaps = naive(keep, r)
        assert entries == want_entries and gaps == want_gaps


@pytest.mark.parametrize("case", range(6))
def test_stats_give_every_width_without_expanding(small_segments, case):
    keep = list(masks())[case]
    cols = 250
    rows = len(keep) // cols
    stats = gap_stats(keep, cols, rows)
    plain = gap_stats(keep, cols)  # without the rows: gaps counted a segment at a time (small gaps, or wide ones)
    assert plain.fill_rows is None
    for r in range(1, MAX_GAP_BITS + 1):
        entries, gaps = naive(keep, r)
        want = np.bincount(gaps, minlength=1 << r).astype(np.int64)
        assert stats.entries(r) == plain.entries(r) == len(entries)
        assert np.array_equal(stats.gap_counts(r), want) and np.array_equal(plain.gap_counts(r), want)
        fillers = [p for p in entries if not keep[p]]
        assert np.array_equal(stats.fill_rows[r], np.bincount(np.array(fillers, dtype=np.int64) // cols, minlength=rows))


def _stream(keep: np.ndarray, rows: int, zero_rows: np.ndarray, width: int = 4) -> StreamSpec:
    rng = np.random.default_rng(5)
    symbols = np.minimum(rng.geometric(0.4, keep.size) - 1, 2**width - 1).astype(np.uint8).reshape(rows, -1)  # skewed: Huffman pays
    symbols.reshape(-1)[~keep] = np.repeat(zero_rows, symbols.shape[1])[~keep]  # pruned weights hold the zero code
    return StreamSpec(symbols.shape, width=width, alphabet=2**width, symbols=torch.from_numpy(symbols), zero_symbol=zero_rows)


class _Result:  # what _positions reads from a CompressedWeight
    def __init__(self, stream: StreamSpec, keep: np.ndarray) -> None:
        self.stream = stream
        self.keep = torch.from_numpy(keep.reshape(stream.shape))


@pytest.mark.parametrize("case", range(6))
@pytest.mark.parametrize("per_row_zero", [False, True])
def test_counted_bytes_are_the_written_bytes(small_segments, case, per_row_zero):
    keep = list(masks())[case]
    rows, cols = 40, len(keep) // 40
    keep = keep[: rows * cols]
    zero_rows = np.arange(rows) % 7 + 3 if per_row_zero else np.full(rows, 8)
    stream = _stream(keep, rows, zero_rows)
    stats = gap_stats(keep, cols, rows if per_row_zero else None)
    flat = stream.symbols.numpy().reshape(-1)
    for huffman in (False, True):
        kept_counts = np.bincount(flat[keep], minlength=16) if huffman else None
        for r in range(1, MAX_GAP_BITS + 1):
            cand = _relative(stream, stats, kept_counts, huffman, r)
            stored, index, n_fill = _positions(flat, _Result(stream, keep), cand.index_encoding)
            assert len(index) == cand.index and len(stored) == cand.entries
            if cand.codes_encoding == "huffman":
                assert len(huffman_encode(stored, 16)) == cand.codes
            else:
                assert len(pack(stored, 4)) == cand.codes
            # the index decodes back to the entries
            gaps = huffman_decode(index, 1 << r, len(stored)) if "+huffman" in cand.index_encoding else unpack(index, r, len(stored))
            positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
            assert np.array_equal(positions, naive(keep, r)[0])
            assert np.array_equal(stored, flat[positions])


def test_encode_size_picks_the_relative_index_for_wide_gaps():
    torch.manual_seed(0)
    w = torch.randn(64, 2000)
    spec = LayerSpec(bits=4, prune=0.97, symmetric=False)  # per-row zero codes
    result = compress_view(w, spec, huffman=True, other_bytes=0)
    assert result.size.index_encoding.startswith("relative-")
    r = int(result.size.index_encoding.split("-")[1].split("bit")[0])
    keep = result.keep.numpy().reshape(-1)
    entries, _ = naive(keep, r)
    assert result.size.entries == len(entries)
    again = encode_size(result.stream, result.keep, huffman=True, scale_bytes=0, other_bytes=0)
    assert (again.codes, again.index, again.index_encoding) == (result.size.codes, result.size.index, result.size.index_encoding)
