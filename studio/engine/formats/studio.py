"""The studio's own compressed file: exactly the bytes the size report counts.

Layout: ``STUDIOC1`` (8 bytes), the header's length (4 bytes, little endian), the
header (zlib-compressed JSON: the plan, BatchNorm folds, per layer its shape and the
encodings and byte lengths of its four parts, and the other tensors' names and
dtypes), then the payload. Per layer the payload holds, in order:
- codes:  bit-packed codes, or a canonical Huffman table (one length byte per symbol),
          a block table (two bytes per 4096 codes after the first 4096) and the coded
          bits (see ``huffman``); raw float16/float32 values for float layers;
- scales: float32 scales and uint8 zero-points, or the float32 codebook (float16 scales
          or codebook under ``param_dtype="float16"``); then the activations' float32
          scales and zero-points (uint8, or int16 for 16 bits);
- index:  nothing (dense), a bitmask, a channel mask, or a relative index of r-bit
          gaps (packed or Huffman-coded);
- other:  the bias at its own dtype (float16 under ``param_dtype="float16"``).
Then every other tensor of the model (folded BatchNorm gone) at its own dtype.
The report's ``container_bytes`` is the magic, length and header, so a file's size
equals ``report.size_bytes``.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..activations import ActQParams, act_qrange
from ..bitstream import huffman_decode, huffman_encode, pack, unpack
from ..calibrate import ActPair
from ..compiled import CompressedModel
from ..compress import CompressedWeight
from ..encode import LayerSize
from ..errors import StudioError
from ..layers import LayerKind, weight_key
from ..plan import LayerSpec, Plan
from ..relindex import relative_entries
from .base import Format, Measured, RunContext, measure_torch, register_format

MAGIC = b"STUDIOC1"
FORMAT_VERSION = 2  # 2: Huffman streams carry a block table and codes of at most 16 bits
_DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool)}


def _layer_meta(name: str, shape: tuple[int, ...], axis: int, size: LayerSize) -> list[Any]:
    return [name, list(shape), axis, size.codes_encoding, size.index_encoding, size.entries, size.codes, size.scales, size.index, size.other]


def header(compiled: CompressedModel) -> bytes:
    rest = [[key, str(t.dtype), list(t.shape)] for key, t in compiled.rest.items()]
    meta = {
        "format": FORMAT_VERSION,
        "plan": compiled.plan.to_dict(),
        "folds": [list(pair) for pair in compiled.folds],
        "layers": [_layer_meta(i.name, i.weight_shape, i.channel_axis, compiled.weights[i.name].size) for i in compiled.layers],
        "rest": rest,
    }
    return zlib.compress(json.dumps(meta, separators=(",", ":")).encode(), 9)


def container_bytes(compiled: CompressedModel) -> int:
    """The file's magic, header length and header: what it stores besides the tensors."""
    return len(MAGIC) + 4 + len(header(compiled))


# -- writing ------------------------------------------------------------------------
def _stream(stored: np.ndarray, result: CompressedWeight, encoding: str) -> bytes:
    """The codes part: the stored entries' symbols packed or Huffman-coded, or raw float values."""
    if encoding.startswith("float"):
        return stored.astype(np.float16 if encoding == "float16" else np.float32, copy=False).tobytes()
    if encoding == "huffman":
        alphabet = result.need_stream().alphabet
        if alphabet is None:
            raise ValueError("Huffman coding needs integer symbols; the stream holds floats")
        return huffman_encode(stored, alphabet)
    return pack(stored, result.need_stream().width)


def _positions(flat: np.ndarray, result: CompressedWeight, index_encoding: str) -> tuple[np.ndarray, bytes, int]:
    """The stored entries of ``flat`` (the weight's symbols or values), the index bytes,
    and how many entries are filler zeros."""
    if index_encoding == "dense":
        return flat, b"", 0
    if result.keep is None:
        raise ValueError(f"the index encoding {index_encoding!r} needs a pruning mask")
    keep = result.keep.numpy()
    if index_encoding == "bitmask":
        return flat[keep.reshape(-1)], np.packbits(keep.reshape(-1)).tobytes(), 0
    if index_encoding == "channel-mask":
        rows = keep.all(axis=1)
        return flat.reshape(keep.shape)[rows].reshape(-1), np.packbits(rows).tobytes(), 0
    r, coded = _relative_index(index_encoding)
    stored, gaps = [], []
    for entries, gap_symbols in relative_entries(keep.reshape(-1), r):
        stored.append(flat[entries])
        gaps.append(gap_symbols)
    stored_all = np.concatenate(stored) if stored else flat[:0]
    gap_all = np.concatenate(gaps) if gaps else np.zeros(0, dtype=np.uint8)
    index = huffman_encode(gap_all, 1 << r) if coded else pack(gap_all, r)
    return stored_all, index, len(stored_all) - int(keep.sum())


