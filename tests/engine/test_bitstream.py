"""Bit packing and Huffman coding: round trips on random and adversarial inputs, exact sizes."""

import numpy as np
import pytest

from studio.engine import bitstream
from studio.engine.bitstream import huffman_decode, huffman_encode, pack, unpack
from studio.engine.huffman import BLOCK_SYMBOLS, MAX_CODE_BITS, _huffman_depths, canonical_codes, code_lengths, huffman_bytes


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 8192 symbols, so that modest inputs cross chunk boundaries."""
    monkeypatch.setattr(bitstream, "CHUNK", 2 * BLOCK_SYMBOLS)


@pytest.mark.parametrize("width", range(1, 17))
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1001, 20_003])
def test_pack_round_trip_every_width(small_chunks, width, n):
    rng = np.random.default_rng(width * 1000 + n)
    symbols = rng.integers(0, 2**width, n)
    data = pack(symbols, width)
    assert len(data) == -(-n * width // 8)
    out = unpack(data, width, n)
    assert out.dtype == (np.uint8 if width <= 8 else np.uint16)
    assert np.array_equal(out, symbols)


def test_pack_is_most_significant_bit_first():
    assert pack(np.array([1, 0, 3]), 2) == bytes([0b01001100])
    assert pack(np.array([5]), 3) == bytes([0b10100000])
    assert pack(np.array([0xABC]), 12) == bytes([0xAB, 0xC0])


def test_unpack_refuses_truncated_data():
    with pytest.raises(ValueError, match="truncated"):
        unpack(b"\x00", 4, 3)


def _round_trip(symbols: np.ndarray, alphabet: int) -> bytes:
    data = huffman_encode(symbols, alphabet)
    assert len(data) == huffman_bytes(np.bincount(symbols, minlength=alphabet))
    out = huffman_decode(data, alphabet, len(symbols))
    assert out.dtype == np.uint8 and np.array_equal(out, symbols)
    return data


@pytest.mark.parametrize("alphabet", [1, 2, 3, 4, 16, 255, 256])
@pytest.mark.parametrize("n", [0, 1, 2, 4095, 4096, 4097, 3 * 4096 + 5])
def test_huffman_round_trip_random(small_chunks, alphabet, n):
    rng = np.random.default_rng(alphabet * 7 + n)
    _round_trip(rng.integers(0, alphabet, n), alphabet)
    _round_trip(np.minimum(rng.geometric(0.3, n) - 1, alphabet - 1), alphabet)


@pytest.mark.parametrize("n", [1, 5, 4096, 4097, 100_000])
def test_one_symbol_repeated(small_chunks, n):
    symbols = np.full(n, 7)
    data = _round_trip(symbols, 16)
    # one used symbol gets a 1-bit code: a table, the block table and n bits
    assert len(data) == 16 + 2 * (-(-n // BLOCK_SYMBOLS) - 1) + -(-n // 8)


def test_empty_stream_is_only_the_table():
    assert huffman_encode(np.zeros(0, dtype=np.uint8), 32) == bytes(32)
    assert huffman_decode(bytes(32), 32, 0).size == 0


def test_very_skewed_counts_are_limited_to_16_bit_codes(small_chunks):
    # Fibonacci counts would give Huffman codes of up to 24 bits
    fib = [1, 1]
    while len(fib) < 26:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib)
    assert _huffman_depths(counts).max() > MAX_CODE_BITS
    lengths = code_lengths(counts)
    assert lengths.max() == MAX_CODE_BITS
    assert np.sum(2.0 ** -lengths) == 1.0  # still a complete prefix code
    symbols = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(0).shuffle(symbols)
    _round_trip(symbols, 32)


def test_length_limited_codes_cost_no_more_than_needed():
    rng = np.random.default_rng(1)
    for _ in range(50):
        counts = rng.integers(1, 10 ** rng.integers(1, 7), rng.integers(2, 257))
        plain = _huffman_depths(counts)
        lengths = code_lengths(counts)
        assert lengths.max() <= MAX_CODE_BITS and np.isclose(np.sum(2.0 ** -lengths.astype(float)), 1.0)
        if plain.max() <= MAX_CODE_BITS:
            assert np.array_equal(lengths, plain)  # Huffman's own lengths whenever they fit
        assert (counts * lengths).sum() >= (counts * plain).sum()


def test_canonical_codes_count_up_by_length_then_symbol():
    lengths = np.array([3, 0, 2, 3, 2, 2])
    codes = canonical_codes(lengths)
    assert [format(int(codes[s]), f"0{lengths[s]}b") for s in (2, 4, 5, 0, 3)] == ["00", "01", "10", "110", "111"]


def test_lockstep_and_loop_decoders_agree(monkeypatch):
    rng = np.random.default_rng(3)
    symbols = np.minimum(rng.geometric(0.05, 50_000) - 1, 255)
    data = huffman_encode(symbols, 256)
    looped = huffman_decode(data, 256, len(symbols))
    monkeypatch.setattr(bitstream, "SMALL_DECODE", 0)  # force the block-parallel decoder
    assert np.array_equal(huffman_decode(data, 256, len(symbols)), looped)
    assert np.array_equal(looped, symbols)


def test_damaged_huffman_streams_are_refused(monkeypatch):
    monkeypatch.setattr(bitstream, "SMALL_DECODE", 0)
    symbols = np.random.default_rng(4).integers(0, 16, 10_000)
    data = bytearray(huffman_encode(symbols, 16))
    data[16] ^= 0x01  # the first block's length in the block table
    with pytest.raises(ValueError, match="damaged"):
        huffman_decode(bytes(data), 16, len(symbols))
    with pytest.raises(ValueError, match="damaged"):
        huffman_decode(bytes(16) + bytes(data[16:]), 16, len(symbols))  # an empty code table


def test_damaged_streams_are_refused_by_the_plain_loop_too():
    symbols = np.random.default_rng(5).integers(0, 16, 10_000)  # three blocks, decoded in a loop
    data = bytearray(huffman_encode(symbols, 16))
    data[16] ^= 0x01
    with pytest.raises(ValueError, match="damaged"):
        huffman_decode(bytes(data), 16, len(symbols))
    table = bytearray(huffman_encode(symbols, 16))
    table[0:4] = bytes([1, 1, 1, 1])  # four 1-bit codes: not a prefix code
    with pytest.raises(ValueError, match="damaged"):
        huffman_decode(bytes(table), 16, len(symbols))
