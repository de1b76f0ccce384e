"""The studio's own compressed file: exactly the bytes the size report counts.

Layout: ``STUDIOC1`` (8 bytes), the header's length (4 bytes, little endian), the
header (zlib-compressed JSON: the plan, BatchNorm folds, per layer its shape and the
encodings and byte lengths of its four parts, and the other tensors' names and
dtypes), then the payload. Per layer the payload holds, in order:
- codes:  bit-packed codes, or a canonical Huffman table (one length byte per symbol)
          and the coded bits; raw float16/float32 values for float layers;
- scales: float32 scales and uint8 zero-points, or the float32 codebook; then the
          activations' float32 scales and zero-points (uint8, or int16 for 16 bits);
- index:  nothing (dense), a bitmask, a channel mask, or a relative index of r-bit
          gaps (packed or Huffman-coded);
- other:  the bias at its own dtype.
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
from ..compiled import CompressedModel
from ..compress import CompressedWeight
from ..encode import LayerSize
from ..errors import StudioError
from ..layers import LayerKind, weight_key
from ..plan import Plan
from .base import Format, Measured, RunContext, measure_torch, register_format

MAGIC = b"STUDIOC1"
FORMAT_VERSION = 1
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
def _stream(symbols: np.ndarray | None, values: np.ndarray | None, result: CompressedWeight, encoding: str) -> bytes:
    stream = result.stream
    if encoding.startswith("float"):
        return values.astype(np.float16 if encoding == "float16" else np.float32).tobytes()
    if encoding == "huffman":
        return huffman_encode(symbols, stream.alphabet)
    return pack(symbols, stream.width)


def _positions(result: CompressedWeight, index_encoding: str) -> tuple[np.ndarray, bytes, int]:
    """Flat positions of the stored entries, the index bytes, and how many are filler zeros."""
    numel = result.float_view.numel()
    if index_encoding == "dense":
        return np.arange(numel), b"", 0
    keep = result.keep.numpy()
    if index_encoding == "bitmask":
        return np.flatnonzero(keep.reshape(-1)), np.packbits(keep.reshape(-1)).tobytes(), 0
    if index_encoding == "channel-mask":
        rows = keep.all(axis=1)
        return np.flatnonzero(np.repeat(rows, keep.shape[1])), np.packbits(rows).tobytes(), 0
    match = re.fullmatch(r"relative-(\d+)bit(\+huffman)?", index_encoding)
    r, coded = int(match.group(1)), bool(match.group(2))
    pos = np.flatnonzero(keep.reshape(-1))
    prev = np.concatenate([[-1], pos[:-1]])
    gaps = pos - prev - 1
    span = 1 << r
    fillers = gaps >> r
    entries, gap_symbols = [], []
    for p, q, g, f in zip(pos.tolist(), prev.tolist(), gaps.tolist(), fillers.tolist()):
        for j in range(1, f + 1):
            entries.append(q + j * span)
            gap_symbols.append(span - 1)
        entries.append(p)
        gap_symbols.append(g & (span - 1))
    gap_arr = np.asarray(gap_symbols, dtype=np.int64)
    index = huffman_encode(gap_arr, span) if coded else pack(gap_arr, r)
    return np.asarray(entries, dtype=np.int64), index, int(fillers.sum())


def _scales_blob(result: CompressedWeight, acts: tuple[ActQParams | None, ActQParams | None] | None, kind: LayerKind) -> bytes:
    out = b""
    spec = result.spec
    if result.uniform is not None:
        out += result.uniform.scale.numpy().astype(np.float32).tobytes()
        if not spec.symmetric:
            out += result.uniform.zero_point.numpy().astype(np.uint8).tobytes()
    elif result.codebook is not None:
        out += result.codebook.numpy().astype(np.float32).tobytes()
    if spec.act_bits and acts is not None:
        for i, q in enumerate(acts):
            if i == 0 and not kind.float_input:
                continue
            out += np.float32(q.scale).tobytes()
            out += (np.uint8 if spec.act_bits == 8 else np.int16)(q.zero_point).tobytes()
    return out


def write(compiled: CompressedModel) -> bytes:
    """The studio file of a compiled plan."""
    blobs = [MAGIC]
    head = header(compiled)
    blobs += [len(head).to_bytes(4, "little"), head]
    for info in compiled.layers:
        r = compiled.weights[info.name]
        positions, index, _ = _positions(r, r.size.index_encoding)
        symbols = None if r.stream.symbols is None else r.stream.symbols.numpy().reshape(-1).astype(np.int64)
        values = r.dequant_view.numpy().reshape(-1)
        codes = _stream(None if symbols is None else symbols[positions], values[positions], r, r.size.codes_encoding)
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


def read(data: bytes, embedding_layers: set[str] | None = None) -> Decoded:
    """Decode a studio file into the folded model's state dict and activation parameters.

    ``embedding_layers`` names layers whose input is not quantized (token ids); by
    default a layer is taken to be one when its activation block has room for only
    one (scale, zero-point) pair.
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
            state[weight_key(name, "bias")] = torch.from_numpy(np.frombuffer(other_b, dtype=np.float32).copy())
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


