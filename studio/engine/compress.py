"""Compress one weight tensor by a LayerSpec: prune, then quantize or cluster, then count bytes.

The order is fixed: prune first, then quantize (or cluster). Pruned weights stay
exactly zero: the symmetric grid has code 0, the asymmetric grid an integer
zero-point, and a clustered layer that is pruned pins one shared value at 0.0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from .cluster import kmeans_1d, shared_values, zero_code
from .encode import LayerSize, StreamSpec, encode_size
from .half import half_scales, half_values, param_width
from .plan import LayerSpec
from .prune import prune_mask
from .quantize import UniformParams, choose_params, dequantize_codes, quantize_codes

T = TypeVar("T")


@dataclass(frozen=True)
class PackedMask:
    """A boolean (rows, cols) mask, eight entries a byte, row by row (rows unpack alone)."""

    bits: np.ndarray  # (rows, ceil(cols / 8)) uint8
    cols: int
    kept: int  # how many entries are True (reports need it on every evaluate: no unpacking)

    @classmethod
    def of(cls, mask: torch.Tensor | None) -> PackedMask | None:
        if mask is None:
            return None
        return cls(np.packbits(mask.numpy(), axis=1), int(mask.shape[1]), int(mask.count_nonzero()))

    def rows(self, r0: int, r1: int) -> torch.Tensor:
        """Rows ``r0:r1`` as a bool tensor."""
        return torch.from_numpy(np.unpackbits(self.bits[r0:r1], axis=1, count=self.cols).view(np.bool_))

    def unpack(self) -> torch.Tensor:
        return self.rows(0, len(self.bits))


@dataclass
class CompressedWeight:
    """The result of compressing one weight: what would be stored, and bytes for the report.

    ``view`` tensors have shape (out_channels, fan_in): the channel axis first. A result
    holds the stored form only: integer codes in the smallest integer dtype (int8 or
    uint8 up to 8 bits) with their scales or codebook, and the pruning mask (a float16
    layer is a cast of the float weights, redone on use). ``dequant_view``, what the
    model computes with, is derived from them on each use, so that a cache of results
    costs about a byte per weight, not five; ``stream.symbols`` likewise, where they
    follow from the codes.
    """

    spec: LayerSpec
    float_view: torch.Tensor
    keep_bits: PackedMask | None  # the pruning mask (True = kept), packed; ``keep`` unpacks it
    codes: torch.Tensor | None  # integer codes (channel view), None for float layers
    uniform: UniformParams | None
    codebook: torch.Tensor | None
    size: LayerSize
    sqnr_db: float | None
    stream_spec: StreamSpec | None = None  # symbols None where they follow from the uniform codes
    held: torch.Tensor | None = None  # a dequantized view held as is (e.g. channels cut for ONNX); None: derived

    @property
    def keep(self) -> torch.Tensor | None:
        """The pruning mask (channel view, True = kept), or None when nothing was pruned."""
        return None if self.keep_bits is None else self.keep_bits.unpack()

    @property
    def dequant_view(self) -> torch.Tensor:
        """The dequantized weights, float32 (channel view): exactly what the studio evaluates."""
        if self.held is not None:
            return self.held
        return dequantize(self)

    @property
    def stream(self) -> StreamSpec | None:
        """What the stored codes are, for writers (the symbols derived where not held)."""
        spec = self.stream_spec
        if spec is None or spec.symbols is not None or self.codes is None or self.uniform is None:
            return spec
        return dataclasses.replace(spec, symbols=code_symbols(self.codes, self.uniform.qmin))

    @property
    def nbytes(self) -> int:
        """Bytes of every tensor and array this result holds, each storage counted once,
        the float weights it was made from (``float_view``, the session's own) excepted."""
        held: list[torch.Tensor | np.ndarray | None] = [self.held, self.codes, self.codebook]
        held += [None if self.keep_bits is None else self.keep_bits.bits]
        if self.uniform is not None:
            held += [self.uniform.scale, self.uniform.zero_point]
        if self.stream_spec is not None:
            held += [self.stream_spec.symbols, self.stream_spec.zero_symbol]
        source = self.float_view.untyped_storage().data_ptr()
        storages: dict[tuple[str, int], int] = {}
        for item in held:
            if isinstance(item, torch.Tensor):
                storage = item.untyped_storage()
                key, size = ("torch", storage.data_ptr()), storage.nbytes()
                if key[1] == source:
                    continue
            elif isinstance(item, np.ndarray):
                key, size = ("numpy", item.__array_interface__["data"][0]), item.nbytes
            else:
                continue
            storages[key] = max(storages.get(key, 0), size)
        return sum(storages.values())

    @property
    def sparsity(self) -> float:
        mask = self.keep_bits
        return 0.0 if mask is None else 1.0 - mask.kept / max(1, self.float_view.numel())

    @property
    def prune_threshold(self) -> float | None:
        """The largest magnitude that was pruned (None when nothing was)."""
        keep = self.keep
        if keep is None or bool(keep.all()):
            return None
        return float(self.float_view[~keep].abs().max())

    # what a writer needs of a quantized layer; a layer of another kind lacks it
    def need_codes(self) -> torch.Tensor:
        return _present(self.codes, "integer codes", self.spec)

    def need_uniform(self) -> UniformParams:
        return _present(self.uniform, "uniform scales", self.spec)

    def need_codebook(self) -> torch.Tensor:
        return _present(self.codebook, "a codebook", self.spec)

    def need_stream(self) -> StreamSpec:
        return _present(self.stream, "a code stream", self.spec)


def _present(value: T | None, what: str, spec: LayerSpec) -> T:
    if value is None:
        raise ValueError(f"a layer compressed as {spec.label()} has no {what}")
    return value


def code_symbols(codes: torch.Tensor, qmin: int) -> torch.Tensor:
    """``codes - qmin`` as uint8 symbols (0..2**bits - 1); the codes themselves when qmin is 0."""
    if qmin == 0 and codes.dtype == torch.uint8:
        return codes
    if codes.dtype == torch.int8:  # two's complement: adding -qmin modulo 256 lands in 0..254
        return codes.view(torch.uint8) + (-qmin)
    return (codes.to(torch.int64) - qmin).to(torch.uint8)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float | None:
    """Signal-to-quantization-noise ratio in dB; None when the approximation is exact."""
    return _sqnr_rows(reference, lambda r0, r1: approx[r0:r1])


SQNR_CHUNK = 1 << 18  # weights decoded at a time to measure the noise: they stay in the CPU's cache


def _sqnr_rows(reference: torch.Tensor, decode: Callable[[int, int], torch.Tensor]) -> float | None:
    """``sqnr_db`` of ``reference`` (rows, cols) against ``decode(r0, r1)``, its rows ``r0:r1``
    decoded, a few rows at a time: the approximation is never held whole."""
    rows = int(reference.shape[0])
    step = max(1, SQNR_CHUNK // max(1, reference[0].numel())) if rows else 1
    noise = 0.0
    for r0 in range(0, rows, step):
        noise += float(torch.nn.functional.mse_loss(decode(r0, r0 + step), reference[r0 : r0 + step], reduction="sum"))
    flat = reference.reshape(-1)
    signal = float(torch.dot(flat, flat))
    if noise == 0.0 or signal == 0.0:
        return None
    return 10.0 * math.log10(signal / noise)


def compress_view(
    view: torch.Tensor,
    spec: LayerSpec,
    huffman: bool,
    other_bytes: int,
    float_width: int = 32,
) -> CompressedWeight:
    """Compress a channel view (out_channels, fan_in) of a weight.

    ``other_bytes`` is what the layer stores besides its weight (the bias);
    ``float_width`` is the bits a weight left in float takes (its own dtype). The
    activations' scales and zero-points are the caller's to add (``PreparedModel.with_activations``).
    """
    view = view.detach().to(torch.float32).cpu()
    keep = prune_mask(view, spec.prune, spec.prune_method)
    shape = (int(view.shape[0]), int(view.shape[1]))
    codes = None
    uniform = None
    codebook = None
    half = spec.param_dtype == "float16"  # scales and codebooks rounded to float16 before dequantizing

    if spec.bits is None:
        stream = StreamSpec(shape, width=float_width)
        scale_bytes = 0
    elif spec.bits == 16:
        stream = StreamSpec(shape, width=16)
        scale_bytes = 0
    elif spec.cluster:
        k = 2**spec.bits
        codebook, index = kmeans_1d(view, k, pin_zero=keep is not None, keep=keep)  # pruned weights get the zero
        zero_at = zero_code(codebook) if keep is not None else 0
        codebook = half_values(codebook, "codebook value") if half else codebook
        codes = index.reshape(view.shape)
        stream = StreamSpec(shape, width=spec.bits, alphabet=k, symbols=codes, zero_symbol=np.full(view.shape[0], zero_at))
        scale_bytes = param_width(spec.param_dtype) * k
    else:
        per_channel = spec.granularity == "channel"
        pruned = view * keep if keep is not None else view
        qview = pruned if per_channel else pruned.reshape(1, -1)
        uniform = choose_params(qview, spec.bits, spec.symmetric, spec.clip)
        if half:
            uniform = UniformParams(half_scales(uniform.scale), uniform.zero_point, uniform.qmin, uniform.qmax)
        qcodes = quantize_codes(qview, uniform)
        codes = qcodes.reshape(view.shape)
        zero = uniform.zero_point.numpy()
        zero_per_row = zero if per_channel else np.full(view.shape[0], zero[0])
        stream = StreamSpec(
            shape,
            width=spec.bits,
            alphabet=uniform.qmax - uniform.qmin + 1,
            symbols=code_symbols(codes, uniform.qmin),
            zero_symbol=zero_per_row - uniform.qmin,
        )
        n_scales = uniform.scale.numel()
        scale_bytes = param_width(spec.param_dtype) * n_scales + (0 if spec.symmetric else n_scales)  # scales, int8 zero-points

    size = encode_size(stream, keep, huffman=huffman, scale_bytes=scale_bytes, other_bytes=other_bytes)
    if uniform is not None:
        stream.symbols = None  # they follow from the codes (``CompressedWeight.stream``)
    result = CompressedWeight(
        spec=spec, float_view=view, keep_bits=PackedMask.of(keep), codes=codes, uniform=uniform, codebook=codebook, size=size,
        sqnr_db=None, stream_spec=stream
    )
    result.sqnr_db = _sqnr_rows(view, lambda r0, r1: decode_rows(result, r0, r1))
    return result


def dequantize(result: CompressedWeight) -> torch.Tensor:
    """The float32 weights (channel view) that ``result``'s stored form decodes to."""
    return decode_rows(result, 0, int(result.float_view.shape[0]))


def decode_rows(result: CompressedWeight, r0: int, r1: int) -> torch.Tensor:
    """Rows ``r0:r1`` of ``dequantize(result)``."""
    codes = None if result.codes is None else result.codes[r0:r1]
    if codes is not None and result.codebook is not None:
        return shared_values(result.codebook, codes)
    if codes is not None and result.uniform is not None:
        u = result.uniform
        if result.spec.granularity != "channel":  # one scale for the whole tensor
            return dequantize_codes(codes.reshape(1, -1), u).reshape(codes.shape)
        return dequantize_codes(codes, UniformParams(u.scale[r0:r1], u.zero_point[r0:r1], u.qmin, u.qmax))
    whole = r0 == 0 and r1 >= result.float_view.shape[0]
    weights = result.float_view if whole else result.float_view[r0:r1]  # float weights: the tensor itself
    weights = weights if result.keep_bits is None else weights * result.keep_bits.rows(r0, r1)
    return weights.to(torch.float16).to(torch.float32) if result.spec.bits == 16 else weights
