"""Structured pruning exported as smaller layers: pruned output channels leave the graph.

A structured-pruned channel has an all-zero weight row, so the layer outputs its bias
there: a constant ``b``. After the ops between this layer and the next (Relu, MaxPool,
global average pooling, Flatten, Identity: all keep a constant channel constant, and
the studio's activation quantizers map it to another constant) each consuming layer
sees a constant channel ``v``. The channel is removed from the producer (its weight row
and bias) and from every consumer (its input-channel slice of the weight) when that is
exact:
- ``v == 0``: the channel adds nothing;
- ``v != 0`` and the consumer is a Linear, or a convolution without padding: the channel
  adds ``v * sum(weights)`` to every output, which goes into the consumer's bias. A padded
  convolution sees zeros at the border instead of ``v``, so there it is kept.
Channels whose path meets anything else (a residual Add, Concat, a reshape, the graph
output) are kept too. The studio's numbers do not change (up to float summation order).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..activations import fake_quant
from ..compress import PackedMask
from .onnx_graph import Graph

if TYPE_CHECKING:
    from ..compress import CompressedWeight
    from ..layers import LayerInfo

PASS_THROUGH = {"Relu", "MaxPool", "Identity", "GlobalAveragePool", "Flatten"}
# ORT's fast convolutions (NCHWc in MLAS; blocks of 16 channels with AVX-512, 8 with AVX2)
# fall back to slower code for other channel counts: measured, a 32-channel conv cut to
# 26 channels ran slower than the full one. Convolutions keep a multiple of this many.
CONV_CHANNEL_ALIGN = 16


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _terminals(graph: Graph, tensor: str) -> list[tuple[Any, list[str]]] | None:
    """The nodes reached from ``tensor`` through pass-through ops, with the ops on the way.

    None if the channel structure meets anything else (or the graph output).
    """
    found: list[tuple[Any, list[str]]] = []
    stack: list[tuple[str, list[str]]] = [(tensor, [])]
    while stack:
        name, path = stack.pop()
        if name in graph.outputs:
            return None
        for user in graph.consumers(name):
            if user.op_type in PASS_THROUGH and user.input[0] == name and len([o for o in user.output if o]) == 1:
                if user.op_type == "Flatten" and _attr(user, "axis", 1) != 1:
                    return None
                stack.append((user.output[0], path + [user.op_type]))
            else:
                found.append((user, path))
    return found


def _fake(values: torch.Tensor, q: Any) -> torch.Tensor:
    return values if q is None else fake_quant(values, q)


def _slice_rows(result: CompressedWeight, keep: torch.Tensor) -> CompressedWeight:
    """The producer without its removed output channels (rows of the channel view)."""
    uniform = result.uniform
    if uniform is not None and uniform.scale.numel() > 1:
        uniform = dataclasses.replace(uniform, scale=uniform.scale[keep], zero_point=uniform.zero_point[keep])
    return dataclasses.replace(
        result,
        float_view=result.float_view[keep], held=result.dequant_view[keep],
        keep_bits=None if result.keep is None else PackedMask.of(result.keep[keep]),
        codes=None if result.codes is None else result.codes[keep], uniform=uniform,
    )


def _slice_inputs(result: CompressedWeight, channels: int, keep: torch.Tensor) -> CompressedWeight:
    """The consumer without the removed input channels (columns grouped by input channel)."""

    def cut(view: torch.Tensor) -> torch.Tensor:
        rows = view.shape[0]
        return view.reshape(rows, channels, -1)[:, keep].reshape(rows, -1)

    return dataclasses.replace(
        result, float_view=cut(result.float_view), held=cut(result.dequant_view),
        keep_bits=None if result.keep is None else PackedMask.of(cut(result.keep)), codes=None if result.codes is None else cut(result.codes),
    )


def shrink_structured(
    model: Any,
    layers: Sequence[LayerInfo],
    weights: Mapping[str, CompressedWeight],
    acts: Mapping[str, tuple[Any, Any]],
) -> tuple[list[LayerInfo], dict[str, CompressedWeight], dict[str, str]]:
    """Remove exactly-removable pruned channels; returns the new layers, weights and, per
    producer, what was removed. Edits the graph's bias initializers in place."""
    from onnx import numpy_helper

    from .onnx_integer import find_site

    graph = Graph(model)
    infos = {info.name: info for info in layers}
    weights = dict(weights)
    report: dict[str, str] = {}
    for info in layers:
        result = weights[info.name]
        info = infos[info.name]
        if info.kind not in ("Conv1d", "Conv2d", "Linear") or result.dequant_view is None:
            continue
        dead = ~(result.dequant_view != 0).any(dim=1)
        if not bool(dead.any()) or bool(dead.all()):
            continue
        site = find_site(graph, info)
        if site is None or (site.node.op_type == "Conv" and _attr(site.node, "group", 1) != 1) or site.bias is None:
            continue
        reached = _terminals(graph, site.output)
        by_node = {}
        for other in layers:
            other_site = find_site(graph, infos[other.name])
            if other_site is not None:
                by_node[id(other_site.node)] = (infos[other.name], other_site)
        if not reached or any(id(node) not in by_node for node, _ in reached):
            report[info.name] = "kept: the pruned channels reach something other than a compressible layer (an Add, a reshape, the output)"
            continue
        bias = torch.from_numpy(graph.need_constant(site.bias).astype(np.float32))
        const = _fake(bias, acts.get(info.name, (None, None))[1])
        removable = dead.clone()
        plans = []
        for node, path in reached:
            cinfo, csite = by_node[id(node)]
            wrong_width = cinfo.weight_shape[1] != len(dead)  # e.g. Flatten of a whole feature map
            if wrong_width or node.input[0] != csite.node.input[0] or (node.op_type == "Conv" and _attr(node, "group", 1) != 1):
                removable[:] = False
                break
            value = torch.clamp(const, min=0) if "Relu" in path else const
            value = _fake(value, acts.get(cinfo.name, (None, None))[0])
            padded = node.op_type == "Conv" and (any(_attr(node, "pads", [])) or _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"))
            if padded or csite.bias is None:
                removable &= value == 0
            plans.append((cinfo, csite, value))
        convs = info.kind.startswith("Conv") or any(cinfo.kind.startswith("Conv") for cinfo, _, _ in plans)
        if convs and len(dead) % CONV_CHANNEL_ALIGN == 0:
            excess = int((len(dead) - removable.sum()) % CONV_CHANNEL_ALIGN)
            if excess:  # keep a few removable channels too, so the count stays aligned
                removable[torch.nonzero(removable).flatten()[:excess]] = False
        if not bool(removable.any()):
            report[info.name] = (
                "kept: the pruned channels are constant non-zero before a padded convolution, "
                f"or too few to keep a multiple of {CONV_CHANNEL_ALIGN} channels"
            )
            continue
        keep = ~removable
        weights[info.name] = _slice_rows(result, keep)
        infos[info.name] = dataclasses.replace(info, weight_shape=(int(keep.sum()),) + tuple(info.weight_shape[1:]))
        graph.inits[site.bias] = numpy_helper.from_array(bias[keep].numpy(), site.bias)
        for cinfo, csite, value in plans:
            cres = weights[cinfo.name]
            channels = cinfo.weight_shape[1]
            w = cres.dequant_view.reshape(cres.dequant_view.shape[0], channels, -1).double()
            extra = (w[:, removable, :].sum(dim=2) * value[removable].double()).sum(dim=1)
            if csite.bias is not None and bool((extra != 0).any()):
                cbias = graph.need_constant(csite.bias).astype(np.float64) + extra.numpy()
                graph.inits[csite.bias] = numpy_helper.from_array(cbias.astype(np.float32), csite.bias)
            weights[cinfo.name] = _slice_inputs(cres, channels, keep)
            shape = list(cinfo.weight_shape)
            shape[1] = int(keep.sum())
            infos[cinfo.name] = dataclasses.replace(cinfo, weight_shape=tuple(shape))
        report[info.name] = f"{int(removable.sum())} of {len(keep)} output channels removed"
    graph.commit()
    return [infos[info.name] for info in layers], weights, report
