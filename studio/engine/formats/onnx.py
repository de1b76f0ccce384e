"""ONNX export with QuantizeLinear/DequantizeLinear, reproducing the studio's numbers.

The float working model (BatchNorm folded) is exported with PyTorch's TorchScript-based
exporter, which keeps parameter names as initializer names. Then, per layer:
- integer weights (2..8 bits, uniform) become integer codes plus a DequantizeLinear
  (per output channel, or per tensor) whose output takes the weight's old name; codes
  of 4 bits or fewer are stored as INT4/UINT4, others as INT8/UINT8;
- float16 weights become a float16 initializer and a Cast;
- k-means (clustered) weights have no QDQ form and stay float32, holding exactly the
  shared values; float layers stay float32;
- float16 scales and biases (``param_dtype="float16"``) are stored as float32 initializers
  holding the float16 values, so ONNX Runtime computes what the studio evaluates;
- quantized activations get a QuantizeLinear -> DequantizeLinear pair on the layer's
  input (for that layer only) and on its output (for every consumer), as the studio's
  hooks do.
Everything else stays float. ONNX's QuantizeLinear divides by the scale and rounds half
to even, as the studio's activation quantizer does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..compiled import CompressedModel
from ..compress import CompressedWeight
from ..errors import StudioError
from ..layers import weight_key
from ..plan import LayerSpec, Plan
from .base import Format, Measured, RunContext, plan_from_metadata, plan_metadata, register_format, time_passes

OPSET = 21
INT4_MAX_BITS = 4


@dataclass(frozen=True)
class LayerRuntime:
    """How one layer's choices run in a target runtime."""

    weights: str  # how the weight is stored in the exported file
    exact: bool  # the runtime computes exactly what the studio simulates
    native: bool  # the runtime executes the choice as such (no widening, no float fallback)
    note: str


def onnx_layer_runtime(spec: LayerSpec) -> LayerRuntime:
    """What ONNX Runtime does with one layer's spec."""
    act = f"; activations {'uint8' if spec.act_bits == 8 else 'int16'} QDQ" if spec.act_bits else ""
    prune = "; pruned zeros are stored dense (no sparse format)" if spec.prune > 0 else ""
    if spec.bits is None:
        return LayerRuntime("float32", True, True, "left in float" + prune + act)
    if spec.bits == 16:
        return LayerRuntime("float16 + Cast", True, True, "float16 weights, computed in float32" + prune + act)
    if spec.cluster:
        return LayerRuntime(
            "float32 (shared values)", True, False,
            f"k-means codebooks have no ONNX form: {2**spec.bits} shared values stored as float32 (exact, no size saving)" + prune + act,
        )
    store = "int4" if spec.bits <= INT4_MAX_BITS else "int8"
    if not spec.symmetric:
        store = "u" + store
    native = spec.bits in (4, 8)
    note = f"{spec.bits}-bit codes stored as {store} DequantizeLinear" + ("" if native else f" (exact, but {4 if spec.bits <= 4 else 8} bits a weight in the file)")
    return LayerRuntime(f"{store} QDQ", True, native, note + prune + act)


def export_float(compiled: CompressedModel) -> Any:
    """The folded float model as an ONNX ModelProto, whatever form its inputs take."""
    from .onnx_trace import export_float_onnx

    try:
        return export_float_onnx(
            compiled.float_model(), compiled.example_inputs, opset=OPSET, input_mode=compiled.input_mode, output_fn=compiled.output_fn,
        )
    except StudioError:
        raise
    except Exception as exc:  # the exporter fails in many ways on models it cannot trace
        raise StudioError(
            f"torch.onnx.export cannot export this model ({type(exc).__name__}: {str(exc)[:300]}); the studio and torch formats still work"
        ) from exc


class _Graph:
    """Small helpers over an onnx GraphProto."""

    def __init__(self, graph: Any) -> None:
        self.g = graph
        self.inits = {init.name: init for init in graph.initializer}
        self.counter = 0

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}__studio{self.counter}"

    def consumers(self, tensor: str) -> list[Any]:
        return [n for n in self.g.node if tensor in n.input]

    def producer(self, tensor: str) -> Any:
        return next((n for n in self.g.node if tensor in n.output), None)

    def add_init(self, name: str, array: np.ndarray, dtype: int | None = None) -> None:
        from .onnx_graph import make_initializer

        # INT4/UINT4 (``dtype`` given): two codes a byte in raw_data, not one varint each
        self.g.initializer.append(make_initializer(name, array, int4=dtype is not None))

    def insert_before(self, node: Any, new: Any) -> None:
        nodes = list(self.g.node)
        idx = nodes.index(node)
        self.g.node.insert(idx, new)


