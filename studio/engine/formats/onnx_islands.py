"""Keep activations in uint8 between quantized layers, where that is exact.

After ``onnx_integer`` every quantized layer output is ``q = QuantizeLinear(y)`` followed
by ``DequantizeLinear(q)`` for its float consumers, as the studio simulates. These rewrites
move the DequantizeLinear later (or remove it) without changing a single value:

- data movement (Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity, Slice, the
  data input of Gather, Expand) and MaxPool commute with an elementwise, increasing
  dequantization, so they run on the uint8 codes instead;
- DequantizeLinear -> Relu is ``DequantizeLinear(max(q, zero_point))``: a uint8 Clip;
- DequantizeLinear -> QuantizeLinear with equal parameters is the identity (with other
  parameters it stays: a vectorised requantization, faster here than the 256-entry lookup
  table of com.microsoft's QLinearLeakyRelu);
- DequantizeLinear -> GlobalAveragePool -> QuantizeLinear becomes
  ``QLinearGlobalAveragePool``: it sums the codes in integers and rounds once, so it can
  differ from the float mean by one code when the mean lands within float rounding of a
  rounding boundary (the only rewrite here that is not bit-exact);
- a QuantizeLinear after data movement moves before it (so that the previous rule sees it).
Float ops (Add, LayerNormalization, Gelu, Softmax, MatMul of two activations, ...) keep
their DequantizeLinear: the studio computes them in float, and so does the file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .onnx_graph import MS_DOMAIN, Graph

SAME_SIZE = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"}
MOVES = SAME_SIZE | {"Slice", "Gather", "Expand"}
ORDER_PRESERVING = MOVES | {"MaxPool"}


def _qparams(graph: Graph, node: Any) -> tuple[float, int, Any] | None:
    """(scale, zero_point, dtype) of a Q/DQ node with constant scalar uint8 parameters."""
    if len(node.input) < 3 or _attr(node, "axis", None) not in (None, 1):
        return None
    scale, zero = graph.constant(node.input[1]), graph.constant(node.input[2])
    if scale is None or zero is None or scale.size != 1 or zero.dtype != np.uint8 or float(scale.ravel()[0]) <= 0:
        return None
    return float(scale.ravel()[0]), int(zero.ravel()[0]), zero.dtype


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _sink_one(graph: Graph, dq: Any) -> bool:
    """Rewrite the consumers of one uint8 DequantizeLinear; True if anything changed."""
    params = _qparams(graph, dq)
    if params is None:
        return False
    src, out = dq.input[0], dq.output[0]
    if out in graph.outputs:
        return False
    for user in graph.consumers(out):
        op = user.op_type
        if op == "QuantizeLinear" and (q := _qparams(graph, user)) is not None and q[:2] == params[:2]:
            graph.rename_uses(user.output[0], src)
            if user.output[0] in graph.outputs:
                graph.insert_before(user, graph.node("Identity", [src], [user.output[0]]))
            graph.remove(user)
            return True
        if op == "Relu":
            clipped = graph.fresh(src + "_relu")
            graph.insert_before(
                user,
                graph.node("Clip", [src, dq.input[2]], [clipped]),
                graph.node("DequantizeLinear", [clipped, *dq.input[1:]], [user.output[0]]),
            )
            graph.remove(user)
            return True
        if op in ORDER_PRESERVING and user.input[0] == out and out not in user.input[1:] and len(user.output) == 1:
            moved = graph.fresh(src + "_" + op.lower())
            user.input[0] = src
            final = user.output[0]
            user.output[0] = moved
            graph.insert_after(user, graph.node("DequantizeLinear", [moved, *dq.input[1:]], [final]))
            return True
        if op == "GlobalAveragePool":
            after = graph.consumers(user.output[0])
            if len(after) == 1 and after[0].op_type == "QuantizeLinear" and _qparams(graph, after[0]) is not None:
                q = after[0]
                graph.insert_before(
                    q,
                    graph.node(
                        "QLinearGlobalAveragePool", [src, *dq.input[1:], *q.input[1:3]], [q.output[0]], domain=MS_DOMAIN, channels_last=0,
                    ),
                )
                graph.remove(user, q)
                return True
    return False


def _constant(graph: Graph, tensor: str, depth: int = 8) -> bool:
    """Whether ``tensor`` is computed from initializers only (ORT folds it at load)."""
    if tensor in graph.inits:
        return True
    node = graph.producer(tensor)
    if node is None or depth == 0:
        return False
    return node.op_type == "Constant" or all(_constant(graph, i, depth - 1) for i in node.input if i)


def _hoist_one(graph: Graph, q: Any) -> bool:
    """QuantizeLinear after a data-movement op with no other reader: quantize first.

    Only where that quantizes no more values: after a same-size op, or after a Gather or
    Slice of a constant (an embedding table: quantized once, at load).
    """
    if _qparams(graph, q) is None:
        return False
    prev = graph.producer(q.input[0])
    if prev is None or prev.op_type not in MOVES or len(prev.output) != 1 or prev.output[0] in graph.outputs:
        return False
    if prev.op_type not in SAME_SIZE and not _constant(graph, prev.input[0]):
        return False
    if len(graph.consumers(prev.output[0])) != 1:
        return False
    q_early = graph.fresh(prev.input[0] + "_q")
    graph.insert_before(prev, graph.node("QuantizeLinear", [prev.input[0], *q.input[1:]], [q_early]))
    prev.input[0] = q_early
    prev.output[0] = q.output[0]
    graph.remove(q)
    return True


def _relu_later(graph: Graph, relu: Any) -> bool:
    """Relu -> MaxPool / data movement (its only reader) becomes that op -> Relu.

    Exact: Relu is elementwise and increasing, so it commutes with taking maxima and
    with moving data; afterwards Relu meets the next quantizer on fewer elements.
    """
    users = graph.consumers(relu.output[0])
    if len(users) != 1 or relu.output[0] in graph.outputs:
        return False
    source = graph.producer(relu.input[0])
    if source is None or source.op_type != "DequantizeLinear":  # float Conv+Relu: leave it to ORT's fusions
        return False
    op = users[0]
    if op.op_type not in ORDER_PRESERVING or op.input[0] != relu.output[0] or len(op.output) != 1:
        return False
    if relu.output[0] in op.input[1:]:
        return False
    before, after = relu.input[0], op.output[0]
    moved = graph.fresh(after + "_prerelu")
    op.input[0], op.output[0] = before, moved
    relu.input[0], relu.output[0] = moved, after
    graph.remove(relu)
    graph.insert_after(op, relu)
    return True


def integer_islands(graph: Graph, max_rounds: int = 10_000) -> None:
    """Apply the rewrites until none applies."""
    while any(n.op_type == "Relu" and _relu_later(graph, n) for n in list(graph.nodes)):
        pass
    for _ in range(max_rounds):
        changed = False
        for node in list(graph.nodes):
            if node.op_type == "QuantizeLinear" and _hoist_one(graph, node):
                changed = True
                break
            if node.op_type == "DequantizeLinear" and _sink_one(graph, node):
                changed = True
                break
        if not changed:
            graph.prune_dead()
            return
        graph.prune_dead()