def _decode_layer(spec: Any, rows: int, cols: int, codes_enc: str, index_enc: str, entries: int, codes_b: bytes, scales_b: bytes, index_b: bytes):  # noqa: ANN202
    numel = rows * cols
    # where the stored entries go
    if index_enc == "dense":
        positions = np.arange(numel)
    elif index_enc == "bitmask":
        positions = np.flatnonzero(np.unpackbits(np.frombuffer(index_b, dtype=np.uint8))[:numel])
    elif index_enc == "channel-mask":
        kept_rows = np.unpackbits(np.frombuffer(index_b, dtype=np.uint8))[:rows].astype(bool)
        positions = np.flatnonzero(np.repeat(kept_rows, cols))
    else:
        match = re.fullmatch(r"relative-(\d+)bit(\+huffman)?", index_enc)
        r = int(match.group(1))
        gaps = huffman_decode(index_b, 1 << r, entries) if match.group(2) else unpack(index_b, r, entries)
        positions = np.cumsum(gaps + 1) - 1
    scales = np.frombuffer(scales_b, dtype=np.uint8)
    offset = 0
    if spec.bits is None or spec.bits == 16:
        dtype = np.float16 if codes_enc == "float16" else np.float32
        values = np.frombuffer(codes_b, dtype=dtype).astype(np.float32)
        flat = np.zeros(numel, dtype=np.float32)
        flat[positions] = values
        view = torch.from_numpy(flat).reshape(rows, cols)
    else:
        if spec.cluster:
            alphabet, zero_symbols = 2**spec.bits, None
        else:
            qmin, qmax = (-(2 ** (spec.bits - 1) - 1), 2 ** (spec.bits - 1) - 1) if spec.symmetric else (0, 2**spec.bits - 1)
            alphabet = qmax - qmin + 1
        symbols = huffman_decode(codes_b, alphabet, entries) if codes_enc == "huffman" else unpack(codes_b, spec.bits, entries)
        if spec.cluster:
            k = 2**spec.bits
            codebook = torch.from_numpy(np.frombuffer(scales_b[: 4 * k], dtype=np.float32).copy())
            offset = 4 * k
            zero = int(torch.nonzero(codebook == 0)[0, 0]) if bool((codebook == 0).any()) else 0
            full = np.full(numel, zero, dtype=np.int64)
            full[positions] = symbols
            view = codebook[torch.from_numpy(full)].reshape(rows, cols)
        else:
            n_scales = rows if spec.granularity == "channel" else 1
            scale = torch.from_numpy(np.frombuffer(scales_b[: 4 * n_scales], dtype=np.float32).copy())
            offset = 4 * n_scales
            if spec.symmetric:
                zp = torch.zeros(n_scales, dtype=torch.int64)
            else:
                zp = torch.from_numpy(scales[offset : offset + n_scales].astype(np.int64))
                offset += n_scales
            zero_rows = (zp - qmin).numpy() if n_scales > 1 else np.full(rows, int(zp[0]) - qmin)
            full = np.repeat(zero_rows, cols).astype(np.int64)
            full[positions] = symbols
            codes = torch.from_numpy(full + qmin).reshape(n_scales, -1)
            view = ((codes - zp.unsqueeze(1)).to(torch.float32) * scale.unsqueeze(1)).reshape(rows, cols)
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


def read_plan(data: bytes) -> Plan:
    return read(data).plan


def run(data: bytes, ctx: RunContext) -> Measured:
    """Decode the file into the folded model and run it in PyTorch."""
    decoded = read(data)
    model = ctx.compile(decoded.plan).model_from_state(decoded.state, decoded.acts)
    return measure_torch(model, ctx)


register_format(Format("studio", ".studio", "studio (compressed)", write, read_plan, run))