def _quantize_weight(
    graph: _Graph, name: str, result: CompressedWeight, axis: int, weight_shape: tuple[int, ...], input_scale: float | None = None
) -> None:
    """Replace the layer's float weight by its stored form and a DequantizeLinear (or Cast).

    With ``input_scale`` (the layer's input is quantized, so ORT will add the bias on an
    int32 accumulator), all-zero channels get the scale of ``integer_kernel_scales``.
    """
    from onnx import TensorProto, helper

    key = weight_key(name)
    init = graph.inits.get(key)
    if init is None:
        return
    spec: LayerSpec = result.spec
    graph.g.initializer.remove(init)
    first = graph.consumers(key)[0]
    if spec.bits == 16:
        half = graph.fresh(key + "_fp16")
        weight = _weight_array(result, axis, weight_shape).astype(np.float16)
        graph.add_init(half, weight)
        graph.insert_before(first, helper.make_node("Cast", [half], [key], to=TensorProto.FLOAT))
        return
    if spec.bits is None or spec.cluster:
        graph.add_init(key, _weight_array(result, axis, weight_shape))
        return
    u = result.need_uniform()
    per_channel = u.scale.numel() > 1
    codes = result.need_codes().reshape(_moved_shape(weight_shape, axis)).movedim(0, axis).numpy()
    small = spec.bits <= INT4_MAX_BITS
    npdtype: type[np.integer]
    if spec.symmetric:
        dtype, npdtype = (TensorProto.INT4, np.int8) if small else (TensorProto.INT8, np.int8)
    else:
        dtype, npdtype = (TensorProto.UINT4, np.uint8) if small else (TensorProto.UINT8, np.uint8)
    q_name, s_name, z_name = graph.fresh(key + "_q"), graph.fresh(key + "_scale"), graph.fresh(key + "_zp")
    graph.add_init(q_name, codes.astype(npdtype), dtype if small else None)
    scale = u.scale.numpy().astype(np.float32)
    bias_key = weight_key(name, "bias")
    if input_scale is not None and bias_key in graph.inits and spec.symmetric:
        from onnx import numpy_helper

        from .onnx_weights import integer_kernel_scales

        scale = integer_kernel_scales(result, numpy_helper.to_array(graph.inits[bias_key]), input_scale)
    zp = u.zero_point.numpy().astype(npdtype)
    if not per_channel:
        scale, zp = scale.reshape(()), zp.reshape(())
    graph.add_init(s_name, scale)
    graph.add_init(z_name, zp, dtype if small else None)
    attrs: dict[str, Any] = {"axis": axis} if per_channel else {}
    graph.insert_before(first, helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [key], **attrs))


def _moved_shape(shape: tuple[int, ...], axis: int) -> list[int]:
    dims = list(shape)
    return [dims[axis]] + dims[:axis] + dims[axis + 1 :]


def _weight_array(result: CompressedWeight, axis: int, weight_shape: tuple[int, ...]) -> np.ndarray:
    view = result.dequant_view.reshape(_moved_shape(weight_shape, axis))
    array: np.ndarray = view.movedim(0, axis).contiguous().numpy().astype(np.float32)
    return array


def _qdq_nodes(graph: _Graph, src: str, dst: str, q: Any) -> list[Any]:
    """QuantizeLinear(src) -> DequantizeLinear -> dst, with the scale and zero-point initializers."""
    from onnx import helper

    npdtype = np.uint8 if q.qmax <= 255 else np.int16
    s_name, z_name, quant = graph.fresh(src + "_scale"), graph.fresh(src + "_zp"), graph.fresh(src + "_q")
    graph.add_init(s_name, np.array(q.scale, dtype=np.float32))
    graph.add_init(z_name, np.array(q.zero_point, dtype=npdtype))
    return [
        helper.make_node("QuantizeLinear", [src, s_name, z_name], [quant]),
        helper.make_node("DequantizeLinear", [quant, s_name, z_name], [dst]),
    ]


def _compute_node(graph: _Graph, key: str) -> Any:
    """The node doing the layer's work: Conv/Gemm/Gather on the weight, or MatMul after a Transpose/Cast."""
    node = graph.consumers(key)[0]
    while node.op_type in ("Transpose", "Cast", "DequantizeLinear"):
        node = graph.consumers(node.output[0])[0]
    return node


def _quantize_activations(graph: _Graph, name: str, float_input: bool, q_in: Any, q_out: Any, has_bias: bool) -> None:
    key = weight_key(name)
    node = _compute_node(graph, key)
    if q_in is not None and float_input:  # the input, for this layer only
        quantized = graph.fresh(node.input[0] + "_dq")
        for new in _qdq_nodes(graph, node.input[0], quantized, q_in):
            graph.insert_before(node, new)
        node.input[0] = quantized
    if q_out is None:
        return
    last = node  # the output, after the bias (a separate Add when Linear runs as MatMul)
    bias_key = weight_key(name, "bias")
    if has_bias and bias_key not in node.input:
        last = next((n for n in graph.consumers(bias_key) if n.op_type == "Add"), node)
    out = last.output[0]
    raw = graph.fresh(out + "_float")
    last.output[0] = raw
    idx = list(graph.g.node).index(last) + 1
    for offset, new in enumerate(_qdq_nodes(graph, raw, out, q_out)):
        graph.g.node.insert(idx + offset, new)


