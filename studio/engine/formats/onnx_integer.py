"""The ``onnx-fast`` export: a plan laid out for ONNX Runtime's CPU kernels.

The standard ``onnx`` export writes portable QDQ. ONNX Runtime runs that slower than
float in two cases, both measured (docs/onnx-runtime.md): weight-only DequantizeLinear
is never constant-folded while QDQ optimizations are on, so every run dequantizes the
weights and the convolutions lose their pre-packed weights; and the Q/DQ pairs of
quantized activations cost more than the integer kernels save on small layers.

This export computes the same numbers as the studio, but:
- weight-only layers (and float16, k-means and float layers) store their compressed
  weights with load-time Cast/Mul/Gather nodes (see ``onnx_weights``): the runtime
  dequantizes once at session creation and runs float kernels;
- layers with 8-bit activations and int8-grid weights run integer kernels: QLinearConv
  (uint8 x int8, int32 bias, requantized uint8 output) and MatMulIntegerToFloat
  (uint8 x int8 with the float32 bias, then QuantizeLinear) for Linear layers, when
  their fan-in is at least MIN_INT_FAN_IN (below that the integer kernels are slower
  than float ones: such layers run in float on the same fake-quantized values);
- between quantized layers, activations stay uint8 where that is exact (``onnx_islands``).
Layers the plan leaves with 16-bit activations run in float with int16 Q/DQ pairs (ORT
has no int16 convolution or matmul kernels on CPU).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .onnx_graph import MS_DOMAIN, Graph
from .onnx_meta import (
    EXACT_QDQ,
    FOLD_DEQUANTIZE,
    FORMAT_KEY,
    LAYERS_KEY,
    NOTES_KEY,
    SESSION_CONFIG_KEY,
    set_metadata,
)
from .onnx_weights import integer_codes, integer_kernel_scales, store_folded, store_int8

if TYPE_CHECKING:
    from ..activations import ActQParams
    from ..compress import CompressedWeight
    from ..layers import LayerInfo

FORMAT = "onnx-fast"
MIN_INT_FAN_IN = 16
INT32_LIMIT = 2**31 - 1
# ORT's own QDQ rewrites would turn the fake-quantized float layers back into (slower,
# re-quantized) integer ones, and its DoubleQDQPairsRemover would merge Q->DQ->Q->DQ
# chains onto one new grid (other numbers); the file is already laid out for the CPU kernels.
SESSION_CONFIG = {**FOLD_DEQUANTIZE, **EXACT_QDQ}


@dataclass
class Site:
    """Where a compressible layer lives in the traced graph."""

    info: LayerInfo
    key: str  # the weight initializer
    node: Any  # Conv / ConvTranspose / Gemm / MatMul / Gather reading the weight
    transpose: Any  # a Transpose between the weight and a MatMul, or None
    bias: str | None  # the bias initializer, if any
    bias_add: Any  # the Add of the bias after a MatMul, or None
    output: str  # the layer's output tensor (after its bias)


def find_site(graph: Graph, info: LayerInfo) -> Site | None:
    """The layer's nodes in the graph; None when the layer is not in the traced graph."""
    key = f"{info.name}.weight" if info.name else "weight"
    if key not in graph.inits:
        return None
    users = graph.consumers(key)
    if len(users) != 1:
        return None
    node, transpose = users[0], None
    if node.op_type == "Transpose":
        after = graph.consumers(node.output[0])
        if len(after) != 1 or after[0].op_type != "MatMul" or after[0].input[1] != node.output[0]:
            return None
        transpose, node = node, after[0]
    bias_key = f"{info.name}.bias" if info.name else "bias"
    bias = bias_key if bias_key in graph.inits else None
    bias_add, output = None, node.output[0]
    if node.op_type == "MatMul" and bias is not None:
        adds = [n for n in graph.consumers(output) if n.op_type == "Add" and bias in n.input]
        if len(adds) == 1 and len(graph.consumers(output)) == 1:
            bias_add, output = adds[0], adds[0].output[0]
    return Site(info, key, node, transpose, bias, bias_add, output)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class Quantizers:
    """QuantizeLinear/DequantizeLinear nodes with their scalar parameters, shared where equal."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.params: dict[tuple[float, int, str], tuple[str, str]] = {}
        self.quantized: dict[tuple[str, float, int, str], str] = {}

    def scale_zp(self, q: ActQParams) -> tuple[str, str]:
        dtype = "uint8" if q.qmax <= 255 else "int16"
        key = (q.scale, q.zero_point, dtype)
        if key not in self.params:
            zp = np.array(q.zero_point, dtype=np.uint8 if dtype == "uint8" else np.int16)
            self.params[key] = (self.graph.add_init("act_scale", np.array(q.scale, np.float32)), self.graph.add_init("act_zp", zp))
        return self.params[key]

    def quantize(self, src: str, q: ActQParams, before: Any) -> str:
        """The quantized ``src`` (one QuantizeLinear per tensor and parameters)."""
        dtype = "uint8" if q.qmax <= 255 else "int16"
        key = (src, q.scale, q.zero_point, dtype)
        if key not in self.quantized:
            s, z = self.scale_zp(q)
            out = self.graph.fresh(src + "_q")
            self.graph.insert_before(before, self.graph.node("QuantizeLinear", [src, s, z], [out]))
            self.quantized[key] = out
        return self.quantized[key]

    def dequantize(self, src: str, q: ActQParams, dst: str) -> Any:
        s, z = self.scale_zp(q)
        return self.graph.node("DequantizeLinear", [src, s, z], [dst])


def _int32_bias(graph: Graph, site: Site, q_in: ActQParams, w_scale: np.ndarray) -> np.ndarray | None:
    """The bias on the accumulator's grid (scale input_scale * weight_scale), rounded; None if it overflows."""
    if site.bias is None:
        return None
    bias = graph.need_constant(site.bias).astype(np.float64) / (np.float64(q_in.scale) * w_scale.astype(np.float64))
    if not np.all(np.abs(bias) < INT32_LIMIT):
        raise OverflowError(site.info.name)
    return np.round(bias).astype(np.int32)