def _relative_index(encoding: str) -> tuple[int, bool]:
    """``relative-<r>bit[+huffman]``: the gap width and whether the gaps are Huffman-coded."""
    match = re.fullmatch(r"relative-(\d+)bit(\+huffman)?", encoding)
    if match is None:
        raise ValueError(f"unknown index encoding {encoding!r}")
    return int(match.group(1)), bool(match.group(2))


def _scales_blob(result: CompressedWeight, acts: tuple[ActQParams | None, ActQParams | None] | None, kind: LayerKind) -> bytes:
    out = b""
    spec = result.spec
    param = _param_dtype(spec)
    if result.uniform is not None:
        out += result.uniform.scale.numpy().astype(param).tobytes()
        if not spec.symmetric:
            out += result.uniform.zero_point.numpy().astype(np.uint8).tobytes()
    elif result.codebook is not None:
        out += result.codebook.numpy().astype(param).tobytes()
    if spec.act_bits and acts is not None:
        for i, q in enumerate(acts):
            if i == 0 and not kind.float_input:
                continue
            if q is None:
                raise ValueError(f"a layer with act_bits={spec.act_bits} lacks its activation parameters")
            out += np.float32(q.scale).tobytes()
            out += (np.uint8 if spec.act_bits == 8 else np.int16)(q.zero_point).tobytes()
    return out


def _param_dtype(spec: LayerSpec) -> type[np.floating]:
    """How scales, codebooks and biases are stored."""
    return np.float16 if spec.param_dtype == "float16" else np.float32