def export_onnx(compiled: CompressedModel, float_onnx: Any = None) -> bytes:
    """The ONNX bytes of a compiled plan.

    ``float_onnx``: the traced float model to rewrite (it is modified), when the caller
    already has it; traced here otherwise.

    Layers missing from the traced graph (defined but never called, or cut off by the
    scored output) are left out and named in the file's ``studio.notes`` metadata. The
    ONNX Runtime session options the file needs are recorded in its metadata (see
    ``onnx_meta``): exact double Q/DQ always, and constant-folded weight dequantization
    when no layer quantizes activations (weight-only QDQ then runs at float speed).
    """
    import onnx

    from .onnx_meta import (
        EXACT_QDQ,
        FOLD_DEQUANTIZE,
        FORMAT_KEY,
        NOTES_KEY,
        SESSION_CONFIG_KEY,
        set_metadata,
    )
    from .onnx_weights import set_biases

    model = float_onnx if float_onnx is not None else export_float(compiled)
    set_biases(model, compiled.biases)  # float16-rounded biases, as float32 values
    graph = _Graph(model.graph)
    results, acts, plan = compiled.weights, compiled.acts, compiled.plan
    traced = [info for info in compiled.layers if weight_key(info.name) in graph.inits]
    notes = [
        f"layer {info.name} is not in the traced graph (never called, or not needed for the scored output); "
        "the file leaves it out" for info in compiled.layers if info not in traced
    ]
    for info in traced:
        graph.inits = {init.name: init for init in model.graph.initializer}
        q_in = acts.get(info.name, (None, None))[0]
        scale = q_in.scale if q_in is not None and q_in.qmax <= 255 else None
        _quantize_weight(graph, info.name, results[info.name], info.channel_axis, info.weight_shape, scale)
    for info in traced:
        if info.name in acts:
            q_in, q_out = acts[info.name]
            _quantize_activations(graph, info.name, info.layer_kind.float_input, q_in, q_out, info.has_bias)
    config = dict(EXACT_QDQ) if acts else {**EXACT_QDQ, **FOLD_DEQUANTIZE}
    set_metadata(model, {**plan_metadata(plan), FORMAT_KEY: "onnx", SESSION_CONFIG_KEY: config, NOTES_KEY: notes})
    data: bytes = model.SerializeToString()
    del model, graph  # BERT-base: one copy of the graph at a time
    onnx.checker.check_model(data)
    return data


def export_onnx_fast(compiled: CompressedModel, float_onnx: Any = None) -> bytes:
    """The ``onnx-fast`` bytes of a compiled plan (integer kernels; see ``onnx_integer``).
    ``float_onnx``: the traced float model to rewrite (it is modified), else traced here."""
    import onnx

    from .onnx_integer import build_fast
    from .onnx_weights import set_biases

    model = float_onnx if float_onnx is not None else export_float(compiled)
    set_biases(model, compiled.biases)
    model, _ = build_fast(model, compiled.layers, compiled.weights, compiled.acts, plan_metadata(compiled.plan))
    data: bytes = model.SerializeToString()
    del model  # BERT-base: one copy of the graph at a time
    onnx.checker.check_model(data)
    return data


def read_plan(data: bytes) -> Plan:
    from .onnx_meta import read_metadata

    return plan_from_metadata(read_metadata(data), "ONNX")


def ort_session(data: bytes) -> Any:
    """An ONNX Runtime CPU session with the session options the file records."""
    import onnxruntime as ort

    from .onnx_meta import session_config

    options = ort.SessionOptions()
    for key, value in session_config(data).items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def ort_runner(data: bytes, ctx: RunContext) -> Callable[[], list[torch.Tensor]]:
    """Run the file over the eval batches; feeds go to the graph's inputs by name (inputs
    the traced graph does not use are left out)."""
    sess = ort_session(data)
    names = [i.name for i in sess.get_inputs()]

    def feeds(inputs: Any) -> dict[str, Any]:
        if isinstance(inputs, torch.Tensor):
            return {names[0]: inputs.numpy()}
        if isinstance(inputs, Mapping):
            return {k: v.numpy() for k, v in inputs.items() if k in names}
        return {n: v.numpy() for n, v in zip(names, inputs)}

    prepared = [feeds(x) for x, _ in ctx.batches]
    return lambda: [torch.from_numpy(sess.run(None, f)[0]) for f in prepared]


def run(data: bytes, ctx: RunContext) -> Measured:
    """Run the file in ONNX Runtime (CPU), beside the float model exported the same way."""
    outputs, latency = time_passes(ort_runner(data, ctx))
    _, float_latency = time_passes(ort_runner(export_onnx(ctx.compile(Plan())), ctx))
    return Measured("onnxruntime", outputs, latency, float_latency)


def _is(name: str) -> Callable[[bytes], bool]:
    def sniff(data: bytes) -> bool:
        from .onnx_meta import FORMAT_KEY, read_metadata

        return read_metadata(data).get(FORMAT_KEY, "onnx") == name

    return sniff


register_format(Format("onnx", ".onnx", "ONNX (QDQ)", export_onnx, read_plan, run, sniff=_is("onnx")))
register_format(Format("onnx-fast", ".onnx", "ONNX, integer kernels (ONNX Runtime)", export_onnx_fast, read_plan, run, default_name="model-fast", sniff=_is("onnx-fast")))
