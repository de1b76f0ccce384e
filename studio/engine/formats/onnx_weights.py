"""Compressed weights in an ONNX graph, dequantized once when the runtime loads the file.

The file stores what the studio counts: integer codes (4-bit codes packed two a byte as
INT4/UINT4), float32 scales and zero-points, k-means indices plus their codebook, or
float16 values. A few constant-only nodes (Cast, Sub, Mul, Gather) turn them back into
the float32 weight the studio evaluates. Every input of those nodes is an initializer,
so ONNX Runtime's constant folding runs them once at session creation (unlike
DequantizeLinear, which it deliberately leaves in the graph when QDQ optimizations are
on): the model then runs float kernels at float speed, on exactly the studio's weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from ..compress import CompressedWeight
    from .onnx_graph import Graph

INT4_MAX_BITS = 4


def moved_shape(shape: tuple[int, ...], axis: int) -> list[int]:
    dims = list(shape)
    return [dims[axis]] + dims[:axis] + dims[axis + 1 :]


def to_layout(view: torch.Tensor, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """A channel view (channels, fan_in) back in the weight's own layout."""
    return view.reshape(moved_shape(shape, axis)).movedim(0, axis).contiguous().numpy()


def per_channel_shape(shape: tuple[int, ...], axis: int) -> list[int]:
    """The shape that broadcasts one value per channel along ``axis``."""
    return [shape[axis] if i == axis else 1 for i in range(len(shape))]


def float_weight(result: CompressedWeight, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """The studio's dequantized weight as float32, in the weight's layout."""
    return to_layout(result.dequant_view, shape, axis).astype(np.float32)


def integer_codes(result: CompressedWeight, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Uniform codes in the weight's layout: int8 when symmetric, uint8 otherwise."""
    dtype = np.int8 if result.spec.symmetric else np.uint8
    return to_layout(result.need_codes(), shape, axis).astype(dtype)


def _scales(result: CompressedWeight, shape: tuple[int, ...], axis: int) -> tuple[np.ndarray, np.ndarray]:
    u = result.need_uniform()
    scale = u.scale.numpy().astype(np.float32)
    zero = u.zero_point.numpy().astype(np.float32)
    if scale.size == 1:
        return scale.reshape(()), zero.reshape(())
    target = per_channel_shape(shape, axis)
    return scale.reshape(target), zero.reshape(target)


def store_folded(graph: Graph, key: str, result: CompressedWeight, shape: tuple[int, ...], axis: int) -> str:
    """Replace initializer ``key`` by the compressed form and load-time nodes that produce ``key``.

    Returns a short description of what the file stores.
    """
    from onnx import TensorProto

    spec = result.spec
    anchor = graph.consumers(key)[0]
    graph.drop_init(key)
    if spec.bits is None:
        graph.add_init(key, float_weight(result, shape, axis), exact_name=True)
        return "float32"
    if spec.bits == 16:
        half = graph.add_init(key + "_fp16", float_weight(result, shape, axis).astype(np.float16))
        graph.insert_before(anchor, graph.node("Cast", [half], [key], to=TensorProto.FLOAT))
        return "float16"
    if spec.cluster:
        codebook = result.need_codebook().numpy().astype(np.float32)
        index = to_layout(result.need_codes(), shape, axis).astype(np.uint8)
        small = codebook.size <= 16
        idx = graph.add_init(key + "_index", index, int4=small)
        book = graph.add_init(key + "_codebook", codebook)
        wide = graph.fresh(key + "_index64")
        graph.insert_before(
            anchor,
            graph.node("Cast", [idx], [wide], to=TensorProto.INT64),
            graph.node("Gather", [book, wide], [key], axis=0),
        )
        return f"{'uint4' if small else 'uint8'} indices into a {codebook.size}-value float32 codebook"
    codes = integer_codes(result, shape, axis)
    small = spec.bits <= INT4_MAX_BITS
    q = graph.add_init(key + "_q", codes, int4=small)
    scale, zero = _scales(result, shape, axis)
    as_float = graph.fresh(key + "_codes")
    nodes = [graph.node("Cast", [q], [as_float], to=TensorProto.FLOAT)]
    if not spec.symmetric:
        zp = graph.add_init(key + "_zp", zero.astype(np.uint8))
        zp_float, centred = graph.fresh(key + "_zpf"), graph.fresh(key + "_centred")
        nodes += [graph.node("Cast", [zp], [zp_float], to=TensorProto.FLOAT), graph.node("Sub", [as_float, zp_float], [centred])]
        as_float = centred
    s = graph.add_init(key + "_scale", scale)
    nodes.append(graph.node("Mul", [as_float, s], [key]))
    graph.insert_before(anchor, *nodes)
    kind = ("int4" if small else "int8") if spec.symmetric else ("uint4" if small else "uint8")
    return f"{kind} codes, float32 scales"


def store_int8(graph: Graph, base: str, codes: np.ndarray, bits: int, anchor: Any) -> str:
    """Integer codes for an integer kernel: int8, or INT4 in the file with a load-time Cast to int8."""
    from onnx import TensorProto

    if bits > INT4_MAX_BITS:
        return graph.add_init(base, codes.astype(np.int8))
    packed = graph.add_init(base + "_int4", codes.astype(np.int8), int4=True)
    out = graph.fresh(base)
    graph.insert_before(anchor, graph.node("Cast", [packed], [out], to=TensorProto.INT8))
    return out


def integer_kernel_scales(result: CompressedWeight, bias: np.ndarray | None, input_scale: float) -> np.ndarray:
    """Weight scales for a kernel that adds the bias on its int32 accumulator (scale input x weight).

    A channel whose codes are all zero (structured-pruned) outputs only its bias, and its
    scale is free (0 x anything = 0). The studio's placeholder scale 1 would round that bias
    to a multiple of the input's scale; instead the scale puts the bias at about 2**24 on
    the accumulator's grid, where float32 represents it to 2**-24 of its size.
    """
    scale = result.need_uniform().scale.numpy().astype(np.float32).copy()
    if scale.size == 1 or bias is None or result.codes is None:
        return scale
    zero = ~(result.codes != 0).any(dim=1).numpy()
    magnitude = np.abs(bias.astype(np.float64))
    fine = np.where(magnitude > 0, magnitude / (float(input_scale) * 2.0**24), 1.0).astype(np.float32)
    scale[zero] = fine[zero]
    return scale


def set_biases(model: Any, biases: Mapping[str, torch.Tensor | None]) -> None:
    """Give a traced float ONNX model the biases a plan stores: float16-rounded biases
    (``param_dtype="float16"``) replace the float ones, at the initializer's own dtype."""
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    for name, bias in biases.items():
        key = f"{name}.bias" if name else "bias"
        if bias is None or bias.dtype != torch.float16 or key not in inits:
            continue
        dtype = numpy_helper.to_array(inits[key]).dtype
        inits[key].CopyFrom(numpy_helper.from_array(bias.to(torch.float32).numpy().astype(dtype), key))