def write(compiled: CompressedModel) -> bytes:
    """The studio file of a compiled plan."""
    blobs = [MAGIC]
    head = header(compiled)
    blobs += [len(head).to_bytes(4, "little"), head]
    for info in compiled.layers:
        r = compiled.weights[info.name]
        symbols = r.need_stream().symbols
        flat = (r.dequant_view if symbols is None else symbols).numpy().reshape(-1)
        stored, index, _ = _positions(flat, r, r.size.index_encoding)
        codes = _stream(stored, r, r.size.codes_encoding)
        scales = _scales_blob(r, compiled.acts.get(info.name), info.layer_kind)
        bias = compiled.biases.get(info.name)
        other = b"" if bias is None else bias.detach().cpu().contiguous().numpy().tobytes()
        got = (len(codes), len(scales), len(index), len(other))
        want = (r.size.codes, r.size.scales, r.size.index, r.size.other)
        if got != want:
            raise RuntimeError(f"internal error: {info.name} encodes to {got} bytes but was counted as {want}")
        blobs += [codes, scales, index, other]
    for tensor in compiled.rest.values():
        blobs.append(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return b"".join(blobs)


# -- reading ------------------------------------------------------------------------
@dataclass
class Decoded:
    plan: Plan
    folds: list[tuple[str, str]]
    state: dict[str, torch.Tensor]  # the folded model's state dict
    acts: dict[str, tuple[ActQParams | None, ActQParams | None]]
    kinds_without_input: set[str]


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.pos = data, offset

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise StudioError("the studio file is truncated: it ends before its last tensor")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


def read(data: bytes) -> Decoded:
    """Decode a studio file into the folded model's state dict and activation parameters.

    A layer whose input is not quantized (token ids) is one whose activation block has
    room for only one (scale, zero-point) pair.
    """
    if data[:8] != MAGIC:
        raise StudioError("not a studio file (bad magic bytes): export it again with format='studio'")
    length = int.from_bytes(data[8:12], "little")
    try:
        meta = json.loads(zlib.decompress(data[12 : 12 + length]))
        if not isinstance(meta, dict) or not isinstance(meta.get("layers"), list) or not isinstance(meta.get("rest"), list):
            raise ValueError("the header lacks its layer and tensor lists")
    except (zlib.error, ValueError) as exc:
        raise StudioError(f"the studio file's header is damaged ({exc}); export the model again") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise StudioError(f"studio file format {meta.get('format')} is not supported (this studio reads {FORMAT_VERSION})")
    plan = Plan.from_dict(meta["plan"])
    reader = _Reader(data, 12 + length)
    state: dict[str, torch.Tensor] = {}
    acts: dict[str, tuple[ActQParams | None, ActQParams | None]] = {}
    single_input: set[str] = set()
    for name, shape, axis, codes_enc, index_enc, entries, n_codes, n_scales, n_index, n_other in meta["layers"]:
        spec = plan.spec_for(name)
        rows = shape[axis]
        numel = int(np.prod(shape))
        cols = numel // rows
        codes_b, scales_b, index_b, other_b = (reader.take(n) for n in (n_codes, n_scales, n_index, n_other))
        view, act_pair, one = _decode_layer(spec, rows, cols, codes_enc, index_enc, entries, codes_b, scales_b, index_b)
        moved = [shape[axis]] + [d for i, d in enumerate(shape) if i != axis]
        state[weight_key(name)] = view.reshape(moved).movedim(0, axis).contiguous()
        if other_b:
            bias = np.frombuffer(other_b, dtype=_param_dtype(spec)).astype(np.float32)
            state[weight_key(name, "bias")] = torch.from_numpy(bias)
        if act_pair is not None:
            acts[name] = act_pair
        if one:
            single_input.add(name)
    for key, dtype, shape in meta["rest"]:
        torch_dtype = _DTYPES[dtype]
        n = int(np.prod(shape)) * torch.empty(0, dtype=torch_dtype).element_size()
        raw = torch.frombuffer(bytearray(reader.take(n)), dtype=torch.uint8)
        state[key] = raw.view(torch_dtype).reshape(shape).clone()
    return Decoded(plan, [tuple(p) for p in meta["folds"]], state, acts, single_input)


def _decode_layer(
    spec: LayerSpec, rows: int, cols: int, codes_enc: str, index_enc: str, entries: int, codes_b: bytes, scales_b: bytes, index_b: bytes
) -> tuple[torch.Tensor, ActPair | None, bool]:
    numel = rows * cols
    offset = 0
    if spec.bits is None or spec.bits == 16:
        dtype = np.float16 if codes_enc == "float16" else np.float32
        values = np.frombuffer(codes_b, dtype=dtype).astype(np.float32)
        flat = np.zeros(numel, dtype=np.float32)
        _scatter(flat, values, index_enc, index_b, rows, cols, entries)
        view = torch.from_numpy(flat).reshape(rows, cols)
    else:
        if spec.cluster:
            alphabet = 2**spec.bits
        else:
            qmin, qmax = (-(2 ** (spec.bits - 1) - 1), 2 ** (spec.bits - 1) - 1) if spec.symmetric else (0, 2**spec.bits - 1)
            alphabet = qmax - qmin + 1
        symbols = huffman_decode(codes_b, alphabet, entries) if codes_enc == "huffman" else unpack(codes_b, spec.bits, entries)
        param = _param_dtype(spec)
        width = np.dtype(param).itemsize
        if spec.cluster:
            codebook = torch.from_numpy(np.frombuffer(scales_b[: width * alphabet], dtype=param).astype(np.float32))
            offset = width * alphabet
            zero = int(torch.nonzero(codebook == 0)[0, 0]) if bool((codebook == 0).any()) else 0
            table = codebook.numpy().reshape(1, alphabet)  # value of each symbol
            zero_rows = np.full(rows, zero)
        else:
            n_scales = rows if spec.granularity == "channel" else 1
            scale = torch.from_numpy(np.frombuffer(scales_b[: width * n_scales], dtype=param).astype(np.float32))
            offset = width * n_scales
            if spec.symmetric:
                zp = torch.zeros(n_scales, dtype=torch.int64)
            else:
                zp = torch.from_numpy(np.frombuffer(scales_b, dtype=np.uint8, count=n_scales, offset=offset).astype(np.int64))
                offset += n_scales
            # the value of every symbol in every row, by the engine's formula: (code - zp) * scale
            levels = torch.arange(qmin, qmax + 1, dtype=torch.int64)
            table = ((levels.unsqueeze(0) - zp.unsqueeze(1)).to(torch.float32) * scale.unsqueeze(1)).numpy()
            zero_rows = np.broadcast_to((zp - qmin).numpy(), (rows,)) if n_scales == 1 else (zp - qmin).numpy()
        if index_enc == "dense":
            full = symbols
        else:
            full = np.empty(numel, dtype=symbols.dtype)
            full.reshape(rows, cols)[:] = zero_rows.astype(symbols.dtype).reshape(rows, 1)
            _scatter(full, symbols, index_enc, index_b, rows, cols, entries)
        view = torch.from_numpy(_lookup(table, full.reshape(rows, cols)))
    act_pair, single = None, False
    if spec.act_bits:
        width = 1 if spec.act_bits == 8 else 2
        per = 4 + width
        rest = scales_b[offset:]
        qmin_a, qmax_a = act_qrange(spec.act_bits)
        params = []
        for i in range(len(rest) // per):
            chunk = rest[i * per : (i + 1) * per]
            s = float(np.frombuffer(chunk[:4], dtype=np.float32)[0])
            z = int(np.frombuffer(chunk[4:], dtype=np.uint8 if width == 1 else np.int16)[0])
            params.append(ActQParams(s, z, qmin_a, qmax_a))
        single = len(params) == 1
        act_pair = (None, params[0]) if single else (params[0], params[1])
    return view, act_pair, single


CHUNK = 1 << 20  # weights decoded at a time


def _scatter(flat: np.ndarray, stored: np.ndarray, index_enc: str, index_b: bytes, rows: int, cols: int, entries: int) -> None:
    """Put the stored entries where the index says (``flat`` already holds the zeros)."""
    numel = rows * cols
    if index_enc == "dense":
        flat[:] = stored
    elif index_enc == "bitmask":
        flat[np.unpackbits(np.frombuffer(index_b, dtype=np.uint8), count=numel).view(bool)] = stored
    elif index_enc == "channel-mask":
        kept_rows = np.unpackbits(np.frombuffer(index_b, dtype=np.uint8), count=rows).view(bool)
        flat.reshape(rows, cols)[kept_rows] = stored.reshape(-1, cols)
    else:
        r, coded = _relative_index(index_enc)
        gaps = huffman_decode(index_b, 1 << r, entries) if coded else unpack(index_b, r, entries)
        last = -1
        for start in range(0, entries, CHUNK):  # each entry sits its gap + 1 after the previous one
            step = gaps[start : start + CHUNK].astype(np.int64) + 1
            positions = np.cumsum(step) + last
            if len(positions) and positions[-1] >= numel:
                raise StudioError("the studio file's relative index is damaged; export the model again")
            flat[positions] = stored[start : start + CHUNK]
            last = int(positions[-1]) if len(positions) else last


def _lookup(table: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """``table[row, symbols[row, col]]`` (one table row for all when ``table`` has one), in chunks."""
    rows, cols = symbols.shape
    out = np.empty((rows, cols), dtype=np.float32)
    if table.shape[0] == 1:
        flat_in, flat_out = symbols.reshape(-1), out.reshape(-1)
        for start in range(0, rows * cols, CHUNK):
            np.take(table[0], flat_in[start : start + CHUNK], out=flat_out[start : start + CHUNK], mode="clip")
        return out
    step = max(1, CHUNK // max(cols, 1))
    for r0 in range(0, rows, step):
        idx = symbols[r0 : r0 + step].astype(np.intp)
        out[r0 : r0 + step] = np.take_along_axis(table[r0 : r0 + step], idx, axis=1)
    return out


def read_plan(data: bytes) -> Plan:
    return read(data).plan


def run(data: bytes, ctx: RunContext) -> Measured:
    """Decode the file into the folded model and run it in PyTorch."""
    decoded = read(data)
    model = ctx.compile(decoded.plan).model_from_state(decoded.state, decoded.acts)
    return measure_torch(model, ctx)


register_format(Format("studio", ".studio", "studio (compressed)", write, read_plan, run))