def _kernel_scales(graph: Graph, site: Site, result: CompressedWeight, q_in: ActQParams) -> np.ndarray:
    bias = graph.constant(site.bias) if site.bias is not None and site.node.op_type == "Conv" else None
    return integer_kernel_scales(result, bias, q_in.scale)


def runs_integer(graph: Graph, site: Site, result: CompressedWeight, pair: tuple[Any, Any] | None) -> str | None:
    """Why the layer cannot run an integer kernel (None when it can)."""
    spec = result.spec
    if spec.bits is None or spec.bits > 8 or spec.cluster:
        return "weights are not on an integer grid"
    if not spec.symmetric:
        return "asymmetric weights (integer kernels here take symmetric int8 weights)"
    if spec.act_bits != 8 or pair is None or pair[0] is None or pair[1] is None:
        return "activations are not 8-bit"
    shape = site.info.weight_shape
    fan_in = int(np.prod(shape[1:])) if site.node.op_type in ("Conv", "Gemm") else shape[-1]
    if site.node.op_type not in ("Conv", "Gemm", "MatMul"):
        return f"{site.node.op_type} has no integer kernel here"
    if site.node.op_type == "Gemm":
        a = _attrs(site.node)
        if a.get("transA", 0) or not a.get("transB", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            return "unusual Gemm attributes"
    if fan_in < MIN_INT_FAN_IN:
        return f"fan-in {fan_in} < {MIN_INT_FAN_IN}: the float kernel is faster"
    if site.node.op_type == "Conv":
        try:
            _int32_bias(graph, site, pair[0], _kernel_scales(graph, site, result, pair[0]))
        except OverflowError:
            return "the bias does not fit int32 on the accumulator's grid"
    return None


def _integer_layer(graph: Graph, qz: Quantizers, site: Site, result: CompressedWeight, pair: tuple[Any, Any]) -> None:
    q_in, q_out = pair
    info, node = site.info, site.node
    s_in, z_in = qz.scale_zp(q_in)
    s_out, z_out = qz.scale_zp(q_out)
    x_q = qz.quantize(node.input[0], q_in, node)
    w_scale = _kernel_scales(graph, site, result, q_in)
    per_tensor = w_scale.size == 1
    scale_arr = w_scale.reshape(()) if per_tensor else w_scale
    s_w = graph.add_init(site.key + "_scale", scale_arr)
    z_w = graph.add_init(site.key + "_zp", np.zeros(scale_arr.shape, np.int8))
    codes = integer_codes(result, info.weight_shape, info.channel_axis)
    y_q = graph.fresh(site.output + "_q")
    graph.drop_init(site.key)
    if node.op_type == "Conv":
        w = store_int8(graph, site.key + "_q", codes, result.spec.code_bits, node)
        inputs = [x_q, s_in, z_in, w, s_w, z_w, s_out, z_out]
        bias = _int32_bias(graph, site, q_in, w_scale)
        if bias is not None and site.bias is not None:
            inputs.append(graph.add_init(site.bias + "_int32", bias))
        new = [graph.node("QLinearConv", inputs, [y_q], **_attrs(node))]
    else:  # Linear as Gemm(transB) or Transpose + MatMul (+ Add): B is (in, out)
        w = store_int8(graph, site.key + "_qT", np.ascontiguousarray(codes.T), result.spec.code_bits, node)
        y = graph.fresh(site.output + "_float")
        inputs = [x_q, w, s_in, s_w, z_in, z_w] + ([site.bias] if site.bias else [])
        new = [graph.node("MatMulIntegerToFloat", inputs, [y], domain=MS_DOMAIN), graph.node("QuantizeLinear", [y, s_out, z_out], [y_q])]
    graph.insert_before(node, *new)
    graph.insert_before(node, qz.dequantize(y_q, q_out, site.output))
    graph.remove(*[n for n in (node, site.transpose, site.bias_add) if n is not None])


def _float_layer(graph: Graph, qz: Quantizers, site: Site, result: CompressedWeight, pair: tuple[Any, Any] | None) -> str:
    info = site.info
    stored = store_folded(graph, site.key, result, info.weight_shape, info.channel_axis)
    q_in, q_out = pair if pair is not None else (None, None)
    node = site.node
    if q_in is not None and node.op_type != "Gather":
        fake = graph.fresh(node.input[0] + "_dq")
        graph.insert_before(node, qz.dequantize(qz.quantize(node.input[0], q_in, node), q_in, fake))
        node.input[0] = fake
    if q_out is not None:
        last = site.bias_add or node
        raw, y_q = graph.fresh(site.output + "_float"), graph.fresh(site.output + "_q")
        last.output[0] = raw
        s, z = qz.scale_zp(q_out)
        graph.insert_after(last, graph.node("QuantizeLinear", [raw, s, z], [y_q]), qz.dequantize(y_q, q_out, site.output))
    return stored


def build_fast(
    model: Any,
    layers: Sequence[LayerInfo],
    weights: Mapping[str, CompressedWeight],
    acts: Mapping[str, tuple[Any, Any]],
    metadata: Mapping[str, str] | None = None,
    shrink: bool = True,
) -> tuple[Any, dict[str, str]]:
    """Rewrite a float ONNX ModelProto (the folded model, traced) in place for ONNX Runtime.

    ``weights`` maps layer names to the compressed weights, ``acts`` to the (input,
    output) activation parameters of layers with quantized activations. Returns the
    model and, per layer, how it runs (or why it was skipped). With ``shrink``,
    structured-pruned channels are removed where that is exact (``onnx_prune``).
    """
    from .onnx_islands import integer_islands
    from .onnx_prune import shrink_structured

    shrunk: dict[str, str] = {}
    if shrink:
        layers, weights, shrunk = shrink_structured(model, layers, weights, acts)
    graph = Graph(model)
    qz = Quantizers(graph)
    how: dict[str, str] = {}
    for info in layers:
        site = find_site(graph, info)
        key = f"{info.name}.weight" if info.name else "weight"
        if site is None and key in graph.inits:  # a weight read by several nodes (tied weights)
            stored = store_folded(graph, key, weights[info.name], info.weight_shape, info.channel_axis)
            acts_note = "; its activations stay float" if info.name in acts else ""
            how[info.name] = f"float kernels on {stored} dequantized at load (weight read by several nodes{acts_note})"
            continue
        if site is None:
            how[info.name] = "skipped: not in the traced graph (never called, or not needed for the scored output)"
            continue
        result, pair = weights[info.name], acts.get(info.name)
        why_not = runs_integer(graph, site, result, pair)
        if why_not is None and pair is not None:
            _integer_layer(graph, qz, site, result, pair)
            how[info.name] = f"integer kernel ({'QLinearConv' if site.node.op_type == 'Conv' else 'MatMulIntegerToFloat'})"
        else:
            stored = _float_layer(graph, qz, site, result, pair)
            act = "" if pair is None else "; activations fake-quantized (Q/DQ)"
            how[info.name] = f"float kernel on {stored} dequantized at load ({why_not}){act}"
    for name, what in shrunk.items():
        how[name] = f"{how[name]}; structured pruning: {what}"
    integer_islands(graph)
    graph.commit()
    notes = [f"layer {name} is not in the traced graph; the file leaves it out" for name, h in how.items() if h.startswith("skipped")]
    notes += [f"layer {name}: its activations are not quantized in the file (weight read by several nodes)" for name, h in how.items() if "stay float" in h]
    entries = {FORMAT_KEY: FORMAT, LAYERS_KEY: how, NOTES_KEY: notes, SESSION_CONFIG_KEY: SESSION_CONFIG}
    set_metadata(model, {**entries, **(metadata or {})})
    return model, how
